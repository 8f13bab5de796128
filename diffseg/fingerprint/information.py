"""Training-free mask-error curve of a set of masks under a noise schedule: the quantity the trained E3 model
measures (its x0-MSE normalised by the prior's error), for an idealised denoiser.

Estimator (derivation): under x_t = a x0 + s eps, averaging x_t over a region of A pixels of constant label gives
a pooled observation y = sqrt(A SNR(t)) x0 + z, z ~ N(0, 1) (Hoogeboom et al. 2023, eq. 4: pooling s x s pixels
multiplies the SNR by s^2). For a pixel p we take the largest disc around p inside its own label region, of
radius d(p) = distance to the nearest label-boundary pixel, clipped to the image: A(p) = max(1, |disc ∩ image|)
(exact area of a disc cut by the image rectangle). The best (MMSE) estimate of the label x0 in {-1, +1} (prior
P(+1) = pi, the foreground fraction of the masks) from y with s = A SNR is E[x0 | y] = tanh(logit(pi)/2 + sqrt(s) y),
and its expected squared error given the true label x is the label-conditional MMSE

    e_x(s) = E_z[(x - tanh(logit(pi)/2 + s x + sqrt(s) z))^2],   e_+(0) = 4 (1 - pi)^2,  e_-(0) = 4 pi^2.

The curve is the mean over all pixels of e_{x(p)}(A(p) SNR(t)), divided by the prior's error 4 pi (1 - pi):
0 = every label recoverable, 1 = no better than the prior (the same normalisation the trained E3 curve gets).
It is not monotone in general: the foreground part falls with SNR, but for a sparse prior the background part
e_-(s) first rises with s (the estimate moves off the prior's confident "background" as the observation starts to
count) before it falls, so the curve can exceed 1 (the IHC positive-cell set reaches 1.08). Because it averages
squared errors (not mutual information per pixel), a sparse set's few small objects dominate: their foreground
error e_+ starts at 4 (1 - pi)^2, far above the background's 4 pi^2. The foreground and background contributions
(which sum to the curve) are reported too.

What it is: a label-conditional proxy of a mask-only denoiser's error, with an oracle pooling region (the disc
inside the pixel's own label region, which a real denoiser does not know) and one prior for every pixel (no
spatial prior such as "lesions are central"). It is neither a lower nor an upper bound on the trained E3 error:
the oracle region makes it optimistic, the missing spatial prior pessimistic.

Cost: one 2-D Euclidean distance transform per mask (scipy), the exact clipped-disc area only for pixels whose
disc crosses the image border, a histogram of log A per label, and a table look-up per histogram bin.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import numpy as np
from scipy import ndimage

from .stats import boundary_map

_LOG_S = np.linspace(-30.0, 30.0, 6001)
_Z = np.linspace(-12.0, 12.0, 1601)
_LOG_A_STEP = 0.005  # histogram bin width of log A (the table's log-SNR step is 0.01)


def prior_error(prior: float) -> float:
    """MSE of the prior mean 2 pi - 1 against labels in {-1, +1}: 4 pi (1 - pi)."""
    return 4.0 * prior * (1.0 - prior)


def label_mmse(s: np.ndarray, prior: float, label: int) -> np.ndarray:
    """e_x(s) for x = ``label`` (+1 or -1): the expected squared error of the MMSE label estimate (trapezoid
    rule over z on [-12, 12])."""
    if not 0 < prior < 1:
        raise ValueError(f"foreground prior {prior} leaves no label uncertainty (all masks empty or full)")
    s = np.asarray(s, dtype=np.float64)[..., None]
    w = np.exp(-0.5 * _Z**2)
    w /= w.sum()
    half_logit = 0.5 * math.log(prior / (1.0 - prior))
    est = np.tanh(half_logit + s * label + np.sqrt(s) * _Z)
    return ((label - est) ** 2 * w).sum(-1)


@lru_cache(maxsize=16)
def _tables(prior: float) -> tuple[np.ndarray, np.ndarray]:
    """(e_+, e_-) on the log-SNR grid ``_LOG_S``."""
    s = np.exp(_LOG_S)
    return label_mmse(s, prior, 1), label_mmse(s, prior, -1)


def _segment(r: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Area of the disc of radius r beyond a line at distance a < r from its centre: r^2 acos(a/r) - a sqrt(r^2-a^2)."""
    return r * r * np.arccos(a / r) - a * np.sqrt(r * r - a * a)


