"""Reverse samplers: DDIM (Song et al. 2021) with eta, and DDPM ancestral sampling as DDIM with eta = 1
(its posterior variance beta_tilde; Ho et al. 2020), both over a respaced subset of the T training steps.

For consecutive steps t > t' of the respaced sequence (alpha_bar_{t'} = 1 after the last step):
  x0_hat, eps_hat from the model (eps_hat recomputed from x0_hat when x0 is clipped),
  sigma^2 = eta^2 (1 - ab_t') / (1 - ab_t) (1 - ab_t / ab_t'),
  x_t' = sqrt(ab_t') x0_hat + sqrt(1 - ab_t' - sigma^2) eps_hat + sigma z.
Ensembles are folded into the batch: N members of B conditions are one batch of B*N per network call.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..registry import Registry
from .schedules import Schedule
from .targets import bcast, to_eps, to_x0

Tensor = torch.Tensor
ModelFn = Callable[[Tensor, Tensor, Tensor | None], Tensor]
SPACINGS = ("trailing", "leading", "linspace")


def respace(T: int, k: int, spacing: str = "trailing") -> Tensor:
    """k step indices in [0, T-1], descending (noisiest first), as diffusers' ``timestep_spacing``:
    trailing = round(arange(T, 0, -T/k)) - 1 (starts at T-1, the schedule's terminal step);
    leading = arange(k) * (T // k); linspace = round(linspace(0, T-1, k))."""
    if not 1 <= k <= T:
        raise ValueError(f"number of sampling steps must be in [1, {T}], got {k}")
    if spacing == "trailing":
        steps = torch.round(torch.arange(T, 0, -T / k, dtype=torch.float64)).long() - 1
    elif spacing == "leading":
        steps = (torch.arange(k) * (T // k)).flip(0)
    elif spacing == "linspace":
        steps = torch.round(torch.linspace(0, T - 1, k, dtype=torch.float64)).long().flip(0)
    else:
        raise ValueError(f"unknown spacing {spacing!r}; allowed: {list(SPACINGS)}")
    return steps


@torch.no_grad()
def sample(
    model: ModelFn,
    schedule: Schedule,
    shape: tuple[int, ...],
    *,
    cond: Tensor | None = None,
    target: str = "eps",
    steps: int | None = None,
    spacing: str = "trailing",
    eta: float = 0.0,
    clip_x0: bool = False,
    ensemble: int = 1,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Draw ``ensemble`` samples per condition. ``shape`` is one member's batch shape (B, C, H, W); ``cond``
    (B, ...) is repeated per member. Returns (B, ensemble, C, H, W). ``noise`` fixes x_T (B*ensemble, C, H, W)."""
    x, cond, seq, device, (B, n, rest) = _start(schedule, shape, cond, target, steps, spacing, ensemble, noise,
                                                generator, device)
    ab = schedule.alphas_cumprod
    for j, t in enumerate(seq):
        ab_t = ab[t]
        ab_prev = ab[seq[j + 1]] if j + 1 < len(seq) else torch.ones((), dtype=torch.float64)
        a = ab_t.sqrt().expand(n).to(device)
        s = (1 - ab_t).sqrt().expand(n).to(device)
        t_in = torch.full((n,), t, device=device, dtype=torch.long)
        pred = model(x, t_in, cond).float()
        x0 = to_x0(pred, x, a, s, target)
        if clip_x0:
            x0 = x0.clamp(-1.0, 1.0)
            eps = to_eps(x0, x, a, s, "x0")
        else:
            eps = to_eps(pred, x, a, s, target)
        var = eta**2 * (1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev)
        dir_coef = (1 - ab_prev - var).clamp(min=0).sqrt()
        x = float(ab_prev.sqrt()) * x0 + float(dir_coef) * eps
        if eta > 0 and j + 1 < len(seq):
            z = torch.randn(x.shape, generator=generator).to(device)
            x = x + float(var.sqrt()) * z
    return x.reshape(B, ensemble, *rest)


SAMPLERS: Registry[Callable[..., Tensor]] = Registry("sampler")  # name -> fn(model, schedule, shape, **sample kw)


@dataclass(frozen=True)
class SamplingOptions:
    """How a sampler runs: ``steps`` (None: all T), ``spacing`` of the respaced steps, ``eta`` (None: the sampler's
    own; only DDIM takes one), ``clip_x0``. ``for_sampler`` gives a sampler exactly the options it supports and
    refuses one it does not (``eta`` for DDPM, whose eta is 1, or for the deterministic DPM-Solver++)."""
    steps: int | None = None
    spacing: str = "trailing"
    eta: float | None = None
    clip_x0: bool = False

    def for_sampler(self, name: str) -> dict[str, object]:
        kw = {"steps": self.steps, "spacing": self.spacing, "clip_x0": self.clip_x0}
        if self.eta is not None:
            if "eta" not in inspect.signature(SAMPLERS[name]).parameters:
                raise ValueError(f"sampler {name!r} takes no eta (got eta = {self.eta}); it is DDIM's option "
                                 "(ddpm: eta = 1, dpmpp_2m: deterministic): leave eval.eta unset")
            kw["eta"] = self.eta
        return kw


def _start(schedule, shape, cond, target, steps, spacing, ensemble, noise, generator, device):
    """What every sampler does first: refuse eps at SNR(T) = 0, fold the members into the batch, draw x_T."""
    if target == "eps" and float(schedule.alphas_cumprod[-1]) == 0.0:
        raise ValueError("target 'eps' cannot be sampled from a schedule with SNR(T) = 0: x0 = (x_t - s eps) / a "
                         "with a = 0 at t = T (Lin et al. 2023); train with target 'v' or 'x0'")
    device = torch.device(device) if device is not None else (cond.device if cond is not None else "cpu")
    B, *rest = shape
    n = B * ensemble
    if cond is not None:
        cond = cond.repeat_interleave(ensemble, dim=0)
    x = noise.to(device) if noise is not None else torch.randn(n, *rest, generator=generator).to(device)
    seq = respace(schedule.T, steps or schedule.T, spacing).tolist()
    return x, cond, seq, device, (B, n, rest)


@torch.no_grad()
def dpmpp_2m(
    model: ModelFn,
    schedule: Schedule,
    shape: tuple[int, ...],
    *,
    cond: Tensor | None = None,
    target: str = "eps",
    steps: int | None = None,
    spacing: str = "trailing",
    clip_x0: bool = False,
    ensemble: int = 1,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Alg. 2; diffusers' ``DPMSolverMultistepScheduler`` with
    ``algorithm_type="dpmsolver++"``, ``solver_order=2``, ``final_sigmas_type="zero"``): with
    lambda = log(alpha / sigma), h = lambda_next - lambda_t and the data predictions D_t (clipped when
    ``clip_x0``), x_next = (sigma_next / sigma_t) x_t - alpha_next (exp(-h) - 1) D, where D = D_t on the first and
    the final step and D = (1 + 1 / (2 r)) D_t - 1 / (2 r) D_prev with r = h_prev / h otherwise. Deterministic: it
    takes no ``eta``."""
    x, cond, seq, device, (B, n, rest) = _start(schedule, shape, cond, target, steps, spacing, ensemble, noise,
                                                generator, device)
    ab = schedule.alphas_cumprod
    alpha, sigma = ab.sqrt(), (1 - ab).sqrt()
    lam = alpha.log() - sigma.log()  # float64; -inf at SNR = 0
    d_prev, h_prev = None, None
    for j, t in enumerate(seq):
        a = alpha[t].expand(n).to(device)
        s = sigma[t].expand(n).to(device)
        t_in = torch.full((n,), t, device=device, dtype=torch.long)
        d = to_x0(model(x, t_in, cond).float(), x, a, s, target)
        if clip_x0:
            d = d.clamp(-1.0, 1.0)
        if j + 1 == len(seq):  # to sigma = 0: x = D (first order)
            x = d
            break
        nxt = seq[j + 1]
        h = float(lam[nxt] - lam[t])
        if d_prev is not None and math.isfinite(h_prev) and h_prev > 0:
            r = h_prev / h
            d_use = (1 + 1 / (2 * r)) * d - (1 / (2 * r)) * d_prev
        else:
            d_use = d
        x = float(sigma[nxt] / sigma[t]) * x - float(alpha[nxt]) * math.expm1(-h) * d_use
        d_prev, h_prev = d, h
    return x.reshape(B, ensemble, *rest)


@SAMPLERS.register("ddpm")
def ddpm_sample(model: ModelFn, schedule: Schedule, shape: tuple[int, ...], *, cond: Tensor | None = None,
                target: str = "eps", steps: int | None = None, spacing: str = "trailing", clip_x0: bool = False,
                ensemble: int = 1, noise: Tensor | None = None, generator: torch.Generator | None = None,
                device: torch.device | str | None = None) -> Tensor:
    """Ancestral DDPM sampling: DDIM with eta = 1 (full T steps unless ``steps`` is given, else respaced)."""
    return sample(model, schedule, shape, cond=cond, target=target, steps=steps, spacing=spacing, eta=1.0,
                  clip_x0=clip_x0, ensemble=ensemble, noise=noise, generator=generator, device=device)


ddim_sample = SAMPLERS.register("ddim")(sample)  # DDIM with the given ``eta`` (0: deterministic)


SAMPLERS.register("dpmpp_2m")(dpmpp_2m)


def q_sample(x0: Tensor, t: Tensor, schedule: Schedule, noise: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Forward process x_t = a_t x0 + s_t eps; returns (x_t, a_t, s_t) with per-sample coefficients."""
    a = schedule.alphas.to(x0.device)[t].to(x0.dtype)
    s = schedule.sigmas.to(x0.device)[t].to(x0.dtype)
    return bcast(a, x0) * x0 + bcast(s, x0) * noise, a, s
