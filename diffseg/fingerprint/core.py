"""Dataset fingerprint: mask statistics, the training-free information-loss curve for a schedule, the trained
E3 curve when available (and its agreement), and derived settings. Written as versioned ``fingerprint.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats as sstats

from ..data import PrepConfig, load_dataset
from ..data.cache import atomic_write_text
from ..diffusion import Schedule, make_schedule, make_weighting
from .derive import LOST, derive, first_at_least
from .information import info_loss_curve, pooled_snr_for_fraction, pooling_area_histogram
from .stats import mask_statistics

SCHEMA = "diffseg.fingerprint/1"


def largest_area(areas: np.ndarray, counts: np.ndarray, q: float = 0.999) -> float:
    order = np.argsort(areas)
    cum = np.cumsum(counts[order]) / counts.sum()
    return float(areas[order][min(np.searchsorted(cum, q), len(cum) - 1)])


def fingerprint_masks(masks: np.ndarray, schedule: Schedule) -> dict[str, Any]:
    """The part of a fingerprint that needs only masks (N, H, W) and a schedule."""
    prior = float(masks.astype(bool).mean())
    areas, counts = pooling_area_histogram(masks)
    curve = info_loss_curve(areas, counts, schedule.log_snr.numpy(), prior)
    a_max = largest_area(areas, counts)
    info = [float(x) for x in curve]
    return {
        "mask_stats": mask_statistics(masks),
        "training_free": {
            "t": list(range(schedule.T)), "info_loss": info, "t_half": first_at_least(curve, 0.5),
            "prior_fg": prior,
            "estimator": "local-disc pooling area x SNR(t) through a binary-input Gaussian channel; "
                         "1 - mean mutual information / H(prior)",
        },
        "derived": derive(info, float(schedule.log_snr[-1]), pooled_snr_for_fraction(prior, 1 - LOST), a_max),
    }


def trained_agreement(training_free: list[float], t: list[int], error: list[float], prior: float) -> dict:
    """Normalise the E3 x0-MSE by the prior's MSE 4 pi (1 - pi) and correlate it with the training-free curve."""
    err = np.asarray(error, dtype=np.float64)
    norm = err / (4 * prior * (1 - prior))
    tf = np.asarray(training_free)[np.asarray(t, dtype=int)]
    ok = len(t) >= 3 and np.std(tf) > 0 and np.std(norm) > 0
    return {
        "t": [int(x) for x in t], "error": err.tolist(), "normalised": norm.tolist(),
        "pearson": float(sstats.pearsonr(tf, norm)[0]) if ok else None,
        "spearman": float(sstats.spearmanr(tf, norm)[0]) if ok else None,
    }


def compute_fingerprint(dataset: str, schedule: str = "linear", T: int = 1000, resolution: int = 256,
                        schedule_params: dict | None = None, data_root=None, cache_dir=None,
                        trained: dict | None = None) -> dict[str, Any]:
    """Fingerprint of a registry dataset (or ``masks:PATH`` / ``folder:PATH``) at ``resolution``.
    ``trained``: {"t": [...], "error": [...], "source": "..."} from an E3 study, merged with its agreement."""
    ds = load_dataset(dataset, PrepConfig(resolution), data_root, cache_dir)
    sched = make_schedule(schedule, T, **(schedule_params or {}))
    fp = {"schema": SCHEMA, "dataset": dataset, "dataset_hash": ds.dataset_hash, "resolution": resolution,
          "schedule": sched.describe(), **fingerprint_masks(np.asarray(ds.masks), sched), "trained": None}
    if trained:
        fp["trained"] = {"source": trained.get("source"),
                         **trained_agreement(fp["training_free"]["info_loss"], trained["t"], trained["error"],
                                             fp["training_free"]["prior_fg"])}
    return fp


def save_fingerprint(fp: dict[str, Any], path: Path) -> Path:
    atomic_write_text(path, json.dumps(fp, indent=1))
    return path


def load_fingerprint(path: Path) -> dict[str, Any]:
    try:
        fp = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable fingerprint JSON ({exc})") from None
    if fp.get("schema") != SCHEMA:
        raise ValueError(f"{path}: schema {fp.get('schema')!r} is not {SCHEMA!r}")
    return fp


def rederive(fp: dict[str, Any]) -> dict:
    """The derived settings recomputed from the stored curve (equal to ``fp['derived']``)."""
    tf, d = fp["training_free"], fp["derived"]
    snr_star = float(np.exp(d["recommended_logsnr_end"] + np.log(d["largest_pooling_area_px"])))
    return derive(tf["info_loss"], d["logsnr_T"], snr_star, d["largest_pooling_area_px"])


def fingerprint_weighting(fp: dict[str, Any]):
    """The derivative-based weighting as a registered ``curve`` weighting."""
    return make_weighting("curve", values=fp["derived"]["weighting"])
