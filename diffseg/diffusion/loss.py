"""The diffusion training loss, reported per sample in eps space.

loss_i = w_eps(t_i) * c_target(SNR_i) * mean_pixels (pred_i - target_i)^2 * scale_i, where c_target converts the
native MSE exactly to ||eps_hat - eps||^2 (``targets.eps_space_factor``) and scale_i is the timestep sampler's
correction. w_eps * c_target is formed in float64 so SNR = 0 gives the limit, never inf * 0.
"""

from __future__ import annotations

import torch

from .schedules import Schedule
from .targets import eps_space_factor
from .weighting import SNR_FLOOR, Weighting

Tensor = torch.Tensor


def loss_weight_table(weighting: Weighting, schedule: Schedule, target: str) -> Tensor:
    """Per-step factor w_eps * c_target (float64, length T) applied to the native-target MSE."""
    snr = schedule.snr.clamp(min=SNR_FLOOR)
    table = weighting.table(schedule) * eps_space_factor(snr, target)
    if not bool(torch.isfinite(table).all()):
        raise ValueError(f"weighting {weighting.name!r} with target {target!r} is not finite on this schedule")
    return table


def eps_space_mse(native_mse: Tensor, t: Tensor, schedule: Schedule, target: str) -> Tensor:
    """Unweighted per-sample ||eps_hat - eps||^2 from the native-target MSE (B,) at steps t (B,)."""
    c = eps_space_factor(schedule.snr.clamp(min=SNR_FLOOR), target).to(native_mse.device)[t]
    return native_mse * c.float()


def weighted_loss(native_mse: Tensor, t: Tensor, table: Tensor, scale: Tensor | None = None) -> Tensor:
    """Per-sample weighted loss from native-target MSE (B,), step indices (B,) and a ``loss_weight_table``."""
    w = table.to(native_mse.device)[t].float()
    out = native_mse * w
    return out * scale.to(out.device) if scale is not None else out
