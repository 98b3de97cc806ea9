"""A slow, per-pixel VNG for tests: the formulation of oscdeep's first VNG (difference images
of the padded mosaic, then one pixel at a time), against which the vectorised kernel in
:mod:`oscdeep.debayer` is checked. Plain Python: use it on small mosaics only."""

from __future__ import annotations

import cv2
import numpy as np

from oscdeep.cfa import cfa_sites


def reference_vng(m: np.ndarray, pattern: str) -> np.ndarray:
    """VNG of finite mosaic ``m`` in float64, (H, W, 3); borders mirrored by 2 (reflect-101)."""
    cell = np.array([c for _, _, c in cfa_sites(pattern)]).reshape(2, 2)
    p = cv2.copyMakeBorder(m.astype(np.float64), 2, 2, 2, 2, cv2.BORDER_REFLECT_101)

    def absdiff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.abs(a - b)

    across = np.array([[0.5, 1.0, 0.5]])
    vs = cv2.filter2D(absdiff(p[:-2], p[2:]), -1, across, borderType=cv2.BORDER_REFLECT_101)
    hs = cv2.filter2D(absdiff(p[:, :-2], p[:, 2:]), -1, across.T,
                      borderType=cv2.BORDER_REFLECT_101)
    a2, d2 = absdiff(p[:-2, 2:], p[2:, :-2]), absdiff(p[:-2, :-2], p[2:, 2:])
    a1, d1 = absdiff(p[:-1, 1:], p[1:, :-1]), absdiff(p[:-1, :-1], p[1:, 1:])
    out = np.empty((*m.shape, 3))
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            y, x = i + 2, j + 2
            c0 = cell[i & 1, j & 1]
            if c0 == 1:
                ne = a2[y - 2, x - 1] + a2[y - 1, x]
                sw = a2[y, x - 1] + a2[y - 1, x - 2]
                se = d2[y, x - 1] + d2[y - 1, x]
                nw = d2[y - 2, x - 1] + d2[y - 1, x - 2]
            else:
                ne = 0.5 * (a1[y - 1, x - 1] + a1[y, x] + a1[y - 2, x] + a1[y - 1, x + 1])
                sw = 0.5 * (a1[y, x] + a1[y - 1, x - 1] + a1[y + 1, x - 1] + a1[y, x - 2])
                se = 0.5 * (d1[y, x - 1] + d1[y - 1, x] + d1[y + 1, x] + d1[y, x + 1])
                nw = 0.5 * (d1[y - 1, x] + d1[y, x - 1] + d1[y - 2, x - 1] + d1[y - 1, x - 2])
            g = {"n": vs[y - 1, x] + vs[y - 2, x], "s": vs[y - 1, x] + vs[y, x],
                 "e": hs[y, x - 1] + hs[y, x], "w": hs[y, x - 1] + hs[y, x - 2],
                 "ne": ne + a2[y - 1, x - 1] + a2[y - 2, x],
                 "sw": sw + a2[y - 1, x - 1] + a2[y, x - 2],
                 "se": se + d2[y - 1, x - 1] + d2[y, x],
                 "nw": nw + d2[y - 1, x - 1] + d2[y - 2, x - 2]}
            lo, hi = min(g.values()), max(g.values())
            k = {d: float(v <= 1.5 * lo + 0.5 * (hi - lo)) for d, v in g.items()}

            def at(dy: int, dx: int, y: int = y, x: int = x) -> float:
                return float(p[y + dy, x + dx])

            v0 = at(0, 0)
            if c0 == 1:  # a: colour of the horizontal neighbours, b: of the vertical ones
                ca, cb = cell[i & 1, (j + 1) & 1], cell[(i + 1) & 1, j & 1]
                sc = (0.5 * ((k["n"] + k["s"] + k["e"] + k["w"]) * v0 + k["n"] * at(-2, 0)
                             + k["s"] * at(2, 0) + k["e"] * at(0, 2) + k["w"] * at(0, -2))
                      + k["ne"] * at(-1, 1) + k["se"] * at(1, 1) + k["sw"] * at(1, -1)
                      + k["nw"] * at(-1, -1))
                sa = (k["e"] * at(0, 1) + k["w"] * at(0, -1)
                      + 0.25 * k["n"] * (at(0, 1) + at(0, -1) + at(-2, 1) + at(-2, -1))
                      + 0.25 * k["s"] * (at(0, 1) + at(0, -1) + at(2, 1) + at(2, -1))
                      + 0.5 * (k["ne"] * (at(-2, 1) + at(0, 1)) + k["se"] * (at(2, 1) + at(0, 1))
                               + k["sw"] * (at(2, -1) + at(0, -1))
                               + k["nw"] * (at(-2, -1) + at(0, -1))))
                sb = (k["n"] * at(-1, 0) + k["s"] * at(1, 0)
                      + 0.25 * k["e"] * (at(-1, 0) + at(1, 0) + at(-1, 2) + at(1, 2))
                      + 0.25 * k["w"] * (at(-1, 0) + at(1, 0) + at(-1, -2) + at(1, -2))
                      + 0.5 * (k["ne"] * (at(-1, 2) + at(-1, 0)) + k["se"] * (at(1, 2) + at(1, 0))
                               + k["sw"] * (at(1, -2) + at(1, 0))
                               + k["nw"] * (at(-1, -2) + at(-1, 0))))
            else:  # a: green, b: the diagonal colour
                ca, cb = 1, 2 - c0
                far = {"n": (-2, 0), "s": (2, 0), "e": (0, 2), "w": (0, -2), "ne": (-2, 2),
                       "se": (2, 2), "sw": (2, -2), "nw": (-2, -2)}
                sc = 0.5 * sum(k[d] * (v0 + at(*far[d])) for d in far)
                sa = (k["n"] * at(-1, 0) + k["s"] * at(1, 0) + k["e"] * at(0, 1)
                      + k["w"] * at(0, -1)
                      + 0.25 * (k["ne"] * (at(-2, 1) + at(0, 1) + at(-1, 0) + at(-1, 2))
                                + k["se"] * (at(0, 1) + at(2, 1) + at(1, 0) + at(1, 2))
                                + k["sw"] * (at(0, -1) + at(2, -1) + at(1, 0) + at(1, -2))
                                + k["nw"] * (at(-2, -1) + at(0, -1) + at(-1, 0) + at(-1, -2))))
                sb = (k["ne"] * at(-1, 1) + k["se"] * at(1, 1) + k["sw"] * at(1, -1)
                      + k["nw"] * at(-1, -1)
                      + 0.5 * (k["n"] * (at(-1, -1) + at(-1, 1)) + k["s"] * (at(1, -1) + at(1, 1))
                               + k["e"] * (at(-1, 1) + at(1, 1)) + k["w"] * (at(-1, -1) + at(1, -1))))
            n = sum(k.values())
            out[i, j, c0] = v0
            out[i, j, ca] = v0 + (sa - sc) / n
            out[i, j, cb] = v0 + (sb - sc) / n
    return out
