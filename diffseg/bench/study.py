"""Platform overhead: the same smoke-budget trials run through ``run_study`` (embedded Ray, MLflow, checkpoints,
model logging, export, registry) and as a plain loop of ``train_trial``, side by side in one run, one trial at a
time with every CPU of this machine in both. Each side is a fresh Python process timed from its start to its exit,
as a user runs either command: both import torch and compute the study's fingerprints and dataset cache; only the
study imports and starts Ray and MLflow. ``overhead_fraction`` = (study wall - loop wall) / study wall.
``python -m diffseg.bench study [--json]`` runs the README's smoke study (``make study``: weighting_schedules at
the smoke budget, 8 arms x 3 datasets = 24 trials), about 18 minutes on 2 cores. The side-by-side ratio carries the
run-to-run variation of the trials' own compute (a few per cent here), so ``platform_fraction`` also counts the
platform's time by phase, without the trials' compute: the study's time outside its trials less the loop's (both
start Python, import torch and prepare the data), plus the MLflow, model-logging and Ray calls inside the study's
trials; split into a cost per study (``per_study_s``) and per trial (``per_trial_s``). ``trial_phases_s`` sets each
compute phase of the study's trials beside the loop's: running under Ray must not slow the trials themselves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from ..experiments.result import PLATFORM_PHASES, TRIAL_PHASE_LABELS
from ..folder import StudyFolder
from ..studies.spec import load_spec

STUDY, BUDGET = "weighting_schedules", "smoke"  # the README's smoke study (make study)
LOOP_TIMING = "loop_timing.json"  # the plain loop's summed trial phases and wall time, in its output folder


def plain_loop(out: str, threads: str) -> None:
    """The study's plan (fingerprints, dataset caches) and each trial by ``train_trial``, one after another;
    writes the summed trial phases and the trials' wall time (``wall_s``) to ``<out>/LOOP_TIMING``."""
    from ..experiments import train_trial
    from ..studies.plan import build_plan

    root = Path(out)
    plan = build_plan(load_spec(STUDY), BUDGET, None, None, StudyFolder(root))
    timing: dict[str, float] = {"wall_s": 0.0}
    for i, p in enumerate(plan):
        t0 = time.monotonic()
        result = train_trial({**p.config, "train.threads": int(threads), "output_dir": str(root / str(i))})
        timing["wall_s"] += time.monotonic() - t0
        for k, v in result.timing.items():
            timing[k] = timing.get(k, 0.0) + v
    (root / LOOP_TIMING).write_text(json.dumps(timing))


def _timed(cmd: list[str], log: Path) -> float:
    """Wall seconds of ``cmd`` (its output in ``log``); a failing command raises with the log's tail."""
    t0 = time.monotonic()
    with log.open("w") as f:
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT).returncode
    seconds = time.monotonic() - t0
    if rc != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited with {rc}:\n" + "\n".join(log.read_text().splitlines()[-30:]))
    return seconds


def run() -> dict:
    cpus = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        out, loop = Path(tmp) / "study", Path(tmp) / "loop"
        study_s = _timed([sys.executable, "-m", "diffseg.studies", "--study", STUDY, "--budget", BUDGET,
                          "--out", str(out), "--max-concurrent", "1", "--cpus-per-trial", str(cpus)],
                         Path(tmp) / "study.log")
        loop_s = _timed([sys.executable, "-c", "import sys; from diffseg.bench.study import plain_loop; "
                         "plain_loop(*sys.argv[1:])", str(loop), str(cpus)], Path(tmp) / "loop.log")
        trials = pd.read_parquet(StudyFolder(out).export_table(STUDY, "trials"))
        loop_timing = json.loads((loop / LOOP_TIMING).read_text())
    study_phases = {k.removeprefix("time_"): float(trials[k].sum()) for k in trials
                    if k.startswith("time_") and k.removeprefix("time_") in TRIAL_PHASE_LABELS}
    # by phase: outside the trials (one at a time), the study's time less the loop's; plus the platform's calls
    # inside the study's trials
    outside = study_s - float(trials.wall_time_s.sum())
    loop_outside = loop_s - loop_timing["wall_s"]
    inside = sum(study_phases.get(k, 0.0) for k in PLATFORM_PHASES)
    n = len(trials)
    return {"study": STUDY, "budget": BUDGET, "trials": n, "datasets": sorted(trials.dataset.unique()), "cpus": cpus,
            "study_wall_s": study_s, "loop_wall_s": loop_s, "overhead_fraction": (study_s - loop_s) / study_s,
            "outside_trials_s": outside, "loop_outside_trials_s": loop_outside, "platform_in_trials_s": inside,
            "platform_fraction": (outside - loop_outside + inside) / study_s,
            "per_study_s": outside - loop_outside, "per_trial_s": inside / n,
            "trial_phases_s": {TRIAL_PHASE_LABELS[k]: {"study": v, "loop": loop_timing.get(k)}
                               for k, v in study_phases.items()}}


def table(r: dict) -> str:
    phases = ", ".join(f"{k} {v['study']:.1f}" + (f"/{v['loop']:.1f}" if v["loop"] is not None else "")
                       for k, v in r["trial_phases_s"].items())
    return "\n".join([
        f"platform overhead ({r['study']} at the {r['budget']} budget: {r['trials']} trials on "
        f"{', '.join(r['datasets'])}, one at a time, {r['cpus']} CPUs each; each side a fresh process)",
        f"  run_study (Ray + MLflow + checkpoints + models + export): {r['study_wall_s']:8.1f} s",
        f"  plain loop of train_trial:                                 {r['loop_wall_s']:8.1f} s",
        f"  overhead: {100 * r['overhead_fraction']:.1f} % of the study's wall time (side by side; the trials' own "
        "compute varies by a few per cent from run to run on this machine)",
        f"  by phase: {r['outside_trials_s']:.1f} s outside the trials (the loop: {r['loop_outside_trials_s']:.1f} s) "
        f"+ {r['platform_in_trials_s']:.1f} s of MLflow, model logging and Ray calls inside them = "
        f"{100 * r['platform_fraction']:.1f} % of the wall time ({r['per_study_s']:.1f} s per study + "
        f"{r['per_trial_s']:.2f} s per trial)",
        f"  trial phases, study/loop (s): {phases}",
    ])
