"""Parquet exports of a study (``<out>/exports/<study>/``), re-creatable from MLflow alone.

Files (schemas in the README): ``trials.parquet`` (one row per trial), ``history.parquet`` (validation over
steps), ``curves.parquet`` (per-t analysis curves), ``images.parquet`` (per-image test metrics),
``reliability.parquet`` (pooled reliability-diagram bins), ``conditioning.parquet`` (the paper's Fig. 3 left:
each E2 trial's mask error over t beside that of its matching E3 trial, or of the same model with the null image
when it was trained with condition dropout), ``comparisons.parquet`` (each arm against the study's baseline arm:
paired difference of per-image test IoU and ECE with a 95 % bootstrap interval and a Holm-corrected p-value,
``diffseg.metrics.paired``) and ``study.json`` (study-level facts).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pandas as pd
from mlflow.tracking import MlflowClient

from ..experiments.evaluate import PER_IMAGE
from ..experiments.flat import JSON, SCHEMA, flat_config
from ..experiments.kinds import MASK_ONLY, SEGMENTATION
from ..experiments.result import ERROR, EXPORT_TABLES, FINISHED, MASK_ERROR, RESULT_ARTIFACT, STUDY_META, TrialResult
from ..io import atomic_path, atomic_write_text
from ..metrics.paired import COLUMNS as PAIRED_COLUMNS
from ..metrics.paired import TYPES as PAIRED_TYPES
from ..metrics.paired import compare_arms
from .tracking import own_store

_TIMESTAMP = "timestamp"  # UTC
# the trials table's own columns, in order, with their types; then the test metrics and timings (float64) and the
# config columns (CONFIG_COLUMNS)
TRIAL_COLUMNS = {
    **dict.fromkeys(["study", "parent_run_id", "run_id", "trial_id", "trial_name", "arm", "dataset", "dataset_hash"],
                    "string"),
    "seed": "Int64", "experiment": "string", "architecture": "string", "budget": "string", "status": "string",
    "mlflow_status": "string", "start_time": _TIMESTAMP, "end_time": _TIMESTAMP, "wall_time_s": "float64",
    "train_time_s": "float64", "eval_time_s": "float64", "step": "Int64", "best_step": "Int64", "best_val": "float64",
    "selection_metric": "string", "selection": "string", "n_params": "Int64", "git_commit": "string",
    "hardware": "string", "threads": "Int64"}


def _all_runs(client: MlflowClient, exp_id: str, filter_string: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs([exp_id], filter_string=filter_string, max_results=500, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def find_parent(client: MlflowClient, study: str, parent_run_id: str | None = None):
    exp = client.get_experiment_by_name(study)
    if exp is None:
        raise ValueError(f"no MLflow experiment named {study!r} in this tracking store")
    if parent_run_id:
        return exp.experiment_id, client.get_run(parent_run_id)
    parents = client.search_runs([exp.experiment_id], filter_string="tags.`diffseg.role` = 'study'",
                                 order_by=["attributes.start_time DESC"], max_results=1)
    if not parents:
        raise ValueError(f"experiment {study!r} has no study parent run")
    return exp.experiment_id, parents[0]


def _result(client: MlflowClient, run_id: str) -> TrialResult | None:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, RESULT_ARTIFACT, tmp)
        except Exception:
            return None
        return TrialResult.from_dict(json.loads(Path(path).read_text()))


CONFIG_COLUMNS = {f"cfg.{k}": ("string" if t == JSON else t) for k, t in SCHEMA.items()}


def _trials_frame(trials: list[dict]) -> pd.DataFrame:
    """One type per column whatever the study: from ``TRIAL_COLUMNS``, the config dataclasses
    (``CONFIG_COLUMNS``), float64 for metrics and timings; an all-missing column keeps its type."""
    df = pd.DataFrame(trials)
    extra = sorted(c for c in df.columns if c not in TRIAL_COLUMNS and c not in CONFIG_COLUMNS)
    df = df.reindex(columns=[*TRIAL_COLUMNS, *extra, *CONFIG_COLUMNS])
    for col in df.columns:
        dtype = TRIAL_COLUMNS.get(col) or CONFIG_COLUMNS.get(col) or "float64"
        if dtype == _TIMESTAMP:
            df[col] = pd.to_datetime(df[col], utc=True)
        elif dtype in ("Int64", "float64"):
            df[col] = pd.to_numeric(df[col]).astype(dtype)
        else:
            df[col] = df[col].astype(dtype)
    return df


def _columns(rows: list[dict], first: list[str]) -> list[str]:
    """``first``, then every other key of ``rows`` in sorted order."""
    return [*first, *sorted({k for r in rows for k in r} - set(first))]


def _numeric(df: pd.DataFrame, ints: set[str], strings: frozenset | set = frozenset()) -> pd.DataFrame:
    """``trial_id`` and ``strings`` as string, ``ints`` as Int64, every other column float64."""
    for col in df.columns:
        df[col] = (df[col].astype("string") if col == "trial_id" or col in strings else
                   pd.to_numeric(df[col]).astype("Int64" if col in ints else "float64"))
    return df


# What an E2 and an E3 trial must share to be compared (the paper: same dataset, architecture, schedule, seed;
# here also the prediction target, so that a study with several targets pairs each E2 with its own E3).
PAIR_KEYS = ["dataset", "seed", "cfg.model.architecture", "cfg.data.resolution", "cfg.diffusion.T",
             "cfg.diffusion.target", "cfg.diffusion.schedule", "cfg.diffusion.schedule_params",
             "cfg.diffusion.input_scale", "cfg.diffusion.logsnr_end", "cfg.diffusion.zero_terminal_snr"]
CONDITIONING_COLUMNS = ["dataset", "architecture", "seed", "e2_trial_id", "partner_trial_id", "partner", "t",
                        "with_image", "without_image"]


def conditioning_pairs(trials: pd.DataFrame, curves: pd.DataFrame) -> pd.DataFrame:
    """Mask error over t with the image (E2) and without it (the matching E3 trial: ``partner = "e3"``; or the
    same E2 model trained with condition dropout: ``partner = "cond_dropout"``), one row per pair and t."""
    ok = trials[trials.status.isin(FINISHED)].copy()
    if ok.empty or not {SEGMENTATION, MASK_ONLY} & set(ok.experiment.dropna()):
        return pd.DataFrame(columns=CONDITIONING_COLUMNS)
    for k in PAIR_KEYS:
        if k not in ok:
            ok[k] = None
    ok["pair_key"] = ok[PAIR_KEYS].apply(lambda r: "|".join(map(str, r)), axis=1)
    err = curves[curves.kind == MASK_ERROR]
    rows = []
    for e2 in ok[ok.experiment == SEGMENTATION].itertuples():
        own = err[err.trial_id == e2.trial_id]
        cond = own[own.conditioned].set_index("t").value
        partners = [(e3.trial_id, MASK_ONLY, err[(err.trial_id == e3.trial_id) & ~err.conditioned])
                    for e3 in ok[(ok.experiment == MASK_ONLY) & (ok.pair_key == e2.pair_key)].itertuples()]
        if (~own.conditioned).any():
            partners.append((e2.trial_id, "cond_dropout", own[~own.conditioned]))
        for pid, kind, other in partners:
            other = other.set_index("t").value
            for t in sorted(set(cond.index) & set(other.index)):
                rows.append({"dataset": e2.dataset, "architecture": e2.architecture, "seed": e2.seed,
                             "e2_trial_id": e2.trial_id, "partner_trial_id": pid, "partner": kind, "t": t,
                             "with_image": cond[t], "without_image": other[t]})
    return pd.DataFrame(rows, columns=CONDITIONING_COLUMNS)


def export_study(tracking_uri: str, study: str, dest: Path, parent_run_id: str | None = None) -> dict[str, Path]:
    client = MlflowClient(tracking_uri)
    exp_id, parent = find_parent(client, study, parent_run_id)
    pid = parent.info.run_id
    runs = _all_runs(client, exp_id, f"tags.`mlflow.parentRunId` = '{pid}'")
    trials, config_curves, history, curves, images, reliability, hashes = [], [], [], [], [], [], {}
    for run in runs:
        tags, info = run.data.tags, run.info
        res = _result(client, info.run_id)
        tid = tags.get("ray_trial_id", info.run_id)
        row = {"study": study, "parent_run_id": pid, "run_id": info.run_id, "trial_id": tid,
               "trial_name": tags.get("ray_trial_name"), "arm": tags.get("arm"), "dataset": tags.get("dataset"),
               "seed": int(tags["seed"]) if "seed" in tags else None, "budget": tags.get("budget"),
               "mlflow_status": info.status, "git_commit": tags.get("git_commit"), "hardware": tags.get("hardware"),
               "start_time": pd.to_datetime(info.start_time, unit="ms", utc=True),
               "end_time": pd.to_datetime(info.end_time, unit="ms", utc=True) if info.end_time else pd.NaT}
        row["wall_time_s"] = ((info.end_time - info.start_time) / 1000) if info.end_time else None
        if res is None:
            row.update({"status": ERROR if info.status == "FAILED" else info.status.lower()})
            trials.append(row)
            continue
        cfg = res.config
        row.update({"status": res.status, "dataset_hash": res.dataset_hash, "experiment": cfg["experiment"],
                    "architecture": cfg["model"]["architecture"], "train_time_s": res.train_time_s,
                    "eval_time_s": res.eval_time_s, "step": res.step, "best_step": res.best_step,
                    "best_val": res.best_val, "selection_metric": res.selection_metric, "selection": res.selection,
                    "n_params": res.n_params, "threads": res.threads})
        row.update({f"time_{k}": v for k, v in res.timing.items()})
        hashes[res.dataset] = res.dataset_hash
        row.update(res.metrics)
        flat, long_curves = flat_config(cfg)
        row.update({f"cfg.{k}": v for k, v in flat.items()})
        trials.append(row)
        config_curves += [{"trial_id": tid, **r} for r in long_curves]
        history += [{"trial_id": tid, **h} for h in res.history]
        curves += [{"trial_id": tid, "kind": c.kind, "conditioned": c.conditioned, "t": t, "value": v}
                   for c in res.curves for t, v in zip(c.t, c.value, strict=True)]
        images += [{"trial_id": tid, "dataset": row["dataset"], "arm": row["arm"], "seed": row["seed"], **r}
                   for r in res.per_image]
        reliability += [{"trial_id": tid, **r} for r in res.reliability]
    dest.mkdir(parents=True, exist_ok=True)
    tdf = _trials_frame(trials)
    frames = {
        "trials": tdf,
        "config_curves": pd.DataFrame(config_curves, columns=["trial_id", "key", "index", "value"]).astype(
            {"trial_id": "string", "key": "string", "index": "Int64", "value": "float64"}),
        "history": _numeric(pd.DataFrame(history).reindex(columns=_columns(history, ["trial_id", "step",
                                                                                    "train_loss"])), {"step"}),
        "curves": pd.DataFrame(curves, columns=["trial_id", "kind", "conditioned", "t", "value"]).astype(
            {"trial_id": "string", "kind": "string", "conditioned": "bool", "t": "float64", "value": "float64"}),
        "images": _numeric(pd.DataFrame(images).reindex(columns=_columns(
            images, ["trial_id", "dataset", "arm", "seed", "image_id", "case_id", *PER_IMAGE])), {"seed"},
            {"dataset", "arm", "image_id", "case_id"}),
        "reliability": _numeric(pd.DataFrame(reliability).reindex(
            columns=["trial_id", "bin", "count", "confidence", "accuracy", "lower", "upper"]), {"bin", "count"}),
    }
    frames["conditioning"] = conditioning_pairs(tdf, frames["curves"]).astype(
        {"dataset": "string", "architecture": "string", "seed": "Int64", "e2_trial_id": "string",
         "partner_trial_id": "string", "partner": "string", "t": "float64", "with_image": "float64",
         "without_image": "float64"})
    baseline = parent.data.params.get("baseline")
    ok_images = frames["images"][frames["images"].trial_id.isin(tdf.trial_id[tdf.status.isin(FINISHED)])]
    frames["comparisons"] = (compare_arms(ok_images, baseline) if baseline and len(ok_images) else
                             pd.DataFrame(columns=PAIRED_COLUMNS)).astype(PAIRED_TYPES)
    paths = {}
    for name in EXPORT_TABLES:
        df, path = frames[name], dest / f"{name}.parquet"
        with atomic_path(path) as tmp:
            df.to_parquet(tmp, index=False)
        paths[name] = path
    p = parent.data
    # the study folder's own store is not recorded as a URI (an absolute path): the folder stays relocatable
    recorded_uri = None if own_store(tracking_uri, dest.parents[1]) else tracking_uri
    meta = {"study": study, "parent_run_id": pid, "experiment_id": exp_id, "tracking_uri": recorded_uri,
            "budget": p.tags.get("budget"), "algorithm": p.params.get("algorithm"),
            "hardware": p.tags.get("hardware"), "git_commit": p.tags.get("git_commit"),
            "datasets": hashes, "trials": len(trials),
            "failed": int((tdf["status"] == ERROR).sum()) if len(tdf) else 0,
            "total_compute_s": float(tdf["wall_time_s"].fillna(0).sum()) if len(tdf) else 0.0,
            "description": p.params.get("description", "")}
    atomic_write_text(dest / STUDY_META, json.dumps(meta, indent=1))
    paths["study"] = dest / STUDY_META
    return paths
