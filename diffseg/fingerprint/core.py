"""Dataset fingerprint: mask statistics, the training-free mask-error curve for a schedule, the trained E3 curve
when available (and its agreement), and derived settings. Written as versioned ``fingerprint.json``.

A fingerprint sets training settings (weighting, timestep density, final noise level), so it is computed from
the training and validation masks only, never the test split; the file records the split it used. Its identity
is the dataset content hash, the preprocessing (resolution, resize filters), the schedule (name, T, parameters)
and the split; ``fingerprint_path`` owns where it lives and ``load_or_compute`` the rule "read it when it
exists, else compute and write it" (the study plan, the CLI and the report all go through these two).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data import PrepConfig, load_dataset
from ..diffusion import Schedule, make_schedule, make_weighting
from ..experiments import build
from ..files import atomic_write_text, digest, safe_name
from .derive import LOST, RECOVERED, crossing_t, derive, first_at_least
from .information import mask_error_curve, pooled_snr_for_error, pooling_area_histogram, prior_error
from .stats import mask_statistics

SCHEMA = "diffseg.fingerprint/2"
FILE_NAME = "fingerprint.json"
ESTIMATOR = ("label-conditional MMSE of the binary-input Gaussian channel y = sqrt(A SNR(t)) x0 + z, A = same-label "
             "disc around each pixel clipped to the image; mean over pixels / prior error 4 pi (1 - pi)")


@dataclass(frozen=True)
class SplitSpec:
    """Which masks a fingerprint may see: train + val of the case-level split (the test split never)."""

    split_seed: int = 0
    val_fraction: float = 0.2
    test_fraction: float = 0.2


@dataclass(frozen=True)
class FingerprintSpec:
    """Everything that decides a fingerprint's content (with the dataset hash, resolved at load time)."""

    dataset: str
    prep: PrepConfig = field(default_factory=PrepConfig)
    schedule: str = "linear"
    T: int = 1000
    schedule_params: dict[str, Any] = field(default_factory=dict)  # terminal modifiers excluded by callers
    split: SplitSpec = field(default_factory=SplitSpec)

    def identity(self, dataset_hash: str) -> dict[str, Any]:
        return {"schema": SCHEMA, "dataset_hash": dataset_hash, "prep": asdict(self.prep), "schedule": self.schedule,
                "T": self.T, "params": self.schedule_params, "split": asdict(self.split)}


def spec_for_trial(cfg) -> FingerprintSpec:
    """The fingerprint a trial config (``TrialConfig``) trains against: its dataset, preprocessing, split and
    base schedule (without terminal modifiers: the fingerprint is what recommends a final noise level)."""
    d, dc = cfg.data, cfg.diffusion
    split = SplitSpec(d.split_seed, d.val_fraction, d.test_fraction)
    return FingerprintSpec(d.dataset, build.prep(cfg), dc.schedule, dc.T, build.schedule_params(cfg, base=True),
                           split)


def largest_area(areas: np.ndarray, counts: np.ndarray, q: float = 0.999) -> float:
    """The q-quantile of the pooling area over all pixels."""
    c = counts.sum(0)
    cum = np.cumsum(c) / c.sum()
    return float(areas[min(np.searchsorted(cum, q), len(cum) - 1)])


def fingerprint_masks(masks: np.ndarray, schedule: Schedule) -> dict[str, Any]:
    """The part of a fingerprint that needs only masks (N, H, W) and a schedule."""
    prior = float(masks.astype(bool).mean())
    areas, counts = pooling_area_histogram(masks)
    parts = mask_error_curve(areas, counts, schedule.log_snr.numpy(), prior)
    curve = parts["error"]
    return {
        "mask_stats": mask_statistics(masks),
        "training_free": {
            "t": list(range(schedule.T)), "error": curve.tolist(),
            "foreground": parts["foreground"].tolist(), "background": parts["background"].tolist(),
            "t_half": first_at_least(curve, 0.5), "prior_fg": prior, "estimator": ESTIMATOR,
        },
        "derived": derive(curve, float(schedule.log_snr[-1]), pooled_snr_for_error(prior, LOST),
                          largest_area(areas, counts)),
    }


def trained_agreement(training_free: list[float], t: list[int], error: list[float], prior: float) -> dict:
    """Agreement of the trained E3 curve (x0-MSE at steps ``t``, normalised by 4 pi (1 - pi)) with the training-free
    curve: the t where each crosses 0.05, 0.5 and 0.95 (linear interpolation between the trained points; None =
    not reached by t = T), their absolute differences, and the mean absolute difference of the two normalised
    curves at the trained steps. No correlation: two curves that both rise with t always correlate."""
    tt = np.asarray(t, dtype=int)
    norm = np.asarray(error, dtype=np.float64) / prior_error(prior)
    tf = np.asarray(training_free, dtype=np.float64)
    out: dict[str, Any] = {"t": tt.tolist(), "error": list(map(float, error)), "normalised": norm.tolist(),
                           "mean_abs_diff": float(np.mean(np.abs(tf[tt] - norm))) if len(tt) else None}
    for name, level in (("t_005", RECOVERED), ("t_half", 0.5), ("t_095", LOST)):
        a, b = crossing_t(np.arange(len(tf)), tf, level), crossing_t(tt, norm, level)
        out[name] = {"training_free": a, "trained": b,
                     "abs_diff": None if a is None or b is None else abs(a - b)}
    return out


