"""Platform overhead: the same smoke-budget trials run through ``run_study`` (embedded Ray, MLflow, checkpoints,
model logging, export, registry) and as a plain loop of ``train_trial``, side by side in one run, one trial at a
time with every CPU of this machine in both. ``overhead_fraction`` = (study wall - loop wall) / study wall.
``python -m diffseg.bench study [--json]`` runs the study's whole smoke grid on one dataset (7 trials): the platform
has a fixed cost per study (Ray start, the tracking store, export, registry: about 8 s here) and about a second
per trial. The side-by-side ratio carries the run-to-run variation of the trials' own compute (several per cent
here), so ``platform_fraction`` also counts the platform's time by phase: the study's wall time outside its
trials plus the MLflow, model-logging and Ray calls inside them."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

from ..experiments import train_trial
from ..experiments.result import export_dir
from ..studies import cli
from ..studies.cli import TRIAL_PHASES
from ..studies.plan import build_plan
from ..studies.spec import load_spec

PLATFORM_PHASES = ("mlflow_s", "model_logging_s", "ray_report_s")  # trial phases a plain loop does not have
STUDY, ARMS, DATASET = "weighting_schedules", 7, "synthetic-blob"  # the whole smoke grid on one dataset


def run(arms: int = ARMS) -> dict:
    import ray

    cpus = os.cpu_count() or 1
    raw = yaml.safe_load(load_spec(STUDY).path.read_text())
    raw["grid"] = {axis: values[:arms] for axis, values in raw["grid"].items()}
    with tempfile.TemporaryDirectory() as tmp:
        study_yaml = Path(tmp) / "overhead_bench.yaml"
        study_yaml.write_text(yaml.safe_dump(raw))
        spec = load_spec(str(study_yaml))
        out = Path(tmp) / "study"
        t0 = time.monotonic()
        rc = cli.main(["--study", str(study_yaml), "--dataset", DATASET, "--out", str(out), "--max-concurrent", "1",
                       "--cpus-per-trial", str(cpus), "--seed", "0"])
        study_s = time.monotonic() - t0
        ray.shutdown()
        trials = pd.read_parquet(export_dir(out, spec.name) / "trials.parquet")
        plan = build_plan(spec, "smoke", [DATASET], [0], Path(tmp) / "loop", Path(tmp) / "loop" / "cache")
        t0 = time.monotonic()
        for i, p in enumerate(plan[:len(trials)]):
            train_trial({**p.config, "train.threads": cpus, "output_dir": str(Path(tmp) / "loop" / str(i))})
        loop_s = time.monotonic() - t0
    phases = {TRIAL_PHASES[k.removeprefix("time_")]: float(trials[k].sum()) for k in trials
              if k.startswith("time_") and k.removeprefix("time_") in TRIAL_PHASES}
    # by phase: the study's time outside its trials (one at a time) plus the platform's calls inside them
    outside = study_s - float(trials.wall_time_s.sum())
    inside = sum(phases.get(TRIAL_PHASES[k], 0.0) for k in PLATFORM_PHASES)
    return {"study": STUDY, "trials": len(trials), "dataset": DATASET, "cpus": cpus, "exit_code": rc,
            "study_wall_s": study_s, "loop_wall_s": loop_s, "overhead_fraction": (study_s - loop_s) / study_s,
            "outside_trials_s": outside, "platform_in_trials_s": inside,
            "platform_fraction": (outside + inside) / study_s, "trial_phases_s": phases}


def table(r: dict) -> str:
    return "\n".join([
        f"platform overhead ({r['trials']} smoke trials of {r['study']} on {r['dataset']}, one at a time, "
        f"{r['cpus']} CPUs each)",
        f"  run_study (Ray + MLflow + checkpoints + models + export): {r['study_wall_s']:8.1f} s",
        f"  plain loop of train_trial:                                 {r['loop_wall_s']:8.1f} s",
        f"  overhead: {100 * r['overhead_fraction']:.1f} % of the study's wall time (side by side; the trials' own "
        "compute varies by several per cent from run to run on this machine)",
        f"  by phase: {r['outside_trials_s']:.1f} s outside the trials + {r['platform_in_trials_s']:.1f} s of "
        f"MLflow, model logging and Ray calls inside them = {100 * r['platform_fraction']:.1f} % of the wall time",
        "  trial phases (s): " + ", ".join(f"{k} {v:.1f}" for k, v in r["trial_phases_s"].items()),
    ])
