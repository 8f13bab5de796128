"""Settings derived from a normalised mask-error curve (pure functions of the stored curve, so reading a
fingerprint.json back reproduces them exactly).

- ``recoverable_until_t``: last t with error <= 0.05 (labels recoverable up to there);
  ``lost_from_t``: first t with error >= 0.95 (no better than the prior from there on); ``converged_at_T``: whether the
  schedule's last step reaches 0.95 (else information is still present at T: "not converged at T").
- Recommended terminal log-SNR: the pooled SNR s* at which a pixel's error reaches 95% of the prior's, divided by
  the largest pooling area (99.9th pixel percentile): log SNR_T = log s* - log A_max.
- Weighting (the analysis paper's proposal): w(t) proportional to |d error / dt|, Gaussian-smoothed
  (sigma = T / 100 steps), floored at 2% of its maximum so every step keeps some weight, normalised to mean 1;
  the timestep-sampling density is w / sum(w).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d

RECOVERED, LOST, FLOOR = 0.05, 0.95, 0.02


def first_at_least(curve: np.ndarray, level: float) -> int | None:
    idx = np.flatnonzero(curve >= level)
    return int(idx[0]) if idx.size else None


def crossing_t(t: np.ndarray, curve: np.ndarray, level: float) -> float | None:
    """The t where a sampled curve first reaches ``level`` (linear interpolation between samples); None when it
    never does (not reached by t = T)."""
    c = np.asarray(curve, dtype=np.float64)
    idx = np.flatnonzero(c >= level)
    if not idx.size:
        return None
    i = int(idx[0])
    if i == 0:
        return float(t[0])
    t0, t1, c0, c1 = float(t[i - 1]), float(t[i]), c[i - 1], c[i]
    return t0 + (level - c0) / (c1 - c0) * (t1 - t0)


def derivative_weighting(error: list[float] | np.ndarray) -> list[float]:
    c = np.asarray(error, dtype=np.float64)
    sigma = max(1.0, len(c) / 100)
    w = np.abs(gaussian_filter1d(np.gradient(c), sigma, mode="nearest"))
    if w.max() <= 0:
        return [1.0] * len(c)
    w = np.maximum(w, FLOOR * w.max())
    return (w / w.mean()).tolist()


def derive(error: list[float] | np.ndarray, logsnr_T: float, pooled_snr_star: float, largest_area: float) -> dict:
    c = np.asarray(error, dtype=np.float64)
    rec = np.flatnonzero(c <= RECOVERED)
    w = derivative_weighting(c)
    total = float(np.sum(w))
    return {
        "recoverable_until_t": int(rec[-1]) if rec.size else None,
        "lost_from_t": first_at_least(c, LOST),
        "converged_at_T": bool(c[-1] >= LOST),
        "error_at_T": float(c[-1]),
        "logsnr_T": float(logsnr_T),
        "largest_pooling_area_px": float(largest_area),
        "recommended_logsnr_end": float(np.log(pooled_snr_star) - np.log(largest_area)),
        "weighting": w,
        "sampling_density": [x / total for x in w],
    }
