"""Trial configuration: one nested dataclass, built from a nested or dotted-flat dict (as search spaces give it).

Unknown keys are errors that list the allowed ones. ``TrialConfig.to_dict()`` round-trips and is what gets logged.
"""

from __future__ import annotations

import math
import types
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Union, get_args, get_origin, get_type_hints

from ..diffusion import SAMPLERS, SCHEDULES, SPACINGS, TARGETS, TIMESTEP_SAMPLERS, WEIGHTINGS
from ..diffusion.sampling import SamplingOptions
from ..diffusion.schedules import MODIFIERS
from ..models import ARCHITECTURES, REFERENCE_ARCHITECTURES, ModelConfig
from ..ranges import bounded
from ..ranges import check as check_ranges
from ..registry import suggest
from .kinds import EXPERIMENTS, FEED_FORWARD, SEGMENTATION


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "synthetic-blob"
    data_root: str | None = None
    resolution: int = bounded(64, ge=8, le=4096)
    cache_dir: str | None = None
    image_resize: str = "area"
    mask_resize: str = "area"
    split_seed: int = bounded(0, ge=0)
    val_fraction: float = bounded(0.2, ge=0.0, le=0.9)
    test_fraction: float = bounded(0.2, ge=0.0, le=0.9)
    retrain: bool = False
    augment: bool = False


@dataclass(frozen=True)
class DiffusionConfig:
    T: int = bounded(1000, ge=2, le=100_000)
    schedule: str = "linear"
    schedule_params: dict[str, Any] = field(default_factory=dict)
    input_scale: float | None = bounded(None, gt=0.0, le=100.0)
    logsnr_end: float | None = bounded(None, ge=-50.0, le=50.0)
    zero_terminal_snr: bool = False
    target: str = "eps"
    weighting: str = "uniform"
    weighting_params: dict[str, Any] = field(default_factory=dict)
    timestep_sampler: str = "uniform"
    timestep_sampler_params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainConfig:
    steps: int = bounded(300, ge=1, le=100_000_000)
    batch_size: int = bounded(16, ge=1, le=65_536)
    lr: float = bounded(2e-4, gt=0.0, le=10.0)
    weight_decay: float = bounded(0.0, ge=0.0, le=10.0)
    ema_decay: float = 0.999
    grad_clip: float = bounded(1.0, ge=0.0)  # the gradient's norm is clipped to it (0: no clipping)
    fused_adamw: bool = True  # AdamW's fused kernel (False: torch's per-parameter loop, the CPU default)
    val_every: int = bounded(100, ge=1)
    # the training loss (mean of the last log_every steps) is logged every log_every steps
    log_every: int = bounded(10, ge=1)
    patience: int | None = bounded(None, ge=1)  # validations without improvement before stopping
    bf16: bool = False
    channels_last: bool = False
    device: str = "auto"
    threads: int | None = bounded(None, ge=1, le=1024)
    # training loss over t is accumulated from this fraction of training on (paper)
    loss_curve_from: float = bounded(0.75, ge=0.0, le=1.0)
    # E2 ablation: probability of replacing the image by the null condition
    cond_dropout: float = bounded(0.0, ge=0.0, le=1.0)
    keep_checkpoints: tuple[int, ...] | None = None  # steps whose EMA weights are kept for post-hoc analysis
    # (steps beyond train.steps are never reached: the files in ema_checkpoints/ say which were kept)


@dataclass(frozen=True)
class EvalConfig:
    ensemble: int = bounded(5, ge=1, le=10_000)
    sampler: str = "ddim"  # a name of diffusion.SAMPLERS; runs eval.steps steps
    steps: int = bounded(20, ge=1, le=100_000)
    spacing: str = "trailing"
    # DDIM's option only (None: 0, deterministic); ddpm has eta = 1, dpmpp_2m none
    eta: float | None = bounded(None, ge=0.0, le=1.0)
    clip_x0: bool = True
    val_ensemble: int = bounded(2, ge=1, le=10_000)
    val_steps: int = bounded(10, ge=1, le=100_000)
    val_max_images: int = bounded(32, ge=1)
    test_max_images: int | None = bounded(None, ge=1)
    curve_points: int = bounded(20, ge=1, le=100_000)
    curve_max_images: int = bounded(32, ge=1)
    loss_bins: int = bounded(24, ge=1, le=10_000)  # log-spaced bins of the training loss over t
    gallery: int = bounded(4, ge=0, le=1000)
    ece_bins: int = bounded(10, ge=2, le=1000)


