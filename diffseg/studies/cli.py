"""``python studies/run_study.py --study NAME``: a declarative study run by Ray Tune, tracked in MLflow, exported
as Parquet. Exit 0 on success, 2 on bad input (before Ray starts), 1 when trials failed."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from ..budgets import BUDGETS
from ..data import DatasetError
from ..data.registry import get_spec, with_label
from ..experiments.kinds import BY_METRIC, SELECTION
from ..experiments.result import FINISHED, status_summary
from ..folder import StudyFolder
from ..process import exit_now
from ..registry import suggest
from . import cost
from .plan import describe_plan
from .runner import RESUME_HINT, RunOptions, StudyRefused, make_plan, run_study, selection_words, time_breakdown
from .spec import SpecError, list_studies, load_spec

EXIT_CODES = ("exit codes: 0 every trial finished; 1 some trials failed, none finished ok, or the study was "
              "interrupted or lost its tracking server (continue with the same command and --resume); 2 bad input, "
              "found before Ray starts and before anything is written")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="studies/run_study.py", description=__doc__.splitlines()[0], epilog=EXIT_CODES,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--study", help="study name (a file in search_spaces/) or a path to a study YAML")
    p.add_argument("--list", action="store_true", help="list the studies with one-line descriptions")
    p.add_argument("--dataset", action="append", default=None,
                   help="dataset (repeatable): registry name, folder:PATH or masks:PATH; default: the study's")
    p.add_argument("--data-root", default=None, help="root folder of the dataset (overrides its default root)")
    p.add_argument("--label", default=None,
                   help="nnunet:PATH datasets: the foreground label (a dataset.json name; needed with several)")
    p.add_argument("--budget", default="smoke", choices=sorted(BUDGETS), help="the scale of the trials")
    p.add_argument("--out", default="runs", help="holds Ray results, the MLflow store and artifacts, exports")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: sqlite <out>/mlflow.db)")
    p.add_argument("--address", default=None, help="existing Ray cluster (default: start an embedded local Ray)")
    p.add_argument("--max-concurrent", type=_positive_int, default=None,
                   help="trials at once (default: CPUs / cpus-per-trial)")
    p.add_argument("--cpus-per-trial", type=_positive_float, default=1.0, help="CPUs per trial (its torch threads)")
    p.add_argument("--gpus-per-trial", type=_non_negative_float, default=0.0, help="fractional values share a GPU")
    p.add_argument("--num-samples", type=_positive_int, default=None,
                   help="draws of the search dimensions (default: the study file's)")
    p.add_argument("--seed", type=int, action="append", default=None, help="seed (repeatable; overrides spec)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override a trial config value for every trial, e.g. --set train.steps=50 (repeatable)")
    p.add_argument("--max-failures", type=_non_negative_int, default=1, help="retries of a crashed trial")
    p.add_argument("--resume", action="store_true", help="continue this study's last invocation in --out")
    p.add_argument("--trust-state", action="store_true",
                   help="with --resume: restore Ray's state without checking this user's seal on it (a study "
                        "folder copied from another user; Ray unpickles that state)")
    p.add_argument("--no-models", action="store_true",
                   help="do not log the trials' weights as MLflow models (and register none); default: every E1/E2 "
                        "trial logs its model and the best per dataset is registered as diffseg-<study>-<dataset>")
    p.add_argument("--dry-run", action="store_true", help="print the trial plan and resource use; run nothing")
    p.add_argument("--estimate-gpus", type=_positive_int, default=None, metavar="N",
                   help="with --dry-run: estimate the wall time on N GPUs of --estimate-card (default: on the "
                        "resources this machine gives the study)")
    p.add_argument("--estimate-card", default="H100", help="with --estimate-gpus: the card (its data-sheet peak)")
    p.add_argument("--json", action="store_true",
                   help="with --dry-run: print the resolved plan as JSON (per trial: label, dataset, seed, "
                        "experiment, selection metric, fingerprint and the exact flat config the trial receives)")
    return p


SYSTEM_DIRS = ("/proc", "/sys", "/dev")
CLI_AXES = {"seed": "--seed", "data.dataset": "--dataset", "experiment": "the study file's experiment",
            "output_dir": "--out", "data.cache_dir": "--out", "data.data_root": "--data-root"}


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs (VALUE parsed as JSON where it is JSON) for known config keys; the axes the study and
    the command line own (``CLI_AXES``) are refused: a trial labelled seed 0 must train seed 0."""
    from .spec import config_keys

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE")
        if key not in config_keys():
            raise ValueError(f"--set {key}: unknown config key; {suggest(key, config_keys())}")
        if key in CLI_AXES:
            raise ValueError(f"--set {key}: set by the study's plan (use {CLI_AXES[key]}, not --set)")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


