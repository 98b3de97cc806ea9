"""Geometric transforms between pixel grids (3x3 matrices) and their least-squares fits.

A :class:`Transform` maps pixel coordinates ``(x, y)`` (0 at the centre of the first pixel)
through a 3x3 matrix acting on ``(x, y, 1)``. In registration the stored direction is always
*frame pixel -> reference pixel*; this module itself does not care which way a matrix points.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from oscdeep.errors import OscdeepError
from oscdeep.types import accept_aliases, choice


@accept_aliases({"translation": "shift", "projective": "homography",
                 "perspective": "homography"})
class TransformModel(StrEnum):
    """Degrees of freedom of a fitted transform (each allows everything the previous does).

    ``similarity`` is rotation + uniform scale + shift and may include a mirror (a
    reflection); ``affine`` adds shear and unequal scales; ``homography`` adds perspective.
    """

    SHIFT = "shift"
    SIMILARITY = "similarity"
    AFFINE = "affine"
    HOMOGRAPHY = "homography"

    @property
    def min_points(self) -> int:
        """Fewest point pairs that determine a transform of this model."""
        return _MIN_POINTS[self]


def as_model(value: TransformModel | str) -> TransformModel:
    """The model named ``value`` (any case; 'translation', 'projective' are accepted too)."""
    return choice(TransformModel, value, "transform model")


_MIN_POINTS = {TransformModel.SHIFT: 1, TransformModel.SIMILARITY: 2,
               TransformModel.AFFINE: 3, TransformModel.HOMOGRAPHY: 4}


class TransformFitError(OscdeepError):
    """Too few or degenerate point pairs to fit a transform."""


@dataclass(frozen=True, eq=False)
class Transform:
    """A 3x3 float64 matrix mapping ``(x, y, 1)`` to ``(x', y', w)``, and the model it obeys."""

    matrix: np.ndarray
    model: TransformModel = TransformModel.AFFINE

    def __post_init__(self) -> None:
        m = np.array(self.matrix, dtype=np.float64)
        if m.shape != (3, 3) or not np.all(np.isfinite(m)):
            raise ValueError(f"a transform needs a finite 3x3 matrix, got shape {m.shape}")
        if m[2, 2] == 0:
            raise ValueError("a transform matrix needs a non-zero element [2, 2]")
        m /= m[2, 2]
        m.setflags(write=False)
        object.__setattr__(self, "matrix", m)
        object.__setattr__(self, "model", as_model(self.model))

    @classmethod
    def identity(cls, model: TransformModel | str = TransformModel.AFFINE) -> Transform:
        return cls(np.eye(3), as_model(model))

    @classmethod
    def from_list(cls, values: Sequence[float], model: TransformModel | str) -> Transform:
        """Inverse of :meth:`to_list`: nine numbers, row-major."""
        if len(values) != 9:
            raise ValueError(f"a 3x3 matrix needs 9 values, got {len(values)}")
        return cls(np.asarray(values, dtype=np.float64).reshape(3, 3), as_model(model))

    def to_list(self) -> list[float]:
        """The matrix as nine floats, row-major (the form stored in the database)."""
        return [float(v) for v in self.matrix.ravel()]

    def apply(self, xy: np.ndarray) -> np.ndarray:
        """Map points ``(N, 2)`` (or one ``(2,)`` point) to ``(N, 2)`` (or ``(2,)``)."""
        pts = np.asarray(xy, dtype=np.float64)
        flat = pts.reshape(-1, 2)
        m = self.matrix
        x, y = flat[:, 0], flat[:, 1]
        out = np.empty_like(flat)
        if self.model == TransformModel.HOMOGRAPHY or m[2, 0] != 0 or m[2, 1] != 0:
            w = m[2, 0] * x + m[2, 1] * y + m[2, 2]
            out[:, 0] = (m[0, 0] * x + m[0, 1] * y + m[0, 2]) / w
            out[:, 1] = (m[1, 0] * x + m[1, 1] * y + m[1, 2]) / w
        else:
            out[:, 0] = m[0, 0] * x + m[0, 1] * y + m[0, 2]
            out[:, 1] = m[1, 0] * x + m[1, 1] * y + m[1, 2]
        return out.reshape(pts.shape)

    def inverse(self) -> Transform:
        return Transform(np.linalg.inv(self.matrix), self.model)

    def compose(self, other: Transform) -> Transform:
        """``self`` after ``other``: ``a.compose(b).apply(p) == a.apply(b.apply(p))``.

        The model of the result is the more general of the two.
        """
        order = list(TransformModel)
        model = max(self.model, other.model, key=order.index)
        return Transform(self.matrix @ other.matrix, model)

    @property
    def shift(self) -> tuple[float, float]:
        """Where the origin ``(0, 0)`` goes."""
        x, y = self.apply(np.zeros(2))
        return float(x), float(y)

    @property
    def scale(self) -> float:
        """Mean linear scale of the linear part, ``sqrt(|det A|)``."""
        return math.sqrt(abs(float(np.linalg.det(self.matrix[:2, :2]))))

    @property
    def is_mirrored(self) -> bool:
        """Whether the map reverses orientation (a reflection)."""
        return float(np.linalg.det(self.matrix[:2, :2])) < 0

    @property
    def rotation_deg(self) -> float:
        """Rotation angle in degrees, in (-180, 180].

        For a mirrored map ``A = R(theta) @ diag(1, -1) * s`` the angle is that of ``R``; for
        a general affine map it is the rotation of its nearest similarity.
        """
        a = self.matrix[:2, :2]
        if self.is_mirrored:
            angle = math.atan2(a[1, 0] + a[0, 1], a[0, 0] - a[1, 1])
        else:
            angle = math.atan2(a[1, 0] - a[0, 1], a[0, 0] + a[1, 1])
        deg = math.degrees(angle)
        return 180.0 if deg <= -180.0 else deg

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Transform):
            return NotImplemented
        return self.model == other.model and bool(np.array_equal(self.matrix, other.matrix))

    def __hash__(self) -> int:
        return hash((self.model, self.matrix.tobytes()))

    def __repr__(self) -> str:
        rows = ", ".join("[" + ", ".join(f"{v:.6g}" for v in row) + "]" for row in self.matrix)
        return f"Transform([{rows}], model={self.model.value!r})"


def corner_errors(estimate: Transform | np.ndarray, truth: Transform | np.ndarray,
                  width: int, height: int) -> np.ndarray:
    """Distances (px) between where two transforms send the four corner pixel centres."""
    corners = np.array([[0.0, 0.0], [width - 1.0, 0.0], [0.0, height - 1.0],
                        [width - 1.0, height - 1.0]])
    a = estimate if isinstance(estimate, Transform) else Transform(estimate)
    b = truth if isinstance(truth, Transform) else Transform(truth)
    return np.hypot(*(a.apply(corners) - b.apply(corners)).T)


# --- fitting --------------------------------------------------------------------------------

def fit_transform(src_xy: np.ndarray, dst_xy: np.ndarray,
                  model: TransformModel | str = TransformModel.AFFINE, *,
                  weights: np.ndarray | None = None) -> Transform:
    """Weighted least-squares transform sending ``src_xy`` onto ``dst_xy`` (both ``(N, 2)``).

    ``similarity`` tries the direct and the mirrored fit and keeps the better one, so a
    reflected frame is fitted with 4 parameters too. ``homography`` is a normalised DLT
    (algebraic least squares), which equals the geometric fit to first order for the small
    perspective terms of real frames.
    """
    model = as_model(model)
    src = np.asarray(src_xy, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(dst_xy, dtype=np.float64).reshape(-1, 2)
    if src.shape != dst.shape:
        raise ValueError(f"point lists differ in shape: {src.shape} vs {dst.shape}")
    n = len(src)
    if n < model.min_points:
        raise TransformFitError(f"a {model.value} fit needs at least {model.min_points} "
                                f"star pairs, got {n}")
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64).reshape(n)
    if np.any(w < 0) or not np.all(np.isfinite(w)) or w.sum() <= 0:
        raise ValueError("weights must be finite, non-negative and not all zero")
    w = w / w.sum()
    fitter = {TransformModel.SHIFT: _fit_shift, TransformModel.SIMILARITY: _fit_similarity,
              TransformModel.AFFINE: _fit_affine, TransformModel.HOMOGRAPHY: _fit_homography}
    matrix = fitter[model](src, dst, w)
    if not np.all(np.isfinite(matrix)):
        raise TransformFitError(f"degenerate star positions: the {model.value} fit failed")
    return Transform(matrix, model)


def _fit_shift(src: np.ndarray, dst: np.ndarray, w: np.ndarray) -> np.ndarray:
    m = np.eye(3)
    m[:2, 2] = w @ (dst - src)
    return m


def similarity_params(src: np.ndarray, dst: np.ndarray, w: np.ndarray, mirrored: bool
                      ) -> tuple[complex, complex, float]:
    """Complex ``a, t`` of ``z' = a * z + t`` (``z`` mirrored first if asked) and the residual
    sum of squares; ``src``/``dst`` are complex and may be stacked ``(..., N)``."""
    z = -np.conj(src) if mirrored else src
    zc = (w * z).sum(axis=-1, keepdims=True)
    dc = (w * dst).sum(axis=-1, keepdims=True)
    z0, d0 = z - zc, dst - dc
    den = (w * np.abs(z0) ** 2).sum(axis=-1)
    a = (w * np.conj(z0) * d0).sum(axis=-1) / np.where(den > 0, den, np.nan)
    t = dc[..., 0] - a * zc[..., 0]
    res = (w * np.abs(a[..., None] * z0 - d0) ** 2).sum(axis=-1)
    return a, t, res


def similarity_matrix(a: complex, t: complex, mirrored: bool) -> np.ndarray:
    """3x3 matrix of ``z' = a * z + t``, after ``z -> -conj(z)`` (``x -> -x``) if mirrored."""
    m = np.array([[a.real, -a.imag, t.real], [a.imag, a.real, t.imag], [0.0, 0.0, 1.0]])
    if mirrored:
        m[:, 0] *= -1.0
    return m