def compute_fingerprint(spec: FingerprintSpec, data_root=None, cache_dir=None,
                        trained: dict | None = None) -> dict[str, Any]:
    """Fingerprint of the train + val masks of a dataset (registry name, ``masks:PATH`` or ``folder:PATH``).
    ``trained``: {"t": [...], "error": [...], "source": "..."} from an E3 study, merged with its agreement."""
    return _compute(spec, load_dataset(spec.dataset, spec.prep, data_root, cache_dir), trained)


def seen_indices(splits: dict[str, np.ndarray]) -> np.ndarray:
    """The samples a fingerprint sees: train + val of a dataset's split, sorted (the test split never)."""
    return np.sort(np.concatenate([splits["train"], splits["val"]]))


def _compute(spec: FingerprintSpec, ds, trained: dict | None) -> dict[str, Any]:
    sp = spec.split
    splits = ds.splits(sp.split_seed, sp.val_fraction, sp.test_fraction)
    idx = seen_indices(splits)
    if idx.size == 0:
        raise ValueError(f"dataset {spec.dataset!r}: no training or validation masks to fingerprint")
    sched = make_schedule(spec.schedule, spec.T, **spec.schedule_params)
    fp = {"schema": SCHEMA, "dataset": spec.dataset, "dataset_hash": ds.dataset_hash,
          "resolution": spec.prep.resolution, "prep": asdict(spec.prep), "schedule": sched.describe(),
          "split": {"used": "train+val", **asdict(sp), "samples": int(idx.size),
                    "cases": len({ds.case_ids[i] for i in idx}), "excluded_test_samples": len(splits["test"])},
          **fingerprint_masks(np.asarray(ds.masks)[idx], sched), "trained": None}
    if trained:
        fp["trained"] = {"source": trained.get("source"),
                         **trained_agreement(fp["training_free"]["error"], trained["t"], trained["error"],
                                             fp["training_free"]["prior_fg"])}
    return fp


def fingerprint_path(root: Path, spec: FingerprintSpec, dataset_hash: str) -> Path:
    """``<root>/<dataset>-<identity digest>/fingerprint.json``: the one place a fingerprint lives."""
    return Path(root) / f"{safe_name(spec.dataset)}-{digest(spec.identity(dataset_hash))[:16]}" / FILE_NAME


_UNWRITTEN: dict[Path, dict[str, Any]] = {}


def load_or_compute(root: Path, spec: FingerprintSpec, data_root=None, cache_dir=None, *,
                    write: bool = True) -> tuple[dict[str, Any], Path]:
    """Read the fingerprint of ``spec`` under ``root`` if it exists, else compute it (and write it unless
    ``write`` is False: a dry run, or a study's checks before anything is written; the dataset cache is then
    not written either). Returns (fingerprint, path)."""
    ds = load_dataset(spec.dataset, spec.prep, data_root, cache_dir, write=write)
    path = fingerprint_path(root, spec, ds.dataset_hash)
    if path.exists():
        return load_fingerprint(path), path
    fp = _UNWRITTEN.pop(path, None) or _compute(spec, ds, None)
    if write:
        save_fingerprint(fp, path)
    else:
        _UNWRITTEN[path] = fp  # a later write=True call in this process writes it without recomputing
    return fp, path


def save_fingerprint(fp: dict[str, Any], path: Path) -> Path:
    atomic_write_text(Path(path), json.dumps(fp, indent=1))
    return Path(path)


def load_fingerprint(path: Path) -> dict[str, Any]:
    try:
        fp = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable fingerprint JSON ({exc})") from None
    if fp.get("schema") != SCHEMA:
        raise ValueError(f"{path}: fingerprint schema {fp.get('schema')!r} is not {SCHEMA!r}; files of older "
                         "versions used another estimator (and may include test masks): delete the file and "
                         "recompute it (studies/fingerprint.py or the study that made it)")
    return fp


def rederive(fp: dict[str, Any]) -> dict:
    """The derived settings recomputed from the stored curve (equal to ``fp['derived']``)."""
    tf, d = fp["training_free"], fp["derived"]
    snr_star = float(np.exp(d["recommended_logsnr_end"] + np.log(d["largest_pooling_area_px"])))
    return derive(tf["error"], d["logsnr_T"], snr_star, d["largest_pooling_area_px"])


def fingerprint_weighting(fp: dict[str, Any]):
    """The derivative-based weighting as a registered ``curve`` weighting."""
    return make_weighting("curve", values=fp["derived"]["weighting"])
