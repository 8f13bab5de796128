"""Noise schedules, all represented as log-SNR over T discrete steps.

Convention (VP process): x_t = a_t x0 + s_t eps with a_t^2 = alpha_bar_t, s_t^2 = 1 - alpha_bar_t,
SNR_t = alpha_bar_t / (1 - alpha_bar_t), lambda_t = log SNR_t. Index 0 is the least noisy step (DDPM's t = 1),
index T-1 the noisiest (t = T). Continuous schedules are evaluated at u_i = (i + 1) / T, u in (0, 1].

Every schedule accepts three modifiers, applied in this order, because the final noise level is a study axis:
``input_scale`` b (lambda += 2 log b), then at most one of ``logsnr_end`` / ``zero_terminal_snr``
(the Lin et al. 2023 rescale of sqrt(alpha_bar), generalised to any terminal value).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..registry import Registry

Tensor = torch.Tensor
_F64 = torch.float64


@dataclass(frozen=True)
class Schedule:
    """A discrete noise schedule; ``log_snr`` (float64, length T, strictly decreasing) is the primary data."""

    name: str
    T: int
    log_snr: Tensor
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def alphas_cumprod(self) -> Tensor:
        """alpha_bar = sigmoid(lambda)."""
        return torch.sigmoid(self.log_snr)

    @property
    def snr(self) -> Tensor:
        return torch.exp(self.log_snr)

    @property
    def alphas(self) -> Tensor:
        """sqrt(alpha_bar): the signal scale a_t."""
        return torch.sigmoid(self.log_snr).sqrt()

    @property
    def sigmas(self) -> Tensor:
        """sqrt(1 - alpha_bar) = sqrt(sigmoid(-lambda)): the noise scale s_t."""
        return torch.sigmoid(-self.log_snr).sqrt()

    @property
    def betas(self) -> Tensor:
        """beta_t = 1 - alpha_bar_t / alpha_bar_{t-1}, with alpha_bar_0 = 1."""
        ab = self.alphas_cumprod
        prev = torch.cat([ab.new_ones(1), ab[:-1]])
        return 1.0 - ab / prev

    def describe(self) -> dict[str, Any]:
        """JSON-friendly summary: name, T, params and the end points of lambda."""
        return {
            "name": self.name,
            "T": self.T,
            "params": dict(self.params),
            "logsnr_start": float(self.log_snr[0]),
            "logsnr_end": float(self.log_snr[-1]),
        }


SCHEDULES: Registry[Callable[..., Tensor]] = Registry("schedule")  # name -> fn(T, **params) -> log-SNR per step


def _logsnr_from_alphas_cumprod(ab: Tensor) -> Tensor:
    return torch.log(ab) - torch.log1p(-ab)


def _grid(T: int) -> Tensor:
    return torch.arange(1, T + 1, dtype=_F64) / T


# --- base schedules: each returns lambda over T steps --------------------------------------------------------


@SCHEDULES.register("linear")
def linear(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """DDPM (Ho et al. 2020): beta_t = linspace(beta_start, beta_end, T) * 1000 / T (improved-diffusion's
    rescaling for T != 1000); alpha_bar = cumprod(1 - beta). T = 1000 gives SNR(T) ~ 4.0e-5 (lambda -10.1)."""
    scale = 1000.0 / T
    if beta_end * scale >= 1.0:
        raise ValueError(f"linear schedule: beta_end * 1000 / T = {beta_end * scale:.3g} >= 1 for T={T}")
    betas = torch.linspace(beta_start * scale, beta_end * scale, T, dtype=_F64)
    return _logsnr_from_alphas_cumprod(torch.cumprod(1.0 - betas, 0))


@SCHEDULES.register("cosine")
def cosine(T: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """Nichol & Dhariwal 2021: f(u) = cos^2((u + s)/(1 + s) * pi/2), beta_t = min(1 - f(t/T)/f((t-1)/T), 0.999),
    alpha_bar = cumprod(1 - beta) (diffusers' "squaredcos_cap_v2"). T = 1000 gives SNR(T) ~ 2.4e-9."""
    u = torch.arange(T + 1, dtype=_F64) / T
    f = torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2
    betas = torch.clamp(1.0 - f[1:] / f[:-1], max=max_beta)
    return _logsnr_from_alphas_cumprod(torch.cumprod(1.0 - betas, 0))


@SCHEDULES.register("sigmoid")
def sigmoid(T: int, start: float = -3.0, end: float = 3.0, tau: float = 1.0, clip_min: float = 1e-9) -> Tensor:
    """Chen 2023 ("On the importance of noise scheduling", Alg. 1; pix2seq diffusion_utils):
    alpha_bar(u) = (sig(end/tau) - sig((u (end - start) + start)/tau)) / (sig(end/tau) - sig(start/tau)),
    clipped to >= clip_min. Not diffusers' "sigmoid" betas (that one is GeoDiff's)."""
    u = _grid(T)
    v_start = torch.sigmoid(torch.tensor(start / tau, dtype=_F64))
    v_end = torch.sigmoid(torch.tensor(end / tau, dtype=_F64))
    out = (v_end - torch.sigmoid((u * (end - start) + start) / tau)) / (v_end - v_start)
    return _logsnr_from_alphas_cumprod(out.clamp(min=clip_min, max=1.0 - clip_min))


def _cosine_logsnr(u: Tensor, logsnr_min: float, logsnr_max: float) -> Tensor:
    t_min = math.atan(math.exp(-0.5 * logsnr_max))
    t_max = math.atan(math.exp(-0.5 * logsnr_min))
    return -2.0 * torch.log(torch.tan(t_min + u * (t_max - t_min)))


@SCHEDULES.register("shifted_cosine")
def shifted_cosine(
    T: int,
    size: int = 64,
    ref_size: int = 64,
    interpolated: bool = False,
    ref_size_low: int = 32,
    ref_size_high: int = 256,
    logsnr_min: float = -15.0,
    logsnr_max: float = 15.0,
) -> Tensor:
    """Hoogeboom et al. 2023 ("simple diffusion", eq. 4-6): lambda(u) = -2 log tan(pi u / 2) truncated to
    [logsnr_min, logsnr_max], then shifted by 2 log(ref_size / size). ``interpolated``: lambda(u) =
    (1 - u) lambda_shift(ref_size_low) + u lambda_shift(ref_size_high) (k-diffusion rand_cosine_interpolated)."""
    base = _cosine_logsnr(_grid(T), logsnr_min, logsnr_max)
    if not interpolated:
        return base + 2.0 * math.log(ref_size / size)
    u = _grid(T)
    low = base + 2.0 * math.log(ref_size_low / size)
    high = base + 2.0 * math.log(ref_size_high / size)
    return torch.lerp(low, high, u)


@SCHEDULES.register("laplace")
def laplace(T: int, mu: float = 0.0, b: float = 0.5, logsnr_min: float = -20.0, logsnr_max: float = 20.0) -> Tensor:
    """Hang et al. 2024 ("Improved noise schedule for diffusion training"): lambda has a Laplace density
    p(lambda) = exp(-|lambda - mu|/b)/(2b), i.e. lambda(u) = mu - b sgn(0.5 - u) ln(1 - 2|u - 0.5|).
    lambda(1) = -inf, so the result is clamped to [logsnr_min, logsnr_max] (use zero_terminal_snr for SNR 0)."""
    u = _grid(T)
    lam = mu - b * torch.sign(0.5 - u) * torch.log1p(-2.0 * (u - 0.5).abs())
    return lam.clamp(min=logsnr_min, max=logsnr_max)


MODIFIERS = ("input_scale", "logsnr_end", "zero_terminal_snr")


# --- modifiers -------------------------------------------------------------------------------------------------


def rescale_terminal(log_snr: Tensor, logsnr_end: float) -> Tensor:
    """Lin et al. 2023 (Alg. 1) generalised: sqrt(alpha_bar) is mapped affinely so that its first value is kept
    and its last becomes sqrt(sigmoid(logsnr_end)); logsnr_end = -inf gives zero terminal SNR exactly."""
    r = torch.sigmoid(log_snr).sqrt()
    r0, r_end = r[0], r[-1]
    target = 0.0 if logsnr_end == -math.inf else math.sqrt(1.0 / (1.0 + math.exp(-logsnr_end)))
    if not target < float(r0):
        raise ValueError(f"logsnr_end={logsnr_end} is not below the first step's log-SNR {float(log_snr[0]):.3f}")
    r = target + (r - r_end) * (r0 - target) / (r0 - r_end)
    ab = r**2
    out = _logsnr_from_alphas_cumprod(ab)
    out[0] = log_snr[0]  # exact: the first step is unchanged by construction
    if logsnr_end == -math.inf:
        out[-1] = -math.inf
    return out


def make_schedule(name: str, T: int, **params: Any) -> Schedule:
    """Build a registered schedule by name. Modifiers: ``input_scale`` (b > 0: lambda += 2 log b, the SNR of
    scaling x0 by b; Chen 2023), ``logsnr_end`` (terminal log-SNR) or ``zero_terminal_snr`` (Lin et al. 2023)."""
    SCHEDULES[name]
    if not isinstance(T, int) or T < 2:
        raise ValueError(f"schedule T must be an integer >= 2, got {T!r}")
    base_params = {k: v for k, v in params.items() if k not in MODIFIERS}
    log_snr = SCHEDULES.build(name, T, **base_params)
    b = params.get("input_scale")
    if b is not None:
        if not b > 0:
            raise ValueError(f"input_scale must be > 0, got {b}")
        log_snr = log_snr + 2.0 * math.log(b)
    end = params.get("logsnr_end")
    zero = bool(params.get("zero_terminal_snr", False))
    if end is not None and zero:
        raise ValueError("give either logsnr_end or zero_terminal_snr, not both")
    if zero:
        log_snr = rescale_terminal(log_snr, -math.inf)
    elif end is not None:
        log_snr = rescale_terminal(log_snr, float(end))
    if not bool(torch.all(log_snr[1:] < log_snr[:-1])):
        raise ValueError(f"schedule {name!r} with {params} is not strictly decreasing in log-SNR")
    return Schedule(name=name, T=T, log_snr=log_snr, params=dict(params))
