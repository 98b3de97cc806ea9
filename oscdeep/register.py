"""Registration by star-pattern matching: the transform taking a frame's stars onto the reference.

Pure functions on star lists: positions ``(N, 2)`` in pixels (0 at the first pixel centre) and,
optionally, fluxes used only to rank stars by brightness (without fluxes the list order is
taken as brightest first). The result maps *frame pixel -> reference pixel*.

How (see :class:`MatchOptions` for every tunable):

1. Patterns: triangles joining each of the brightest ``pattern_stars`` stars to pairs of its
   ``neighbours`` nearest bright neighbours. A triangle's invariant is (shortest, middle) side
   over longest side: unchanged by shift, rotation (any angle, 180 deg included), scale and
   mirroring. Vertices are named by the side they face, so a matched triangle pairs stars.
2. A KD-tree on the reference invariants finds every frame triangle within
   ``invariant_tolerance``; each match votes for its three star pairs.
3. Each matched triangle gives a similarity (mirrored when the two triangles turn opposite
   ways); it scores the number of voted pairs it maps within ``hypothesis_tolerance`` px.
   The best distinct hypotheses are verified in turn (a deterministic RANSAC: the candidates
   are the voted triangles instead of random samples).
4. Verification: *all* frame stars are mapped and paired one-to-one with the nearest reference
   star within ``match_radius``; the chosen model is fitted by weighted least squares (weights
   from the scatter of stars of similar brightness) with iterative sigma clipping, then the
   pairing is redone with a radius from the residuals, until nothing changes.
5. A result is accepted only with at least ``max(min_inliers, min_inlier_fraction x the
   smaller list)`` inliers, far more than chance coincidences could give at that radius, and
   a weighted inlier RMS under ``max_rms``. Otherwise the brightest stars are tried again with
   more pattern stars, and then :class:`RegistrationError` says why the frame failed.
6. A match that barely moves may be the sensor's hot pixels, which sit on the same pixels in
   every frame: the stars it leaves out are searched for a moving match, which wins if found.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any, Protocol

import numpy as np
from scipy.spatial import cKDTree

from oscdeep.errors import ConfigError, RegistrationError
from oscdeep.transform import (Transform, TransformFitError, TransformModel, as_model,
                               fit_transform, similarity_matrix)

# r^2 / sigma^2 of a 2-D Gaussian residual has median 2 ln 2 (chi-square, 2 dof).
_MEDIAN_CHI2_2 = 2.0 * math.log(2.0)
_MIN_VARIANCE = 0.003 ** 2  # px^2: floor for a brightness bin's centroid variance
_PAIRS_PER_BIN = 20
_MAX_HYPOTHESES = 300  # matched triangles (most voted first) scored as candidate transforms
_LOO_MAX_PAIRS = 30  # up to this many pairs, outliers are judged by leave-one-out residuals
_N_PARAMS = {TransformModel.SHIFT: 2, TransformModel.SIMILARITY: 4, TransformModel.AFFINE: 6,
             TransformModel.HOMOGRAPHY: 8}


@dataclass(frozen=True)
class MatchOptions:
    """Tunables of :func:`find_transform` (lengths in pixels)."""

    pattern_stars: int = 40
    """Brightest stars of each list used for triangles in the first attempt."""
    max_pattern_stars: int = 360
    """Later attempts triple the pattern stars up to this many."""
    neighbours: int = 6
    """Each pattern star forms triangles with pairs of this many nearest pattern stars."""
    invariant_tolerance: float = 0.01
    """Largest distance between two triangles' side-ratio invariants that still matches."""
    min_side: float = 4.0
    """Triangles whose shortest side is shorter are too noisy to use."""
    hypothesis_tolerance: float = 3.0
    """A voted star pair agrees with a candidate transform within this distance."""
    max_hypotheses: int = 4
    """Distinct candidate transforms verified on all stars per attempt."""
    match_radius: float = 3.0
    """Radius of the first pairing of all stars under a candidate transform."""
    min_match_radius: float = 1.0
    """Smallest radius of the later pairings (which use 5x the residual RMS)."""
    clip_sigma: float = 3.0
    """Star pairs farther than this many residual RMS (per brightness bin) are clipped."""
    max_iterations: int = 10
    min_inliers: int = 6
    min_inlier_fraction: float = 0.1
    """Inliers needed as a fraction of the smaller star list."""
    max_rms: float = 1.0
    """Largest accepted RMS residual of the inliers (weighted, see RegistrationResult)."""
    scale_range: tuple[float, float] = (0.5, 2.0)
    """Accepted frame-to-reference scales (the linear size ratio)."""
    fixed_pattern_check: bool = True
    """When the match barely moves (< ``min_match_radius``), look for a moving match among the
    other stars: hot pixels match at the identity, the sky wherever the frame was dithered."""
    affine_min_inliers: int = 30
    """With no model given, fewer inliers than this fall back from affine to similarity."""

    def __post_init__(self) -> None:
        if self.pattern_stars < 3 or self.max_pattern_stars < self.pattern_stars:
            raise ConfigError("pattern_stars must be >= 3 and <= max_pattern_stars")
        if self.neighbours < 2 or self.max_iterations < 1 or self.max_hypotheses < 1:
            raise ConfigError("neighbours must be >= 2, max_iterations and max_hypotheses >= 1")
        if min(self.invariant_tolerance, self.hypothesis_tolerance, self.match_radius,
               self.min_match_radius, self.clip_sigma, self.max_rms) <= 0:
            raise ConfigError("tolerances, radii, clip_sigma and max_rms must be positive")
        if not 0 < self.scale_range[0] < self.scale_range[1]:
            raise ConfigError("scale_range must be (low, high) with 0 < low < high")
        if self.min_inliers < 3 or not 0 <= self.min_inlier_fraction <= 1:
            raise ConfigError("min_inliers must be >= 3 and min_inlier_fraction in [0, 1]")


