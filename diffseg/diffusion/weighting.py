"""Timestep loss weightings, all expressed as w_eps: the weight on the eps-space MSE ||eps_hat - eps||^2.

Because every loss is reported in eps space (see ``targets.eps_space_factor``), the weighting and the prediction
target are independent study axes. A weight w_x on the x0-MSE equals w_eps = w_x / SNR; a weight w_v on the
v-MSE equals w_eps = w_v (SNR + 1) / SNR (identities used by Min-SNR and denoising-diffusion-pytorch).

Weightings that depend on SNR alone are callables ``w(snr)``; every weighting gives its per-step table for a
schedule via ``table(schedule)`` (ELBO and tabulated curves need the schedule).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..registry import Registry
from .schedules import Schedule

Tensor = torch.Tensor
# SNR floor used only to evaluate weights at SNR = 0 (zero terminal SNR) by their limit, never inf * 0.
SNR_FLOOR = 1e-20


@dataclass(frozen=True)
class Weighting:
    name: str
    params: dict[str, Any] = field(default_factory=dict)

    def table(self, schedule: Schedule) -> Tensor:
        """Per-step weight w_eps[i], float64, length T."""
        raise NotImplementedError


@dataclass(frozen=True)
class SNRWeighting(Weighting):
    fn: Callable[[Tensor], Tensor] | None = None

    def __call__(self, snr: Tensor) -> Tensor:
        snr = torch.as_tensor(snr, dtype=torch.float64).clamp(min=SNR_FLOOR)
        return self.fn(snr)

    def table(self, schedule: Schedule) -> Tensor:
        return self(schedule.snr)


@dataclass(frozen=True)
class ELBOWeighting(Weighting):
    """VDM (Kingma et al. 2021): discrete w_eps(t) = SNR(t-1)/SNR(t) - 1, scaled by T/2 to the continuous-time
    convention w_eps = -(d lambda/du)/2 with u in [0, 1] (Kingma & Gao 2023 call this w = 1). The first step has
    no predecessor (its ELBO term is the decoder); it takes the value of the second step."""

    def table(self, schedule: Schedule) -> Tensor:
        lam = schedule.log_snr.clamp(min=torch.log(torch.tensor(SNR_FLOOR, dtype=torch.float64)))
        w = torch.expm1(lam[:-1] - lam[1:]) * schedule.T / 2.0
        return torch.cat([w[:1], w])


@dataclass(frozen=True)
class CurveWeighting(Weighting):
    """A tabulated per-step curve (e.g. derived from a dataset fingerprint), linearly interpolated onto the
    schedule's T steps by relative position (i / (T-1)) and normalised to mean 1."""

    values: tuple[float, ...] = ()

    def table(self, schedule: Schedule) -> Tensor:
        return resample_curve(self.values, schedule.T)


def resample_curve(values: Sequence[float], T: int) -> Tensor:
    """Interpolate a curve given on an evenly spaced grid over [0, T-1] onto T steps; normalise to mean 1."""
    v = torch.as_tensor(list(values), dtype=torch.float64)
    if v.ndim != 1 or v.numel() < 2:
        raise ValueError("a weighting curve needs at least two values")
    if not bool(torch.isfinite(v).all()) or bool((v < 0).any()) or float(v.sum()) <= 0:
        raise ValueError("a weighting curve must be finite, non-negative and not all zero")
    if v.numel() != T:
        pos = torch.linspace(0, v.numel() - 1, T, dtype=torch.float64)
        lo = pos.floor().long().clamp(max=v.numel() - 2)
        frac = pos - lo
        v = v[lo] * (1 - frac) + v[lo + 1] * frac
    return v / v.mean()


def _uniform() -> Callable[[Tensor], Tensor]:
    """L_simple (Ho et al. 2020): w_eps = 1."""
    return torch.ones_like


