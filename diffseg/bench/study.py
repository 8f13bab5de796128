"""Platform overhead: the same smoke-budget trials run through ``run_study`` (embedded Ray, MLflow, checkpoints, model
logging, export, registry) and as a plain loop of ``train_trial``, side by side in one run, one trial at a time in
both. Each side is a fresh Python process timed from its start to its exit, as a user runs either command: both
import torch and compute the study's fingerprints and dataset cache; only the study imports and starts Ray and
MLflow. ``overhead_fraction`` = (study wall - loop wall) / study wall.
``python -m diffseg.bench study [--json]`` runs the README's smoke study (``make study``: weighting_schedules at
the smoke budget, 8 arms x 3 datasets = 24 trials), about 15 minutes a run on 2 cores. The side-by-side ratio carries
the run-to-run variation of the trials' own compute (a few per cent here), so ``platform_fraction`` also counts the
platform's time by phase, without the trials' compute: the study's time outside its trials less the loop's (both
start Python, import torch and prepare the data), plus the MLflow, model-logging and Ray calls inside the study's
trials; split into a cost per study (``per_study_s``) and per trial (``per_trial_s``). ``trial_phases_s`` sets each
compute phase of the study's trials beside the loop's: running under Ray must not slow the trials themselves, so
``step_ratio`` pairs each trial's training steps under Ray with the same trial's in the loop (per arm, dataset
and seed: the mean ratio and its 95 % t interval over the trials). ``--repeat N`` (default 3) runs the pair N times and
reports each run and the median of each fraction over the runs. By default the sides run one after the other on
every CPU, the first side alternating (the machine's drift is not charged to one side, but a run carries it).
``--at-once`` runs both sides at the same time, each on its half of the CPUs (pinned; its children inherit the
mask), the halves swapped every run: a drift of the machine's speed within minutes is then shared by both sides
of a run (measured here with a matmul on each of the 2 cores at once: 30-s means 0.95-1.07 of each other, 4-min
means within 1 %; both at once as fast as one alone)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from ..experiments.result import PLATFORM_PHASES, TRAIN_STEPS, TRIAL_PHASE_LABELS
from ..folder import StudyFolder
from ..metrics.intervals import mean_ci_dict
from ..studies.spec import load_spec

STUDY, BUDGET = "weighting_schedules", "smoke"  # the README's smoke study (make study)
LOOP_TIMING = "loop_timing.json"  # the plain loop's per-trial phases and wall time, in its output folder


def plain_loop(out: str, threads: str, study: str = STUDY, budget: str = BUDGET) -> None:
    """The study's plan (fingerprints, dataset caches) and each trial by ``train_trial``, one after another;
    writes one row per trial (arm, dataset, seed, its wall time ``wall_s`` and its phases) to
    ``<out>/LOOP_TIMING``."""
    from ..experiments import train_trial
    from ..studies.plan import build_plan

    root = Path(out)
    plan = build_plan(load_spec(study), budget, None, None, StudyFolder(root))
    rows = []
    for i, p in enumerate(plan):
        t0 = time.monotonic()
        result = train_trial({**p.config, "train.threads": int(threads), "output_dir": str(root / str(i))})
        rows.append({"arm": p.label, "dataset": p.dataset, "seed": p.seed, "wall_s": time.monotonic() - t0,
                     **result.timing})
    (root / LOOP_TIMING).write_text(json.dumps(rows))


def step_ratio(study_trials: pd.DataFrame, loop_trials: pd.DataFrame) -> dict:
    """Each trial's training-step seconds under Ray over the same trial's (arm, dataset, seed) in the plain loop:
    the mean ratio with its 95 % t interval over the paired trials (``mean_ci``); a trial missing from either side
    is an error, not a smaller n."""
    keys = ["arm", "dataset", "seed"]
    ray_s = study_trials.assign(seed=study_trials.seed.astype(int)).set_index(keys)[f"time_{TRAIN_STEPS}"]
    loop_s = loop_trials.assign(seed=loop_trials.seed.astype(int)).set_index(keys)[TRAIN_STEPS]
    if set(ray_s.index) != set(loop_s.index) or ray_s.index.has_duplicates:
        raise ValueError(f"the study's and the loop's trials differ: {sorted(set(ray_s.index) ^ set(loop_s.index))}")
    ratios = (ray_s / loop_s.reindex(ray_s.index)).tolist()
    return mean_ci_dict(ratios)


def _start(cmd: list[str], log: Path, cpus: set[int]) -> subprocess.Popen:
    """``cmd`` started on ``cpus`` only, its output in ``log``: the child inherits this process's CPU mask at its
    start, and its own children (Ray's daemons and trial workers) inherit the child's."""
    mine = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        with log.open("w") as f:
            return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)
    finally:
        os.sched_setaffinity(0, mine)


def _run_sides(cmds: dict[str, list[str]], tmp: Path, groups: list[dict[str, set[int]]]) -> dict[str, float]:
    """Wall seconds of each side from its start to its exit: the sides of a group start together, each on its CPUs,
    and the groups run one after another; a failing side stops the others and raises with its log's tail."""
    wall: dict[str, float] = {}
    for group in groups:
        t0 = time.monotonic()
        procs = {side: _start(cmds[side], tmp / f"{side}.log", cpus) for side, cpus in group.items()}
        try:
            while any(side not in wall for side in procs):
                for side, p in procs.items():
                    if side not in wall and p.poll() is not None:
                        wall[side] = time.monotonic() - t0
                        if p.returncode != 0:
                            log = (tmp / f"{side}.log").read_text().splitlines()[-30:]
                            raise RuntimeError(f"{' '.join(cmds[side])} exited with {p.returncode}:\n" + "\n".join(log))
                time.sleep(0.1)
        finally:
            for p in procs.values():
                if p.poll() is None:
                    p.kill()
                    p.wait()
    return wall


def placements(cpus: list[int], i: int, at_once: bool) -> tuple[list[dict[str, set[int]]], str]:
    """Run ``i``'s groups for ``_run_sides`` and their words. One after the other: each side on every CPU, the first
    side alternating. At once: each side on its half of the CPUs, the halves swapped every run (a CPU slower than
    the other is not charged to one side)."""
    if at_once:
        if len(cpus) < 2:
            raise ValueError(f"at once: the two sides need a CPU each; this process may use {len(cpus)}")
        half = len(cpus) // 2
        a, b = set(cpus[:half]), set(cpus[half:2 * half])
        study, loop = (a, b) if i % 2 == 0 else (b, a)
        return [{"study": study, "loop": loop}], f"at once, study on CPUs {sorted(study)}, loop on {sorted(loop)}"
    order = ("loop", "study") if i % 2 == 1 else ("study", "loop")
    return [{side: set(cpus)} for side in order], f"{order[0]} first"


def _one_run(tmp: Path, groups: list[dict[str, set[int]]], placed: str, study: str, budget: str) -> dict:
    out, loop = tmp / "study", tmp / "loop"
    cpus = {side: len(c) for g in groups for side, c in g.items()}
    sides = {"study": [sys.executable, "-m", "diffseg.studies", "--study", study, "--budget", budget, "--out",
                       str(out), "--max-concurrent", "1", "--cpus-per-trial", str(cpus["study"])],
             "loop": [sys.executable, "-c", "import sys; from diffseg.bench.study import plain_loop; "
                      "plain_loop(*sys.argv[1:])", str(loop), str(cpus["loop"]), study, budget]}
    wall = _run_sides(sides, tmp, groups)
    study_s, loop_s = wall["study"], wall["loop"]
    trials = pd.read_parquet(StudyFolder(out).export_table(study, "trials"))
    loop_trials = pd.DataFrame(json.loads((loop / LOOP_TIMING).read_text()))
    loop_phases = loop_trials.sum(numeric_only=True)
    study_phases = {k.removeprefix("time_"): float(trials[k].sum()) for k in trials
                    if k.startswith("time_") and k.removeprefix("time_") in TRIAL_PHASE_LABELS}
    # by phase: outside the trials (one at a time), the study's time less the loop's; plus the platform's calls
    # inside the study's trials
    outside = study_s - float(trials.wall_time_s.sum())
    loop_outside = loop_s - float(loop_phases["wall_s"])
    inside = sum(study_phases.get(k, 0.0) for k in PLATFORM_PHASES)
    n = len(trials)
    return {"trials": n, "datasets": sorted(trials.dataset.unique()), "placed": placed, "cpus": cpus["study"],
            "study_wall_s": study_s, "loop_wall_s": loop_s, "overhead_fraction": (study_s - loop_s) / study_s,
            "outside_trials_s": outside, "loop_outside_trials_s": loop_outside, "platform_in_trials_s": inside,
            "platform_fraction": (outside - loop_outside + inside) / study_s,
            "per_study_s": outside - loop_outside, "per_trial_s": inside / n,
            "step_ratio": step_ratio(trials, loop_trials),
            "trial_phases_s": {TRIAL_PHASE_LABELS[k]: {"study": v, "loop": float(loop_phases[k]) if k in loop_phases
                                                       else None}
                               for k, v in study_phases.items()}}


MEDIANS = ("overhead_fraction", "platform_fraction", "per_study_s", "per_trial_s")


def run(repeat: int = 3, study: str = STUDY, budget: str = BUDGET, at_once: bool = False) -> dict:
    """``repeat`` runs of the pair, each in a fresh folder, placed by ``placements``; the medians over them.
    ``study`` and ``budget``: a shipped study's name (both sides run the same plan)."""
    cpus = sorted(os.sched_getaffinity(0))
    placed = [placements(cpus, i, at_once) for i in range(repeat)]  # a placement that cannot be made: before any run
    runs = []
    for groups, words in placed:
        with tempfile.TemporaryDirectory() as tmp:
            runs.append(_one_run(Path(tmp), groups, words, study, budget))
    median = {k: float(pd.Series([r[k] for r in runs]).median()) for k in MEDIANS}
    median["step_ratio"] = float(pd.Series([r["step_ratio"]["mean"] for r in runs]).median())
    return {"study": study, "budget": budget, "at_once": at_once, "cpus": runs[0]["cpus"], "repeat": repeat,
            "median": median, "runs": runs, "step_ratio_over_runs": over_runs(runs)}


def over_runs(runs: list[dict]) -> dict:
    """The step ratio with the run as the unit: within a run all trials of a side share one process (the study's
    trial worker, the loop's process), and fresh processes differ in speed by several per cent here (``bench
    threads``), so a run's interval over its trials is too narrow for a process-level effect. Mean and 95 % t
    interval of the runs' ratios (``mean_ci``)."""
    return mean_ci_dict([r["step_ratio"]["mean"] for r in runs])


def table(r: dict) -> str:
    placed = ("the sides at once, the CPU halves swapped every run" if r["at_once"]
              else "the sides one after the other, the first alternating")
    lines = [f"platform overhead ({r['study']} at the {r['budget']} budget: {r['runs'][0]['trials']} trials on "
             f"{', '.join(r['runs'][0]['datasets'])}, one at a time, {r['cpus']} CPU{'s' * (r['cpus'] != 1)} each; "
             f"each side a fresh process; {r['repeat']} runs, {placed})"]
    drift = "" if r["at_once"] else " (the trials' own compute varies by a few per cent from run to run here)"
    for i, x in enumerate(r["runs"], 1):
        phases = ", ".join(f"{k} {v['study']:.1f}" + (f"/{v['loop']:.1f}" if v["loop"] is not None else "")
                           for k, v in x["trial_phases_s"].items())
        q = x["step_ratio"]
        lines += [
            f"run {i} ({x['placed']}): run_study {x['study_wall_s']:.1f} s, plain loop {x['loop_wall_s']:.1f} s: "
            f"overhead {100 * x['overhead_fraction']:.1f} % side by side{drift}",
            f"  by phase: {x['outside_trials_s']:.1f} s outside the trials (the loop: {x['loop_outside_trials_s']:.1f} "
            f"s) + {x['platform_in_trials_s']:.1f} s of MLflow, model logging and Ray calls inside them = "
            f"{100 * x['platform_fraction']:.1f} % ({x['per_study_s']:.1f} s per study + {x['per_trial_s']:.2f} s "
            "per trial)",
            f"  training steps under Ray / in the loop, per trial: {q['mean']:.3f} [{q['low']:.3f}, {q['high']:.3f}] "
            f"(n={q['n']} paired trials)",
            f"  trial phases, study/loop (s): {phases}"]
    m = r["median"]
    lines.append(f"median of {r['repeat']}: overhead {100 * m['overhead_fraction']:.1f} % side by side, "
                 f"{100 * m['platform_fraction']:.1f} % by phase ({m['per_study_s']:.1f} s per study + "
                 f"{m['per_trial_s']:.2f} s per trial); training steps under Ray / loop {m['step_ratio']:.3f}")
    q = r["step_ratio_over_runs"]
    lines.append(f"training steps under Ray / loop over the runs (the run is the unit): {q['mean']:.3f} "
                 f"[{q['low']:.3f}, {q['high']:.3f}] (n={q['n']} runs)")
    return "\n".join(lines)
