"""Sampling benchmark: an ensemble of N = 10 members for one image with DDIM-20, members folded into the batch,
against the naive loop (one member at a time, full T-step DDPM), side by side in one run."""

from __future__ import annotations

import dataclasses
import time

import torch

from ..budgets import BUDGETS
from ..diffusion import make_schedule, sample
from ..experiments import TrialConfig
from ..models import build_model


def run(members: int = 10, ddim_steps: int = 20, T: int | None = None, arch: str = "ensemdiff") -> dict:
    cfg = TrialConfig.from_dict({k: v for k, v in BUDGETS["smoke"].items() if k.startswith(("model.", "data.",
                                 "diffusion."))})
    T = T or cfg.diffusion.T
    res = cfg.data.resolution
    model = build_model(dataclasses.replace(cfg.model, architecture=arch), 1, 3, res, T).eval()
    sched = make_schedule("linear", T)
    cond = torch.randn(1, 3, res, res)

    def fn(x, t, c):
        return model(x, t, c)

    with torch.inference_mode():
        t0 = time.perf_counter()
        sample(fn, sched, (1, 1, res, res), cond=cond, steps=ddim_steps, ensemble=members,
               generator=torch.Generator().manual_seed(0))
        batched = time.perf_counter() - t0
        t0 = time.perf_counter()
        for m in range(members):
            sample(fn, sched, (1, 1, res, res), cond=cond, steps=T, eta=1.0, ensemble=1,
                   generator=torch.Generator().manual_seed(m))
        naive = time.perf_counter() - t0
    return {"members": members, "ddim_steps": ddim_steps, "T": T, "resolution": res, "architecture": arch,
            "naive_s": naive, "batched_s": batched, "speedup": naive / batched}


def table(r: dict) -> str:
    return "\n".join([
        f"sampling benchmark ({r['architecture']}, smoke size, {r['resolution']} px, N = {r['members']} members)",
        f"  naive loop, full {r['T']}-step DDPM, one member at a time: {r['naive_s']:9.2f} s",
        f"  batched ensemble, DDIM-{r['ddim_steps']}:                   {r['batched_s']:9.2f} s",
        f"  speedup: {r['speedup']:.1f}x",
    ])
