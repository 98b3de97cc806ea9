"""How lights are integrated: the options of ``stack build`` and ``run``, in a module light
enough to import before the processing modules (``run`` forks its first step before those)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class StackOptions:
    """How lights are integrated (the CLI's flags)."""

    rejection: str = "winsorized"
    low: float = 3.0
    high: float = 3.0
    normalization: str = "additive_scaling"
    weighting: str = "weight"
    interpolation: str = "bilinear"
    debayer: str = "vng"
    drizzle: float | None = None
    pixfrac: float = 0.7
    cfa_drizzle: bool = False
    memory_bytes: int | None = None
    workers: int | None = None
    cache_limit: int | None = None

    def record(self) -> dict[str, Any]:
        """Options as stored on the Stack row."""
        return {k: v for k, v in asdict(self).items()
                if k not in ("memory_bytes", "workers", "cache_limit")}
