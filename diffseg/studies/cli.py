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
from ..data.registry import get_spec
from ..experiments.config import TrialConfig
from .plan import TrialPoint, build_plan, describe_plan
from .spec import SpecError, StudySpec, list_studies, load_spec

STATE_FILE = "diffseg_study.json"
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
           "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0", "RAY_CHDIR_TO_TRIAL_DIR": "0",
           "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="studies/run_study.py", description=__doc__.splitlines()[0])
    p.add_argument("--study", help="study name (a file in search_spaces/) or a path to a study YAML")
    p.add_argument("--list", action="store_true", help="list the studies with one-line descriptions")
    p.add_argument("--dataset", action="append", default=None,
                   help="dataset (repeatable): registry name, folder:PATH or masks:PATH; default: the study's")
    p.add_argument("--data-root", default=None, help="root folder of the dataset (overrides its default root)")
    p.add_argument("--budget", default="smoke", choices=sorted(BUDGETS))
    p.add_argument("--out", default="runs", help="holds Ray results, the MLflow store and artifacts, exports")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: sqlite <out>/mlflow.db)")
    p.add_argument("--address", default=None, help="existing Ray cluster (default: start an embedded local Ray)")
    p.add_argument("--max-concurrent", type=int, default=None, help="trials at once (default: CPUs / cpus-per-trial)")
    p.add_argument("--cpus-per-trial", type=float, default=1.0)
    p.add_argument("--gpus-per-trial", type=float, default=0.0, help="fractional values share a GPU")
    p.add_argument("--num-samples", type=int, default=None, help="draws of the search dimensions (overrides spec)")
    p.add_argument("--seed", type=int, action="append", default=None, help="seed (repeatable; overrides spec)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override a trial config value for every trial, e.g. --set train.steps=50 (repeatable)")
    p.add_argument("--max-failures", type=int, default=1, help="retries of a crashed trial")
    p.add_argument("--resume", action="store_true", help="continue this study's last invocation in --out")
    p.add_argument("--dry-run", action="store_true", help="print the trial plan and resource use; run nothing")
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
            raise ValueError(f"--set {key}: unknown config key; allowed: {sorted(config_keys())}")
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
                 include_dashboard=False,
                 object_store_memory=200 * 1024**2, log_to_driver=False, runtime_env={"env_vars": RAY_ENV})
    return ray.cluster_resources()


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        spec = load_spec(args.study)
    except SpecError as exc:
        return fail(str(exc))
    out = Path(args.out).expanduser().resolve()
    cache_dir = out / "cache"
    _, spec_seeds, spec_datasets = spec.for_budget(args.budget)
    datasets = args.dataset or spec_datasets
    seeds = args.seed or spec_seeds
    num_samples = args.num_samples or spec.num_samples
    try:
        overrides = parse_overrides(args.overrides)
        for name in datasets:
            get_spec(name, args.data_root)
        plan = build_plan(spec, args.budget, datasets, seeds, out, cache_dir, args.data_root, overrides,
                          write=not args.dry_run)
        # build every dataset cache once, in the driver, with the preprocessing the trials use
        if not args.dry_run:
            preps = {(p.dataset, TrialConfig.from_dict(p.config).data.prep()) for p in plan}
            for name, prep in sorted(preps, key=str):
                load_dataset(name, prep, args.data_root, cache_dir)
    except (DatasetError, ValueError, FileNotFoundError) as exc:
        return fail(str(exc))
    if args.cpus_per_trial <= 0 or args.gpus_per_trial < 0:
        return fail("--cpus-per-trial must be > 0 and --gpus-per-trial >= 0")
    n_trials = len(plan) * num_samples
    concurrency = args.max_concurrent or max(1, int((_cpus(args.address) or n_trials) // args.cpus_per_trial))
    if args.dry_run:
        print(f"study {spec.name} ({spec.description}); budget {args.budget}; {n_trials} trials "
              f"({len(plan)} points x {num_samples} samples); algorithm {spec.algorithm}; metric {spec.metric} "
              f"({spec.mode}); resources per trial: {args.cpus_per_trial} CPU, {args.gpus_per_trial} GPU; "
              f"up to {concurrency} at once")
        print(describe_plan(plan))
        if spec.search:
            print(f"search dimensions: {json.dumps(spec.search)}")
        return 0
    return execute(spec, args, out, plan, num_samples, concurrency)


def _state_path(out: Path, study: str) -> Path:
    return out / "ray" / study / STATE_FILE


def execute(spec: StudySpec, args, out: Path, plan: list[TrialPoint], num_samples: int, concurrency: int) -> int:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from . import tracking
    from .export import export_study
    from .progress import Progress
    from .trainable import StudyContext, run_trial

    tracking_uri = args.tracking_uri or tracking.default_tracking_uri(out)
    state_path = _state_path(out, spec.name)
    parent = None
    if args.resume:
        if not state_path.exists():
            return fail(f"nothing to resume: {state_path} does not exist (run without --resume first)")
        state = json.loads(state_path.read_text())
        parent, tracking_uri = state["parent_run_id"], state["tracking_uri"]
    env_tags = tracking.environment_tags()
    exp_id, parent = tracking.setup_study(
        tracking_uri, spec.name, out, parent,
        params={"description": spec.description, "budget": args.budget, "algorithm": spec.algorithm,
                "metric": spec.metric, "mode": spec.mode, "num_samples": num_samples, "trials": len(plan) * num_samples,
                "datasets": sorted({p.dataset for p in plan}), "seeds": sorted({p.seed for p in plan})},
        tags={**env_tags, "budget": args.budget})
    state_path.parent.mkdir(parents=True, exist_ok=True)
    state_path.write_text(json.dumps({"parent_run_id": parent, "tracking_uri": tracking_uri, "budget": args.budget,
                                      "experiment_id": exp_id}))
    print(f"study {spec.name}: {len(plan) * num_samples} trials, MLflow {tracking_uri} (parent run {parent})",
          flush=True)
    resources = start_ray(args.address)
    ctx = StudyContext(spec.name, args.budget, str(out), tracking_uri, exp_id, parent, spec.metric,
                       max(1, math.floor(args.cpus_per_trial)), env_tags)
    trainable = tune.with_resources(tune.with_parameters(run_trial, ctx=ctx),
                                    {"cpu": args.cpus_per_trial, "gpu": args.gpus_per_trial})
    scheduler = None
    if spec.scheduler:
        s = spec.scheduler
        scheduler = ASHAScheduler(time_attr="training_iteration", max_t=s.get("max_t", 100),
                                  grace_period=s.get("grace_period", 1), reduction_factor=s.get("reduction_factor", 2))
    progress = Progress(len(plan) * num_samples, spec.metric, spec.mode, concurrency)

    def run_config(name: str) -> tune.RunConfig:
        return tune.RunConfig(name=name, storage_path=str(out / "ray"), verbose=0, callbacks=[progress],
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
                tune_config=tune.TuneConfig(metric=spec.metric, mode=spec.mode, num_samples=num_samples,
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
            name = f"{spec.name}-{point.dataset}-s{point.seed}".replace(":", "_").replace("/", "_")
            path = str(out / "ray" / name)
            fixed = tune.with_resources(tune.with_parameters(run_trial, ctx=ctx, point=point.to_dict()),
                                        {"cpu": args.cpus_per_trial, "gpu": args.gpus_per_trial})
            if args.resume and tune.Tuner.can_restore(path):
                tuner = tune.Tuner.restore(path, fixed, resume_unfinished=True, resume_errored=True)
            else:
                search = OptunaSearch(metric=spec.metric, mode=spec.mode, seed=point.seed + i,
                                      storage=f"sqlite:///{out / 'optuna.db'}", study_name=name)
                tuner = tune.Tuner(fixed, param_space=search_space(spec), tune_config=tune.TuneConfig(
                    metric=spec.metric, mode=spec.mode, num_samples=num_samples, search_alg=search,
                    max_concurrent_trials=concurrency, scheduler=scheduler),
                    run_config=run_config(name))
            grid = tuner.fit()
            errors += grid.num_errors
            unfinished += _unfinished(grid)
            _print_errors(grid)
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri).set_terminated(parent, "KILLED" if unfinished else "FAILED" if errors else "FINISHED")
    if unfinished:
        print(f"interrupted: {unfinished} trial(s) unfinished; continue with the same command and --resume",
              file=sys.stderr)
    paths = export_study(tracking_uri, spec.name, out / "exports" / spec.name, parent)
    _summary(paths, spec, time.monotonic() - t0, resources)
    return 1 if errors or unfinished else 0


def _unfinished(grid) -> int:
    """Trials that neither finished nor errored (the run was interrupted)."""
    return sum(1 for r in grid if r.error is None and not (r.metrics or {}).get("done_training", False))


def _trial_name(trial) -> str:
    p = trial.config.get("point", {})
    label = f"{p.get('label', 'trial')}-{p.get('dataset', '')}-s{p.get('seed', '')}"
    return "".join(ch if ch.isalnum() or ch in "-_.=" else "_" for ch in label)[:80] + f"-{trial.trial_id}"


def _trial_dirname(trial) -> str:
    return trial.trial_id


def _print_errors(grid) -> None:
    for err in grid.errors:
        print(f"trial failed: {str(err).strip().splitlines()[-1] if str(err).strip() else repr(err)}",
              file=sys.stderr)


def _summary(paths: dict[str, Path], spec: StudySpec, elapsed: float, resources: dict) -> None:
    import pandas as pd

    trials = pd.read_parquet(paths["trials"])
    metric_col = "test_iou" if "test_iou" in trials.columns else "best_val"
    print(f"\nstudy {spec.name} finished in {elapsed / 60:.1f} min on {resources}: "
          f"{int((trials.status == 'ok').sum())} ok, {int((trials.status == 'error').sum())} failed, "
          f"{int((trials.status == 'nan_loss').sum())} NaN-loss")
    cols = [c for c in ("arm", "dataset", "seed", "status", "best_val", "test_iou", "test_ece", "test_x0_error")
            if c in trials.columns]
    with pd.option_context("display.width", 160, "display.max_rows", 200):
        print(trials[cols].sort_values(["dataset", metric_col], ascending=[True, False]).to_string(index=False))
    print(f"exports: {paths['trials'].parent}")


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
