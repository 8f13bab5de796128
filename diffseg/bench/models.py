"""Model benchmark: per architecture at the smoke and small sizes, parameters, training steps/s, the FLOPs of a
training step (torch's FlopCounterMode) and the model FLOP utilisation MFU = achieved FLOP/s / peak FLOP/s, with
the peak measured in the same run as the best of fp32 matmuls (512-4096) and of a 3x3 convolution at every
benchmarked model's own shapes (forward + backward), so MFU <= 1 by construction (asserted). The theoretical peak
(cores x clock x vector lanes x 2 FMA units x 2) is printed beside it where /proc/cpuinfo gives the facts (on a
GPU: the card's dense bf16 peak from its data sheet). Each step is split into forward, backward, optimiser and
EMA time."""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from ..budgets import BUDGETS
from ..experiments import TrialConfig, build
from ..experiments.kinds import FEED_FORWARD, SEGMENTATION
from ..experiments.modes import MODES
from ..models import ARCHITECTURES, REFERENCE_ARCHITECTURES, count_params
from ..process import usable_cpus

GPU_BF16_PEAK = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12, "V100": 125e12}


def _timed(fn, min_s: float = 0.3, reps: int = 3) -> float:
    """Seconds per call: the best of ``reps`` batches of calls lasting at least ``min_s`` each."""
    fn()
    best = float("inf")
    for _ in range(reps):
        n, t0 = 0, time.perf_counter()
        while (dt := time.perf_counter() - t0) < min_s or n == 0:
            fn()
            n += 1
        best = min(best, dt / n)
    return best


def matmul_peak(sizes=(512, 1024, 2048, 4096)) -> dict[str, float]:
    out = {}
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        out[f"matmul_{n}"] = 2 * n**3 / _timed(lambda a=a, b=b: a @ b)
    return out


def conv_flops(batch: int, channels: int, res: int) -> float:
    """Achieved FLOP/s of a 3x3 conv (channels -> channels, padding 1) forward + backward at these shapes."""
    x = torch.randn(batch, channels, res, res, requires_grad=True)
    w = torch.randn(channels, channels, 3, 3, requires_grad=True)

    def step():
        F.conv2d(x, w, padding=1).sum().backward()
    return 3 * 2 * batch * res * res * channels * channels * 9 / _timed(step)


def theoretical_peak() -> dict[str, object]:
    """Cores x clock x fp32 lanes x 2 FMA units x 2 FLOP per FMA, from /proc/cpuinfo (an assumption of 2 FMA
    units per core, as on current x86 server cores); the GPU's dense bf16 peak from its data sheet."""
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        peak = next((v for k, v in GPU_BF16_PEAK.items() if k in name), None)
        return {"device": name, "flops": peak, "basis": "data-sheet dense bf16 peak" if peak else "unknown card"}
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {"device": "cpu", "flops": None, "basis": "no /proc/cpuinfo"}
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    mhz = [float(line.split(":", 1)[1]) for line in info.splitlines() if line.startswith("cpu MHz")]
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    fma_units = 2 if "fma" in flags or "avx512f" in flags else 1
    cores = torch.get_num_threads()
    ghz = max(mhz) / 1000 if mhz else None
    flops = cores * ghz * 1e9 * lanes * fma_units * 2 if ghz else None
    return {"device": f"{model} ({usable_cpus()} CPUs visible)", "flops": flops,
            "basis": f"{cores} threads x {ghz} GHz x {lanes} fp32 lanes x {fma_units} FMA units x 2"}


def _trial_cfg(budget: str, arch: str) -> TrialConfig:
    overlay = {k: v for k, v in BUDGETS[budget].items() if k.startswith(("model.", "data.", "train.", "diffusion."))}
    return TrialConfig.from_dict({**overlay, "model.architecture": arch,
                                  "experiment": FEED_FORWARD if arch in REFERENCE_ARCHITECTURES else SEGMENTATION})


@dataclass
class StepParts:
    """What one benchmarked training step needs: the model, its diffusion context, optimiser, EMA, mode, noise
    generator and a fixed random batch (images in [-1, 1]-like noise, masks in {-1, +1})."""
    model: torch.nn.Module
    ctx: object
    opt: torch.optim.Optimizer
    ema: object
    mode: object
    g: torch.Generator
    images: torch.Tensor
    masks: torch.Tensor


def step_parts(cfg: TrialConfig, device: str = "cpu") -> StepParts:
    res, bs, dev = cfg.data.resolution, cfg.train.batch_size, torch.device(device)
    model = build.model(cfg, 3).to(dev)
    return StepParts(model, build.diffusion_context(cfg), build.optimizer(cfg, model), build.ema(cfg, model),
                     MODES[cfg.experiment],
                     torch.Generator(device=dev).manual_seed(0), torch.randn(bs, 3, res, res, device=dev),
                     torch.where(torch.randn(bs, 1, res, res, device=dev) > 0, 1.0, -1.0))


