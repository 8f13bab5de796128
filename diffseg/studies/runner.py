"""The study API under the command line: ``make_plan`` (a pure function of the study, the budget and the folder;
``write=False`` checks and prepares everything in memory) and ``run_study(spec, plan, options)`` (open the study
folder and its tracking store, run the trials with Ray Tune, close: mark, export, summarise, register). The CLI,
the benchmarks and a notebook call it the same way::

    spec = load_spec("weighting_schedules")
    plan = make_plan(spec, "smoke", StudyFolder("runs"))
    outcome = run_study(spec, plan, RunOptions(StudyFolder("runs")))
    outcome.trials  # the exported trials table

Bad input raises ``StudyRefused`` (the CLI's exit 2) before Ray starts and before anything is written."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..data import load_dataset
from ..experiments import build
from ..experiments.config import TrialConfig
from ..experiments.kinds import SELECTION
from ..experiments.result import TRIAL_PHASE_LABELS
from ..files import Busy, atomic_write_text, owner_lock, safe_name
from ..folder import StudyFolder, is_server
from ..process import usable_cpus
from . import state_seal
from .plan import TrialPoint, build_plan, resume_conflict, save_plan
from .spec import StudySpec

RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
           "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0", "RAY_CHDIR_TO_TRIAL_DIR": "0",
           "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
           # a tracking server that stops answering fails a call in about 30 s instead of minutes of retries
           "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
           "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
# the embedded Ray prestarts no idle workers: Tune's trial actors start workers of their own (measured: never one
# of those), so on a small machine the prestarted ones only took CPU from the driver's start-up. Its workers run at
# niceness 0, not Ray's default 15: at 15 a trial's training steps yield the CPU to the driver, the raylet, the GCS
# and the MLflow server whenever those wake up, so the same steps ran slower inside Ray than in a plain loop.
LOCAL_RAY_CONFIG = {"enable_worker_prestart": False, "prestart_worker_first_driver": False, "worker_niceness": 0}
# The embedded Ray's log monitor (its daemons inherit this environment) lists its log folder every 0.5 s instead of
# at each 0.1-s poll, Ray's default below 1,000 log files: measured idle here, 0.67 -> 0.36 % of a core, CPU that a
# trial filling every core loses. The driver takes no worker output (log_to_driver=False), so nothing waits on it.
LOCAL_RAY_ENV = {"RAY_LOG_MONITOR_MANY_FILES_THRESHOLD": "0"}
RESUME_HINT = "continue with the same command and --resume"
SETUP = "setup_s"  # the driver's set-up phase: its parts below ran on two threads at once
SETUP_PARTS = PREPARE, TRACKING_SETUP, RAY_START = ("prepare_s", "tracking_setup_s", "ray_start_s")


class StudyRefused(ValueError):
    """Bad input found before Ray starts and before anything is written (the CLI's exit 2)."""


@dataclass
class Plan:
    """The trial points of one invocation and what they were built from."""
    budget: str
    points: list[TrialPoint]
    num_samples: int
    datasets: list[str] | None = None
    seeds: list[int] | None = None
    data_root: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    test_images: list[int] = field(default_factory=list)  # per point: the test images its final evaluation uses

    @property
    def trials(self) -> int:
        return len(self.points) * self.num_samples


def make_plan(spec: StudySpec, budget: str, folder: StudyFolder, datasets: list[str] | None = None,
              seeds: list[int] | None = None, data_root=None, overrides: dict[str, Any] | None = None,
              num_samples: int | None = None, write: bool = False) -> Plan:
    """Every trial point, with every dataset cache loaded once in the driver with the preprocessing its trials use
    (``write=False``: checked and prepared in memory; nothing is written)."""
    points = build_plan(spec, budget, datasets, seeds, folder, data_root, overrides, write=write)
    loaded = {}
    for name, prep in sorted({(p.dataset, build.prep(TrialConfig.from_dict(p.config))) for p in points}, key=str):
        loaded[name, prep] = load_dataset(name, prep, data_root, folder.cache, write=write)
    tests = []
    for p in points:
        cfg = TrialConfig.from_dict(p.config)
        d = cfg.data
        n = len(loaded[p.dataset, build.prep(cfg)].splits(d.split_seed, d.val_fraction, d.test_fraction)["test"])
        tests.append(min(n, cfg.eval.test_max_images or n))
    return Plan(budget, points, num_samples or spec.num_samples, datasets, seeds,
                None if data_root is None else str(data_root), dict(overrides or {}), tests)


@dataclass
class RunOptions:
    """How (not what) a study runs."""
    folder: StudyFolder
    tracking_uri: str | None = None  # default: ``tracking.store_for`` (recorded server, else the folder's store)
    address: str | None = None  # an existing Ray cluster; None: an embedded local Ray
    max_concurrent: int | None = None  # default: CPUs / cpus_per_trial (unbounded on a cluster)
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_failures: int = 1
    resume: bool = False
    log_models: bool = True
    command: str = ""  # written into the folder's lock, for whoever finds it busy
    trust_state: bool = False  # --resume restores Ray state without its seal (a folder copied from another user)

    def concurrency(self, trials: int) -> int:
        cpus = usable_cpus() if self.address is None else 0  # a cluster: Ray's resources bound it
        return self.max_concurrent or max(1, int((cpus or trials) // self.cpus_per_trial))


@dataclass
class StudyOutcome:
    trials: Any = None  # the exported trials table (pandas), None when the study could not be closed
    paths: dict = field(default_factory=dict)  # export table -> path
    errors: int = 0
    unfinished: int = 0
    killed: int = 0  # child runs still RUNNING that were marked KILLED
    elapsed_s: float = 0.0
    resources: dict = field(default_factory=dict)
    nodes: int = 1  # Ray nodes alive when the trials started
    phases: dict = field(default_factory=dict)  # the driver's phases, seconds
    registered: list[str] = field(default_factory=list)
    problem: str | None = None  # why the study could not be closed (a tracking outage): continue with --resume


def selection_words(spec: StudySpec) -> str:
    sel = spec.selection()
    return f"{sel.metric} ({sel.mode})" if sel else "per experiment (" + ", ".join(
        sorted({f"{e}: {SELECTION[e].metric}" for e in spec.experiments()})) + ")"


def start_ray(address: str | None) -> dict[str, float]:
    import ray
    import torch

    os.environ.update({k: v for k, v in RAY_ENV.items() if k not in os.environ})
    if ray.is_initialized():  # a caller (e.g. a test session) already started Ray: use it
        return ray.cluster_resources()
    if address:  # the cluster's workers do not inherit this process's environment: RAY_ENV goes with the job
        ray.init(address=address, log_to_driver=False, runtime_env={"env_vars": RAY_ENV})
    else:  # the embedded Ray's workers inherit it (a runtime_env would start each through Ray's setup_worker:
        # measured here 0.3 s and 0.3 CPU-s more per worker start)
        os.environ.update({k: v for k, v in LOCAL_RAY_ENV.items() if k not in os.environ})
        ray.init(address="local", num_cpus=usable_cpus(), num_gpus=torch.cuda.device_count(),
                 include_dashboard=False, object_store_memory=200 * 1024**2, log_to_driver=False,
                 _system_config=LOCAL_RAY_CONFIG)
    return ray.cluster_resources()


def _alive_nodes() -> int:
    import ray

    return sum(1 for n in ray.nodes() if n.get("Alive"))


def _description(spec: StudySpec, budget: str, points: list[TrialPoint]) -> str:
    arms = list(dict.fromkeys(p.label for p in points))
    return (f"**{spec.name}**: {spec.description}\n\nbudget {budget}; datasets "
            f"{', '.join(sorted({p.dataset for p in points}))}; seeds {sorted({p.seed for p in points})}; "
            f"{len(arms)} arms: {', '.join(arms)}; baseline arm {spec.baseline_arm()}; selection "
            f"{selection_words(spec)}")


def search_space(spec: StudySpec) -> dict[str, Any]:
    from ray import tune

    make = {"uniform": tune.uniform, "loguniform": tune.loguniform, "randint": tune.randint}
    return {key: tune.choice(d["values"]) if d["type"] == "choice" else make[d["type"]](d["low"], d["high"])
            for key, d in spec.search.items()}


def tune_names(spec: StudySpec, points: list[TrialPoint]) -> list[str]:
    """The study's Tune experiments (folders under ``ray/``): the grid, or one search per dataset and seed."""
    if spec.algorithm == "grid":
        return [spec.name]
    return [safe_name(f"{spec.name}-{p.dataset}-s{p.seed}", 120, "-_.") for p in points]


def trial_name(trial) -> str:
    p = trial.config.get("point", {})
    label = f"{p.get('label', 'trial')}-{p.get('dataset', '')}-s{p.get('seed', '')}"
    return f"{safe_name(label, 80, '-_.=')}-{trial.trial_id}"


def _unfinished(grid) -> int:
    """Trials that neither finished nor errored (the run was interrupted)."""
    return sum(1 for r in grid if r.error is None and not (r.metrics or {}).get("done_training", False))


def _print_errors(grid) -> None:
    for err in grid.errors:
        print(f"trial failed: {str(err).strip().splitlines()[-1] if str(err).strip() else repr(err)}",
              file=sys.stderr)


def run_study(spec: StudySpec, plan: Plan, options: RunOptions) -> StudyOutcome:
    """Run the planned trials (``plan`` as ``make_plan`` built it, in memory) in ``options.folder``: hold the
    folder's lock, write the plan's fingerprints and caches, open the study's tracking store and parent run, tune,
    then close the study (mark unfinished runs, export, summarise the parent run, register the best models)."""
    from . import tracking

    folder, o = options.folder, options
    state_path = folder.state(spec.name)
    recorded = None
    if o.resume:
        if not state_path.exists():
            others = folder.studies_with_state()
            held = f"; {folder.root} holds the study {', '.join(others)}, not {spec.name}" if others else ""
            raise StudyRefused(f"nothing to resume: {state_path} does not exist{held} (run without --resume first)")
        recorded = json.loads(state_path.read_text()).get("tracking_uri")  # None: the folder's own store
        conflict = resume_conflict(folder, spec.name, spec.path, plan.points)
        if conflict:
            raise StudyRefused(conflict)
        if not o.trust_state:
            unsealed = next(filter(None, (state_seal.problem(folder.tune_dir(name))
                                          for name in tune_names(spec, plan.points))), None)
            if unsealed:
                raise StudyRefused(unsealed)
    try:
        tracking_uri = tracking.store_for(folder, o.tracking_uri or recorded, create=True)
    except ValueError as exc:
        raise StudyRefused(str(exc)) from None
    unreachable = tracking.probe(tracking_uri)
    if unreachable:
        raise StudyRefused(unreachable)
    try:
        with owner_lock(folder.lock, {"study": spec.name, "command": o.command}) as lock:
            if lock["taken_over"]:
                print(f"note: took over the lock of a driver that is gone ({lock['taken_over']})", file=sys.stderr)
            return _run(spec, plan, o, tracking_uri)
    except Busy as busy:
        h = busy.holder
        raise StudyRefused(f"--out {folder.root} is in use by study {h.get('study', '?')!r} (pid "
                           f"{h.get('pid', '?')} on {h.get('host', '?')}, since {h.get('started', '?')}): wait for "
                           "it, or use another --out") from None


def _set_up(spec: StudySpec, plan: Plan, o: RunOptions, tracking_uri: str, phases: dict[str, float]):
    """Write the plan's dataset caches and fingerprints (``prepare_s``), open the study's parent run, write its
    state and plan (``tracking_setup_s``). Returns (plan, experiment id, parent run id, environment tags)."""
    from . import tracking

    folder = o.folder
    t = time.monotonic()
    plan = make_plan(spec, plan.budget, folder, plan.datasets, plan.seeds, plan.data_root, plan.overrides,
                     plan.num_samples, write=True)
    phases[PREPARE] = time.monotonic() - t
    points, n = plan.points, plan.trials
    state_path = folder.state(spec.name)
    parent = json.loads(state_path.read_text())["parent_run_id"] if o.resume else None
    t = time.monotonic()
    env_tags = tracking.environment_tags()
    exp_id, parent = tracking.setup_study(
        tracking_uri, spec.name, folder.root, parent,
        params={"description": spec.description, "budget": plan.budget, "algorithm": spec.algorithm,
                "selection": selection_words(spec), "baseline": spec.baseline_arm(),
                "num_samples": plan.num_samples, "trials": n, "datasets": sorted({p.dataset for p in points}),
                "seeds": sorted({p.seed for p in points})},
        tags={**env_tags, "budget": plan.budget}, description=_description(spec, plan.budget, points))
    if not o.resume:  # the study file and the resolved plan, as the parent's artifacts
        client = tracking.MlflowClient(tracking_uri)
        client.log_artifact(parent, str(spec.path), "study")
        tracking.log_json_artifact(client, parent, [p.to_dict() for p in points], "plan.json")
    atomic_write_text(state_path, json.dumps({"parent_run_id": parent, "budget": plan.budget,
                                              "tracking_uri": None if folder.owns(tracking_uri) else tracking_uri,
                                              "experiment_id": exp_id}))
    if not o.resume:
        save_plan(folder, spec.name, spec.path, points)
    phases[TRACKING_SETUP] = time.monotonic() - t  # a new local store gets its schema here
    return plan, exp_id, parent, env_tags


def _run(spec: StudySpec, plan: Plan, o: RunOptions, tracking_uri: str) -> StudyOutcome:
    # The set-up runs on a helper thread while this one starts Ray (Ray sets its SIGTERM handler only from the
    # main thread): Ray's start waits mostly on its daemons' start-up, the set-up is Python and SQLite work
    phases: dict[str, float] = {}
    t0 = time.monotonic()
    with ThreadPoolExecutor(1, thread_name_prefix="study-setup") as pool:
        setup = pool.submit(_set_up, spec, plan, o, tracking_uri, phases)
        import ray
        from ray import tune
        from ray.tune.schedulers import ASHAScheduler

        from . import tracking
        from .progress import OutageWatch, Progress, SealState
        from .trainable import StudyContext, run_trial

        t = time.monotonic()
        started = not ray.is_initialized()  # else a caller's Ray (a test session), left running
        cluster = start_ray(o.address)
        phases[RAY_START] = time.monotonic() - t
        try:
            plan, exp_id, parent, env_tags = setup.result()
        except BaseException:
            if started:  # a set-up that failed leaves no Ray of its own running
                ray.shutdown()
            raise
    phases[SETUP] = time.monotonic() - t0
    folder, points, n = o.folder, plan.points, plan.trials
    print(f"study {spec.name}: {n} trials, MLflow {tracking_uri} (parent run {parent})", flush=True)
    if is_server(tracking_uri):
        print(f"MLflow UI: {tracking.ui_url(tracking_uri, exp_id)}", flush=True)
    out = StudyOutcome(resources=cluster, phases=phases, nodes=_alive_nodes())
    ctx = StudyContext(spec.name, plan.budget, str(folder.root), tracking_uri, exp_id, parent,
                       max(1, math.floor(o.cpus_per_trial)), env_tags, o.log_models)
    resources = {"cpu": o.cpus_per_trial, "gpu": o.gpus_per_trial}
    concurrency = o.concurrency(n)
    scheduler = None
    if spec.scheduler:
        s = spec.scheduler
        scheduler = ASHAScheduler(time_attr="training_iteration", max_t=s.get("max_t", 100),
                                  grace_period=s.get("grace_period", 1), reduction_factor=s.get("reduction_factor", 2))
    sel = spec.selection()
    tune_metric = {"metric": sel.metric, "mode": sel.mode} if sel else {}  # mixed experiments: no single metric
    progress = Progress(n, concurrency)
    outage = OutageWatch(tracking_uri)

    def fit(name: str, trainable, param_space: dict, **tune_config) -> None:
        """One Tuner (restored from ``folder.tune_dir(name)`` on resume) run to its end."""
        path, sealer = str(folder.tune_dir(name)), state_seal.Sealer(folder.tune_dir(name))
        if o.resume and tune.Tuner.can_restore(path):  # its seal verified by run_study (or --trust-state)
            tuner = tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=True)
        else:
            tuner = tune.Tuner(trainable, param_space=param_space, tune_config=tune.TuneConfig(
                **tune_metric, num_samples=plan.num_samples, reuse_actors=True, max_concurrent_trials=concurrency,
                scheduler=scheduler, **tune_config), run_config=tune.RunConfig(
                name=name, storage_path=str(folder.ray), verbose=0, callbacks=[progress, outage, SealState(sealer)],
                failure_config=tune.FailureConfig(max_failures=o.max_failures),
                # two: a driver killed after a new checkpoint replaced the old one but before Tune saved its state
                # (which names the old one) still finds it on --resume (seen: "checkpoint does not exist")
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2)))
        sealer.seal()  # tuner.pkl
        try:
            grid = tuner.fit()
        finally:
            sealer.seal()
        out.errors += grid.num_errors
        out.unfinished += _unfinished(grid)
        _print_errors(grid)

    t0 = time.monotonic()
    names = tune_names(spec, points)
    if spec.algorithm == "grid":
        fit(names[0], tune.with_resources(tune.with_parameters(run_trial, ctx=ctx), resources),
            {"point": tune.grid_search([p.to_dict() for p in points]), **search_space(spec)},
            trial_name_creator=trial_name, trial_dirname_creator=trial_name)
    else:
        from ray.tune.search.optuna import OptunaSearch

        for i, point in enumerate(points):
            if outage.down or tracking.probe(tracking_uri):
                out.unfinished += plan.num_samples
                continue
            name = names[i]
            fit(name, tune.with_resources(tune.with_parameters(run_trial, ctx=ctx, point=point.to_dict()), resources),
                search_space(spec), search_alg=OptunaSearch(**tune_metric, seed=point.seed + i,
                                                            storage=folder.optuna_storage, study_name=name))
    out.elapsed_s = phases["trials_s"] = time.monotonic() - t0
    # the study's own Ray stops beside the study's close, which needs MLflow only (at the interpreter's exit,
    # Ray's hook would first sleep 0.5 s, then wait on its daemons: 1.4 s here)
    with ThreadPoolExecutor(1, thread_name_prefix="ray-stop") as pool:
        if started:
            pool.submit(ray.shutdown)
        if outage.down or tracking.probe(tracking_uri):  # (Tune may run a copy of the callback)
            out.problem = (f"the MLflow tracking server {tracking_uri} stopped answering during the study; "
                           f"finished trials keep their results and checkpoints under {folder.root}; when the "
                           f"server is back, {RESUME_HINT}")
            return out
        _close(spec, o, tracking_uri, exp_id, parent, out)
    return out


def _close(spec: StudySpec, o: RunOptions, tracking_uri: str, exp_id: str, parent: str, out: StudyOutcome) -> None:
    """Mark the parent and its unfinished child runs, export, summarise the parent run, register the best models."""
    import pandas as pd
    from mlflow.exceptions import MlflowException

    from . import tracking
    from .export import export_study

    try:
        client = tracking.MlflowClient(tracking_uri)
        out.killed = tracking.mark_unfinished(client, exp_id, parent) if out.unfinished or out.errors else 0
        client.set_terminated(parent, "KILLED" if out.unfinished else "FAILED" if out.errors else "FINISHED")
        t = time.monotonic()
        out.paths = export_study(tracking_uri, spec.name, o.folder, parent)
        out.trials = pd.read_parquet(out.paths["trials"])
        tracking.summarise_parent(client, parent, out.trials, o.folder.exports(spec.name))
        out.phases["export_s"] = time.monotonic() - t
        if o.log_models:
            from .logged_models import register_best

            t = time.monotonic()
            out.registered = register_best(tracking_uri, spec.name, out.trials)
            out.phases["registry_s"] = time.monotonic() - t
        tracking.log_metrics(client, parent, {f"time.{k}": v for k, v in out.phases.items()}, step=0)
    except (MlflowException, OSError) as exc:
        out.problem = (f"MLflow at {tracking_uri} failed at the end of the study ({str(exc).splitlines()[0]}); "
                       f"{RESUME_HINT} once it answers")


def time_breakdown(phases: dict[str, float], trials) -> str:
    """Where the study's wall time went: the driver's phases, and the trials' summed time per phase (with what
    the trial phases do not cover: worker start-up, dataset loading, model building, Ray scheduling)."""
    def words(k: str) -> str:
        return f"{k.removesuffix('_s').replace('_', ' ')} {phases[k]:.1f} s"

    def phase(k: str) -> str:  # SETUP is recorded once all its parts are
        return (f"{words(k)} ({words(PREPARE)} and {words(TRACKING_SETUP)} beside {words(RAY_START)})"
                if k == SETUP else words(k))

    lines = ["where the time went: " + ", ".join(phase(k) for k in phases if k not in SETUP_PARTS)]
    cols = {k: f"time_{k}" for k in TRIAL_PHASE_LABELS if f"time_{k}" in trials}
    busy = float(trials.wall_time_s.fillna(0).sum()) if "wall_time_s" in trials else 0.0
    if cols and busy > 0:
        parts = {k: float(trials[c].fillna(0).sum()) for k, c in cols.items()}
        other = busy - sum(parts.values())
        lines.append(f"  trials ({busy:.1f} s of trial time): " + ", ".join(
            f"{TRIAL_PHASE_LABELS[k]} {100 * v / busy:.1f} %" for k, v in parts.items())
            + f", other (worker start, data, model build) {100 * other / busy:.1f} %")
    return "\n".join(lines)
