"""TrialConfig -> objects, in one place: preprocessing, augmentation, schedule, loss weighting, timestep sampler,
diffusion context, model, device, optimiser and EMA. The trial, the study plan, the driver's dataset pre-cache,
the fingerprint code and the benchmarks all build through these functions, so they cannot prepare different things."""

from __future__ import annotations

from typing import Any

import torch
from torch.optim.swa_utils import AveragedModel

from ..data import AugmentConfig, PrepConfig
from ..diffusion import Schedule, make_schedule, make_timestep_sampler, make_weighting
from ..diffusion.loss import loss_weight_table
from ..diffusion.schedules import MODIFIERS
from ..models import build_model
from .config import TrialConfig
from .kinds import SEGMENTATION
from .modes import MODES, DiffusionContext

TERMINAL_MODIFIERS = ("logsnr_end", "zero_terminal_snr")


def prep(cfg: TrialConfig) -> PrepConfig:
    d = cfg.data
    return PrepConfig(d.resolution, d.image_resize, d.mask_resize)


def augment(cfg: TrialConfig) -> AugmentConfig:
    return AugmentConfig(enabled=cfg.data.augment)


def schedule_params(cfg: TrialConfig, base: bool = False) -> dict[str, Any]:
    """The schedule's parameters with the modifiers (``shifted_cosine``'s ``size`` defaults to the resolution).
    ``base``: without the terminal modifiers (what a fingerprint is computed under: it recommends them)."""
    dc = cfg.diffusion
    kw = dict(dc.schedule_params)
    if dc.schedule == "shifted_cosine":
        kw.setdefault("size", cfg.data.resolution)
    modifiers = {"input_scale": dc.input_scale, "logsnr_end": dc.logsnr_end,
                 "zero_terminal_snr": dc.zero_terminal_snr or None}
    assert set(modifiers) == set(MODIFIERS)
    kw.update({k: v for k, v in modifiers.items() if v is not None and not (base and k in TERMINAL_MODIFIERS)})
    return kw


def schedule(cfg: TrialConfig, base: bool = False) -> Schedule:
    return make_schedule(cfg.diffusion.schedule, cfg.diffusion.T, **schedule_params(cfg, base))


def diffusion_context(cfg: TrialConfig, sched: Schedule | None = None) -> DiffusionContext:
    """Schedule, per-step loss weights (weighting x target factor), timestep sampler, target, condition dropout."""
    dc = cfg.diffusion
    sched = sched or schedule(cfg)
    weighting = make_weighting(dc.weighting, **dc.weighting_params)
    return DiffusionContext(sched, loss_weight_table(weighting, sched, dc.target),
                            make_timestep_sampler(dc.timestep_sampler, dc.T, **dc.timestep_sampler_params), dc.target,
                            cfg.train.cond_dropout if cfg.experiment == SEGMENTATION else 0.0)


def model(cfg: TrialConfig, image_channels: int = 3) -> torch.nn.Module:
    """The architecture with the experiment's input channels (E4 denoises the image itself)."""
    mode = MODES[cfg.experiment]
    return build_model(cfg.model, mode.data_channels(image_channels), image_channels, cfg.data.resolution,
                       cfg.diffusion.T)


def device(cfg: TrialConfig) -> torch.device:
    """``train.device``; only ``auto`` is resolved (to cuda when available)."""
    name = cfg.train.device
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def optimizer(cfg: TrialConfig, model: torch.nn.Module) -> torch.optim.AdamW:
    """AdamW (``train.lr``, ``train.weight_decay``); ``train.fused_adamw`` takes torch's fused kernel, one pass over
    all parameters instead of torch's CPU default, a loop over them (the same update up to rounding; measured at
    the smoke width: 6.2 -> 1.1 ms per step for EnsemDiff, 10.4 -> 3.0 ms for SegFormer, ``bench models``)."""
    t = cfg.train
    return torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay,
                             **({"fused": True} if t.fused_adamw else {"foreach": False}))


def ema(cfg: TrialConfig, model: torch.nn.Module) -> AveragedModel:
    """The EMA of the weights and buffers with warm-up: avg <- avg + (1 - d) (w - avg), d = min(decay, (1 + n) /
    (10 + n)) after n updates (TensorFlow's ExponentialMovingAverage with num_updates). One foreach lerp per
    device and dtype (integer buffers are copied), not a Python loop over the tensors (3.7 -> 0.2 ms per step)."""
    decay = cfg.train.ema_decay

    def update(avg: list[torch.Tensor], cur: list[torch.Tensor], n: torch.Tensor) -> None:
        if not (avg[0].is_floating_point() or avg[0].is_complex()):
            torch._foreach_copy_(avg, cur)
            return
        d = min(decay, (1.0 + float(n)) / (10.0 + float(n)))
        torch._foreach_lerp_(avg, cur, 1.0 - d)

    return AveragedModel(model, multi_avg_fn=update, use_buffers=True)
