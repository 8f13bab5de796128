"""The export tables that need the datasets, computed once by the study's export so that the report reads
exports only: ``fingerprints`` (per dataset the training-free fingerprint of its train + val masks at the
settings of its E3 trials, else of its first trial; and, where E3 trials exist, that of exactly the test masks
their curves were measured on) and ``baselines`` (each training-free baseline of ``metrics.TRAINING_FREE`` on
exactly the test images the segmenting trials were evaluated on). A dataset that cannot be read now, or whose
hash differs from the one its trials recorded, is left out with a note."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from ..data import load_dataset, spread_subset
from ..experiments import build
from ..experiments.config import TrialConfig
from ..experiments.flat import unflatten
from ..experiments.kinds import MASK_ONLY, SEGMENTING
from ..experiments.result import FINISHED
from ..fingerprint import fingerprint_masks, load_or_compute, spec_for_trial
from ..folder import StudyFolder

TRAIN_VAL, TEST = "train+val", "test"  # the masks a fingerprint row was computed from (``masks_from``)


def trial_config(row: pd.Series, config_curves: pd.DataFrame | None = None) -> TrialConfig:
    """The TrialConfig of an exported trial row, rebuilt from its ``cfg.*`` columns and its long curves."""
    curves = {}
    if config_curves is not None and len(config_curves):
        own = config_curves[config_curves.trial_id == row["trial_id"]].sort_values("index")
        curves = {k: g.value.tolist() for k, g in own.groupby("key")}
    flat = {k[4:]: (None if pd.api.types.is_scalar(v) and pd.isna(v) else v)
            for k, v in row.items() if k.startswith("cfg.")}
    return TrialConfig.from_dict(unflatten(flat, curves))


def eval_subset(cfg: TrialConfig, folder: StudyFolder, limit: int | None):
    """(dataset, indices) of the test samples an evaluation capped at ``limit`` used (``data.spread_subset``, as
    the trial chose them)."""
    data = load_dataset(cfg.data.dataset, build.prep(cfg), cfg.data.data_root, folder.cache)
    idx = data.splits(cfg.data.split_seed, cfg.data.val_fraction, cfg.data.test_fraction)["test"]
    return data, spread_subset(idx, data.case_ids, limit, cfg.data.split_seed)


def _row(ds: str, masks_from: str, cfg: TrialConfig, fp: dict, n: int, dataset_hash: str) -> dict:
    tf = fp["training_free"]
    return {"dataset": ds, "masks_from": masks_from, "dataset_hash": dataset_hash, "resolution": cfg.data.resolution,
            "schedule": cfg.diffusion.schedule, "T": cfg.diffusion.T, "masks": n, "prior_fg": tf["prior_fg"],
            "t_half": tf["t_half"], "fingerprint": json.dumps(fp)}


def dataset_tables(trials: pd.DataFrame, config_curves: pd.DataFrame, folder: StudyFolder,
                   hashes: dict[str, str]) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(fingerprints rows, baselines rows, notes) for the datasets of the finished trials."""
    from ..metrics import TRAINING_FREE

    ok = trials[trials.status.isin(FINISHED)] if len(trials) else trials
    fps, bases, notes = [], [], []
    for ds in sorted(ok.dataset.dropna().unique()) if len(ok) else []:
        rows = ok[ok.dataset == ds].sort_values("experiment", key=lambda s: s != MASK_ONLY)
        cfg = trial_config(rows.iloc[0], config_curves)
        try:
            fp, _ = load_or_compute(folder.fingerprints, spec_for_trial(cfg), cfg.data.data_root, folder.cache)
        except (OSError, ValueError) as exc:
            notes.append(f"no training-free fingerprint for {ds}: {exc}")
            continue
        if fp["dataset_hash"] != hashes.get(ds):
            notes.append(f"{ds}: the data found now differs from the data the study used; no fingerprint or "
                         "baseline exported")
            continue
        fps.append(_row(ds, TRAIN_VAL, cfg, fp, fp["split"]["samples"], fp["dataset_hash"]))
        if (rows.experiment == MASK_ONLY).any():  # the test masks E3's curve was measured on (evaluation only)
            data, idx = eval_subset(cfg, folder, cfg.eval.curve_max_images)
            test = fingerprint_masks(np.asarray(data.masks)[idx], build.schedule(cfg, base=True))
            fps.append(_row(ds, TEST, cfg, test, len(idx), fp["dataset_hash"]))
        seg = rows[rows.experiment.isin(SEGMENTING)]
        if len(seg):
            scfg = trial_config(seg.iloc[0], config_curves)
            data, idx = eval_subset(scfg, folder, scfg.eval.test_max_images)
            images, masks, cases = data.images[idx], data.masks[idx], len(set(np.asarray(data.case_ids)[idx]))
            bases += [{"dataset": ds, "method": method, "test_images": len(idx), "test_cases": cases,
                       "iou": float(np.mean(iou_of(images, masks)))} for method, iou_of in TRAINING_FREE.items()]
    return pd.DataFrame(fps), pd.DataFrame(bases), notes