def bench_model(cfg: TrialConfig, steps: int = 3, device: str = "cpu", min_s: float = 2.0) -> dict:
    """Training steps after one warm-up step: at least ``steps`` of them and at least ``min_s`` seconds; the step
    time is their median (one slow step, e.g. another process waking, does not set it). On ``cuda``: bf16 autocast,
    as a trial with ``train.bf16`` trains."""
    res, bs = cfg.data.resolution, cfg.train.batch_size
    dev = torch.device(device)
    p = step_parts(cfg, device)
    model, ctx, opt, ema, mode, g, images, masks = (p.model, p.ctx, p.opt, p.ema, p.mode, p.g, p.images, p.masks)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else contextlib.nullcontext()
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    with FlopCounterMode(display=False) as fc, amp:
        mode.train_step(model, ctx, images, masks, g).loss.mean().backward()
    flops = fc.get_total_flops()
    parts, totals = {"forward": 0.0, "backward": 0.0, "optimizer": 0.0, "ema": 0.0}, []
    i = 0
    while i <= steps or sum(totals) < min_s:  # the first step warms up and is not timed
        sync()
        t = [time.perf_counter()]
        with amp:
            loss = mode.train_step(model, ctx, images, masks, g).loss.mean()
        sync()
        t.append(time.perf_counter())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        sync()
        t.append(time.perf_counter())
        opt.step()
        sync()
        t.append(time.perf_counter())
        ema.update_parameters(model)
        sync()
        t.append(time.perf_counter())
        if i:
            totals.append(t[-1] - t[0])
            for k, a, b in zip(parts, t, t[1:], strict=False):
                parts[k] += b - a
        i += 1
    dt, timed = float(np.median(totals)), sum(totals)  # the parts add up to the timed steps
    return {"params": count_params(model), "steps_per_s": 1 / dt, "flops_per_step": flops,
            "achieved_flops": flops / dt, "resolution": res, "batch_size": bs, "step_s": dt, "timed_steps": len(totals),
            "timed_s": timed, "time_split": {k: v / timed for k, v in parts.items()},
            "base_channels": cfg.model.base_channels}


def run(archs=ARCHITECTURES, sizes=("smoke", "small"), steps: int = 3,
        peak_sizes=(512, 1024, 2048, 4096), min_s: float = 2.0) -> dict:
    """On a CUDA machine the models train there (bf16 autocast) and MFU is against the card's data-sheet peak."""
    models = {}
    load = os.getloadavg()[0]  # other work on the machine skews every figure (seen: MFU 0.23 under load, 0.69 idle)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    kernels = matmul_peak(peak_sizes) if device == "cpu" else {"data_sheet": theoretical_peak()["flops"] or math.inf}
    for arch in archs:
        for size in sizes:
            cfg = _trial_cfg(size, arch)
            models[f"{arch}/{size}"] = bench_model(cfg, steps, device, min_s)
            key = f"conv3x3_{cfg.train.batch_size}x{cfg.model.base_channels}x{cfg.data.resolution}"
            if device == "cpu" and key not in kernels:
                kernels[key] = conv_flops(cfg.train.batch_size, cfg.model.base_channels, cfg.data.resolution)
    if device == "cpu":
        kernels.update({f"{k}_again": v for k, v in matmul_peak(peak_sizes[1:3]).items()})  # clocks drift in a run
    peak = max(kernels.values())
    for m in models.values():
        m["mfu"] = m["achieved_flops"] / peak
        assert m["mfu"] <= 1.0, f"MFU {m['mfu']:.2f} > 1: the counted FLOPs or the measured peak are wrong"
    return {"peak_flops": peak, "peak_kernel": max(kernels, key=kernels.get), "kernels": kernels,
            "theoretical": theoretical_peak(), "threads": torch.get_num_threads(), "models": models,
            "load_before": load, "load_after": os.getloadavg()[0]}


def table(r: dict) -> str:
    th = r["theoretical"]
    lines = [f"model benchmark (training step, CPU threads {r['threads']})",
             f"  measured peak {r['peak_flops'] / 1e9:.1f} GFLOP/s ({r['peak_kernel']}; kernels: "
             + ", ".join(f"{k} {v / 1e9:.1f}" for k, v in r["kernels"].items()) + ")",
             f"  theoretical peak {th['flops'] / 1e9:.1f} GFLOP/s ({th['device']}: {th['basis']})" if th["flops"]
             else f"  theoretical peak unknown ({th['basis']})",
             f"  {'architecture/size':24s} {'params':>10s} {'batch':>5s} {'px':>4s} {'steps/s':>8s} "
             f"{'GFLOP/step':>10s} {'GFLOP/s':>8s} {'MFU':>6s}  fwd/bwd/opt/ema %"]
    if r["load_before"] > 0.5:
        lines.insert(1, f"  warning: the machine was busy before the run (load average {r['load_before']:.1f}): "
                        "the figures are low; run the benchmark on an idle machine")
    for name, m in r["models"].items():
        split = "/".join(f"{100 * v:.0f}" for v in m["time_split"].values())
        lines.append(f"  {name:24s} {m['params']:10d} {m['batch_size']:5d} {m['resolution']:4d} "
                     f"{m['steps_per_s']:8.2f} {m['flops_per_step'] / 1e9:10.1f} {m['achieved_flops'] / 1e9:8.1f} "
                     f"{m['mfu']:6.2f}  {split}")
    return "\n".join(lines)
