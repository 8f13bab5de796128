"""Overlap metrics per image, batched over (B, ...) boolean masks.

Convention: when both prediction and ground truth are empty, IoU = Dice = 1 (the prediction is exactly right);
when only one is empty, 0.
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor


def _counts(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    p = pred.bool().flatten(1)
    g = target.bool().flatten(1)
    inter = (p & g).sum(1).double()
    return inter, p.sum(1).double(), g.sum(1).double()


def iou(pred: Tensor, target: Tensor) -> Tensor:
    """|P n G| / |P u G| per image (empty-vs-empty = 1)."""
    inter, sp, sg = _counts(pred, target)
    union = sp + sg - inter
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def dice(pred: Tensor, target: Tensor) -> Tensor:
    """2 |P n G| / (|P| + |G|) per image (empty-vs-empty = 1)."""
    inter, sp, sg = _counts(pred, target)
    denom = sp + sg
    return torch.where(denom > 0, 2 * inter / denom.clamp(min=1), torch.ones_like(denom))
