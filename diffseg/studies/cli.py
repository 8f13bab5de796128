"""``python studies/run_study.py --study NAME``: a declarative study run by Ray Tune, tracked in MLflow, exported
as Parquet. Exit 0 on success, 2 on bad input (before Ray starts), 1 when trials failed."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from ..budgets import BUDGETS
from ..data import DatasetError, load_dataset
from ..data.registry import get_spec, with_label
from ..experiments import build
from ..experiments.config import TrialConfig
from ..experiments.kinds import BY_METRIC, SELECTION
from ..experiments.result import FINISHED, export_dir, status_summary
from ..io import Busy, atomic_write_text, owner_lock, safe_name
from ..registry import suggest
from .plan import TrialPoint, build_plan, describe_plan, resume_conflict, save_plan
from .spec import SpecError, StudySpec, list_studies, load_spec

STATE_FILE = "diffseg_study.json"
LOCK_FILE = ".diffseg.lock"  # in --out: held by the driver of the study running there
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
           "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0", "RAY_CHDIR_TO_TRIAL_DIR": "0",
           "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
           # a tracking server that stops answering fails a call in about 30 s instead of minutes of retries
           "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
           "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}


# the embedded Ray prestarts no idle workers: Tune's trial actors start workers of their own (measured: never one
# of those), so on a small machine the prestarted ones only took CPU from the driver's start-up
LOCAL_RAY_CONFIG = {"enable_worker_prestart": False, "prestart_worker_first_driver": False}
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
    p.add_argument("--no-models", action="store_true",
                   help="do not log the trials' weights as MLflow models (and register none); default: every E1/E2 "
                        "trial logs its model and the best per dataset is registered as diffseg-<study>-<dataset>")
    p.add_argument("--dry-run", action="store_true", help="print the trial plan and resource use; run nothing")
    p.add_argument("--json", action="store_true",
                   help="with --dry-run: print the resolved plan as JSON (per trial: label, dataset, seed, "
                        "experiment, selection metric, fingerprint and the exact flat config the trial receives)")
    return p


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs (VALUE parsed as JSON where it is JSON) for known config keys."""
    from .spec import config_keys

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE")
        if key not in config_keys():
            raise ValueError(f"--set {key}: unknown config key; {suggest(key, config_keys())}")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


def search_space(spec: StudySpec) -> dict[str, Any]:
    from ray import tune

    make = {"uniform": tune.uniform, "loguniform": tune.loguniform, "randint": tune.randint}
    return {key: tune.choice(d["values"]) if d["type"] == "choice" else make[d["type"]](d["low"], d["high"])
            for key, d in spec.search.items()}


def _cpus(address: str | None) -> int:
    """CPUs of the embedded Ray; 0 (unknown here) on a cluster, where Ray's resources bound concurrency."""
    return (os.cpu_count() or 1) if address is None else 0


def start_ray(address: str | None) -> dict[str, float]:
    import ray
    import torch

    os.environ.update({k: v for k, v in RAY_ENV.items() if k not in os.environ})
    if ray.is_initialized():  # a caller (e.g. a test session) already started Ray: use it
        return ray.cluster_resources()
    if address:
        ray.init(address=address, log_to_driver=False, runtime_env={"env_vars": RAY_ENV})
    else:
        ray.init(address="local", num_cpus=os.cpu_count() or 1, num_gpus=torch.cuda.device_count(),
                 include_dashboard=False, object_store_memory=200 * 1024**2, log_to_driver=False,
                 runtime_env={"env_vars": RAY_ENV}, _system_config=LOCAL_RAY_CONFIG)
    return ray.cluster_resources()


