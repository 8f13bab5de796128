"""Where a CPU training step can go faster, each measured alone and side by side in one run (issue 24, part 2):

- ``channels_last`` memory format (model and batch) against the default layout;
- bf16 autocast (oneDNN's bf16 kernels where the CPU has AVX512-BF16 or AMX, ``budgets.native_bf16``);
- ``torch.compile`` (inductor, CPU backend): the compile time (first step minus an eager step), the steady
  steps/s, and the step from which it pays (compile time / time saved per step);
- intra-op threads against concurrent trials: one training loop at 2 threads against two loops at 1 thread each
  running at once (separate processes), as steps per second of the machine, i.e. trials per hour;
- the data loader's share of a step: ``BatchSampler.next`` (plain and augmented) on ISIC 2017 against the step.

Architectures at the smoke and small budgets' widths and resolutions (``torch.compile`` at the smoke size only:
it compiles for about 85 s per architecture and did not pay there). ``python -m diffseg.bench speedups [--json]``.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time

import torch

from ..budgets import native_bf16
from ..data import AugmentConfig, BatchSampler, PrepConfig, load_dataset
from ..models import ARCHITECTURES
from .models import _timed, _trial_cfg, step_parts

SIZES = ("smoke", "small")
SMOKE = SIZES[0]  # the size torch.compile, the concurrency and the loader share are measured at


def _step(p, channels_last: bool = False, bf16: bool = False):
    images, masks = p.images, p.masks
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
        masks = masks.contiguous(memory_format=torch.channels_last)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = p.mode.train_step(p.model, p.ctx, images, masks, p.g).loss.mean()
        p.opt.zero_grad(set_to_none=True)
        loss.backward()
        p.opt.step()
        p.ema.update_parameters(p.model)
    return step


def layouts_and_compile(arch: str, compile_model: bool = True, size: str = SMOKE) -> dict:
    cfg = _trial_cfg(size, arch)
    out = {"eager_step_s": _timed(_step(step_parts(cfg)))}
    p = step_parts(cfg)
    p.model.to(memory_format=torch.channels_last)
    out["channels_last_step_s"] = _timed(_step(p, channels_last=True))
    out["bf16_step_s"] = _timed(_step(step_parts(cfg), bf16=True))
    if compile_model:
        p = step_parts(cfg)
        p.model = torch.compile(p.model)
        step = _step(p)
        t0 = time.perf_counter()
        step()
        first = time.perf_counter() - t0
        out["compiled_step_s"] = _timed(step)
        out["compile_s"] = max(0.0, first - out["eager_step_s"])
        saved = out["eager_step_s"] - out["compiled_step_s"]
        out["compile_pays_from_step"] = int(out["compile_s"] / saved) + 1 if saved > 0 else None
    return out


def _loop(arch: str, threads: int, seconds: float, queue) -> None:
    torch.set_num_threads(threads)
    step = _step(step_parts(_trial_cfg(SMOKE, arch)))
    step()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        n += 1
    queue.put(n / (time.perf_counter() - t0))


def threads_vs_concurrency(arch: str, seconds: float = 10.0) -> dict:
    """Machine throughput (training steps/s summed over loops): 1 loop x 2 threads against 2 loops x 1 thread."""
    ctx = mp.get_context("spawn")
    out = {}
    for loops, threads in ((1, 2), (2, 1)):
        q = ctx.Queue()
        procs = [ctx.Process(target=_loop, args=(arch, threads, seconds, q)) for _ in range(loops)]
        for pr in procs:
            pr.start()
        rates = [q.get(timeout=600) for _ in procs]
        for pr in procs:
            pr.join()
        out[f"{loops}x{threads}_steps_per_s"] = sum(rates)
    out["concurrent_gain"] = out["2x1_steps_per_s"] / out["1x2_steps_per_s"]
    return out


def loader_share(arch: str = "ensemdiff", dataset: str = "isic2017", batches: int = 50) -> dict:
    cfg = _trial_cfg(SMOKE, arch)
    ds = load_dataset(dataset, PrepConfig(cfg.data.resolution))
    step_s = _timed(_step(step_parts(cfg)))
    out = {"dataset": dataset, "step_s": step_s}
    for name, aug in (("plain", AugmentConfig()), ("augmented", AugmentConfig(enabled=True))):
        sampler = BatchSampler(ds, ds.splits()["train"], cfg.train.batch_size, seed=0, augment_cfg=aug)
        sampler.next()
        t0 = time.perf_counter()
        for _ in range(batches):
            sampler.next()
        per = (time.perf_counter() - t0) / batches
        out[f"{name}_batch_s"], out[f"{name}_share"] = per, per / (per + step_s)
    return out


def run(archs=ARCHITECTURES, compile_model: bool = True, seconds: float = 10.0) -> dict:
    load = os.getloadavg()[0]
    threads = torch.get_num_threads()
    sizes = {size: {a: layouts_and_compile(a, compile_model and size == SMOKE, size) for a in archs}
             for size in SIZES}
    torch.set_num_threads(threads)
    return {"threads": threads, "load_before": load, "native_bf16": native_bf16(), "sizes": sizes,
            "concurrency": threads_vs_concurrency("ensemdiff", seconds), "loader": loader_share()}


def table(r: dict) -> str:
    lines = [f"CPU speed-ups at {r['threads']} thread(s), each alone against eager fp32 "
             f"(bf16 {'native' if r['native_bf16'] else 'emulated'} on this CPU)"]
    if r["load_before"] > 0.5:
        lines.append(f"  warning: load average {r['load_before']:.1f} before the run: the figures are skewed")
    for size, archs in r["sizes"].items():
        lines.append(f"  {size + ' budget':14s} {'eager ms':>9s} {'ch.last x':>9s} {'bf16 x':>7s} {'compiled x':>10s} "
                     f"{'compile s':>9s} {'pays from step':>14s}")
        for a, x in archs.items():
            comp, eager = x.get("compiled_step_s"), x["eager_step_s"]
            lines.append(f"  {a:14s} {1000 * eager:9.1f} {eager / x['channels_last_step_s']:9.2f} "
                         f"{eager / x['bf16_step_s']:7.2f} "
                         + (f"{eager / comp:10.2f} {x['compile_s']:9.1f} "
                            f"{x['compile_pays_from_step'] or 'never':>14}" if comp else f"{'-':>10s}"))
    c = r["concurrency"]
    lines.append(f"  ensemdiff steps/s of the machine: 1 trial x 2 threads {c['1x2_steps_per_s']:.2f}, 2 trials x 1 "
                 f"thread {c['2x1_steps_per_s']:.2f} (x{c['concurrent_gain']:.2f})")
    ld = r["loader"]
    lines.append(f"  loader on {ld['dataset']}: {1000 * ld['plain_batch_s']:.1f} ms plain "
                 f"({100 * ld['plain_share']:.1f} % of a step), {1000 * ld['augmented_batch_s']:.1f} ms augmented "
                 f"({100 * ld['augmented_share']:.1f} %); step {1000 * ld['step_s']:.0f} ms")
    return "\n".join(lines)
