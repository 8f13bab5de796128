"""MLflow tracking for studies: one experiment per study, one parent run per invocation (reused on resume), one
child run per Ray trial (tagged ``ray_trial_id``; a resumed trial continues its own run). Uses ``MlflowClient``
with explicit run ids, so workers never depend on fluent global state (or on ``MLFLOW_RUN_ID``)."""

from __future__ import annotations

import json
import math
import platform
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from ..data.registry import get_spec
from ..experiments.flat import to_json
from ..experiments.result import IMAGE_ERROR, MASK_ERROR, RESULT_ARTIFACT, TrialResult
from ..folder import ARTIFACT_ROOT, StudyFolder, choose_tracking_uri, is_server
from ..process import usable_cpus
from .store_schema import lay_down

PROJECT_ROOT = Path(__file__).resolve().parents[2]
MAX_PARAM_CHARS = 500
LOG_FLUSH_S = 10.0  # a trial's step metrics reach MLflow at most this many seconds late (``MetricBuffer``)
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
NOTE_TAG = "mlflow.note.content"  # the run's description in the MLflow UI
# MLflow 3.17's saved views of the runs table: an experiment tag holding {name, createdAt, updatedAt, state}, where
# state is the JSON of the table's UI state; the runs page opens one with ?viewStateShareKey=<key>
SAVED_VIEW_TAG, VIEW_PARAM = "mlflow.sharedViewState.", "viewStateShareKey"
KEY_VIEW, KEY_VIEW_NAME = "diffseg-key-columns", "diffseg: key columns"
KEY_COLUMNS = ("attributes.`Dataset`", "tags.`arm`", "tags.`dataset`", "tags.`seed`", "tags.`trial_status`",
               "metrics.`best_val`", "metrics.`test_iou`", "metrics.`test_ece`", "metrics.`test_x0_error`")
_BAD = re.compile(r"[^0-9A-Za-z_\-. /]")


def sanitize(name: str) -> str:
    """MLflow allows alphanumerics and ``_ - . space /`` in keys."""
    return _BAD.sub("_", name)[:250]


