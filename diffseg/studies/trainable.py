"""The Ray Tune function trainable: one study trial = ``train_trial`` + MLflow child run + Tune reports and
checkpoints (so ``--resume`` restores unfinished trials from their last validation)."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient
from ray import tune

from ..experiments import TrialConfig, train_trial
from ..experiments.flat import flat_config
from ..experiments.result import MLFLOW, MODEL_LOGGING, NAN_LOSS, RAY_REPORT, RESULT_ARTIFACT, WEIGHTS_FILE
from ..files import atomic_write_text
from ..fingerprint import load_fingerprint
from ..folder import StudyFolder
from . import tracking


@dataclass(frozen=True)
class StudyContext:
    """Driver-side facts every trial needs; passed with ``tune.with_parameters`` (kept out of trial names)."""

    study: str
    budget: str
    out: str  # absolute
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    threads: int
    env_tags: dict[str, str]
    log_models: bool = True  # each E1/E2 trial logs its selected EMA weights as an MLflow pyfunc model


def trial_config(config: dict[str, Any], ctx: StudyContext, out_dir: Path, point: dict[str, Any]) -> TrialConfig:
    sampled = {k: v for k, v in config.items() if k != "point"}
    flat = {**point["config"], **sampled, "output_dir": str(out_dir), "train.threads": ctx.threads}
    return TrialConfig.from_dict(flat)


def run_trial(config: dict[str, Any], ctx: StudyContext, point: dict[str, Any] | None = None) -> None:
    """``point``: the trial point (label, dataset, seed, config), in ``config['point']`` for grid studies or
    bound with ``tune.with_parameters`` for Optuna studies, whose config holds the sampled values only."""
    tctx = tune.get_context()
    trial_id, trial_name = tctx.get_trial_id(), tctx.get_trial_name()
    out_dir = StudyFolder(ctx.out).trial(trial_name)  # "<arm>-<dataset>-s<seed>-<trial id>", as Ray's own folder
    point = point or config["point"]
    cfg = trial_config(config, ctx, out_dir, point)
    client = MlflowClient(ctx.tracking_uri)
    clock = {MLFLOW: time.perf_counter(), RAY_REPORT: 0.0, MODEL_LOGGING: 0.0}
    tags = {**ctx.env_tags, "diffseg.study": ctx.study, "budget": ctx.budget, "arm": point["label"],
            "dataset": point["dataset"], "seed": str(point["seed"]), "ray_trial_name": trial_name}
    run_id, resumed = tracking.child_run(client, ctx.experiment_id, ctx.parent_run_id, trial_id,
                                         f"{point['label']} s{point['seed']}", tags)  # dataset: its own column
    logged = tracking.start_attempt(client, run_id, resumed)  # metric -> last step logged by an earlier attempt
    if not resumed:
        params, _ = flat_config(cfg.to_dict())  # long curves: fingerprint_curve.json, config_curves.parquet
        tracking.log_params(client, run_id, {**params, "arm": point["label"]})
        if point.get("fingerprint"):
            fp = load_fingerprint(Path(point["fingerprint"]))
            tracking.log_json_artifact(client, run_id, {
                "fingerprint": point["fingerprint"], "dataset_hash": fp["dataset_hash"],
                "weighting": fp["derived"]["weighting"], "sampling_density": fp["derived"]["sampling_density"],
                "recommended_logsnr_end": fp["derived"]["recommended_logsnr_end"],
                "training_free_error": fp["training_free"]["error"], "split": fp["split"]}, "fingerprint_curve.json")
    clock[MLFLOW] = time.perf_counter() - clock[MLFLOW]
    resume_from = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        restored = out_dir / "restored"
        shutil.rmtree(restored, ignore_errors=True)
        resume_from = Path(checkpoint.to_directory(str(restored)))

    buffer = tracking.MetricBuffer(client, run_id)

    def log(metrics: dict[str, float], step: int) -> None:
        """Steps an earlier attempt of this trial logged (it died after its last checkpoint; the restored attempt
        replays them from the checkpointed RNG state) are not logged twice."""
        t = time.perf_counter()
        buffer.add({k: v for k, v in metrics.items() if step > logged.get(k, -1)}, step)
        clock[MLFLOW] += time.perf_counter() - t

    def flush() -> None:
        t = time.perf_counter()
        buffer.flush()
        clock[MLFLOW] += time.perf_counter() - t

    def report(metrics: dict[str, Any], ckpt_dir: str | None) -> None:
        # train_loss goes to MLflow through log(), every train.log_every steps; all of it is written before the
        # checkpoint, so a restored attempt replays (and logs) only steps after it
        log({k: v for k, v in metrics.items() if k != "train_loss"}, int(metrics["step"]))
        flush()
        t = time.perf_counter()
        ck = tune.Checkpoint.from_directory(ckpt_dir) if ckpt_dir else None
        tune.report({**metrics, "done_training": False}, checkpoint=ck)
        clock[RAY_REPORT] += time.perf_counter() - t

    try:
        result = train_trial(cfg, report=report, resume_from=resume_from, log=log)
    except Exception:
        buffer.flush()  # what the failed attempt trained is on its run
        tracking.finish_run(client, run_id, ok=False)
        raise
    flush()
    if ctx.log_models:
        from .logged_models import log_trial_model

        t = time.perf_counter()
        log_trial_model(ctx.tracking_uri, run_id, result)
        clock[MODEL_LOGGING] = time.perf_counter() - t
    for working in ("checkpoint", "weights"):  # deleted below: Ray's checkpoint and the MLflow model are kept
        result.artifacts.pop(working, None)
    result.timing.update(clock)
    try:
        result.timing[MLFLOW] += tracking.log_trial_result(client, run_id, result)
    finally:  # written once, and on disk even if MLflow fails
        atomic_write_text(out_dir / RESULT_ARTIFACT, json.dumps(result.to_dict()))
    tracking.log_result_json(client, run_id, result)
    tracking.finish_run(client, run_id, ok=result.status != NAN_LOSS)
    # checkpoints are kept once: Ray's copy (what --resume restores), the weights once: the MLflow model; the
    # trial's working copies go, last, so a trial retried after a failure above still finds them
    for working in ("checkpoint", "restored"):
        shutil.rmtree(out_dir / working, ignore_errors=True)
    (out_dir / WEIGHTS_FILE).unlink(missing_ok=True)
    final = {k: v for k, v in result.metrics.items() if isinstance(v, (int, float))}
    final.update({"step": result.step, "status": result.status, "mlflow_run_id": run_id,
                  result.selection_metric: result.best_val if result.best_val is not None else float("nan"),
                  "done_training": True})
    tune.report(final)