@dataclass(frozen=True)
class TrialConfig:
    experiment: str = SEGMENTATION
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    output_dir: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrialConfig:
        return _build(cls, _nest(d), "config")

    def validate(self) -> TrialConfig:
        _validate(self)
        return self


SECTIONS = {"data": DataConfig, "model": ModelConfig, "diffusion": DiffusionConfig, "train": TrainConfig,
            "eval": EvalConfig}


def _nest(d: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        parts = key.split(".")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"config key {key!r} conflicts with a non-section value")
        if isinstance(value, dict) and parts[-1] in SECTIONS:
            node.setdefault(parts[-1], {}).update(value)
        else:
            node[parts[-1]] = value
    return out


_TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _typed(value: Any, hint: Any, where: str) -> Any:
    """``value`` checked against a field's type (ints are numbers, bools are not; lists become tuples)."""
    origin, args = get_origin(hint), get_args(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        try:
            return _typed(value, inner, where)
        except ValueError as exc:
            raise ValueError(f"{exc} (or null)" if str(exc).startswith(f"{where} must") else str(exc)) from None
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or not value:
            raise ValueError(f"{where} must be a non-empty list of integers, got {value!r}")
        return tuple(_typed(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where} must be a mapping, got {value!r}")
        return value
    ok = isinstance(value, bool) if hint is bool else (
        isinstance(value, hint) and not isinstance(value, bool) if hint is int else
        isinstance(value, (int, float)) and not isinstance(value, bool) if hint is float else isinstance(value, hint))
    if not ok:
        raise ValueError(f"{where} must be {_TYPE_WORDS.get(hint, hint.__name__)}, got {value!r}")
    return value


def _build(cls, d: dict[str, Any], where: str):
    names = {f.name: f for f in fields(cls)}
    unknown = sorted(set(d) - set(names))
    if unknown:
        hints = "; ".join(f"{k!r}: {suggest(k, names)}" for k in unknown)
        raise ValueError(f"unknown {where} key(s) {unknown}; {hints}")
    hints = get_type_hints(cls)
    kwargs = {}
    for key, value in d.items():
        sub = SECTIONS.get(key) if cls is TrialConfig else None
        if sub is not None:
            if not isinstance(value, dict):
                raise ValueError(f"{where}.{key} must be a mapping")
            kwargs[key] = _build(sub, value, f"{where}.{key}")
        else:
            kwargs[key] = _typed(value, hints[key], f"{where}.{key}".removeprefix("config."))
    return cls(**kwargs)


def _device(name: str) -> None:
    """``train.device``: a torch device name (whether this machine has it is the command's check: the trials
    of a cluster run on other machines than the plan)."""
    import torch

    try:
        torch.device(name)
    except RuntimeError:
        raise ValueError(f"train.device={name!r} is not a torch device (auto, cpu, cuda, cuda:1, ...)") from None


def _choice(value, allowed, where):
    if value not in allowed:
        raise ValueError(f"{where}={value!r} is not allowed; {suggest(value, allowed)}")


def sampling_options(ev: EvalConfig) -> SamplingOptions:
    """The sampler options of an evaluation."""
    return SamplingOptions(ev.steps, ev.spacing, ev.eta, ev.clip_x0)


def _validate(c: TrialConfig) -> None:
    _choice(c.experiment, EXPERIMENTS, "experiment")
    for name in SECTIONS:
        check_ranges(getattr(c, name), name)
    if c.train.device != "auto":
        _device(c.train.device)
    levels = len(c.model.channel_mult)
    if c.model.architecture not in REFERENCE_ARCHITECTURES and c.data.resolution % 2 ** (levels - 1):
        raise ValueError(f"model.channel_mult has {levels} levels ({levels - 1} downsamplings by 2): "
                         f"data.resolution={c.data.resolution} must be a multiple of {2 ** (levels - 1)}")
    _choice(c.model.architecture, ARCHITECTURES, "model.architecture")
    kind = EXPERIMENTS[c.experiment]
    if c.model.architecture in REFERENCE_ARCHITECTURES and c.experiment != FEED_FORWARD:
        raise ValueError(f"model.architecture={c.model.architecture!r} is a feed-forward reference: experiment e1 only")
    d = c.diffusion
    _choice(d.schedule, SCHEDULES, "diffusion.schedule")
    _choice(d.target, TARGETS, "diffusion.target")
    _choice(d.weighting, WEIGHTINGS, "diffusion.weighting")
    _choice(d.timestep_sampler, TIMESTEP_SAMPLERS, "diffusion.timestep_sampler")
    _choice(c.eval.sampler, SAMPLERS, "eval.sampler")
    _choice(c.eval.spacing, SPACINGS, "eval.spacing")
    try:
        sampling_options(c.eval).for_sampler(c.eval.sampler)
    except ValueError as exc:
        raise ValueError(f"eval.eta: {exc}") from None
    for where, registry, name, args, params in (
            ("diffusion.weighting_params", WEIGHTINGS, d.weighting, (), d.weighting_params),
            ("diffusion.schedule_params", SCHEDULES, d.schedule, (d.T,),
             {k: v for k, v in d.schedule_params.items() if k not in MODIFIERS}),
            ("diffusion.timestep_sampler_params", TIMESTEP_SAMPLERS, d.timestep_sampler, (d.T,),
             d.timestep_sampler_params)):
        try:
            registry.check(name, *args, **params)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
    if d.zero_terminal_snr and d.target == "eps" and kind.diffusion:
        raise ValueError("diffusion.target='eps' is degenerate with zero_terminal_snr (x0 = (x_t - s eps)/a, a = 0; "
                         "Lin et al. 2023): use target 'v' or 'x0'")
    positive = {"train.steps": c.train.steps, "train.batch_size": c.train.batch_size, "train.lr": c.train.lr,
                "train.val_every": c.train.val_every, "train.log_every": c.train.log_every,
                "eval.ensemble": c.eval.ensemble, "eval.steps": c.eval.steps,
                "eval.val_ensemble": c.eval.val_ensemble, "eval.val_steps": c.eval.val_steps,
                "eval.curve_points": c.eval.curve_points, "diffusion.T": d.T, "data.resolution": c.data.resolution}
    for where, value in positive.items():
        if not (isinstance(value, (int, float)) and value > 0 and math.isfinite(value)):
            raise ValueError(f"{where} must be positive, got {value!r}")
    if max(c.eval.steps, c.eval.val_steps) > d.T:
        raise ValueError(f"eval steps ({c.eval.steps}, {c.eval.val_steps}) must not exceed diffusion.T={d.T}")
    if not 0 <= c.train.cond_dropout < 1:
        raise ValueError(f"train.cond_dropout must be in [0, 1), got {c.train.cond_dropout}")
    if c.train.cond_dropout > 0 and not (kind.diffusion and kind.conditioned):
        raise ValueError(f"train.cond_dropout applies to {SEGMENTATION} only (experiment {c.experiment})")
    if c.data.retrain and c.train.patience is not None:
        raise ValueError("data.retrain trains on the validation split: early stopping (train.patience) on it is not "
                         "allowed; set train.steps to the best step of the matching non-retrain run")
    bad = [s for s in c.train.keep_checkpoints or () if not s > 0]
    if bad:  # steps beyond train.steps are allowed (a budget overlay lists them) and are never reached
        raise ValueError(f"train.keep_checkpoints {bad} must be positive training steps")
    if not 0 <= c.train.ema_decay < 1:
        raise ValueError(f"train.ema_decay must be in [0, 1), got {c.train.ema_decay}")
