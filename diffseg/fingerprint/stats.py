"""Mask statistics of a dataset at the study resolution, in the spirit of nnU-Net's dataset fingerprint."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy import ndimage

from ..data.check import EIGHT_CONNECTED

SPARSE_FG = 0.05  # mean foreground fraction below which a dataset is reported as sparse


def _q(a: np.ndarray) -> dict[str, float]:
    if a.size == 0:
        return {}
    p = np.percentile(a, [0, 5, 25, 50, 75, 95, 100])
    return {"min": float(p[0]), "p05": float(p[1]), "p25": float(p[2]), "median": float(p[3]), "p75": float(p[4]),
            "p95": float(p[5]), "max": float(p[6]), "mean": float(a.mean())}


def boundary_map(masks: np.ndarray) -> np.ndarray:
    """Pixels with a 4-neighbour of the other label, (N, H, W) bool."""
    b = np.zeros_like(masks, dtype=bool)
    dv = masks[:, :-1, :] != masks[:, 1:, :]
    dh = masks[:, :, :-1] != masks[:, :, 1:]
    b[:, :-1, :] |= dv
    b[:, 1:, :] |= dv
    b[:, :, :-1] |= dh
    b[:, :, 1:] |= dh
    return b


def mask_statistics(masks: np.ndarray) -> dict:
    """Cases, size, foreground fraction, empty fraction, objects per mask (8-connected), object areas (px),
    centroid spread (std of object centroids in units of the image side), boundary-pixel fraction of the
    foreground, and a sparsity flag (mean foreground fraction < 5%)."""
    m = masks.astype(bool)
    n, h, w = m.shape
    fg = m.reshape(n, -1).mean(1)
    yy, xx = np.indices((h, w))

    def objects_of(mask):
        lab, k = ndimage.label(mask, structure=EIGHT_CONNECTED)
        flat = lab.ravel()
        area = np.bincount(flat, minlength=k + 1)[1:]
        edge = int((boundary_map(mask[None])[0] & mask).sum())
        return (k, edge, area, np.bincount(flat, weights=yy.ravel(), minlength=k + 1)[1:] / np.maximum(area, 1) / h,
                np.bincount(flat, weights=xx.ravel(), minlength=k + 1)[1:] / np.maximum(area, 1) / w)

    with ThreadPoolExecutor() as pool:
        per_mask = list(pool.map(objects_of, m))
    objects = [p[0] for p in per_mask]
    boundary_px = sum(p[1] for p in per_mask)
    areas, cy, cx = ([p[i] for p in per_mask if p[0]] for i in (2, 3, 4))
    areas_a = np.concatenate(areas) if areas else np.zeros(0)
    fg_total = m.sum()
    return {
        "cases": int(n), "size": [int(h), int(w)],
        "foreground_fraction": _q(fg), "empty_fraction": float((fg == 0).mean()),
        "objects_per_mask": _q(np.asarray(objects, dtype=float)),
        "object_area_px": _q(areas_a),
        "centroid_spread": ({"y": float(np.std(np.concatenate(cy))), "x": float(np.std(np.concatenate(cx)))}
                            if cy else {}),
        "boundary_fraction": float(boundary_px / fg_total) if fg_total else 0.0,
        "sparse": bool(fg.mean() < SPARSE_FG),
    }