@dataclass(frozen=True, eq=False)
class RegistrationResult:
    """A registered frame: ``transform`` maps frame pixels to reference pixels.

    ``n_matches`` star pairs were found within the final radius, ``n_inliers`` of them survived
    sigma clipping; ``pairs`` holds their ``(frame index, reference index)`` in the caller's
    star lists. ``rms`` (px) is the inliers' residual RMS weighted by centroid precision
    (1 / the residual variance of stars of similar brightness), so it shows how well the
    stars that set the transform agree: a detector's faint stars can scatter by 0.5 px and
    more without hurting the fit. ``rms_unweighted`` is the plain RMS.
    """

    transform: Transform
    n_matches: int
    n_inliers: int
    rms: float
    rms_unweighted: float
    pairs: np.ndarray = field(repr=False)


class StarField:
    """A star list ready for matching: brightest first, with its KD-tree and triangle patterns.

    Build one for a reference and pass it to :func:`find_transform` for every frame so that
    its tree and triangles are made once.
    """

    def __init__(self, xy: np.ndarray, flux: np.ndarray | None = None) -> None:
        pts = np.asarray(xy, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 2:
            raise ValueError(f"star positions must have shape (N, 2), got {pts.shape}")
        keep = np.all(np.isfinite(pts), axis=1)
        order = np.arange(len(pts))
        if flux is not None:
            f = np.asarray(flux, dtype=np.float64).reshape(-1)
            if len(f) != len(pts):
                raise ValueError(f"{len(f)} fluxes for {len(pts)} stars")
            f = np.where(np.isfinite(f), f, -np.inf)
            order = np.argsort(-f, kind="stable")
        order = order[keep[order]]
        self.index = order  # position in the caller's list of each star, brightest first
        self.xy = np.ascontiguousarray(pts[order])
        n = len(self.xy)
        self.faintness = np.arange(n) / max(n - 1, 1)  # 0 = brightest, 1 = faintest
        self._tree: cKDTree | None = None
        self._patterns: dict[tuple[int, int, float], _Patterns] = {}

    def __len__(self) -> int:
        return len(self.xy)

    def without(self, caller_indices: np.ndarray) -> StarField:
        """The same field minus the stars at these positions of the caller's list."""
        keep = ~np.isin(self.index, caller_indices)
        out = StarField.__new__(StarField)
        out.index, out.xy = self.index[keep], self.xy[keep]
        out.faintness = np.arange(len(out.xy)) / max(len(out.xy) - 1, 1)
        out._tree, out._patterns = None, {}
        return out

    @property
    def tree(self) -> cKDTree:
        if self._tree is None:
            self._tree = cKDTree(self.xy)
        return self._tree

    def patterns(self, n_stars: int, neighbours: int, min_side: float) -> _Patterns:
        key = (min(n_stars, len(self)), neighbours, min_side)
        if key not in self._patterns:
            self._patterns[key] = _make_patterns(self.xy[:key[0]], neighbours, min_side)
        return self._patterns[key]


@dataclass(frozen=True, eq=False)
class _Patterns:
    """Triangles (T, 3) of star indices, vertex k facing the k-th shortest side; invariants."""

    triangles: np.ndarray
    invariants: np.ndarray
    tree: cKDTree | None


def _make_patterns(xy: np.ndarray, neighbours: int, min_side: float) -> _Patterns:
    n = len(xy)
    empty = _Patterns(np.empty((0, 3), np.intp), np.empty((0, 2)), None)
    if n < 3:
        return empty
    k = min(neighbours, n - 1)
    _, nb = cKDTree(xy).query(xy, k + 1)
    nb = nb[:, 1:]
    combos = np.array(list(combinations(range(k), 2)))
    tri = np.stack([np.repeat(np.arange(n), len(combos)),
                    nb[:, combos[:, 0]].ravel(), nb[:, combos[:, 1]].ravel()], axis=1)
    tri = np.unique(np.sort(tri, axis=1), axis=0)
    tri = tri[(tri[:, 0] != tri[:, 1]) & (tri[:, 1] != tri[:, 2])]
    p = xy[tri]
    sides = np.stack([np.hypot(*(p[:, 1] - p[:, 2]).T), np.hypot(*(p[:, 2] - p[:, 0]).T),
                      np.hypot(*(p[:, 0] - p[:, 1]).T)], axis=1)  # side facing vertex 0, 1, 2
    order = np.argsort(sides, axis=1)
    tri = np.take_along_axis(tri, order, axis=1)
    sides = np.take_along_axis(sides, order, axis=1)
    ok = sides[:, 0] >= min_side
    tri, sides = tri[ok], sides[ok]
    if len(tri) == 0:
        return empty
    inv = sides[:, :2] / sides[:, 2:3]
    return _Patterns(tri, inv, cKDTree(inv))


# --- candidate transforms from matched triangles --------------------------------------------

@dataclass(frozen=True, eq=False)
class _Hypotheses:
    """Similarities ``z_ref = a * z + t`` (``z`` mirrored where ``mirrored``), best first."""

    a: np.ndarray
    t: np.ndarray
    mirrored: np.ndarray
    score: np.ndarray
    n_triangle_matches: int


def _hypotheses(frame: StarField, ref: StarField, n_stars: int, opts: MatchOptions
                ) -> _Hypotheses:
    fp = frame.patterns(n_stars, opts.neighbours, opts.min_side)
    rp = ref.patterns(n_stars, opts.neighbours, opts.min_side)
    none = _Hypotheses(np.empty(0, complex), np.empty(0, complex), np.empty(0, bool),
                       np.empty(0, np.intp), 0)
    if fp.tree is None or rp.tree is None:
        return none
    hits = fp.tree.sparse_distance_matrix(rp.tree, opts.invariant_tolerance,
                                          output_type="ndarray")
    if len(hits) == 0:
        return none
    fv, rv = fp.triangles[hits["i"]], rp.triangles[hits["j"]]  # (T, 3) matched vertices
    n_ref = len(ref)
    keys = fv * n_ref + rv
    pair_keys, inverse, votes = np.unique(keys.ravel(), return_inverse=True, return_counts=True)
    support = votes[inverse].reshape(keys.shape).sum(axis=1)

    zf = frame.xy[fv, 0] + 1j * frame.xy[fv, 1]
    zr = ref.xy[rv, 0] + 1j * ref.xy[rv, 1]
    turn_f = np.imag(np.conj(zf[:, 1] - zf[:, 0]) * (zf[:, 2] - zf[:, 0]))
    turn_r = np.imag(np.conj(zr[:, 1] - zr[:, 0]) * (zr[:, 2] - zr[:, 0]))
    mirrored = turn_f * turn_r < 0
    z = np.where(mirrored[:, None], -np.conj(zf), zf)
    z0 = z - z.mean(axis=1, keepdims=True)
    d0 = zr - zr.mean(axis=1, keepdims=True)
    a = (np.conj(z0) * d0).sum(axis=1) / (np.abs(z0) ** 2).sum(axis=1)
    t = zr.mean(axis=1) - a * z.mean(axis=1)
    lo, hi = opts.scale_range
    ok = (np.abs(a) >= lo) & (np.abs(a) <= hi)
    if not ok.any():
        return dataclasses.replace(none, n_triangle_matches=len(hits))
    best = np.nonzero(ok)[0][np.argsort(-support[ok], kind="stable")[:_MAX_HYPOTHESES]]
    a, t, mirrored = a[best], t[best], mirrored[best]

    # Score every hypothesis on the pairs voted at least twice (all pairs if too few are).
    strong = pair_keys[votes >= 2] if np.count_nonzero(votes >= 2) >= 3 else pair_keys
    pf, pr = np.divmod(strong, n_ref)
    zpf = frame.xy[pf, 0] + 1j * frame.xy[pf, 1]
    zpr = ref.xy[pr, 0] + 1j * ref.xy[pr, 1]
    src = np.where(mirrored[:, None], -np.conj(zpf)[None, :], zpf[None, :])
    close = np.abs(a[:, None] * src + t[:, None] - zpr[None, :]) < opts.hypothesis_tolerance
    score = close.sum(axis=1)
    order = np.argsort(-score, kind="stable")
    return _Hypotheses(a[order], t[order], mirrored[order], score[order], len(hits))


# --- verification and refinement on all stars -----------------------------------------------

def _associate(transform: Transform, frame: StarField, ref: StarField, radius: float
               ) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one pairs (frame, ref) of nearest neighbours within ``radius`` after mapping."""
    dist, j = ref.tree.query(transform.apply(frame.xy), k=1, distance_upper_bound=radius)
    fi = np.nonzero(np.isfinite(dist))[0]
    rj, d = j[fi], dist[fi]
    order = np.lexsort((d, rj))
    first = np.ones(len(order), bool)
    first[1:] = rj[order][1:] != rj[order][:-1]
    keep = np.sort(order[first])
    return fi[keep], rj[keep]


def _brightness_bins(faintness: np.ndarray) -> np.ndarray:
    n = len(faintness)
    n_bins = int(np.clip(n // _PAIRS_PER_BIN, 1, 8))
    rank = np.empty(n, np.intp)
    rank[np.argsort(faintness, kind="stable")] = np.arange(n)
    return rank * n_bins // max(n, 1)


def _robust_variance(r2: np.ndarray) -> float:
    """Per-axis variance of 2-D Gaussian residuals from the median of their squares."""
    return float(np.median(r2)) / _MEDIAN_CHI2_2


def _deleted_residuals(src: np.ndarray, dst: np.ndarray, weights: np.ndarray, mask: np.ndarray,
                       model: TransformModel, r2: np.ndarray) -> np.ndarray:
    """Squared residual of each used pair under the fit of the other used pairs."""
    out = r2.copy()
    used = np.nonzero(mask)[0]
    if len(used) - 1 < model.min_points + 1:
        return out
    for i in used:
        others = mask.copy()
        others[i] = False
        t = fit_transform(src[others], dst[others], model, weights=weights[others])
        out[i] = float(((t.apply(src[i]) - dst[i]) ** 2).sum())
    return out


@dataclass(frozen=True, eq=False)
class _Fit:
    transform: Transform
    inliers: np.ndarray  # bool over the pairs
    rms: float  # weighted by 1 / variance of the brightness bin
    rms_unweighted: float
    sigma: float  # largest per-bin radial residual RMS


def _clipped_fit(src: np.ndarray, dst: np.ndarray, faintness: np.ndarray,
                 model: TransformModel, opts: MatchOptions) -> _Fit:
    """Weighted fit with iterative sigma clipping; weights = 1 / variance of the star's bin."""
    bins = _brightness_bins(faintness)
    n_bins = int(bins.max()) + 1
    mask = np.ones(len(src), bool)
    weights = np.ones(len(src))
    cut = 2.0 * opts.clip_sigma ** 2  # radial cut at clip_sigma x the radial RMS
    n_params = _N_PARAMS[model]
    for _ in range(opts.max_iterations):
        transform = fit_transform(src[mask], dst[mask], model, weights=weights[mask])
        r2 = ((transform.apply(src) - dst) ** 2).sum(axis=1)
        n_used = np.count_nonzero(mask)
        if n_used <= _LOO_MAX_PAIRS:
            # Few pairs: one wrong pair drags the fit towards itself and hides among the
            # residuals; its residual under a fit without it does not.
            r2 = _deleted_residuals(src, dst, weights, mask, model, r2)
            dof = 1.0
        else:  # the fit absorbs n_params of the 2 n residual degrees of freedom
            dof = 2.0 * n_used / max(2.0 * n_used - n_params, 1.0)
        var = np.full(n_bins, _robust_variance(r2[mask]))
        for b in range(n_bins):
            sel = mask & (bins == b)
            if np.count_nonzero(sel) >= 5:
                var[b] = _robust_variance(r2[sel])
        var = np.maximum(var * dof, _MIN_VARIANCE)
        weights = 1.0 / var[bins]
        new_mask = r2 / var[bins] < cut
        if np.count_nonzero(new_mask) < model.min_points:
            break
        if np.array_equal(new_mask, mask):
            break
        mask = new_mask
    transform = fit_transform(src[mask], dst[mask], model, weights=weights[mask])
    r2 = ((transform.apply(src) - dst) ** 2).sum(axis=1)
    rms = math.sqrt(float(np.average(r2[mask], weights=weights[mask])))
    return _Fit(transform, mask, rms, math.sqrt(float(r2[mask].mean())),
                math.sqrt(2.0 * float(var.max())))


@dataclass(frozen=True, eq=False)
class _Verified:
    result: RegistrationResult | None
    reason: str
    n_inliers: int


def _verify(guess: Transform, frame: StarField, ref: StarField, model: TransformModel,
            opts: MatchOptions) -> _Verified:
    """Pair all stars under ``guess``, refit and clip until stable, then judge the result."""
    transform, radius = guess, opts.match_radius
    previous: tuple[bytes, bytes] | None = None
    fit: _Fit | None = None
    fi = rj = np.empty(0, np.intp)
    for _ in range(opts.max_iterations):
        fi, rj = _associate(transform, frame, ref, radius)
        if len(fi) < max(model.min_points + 1, 3):
            under = ("the best star pattern match" if fit is None
                     else f"a {model.value} transform, which cannot follow the pattern match")
            return _Verified(None, f"only {len(fi)} stars fall within {radius:.2g} px of a "
                             f"reference star under {under}", len(fi))
        key = (fi.tobytes(), rj.tobytes())
        if key == previous:
            break
        previous = key
        faint = np.maximum(frame.faintness[fi], ref.faintness[rj])
        try:
            fit = _clipped_fit(frame.xy[fi], ref.xy[rj], faint, model, opts)
        except TransformFitError as exc:
            return _Verified(None, str(exc), 0)
        transform = fit.transform
        if not opts.scale_range[0] <= transform.scale <= opts.scale_range[1]:
            return _Verified(None, f"the {model.value} fit drifted to scale "
                             f"{transform.scale:.3g}: no consistent star pattern match", 0)
        radius = float(np.clip(5.0 * fit.sigma, opts.min_match_radius, opts.match_radius))
    assert fit is not None
    n_in = int(fit.inliers.sum())
    needed = max(opts.min_inliers,
                 math.ceil(opts.min_inlier_fraction * min(len(frame), len(ref))))
    chance = _chance_pairs(transform, frame, ref, radius)
    if n_in < needed:
        reason = f"only {n_in} stars match the reference consistently, {needed} needed"
    elif n_in < 3.0 * chance + 5.0 * math.sqrt(chance):
        reason = (f"{n_in} matching stars are no more than chance coincidences "
                  f"(~{chance:.0f} expected within {radius:.2g} px in so dense a field)")
    elif fit.rms > opts.max_rms:
        reason = f"residual RMS {fit.rms:.2f} px exceeds {opts.max_rms:g} px"
    else:
        pairs = np.stack([frame.index[fi[fit.inliers]], ref.index[rj[fit.inliers]]], axis=1)
        return _Verified(RegistrationResult(transform, len(fi), n_in, fit.rms,
                                            fit.rms_unweighted, pairs), "", n_in)
    return _Verified(None, reason, n_in)


def _chance_pairs(transform: Transform, frame: StarField, ref: StarField, radius: float
                  ) -> float:
    """Pairs expected by coincidence: frame stars over the reference area x its star density."""
    lo, hi = ref.xy.min(axis=0), ref.xy.max(axis=0)
    area = float(np.prod(np.maximum(hi - lo, 1.0)))
    mapped = transform.apply(frame.xy)
    inside = np.count_nonzero(np.all((mapped >= lo) & (mapped <= hi), axis=1))
    return inside * len(ref) / area * math.pi * radius ** 2


# --- public API -----------------------------------------------------------------------------

def _as_field(stars: np.ndarray | StarField, flux: np.ndarray | None) -> StarField:
    if isinstance(stars, StarField):
        if flux is not None:
            raise ValueError("pass fluxes when building the StarField, not with it")
        return stars
    return StarField(stars, flux)


def find_transform(frame_xy: np.ndarray | StarField, ref_xy: np.ndarray | StarField, *,
                   model: TransformModel | str | None = None,
                   frame_flux: np.ndarray | None = None, ref_flux: np.ndarray | None = None,
                   options: MatchOptions | None = None) -> RegistrationResult:
    """Transform (frame pixel -> reference pixel) matching the frame's stars to the reference's.

    Star lists are ``(N, 2)`` arrays of ``(x, y)`` (or prepared :class:`StarField` objects);
    fluxes only rank the stars (without them the list order is taken as brightest first).
    Handles any rotation, mirror images, scales within ``options.scale_range``, partial
    overlap, missing and spurious stars. Raises :class:`RegistrationError` with the reason
    when no transform is convincing — a frame of noise fails rather than mis-registers.

    ``model=None`` fits an affine transform (it absorbs the differential refraction between
    frames taken at different altitudes, which a similarity cannot) unless fewer than
    ``options.affine_min_inliers`` stars match, where the similarity's 4 parameters are
    better determined than the affine's 6.
    """
    opts = options or MatchOptions()
    auto = model is None
    fitted = TransformModel.AFFINE if model is None else as_model(model)
    frame, ref = _as_field(frame_xy, frame_flux), _as_field(ref_xy, ref_flux)
    smallest = max(opts.min_inliers, fitted.min_points)
    for name, stars in (("frame", frame), ("reference", ref)):
        if len(stars) < smallest:
            raise RegistrationError(f"the {name} has {len(stars)} stars; at least {smallest} "
                                    "are needed to register")
    result = _search(frame, ref, fitted, auto, opts)
    if opts.fixed_pattern_check and _moves_less_than(result.transform, frame,
                                                     opts.min_match_radius):
        sky = _sky_behind_fixed_pattern(result, frame, ref, fitted, auto, opts)
        if sky is not None:
            return sky
    return result


def _moves_less_than(transform: Transform, frame: StarField, distance: float) -> bool:
    corners = np.array([frame.xy.min(axis=0), frame.xy.max(axis=0),
                        [frame.xy[:, 0].min(), frame.xy[:, 1].max()],
                        [frame.xy[:, 0].max(), frame.xy[:, 1].min()]])
    return bool(np.hypot(*(transform.apply(corners) - corners).T).max() < distance)


def _sky_behind_fixed_pattern(found: RegistrationResult, frame: StarField, ref: StarField,
                              model: TransformModel, auto: bool, opts: MatchOptions
                              ) -> RegistrationResult | None:
    """A second, moving solution among the stars left out of a (near-)identity one.

    Hot pixels sit on the same pixels in every frame, so they match at the identity. If the
    stars left over match each other under another transform, that one is the sky (two
    solutions cannot both be the sky).
    """
    rest_frame, rest_ref = frame.without(found.pairs[:, 0]), ref.without(found.pairs[:, 1])
    if min(len(rest_frame), len(rest_ref)) < max(opts.min_inliers, model.min_points):
        return None
    try:
        other = _search(rest_frame, rest_ref, model, auto, opts, escalate=False)
    except RegistrationError:
        return None
    if _moves_less_than(other.transform, frame, opts.min_match_radius):
        return None
    # Refined on all stars when that passes and still moves (the hot pixels swell the lists
    # and, near the identity, can drag the fit back), else as found among the stars left over.
    full = _verify(other.transform, frame, ref, other.transform.model, opts).result
    if full is not None and not _moves_less_than(full.transform, frame, opts.min_match_radius):
        return full
    return other


def _search(frame: StarField, ref: StarField, model: TransformModel, auto: bool,
            opts: MatchOptions, *, escalate: bool = True) -> RegistrationResult:
    """Pattern matching, hypotheses and verification, with growing pattern star counts
    unless ``escalate`` is false."""
    best: _Verified | None = None
    tried: list[np.ndarray] = []
    probe = np.array([frame.xy.min(axis=0), frame.xy.max(axis=0),
                      [frame.xy[:, 0].min(), frame.xy[:, 1].max()]])
    n_stars, n_triangle_matches = opts.pattern_stars, 0
    while True:
        hyp = _hypotheses(frame, ref, n_stars, opts)
        n_triangle_matches = max(n_triangle_matches, hyp.n_triangle_matches)
        verified = 0
        for a, t, mirrored, score in zip(hyp.a, hyp.t, hyp.mirrored, hyp.score, strict=True):
            if verified >= opts.max_hypotheses or score < 4:
                break
            guess = Transform(similarity_matrix(complex(a), complex(t), bool(mirrored)),
                              TransformModel.SIMILARITY)
            where = guess.apply(probe)
            if any(np.max(np.hypot(*(where - w).T)) < opts.hypothesis_tolerance for w in tried):
                continue
            tried.append(where)
            verified += 1
            outcome = _verify(guess, frame, ref, model, opts)
            if (auto and outcome.result is not None
                    and outcome.result.n_inliers < opts.affine_min_inliers):
                similar = _verify(outcome.result.transform, frame, ref,
                                  TransformModel.SIMILARITY, opts)
                outcome = similar if similar.result is not None else outcome
            if outcome.result is not None:
                return outcome.result
            if best is None or outcome.n_inliers > best.n_inliers:
                best = outcome
        if not escalate or n_stars >= min(opts.max_pattern_stars, max(len(frame), len(ref))):
            break
        n_stars = min(3 * n_stars, opts.max_pattern_stars)
    if best is None:
        if n_triangle_matches == 0:
            raise RegistrationError("no triangle of the frame's brightest stars matches one "
                                    "of the reference's")
        low, high = opts.scale_range
        raise RegistrationError(f"{n_triangle_matches} triangles matched but no transform "
                                f"with a scale in {low:g}..{high:g} agrees with enough of them")
    raise RegistrationError(best.reason)


def register_frames(star_lists: Sequence[np.ndarray], *, reference: int,
                    fluxes: Sequence[np.ndarray | None] | None = None,
                    model: TransformModel | str | None = None,
                    options: MatchOptions | None = None
                    ) -> list[RegistrationResult | RegistrationError]:
    """Register every star list to ``star_lists[reference]`` (see :func:`choose_reference`).

    A frame that cannot be registered gets its :class:`RegistrationError` in its place; the
    batch goes on. The reference itself gets the identity with all its stars as inliers.
    """
    if not 0 <= reference < len(star_lists):
        raise IndexError(f"reference {reference} is not one of the {len(star_lists)} frames")
    flux_list = list(fluxes) if fluxes is not None else [None] * len(star_lists)
    ref = StarField(star_lists[reference], flux_list[reference])
    out: list[RegistrationResult | RegistrationError] = []
    for i, (xy, flux) in enumerate(zip(star_lists, flux_list, strict=True)):
        if i == reference:
            idx = np.sort(ref.index)
            out.append(RegistrationResult(Transform.identity(model or TransformModel.AFFINE),
                                          len(idx), len(idx), 0.0, 0.0,
                                          np.stack([idx, idx], axis=1)))
            continue
        try:
            out.append(find_transform(xy, ref, model=model, frame_flux=flux, options=options))
        except RegistrationError as exc:
            out.append(exc)
    return out


# --- reference choice -----------------------------------------------------------------------

class FrameSummary(Protocol):
    """What :func:`choose_reference` reads of a frame (a library ``Frame`` row or a
    ``stars.FrameQuality`` has it; a mapping with these keys works too)."""

    star_count: int | None
    fwhm: float | None
    weight: float | None


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _field(quality: FrameSummary | Mapping[str, Any], name: str) -> Any:
    if isinstance(quality, Mapping):
        return quality.get(name)
    return getattr(quality, name, None)


def choose_reference(qualities: Sequence[FrameSummary | Mapping[str, Any]], *,
                     min_stars: int = 6) -> int:
    """Index of the best reference frame among per-frame summaries.

    Each summary is an object or a mapping with ``star_count``, ``fwhm`` and ``weight`` (the
    last two may be missing or None). Every frame is registered against the reference's star
    positions, so their centroid errors enter every transform: the reference should be sharp
    and rich in stars. A centroid error grows as FWHM^2 / flux and a fit's error falls as
    1 / sqrt(stars), hence the score ``sqrt(star_count) / fwhm^2`` (``star_count`` alone where
    a FWHM is unknown). Where every candidate has a finite ``weight`` (the measure step's
    frame weight), the highest weight wins and the score breaks ties. Frames with fewer than
    ``min_stars`` stars are never chosen; ties go to the earliest frame.
    """
    rows = [(int(_field(q, "star_count") or 0), _field(q, "fwhm"), _field(q, "weight"))
            for q in qualities]
    eligible = [i for i, row in enumerate(rows) if row[0] >= min_stars]
    if not eligible:
        raise RegistrationError(f"no frame has the {min_stars} stars a reference needs")
    use_fwhm = all(_finite(rows[i][1]) and rows[i][1] > 0 for i in eligible)
    use_weight = all(_finite(rows[i][2]) for i in eligible)

    def score(i: int) -> tuple[float, float, int]:
        stars, fwhm, weight = rows[i]
        s = math.sqrt(stars) / (fwhm ** 2 if use_fwhm else 1.0)
        return (weight if use_weight else 0.0, s, -i)

    return max(eligible, key=score)
