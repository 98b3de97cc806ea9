"""Atomic output: the target appears whole or not at all, with ordinary permissions."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from oscdeep.io.atomic import atomic_path


def test_written_file_has_the_permissions_of_a_plain_one(tmp_path: Path) -> None:
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    with atomic_path(tmp_path / "atomic.txt") as tmp:
        tmp.write_text("x")
    mode = stat.S_IMODE((tmp_path / "atomic.txt").stat().st_mode)
    assert mode == stat.S_IMODE(plain.stat().st_mode)


def test_failure_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "out.png"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["out.png"]


@pytest.mark.parametrize("array", [
    np.arange(24, dtype=np.uint16).reshape(2, 3, 4),
    np.asfortranarray(np.arange(6.0).reshape(2, 3)),
    np.arange(24, dtype=">f4").reshape(2, 3, 4)[:, ::2],  # big-endian, not contiguous
    np.zeros((0, 3), np.float32),
    np.float32(3.5),
])
def test_write_npy_is_an_ordinary_npy_file(tmp_path: Path, array: np.ndarray) -> None:
    """Written through a memory map, read back by np.load: same shape, dtype and values."""
    from oscdeep.io.npy import write_npy

    path = tmp_path / "a.npy"
    write_npy(path, array)
    back = np.load(path)
    assert back.shape == np.shape(array) and back.dtype == np.asarray(array).dtype
    np.testing.assert_array_equal(back, array)
