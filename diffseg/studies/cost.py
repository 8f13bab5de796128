"""What a study will cost before it runs: the estimated wall time per dataset and in total.

Per trial, model evaluations x FLOPs per evaluation (one forward of one sample, counted by torch's
``FlopCounterMode`` on the meta device, at the trial's architecture and resolution):

    training    steps x batch x 3 F        (backward ~ 2 forwards)
    validation  (steps // val_every) x val images x val ensemble x val steps x F
    final       test images x ensemble x sampling steps x F      (E1: one step; E3/E4: no ensemble)
    curves      curve points x curve images x F

divided by the throughput of one trial: on CPU the fp32 matmul peak measured here at the trial's threads, on a
GPU the card's data-sheet dense bf16 peak times its share of the card; both times an MFU (stated with the
estimate: ``CPU_MFU`` and ``CPU_BF16_GAIN`` were calibrated on this machine's smoke study, ``GPU_MFU`` is an
assumption until a GPU run measures it) plus a fixed start-up per trial and per study (measured here: ``bench
study``). Trials are placed on the plan's concurrent slots in plan order (list scheduling), which gives the
makespan."""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import torch

from ..experiments import build
from ..experiments.config import TrialConfig
from ..experiments.kinds import EXPERIMENTS
from ..experiments.modes import MODES

# calibrated on the smoke study (2 trials at 1 CPU each, fp32): 742 s of trial time measured against 1266 s
# estimated at MFU 0.35 (the smoke models' lower end before the fused AdamW); the sampling phases count as forwards
CPU_MFU = 0.60
# bf16 trials on a CPU that computes bf16 natively: the same study's training steps 597.6 s (fp32) -> 426.2 s
CPU_BF16_GAIN = 1.40
GPU_MFU = 0.30  # an assumption (no GPU has run this code yet): stated with every GPU estimate
PER_TRIAL_S, PER_STUDY_S = 5.0, 30.0  # worker start, data, model build; Ray start, tracking, export (bench study)


@dataclass(frozen=True)
class Resources:
    """What the trials run on: ``gpus`` cards of ``card`` (0: CPUs), ``per_trial`` CPUs or GPU share each."""
    slots: int  # trials at once
    flops_per_trial: float  # peak FLOP/s one trial gets
    mfu: float
    words: str
    bf16_gain: float = 1.0  # throughput factor of trials with train.bf16


def cpu_resources(cpus_per_trial: float, slots: int) -> Resources:
    from ..bench.models import matmul_peak
    from ..budgets import native_bf16

    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(cpus_per_trial)))
    try:
        peak = max(matmul_peak((1024,)).values())
    finally:
        torch.set_num_threads(threads)
    gain = CPU_BF16_GAIN if native_bf16() else 1.0
    return Resources(slots, peak, CPU_MFU, f"{slots} trial(s) at once on CPU, {cpus_per_trial:g} CPU each "
                                           f"({peak / 1e9:.0f} GFLOP/s measured fp32 peak per trial, MFU {CPU_MFU}; "
                                           f"bf16 trials x{gain:g})", gain)


def gpu_resources(gpus: int, gpus_per_trial: float, card: str) -> Resources:
    from ..bench.models import GPU_BF16_PEAK

    if card not in GPU_BF16_PEAK:
        raise ValueError(f"unknown GPU {card!r} for the estimate; known: {sorted(GPU_BF16_PEAK)}")
    per_trial = min(gpus_per_trial, 1.0) or 1.0
    slots = max(1, int(gpus / per_trial))
    return Resources(slots, GPU_BF16_PEAK[card] * per_trial, GPU_MFU,
                     f"{gpus} x {card} ({slots} trial(s) at once, {per_trial:g} GPU each; data-sheet bf16 peak, "
                     f"MFU {GPU_MFU} assumed)")


def forward_flops(cfg: TrialConfig) -> float:
    """FLOPs of one forward pass of one sample, counted on the meta device (nothing allocated)."""
    from torch.utils.flop_counter import FlopCounterMode

    mode, r = MODES[cfg.experiment], cfg.data.resolution
    with torch.device("meta"):
        model = build.model(cfg, 3)
        images = torch.zeros(1, 3, r, r)
        masks = torch.zeros(1, 1, r, r)
        x0, cond = mode.split_batch(images, masks)
        t = torch.zeros(1, dtype=torch.long)
        with FlopCounterMode(display=False) as fc, torch.no_grad():
            model(x0, t, cond)
    return float(fc.get_total_flops())


def evaluations(cfg: TrialConfig, test_images: int) -> dict[str, float]:
    """Sample-forwards of one trial, by phase."""
    t, e = cfg.train, cfg.eval
    kind = EXPERIMENTS[cfg.experiment]
    steps = 1 if not kind.diffusion else e.steps
    val_steps = 1 if not kind.diffusion else e.val_steps
    out = {"training": t.steps * t.batch_size * 3.0}
    if kind.segments:
        out["validation"] = (t.steps // t.val_every) * e.val_max_images * e.val_ensemble * val_steps
        out["final"] = test_images * e.ensemble * steps
    out["curves"] = float(e.curve_points * e.curve_max_images)
    return out


def estimate(points, test_images: list[int], res: Resources, num_samples: int = 1) -> dict:
    """Per dataset and in total: trials, the summed trial seconds and the makespan on ``res``'s slots."""
    flops: dict[tuple, float] = {}
    seconds = []
    for p, n_test in zip(points, test_images, strict=True):
        cfg = TrialConfig.from_dict(p.config)
        key = (cfg.experiment, cfg.model.architecture, cfg.data.resolution, cfg.model.base_channels,
               tuple(cfg.model.channel_mult))
        if key not in flops:
            flops[key] = forward_flops(cfg)
        work = sum(evaluations(cfg, n_test).values()) * flops[key]
        speed = res.flops_per_trial * res.mfu * (res.bf16_gain if cfg.train.bf16 else 1.0)
        seconds += [(p.dataset, PER_TRIAL_S + work / speed)] * num_samples
    slots = [0.0] * min(res.slots, max(1, len(seconds)))
    heapq.heapify(slots)
    ends: dict[str, float] = {}
    for ds, s in seconds:  # list scheduling in plan order: each trial starts on the first free slot
        end = heapq.heappop(slots) + s
        heapq.heappush(slots, end)
        ends[ds] = max(ends.get(ds, 0.0), end)
    per = {ds: {"trials": sum(d == ds for d, _ in seconds), "trial_s": sum(s for d, s in seconds if d == ds)}
           for ds in dict.fromkeys(d for d, _ in seconds)}
    return {"resources": res.words, "datasets": per, "trials": len(seconds),
            "trial_s": sum(s for _, s in seconds), "wall_s": PER_STUDY_S + max(slots, default=0.0),
            "assumptions": f"MFU {res.mfu}, {PER_TRIAL_S:.0f} s per trial and {PER_STUDY_S:.0f} s per study of "
                           "start-up; FLOPs counted per forward on the meta device"}


def words(est: dict) -> str:
    def hm(s: float) -> str:
        return f"{s / 3600:.1f} h" if s >= 3600 else f"{s / 60:.1f} min" if s >= 60 else f"{s:.0f} s"

    lines = [f"estimated cost on {est['resources']}: wall {hm(est['wall_s'])} for {est['trials']} trials "
             f"({hm(est['trial_s'])} of trial time; {est['assumptions']})"]
    lines += [f"  {ds}: {d['trials']} trials, {hm(d['trial_s'])} of trial time" for ds, d in est["datasets"].items()]
    return "\n".join(lines)
