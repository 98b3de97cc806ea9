"""Option dataclasses of the stages that more than one layer needs (frozen, validated)."""

from __future__ import annotations

from dataclasses import dataclass, field

from oscdeep.errors import ConfigError

MASTER_KINDS = ("bias", "darkflat", "dark", "flat")
"""Master kinds in the order they must be built: flats need bias or dark-flats."""


@dataclass(frozen=True)
class MatchTolerances:
    """How close calibration frames and lights must be to belong together.

    Temperatures in °C: frames whose sensor temperatures lie within ``temperature`` of each
    other form one dark group, and a dark serves lights within ``temperature`` of its mean.
    Exposures match when they differ by at most ``exposure_rel`` (relative) or
    ``exposure_abs`` seconds, whichever is larger.
    """

    temperature: float = 2.0
    exposure_rel: float = 0.01
    exposure_abs: float = 0.05

    def __post_init__(self) -> None:
        if self.temperature < 0 or self.exposure_rel < 0 or self.exposure_abs < 0:
            raise ConfigError("tolerances must not be negative")

    def same_exposure(self, a: float | None, b: float | None) -> bool:
        if a is None or b is None:
            return a is None and b is None
        return abs(a - b) <= max(self.exposure_abs, self.exposure_rel * max(abs(a), abs(b)))


@dataclass(frozen=True)
class MasterOptions:
    """How masters are integrated (per kind) and how frames are grouped."""

    rejection: str = "winsorized"
    sigma_low: float = 3.0
    sigma_high: float = 3.0
    min_frames: int = 3
    memory_bytes: int | None = None
    tolerances: MatchTolerances = field(default_factory=MatchTolerances)
    hot_sigma: float = 5.0
    cold_sigma: float = 5.0

    def __post_init__(self) -> None:
        if self.min_frames < 1:
            raise ConfigError("min_frames must be at least 1")
        if self.sigma_low <= 0 or self.sigma_high <= 0:
            raise ConfigError("rejection sigmas must be positive")
