"""Metrics between a set of sampled segmentations S_1..S_N and a set of annotations Y_1..Y_M of one image.

Distance d(A, B) = 1 - IoU(A, B), with d(empty, empty) = 0 (as Kohl et al. 2018).
GED^2 = 2 E[d(S, Y)] - E[d(S, S')] - E[d(Y, Y')], expectations over all pairs, S != S' by index (Kohl et al. 2018).
Hungarian-matched IoU (Kohl et al. 2019): both sets are tiled to lcm(N, M) elements, matched one-to-one by
maximum total IoU (scipy's linear_sum_assignment), and the mean matched IoU is reported.
"""

from __future__ import annotations

import math

import torch
from scipy.optimize import linear_sum_assignment

from .overlap import iou

Tensor = torch.Tensor


def pairwise_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU matrix (N, M) between masks a (N, ...) and b (M, ...)."""
    n, m = a.shape[0], b.shape[0]
    aa = a.bool().flatten(1).unsqueeze(1).expand(n, m, -1).reshape(n * m, -1)
    bb = b.bool().flatten(1).unsqueeze(0).expand(n, m, -1).reshape(n * m, -1)
    return iou(aa, bb).reshape(n, m)


def _mean_offdiag(d: Tensor) -> Tensor:
    n = d.shape[0]
    if n < 2:
        return d.new_zeros(())
    return (d.sum() - d.diagonal().sum()) / (n * (n - 1))


def ged(samples: Tensor, annotations: Tensor) -> Tensor:
    """Squared generalised energy distance between samples (N, ...) and annotations (M, ...)."""
    d_sy = 1 - pairwise_iou(samples, annotations)
    d_ss = 1 - pairwise_iou(samples, samples)
    d_yy = 1 - pairwise_iou(annotations, annotations)
    return 2 * d_sy.mean() - _mean_offdiag(d_ss) - _mean_offdiag(d_yy)


def hungarian_iou(samples: Tensor, annotations: Tensor) -> Tensor:
    n, m = samples.shape[0], annotations.shape[0]
    k = math.lcm(n, m)
    s = samples.repeat((k // n,) + (1,) * (samples.ndim - 1))
    y = annotations.repeat((k // m,) + (1,) * (annotations.ndim - 1))
    cost = pairwise_iou(s, y)
    rows, cols = linear_sum_assignment(cost.numpy(), maximize=True)
    return cost[torch.as_tensor(rows), torch.as_tensor(cols)].mean()
