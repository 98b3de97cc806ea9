"""The square-root 16-bit coding of cached warped frames: error within half a code step (which
grows as the square root of the level), no data kept as NaN, degenerate frames survive."""

from __future__ import annotations

import numpy as np
import pytest

from oscdeep.framecode import CODE_MAX, decode_into, encode
from oscdeep.integrate import NpySource


def _roundtrip(frame: np.ndarray) -> tuple[np.ndarray, float, float]:
    codes, lo, span = encode(frame)
    out = np.empty(frame.shape, np.float32)
    decode_into(codes, out, lo, span)
    return out, lo, span


def test_error_is_half_a_step_and_tiny_against_sky_noise() -> None:
    rng = np.random.default_rng(3)
    frame = (1000 + 25 * rng.standard_normal((300, 400, 3))).astype(np.float32)
    frame[10, 10] = 62000.0  # a saturated star sets the range
    frame[20, 20] = -400.0  # an undershoot next to it
    out, lo, span = _roundtrip(frame)
    # A code step at level x above lo is d/dq (lo + span (q / K)^2) = 2 sqrt((x - lo) span) / K.
    half_step = np.sqrt((frame - lo) * span) / CODE_MAX
    err = np.abs(out - frame)
    assert np.all(err <= half_step * 1.001 + 1e-6 * np.abs(frame) + 1e-4)  # + float32 rounding
    sky = err[50:, 50:]
    assert np.sqrt(np.mean(sky ** 2)) < 0.01 * 25  # < 1 % of the sky noise
    assert out[10, 10, 0] == pytest.approx(62000.0, abs=1.0)
    assert out[20, 20, 0] == pytest.approx(-400.0, abs=1e-3)


def test_no_data_stays_no_data() -> None:
    frame = np.full((40, 50, 3), 500.0, np.float32)
    frame[:5] = np.nan
    frame[10, 10, 1] = np.inf
    frame[11, 11, 2] = -np.inf
    frame[30:, 30:] += np.linspace(0, 100, 20, dtype=np.float32)[None, :, None]
    codes, lo, span = encode(frame)
    assert codes.dtype == np.uint16 and codes.shape == frame.shape
    assert (codes[:5] == 0).all() and codes[10, 10, 1] == 0 and codes[11, 11, 2] == 0
    assert (codes[5:, :, 0] > 0).all()
    assert lo == 500.0 and span == pytest.approx(100.0)
    out, _, _ = _roundtrip(frame)
    assert np.isnan(out[:5]).all() and np.isnan(out[10, 10, 1]) and np.isnan(out[11, 11, 2])
    assert np.nanmax(np.abs(out - np.where(np.isfinite(frame), frame, np.nan))) < 0.01


@pytest.mark.parametrize("value", [0.0, 1234.5, np.nan])
def test_constant_and_empty_frames(value: float) -> None:
    frame = np.full((8, 9), value, np.float32)
    out, _, _ = _roundtrip(frame)
    np.testing.assert_array_equal(out, frame)


def test_cached_file_reads_back_by_bands(tmp_path) -> None:
    rng = np.random.default_rng(5)
    frame = (200 + 10 * rng.standard_normal((64, 48, 3))).astype(np.float32)
    frame[:, :3] = np.nan
    codes, lo, span = encode(frame)
    path = tmp_path / "frame.npy"
    np.save(path, codes)
    source = NpySource(path, coding=(lo, span))
    band = np.empty((10, 48, 3), np.float32)
    source.read_rows_into(band, 20, 30)
    np.testing.assert_allclose(band, frame[20:30], atol=0.01, equal_nan=True)
    with pytest.raises(Exception, match="coding"):
        NpySource(path)  # codes without their range cannot be read