def _corner(r: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Area of {u > a, v > b, u^2 + v^2 <= r^2} for a^2 + b^2 < r^2: the integral of sqrt(r^2 - u^2) - b over
    u in [a, sqrt(r^2 - b^2)]."""
    x1 = np.sqrt(r * r - b * b)

    def prim(x):  # integral of sqrt(r^2 - u^2) from 0 to x
        return 0.5 * (x * np.sqrt(np.maximum(r * r - x * x, 0.0)) + r * r * np.arcsin(np.clip(x / r, -1, 1)))

    return prim(x1) - prim(a) - b * (x1 - a)


def clipped_disc_area(r: np.ndarray, y: np.ndarray, x: np.ndarray, h: int, w: int) -> np.ndarray:
    """Exact area of the disc of radius r centred at pixel centre (y + 0.5, x + 0.5) inside the h x w image, by
    inclusion-exclusion: pi r^2 minus the segment beyond each border the disc crosses, plus the part beyond both
    borders of each image corner inside the disc (opposite borders' segments are disjoint). Only the borders and
    corners a pixel's disc reaches are evaluated (most cut discs cross one border)."""
    r = np.maximum(np.asarray(r, dtype=np.float64), 1e-12)
    sides = (y + 0.5, x + 0.5, h - y - 0.5, w - x - 0.5)  # top, left, bottom, right
    area = math.pi * r * r
    for a in sides:
        cut = a < r
        if cut.any():
            area[cut] -= _segment(r[cut], a[cut])
    for i, j in ((0, 1), (0, 3), (2, 1), (2, 3)):
        a, b = sides[i], sides[j]
        corner = a * a + b * b < r * r
        if corner.any():
            area[corner] += _corner(r[corner], a[corner], b[corner])
    return area


@lru_cache(maxsize=8)
def _edge_distance(h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row index, column index, distance of each pixel centre to the image border), read-only, cached."""
    yy, xx = np.indices((h, w))
    edge = np.minimum(np.minimum(yy + 0.5, h - yy - 0.5), np.minimum(xx + 0.5, w - xx - 0.5))
    for a in (yy, xx, edge):
        a.flags.writeable = False
    return yy, xx, edge


def pixel_areas(mask: np.ndarray, boundary: np.ndarray) -> np.ndarray:
    """A(p) for one mask (H, W): max(1, area of the largest same-label disc around p, clipped to the image)."""
    return _area_bins(mask, boundary, None)


def _area_bins(mask: np.ndarray, boundary: np.ndarray, lut: np.ndarray | None) -> np.ndarray:
    """A(p), or with ``lut`` (bin index per squared distance) the log-area histogram bin of every pixel."""
    h, w = mask.shape
    if not boundary.any():  # constant mask: every pixel pools the whole image
        area = np.full((h, w), float(h * w))
        return area if lut is None else _log_bin(area)
    d = ndimage.distance_transform_edt(~boundary)
    yy, xx, edge = _edge_distance(h, w)
    cut = d > edge
    if lut is None:
        area = np.maximum(math.pi * d * d, 1.0)
        if cut.any():
            area[cut] = np.maximum(clipped_disc_area(d[cut], yy[cut], xx[cut], h, w), 1.0)
        return area
    out = lut[np.rint(d * d).astype(np.int64)]  # EDT distances are square roots of integers
    if cut.any():
        out[cut] = _log_bin(np.maximum(clipped_disc_area(d[cut], yy[cut], xx[cut], h, w), 1.0))
    return out


def _log_bin(area: np.ndarray) -> np.ndarray:
    return np.rint(np.log(area) / _LOG_A_STEP).astype(np.int64)


def pooling_area_histogram(masks: np.ndarray, threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(areas (K,), counts (2, K)): histogram of A(p) over all pixels, row 0 background, row 1 foreground,
    on log-area bins of width 0.005."""
    m = masks.astype(bool)
    n, h, w = m.shape
    n_bins = math.ceil(math.log(h * w) / _LOG_A_STEP) + 2
    lut = _log_bin(np.maximum(math.pi * np.arange(h * h + w * w + 1, dtype=np.float64), 1.0))

    def one(i):
        idx = _area_bins(m[i], boundary_map(m[i : i + 1])[0], lut)
        return np.bincount(idx.ravel() + n_bins * m[i].ravel(), minlength=2 * n_bins)

    with ThreadPoolExecutor(threads) as pool:
        counts = np.sum(list(pool.map(one, range(n))), axis=0, dtype=np.float64).reshape(2, n_bins)
    return np.exp(np.arange(n_bins) * _LOG_A_STEP), counts


def mask_error_curve(areas: np.ndarray, counts: np.ndarray, log_snr: np.ndarray,
                     prior: float) -> dict[str, np.ndarray]:
    """{"error", "foreground", "background"}: the normalised curve over the steps of ``log_snr`` and its two
    label contributions (see module docstring)."""
    e_pos, e_neg = _tables(float(prior))
    log_s = np.log(areas)[:, None] + np.asarray(log_snr, dtype=np.float64)[None, :]
    log_s = np.where(np.isneginf(log_s), _LOG_S[0], np.clip(log_s, _LOG_S[0], _LOG_S[-1]))
    total, norm = counts.sum(), prior_error(prior)
    parts = {}
    for name, row, table in (("background", 0, e_neg), ("foreground", 1, e_pos)):
        nz = counts[row] > 0
        err = np.interp(log_s[nz], _LOG_S, table)
        parts[name] = (counts[row][nz, None] * err).sum(0) / total / norm
    parts["error"] = parts["foreground"] + parts["background"]
    return parts


def pooled_snr_for_error(prior: float, level: float) -> float:
    """The pooled SNR s at which the normalised error of a single-region pixel mix with the dataset prior,
    (pi e_+(s) + (1 - pi) e_-(s)) / (4 pi (1 - pi)), equals ``level`` (inverse of the table)."""
    e_pos, e_neg = _tables(float(prior))
    mix = (prior * e_pos + (1 - prior) * e_neg) / prior_error(prior)
    return float(np.exp(np.interp(level, mix[::-1], _LOG_S[::-1])))