def out_problem(out: Path) -> str | None:
    """Why ``--out`` cannot be used (checked without creating anything), or None."""
    if any(out == Path(p) or Path(p) in out.parents for p in SYSTEM_DIRS):
        return f"--out {out}: inside {', '.join(SYSTEM_DIRS)} (kernel file systems), not a study folder"
    if out.exists():
        if not out.is_dir():
            return f"--out {out}: exists and is not a folder"
        return None if os.access(out, os.W_OK | os.X_OK) else f"--out {out}: not writable"
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return f"--out {out}: cannot be created, {parent} is a file, not a folder"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"--out {out}: cannot be created, {parent} is not writable"
    return None


def run(args: argparse.Namespace) -> int:
    """Every check first (exit 2, nothing written: ``runner.make_plan`` in memory), then ``runner.run_study``."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        spec = load_spec(args.study)
    except SpecError as exc:
        return fail(str(exc))
    try:
        out = Path(args.out).expanduser().resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop
        return fail(f"--out {args.out}: cannot be resolved ({exc})")
    problem = out_problem(out)
    if problem:
        return fail(problem)
    folder = StudyFolder(out)
    try:
        datasets = [with_label(d, args.label) for d in (args.dataset or spec.for_budget(args.budget)[2])]
        overrides = parse_overrides(args.overrides)
        for name in datasets:
            get_spec(name, args.data_root)
        plan = make_plan(spec, args.budget, folder, datasets, args.seed, args.data_root, overrides,
                         args.num_samples)  # everything checked and prepared in memory; nothing written yet
    except (DatasetError, ValueError, FileNotFoundError) as exc:
        return fail(str(exc))
    if args.address is None:  # the embedded Ray runs the trials here: what they need must be here
        problem = local_device_problem(plan, args.gpus_per_trial)
        if problem:
            return fail(problem)
    options = RunOptions(folder, args.tracking_uri, args.address, args.max_concurrent, args.cpus_per_trial,
                         args.gpus_per_trial, args.max_failures, args.resume, not args.no_models, " ".join(sys.argv),
                         trust_state=args.trust_state)
    concurrency = options.concurrency(plan.trials)
    if args.dry_run and args.json:
        print(json.dumps([{**p.to_dict(), "experiment": p.config["experiment"],
                           "selection_metric": SELECTION[p.config["experiment"]].metric} for p in plan.points],
                         indent=1))
        return 0
    if args.dry_run:
        print(f"study {spec.name} ({spec.description}); budget {args.budget}; {plan.trials} trials "
              f"({len(plan.points)} points x {plan.num_samples} samples); algorithm {spec.algorithm}; selection "
              f"{selection_words(spec)}; resources per trial: {args.cpus_per_trial} CPU, {args.gpus_per_trial} GPU; "
              f"up to {concurrency} at once")
        print(describe_plan(plan.points))
        if spec.search:
            print(f"search dimensions: {json.dumps(spec.search)}")
        try:
            print(cost.words(study_estimate(plan, args, concurrency)))
        except ValueError as exc:
            return fail(str(exc))
        return 0
    try:
        outcome = run_study(spec, plan, options)
    except StudyRefused as exc:
        return fail(str(exc))
    if outcome.problem:
        print(f"error: {outcome.problem}", file=sys.stderr)
        return 1
    for name in outcome.registered:
        print(f"registered model: {name}")
    if outcome.unfinished:
        print(f"interrupted: {outcome.unfinished} trial(s) unfinished ({outcome.killed} MLflow run(s) marked "
              f"KILLED); {RESUME_HINT}", file=sys.stderr)
    ok = _summary(outcome.trials, outcome.paths, spec.name, outcome.elapsed_s,
                  _resources_words(outcome.resources, outcome.nodes), interrupted=bool(outcome.unfinished))
    print(time_breakdown(outcome.phases, outcome.trials))
    if not ok and not outcome.unfinished:
        print("error: no trial finished ok (see the statuses above)", file=sys.stderr)
    return 1 if outcome.errors or outcome.unfinished or not ok else 0


def local_device_problem(plan, gpus_per_trial: float) -> str | None:
    """Why the trials cannot run on this machine's devices (an embedded Ray), or None."""
    import torch

    gpus = torch.cuda.device_count()
    if gpus_per_trial > 0 and gpus == 0:
        return (f"--gpus-per-trial {gpus_per_trial:g}: this machine has no GPU (the trials would wait for one "
                "forever); use --gpus-per-trial 0, or --address of a cluster with GPUs")
    cuda = sorted({p.config["train.device"] for p in plan.points
                   if str(p.config.get("train.device", "auto")).startswith("cuda")})
    if cuda and gpus == 0:
        return f"train.device={cuda[0]!r}: this machine has no CUDA device (use auto or cpu, or --address)"
    return None


