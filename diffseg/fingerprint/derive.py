"""Settings derived from an information-loss curve (pure functions of the stored curve, so reading a
fingerprint.json back reproduces them exactly).

- ``recoverable_until_t``: last t with info_loss <= 0.05 (all information recovered up to there);
  ``lost_from_t``: first t with info_loss >= 0.95 (no information from there on); ``converged_at_T``: whether the
  schedule's last step reaches 0.95 (else information is still present at T: "not converged at T").
- Recommended terminal log-SNR: the pooled SNR s* at which only 5% of the label information remains, divided by
  the largest pooling area (99.9th pixel percentile): log SNR_T = log s* - log A_max.
- Weighting (the analysis paper's proposal): w(t) proportional to |d info_loss / dt|, Gaussian-smoothed
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


def derivative_weighting(info_loss: list[float] | np.ndarray) -> list[float]:
    c = np.asarray(info_loss, dtype=np.float64)
    sigma = max(1.0, len(c) / 100)
    w = np.abs(gaussian_filter1d(np.gradient(c), sigma, mode="nearest"))
    if w.max() <= 0:
        return [1.0] * len(c)
    w = np.maximum(w, FLOOR * w.max())
    return (w / w.mean()).tolist()


def derive(info_loss: list[float], logsnr_T: float, pooled_snr_star: float, largest_area: float) -> dict:
    c = np.asarray(info_loss, dtype=np.float64)
    rec = np.flatnonzero(c <= RECOVERED)
    w = derivative_weighting(c)
    total = float(np.sum(w))
    return {
        "recoverable_until_t": int(rec[-1]) if rec.size else None,
        "lost_from_t": first_at_least(c, LOST),
        "converged_at_T": bool(c[-1] >= LOST),
        "info_loss_at_T": float(c[-1]),
        "logsnr_T": float(logsnr_T),
        "largest_pooling_area_px": float(largest_area),
        "recommended_logsnr_end": float(np.log(pooled_snr_star) - np.log(largest_area)),
        "weighting": w,
        "sampling_density": [x / total for x in w],
    }
