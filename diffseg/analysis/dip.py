"""The dip rule of finding (a), on a loss curve over t with bootstrap replicates (pure numpy).

The paper reports that the eps-loss of diffusion segmentation dips at small t and rises again, while image
generation falls monotonically. In eps space every loss goes to 0 as t -> T (x_t is almost pure noise, so
eps_hat = x_t / s is nearly exact), so the global minimum is always at the end and a rule that asks for the global
minimum below t = 50 can never fire. The rule here compares the curve with itself on fixed windows:

- dip depth  D = L(t = 0) - min_{t in [2, 50)} L(t)            (a dip: the curve goes down first)
- rise       R = max_{t in [50, 250]} L(t) / min_{t in [2, 50)} L(t)   (then up again)

Both are read on the curve smoothed by a running mean over the grid points within ``SMOOTH`` steps of t (5 points
on the dense part of the grid, single points on the sparse part), so that the minimum of a noisy curve is not
biased low by picking its single lowest point.
"dip then rise" when the lower 2.5 % bootstrap quantile of D is > 0 and that of R is >= 1.5; "no dip" when the
upper 97.5 % quantile of D is <= 0 or that of R is < 1.5; otherwise "undecided" (the data cannot tell at this n).
"""

from __future__ import annotations

import numpy as np

DIP_WINDOW, RISE_WINDOW, RISE, SMOOTH = (2, 50), (50, 250), 1.5, 5
DIP, NO_DIP, UNDECIDED = "dip then rise", "no dip", "undecided"


def dip_statistics(t: np.ndarray, curves: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(D, R) for each curve of ``curves`` (..., len(t)) on the steps ``t``; the grid must hold t = 0 and steps
    in both windows."""
    t = np.asarray(t)
    curves = np.asarray(curves, dtype=np.float64)
    low = (t >= DIP_WINDOW[0]) & (t < DIP_WINDOW[1])
    high = (t >= RISE_WINDOW[0]) & (t <= RISE_WINDOW[1])
    if not (t == 0).any() or not low.any() or not high.any():
        raise ValueError(f"the t grid needs t = 0 and steps in {DIP_WINDOW} and {RISE_WINDOW}; got {t.tolist()}")
    near = (np.abs(t[:, None] - t[None, :]) <= SMOOTH).astype(np.float64)
    smooth = curves @ (near / near.sum(1, keepdims=True)).T
    m = smooth[..., low].min(-1)
    return curves[..., int(np.flatnonzero(t == 0)[0])] - m, smooth[..., high].max(-1) / m


def dip_verdict(t: np.ndarray, point: np.ndarray, replicates: np.ndarray) -> dict:
    """Verdict of the rule from the point curve (len(t)) and its bootstrap replicates (B, len(t))."""
    d, r = dip_statistics(t, point)
    db, rb = dip_statistics(t, replicates)
    d_lo, d_hi = np.quantile(db, [0.025, 0.975])
    r_lo, r_hi = np.quantile(rb, [0.025, 0.975])
    verdict = DIP if d_lo > 0 and r_lo >= RISE else NO_DIP if d_hi <= 0 or r_hi < RISE else UNDECIDED
    return {"dip_depth": float(d), "dip_depth_low": float(d_lo), "dip_depth_high": float(d_hi),
            "rise": float(r), "rise_low": float(r_lo), "rise_high": float(r_hi), "verdict": verdict}


def two_way_bootstrap(losses: np.ndarray, n_resamples: int = 2000, seed: int = 0) -> np.ndarray:
    """Replicates (B, T) of the mean curve of ``losses`` (images, draws, T), resampling images and noise draws
    independently with replacement (a two-way bootstrap: both are random factors of the measurement)."""
    n_i, n_d, _ = losses.shape
    rng = np.random.default_rng(seed)
    wi = rng.multinomial(n_i, np.full(n_i, 1 / n_i), size=n_resamples) / n_i
    wd = rng.multinomial(n_d, np.full(n_d, 1 / n_d), size=n_resamples) / n_d
    return np.einsum("bi,idt,bd->bt", wi, losses, wd)