def _fit_similarity(src: np.ndarray, dst: np.ndarray, w: np.ndarray) -> np.ndarray:
    zs = src[:, 0] + 1j * src[:, 1]
    zd = dst[:, 0] + 1j * dst[:, 1]
    fits = [(*similarity_params(zs, zd, w, mirrored), mirrored) for mirrored in (False, True)]
    a, t, _, mirrored = min(fits, key=lambda f: f[2] if np.isfinite(f[2]) else np.inf)
    return similarity_matrix(complex(a), complex(t), mirrored)


def _fit_affine(src: np.ndarray, dst: np.ndarray, w: np.ndarray) -> np.ndarray:
    c_src, c_dst = w @ src, w @ dst  # centring keeps the normal equations well conditioned
    s, d = src - c_src, dst - c_dst
    sw = np.sqrt(w)[:, None]
    lin, _, rank, _ = np.linalg.lstsq(s * sw, d * sw, rcond=None)
    if rank < 2:
        raise TransformFitError("degenerate star positions (all on one line): affine fit failed")
    m = np.eye(3)
    m[:2, :2] = lin.T
    m[:2, 2] = c_dst - lin.T @ c_src
    return m


def _normaliser(pts: np.ndarray, w: np.ndarray) -> np.ndarray:
    c = w @ pts
    spread = math.sqrt(float(w @ ((pts - c) ** 2).sum(axis=1)) / 2.0) or 1.0
    return np.array([[1 / spread, 0, -c[0] / spread], [0, 1 / spread, -c[1] / spread], [0, 0, 1]])


