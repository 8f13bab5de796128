"""The one place that fixes how masks, predictions and probabilities relate.

- Masks live in {-1, +1} in the diffusion space: ``to_signed(m) = 2 m - 1`` for a {0, 1} mask.
- One sample's prediction x0_hat is foreground where x0_hat > 0.
- Probabilities for calibration: p(foreground) = mean over ensemble members of clip((x0_hat + 1) / 2, 0, 1).
- The ensemble's segmentation is p > 0.5 (for unclipped members this equals mean(x0_hat) > 0);
  the per-pixel std of the clipped member probabilities is the uncertainty map.
- Feed-forward models (E1) output logits; their member probability is sigmoid(logit), aggregated the same way.
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor


def to_signed(mask01: Tensor) -> Tensor:
    """{0, 1} (bool or number) -> {-1, +1} float."""
    return mask01.float() * 2.0 - 1.0


def foreground(x0: Tensor) -> Tensor:
    """Foreground decision of one sample: x0 > 0."""
    return x0 > 0


def member_probs(x0: Tensor) -> Tensor:
    """Per-member probability clip((x0 + 1) / 2, 0, 1)."""
    return ((x0 + 1.0) / 2.0).clamp(0.0, 1.0)


def ensemble_summary(samples: Tensor, dim: int = 1) -> tuple[Tensor, Tensor, Tensor]:
    """(mean probability, std of member probabilities, segmentation mean > 0.5) over ``dim``."""
    p = member_probs(samples)
    mean = p.mean(dim=dim)
    std = p.std(dim=dim, unbiased=False) if p.shape[dim] > 1 else torch.zeros_like(mean)
    return mean, std, mean > 0.5
