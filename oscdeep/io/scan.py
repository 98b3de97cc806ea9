"""Find candidate frame files under the files and folders a user names.

Every file found is put in exactly one list:

* ``frames``: a FITS or camera-raw suffix, or (any other suffix) starting with the FITS card;
* ``ignored``: known companions that are not frames: the sidecars oscdeep writes (json, npz,
  txt, md, ...), logs, editor sidecars (xmp), OS litter (Thumbs.db, desktop.ini);
* ``unsupported``: everything else (PNG, TIFF, XISF, ...), to be reported to the user.

Hidden files and folders (name starting with '.') are skipped while walking, which also
skips oscdeep's own half-written '.name.part' files; a hidden file named explicitly is kept.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from oscdeep.errors import FrameReadError
from oscdeep.io.headers import detect_format

IGNORED_SUFFIXES: frozenset[str] = frozenset({
    ".json", ".npz", ".npy", ".txt", ".md", ".log", ".csv", ".tsv", ".toml", ".ini", ".yaml",
    ".yml", ".xml", ".xmp", ".db", ".sqlite", ".sqlite3", ".db-wal", ".db-shm", ".pp3",
    ".seq", ".ssf", ".py", ".html", ".pdf",
})
IGNORED_NAMES: frozenset[str] = frozenset({"thumbs.db", "desktop.ini"})


@dataclass(frozen=True)
class ScanResult:
    """Files found, sorted and de-duplicated (absolute paths), split by what they are."""

    frames: list[Path] = field(default_factory=list)
    ignored: list[Path] = field(default_factory=list)
    unsupported: list[Path] = field(default_factory=list)


def classify_file(path: Path) -> str:
    """'frame', 'ignored' or 'unsupported' (see the module notes)."""
    name = path.name.lower()
    if name in IGNORED_NAMES or any(name.endswith(s) for s in IGNORED_SUFFIXES):
        return "ignored"
    return "frame" if detect_format(path) is not None else "unsupported"


def _walk(folder: Path) -> Iterable[Path]:
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if not name.startswith("."):
                yield Path(root, name)


def scan_paths(paths: Iterable[str | os.PathLike[str]]) -> ScanResult:
    """Recursively list and classify the files under ``paths`` (files or folders).

    Raises FrameReadError naming the first path that does not exist.
    """
    found: set[Path] = set()
    for given in paths:
        path = Path(given).expanduser()
        if not path.exists():
            raise FrameReadError(path, "no such file or folder")
        if path.is_dir():
            found.update(p.resolve() for p in _walk(path) if p.is_file())
        else:
            found.add(path.resolve())
    lists: dict[str, list[Path]] = {"frame": [], "ignored": [], "unsupported": []}
    for path in sorted(found):
        lists[classify_file(path)].append(path)
    return ScanResult(frames=lists["frame"], ignored=lists["ignored"],
                      unsupported=lists["unsupported"])
