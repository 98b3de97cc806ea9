"""Process-wide settings for heavy array work."""

from __future__ import annotations

import contextlib
import ctypes
import sys
from collections.abc import Iterator

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def reuse_freed_memory() -> bool:
    """Let glibc keep large freed blocks in the heap for the next array instead of returning
    them to the system. Otherwise every frame-sized array (tens of MB) is mapped afresh and
    each of its pages faults on first touch; keeping them made debayer + warp of a 3000x2000
    frame 15-30 % faster here. For worker processes that handle one frame after another
    (their arrays have the same sizes every time); a long-lived process that allocates
    buffers of many sizes would keep them all (the CLI's main process grew by 70 MiB).
    Returns whether it was applied (glibc only)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    mmap_ok = libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30)
    trim_ok = libc.mallopt(_M_TRIM_THRESHOLD, (1 << 31) - 1)
    return bool(mmap_ok and trim_ok)


@contextlib.contextmanager
def single_threaded_workers() -> Iterator[None]:
    """Around the creation and use of a process pool: OpenCV runs single-threaded in the
    forked workers, which are already one per core (warping 16 frames of 3000x2000 on two
    workers: 2.42-3.01 s with OpenCV's own threads on top, 2.47-2.59 s without). Set in the
    parent before the fork, because changing it inside a forked child hangs on the parent's
    thread pool; the parent's setting is restored afterwards."""
    import cv2

    before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(before)
