"""Diffusion core: schedules (log-SNR over t), weightings, timestep samplers, targets and samplers."""

from .sampling import SAMPLERS, SPACINGS, ddim_sample, ddpm_sample, q_sample, respace, sample
from .schedules import SCHEDULES, Schedule, make_schedule, rescale_terminal
from .targets import TARGETS, eps_space_factor, make_target, to_eps, to_v, to_x0
from .timesteps import TIMESTEP_SAMPLERS, TimestepSampler, make_timestep_sampler
from .weighting import WEIGHTINGS, Weighting, make_weighting

__all__ = [
    "SAMPLERS",
    "SCHEDULES",
    "SPACINGS",
    "TARGETS",
    "TIMESTEP_SAMPLERS",
    "WEIGHTINGS",
    "Schedule",
    "TimestepSampler",
    "Weighting",
    "ddim_sample",
    "ddpm_sample",
    "eps_space_factor",
    "make_schedule",
    "make_target",
    "make_timestep_sampler",
    "make_weighting",
    "q_sample",
    "rescale_terminal",
    "respace",
    "sample",
    "to_eps",
    "to_v",
    "to_x0",
]
