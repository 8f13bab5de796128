"""Sampling benchmark: an ensemble of N = 10 members for one image at the smoke size, the two gains measured
separately side by side in one run: batching alone (the N members looped one at a time vs folded into the batch,
both full T-step DDPM) and step reduction alone (T-step DDPM vs DDIM-20, both folded); ``speedup`` is the naive
loop against the folded DDIM-20 (both gains). What the fewer steps cost in quality: ``python -m diffseg.bench
quality``."""

from __future__ import annotations

import time

import torch

from ..budgets import BUDGETS
from ..diffusion import SAMPLERS
from ..experiments import TrialConfig, build


def run(members: int = 10, ddim_steps: int = 20, arch: str = "ensemdiff") -> dict:
    cfg = TrialConfig.from_dict({**{k: v for k, v in BUDGETS["smoke"].items() if k.startswith(("model.", "data.",
                                    "diffusion."))}, "model.architecture": arch})
    T, res = cfg.diffusion.T, cfg.data.resolution
    model = build.model(cfg, 3).eval()
    sched = build.schedule(cfg)
    cond = torch.randn(1, 3, res, res)

    def draw(sampler: str, steps: int, n: int, seed: int) -> None:
        SAMPLERS[sampler](model, sched, (1, 1, res, res), cond=cond, steps=steps, ensemble=n,
                          generator=torch.Generator().manual_seed(seed))

    def timed(fn) -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    with torch.inference_mode():
        looped_ddpm = timed(lambda: [draw("ddpm", T, 1, m) for m in range(members)])
        folded_ddpm = timed(lambda: draw("ddpm", T, members, 0))
        folded_ddim = timed(lambda: draw("ddim", ddim_steps, members, 0))
    return {"members": members, "ddim_steps": ddim_steps, "T": T, "resolution": res, "architecture": arch,
            "looped_ddpm_s": looped_ddpm, "folded_ddpm_s": folded_ddpm, "folded_ddim_s": folded_ddim,
            "batching_speedup": looped_ddpm / folded_ddpm, "steps_speedup": folded_ddpm / folded_ddim,
            "speedup": looped_ddpm / folded_ddim}


def table(r: dict) -> str:
    return "\n".join([
        f"sampling benchmark ({r['architecture']}, smoke size, {r['resolution']} px, N = {r['members']} members)",
        f"  {r['T']}-step DDPM, members looped one at a time: {r['looped_ddpm_s']:9.2f} s",
        f"  {r['T']}-step DDPM, members folded into the batch: {r['folded_ddpm_s']:8.2f} s   "
        f"batching alone: {r['batching_speedup']:.1f}x",
        f"  DDIM-{r['ddim_steps']}, members folded:                {r['folded_ddim_s']:9.2f} s   "
        f"fewer steps alone: {r['steps_speedup']:.1f}x",
        f"  both (looped DDPM-{r['T']} vs folded DDIM-{r['ddim_steps']}): {r['speedup']:.1f}x",
    ])
