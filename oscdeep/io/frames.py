"""Full pixel reads for the processing stages: one call for FITS and camera raw alike."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from oscdeep.errors import FrameReadError
from oscdeep.io.fits import read_fits_image
from oscdeep.io.headers import (
    check_readable_file,
    detect_format,
    meta_from_fits_header,
    unsupported,
)
from oscdeep.io.meta import FrameMeta
from oscdeep.io.raw import read_raw_mosaic
from oscdeep.types import FileFormat


def read_frame(path: str | os.PathLike[str]) -> tuple[np.ndarray, FrameMeta]:
    """Pixels as native float32 in top-down order, and the frame's metadata.

    A CFA or mono frame is (H, W) with ``meta.bayer_pattern`` describing array rows 0-1; a
    FITS colour cube is (H, W, 3). Camera raw gives the visible mosaic, black level included.
    """
    path = Path(path)
    check_readable_file(path)
    fmt = detect_format(path)
    if fmt is FileFormat.RAW:
        return read_raw_mosaic(path)
    if fmt is not FileFormat.FITS:
        raise unsupported(path)
    image, header = read_fits_image(path)
    meta = meta_from_fits_header(header, path)
    if image.ndim == 2 and image.shape != (meta.height, meta.width):
        raise FrameReadError(path, f"image shape {image.shape} disagrees with NAXIS1/NAXIS2")
    return image, meta
