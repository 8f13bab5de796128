"""Fingerprint benchmark: the training-free information-loss curve of 1,000 masks of 256 x 256 over all 1,000
steps of the linear schedule (target: under 10 s on the 2-core machine). Mask generation is not timed."""

from __future__ import annotations

import time

import numpy as np

from ..data.synthetic import generate
from ..diffusion import make_schedule
from ..fingerprint import fingerprint_masks


def run(n: int = 1000, size: int = 256, T: int = 1000) -> dict:
    _, base = generate("nuclei", 50, size, seed=0)
    masks = np.concatenate([np.roll(base, k, axis=2) for k in range(n // len(base) + 1)])[:n]
    sched = make_schedule("linear", T)
    t0 = time.perf_counter()
    fp = fingerprint_masks(masks, sched)
    total = time.perf_counter() - t0
    return {"masks": n, "size": size, "T": T, "seconds": total, "target_s": 10.0,
            "within_target": total < 10.0, "t_half": fp["training_free"]["t_half"]}


def table(r: dict) -> str:
    return (f"fingerprint benchmark: {r['masks']} masks of {r['size']}x{r['size']} over {r['T']} steps "
            f"(statistics + training-free curve + derived settings): {r['seconds']:.2f} s "
            f"(target < {r['target_s']:.0f} s: {'met' if r['within_target'] else 'MISSED'})")
