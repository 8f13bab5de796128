"""Calibration of per-pixel foreground probabilities p against binary ground truth y.

Binary convention (as torchmetrics' ``binary_calibration_error``): confidence = p(foreground), accuracy = the
fraction of foreground pixels in the bin. ECE = sum_b |B_b|/N |acc_b - conf_b| over 10 equal-width bins on [0, 1]
(bin b holds (b/n, (b+1)/n], p = 0 falls in the first); adaptive ECE uses equal-mass bins (Nixon et al. 2019).
All pixels passed are pooled; call per image and average for a per-image ECE.
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor
_EPS = 1e-7


def _flat(p: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    p = p.detach().double().flatten()
    y = y.detach().double().flatten()
    if p.shape != y.shape:
        raise ValueError(f"probabilities {tuple(p.shape)} and targets {tuple(y.shape)} differ in size")
    return p, y


def equal_width_bins(p: Tensor, n_bins: int) -> Tensor:
    edges = torch.linspace(0, 1, n_bins + 1, dtype=p.dtype, device=p.device)
    return (torch.bucketize(p, edges[1:-1], right=False)).clamp(0, n_bins - 1)


def reliability_table(p: Tensor, y: Tensor, n_bins: int = 10, adaptive: bool = False) -> dict[str, Tensor]:
    """Per bin: count, mean confidence, accuracy (foreground fraction), and the bin's lower/upper edge."""
    p, y = _flat(p, y)
    if adaptive:
        order = torch.argsort(p, stable=True)
        bins = torch.empty_like(order)
        bins[order] = torch.div(torch.arange(p.numel()) * n_bins, max(p.numel(), 1), rounding_mode="floor")
    else:
        bins = equal_width_bins(p, n_bins)
    count = torch.bincount(bins, minlength=n_bins).double()
    conf_sum = torch.bincount(bins, weights=p, minlength=n_bins)
    acc_sum = torch.bincount(bins, weights=y, minlength=n_bins)
    safe = count.clamp(min=1)
    if adaptive:
        lo = torch.full((n_bins,), float("nan"), dtype=torch.float64)
        hi = lo.clone()
        lo = lo.scatter_reduce(0, bins, p, reduce="amin", include_self=False)
        hi = hi.scatter_reduce(0, bins, p, reduce="amax", include_self=False)
    else:
        edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)
        lo, hi = edges[:-1], edges[1:]
    return {"count": count, "confidence": conf_sum / safe, "accuracy": acc_sum / safe, "lower": lo, "upper": hi}


def _ece_from_table(tab: dict[str, Tensor]) -> Tensor:
    n = tab["count"].sum().clamp(min=1)
    return (tab["count"] / n * (tab["accuracy"] - tab["confidence"]).abs()).sum()


def ece(p: Tensor, y: Tensor, n_bins: int = 10) -> Tensor:
    """Expected calibration error with equal-width bins (the paper's ECE uses 10)."""
    return _ece_from_table(reliability_table(p, y, n_bins))


def adaptive_ece(p: Tensor, y: Tensor, n_bins: int = 10) -> Tensor:
    """ECE with equal-mass bins (each bin holds N / n_bins pixels by rank of p)."""
    return _ece_from_table(reliability_table(p, y, n_bins, adaptive=True))


def brier(p: Tensor, y: Tensor) -> Tensor:
    """Mean squared error of the probability, mean (p - y)^2."""
    p, y = _flat(p, y)
    return ((p - y) ** 2).mean()


def nll(p: Tensor, y: Tensor, eps: float = _EPS) -> Tensor:
    """Binary negative log-likelihood with p clamped to [eps, 1 - eps]."""
    p, y = _flat(p, y)
    p = p.clamp(eps, 1 - eps)
    return -(y * p.log() + (1 - y) * (1 - p).log()).mean()
