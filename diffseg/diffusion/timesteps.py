"""Timestep samplers: draw step indices for a training batch and the factor each sample's loss is scaled by.

Sampling t from p(t) instead of uniformly multiplies the effective weight by T p(t) (Kingma & Gao 2023).
``importance`` with ``correct=True`` divides that back out (1 / (T p_t): same objective, other variance); with
``correct=False`` the density *is* the weighting ("weighting by sampling", Hang et al. 2024).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..registry import Registry
from .weighting import resample_curve

Tensor = torch.Tensor


class TimestepSampler:
    name = "base"

    def __init__(self, T: int):
        self.T = T

    def probs(self) -> Tensor:
        return torch.full((self.T,), 1.0 / self.T, dtype=torch.float64)

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Return (t indices (long), per-sample loss scale (float32))."""
        p = self.probs()
        t = torch.multinomial(p, batch_size, replacement=True, generator=generator)
        return t, self.loss_scale(p, t)

    def loss_scale(self, p: Tensor, t: Tensor) -> Tensor:
        return torch.ones(t.shape, dtype=torch.float32)

    def update(self, t: Tensor, losses: Tensor) -> None:
        """Feed back per-sample (unscaled) losses; only loss-aware samplers use them."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class UniformSampler(TimestepSampler):
    name = "uniform"


class ImportanceSampler(TimestepSampler):
    """p_t proportional to a per-step curve (resampled onto T steps)."""

    name = "importance"

    def __init__(self, T: int, curve: Sequence[float], correct: bool = True):
        super().__init__(T)
        w = resample_curve(curve, T)
        self._p = w / w.sum()
        self.correct = correct

    def probs(self) -> Tensor:
        return self._p

    def loss_scale(self, p: Tensor, t: Tensor) -> Tensor:
        if not self.correct:
            return super().loss_scale(p, t)
        return (1.0 / (self.T * p[t])).float()


class LossSecondMomentSampler(TimestepSampler):
    """Improved DDPM (Nichol & Dhariwal 2021, resample.py): keep the last ``history`` losses per step,
    p_t proportional to sqrt(E[L_t^2]), mixed with ``uniform_prob`` of the uniform density; uniform until every
    step has a full history. Losses are scaled by 1 / (T p_t), so the objective is unchanged."""

    name = "loss_second_moment"

    def __init__(self, T: int, history: int = 10, uniform_prob: float = 0.001):
        super().__init__(T)
        self.history = history
        self.uniform_prob = uniform_prob
        self._losses = torch.zeros(T, history, dtype=torch.float64)
        self._counts = torch.zeros(T, dtype=torch.long)

    def warmed_up(self) -> bool:
        return bool((self._counts == self.history).all())

    def probs(self) -> Tensor:
        if not self.warmed_up():
            return super().probs()
        w = (self._losses**2).mean(dim=1).sqrt()
        w = w / w.sum()
        return w * (1 - self.uniform_prob) + self.uniform_prob / self.T

    def loss_scale(self, p: Tensor, t: Tensor) -> Tensor:
        return (1.0 / (self.T * p[t])).float()

    def update(self, t: Tensor, losses: Tensor) -> None:
        for ti, li in zip(t.tolist(), losses.detach().double().tolist(), strict=True):
            n = int(self._counts[ti])
            if n == self.history:
                self._losses[ti] = torch.roll(self._losses[ti], -1)
                self._losses[ti, -1] = li
            else:
                self._losses[ti, n] = li
                self._counts[ti] = n + 1

    def state_dict(self) -> dict[str, Any]:
        return {"losses": self._losses.clone(), "counts": self._counts.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._losses = state["losses"].clone()
        self._counts = state["counts"].clone()


TIMESTEP_SAMPLERS: Registry[type[TimestepSampler]] = Registry("timestep sampler")  # name -> class(T, **params)
TIMESTEP_SAMPLERS.register("uniform")(UniformSampler)
TIMESTEP_SAMPLERS.register("importance")(ImportanceSampler)
TIMESTEP_SAMPLERS.register("loss_second_moment")(LossSecondMomentSampler)


def make_timestep_sampler(name: str, T: int, **params: Any) -> TimestepSampler:
    return TIMESTEP_SAMPLERS.build(name, T, **params)
