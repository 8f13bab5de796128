"""``python -m diffseg.studies.reevaluate --study NAME [--out runs] [--tracking-uri URI]``: evaluate the selected
weights of every finished E1/E2 trial of a study folder again, without retraining, and rewrite its results and
exports. The same command serves any change of a metric's definition (e.g. the vote-fraction probability).

Per trial: its latest Ray checkpoint (``<out>/ray/<study>/<trial>/checkpoint_*/state.pt``, loaded with
``weights_only=True``) holds the config and the selected (best-validation) EMA weights; the final evaluation of
``experiments.train`` runs on them exactly as at the end of training (same test images, seeds and sampler), the
child run's metrics, curves, per-image table and ``result.json`` are logged again (tag ``diffseg.reevaluated``:
the git commit that did it), and the study's Parquet exports are written anew. Exit 0, or 2 when the store has
no such study or a trial has no checkpoint (nothing is rewritten then).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

from ..experiments.config import TrialConfig
from ..experiments.kinds import SEGMENTING
from ..experiments.result import CURVES, FINAL_ENSEMBLE, FINISHED, RESULT_ARTIFACT, WEIGHTS_FILE, TrialResult
from ..experiments.train import Trial, load_checkpoint
from ..files import atomic_write_text
from ..folder import StudyFolder
from ..process import exit_now
from . import tracking
from .export import _all_runs, _result, export_study, find_parent


def latest_checkpoint(folder: StudyFolder, study: str, trial_name: str) -> Path:
    trial = folder.tune_dir(study) / trial_name
    ckpts = sorted(trial.glob("checkpoint_*/state.pt"))
    if not ckpts:
        raise FileNotFoundError(f"{trial}: no checkpoint_*/state.pt to re-evaluate")
    return ckpts[-1]


def reevaluate_trial(state_path: Path, old: TrialResult) -> TrialResult:
    """The final evaluation of ``experiments.train`` on the checkpoint's selected EMA weights."""
    state = load_checkpoint(state_path)
    trial = Trial(TrialConfig.from_dict(state["config"]))
    trial.load_state(state)
    new = trial.finish(old.status, old.train_time_s)
    new.timing = {**old.timing, **{k: v for k, v in trial.timing.items() if k in (FINAL_ENSEMBLE, CURVES)}}
    new.artifacts = {k: v for k, v in new.artifacts.items() if k not in ("checkpoint", "weights")}
    (Path(trial.out) / WEIGHTS_FILE).unlink(missing_ok=True)  # the MLflow model holds the weights
    return new


def reevaluate_study(tracking_uri: str, study: str, folder: StudyFolder) -> list[str]:
    """Re-evaluate every finished E1/E2 trial; returns their run ids. Every checkpoint is found before any run is
    rewritten."""
    client = MlflowClient(tracking_uri)
    exp_id, parent = find_parent(client, study)
    todo = []
    for run in _all_runs(client, exp_id, f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"):
        old = _result(client, run.info.run_id)  # None: a trial that never finished has nothing to re-evaluate
        if old is not None and old.status in FINISHED and old.config["experiment"] in SEGMENTING:
            todo.append((run, old, latest_checkpoint(folder, study, run.data.tags["ray_trial_name"])))
    commit = tracking.git_commit()
    for run, old, ckpt in todo:
        new = reevaluate_trial(ckpt, old)
        tracking.log_trial_result(client, run.info.run_id, new)
        tracking.log_result_json(client, run.info.run_id, new)
        client.set_tag(run.info.run_id, "diffseg.reevaluated", commit)
        atomic_write_text(Path(new.output_dir) / RESULT_ARTIFACT, json.dumps(new.to_dict()))
    export_study(tracking_uri, study, folder)
    return [run.info.run_id for run, _, _ in todo]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m diffseg.studies.reevaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--study", required=True)
    p.add_argument("--out", default="runs", help="the study folder (--out of run_study)")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default: the server the study recorded, else <out>/mlflow.db)")
    a = p.parse_args(argv)
    folder = StudyFolder(Path(a.out))
    try:
        runs = reevaluate_study(tracking.store_for(folder, a.tracking_uri, a.study), a.study, folder)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"re-evaluated {len(runs)} trials of {a.study}; exports: {folder.exports(a.study)}")
    return 0


if __name__ == "__main__":
    exit_now(main())