def study_estimate(plan, args, concurrency: int) -> dict:
    """``cost.estimate`` on the GPUs asked for (``--estimate-gpus``), else on what this machine gives the study."""
    if args.estimate_gpus:
        res = cost.gpu_resources(args.estimate_gpus, args.gpus_per_trial or 1.0, args.estimate_card)
    else:
        res = cost.cpu_resources(args.cpus_per_trial, concurrency)
    return cost.estimate(plan.points, plan.test_images, res, plan.num_samples)


def summary_warnings(trials) -> list[str]:
    """Warnings for the end-of-study summary: a single seed (no interval possible), and datasets where the arm that
    is best on validation (mean over seeds, the arm selection) is not the one best on test (choosing on test would
    pick another arm)."""
    ok = trials[trials.status.isin(FINISHED)] if "status" in trials else trials.iloc[0:0]
    out = []
    if "seed" in ok and ok.seed.nunique() == 1 and len(ok):
        out.append("one seed only: differences between arms carry no interval; run more seeds (--seed)")
    if not {"dataset", "arm", "best_val", "test_iou", "selection_metric"} <= set(ok.columns):
        return out
    for dataset, g in ok[ok.selection_metric == "val_iou"].groupby("dataset"):
        means = g.groupby("arm")[["best_val", "test_iou"]].mean().dropna()
        if len(means) > 1 and means.best_val.idxmax() != means.test_iou.idxmax():
            out.append(f"{dataset}: validation picks {means.best_val.idxmax()!r}, test would pick "
                       f"{means.test_iou.idxmax()!r}; report the validation choice")
    return out


def _resources_words(resources: dict, nodes: int) -> str:
    return (f"{resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs on {nodes} "
            f"node{'s' if nodes > 1 else ''}")


def _summary(trials, paths: dict[str, Path], study: str, elapsed: float, resources: str,
             interrupted: bool) -> bool:
    """Print the end-of-study summary, sorted by each trial's own validation metric (best first); return whether
    any trial finished ok."""
    import pandas as pd

    print(f"\nstudy {study} {'interrupted' if interrupted else 'finished'} after {elapsed / 60:.1f} min on "
          f"{resources}: {status_summary(trials.status)}")
    cols = [c for c in ("arm", "dataset", "seed", "status", "selection_metric", "best_val", "test_iou", "test_ece",
                        "test_x0_error") if c in trials.columns]
    sign = trials.selection_metric.map(lambda m: -1.0 if m in BY_METRIC and BY_METRIC[m].ascending else 1.0)
    order = trials.assign(_score=-(trials.best_val * sign)).sort_values(["dataset", "_score"], na_position="last")
    with pd.option_context("display.width", 160, "display.max_rows", 200):
        print(order[cols].to_string(index=False))
    from ..experiments.selection import BEST_RULE, best_trials

    for _, b in best_trials(trials).iterrows():
        print(f"best on {b.dataset}: {b.arm} seed {b.seed} ({b.selection_metric} {b.best_val:.4f}; {BEST_RULE})")
    if "retries" in trials and (trials.retries.fillna(0) > 0).any():
        again = trials[trials.retries.fillna(0) > 0]
        print(f"retried: {len(again)} trial(s) restarted from their last checkpoint (a lost node, a crash or "
              f"--resume): " + ", ".join(f"{r.arm}/{r.dataset}/s{r.seed} x{r.retries}" for r in again.itertuples()))
    for w in summary_warnings(trials):
        print(f"warning: {w}")
    print(f"exports: {paths['trials'].parent}")
    return bool(trials.status.isin(FINISHED).any())


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.list:
        for name, desc in list_studies().items():
            print(f"{name:28s} {desc}")
        return 0
    if not args.study:
        return fail("give --study NAME (see --list)")
    return run(args)


if __name__ == "__main__":
    exit_now(main())
