"""Data benchmark: cold MoNuSeg training-cache builds at 64 and 128 px, warm load, training-loader throughput."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from ..data import AugmentConfig, BatchSampler, PrepConfig, load_dataset
from ..data.registry import data_dir


def _monuseg_train_root() -> Path:
    """The MoNuSeg training part alone as the dataset root, so the cold build covers exactly that part."""
    src = data_dir() / "monuseg" / "MoNuSegTrainingData"
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: MoNuSeg training data not found")
    return src


def run(batch_size: int = 32, loader_batches: int = 200) -> dict:
    out: dict = {"cold_build_s": {}, "samples": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root = _monuseg_train_root()
        for res in (64, 128):
            cache = tmp / f"cache{res}"
            t0 = time.perf_counter()
            ds = load_dataset("monuseg", PrepConfig(res), data_root=root, cache_dir=cache)
            out["cold_build_s"][str(res)] = time.perf_counter() - t0
            out["samples"][str(res)] = len(ds)
        t0 = time.perf_counter()
        ds = load_dataset("monuseg", PrepConfig(64), data_root=root, cache_dir=tmp / "cache64")
        out["warm_load_s"] = time.perf_counter() - t0
        idx = ds.splits()["train"]
        for name, aug in (("loader_samples_per_s", AugmentConfig()),
                          ("loader_samples_per_s_augmented", AugmentConfig(enabled=True))):
            sampler = BatchSampler(ds, idx, batch_size, seed=0, augment_cfg=aug)
            sampler.next()
            t0 = time.perf_counter()
            for _ in range(loader_batches):
                sampler.next()
            out[name] = loader_batches * batch_size / (time.perf_counter() - t0)
    out["batch_size"] = batch_size
    return out


def table(r: dict) -> str:
    lines = ["data benchmark (MoNuSeg training part, 30 tiles of 1000x1000 cut into 253 px patches)"]
    for res, s in r["cold_build_s"].items():
        lines.append(f"  cold cache build at {res}x{res}: {s:8.2f} s  ({r['samples'][res]} patches)")
    lines.append(f"  warm load (cached, memory-mapped): {r['warm_load_s'] * 1000:8.1f} ms")
    lines.append(f"  training loader, batch {r['batch_size']}: {r['loader_samples_per_s']:10.0f} samples/s")
    lines.append(f"  training loader, augmented:  {r['loader_samples_per_s_augmented']:10.0f} samples/s")
    return "\n".join(lines)
