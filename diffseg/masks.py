"""The one place that fixes how masks, predictions and probabilities relate.

- Masks live in {-1, +1} in the diffusion space: ``to_signed(m) = 2 m - 1`` for a {0, 1} mask.
- One sample's prediction x0_hat is foreground where x0_hat > 0.
- A sampled ensemble's probability p(foreground) is the **vote fraction** mean_n [x0_hat_n > 0]: the Monte Carlo
  estimate of p(y | image) the ensemble of sampled masks stands for (rule ``VOTE``). For binary members
  p = k / N, so the 10-bin ECE is at most mean |y - p| = the members' mean pixel error.
- The grey-level mean mean_n clip((x0_hat_n + 1) / 2, 0, 1) (rule ``SOFT``) is kept as a second, clearly named
  metric (``*_softmean``): members whose background settles at a grey level make it miscalibrated at any N.
- Feed-forward models (E1) output logits; their member probability is sigmoid(logit), stored as 2 p - 1, and
  their ensemble probability is the mean of those probabilities (``SOFT``: a predicted probability, not a vote).
- The ensemble's segmentation is p > 0.5; the per-pixel std of the member probabilities is the uncertainty map.
"""

from __future__ import annotations

import torch

from .experiments.kinds import SOFT, VOTE

Tensor = torch.Tensor
RULES = (VOTE, SOFT)


def to_signed(mask01: Tensor) -> Tensor:
    """{0, 1} (bool or number) -> {-1, +1} float."""
    return mask01.float() * 2.0 - 1.0


def foreground(x0: Tensor) -> Tensor:
    """Foreground decision of one sample: x0 > 0."""
    return x0 > 0


def member_probs(x0: Tensor, rule: str = VOTE) -> Tensor:
    """Per-member probability: [x0 > 0] (``VOTE``) or clip((x0 + 1) / 2, 0, 1) (``SOFT``)."""
    if rule == VOTE:
        return foreground(x0).float()
    if rule == SOFT:
        return ((x0 + 1.0) / 2.0).clamp(0.0, 1.0)
    raise ValueError(f"unknown probability rule {rule!r}; allowed: {RULES}")


def ensemble_summary(samples: Tensor, dim: int = 1, rule: str = VOTE) -> tuple[Tensor, Tensor, Tensor]:
    """(mean member probability, std of member probabilities, segmentation mean > 0.5) over ``dim``."""
    p = member_probs(samples, rule)
    mean = p.mean(dim=dim)
    std = p.std(dim=dim, unbiased=False) if p.shape[dim] > 1 else torch.zeros_like(mean)
    return mean, std, mean > 0.5


def member_diagnostics(samples: Tensor, gt: Tensor) -> dict[str, Tensor]:
    """Per image of members (B, N, 1, H, W) against gt (B, 1, H, W) in {-1, +1}: the members' mean pixel error
    mean |[x0 > 0] - y| (the bound on the vote fraction's ECE), their disagreement mean p (1 - p) of the vote
    fraction p (the spread of the votes per pixel), their binariness (fraction of member pixels with |x0| > 0.9),
    and the mean vote-fraction / grey-level probability on ground-truth background pixels.
    The vote fraction's Brier score is exactly member_error - disagreement, per pixel (mean_n (v_n - y)^2 =
    (p - y)^2 + p (1 - p) for binary votes v_n: the ambiguity decomposition, Krogh & Vedelsby 1995): an ensemble
    is better than its members by exactly how much they disagree."""
    y = (gt > 0).unsqueeze(1)
    votes = member_probs(samples)  # [x0 > 0] per member
    vote = votes.mean(1)
    bg = ~y.squeeze(1)
    n_bg = bg.flatten(1).sum(1).double()

    def on_bg(p: Tensor) -> Tensor:  # NaN for an image without background
        return (p * bg).flatten(1).sum(1).double() / n_bg.where(n_bg > 0, torch.nan)

    return {"member_error": (votes - y.float()).abs().flatten(1).mean(1),
            "disagreement": (vote * (1 - vote)).flatten(1).mean(1),
            "binariness": (samples.abs() > 0.9).float().flatten(1).mean(1),
            "bg_prob": on_bg(vote), "bg_prob_softmean": on_bg(member_probs(samples, SOFT).mean(1))}