def _min_snr(gamma: float = 5.0) -> Callable[[Tensor], Tensor]:
    """Min-SNR-gamma (Hang et al. 2023): w_x = min(SNR, gamma), so w_eps = min(1, gamma / SNR)."""
    return lambda snr: torch.clamp(gamma / snr, max=1.0)


def _p2(k: float = 1.0, gamma: float = 1.0) -> Callable[[Tensor], Tensor]:
    """P2 (Choi et al. 2022): w_eps = 1 / (k + SNR)^gamma."""
    return lambda snr: (k + snr) ** (-gamma)


def _soft_min_snr(gamma: float = 5.0) -> Callable[[Tensor], Tensor]:
    """Soft-min-SNR (Crowson et al. 2024, HDiT): w_x = (1/SNR + 1/gamma)^-1, so w_eps = gamma / (gamma + SNR);
    a smooth Min-SNR with the same gamma (HDiT's sigma_data = 0.5 corresponds to gamma = 4)."""
    return lambda snr: gamma / (gamma + snr)


def _v() -> Callable[[Tensor], Tensor]:
    """Plain v-MSE (Salimans & Ho 2022): w_v = 1, so w_eps = (SNR + 1) / SNR."""
    return lambda snr: (snr + 1.0) / snr


def _x0_mse() -> Callable[[Tensor], Tensor]:
    """Plain x0-MSE (w_x = 1; Salimans & Ho's "SNR weighting" in eps terms): w_eps = 1 / SNR. The E3 default."""
    return lambda snr: 1.0 / snr


def _debiased(max_weight: float = 1000.0) -> Callable[[Tensor], Tensor]:
    """Debiased (Yu et al. 2024, "Unmasking bias in diffusion model training"): w_eps = 1 / sqrt(SNR), clamped at
    max_weight because it diverges as SNR -> 0."""
    return lambda snr: torch.clamp(snr.rsqrt(), max=max_weight)


_SNR_WEIGHTINGS: dict[str, Callable[..., Callable[[Tensor], Tensor]]] = {
    "uniform": _uniform,
    "min_snr": _min_snr,
    "p2": _p2,
    "soft_min_snr": _soft_min_snr,
    "v": _v,
    "x0_mse": _x0_mse,
    "debiased": _debiased,
}
WEIGHTINGS: Registry[Callable[..., Weighting]] = Registry("weighting")  # name -> factory(**params) -> Weighting


def _snr_factory(name: str, inner: Callable[..., Callable[[Tensor], Tensor]]) -> Callable[..., Weighting]:
    @functools.wraps(inner)  # keeps the parameters' signature for the registry's check
    def factory(**params: Any) -> Weighting:
        return SNRWeighting(name=name, params=dict(params), fn=inner(**params))
    return factory


for _name, _inner in _SNR_WEIGHTINGS.items():
    WEIGHTINGS.register(_name)(_snr_factory(_name, _inner))


@WEIGHTINGS.register("elbo")
def _elbo() -> Weighting:
    return ELBOWeighting(name="elbo")


@WEIGHTINGS.register("curve")
def _curve(values: Sequence[float]) -> Weighting:
    """A per-step curve (normalised to mean 1), e.g. derived from a dataset fingerprint."""
    values = tuple(float(x) for x in values)
    resample_curve(values, len(values))  # validate now
    return CurveWeighting(name="curve", params={"values": list(values)}, values=values)


# Each prediction target's own plain MSE as a weighting (w_target = 1: the native loss unweighted), the way a target
# is trained when targets are compared (the ``calibration_targets`` study, the quality bench): another target's
# weighting borrowed with it changes two things at once (e.g. v trained on the eps-MSE weighs its large-t errors by
# SNR / (1 + SNR), down to 0).
PLAIN_MSE = {"eps": "uniform", "v": "v", "x0": "x0_mse"}


def make_weighting(name: str, **params: Any) -> Weighting:
    """Build a registered weighting by name with its parameters."""
    return WEIGHTINGS.build(name, **params)
