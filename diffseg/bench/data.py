"""Data benchmark: cold training-cache builds (file hashing, decode, resize, write; a fresh cache folder each) of
ISIC 2017 (2,000 images), Kvasir-SEG (998) and the MoNuSeg training part (30 tiles cut into patches) at 48, 128
and 256 px, the cache's size on disk, its warm load, and the training loader's throughput (plain and augmented)
against the training step it feeds. Target (issue 24): ISIC 2017 at 128 px built in under 30 s.
``python -m diffseg.bench data [--json]``."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from ..data import AugmentConfig, BatchSampler, PrepConfig, load_dataset
from ..data.registry import data_dir

SETS = {"isic2017": None, "kvasir_seg": None, "monuseg": "monuseg/MoNuSegTrainingData"}  # name -> root (None: its own)
RESOLUTIONS = (48, 128, 256)
TARGET = {"dataset": "isic2017", "resolution": 128, "cold_build_s": 30.0}


def _root(sub: str | None) -> Path | None:
    if sub is None:
        return None
    src = data_dir() / sub
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: not found")
    return src


def _size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def _loader_rate(ds, batch_size: int, batches: int, augment: bool) -> float:
    sampler = BatchSampler(ds, ds.splits()["train"], batch_size, seed=0, augment_cfg=AugmentConfig(enabled=augment))
    sampler.next()
    t0 = time.perf_counter()
    for _ in range(batches):
        sampler.next()
    return batches * batch_size / (time.perf_counter() - t0)


def run(sets=tuple(SETS), resolutions=RESOLUTIONS, batch_size: int = 8, loader_batches: int = 200) -> dict:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in sets:
            root = _root(SETS[name])
            for res in resolutions:
                cache = Path(tmp) / f"{name}-{res}"
                t0 = time.perf_counter()
                ds = load_dataset(name, PrepConfig(res), data_root=root, cache_dir=cache)
                cold = time.perf_counter() - t0
                t0 = time.perf_counter()
                ds = load_dataset(name, PrepConfig(res), data_root=root, cache_dir=cache)
                warm = time.perf_counter() - t0
                rows.append({"dataset": name, "resolution": res, "samples": len(ds), "cold_build_s": cold,
                             "warm_load_s": warm, "cache_mb": _size_mb(cache),
                             "loader_samples_per_s": _loader_rate(ds, batch_size, loader_batches, False),
                             "loader_samples_per_s_augmented": _loader_rate(ds, batch_size, loader_batches, True)})
    target = next((r for r in rows if r["dataset"] == TARGET["dataset"] and r["resolution"] == TARGET["resolution"]),
                  None)
    passed = target is None or target["cold_build_s"] < TARGET["cold_build_s"]
    return {"rows": rows, "batch_size": batch_size, "target": TARGET, "passed": passed}


def table(r: dict) -> str:
    t = r["target"]
    lines = [f"data benchmark (cold cache build = hash + decode + resize + write, fresh cache; loader batch "
             f"{r['batch_size']}); target: {t['dataset']} at {t['resolution']} px under {t['cold_build_s']:.0f} s "
             f"({'met' if r['passed'] else 'MISSED'})",
             f"  {'dataset':12s} {'px':>4s} {'samples':>7s} {'cold s':>7s} {'warm ms':>8s} {'cache MB':>9s} "
             f"{'loader/s':>9s} {'augm./s':>8s}"]
    for x in r["rows"]:
        lines.append(f"  {x['dataset']:12s} {x['resolution']:4d} {x['samples']:7d} {x['cold_build_s']:7.2f} "
                     f"{x['warm_load_s'] * 1000:8.1f} {x['cache_mb']:9.1f} {x['loader_samples_per_s']:9.0f} "
                     f"{x['loader_samples_per_s_augmented']:8.0f}")
    return "\n".join(lines)
