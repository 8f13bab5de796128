"""Uncertainty quality: does the per-pixel ensemble std flag the pixels the mean prediction gets wrong?

AUROC of score = std against label = (segmentation != ground truth), computed by the rank-sum (Mann-Whitney U)
formula with average ranks for ties: AUROC = (R_pos - n_pos (n_pos + 1) / 2) / (n_pos n_neg). Undefined
(NaN) when every pixel is right or every pixel is wrong.
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor


def auroc(scores: Tensor, labels: Tensor) -> Tensor:
    s = scores.detach().double().flatten()
    lab = labels.detach().bool().flatten()
    n_pos = int(lab.sum())
    n_neg = lab.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        return torch.tensor(float("nan"), dtype=torch.float64)
    order = torch.argsort(s)
    sorted_s = s[order]
    _, inverse, counts = torch.unique_consecutive(sorted_s, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()
    avg_rank_per_group = ends - (counts.double() - 1) / 2
    ranks = torch.empty_like(s)
    ranks[order] = avg_rank_per_group[inverse]
    r_pos = ranks[lab].sum()
    return (r_pos - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def uncertainty_auroc(std: Tensor, segmentation: Tensor, target: Tensor) -> Tensor:
    """AUROC of the std map for detecting misclassified pixels (all pixels passed are pooled)."""
    return auroc(std, segmentation.bool() != target.bool())
