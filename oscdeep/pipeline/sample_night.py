"""Write a synthetic night to disk as a photographer's folder, with its truth beside it.

Layout::

    <dir>/lights/Light_M42_120.0s_0001.fits   <dir>/darks/Dark_120.0s_0001.fits
    <dir>/flats/Flat_2.0s_0001.fits           <dir>/bias/Bias_0.0s_0001.fits
    <dir>/truth/truth.json                    <dir>/truth/truth.npz

FITS frames carry the headers capture programs write (IMAGETYP, EXPTIME, GAIN, CCD-TEMP,
BAYERPAT, ...). DNG frames carry make/model/ISO/exposure/time in EXIF; DNG has no frame type,
so the folder names classify them. The truth arrays are top-down (as oscdeep holds frames after
reading), whatever ROWORDER the files use.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from oscdeep.io.atomic import atomic_path
from oscdeep.io.fits import write_fits_image
from oscdeep.progress import NullProgress, Progress
from oscdeep.synth import FrameTruth, NightConfig, NightTruth, iter_frames, make_night
from oscdeep.types import FrameKind, flip_pattern_rows

FOLDERS = {FrameKind.LIGHT: "lights", FrameKind.DARK: "darks", FrameKind.FLAT: "flats",
           FrameKind.BIAS: "bias"}
_IMAGETYP = {FrameKind.LIGHT: "Light Frame", FrameKind.DARK: "Dark Frame",
             FrameKind.FLAT: "Flat Field", FrameKind.BIAS: "Bias Frame"}
TRUTH_JSON = "truth/truth.json"
TRUTH_NPZ = "truth/truth.npz"


@dataclass(frozen=True)
class SampleNight:
    """What :func:`write_sample_night` wrote: the paths of each kind and the truth."""

    root: Path
    lights: tuple[Path, ...]
    darks: tuple[Path, ...]
    flats: tuple[Path, ...]
    bias: tuple[Path, ...]
    truth_json: Path
    truth_npz: Path
    truth: NightTruth

    def paths(self, kind: FrameKind | str) -> tuple[Path, ...]:
        """Written files of one kind, in time order."""
        return {FrameKind.LIGHT: self.lights, FrameKind.DARK: self.darks,
                FrameKind.FLAT: self.flats, FrameKind.BIAS: self.bias}[FrameKind(kind)]

    @property
    def all_paths(self) -> tuple[Path, ...]:
        return self.lights + self.darks + self.flats + self.bias


def frame_filename(cfg: NightConfig, frame: FrameTruth) -> str:
    """File name a capture program would give the frame, e.g. ``Light_M42_120.0s_0001.fits``."""
    suffix = ".fits" if cfg.file_format == "fits" else ".dng"
    number = f"{frame.exposure:.1f}s_{frame.index + 1:04d}{suffix}"
    if frame.kind == FrameKind.LIGHT:
        target = "".join(ch for ch in cfg.target if ch.isalnum() or ch in "-+") or "target"
        return f"Light_{target}_{number}"
    return f"{frame.kind.value.capitalize()}_{number}"


def fits_header(cfg: NightConfig, frame: FrameTruth) -> dict[str, Any]:
    """The FITS cards of one frame; BAYERPAT describes the *stored* row order."""
    stored_pattern = (flip_pattern_rows(cfg.pattern, cfg.height)
                      if cfg.row_order == "BOTTOM-UP" else cfg.pattern)
    cards: dict[str, Any] = {
        "IMAGETYP": _IMAGETYP[frame.kind],
        "EXPTIME": (frame.exposure, "[s] exposure time"),
        "EXPOSURE": (frame.exposure, "[s] exposure time"),
        "DATE-OBS": (frame.date_obs.isoformat(timespec="milliseconds"), "UTC start of exposure"),
        "XBINNING": 1,
        "YBINNING": 1,
        "GAIN": (cfg.gain, "camera gain setting"),
        "OFFSET": (cfg.offset, "camera offset setting"),
        "EGAIN": (cfg.e_per_adu, "[e-/ADU] electrons per ADU"),
        "CCD-TEMP": (frame.temperature, "[C] sensor temperature"),
        "SET-TEMP": (cfg.set_temperature, "[C] cooler set point"),
        "XPIXSZ": (cfg.pixel_size, "[um] pixel width"),
        "YPIXSZ": (cfg.pixel_size, "[um] pixel height"),
        "INSTRUME": cfg.instrument,
        "TELESCOP": cfg.telescope,
        "FOCALLEN": (cfg.focal_length, "[mm] focal length"),
        "FILTER": cfg.filter,
        "BAYERPAT": (stored_pattern, "Bayer pattern at the first stored pixel"),
        "XBAYROFF": 0,
        "YBAYROFF": 0,
        "ROWORDER": cfg.row_order,
        "SWCREATE": "oscdeep synthetic night",
    }
    if frame.kind == FrameKind.LIGHT:
        cards["OBJECT"] = cfg.target
    return cards


def _write_frame(path: Path, cfg: NightConfig, frame: FrameTruth, mosaic: np.ndarray) -> None:
    if cfg.file_format == "dng":
        from oscdeep.io.dng import write_dng

        write_dng(path, mosaic, cfg.pattern, black_level=int(round(cfg.bias_level)),
                  white_level=cfg.white_level, exposure=frame.exposure, iso=cfg.iso,
                  date_obs=frame.date_obs, make=cfg.camera_make, model=cfg.camera_model)
    else:
        write_fits_image(path, mosaic, fits_header(cfg, frame), dtype="uint16",
                         row_order=cfg.row_order)


def frame_document(frame: FrameTruth) -> dict[str, Any]:
    """JSON-ready truth of one frame."""
    out: dict[str, Any] = {
        "kind": str(frame.kind), "index": frame.index, "date_obs": frame.date_obs.isoformat(),
        "exposure": frame.exposure, "temperature": frame.temperature,
    }
    if frame.kind == FrameKind.LIGHT:
        out |= {"transform": frame.transform.tolist(), "inverse": frame.inverse.tolist(),
                "fwhm": frame.fwhm, "transmission": frame.transmission,
                "background_factor": frame.background_factor, "flags": list(frame.flags),
                "trail": list(frame.trail) if frame.trail else None}
    if frame.illumination is not None:
        out["illumination"] = list(frame.illumination)
    return out


def truth_document(night: NightTruth, files: dict[tuple[FrameKind, int], str]
                   ) -> dict[str, Any]:
    """JSON-ready truth: config, camera constants, hot/cold pixels, dust and every frame."""
    cfg, det = night.config, night.detector
    frames = [frame_document(f) | {"file": files[f.kind, f.index]} for f in night.frames()]
    return {
        "config": dataclasses.asdict(cfg) | {"start": cfg.start.isoformat()},
        "pattern": cfg.pattern,
        "stored_bayerpat": (flip_pattern_rows(cfg.pattern, cfg.height)
                            if cfg.row_order == "BOTTOM-UP" else cfg.pattern),
        "gain_setting": cfg.gain,
        "e_per_adu": cfg.e_per_adu,
        "bias_level": cfg.bias_level,
        "read_noise_e": cfg.read_noise,
        "read_noise_adu": cfg.read_noise / cfg.e_per_adu,
        "dark_current": cfg.dark_current_at(cfg.temperature),
        "dark_current_unit": "e-/s/px at config.temperature, hot pixels excluded",
        "hot_pixels": [[int(x), int(y), float(r)]
                       for (x, y), r in zip(det.hot_pixels, det.hot_rates, strict=True)],
        "hot_pixels_columns": ["x", "y", "e-/s at config.temperature"],
        "cold_pixels": [[int(x), int(y), float(r)]
                        for (x, y), r in zip(det.cold_pixels, det.cold_response, strict=True)],
        "cold_pixels_columns": ["x", "y", "relative response"],
        "dust": det.dust.tolist(),
        "dust_columns": ["x", "y", "outer radius px", "depth (green)"],
        "n_stars": int(night.sky.x.size),
        "arrays": "truth.npz: sky (stars drawn at sky_fwhm), background: (H, W, 3) e-/s on "
                  "the reference grid; star_x, star_y, star_flux (N, 3) e-/s; flat, bias (ADU), "
                  "dark_rate (e-/s), hot_pixels: (H, W) top-down",
        "frames": frames,
    }


def _write_truth(root: Path, night: NightTruth, files: dict[tuple[FrameKind, int], str]
                 ) -> tuple[Path, Path]:
    doc = truth_document(night, files)
    json_path, npz_path = root / TRUTH_JSON, root / TRUTH_NPZ
    with atomic_path(json_path) as tmp:
        tmp.write_text(json.dumps(doc, indent=1) + "\n")
    sky, det = night.sky, night.detector
    ref_fwhm = night.lights[0].fwhm if night.lights else float(np.mean(night.config.fwhm_range))
    arrays = {
        "sky": sky.rgb(ref_fwhm, psf=night.config.psf, beta=night.config.moffat_beta),
        "background": sky.background_rgb,
        "star_x": sky.x, "star_y": sky.y, "star_flux": sky.flux,
        "flat": det.flat, "bias": det.bias, "dark_rate": det.dark_rate,
        "hot_pixels": det.hot_mask, "sky_fwhm": np.float64(ref_fwhm),
    }
    with atomic_path(npz_path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    return json_path, npz_path


def write_sample_night(directory: str | os.PathLike[str], config: NightConfig | None = None,
                       *, progress: Progress | None = None) -> SampleNight:
    """Render every frame of a synthetic night into ``directory`` and write its truth.

    Same config, same bytes: writing again over an existing folder gives identical files.
    """
    cfg = config or NightConfig()
    root = Path(directory)
    progress = progress or NullProgress()
    night = make_night(cfg)
    written: dict[FrameKind, list[Path]] = {k: [] for k in FOLDERS}
    names: dict[tuple[FrameKind, int], str] = {}
    progress.begin("Writing synthetic night", total=len(night.frames()))
    try:
        for frame, mosaic in iter_frames(night):
            rel = f"{FOLDERS[frame.kind]}/{frame_filename(cfg, frame)}"
            _write_frame(root / rel, cfg, frame, mosaic)
            written[frame.kind].append(root / rel)
            names[frame.kind, frame.index] = rel
            progress.advance()
    finally:
        progress.end()
    json_path, npz_path = _write_truth(root, night, names)
    return SampleNight(root=root, lights=tuple(written[FrameKind.LIGHT]),
                       darks=tuple(written[FrameKind.DARK]), flats=tuple(written[FrameKind.FLAT]),
                       bias=tuple(written[FrameKind.BIAS]), truth_json=json_path,
                       truth_npz=npz_path, truth=night)


def read_sample_truth(directory: str | os.PathLike[str]) -> tuple[dict[str, Any],
                                                                  dict[str, np.ndarray]]:
    """The truth written beside a sample night: the JSON document and the arrays."""
    root = Path(directory)
    doc = json.loads((root / TRUTH_JSON).read_text())
    with np.load(root / TRUTH_NPZ) as npz:
        arrays = {k: npz[k] for k in npz.files}
    return doc, arrays