def out_problem(out: Path) -> str | None:
    """Why ``--out`` cannot be used (checked without creating anything), or None."""
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
    """Every check first (exit 2, nothing written), then the plan is written (fingerprints, dataset caches) and
    the study runs."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        spec = load_spec(args.study)
    except SpecError as exc:
        return fail(str(exc))
    out = Path(args.out).expanduser().resolve()
    problem = out_problem(out)
    if problem:
        return fail(problem)
    cache_dir = out / "cache"
    _, spec_seeds, spec_datasets = spec.for_budget(args.budget)
    try:
        datasets = [with_label(d, args.label) for d in (args.dataset or spec_datasets)]
    except ValueError as exc:
        return fail(str(exc))
    seeds = args.seed or spec_seeds
    num_samples = args.num_samples or spec.num_samples

    def plan_and_cache(write: bool) -> list[TrialPoint]:
        plan = build_plan(spec, args.budget, datasets, seeds, out, cache_dir, args.data_root, overrides, write=write)
        # every dataset cache once, in the driver, with the preprocessing the trials use
        for name, prep in sorted({(p.dataset, build.prep(TrialConfig.from_dict(p.config))) for p in plan}, key=str):
            load_dataset(name, prep, args.data_root, cache_dir, write=write)
        return plan

    try:
        overrides = parse_overrides(args.overrides)
        for name in datasets:
            get_spec(name, args.data_root)
        t = time.monotonic()
        plan = plan_and_cache(write=False)  # everything checked and prepared in memory; nothing written yet
        prepared_s = time.monotonic() - t
    except (DatasetError, ValueError, FileNotFoundError) as exc:
        return fail(str(exc))
    n_trials = len(plan) * num_samples
    concurrency = args.max_concurrent or max(1, int((_cpus(args.address) or n_trials) // args.cpus_per_trial))
    if args.dry_run and args.json:
        print(json.dumps([{**p.to_dict(), "experiment": p.config["experiment"],
                           "selection_metric": SELECTION[p.config["experiment"]].metric} for p in plan], indent=1))
        return 0
    if args.dry_run:
        print(f"study {spec.name} ({spec.description}); budget {args.budget}; {n_trials} trials "
              f"({len(plan)} points x {num_samples} samples); algorithm {spec.algorithm}; selection "
              f"{_selection_words(spec)}; resources per trial: {args.cpus_per_trial} CPU, {args.gpus_per_trial} GPU; "
              f"up to {concurrency} at once")
        print(describe_plan(plan))
        if spec.search:
            print(f"search dimensions: {json.dumps(spec.search)}")
        return 0
    from . import tracking

    tracking_uri = args.tracking_uri
    state_path = _state_path(out, spec.name)
    if args.resume:
        if not state_path.exists():
            others = sorted(p.parent.name for p in (out / "ray").glob(f"*/{STATE_FILE}"))
            held = f"; {out} holds the study {', '.join(others)}, not {spec.name}" if others else ""
            return fail(f"nothing to resume: {state_path} does not exist{held} (run without --resume first)")
        state = json.loads(state_path.read_text())
        tracking_uri = tracking_uri or state.get("tracking_uri")  # None: the folder's own store
        conflict = resume_conflict(state_path.parent, spec.path, plan)
        if conflict:
            return fail(conflict)
    tracking_uri = tracking_uri or tracking.default_tracking_uri(out)
    unreachable = tracking.probe(tracking_uri)
    if unreachable:
        return fail(unreachable)
    try:
        with owner_lock(out / LOCK_FILE, {"study": spec.name, "command": " ".join(sys.argv)}) as lock:
            if lock["taken_over"]:
                print(f"note: took over the lock of a driver that is gone ({lock['taken_over']})", file=sys.stderr)
            t = time.monotonic()
            plan = plan_and_cache(write=True)
            phases = {"prepare_s": time.monotonic() - t + prepared_s}
            return execute(spec, args, out, plan, num_samples, concurrency, tracking_uri, phases)
    except Busy as busy:
        h = busy.holder
        return fail(f"--out {out} is in use by study {h.get('study', '?')!r} (pid {h.get('pid', '?')} on "
                    f"{h.get('host', '?')}, since {h.get('started', '?')}): wait for it, or use another --out")


def _state_path(out: Path, study: str) -> Path:
    return out / "ray" / study / STATE_FILE


def execute(spec: StudySpec, args, out: Path, plan: list[TrialPoint], num_samples: int, concurrency: int,
            tracking_uri: str, phases: dict[str, float]) -> int:
    import pandas as pd
    from mlflow.exceptions import MlflowException
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from . import tracking
    from .export import export_study
    from .progress import OutageWatch, Progress
    from .trainable import StudyContext, run_trial

    state_path = _state_path(out, spec.name)
    parent = json.loads(state_path.read_text())["parent_run_id"] if args.resume else None
    t = time.monotonic()
    env_tags = tracking.environment_tags()
    exp_id, parent = tracking.setup_study(
        tracking_uri, spec.name, out, parent,
        params={"description": spec.description, "budget": args.budget, "algorithm": spec.algorithm,
                "selection": _selection_words(spec), "baseline": spec.baseline_arm(), "num_samples": num_samples,
                "trials": len(plan) * num_samples,
                "datasets": sorted({p.dataset for p in plan}), "seeds": sorted({p.seed for p in plan})},
        tags={**env_tags, "budget": args.budget}, description=_description(spec, args.budget, plan))
    if not args.resume:  # the study file and the resolved plan, as the parent's artifacts
        client = tracking.MlflowClient(tracking_uri)
        client.log_artifact(parent, str(spec.path), "study")
        tracking.log_json_artifact(client, parent, [p.to_dict() for p in plan], "plan.json")
    recorded_uri = None if tracking.own_store(tracking_uri, out) else tracking_uri  # relocatable folder
    atomic_write_text(state_path, json.dumps({"parent_run_id": parent, "tracking_uri": recorded_uri,
                                              "budget": args.budget, "experiment_id": exp_id}))
    if not args.resume:
        save_plan(state_path.parent, spec.path, plan)
    phases["tracking_setup_s"] = time.monotonic() - t  # a new local store creates its schema here
    print(f"study {spec.name}: {len(plan) * num_samples} trials, MLflow {tracking_uri} (parent run {parent})",
          flush=True)
    if tracking_uri.startswith(("http://", "https://")):
        print(f"MLflow UI: {tracking.ui_url(tracking_uri, exp_id)}", flush=True)
    t = time.monotonic()
    resources = start_ray(args.address)
    phases["ray_start_s"] = time.monotonic() - t
    ctx = StudyContext(spec.name, args.budget, str(out), tracking_uri, exp_id, parent,
                       max(1, math.floor(args.cpus_per_trial)), env_tags, not args.no_models)
    trainable = tune.with_resources(tune.with_parameters(run_trial, ctx=ctx),
                                    {"cpu": args.cpus_per_trial, "gpu": args.gpus_per_trial})
    scheduler = None
    if spec.scheduler:
        s = spec.scheduler
        scheduler = ASHAScheduler(time_attr="training_iteration", max_t=s.get("max_t", 100),
                                  grace_period=s.get("grace_period", 1), reduction_factor=s.get("reduction_factor", 2))
    sel = spec.selection()
    tune_metric = {"metric": sel.metric, "mode": sel.mode} if sel else {}  # mixed experiments: no single metric
    progress = Progress(len(plan) * num_samples, concurrency)
    outage = OutageWatch(tracking_uri)

    def run_config(name: str) -> tune.RunConfig:
        return tune.RunConfig(name=name, storage_path=str(out / "ray"), verbose=0, callbacks=[progress, outage],
                              failure_config=tune.FailureConfig(max_failures=args.max_failures),
                              checkpoint_config=tune.CheckpointConfig(num_to_keep=1))
    t0 = time.monotonic()
    experiment_path = str(out / "ray" / spec.name)
    errors = unfinished = 0
    if spec.algorithm == "grid":
        if args.resume and tune.Tuner.can_restore(experiment_path):
            tuner = tune.Tuner.restore(experiment_path, trainable, resume_unfinished=True, resume_errored=True)
        else:
            tuner = tune.Tuner(
                trainable,
                param_space={"point": tune.grid_search([p.to_dict() for p in plan]), **search_space(spec)},
                tune_config=tune.TuneConfig(**tune_metric, num_samples=num_samples, reuse_actors=True,
                                            max_concurrent_trials=concurrency, scheduler=scheduler,
                                            trial_name_creator=_trial_name, trial_dirname_creator=_trial_dirname),
                run_config=run_config(spec.name))
        grid = tuner.fit()
        errors += grid.num_errors
        unfinished += _unfinished(grid)
        _print_errors(grid)
    else:
        from ray.tune.search.optuna import OptunaSearch

        for i, point in enumerate(plan):
            if outage.down or tracking.probe(tracking_uri):
                unfinished += num_samples
                continue
            name = safe_name(f"{spec.name}-{point.dataset}-s{point.seed}", 120, "-_.")
            path = str(out / "ray" / name)
            fixed = tune.with_resources(tune.with_parameters(run_trial, ctx=ctx, point=point.to_dict()),
                                        {"cpu": args.cpus_per_trial, "gpu": args.gpus_per_trial})
            if args.resume and tune.Tuner.can_restore(path):
                tuner = tune.Tuner.restore(path, fixed, resume_unfinished=True, resume_errored=True)
            else:
                search = OptunaSearch(**tune_metric, seed=point.seed + i,
                                      storage=f"sqlite:///{out / 'optuna.db'}", study_name=name)
                tuner = tune.Tuner(fixed, param_space=search_space(spec), tune_config=tune.TuneConfig(
                    **tune_metric, num_samples=num_samples, search_alg=search, reuse_actors=True,
                    max_concurrent_trials=concurrency, scheduler=scheduler),
                    run_config=run_config(name))
            grid = tuner.fit()
            errors += grid.num_errors
            unfinished += _unfinished(grid)
            _print_errors(grid)
    elapsed = phases["trials_s"] = time.monotonic() - t0
    resume_hint = "continue with the same command and --resume"
    if outage.down or tracking.probe(tracking_uri):  # (Tune may run a copy of the callback)
        print(f"error: the MLflow tracking server {tracking_uri} stopped answering during the study; finished "
              f"trials keep their results and checkpoints under {out}; when the server is back, {resume_hint}",
              file=sys.stderr)
        return 1
    try:
        client = tracking.MlflowClient(tracking_uri)
        killed = tracking.mark_unfinished(client, exp_id, parent) if unfinished or errors else 0
        client.set_terminated(parent, "KILLED" if unfinished else "FAILED" if errors else "FINISHED")
        t = time.monotonic()
        paths = export_study(tracking_uri, spec.name, export_dir(out, spec.name), parent)
        trials = pd.read_parquet(paths["trials"])
        tracking.summarise_parent(client, parent, trials, paths["trials"].parent)
        phases["export_s"] = time.monotonic() - t
        if not args.no_models:
            from .models import register_best

            t = time.monotonic()
            for name in register_best(tracking_uri, spec.name, trials):
                print(f"registered model: {name}")
            phases["registry_s"] = time.monotonic() - t
        tracking.log_metrics(client, parent, {f"time.{k}": v for k, v in phases.items()}, step=0)
    except (MlflowException, OSError) as exc:
        print(f"error: MLflow at {tracking_uri} failed at the end of the study ({str(exc).splitlines()[0]}); "
              f"{resume_hint} once it answers", file=sys.stderr)
        return 1
    if unfinished:
        print(f"interrupted: {unfinished} trial(s) unfinished ({killed} MLflow run(s) marked KILLED); {resume_hint}",
              file=sys.stderr)
    ok = _summary(trials, paths, spec, elapsed, resources, interrupted=bool(unfinished))
    print(time_breakdown(phases, trials))
    if not ok and not unfinished:
        print("error: no trial finished ok (see the statuses above)", file=sys.stderr)
    return 1 if errors or unfinished or not ok else 0


TRIAL_PHASES = {"train_steps_s": "training steps", "validation_s": "validation sampling",
                "final_ensemble_s": "final ensemble", "curves_s": "analysis curves", "checkpoint_s": "checkpoints",
                "mlflow_s": "MLflow logging", "model_logging_s": "model logging", "ray_report_s": "Ray reports"}


def time_breakdown(phases: dict[str, float], trials) -> str:
    """Where the study's wall time went: the driver's phases, and the trials' summed time per phase (with what
    the trial phases do not cover: worker start-up, dataset loading, model building, Ray scheduling)."""
    lines = ["where the time went: " + ", ".join(f"{k.removesuffix('_s').replace('_', ' ')} {v:.1f} s"
                                                 for k, v in phases.items())]
    cols = {k: f"time_{k}" for k in TRIAL_PHASES if f"time_{k}" in trials}
    busy = float(trials.wall_time_s.fillna(0).sum()) if "wall_time_s" in trials else 0.0
    if cols and busy > 0:
        parts = {k: float(trials[c].fillna(0).sum()) for k, c in cols.items()}
        other = busy - sum(parts.values())
        lines.append(f"  trials ({busy:.1f} s of trial time): " + ", ".join(
            f"{TRIAL_PHASES[k]} {100 * v / busy:.1f} %" for k, v in parts.items())
            + f", other (worker start, data, model build) {100 * other / busy:.1f} %")
    return "\n".join(lines)


def _description(spec: StudySpec, budget: str, plan: list[TrialPoint]) -> str:
    arms = list(dict.fromkeys(p.label for p in plan))
    return (f"**{spec.name}**: {spec.description}\n\nbudget {budget}; datasets "
            f"{', '.join(sorted({p.dataset for p in plan}))}; seeds {sorted({p.seed for p in plan})}; "
            f"{len(arms)} arms: {', '.join(arms)}; baseline arm {spec.baseline_arm()}; selection "
            f"{_selection_words(spec)}")


def _selection_words(spec: StudySpec) -> str:
    sel = spec.selection()
    return f"{sel.metric} ({sel.mode})" if sel else "per experiment (" + ", ".join(
        sorted({f"{e}: {SELECTION[e].metric}" for e in spec.experiments()})) + ")"


def _unfinished(grid) -> int:
    """Trials that neither finished nor errored (the run was interrupted)."""
    return sum(1 for r in grid if r.error is None and not (r.metrics or {}).get("done_training", False))


def _trial_name(trial) -> str:
    p = trial.config.get("point", {})
    label = f"{p.get('label', 'trial')}-{p.get('dataset', '')}-s{p.get('seed', '')}"
    return f"{safe_name(label, 80, '-_.=')}-{trial.trial_id}"


def _trial_dirname(trial) -> str:
    return _trial_name(trial)


def _print_errors(grid) -> None:
    for err in grid.errors:
        print(f"trial failed: {str(err).strip().splitlines()[-1] if str(err).strip() else repr(err)}",
              file=sys.stderr)


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


def _resources_words(resources: dict) -> str:
    nodes = sum(1 for k in resources if k.startswith("node:") and not k.startswith("node:__internal"))
    return (f"{resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs on {max(nodes, 1)} "
            f"node{'s' if nodes > 1 else ''}")


def _summary(trials, paths: dict[str, Path], spec: StudySpec, elapsed: float, resources: dict,
             interrupted: bool) -> bool:
    """Print the end-of-study summary, sorted by each trial's own validation metric (best first); return whether
    any trial finished ok."""
    import pandas as pd

    print(f"\nstudy {spec.name} {'interrupted' if interrupted else 'finished'} after {elapsed / 60:.1f} min on "
          f"{_resources_words(resources)}: {status_summary(trials.status)}")
    cols = [c for c in ("arm", "dataset", "seed", "status", "selection_metric", "best_val", "test_iou", "test_ece",
                        "test_x0_error") if c in trials.columns]
    sign = trials.selection_metric.map(lambda m: -1.0 if m in BY_METRIC and BY_METRIC[m].ascending else 1.0)
    order = trials.assign(_score=-(trials.best_val * sign)).sort_values(["dataset", "_score"], na_position="last")
    with pd.option_context("display.width", 160, "display.max_rows", 200):
        print(order[cols].to_string(index=False))
    from ..experiments.selection import BEST_RULE, best_trials

    for _, b in best_trials(trials).iterrows():
        print(f"best on {b.dataset}: {b.arm} seed {b.seed} ({b.selection_metric} {b.best_val:.4f}; {BEST_RULE})")
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
    sys.exit(main())
