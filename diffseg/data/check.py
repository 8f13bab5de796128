"""Dataset integrity check and summary (in the spirit of nnU-Net's --verify_dataset_integrity).

Reads every case at full resolution through the same path the cache build uses, and summarises: cases per
official split, image sizes, mask encoding, foreground fraction and objects (8-connected components) per mask.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from scipy import ndimage

from .errors import DatasetError
from .io import ReadError
from .prepare import PrepConfig, load_case, load_dataset, scan_cases
from .registry import get_spec

EIGHT_CONNECTED = np.ones((3, 3), bool)


def _stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    a = np.asarray(values, dtype=float)
    return {"min": float(a.min()), "median": float(np.median(a)), "mean": float(a.mean()), "max": float(a.max())}


def mask_stats(mask: np.ndarray) -> tuple[float, int]:
    return float(mask.mean()), int(ndimage.label(mask, structure=EIGHT_CONNECTED)[1])


def check_dataset(name: str, data_root=None, resolution: int = 64) -> dict[str, Any]:
    """Summary dict; raises DatasetError listing every problem found in one pass (layout problems such as a
    missing mask and unreadable files of the cases that do pair up)."""
    spec = get_spec(name, data_root)
    if spec.layout == "synthetic":
        ds = load_dataset(name, PrepConfig(resolution))
        fg, objs = zip(*(mask_stats(m.astype(bool)) for m in ds.masks), strict=True)
        return {"dataset": name, "layout": "synthetic", "cases": len(ds), "splits": {"none": len(ds)},
                "image_sizes": {f"{resolution}x{resolution}": len(ds)}, "mask_encoding": "generated",
                "foreground_fraction": _stats(list(fg)), "objects_per_mask": _stats(list(objs)),
                "empty_masks": int(sum(f == 0 for f in fg)), "dataset_hash": ds.dataset_hash}
    cases, layout_problems = scan_cases(spec)

    def work(case):
        try:
            image, mask = load_case(case, spec)
        except ReadError as exc:
            return None, str(exc)
        size = mask.shape if image is None else image.shape[:2]
        return (case, f"{size[1]}x{size[0]}", *mask_stats(mask)), None

    with ThreadPoolExecutor() as pool:
        results = list(pool.map(work, cases))
    problems = layout_problems + [err for _, err in results if err]
    if problems:
        raise DatasetError(problems, name)
    rows = [r for r, _ in results]
    splits, sizes = {}, {}
    for case, size, _, _ in rows:
        key = case.split or "none"
        splits[key] = splits.get(key, 0) + 1
        sizes[size] = sizes.get(size, 0) + 1
    fg = [r[2] for r in rows]
    return {
        "dataset": name, "layout": spec.layout, "root": str(spec.root), "cases": len(rows), "splits": splits,
        "image_sizes": sizes,
        "mask_encoding": spec.mask_encoding if any(c.mask for c in cases) else "xml polygons",
        "annotations": {"png": sum(c.mask is not None for c in cases), "xml": sum(c.xml is not None for c in cases)},
        "foreground_fraction": _stats(fg), "objects_per_mask": _stats([r[3] for r in rows]),
        "empty_masks": int(sum(f == 0 for f in fg)),
    }
