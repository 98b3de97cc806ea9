"""Finishing a linear stack into a picture: gradient removal, colour calibration, stretch and
an optional saturation boost, in that order (the first two need linear data).

Arrays and options in, the picture and a record of what each step did out; each step is the
module that owns it (:mod:`oscdeep.background`, :mod:`oscdeep.color`, :mod:`oscdeep.stretch`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from oscdeep.background import (
    BackgroundOptions, BackgroundResult, extract_background, parse_background_spec)
from oscdeep.color import (
    ColorOptions, ColorResult, boost_saturation, calibrate_color, parse_color_spec)
from oscdeep.errors import ConfigError
from oscdeep.progress import NullProgress, Progress
from oscdeep.stretch import StretchOptions, StretchResult, parse_stretch_spec, stretch

DEFAULT_BACKGROUND = "poly:2"
DEFAULT_COLOR = "auto"
DEFAULT_STRETCH = "ghs"


@dataclass(frozen=True)
class FinishOptions:
    """Which finishing steps run and how; ``None`` skips a step."""

    background: BackgroundOptions | None = field(
        default_factory=lambda: parse_background_spec(DEFAULT_BACKGROUND))
    color: ColorOptions | None = field(default_factory=lambda: parse_color_spec(DEFAULT_COLOR))
    stretch: StretchOptions | None = field(
        default_factory=lambda: parse_stretch_spec(DEFAULT_STRETCH))
    saturation: float = 0.0
    specs: dict[str, str] = field(default_factory=lambda: {
        "background": DEFAULT_BACKGROUND, "color": DEFAULT_COLOR, "stretch": DEFAULT_STRETCH})

    def __post_init__(self) -> None:
        if not -1.0 <= self.saturation <= 4.0:
            raise ConfigError(f"saturation boost {self.saturation!r} out of range: "
                              "use -1 (grey) to 4; 0 leaves colours as they are")
        if self.saturation and self.stretch is None:
            raise ConfigError("a saturation boost works on a stretched picture: "
                              "use it with --stretch ghs or mtf")

    @classmethod
    def from_specs(cls, background: str = DEFAULT_BACKGROUND, color: str = DEFAULT_COLOR,
                   stretch: str = DEFAULT_STRETCH, saturation: float = 0.0,
                   exclusions: tuple[Any, ...] = (),
                   background_mode: str = "subtract") -> FinishOptions:
        """Options from the CLI spellings (``poly:3``, ``auto``, ``ghs:0.2``, ``none``…);
        ``exclusions`` are :func:`oscdeep.background.parse_exclusion` regions."""
        bkg = parse_background_spec(background)
        if bkg is not None:
            bkg = replace(bkg, exclusions=tuple(exclusions), mode=background_mode)
        return cls(background=bkg, color=parse_color_spec(color),
                   stretch=parse_stretch_spec(stretch), saturation=float(saturation),
                   specs={"background": background, "color": color, "stretch": stretch})

    def record(self) -> dict[str, Any]:
        """The options as JSON-ready values (for the database and FITS HISTORY)."""
        out: dict[str, Any] = dict(self.specs)
        if self.background is not None:
            out["background_mode"] = str(self.background.mode)
            out["exclusions"] = [repr(r) for r in self.background.exclusions]
        out["saturation"] = self.saturation
        return out


@dataclass(frozen=True, eq=False)
class Finished:
    """The picture (display values in [0, 1] when stretched, else linear; NaN = no data)
    and what each step did."""

    image: np.ndarray
    background: BackgroundResult | None
    color: ColorResult | None
    stretch: StretchResult | None

    @property
    def stretched(self) -> bool:
        return self.stretch is not None

    def summary(self) -> dict[str, Any]:
        """JSON-ready figures of every step, for reports and the database."""
        out: dict[str, Any] = {}
        if self.background is not None:
            b = self.background
            out["background"] = {"model": b.options.spec, "samples": int(len(b.samples)),
                                 "rejected_cells": int(len(b.rejected)),
                                 "residual_rms": [float(v) for v in b.residual_rms],
                                 "pedestal": [float(v) for v in b.pedestal]}
        if self.color is not None:
            c = self.color
            out["color"] = {"reference": c.reference, "n_stars": int(c.n_stars),
                            "factors": [float(v) for v in c.factors],
                            "offsets": [float(v) for v in c.offsets],
                            "sky_levels": [float(v) for v in c.sky_levels]}
        if self.stretch is not None:
            out["stretch"] = dict(self.stretch.params)
            finite = self.image[np.isfinite(self.image)]
            if finite.size:
                out["stretch"]["white_clipped_fraction"] = float(np.mean(finite >= 1.0))
                out["stretch"]["black_clipped_fraction"] = float(np.mean(finite <= 0.0))
        return out


def finish_image(image: np.ndarray, options: FinishOptions = FinishOptions(), *,
                 progress: Progress | None = None) -> Finished:
    """Run the finishing steps on a linear (H, W) or (H, W, 3) float32 stack."""
    progress = progress or NullProgress()
    data = np.asarray(image, dtype=np.float32)
    colour = data.ndim == 3
    steps = [options.background is not None, colour and options.color is not None,
             options.stretch is not None]
    progress.begin("Finishing the picture", sum(steps) or 1)
    try:
        bkg = col = st = None
        if options.background is not None:
            bkg = extract_background(data, options.background)
            data = bkg.image
            progress.advance()
        if colour and options.color is not None:
            col = calibrate_color(data, options.color)
            data = col.image
            progress.advance()
        if options.stretch is not None:
            st = stretch(data, options.stretch)
            data = st.image
            if options.saturation and colour:
                data = boost_saturation(data, options.saturation)
            progress.advance()
    finally:
        progress.end()
    return Finished(image=data, background=bkg, color=col, stretch=st)
