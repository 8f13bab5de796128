"""Parquet exports of a study (``<out>/exports/<study>/``), re-creatable from MLflow (and, for the two tables that
need the datasets, from the data): every table and its columns in ``studies.schema``, described in the README.

``trials`` (one row per trial), ``history`` (validation over steps), ``curves`` (per-t analysis curves),
``images`` (per-image test metrics), ``reliability`` (pooled reliability-diagram bins), ``conditioning`` (the
paper's Fig. 3 left: each E2 trial's mask error over t beside that of its matching E3 trial, or of the same model
with the null image when it was trained with condition dropout), ``comparisons`` (each arm against the study's
baseline arm: ``diffseg.metrics.paired``), ``fingerprints`` and ``baselines`` (``studies.dataset_tables``) and
``study.json`` (study-level facts).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pandas as pd
from mlflow.tracking import MlflowClient

from ..experiments.flat import flat_config
from ..experiments.kinds import MASK_ONLY, SEGMENTATION
from ..experiments.result import ERROR, FINISHED, MASK_ERROR, RESULT_ARTIFACT, TrialResult
from ..files import atomic_path, atomic_write_text
from ..folder import StudyFolder
from ..metrics.paired import compare_arms
from .dataset_tables import dataset_tables
from .schema import REQUIRED, TABLES, conform
from .tracking import ATTEMPTS_TAG, NODE_ID_TAG, NODE_IP_TAG


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


# What an E2 and an E3 trial must share to be compared (the paper: same dataset, architecture, schedule, seed;
# here also the prediction target, so that a study with several targets pairs each E2 with its own E3).
PAIR_KEYS = ["dataset", "seed", "cfg.model.architecture", "cfg.data.resolution", "cfg.diffusion.T",
             "cfg.diffusion.target", "cfg.diffusion.schedule", "cfg.diffusion.schedule_params",
             "cfg.diffusion.input_scale", "cfg.diffusion.logsnr_end", "cfg.diffusion.zero_terminal_snr"]
CONDITIONING_COLUMNS = list(TABLES["conditioning"].columns)


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


def export_study(tracking_uri: str, study: str, folder: StudyFolder,
                 parent_run_id: str | None = None) -> dict[str, Path]:
    """Write every export table of the study's parent run (its latest one unless given) into
    ``folder.exports(study)``, each atomically; returns table name -> path (and ``study`` -> study.json)."""
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
               "node_id": tags.get(NODE_ID_TAG), "node_ip": tags.get(NODE_IP_TAG),
               "retries": int(tags[ATTEMPTS_TAG]) - 1 if ATTEMPTS_TAG in tags else None,
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
    dest = folder.exports(study)
    dest.mkdir(parents=True, exist_ok=True)
    tdf = conform("trials", pd.DataFrame(trials))
    frames = {"trials": tdf, "config_curves": pd.DataFrame(config_curves), "history": pd.DataFrame(history),
              "curves": pd.DataFrame(curves), "images": pd.DataFrame(images),
              "reliability": pd.DataFrame(reliability)}
    frames["conditioning"] = conditioning_pairs(tdf, conform("curves", frames["curves"]))
    baseline = parent.data.params.get("baseline")
    images_df = conform("images", frames["images"])
    ok_images = images_df[images_df.trial_id.isin(tdf.trial_id[tdf.status.isin(FINISHED)])]
    frames["comparisons"] = compare_arms(ok_images, baseline) if baseline and len(ok_images) else pd.DataFrame()
    frames["fingerprints"], frames["baselines"], notes = dataset_tables(
        tdf, conform("config_curves", frames["config_curves"]), folder, hashes)
    paths = {}
    for name in REQUIRED:
        paths[name] = folder.export_table(study, name)
        with atomic_path(paths[name]) as tmp:
            conform(name, frames[name]).to_parquet(tmp, index=False)
    p = parent.data
    # the study folder's own store is not recorded as a URI (an absolute path): the folder stays relocatable
    meta = {"study": study, "parent_run_id": pid, "experiment_id": exp_id,
            "tracking_uri": None if folder.owns(tracking_uri) else tracking_uri,
            "budget": p.tags.get("budget"), "algorithm": p.params.get("algorithm"),
            "hardware": p.tags.get("hardware"), "git_commit": p.tags.get("git_commit"),
            "datasets": hashes, "trials": len(trials),
            "failed": int((tdf["status"] == ERROR).sum()) if len(tdf) else 0,
            "total_compute_s": float(tdf["wall_time_s"].fillna(0).sum()) if len(tdf) else 0.0,
            "description": p.params.get("description", ""), "notes": notes}
    paths["study"] = folder.export_meta(study)
    atomic_write_text(paths["study"], json.dumps(meta, indent=1))
    return paths
