"""``oscdeep post``: a stack in the library becomes a finished picture, recorded as a Product.

The stack's file is only read; the picture is written atomically to a new path.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oscdeep import __version__
from oscdeep.db.catalog import find_stack
from oscdeep.db.engine import Library
from oscdeep.db.models import Product
from oscdeep.errors import FrameReadError, OscdeepError
from oscdeep.finish import FinishOptions, finish_image
from oscdeep.progress import NullProgress, Progress


@dataclass
class PostReport:
    """What ``post_stack`` made."""

    stack: str
    output: str
    format: str
    product_id: int
    seconds: float
    summary: dict[str, Any] = field(default_factory=dict)


def default_picture_path(stack_path: str | Path) -> Path:
    """Where a stack's picture goes unless told: beside the stack, as ``<stem>.png``."""
    path = Path(stack_path)
    return path.with_name(f"{path.stem}.png")


def post_stack(library: Library, ref: str, *, output: str | Path | None = None,
               options: FinishOptions = FinishOptions(), bits: int | None = None,
               progress: Progress | None = None) -> PostReport:
    """Finish stack ``ref`` (name or id) into ``output`` (format from its extension) and
    record the picture with its parameters."""
    from oscdeep.io.export import export_format, export_image
    from oscdeep.io.fits import read_fits_image

    progress = progress or NullProgress()
    start = time.perf_counter()
    with library.session() as orm:
        stack = find_stack(orm, ref)
        name, stack_id, source = stack.name, stack.id, stack.output_path
        target = stack.target.name if stack.target else None
        exposure, n_frames = stack.total_exposure, stack.n_frames
    if not source:
        raise OscdeepError(f"stack {name!r} has no output file (it did not finish)")
    out = Path(output) if output is not None else default_picture_path(source)
    fmt = export_format(out)  # refuse an unknown extension before any work
    if out.resolve() == Path(source).resolve():
        raise OscdeepError(f"{out}: that is the stack itself; choose another output name")
    try:
        image, _ = read_fits_image(source)
    except FileNotFoundError as exc:
        raise FrameReadError(source, "stack file not found (moved or deleted?)") from exc
    finished = finish_image(image, options, progress=progress)
    summary = finished.summary()
    history = [f"oscdeep {__version__} picture of stack '{name}' ({n_frames} frames)",
               *(f"{k}: {v}" for k, v in options.record().items())]
    metadata: dict[str, Any] = {"object": target or "", "software": f"oscdeep {__version__}",
                                "description": f"stack {name}, {n_frames} frames",
                                "history": history}
    if exposure:
        metadata["exptime"] = float(exposure)
    export_image(out, finished.image, metadata=metadata, bits=bits)
    seconds = time.perf_counter() - start
    with library.session() as orm:
        product = Product(stack_id=stack_id, path=str(out), format=fmt,
                          params={**options.record(), "bits": bits}, stats=summary,
                          wall_time=seconds, software_version=__version__)
        orm.add(product)
        orm.flush()
        product_id = product.id
    return PostReport(stack=name, output=str(out), format=fmt, product_id=product_id,
                      seconds=seconds, summary=summary)
