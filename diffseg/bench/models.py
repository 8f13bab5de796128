"""Model benchmark: per architecture at the smoke and small sizes, parameters, training steps/s and the achieved
FLOP/s of a training step (torch's FlopCounterMode) as a fraction of this machine's matmul FLOP/s measured in the
same run (model FLOP utilisation, MFU)."""

from __future__ import annotations

import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..budgets import BUDGETS
from ..diffusion import make_schedule, make_timestep_sampler, make_weighting
from ..diffusion.loss import loss_weight_table
from ..experiments import TrialConfig
from ..experiments.modes import MODES, DiffusionContext
from ..models import ARCHITECTURES, REFERENCE_ARCHITECTURES, build_model, count_params


def matmul_flops(n: int = 1024, reps: int = 20) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def _trial_cfg(budget: str, arch: str) -> TrialConfig:
    overlay = {k: v for k, v in BUDGETS[budget].items() if k.startswith(("model.", "data.", "train.", "diffusion."))}
    return TrialConfig.from_dict({**overlay, "model.architecture": arch,
                                  "experiment": "e1" if arch in REFERENCE_ARCHITECTURES else "e2"})


def bench_model(cfg: TrialConfig, steps: int = 5) -> dict:
    res, bs = cfg.data.resolution, cfg.train.batch_size
    model = build_model(cfg.model, 1, 3, res, cfg.diffusion.T)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    sched = make_schedule(cfg.diffusion.schedule, cfg.diffusion.T)
    ctx = DiffusionContext(sched, loss_weight_table(make_weighting("uniform"), sched, "eps"),
                           make_timestep_sampler("uniform", cfg.diffusion.T), "eps")
    mode = MODES[cfg.experiment]
    g = torch.Generator().manual_seed(0)
    images = torch.randn(bs, 3, res, res)
    masks = torch.where(torch.randn(bs, 1, res, res) > 0, 1.0, -1.0)

    def step():
        loss = mode.train_step(model, ctx, images, masks, g).loss.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    with FlopCounterMode(display=False) as fc:
        step()
    flops = fc.get_total_flops()
    step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    dt = (time.perf_counter() - t0) / steps
    return {"params": count_params(model), "steps_per_s": 1 / dt, "flops_per_step": flops,
            "achieved_flops": flops / dt, "resolution": res, "batch_size": bs}


def run(archs=ARCHITECTURES, sizes=("smoke", "small"), steps: int = 3) -> dict:
    peak = matmul_flops()
    models = {}
    for arch in archs:
        for size in sizes:
            r = bench_model(_trial_cfg(size, arch), steps)
            r["mfu"] = r["achieved_flops"] / peak
            models[f"{arch}/{size}"] = r
    return {"matmul_flops": peak, "threads": torch.get_num_threads(), "models": models}


def table(r: dict) -> str:
    lines = [f"model benchmark (training step, CPU threads {r['threads']}; matmul peak "
             f"{r['matmul_flops'] / 1e9:.1f} GFLOP/s measured in this run)",
             f"  {'architecture/size':24s} {'params':>10s} {'batch':>5s} {'px':>4s} {'steps/s':>8s} "
             f"{'GFLOP/step':>10s} {'GFLOP/s':>8s} {'MFU':>6s}"]
    for name, m in r["models"].items():
        lines.append(f"  {name:24s} {m['params']:10d} {m['batch_size']:5d} {m['resolution']:4d} "
                     f"{m['steps_per_s']:8.2f} {m['flops_per_step'] / 1e9:10.1f} {m['achieved_flops'] / 1e9:8.1f} "
                     f"{m['mfu']:6.2f}")
    return "\n".join(lines)
