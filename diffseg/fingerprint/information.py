"""Training-free information-loss curve of a set of masks under a noise schedule.

Estimator (derivation): under x_t = a x0 + s eps, averaging x_t over a region of A pixels of constant label gives
a pooled observation y = sqrt(A SNR(t)) x0 + z, z ~ N(0, 1) (Hoogeboom et al. 2023, eq. 4: pooling s x s pixels
multiplies the SNR by s^2). For a pixel p we take the largest disc around p inside its own label region,
A(p) = max(1, pi d(p)^2) with d the distance to the nearest label-boundary pixel (capped at the image area): an
idealised denoiser that pools exactly where the label is constant. The information the noisy mask still holds
about the label x0 in {-1, +1} (prior P(+1) = pi, the dataset foreground fraction) is the mutual information of
a binary-input Gaussian channel, I(s) = -sum_x P(x) E_z log2(P(x) + P(-x) exp(-2 s - 2 sqrt(s) x z)) with
s = A(p) SNR(t). The curve is

    info_loss(t) = 1 - mean_p I(A(p) SNR(t)) / H(pi),

0 when every label is recoverable, 1 when the noisy mask says nothing beyond the prior (the trivial guess: all
background for pi < 0.5). Dividing by the label entropy H(pi) makes datasets with different foreground fractions
comparable; the curve is monotone in t because I is monotone in SNR. Small objects and object boundaries (small
A) lose their information first, large central lesions last: the dataset fingerprint of the analysis paper.

Cost: one 2-D Euclidean distance transform per mask (scipy), then a histogram of d^2 and a table look-up,
so 1,000 masks of 256 x 256 over 1,000 steps take a few seconds.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numpy.polynomial.hermite_e import hermegauss
from scipy import ndimage

from .stats import boundary_map

_LOG_S = np.linspace(-30.0, 30.0, 6001)


def binary_entropy(p: float) -> float:
    if not 0 < p < 1:
        return 0.0
    return float(-(p * math.log2(p) + (1 - p) * math.log2(1 - p)))


def channel_information(s: np.ndarray, prior: float, nodes: int = 96) -> np.ndarray:
    """I(X; sqrt(s) X + Z) in bits for X = +1 w.p. ``prior`` else -1 (Gauss-Hermite quadrature over Z)."""
    z, wq = hermegauss(nodes)
    wq = wq / wq.sum()
    s = np.asarray(s, dtype=np.float64)[..., None]
    out = np.zeros(s.shape[:-1])
    for x, px in ((1.0, prior), (-1.0, 1.0 - prior)):
        if px <= 0:
            continue
        u = -2.0 * s - 2.0 * np.sqrt(s) * x * z
        log_term = np.logaddexp(math.log(px), math.log(1.0 - px) + u) if px < 1 else np.zeros_like(u)
        out -= px * (log_term * wq).sum(-1) / math.log(2)
    return np.clip(out, 0.0, None)


def pooling_area_histogram(masks: np.ndarray, threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(areas, pixel counts): the distribution of A(p) over all pixels of all masks."""
    m = masks.astype(bool)
    n, h, w = m.shape
    cap = float(h * w)
    boundary = boundary_map(m)
    d2_max = h * h + w * w

    def one(i):
        b = boundary[i]
        if not b.any():
            return np.asarray([d2_max]), np.asarray([h * w])
        d2 = np.rint(ndimage.distance_transform_edt(~b) ** 2).astype(np.int64)
        counts = np.bincount(d2.ravel())
        nz = np.flatnonzero(counts)
        return nz, counts[nz]

    with ThreadPoolExecutor(threads) as pool:
        parts = list(pool.map(one, range(n)))
    d2 = np.concatenate([p[0] for p in parts])
    cnt = np.concatenate([p[1] for p in parts]).astype(np.float64)
    uniq, inv = np.unique(d2, return_inverse=True)
    counts = np.bincount(inv, weights=cnt)
    areas = np.minimum(cap, np.maximum(1.0, math.pi * uniq.astype(np.float64)))
    return areas, counts


def info_loss_curve(areas: np.ndarray, counts: np.ndarray, log_snr: np.ndarray, prior: float) -> np.ndarray:
    """info_loss(t) for every step of a schedule (see module docstring)."""
    h = binary_entropy(prior)
    if h == 0:
        raise ValueError(f"foreground prior {prior} leaves no label information (all masks empty or full)")
    table = channel_information(np.exp(_LOG_S), prior) / h
    log_s = np.log(areas)[:, None] + np.asarray(log_snr, dtype=np.float64)[None, :]
    frac = np.interp(np.clip(log_s, _LOG_S[0], _LOG_S[-1]), _LOG_S, table)
    frac[np.isneginf(log_s)] = 0.0
    kept = (counts[:, None] * frac).sum(0) / counts.sum()
    return np.clip(1.0 - kept, 0.0, 1.0)


def pooled_snr_for_fraction(prior: float, fraction: float) -> float:
    """The pooled SNR s at which I(s) / H(prior) equals ``fraction`` (inverse of the table)."""
    table = channel_information(np.exp(_LOG_S), prior) / binary_entropy(prior)
    return float(np.exp(np.interp(fraction, table, _LOG_S)))
