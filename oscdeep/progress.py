"""Progress reporting protocol: long work calls it, the CLI draws it (or nothing does).

At the bottom of the layers, so processing (the integration engine) and the pipeline share it.
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    """Observer of long work. One task runs at a time; ``total`` None means unknown length."""

    def begin(self, description: str, total: int | None = None) -> None: ...

    def advance(self, step: int = 1) -> None: ...

    def end(self) -> None: ...


class NullProgress:
    """A Progress that shows nothing (library use, tests, non-interactive runs)."""

    def begin(self, description: str, total: int | None = None) -> None:
        pass

    def advance(self, step: int = 1) -> None:
        pass

    def end(self) -> None:
        pass