def _fit_homography(src: np.ndarray, dst: np.ndarray, w: np.ndarray) -> np.ndarray:
    ns, nd = _normaliser(src, w), _normaliser(dst, w)
    s = src @ ns[:2, :2].T + ns[:2, 2]
    d = dst @ nd[:2, :2].T + nd[:2, 2]
    n = len(s)
    one, zero = np.ones(n), np.zeros(n)
    x, y, u, v = s[:, 0], s[:, 1], d[:, 0], d[:, 1]
    rows_u = np.stack([x, y, one, zero, zero, zero, -u * x, -u * y, -u], axis=1)
    rows_v = np.stack([zero, zero, zero, x, y, one, -v * x, -v * y, -v], axis=1)
    sw = np.sqrt(w)[:, None]
    a = np.concatenate([rows_u * sw, rows_v * sw])
    _, sing, vt = np.linalg.svd(a, full_matrices=False)
    if sing[-2] <= 1e-12 * sing[0]:
        raise TransformFitError("degenerate star positions: homography fit failed")
    h = vt[-1].reshape(3, 3)
    m = np.linalg.inv(nd) @ h @ ns
    if abs(m[2, 2]) < 1e-15:
        raise TransformFitError("degenerate homography (maps a point to infinity)")
    return m / m[2, 2]