def git_commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=PROJECT_ROOT,
                               capture_output=True, text=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def environment_tags() -> dict[str, str]:
    import torch

    cpus = usable_cpus()
    tags = {"git_commit": git_commit(), "python": platform.python_version(), "platform": platform.platform(),
            "cpu_count": str(cpus),
            "hardware": torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu x{cpus}"}
    for pkg in ("diffseg", "torch", "ray", "mlflow", "optuna", "numpy", "transformers",
                "dynamic-network-architectures"):
        try:
            tags[f"version.{pkg}"] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            tags[f"version.{pkg}"] = "not installed"
    return tags


def probe(tracking_uri: str, timeout: float = 5.0) -> str | None:
    """None when the tracking store answers, else why not (an HTTP server's ``/health`` within ``timeout`` s)."""
    import urllib.request

    if not is_server(tracking_uri):
        return None
    try:
        with urllib.request.urlopen(f"{tracking_uri.rstrip('/')}/health", timeout=timeout) as r:
            if r.status == 200:
                return None
            reason = f"HTTP {r.status}"
    except OSError as exc:
        reason = str(getattr(exc, "reason", exc))
    return (f"the MLflow tracking server {tracking_uri} does not answer ({reason}); start it, or check "
            "--tracking-uri")


def mark_unfinished(client: MlflowClient, exp_id: str, parent_id: str) -> int:
    """Mark the parent's child runs still RUNNING (their trials were stopped) as KILLED; return how many."""
    runs = client.search_runs([exp_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}' and "
                                                      "attributes.status = 'RUNNING'", max_results=5000)
    for run in runs:
        client.set_terminated(run.info.run_id, "KILLED")
    return len(runs)


# where a local MLflow store writes absolute artifact locations (MLflow resolves local paths on write)
_LOCATION_COLUMNS = (("experiments", "artifact_location"), ("runs", "artifact_uri"),
                     ("logged_models", "artifact_location"), ("model_versions", "source"),
                     ("model_versions", "storage_location"))


def key_columns_view() -> str:
    """The saved runs-table view showing ``KEY_COLUMNS`` (MLflow's default shows none of the params or metrics)."""
    now = int(time.time() * 1000)
    return json.dumps({"name": KEY_VIEW_NAME, "createdAt": now, "updatedAt": now,
                       "state": json.dumps({"selectedColumns": list(KEY_COLUMNS)})})


def ui_url(server: str, experiment_id: str, run_id: str | None = None) -> str:
    """A page of the MLflow UI for model training: MLflow 3.17 opens every experiment on its GenAI overview unless
    the address says ``workflowType=machine_learning`` (a per-browser setting; the experiment kind is not used).
    Without a run: the runs table in the key-columns view."""
    base = f"{server.rstrip('/')}/#/experiments/{experiment_id}"
    if run_id:
        return f"{base}/runs/{run_id}?workflowType=machine_learning"
    return f"{base}/runs?workflowType=machine_learning&{VIEW_PARAM}={KEY_VIEW}"


def store_for(folder: StudyFolder, given: str | None = None, study: str | None = None, create: bool = False) -> str:
    """The tracking store of a command on a study folder: ``given``, else the server ``study`` recorded, else the
    folder's own store (``folder.choose_tracking_uri``), which must exist unless ``create`` (a new study). The
    folder's own store, when it was moved or copied, is re-pointed first: the artifact locations MLflow stored as
    absolute paths under the old folder are rewritten to this folder's ``mlartifacts``."""
    uri = choose_tracking_uri(given, folder.recorded_uri(study) if study else None, folder)
    if folder.owns(uri) and not folder.store_db.exists() and not create:
        raise ValueError(f"{folder.root}: no MLflow store ({folder.store_db.name}) in this study folder; give the "
                         "folder a study wrote (run_study.py --out) or --tracking-uri")
    if folder.owns(uri) and folder.store_db.exists():
        try:
            old = relocate(folder.store_db, folder.artifact_root.as_uri())
        except sqlite3.DatabaseError as exc:
            raise ValueError(f"{folder.store_db}: not a readable MLflow store ({exc})") from None
        if old:
            print(f"note: {folder.root} was moved: artifact locations re-pointed from {old}", file=sys.stderr)
            # MLflow caches each run's artifact repository in-process (by run id): drop the stale locations
            from mlflow.tracking._tracking_service import utils as mlflow_utils

            getattr(mlflow_utils, "_artifact_repos_cache", {}).clear()
    return uri


def relocate(db: Path, root_uri: str) -> str | None:
    """Rewrite artifact locations under another ``.../mlartifacts`` root to ``root_uri`` in one transaction (a no-op
    when they already point there). Returns the old root, or None."""
    with sqlite3.connect(db) as con:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "experiments" not in tables:
            return None
        olds = {loc for (loc,) in con.execute("SELECT artifact_location FROM experiments")
                if loc and loc.rstrip("/").endswith(f"/{ARTIFACT_ROOT}") and loc.rstrip("/") != root_uri}
        for old in olds:
            for table, col in _LOCATION_COLUMNS:
                if table in tables:
                    con.execute(f'UPDATE "{table}" SET "{col}" = ? || substr("{col}", ?) '
                                f'WHERE substr("{col}", 1, ?) = ?', (root_uri, len(old) + 1, len(old), old))
    return ", ".join(sorted(olds)) or None


def setup_study(tracking_uri: str, study: str, out: Path, parent_run_id: str | None,
                params: dict[str, Any], tags: dict[str, str], description: str = "") -> tuple[str, str]:
    """Create (or find) the study's experiment and the invocation's parent run in the driver, before trials start,
    so the store's schema is created once (a new local store: laid down from the cached schema,
    ``store_schema.lay_down``). Returns (experiment_id, parent_run_id)."""
    lay_down(tracking_uri)
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(study)
    if exp is None:
        artifact_location = None
        if not is_server(tracking_uri):
            artifact_location = StudyFolder(out).artifact_root.as_uri()
        exp_id = client.create_experiment(study, artifact_location=artifact_location)
    else:
        exp_id = exp.experiment_id
    # the experiment's kind (MLflow's experiment-type selector reads it; the landing page in 3.17 follows the
    # browser's workflow type instead: see ui_url) and the saved key-columns view of its runs table
    client.set_experiment_tag(exp_id, EXPERIMENT_KIND_TAG, "custom_model_development")
    client.set_experiment_tag(exp_id, SAVED_VIEW_TAG + KEY_VIEW, key_columns_view())
    client.set_experiment_tag(exp_id, NOTE_TAG, f"diffseg study **{study}**. The runs table with the key columns "
                              f"(arm, dataset, seed, status, best validation, test metrics): the saved view "
                              f"'{KEY_VIEW_NAME}' (or `?{VIEW_PARAM}={KEY_VIEW}` in the runs page address).")
    if parent_run_id is not None:
        client.update_run(parent_run_id, status="RUNNING")
        return exp_id, parent_run_id
    run = client.create_run(exp_id, run_name=f"{study}-{time.strftime('%Y%m%d-%H%M%S')}",
                            tags={**tags, "diffseg.role": "study", "diffseg.study": study,
                                  NOTE_TAG: description})
    log_params(client, run.info.run_id, params)
    return exp_id, run.info.run_id


def log_params(client: MlflowClient, run_id: str, params: dict[str, Any]) -> None:
    """Flat params (a trial's as ``experiments.flat.flat_config`` gives them); lists and mappings as JSON."""
    items = []
    for k, v in params.items():
        text = to_json(v) if isinstance(v, (list, dict, tuple)) else str(v)
        if len(text) <= MAX_PARAM_CHARS:
            items.append(Param(sanitize(k), text))
    for i in range(0, len(items), 100):
        client.log_batch(run_id, params=items[i : i + 100])


def _metric_items(metrics: dict[str, float], step: int) -> list[Metric]:
    ts = int(time.time() * 1000)
    return [Metric(sanitize(k), float(v), ts, step) for k, v in metrics.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]


def _log_items(client: MlflowClient, run_id: str, items: list[Metric]) -> None:
    for i in range(0, len(items), 1000):
        client.log_batch(run_id, metrics=items[i : i + 1000])


def log_metrics(client: MlflowClient, run_id: str, metrics: dict[str, float], step: int) -> None:
    _log_items(client, run_id, _metric_items(metrics, step))


class MetricBuffer:
    """A trial's step metrics written as one MLflow batch at most every ``every_s`` seconds and on ``flush``
    (the trial flushes at each validation and at its end). Unbuffered, the training loss every ``train.log_every``
    steps is one write each: a SQLite transaction of 3-8 ms CPU here, or an HTTP request to a server (a paper-budget
    trial: 6,000). Each value keeps its own step and timestamp."""

    def __init__(self, client: MlflowClient, run_id: str, every_s: float = LOG_FLUSH_S, clock=time.monotonic):
        self.client, self.run_id, self.every_s, self.clock = client, run_id, every_s, clock
        self.items: list[Metric] = []
        self._flushed = clock()

    def add(self, metrics: dict[str, float], step: int) -> None:
        self.items += _metric_items(metrics, step)
        if self.clock() - self._flushed >= self.every_s:
            self.flush()

    def flush(self) -> None:
        items, self.items, self._flushed = self.items, [], self.clock()
        _log_items(self.client, self.run_id, items)


def child_run(client: MlflowClient, exp_id: str, parent_id: str, trial_id: str, name: str,
              tags: dict[str, str]) -> tuple[str, bool]:
    """(run id, resumed): the trial's own child run, found by its Ray trial id or created."""
    found = client.search_runs([exp_id], filter_string=f"tags.ray_trial_id = '{trial_id}' and "
                                                       f"tags.`mlflow.parentRunId` = '{parent_id}'")
    if found:
        client.update_run(found[0].info.run_id, status="RUNNING")
        return found[0].info.run_id, True
    run = client.create_run(exp_id, run_name=name, tags={**tags, "mlflow.parentRunId": parent_id,
                                                         "ray_trial_id": trial_id, "diffseg.role": "trial"})
    return run.info.run_id, False


NODE_ID_TAG, NODE_IP_TAG, ATTEMPTS_TAG = "diffseg.node_id", "diffseg.node_ip", "diffseg.attempts"


def start_attempt(client: MlflowClient, run_id: str, resumed: bool) -> dict[str, int]:
    """Record this attempt of a trial on its child run (the Ray node it runs on; the attempt count, which a retry
    after a dead node or a ``--resume`` raises) and return, for a resumed run, the last step each metric was
    logged at (empty for a new run)."""
    import ray

    run = client.get_run(run_id) if resumed else None  # a run created for this attempt has no tags or metrics yet
    attempts = int(run.data.tags.get(ATTEMPTS_TAG, "0")) + 1 if run else 1
    client.log_batch(run_id, tags=[RunTag(NODE_ID_TAG, ray.get_runtime_context().get_node_id()),
                                   RunTag(NODE_IP_TAG, ray.util.get_node_ip_address()),
                                   RunTag(ATTEMPTS_TAG, str(attempts))])
    if not resumed:
        return {}
    return {key: max(m.step for m in client.get_metric_history(run_id, key)) for key in run.data.metrics}


def log_json_artifact(client: MlflowClient, run_id: str, obj: Any, name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_text(json.dumps(obj))
        client.log_artifact(run_id, str(path))


def log_trial_result(client: MlflowClient, run_id: str, result: TrialResult) -> float:
    """Final metrics; the per-t curves as artifacts (``curves.json`` and ``curves.png`` with t on the axis, not as
    step metrics) with one scalar per error curve as a metric (``t_half_of_end.<kind>.<cond|uncond>``: the t where the
    curve first reaches half its value at the last t); per-image metrics; the uncertainty gallery PNG. Returns the
    seconds it took (the caller counts them in ``result.timing`` before the result JSON is written and logged by
    ``log_result_json``, once)."""
    from ..fingerprint.derive import crossing_t

    t0 = time.perf_counter()
    log_metrics(client, run_id, result.metrics, step=result.step)
    halves = {}
    for c in result.curves:
        if c.kind in (MASK_ERROR, IMAGE_ERROR) and c.value and c.value[-1] > 0:
            t = crossing_t(np.asarray(c.t), np.asarray(c.value), 0.5 * c.value[-1])
            halves[f"t_half_of_end.{c.kind}.{'cond' if c.conditioned else 'uncond'}"] = math.nan if t is None else t
    log_metrics(client, run_id, halves, step=result.step)
    if result.curves:
        with tempfile.TemporaryDirectory() as tmp:
            png = Path(tmp) / "curves.png"
            png.write_bytes(curves_png(result))
            client.log_artifact(run_id, str(png))
    client.log_batch(run_id, tags=[RunTag("dataset_hash", result.dataset_hash),
                                   RunTag("trial_status", result.status)])
    log_dataset(client, run_id, result.dataset, result.dataset_hash, result.config["data"].get("data_root"))
    log_json_artifact(client, run_id, result.to_dict()["curves"], "curves.json")
    log_json_artifact(client, run_id, result.per_image, "per_image.json")
    gallery = result.artifacts.get("gallery")
    if gallery and Path(gallery).exists():
        client.log_artifact(run_id, gallery, "uncertainty")
    return time.perf_counter() - t0


def log_result_json(client: MlflowClient, run_id: str, result: TrialResult) -> None:
    """The whole result as JSON (``RESULT_ARTIFACT``, what the export reads), logged last."""
    log_json_artifact(client, run_id, result.to_dict(), RESULT_ARTIFACT)


def log_dataset(client: MlflowClient, run_id: str, name: str, dataset_hash: str, data_root: str | None) -> None:
    """The dataset as the run's MLflow input (name, digest = the first 12 characters of its hash, source). Two
    trials logging the same new dataset at once race in MLflow's SQL store (its check-then-insert of the
    experiment's dataset row is not atomic: UNIQUE constraint failed); the loser retries, finding the row."""
    from mlflow.exceptions import MlflowException

    inputs = [DatasetInput(Dataset(name=name, digest=dataset_hash[:12], source_type="local",
                                   source=dataset_source(name, data_root)),
                           tags=[InputTag("mlflow.data.context", "training")])]
    for attempt in range(3):
        try:
            client.log_inputs(run_id, datasets=inputs)
            return
        except MlflowException as exc:
            if "UNIQUE constraint" not in str(exc) or attempt == 2:
                raise
            time.sleep(0.2 * (attempt + 1))


def dataset_source(name: str, data_root: str | None) -> str:
    """Where a dataset is read from (its root folder; a generator for the synthetic sets)."""
    spec = get_spec(name, data_root)
    return str(spec.root) if spec.root is not None else f"generated: {spec.synthetic_kind}"


def summarise_parent(client: MlflowClient, parent_id: str, trials, export_folder: Path) -> None:
    """The parent run as a summary: per dataset the best trial (``experiments.selection.best_trials``, the one the
    registry registers) as a metric and a tag naming its child run, and the Parquet exports as artifacts."""
    from ..experiments.selection import BEST_RULE, best_trials

    metrics, tags = {}, [RunTag("best_rule", BEST_RULE)]
    for _, best in best_trials(trials).iterrows():
        metrics[f"best.{best.dataset}.{best.selection_metric}"] = float(best.best_val)
        tags.append(RunTag(sanitize(f"best_child.{best.dataset}"), f"{best.run_id} ({best.arm})"))
    log_metrics(client, parent_id, metrics, step=0)
    if tags:
        client.log_batch(parent_id, tags=tags)
    client.log_artifacts(parent_id, str(export_folder), "exports")


def curves_png(result: TrialResult) -> bytes:
    """One chart of the trial's curves over t (one panel per kind), rendered offline with vl-convert."""
    import altair as alt
    import pandas as pd
    import vl_convert as vlc

    rows = [{"kind": c.kind, "input": "with condition" if c.conditioned else "without condition", "t": t, "value": v}
            for c in result.curves for t, v in zip(c.t, c.value, strict=True)]
    chart = alt.Chart(pd.DataFrame(rows)).mark_line(point=True).encode(
        x=alt.X("t:Q", title="diffusion step t"), y=alt.Y("value:Q", title=None),
        color=alt.Color("input:N", title=None)).properties(width=260, height=180).facet(
        facet=alt.Facet("kind:N", title=None), columns=2).resolve_scale(y="independent")
    return vlc.vegalite_to_png(chart.to_dict(), scale=1.0)


def finish_run(client: MlflowClient, run_id: str, ok: bool) -> None:
    client.set_terminated(run_id, "FINISHED" if ok else "FAILED")
