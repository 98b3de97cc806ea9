"""`oscdeep post` and the finishing chain on a real stack: the picture, its record, the rules
(stack untouched, atomic, repeatable), and `run` ending with a picture."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from oscdeep.finish import FinishOptions, finish_image
from oscdeep.synth import NightConfig

NIGHT = NightConfig(width=400, height=300, n_lights=6, n_darks=3, n_flats=3, n_bias=3, seed=9,
                    n_bad_seeing=0, cloud=False, satellite=False, nebula=0.0)  # sky = truth


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def stacked(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """A small library with one stack of a synthetic night."""
    from oscdeep.pipeline.build import StackOptions, build_stack

    from .conftest import prepare_night

    root = tmp_path_factory.mktemp("post")
    library, ids, _ = prepare_night(root, NIGHT, register=True)
    build_stack(library, ids, name="M42 all", output=root / "m42.fits",
                options=StackOptions(workers=1))
    yield library, root
    library.close()


def test_post_writes_a_16_bit_picture_and_records_it(stacked) -> None:  # noqa: ANN001
    import cv2

    from oscdeep.db.models import Product, Stack
    from oscdeep.pipeline.post import post_stack

    library, root = stacked
    before = _digest(root / "m42.fits")
    report = post_stack(library, "M42 all", output=root / "pic.png")
    assert _digest(root / "m42.fits") == before  # the stack is only read
    picture = cv2.imread(str(root / "pic.png"), cv2.IMREAD_UNCHANGED)
    assert picture.dtype == np.uint16 and picture.shape == (NIGHT.height, NIGHT.width, 3)
    display = picture[..., ::-1].astype(np.float64) / 65535
    corners = np.concatenate([display[a:a + 50, b:b + 50].reshape(-1, 3)
                              for a in (10, NIGHT.height - 60) for b in (10, NIGHT.width - 60)])
    sky = np.median(corners, axis=0)
    assert np.all(np.abs(sky - 0.2) < 0.05), sky  # the stretch's sky level, a grey sky
    assert np.ptp(sky) < 0.02, sky
    assert np.mean(display >= 1.0) < 0.002  # nearly nothing clipped at white
    with library.session() as orm:
        product = orm.get(Product, report.product_id)
        assert product is not None and product.format == "png"
        assert product.params["background"] == "poly:2" and product.params["stretch"] == "ghs"
        assert product.stats["color"]["n_stars"] > 10
        stack = orm.get(Stack, product.stack_id)
        assert stack is not None and stack.name == "M42 all"
        assert [p.id for p in stack.products] == [report.product_id]


def test_same_stack_and_options_give_the_same_bytes(stacked) -> None:  # noqa: ANN001
    from oscdeep.pipeline.post import post_stack

    library, root = stacked
    a = post_stack(library, "M42 all", output=root / "a.tif")
    b = post_stack(library, "M42 all", output=root / "b.tif")
    assert (root / "a.tif").read_bytes() == (root / "b.tif").read_bytes()
    assert a.product_id != b.product_id


def test_fits_output_keeps_float_values_and_linear_when_not_stretched(stacked) -> None:  # noqa: ANN001
    from oscdeep.io.fits import read_fits_image
    from oscdeep.pipeline.post import post_stack

    library, root = stacked
    options = FinishOptions.from_specs("poly:1", "background", "none")
    post_stack(library, "M42 all", output=root / "linear.fits", options=options)
    linear, header = read_fits_image(root / "linear.fits")
    stack, _ = read_fits_image(root / "m42.fits")
    assert linear.dtype == np.float32 and header["OBJECT"] == "M42"
    # still linear: same scale as the stack (star peaks well above 1), sky made neutral
    assert np.nanmax(linear) > 100 and np.nanmax(linear) == pytest.approx(np.nanmax(stack),
                                                                           rel=0.2)


def test_unknown_extension_is_refused_before_any_work(stacked) -> None:  # noqa: ANN001
    from oscdeep.db.models import Product
    from oscdeep.errors import ConfigError
    from oscdeep.pipeline.post import post_stack

    library, root = stacked
    with library.session() as orm:
        count = orm.query(Product).count()
    with pytest.raises(ConfigError, match="picture.bmp"):
        post_stack(library, "M42 all", output=root / "picture.bmp")
    with library.session() as orm:
        assert orm.query(Product).count() == count
    assert not (root / "picture.bmp").exists()


def test_finish_chain_removes_a_gradient_and_a_cast() -> None:
    """Arrays in, picture out: a linear stack with a tilted, tinted sky comes out with a flat,
    grey sky at the stretch's level."""
    rng = np.random.default_rng(2)
    h, w = 300, 400
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    sky = np.stack([400 + 0.5 * xx, 600 + 0.3 * yy, 250 + 0.2 * (xx + yy)], axis=-1)
    image = (sky + rng.normal(0, 5, (h, w, 3))).astype(np.float32)
    for x, y in rng.uniform(20, 280, (60, 2)):
        image[int(y) - 1:int(y) + 2, int(x) - 1:int(x) + 2] += np.float32(3000)
    done = finish_image(image, FinishOptions.from_specs("poly:1", "background", "ghs"))
    out = done.image
    assert out.shape == image.shape and out.dtype == np.float32
    quad = [np.median(out[a:a + 100, b:b + 100].reshape(-1, 3), axis=0)
            for a in (0, 200) for b in (0, 300)]
    assert np.ptp(np.array(quad)) < 0.02  # no gradient, no cast left across the corners
    assert abs(float(np.median(out)) - 0.2) < 0.02
    assert set(done.summary()) == {"background", "color", "stretch"}


def test_post_command_and_json(cli, stacked, tmp_path: Path) -> None:  # noqa: ANN001
    _, root = stacked
    db = str(root / "lib.db")
    result = cli("--db", db, "post", "M42 all", "-o", str(tmp_path / "p.jpg"), "--stretch",
                 "mtf", "--json", db=False)
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert data["format"] == "jpeg" and Path(data["output"]).exists()
    assert data["summary"]["stretch"]["method"] == "mtf"
    shown = json.loads(cli("--db", db, "stack", "show", "M42 all", "--json", db=False).out)
    assert data["output"] in [p["path"] for p in shown["pictures"]]
    bad = cli("--db", db, "post", "M42 all", "--background", "poly:9", db=False)
    assert bad.code != 0 and "degree 9" in bad.err
    missing = cli("--db", db, "post", "no such stack", db=False)
    assert missing.code != 0 and "no such stack" in (missing.err + missing.out)


def test_report_command_writes_a_page(cli, stacked, tmp_path: Path) -> None:  # noqa: ANN001
    _, root = stacked
    page = tmp_path / "r.html"
    result = cli("--db", str(root / "lib.db"), "report", "-o", str(page), db=False)
    assert result.code == 0, result.err
    text = page.read_text()
    assert text.startswith("<!DOCTYPE html>") and "M42 all" in text and "<svg" in text
