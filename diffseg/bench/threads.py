"""Where a trial's training steps run, and what it costs (issue 24, part 3: are the same steps slower inside Ray?).

The same smoke-budget EnsemDiff training steps at every CPU of the machine, each placement in a fresh process:

- ``main``: on the main thread (the plain loop of ``bench study``);
- ``thread``: on a new thread, the main thread having run no torch work (how a Ray trial worker runs a trial:
  Ray Tune calls a function trainable on a thread of its own);
- ``thread-after-main``: on a new thread after the main thread ran torch work. libgomp (torch's OpenMP on Linux)
  keeps one thread pool per thread that ran a parallel region; once its threads outnumber the CPUs it shortens
  every pool's spin-wait at barriers (``gomp_throttled_spin_count_var``), so the steps wait on the kernel instead;
- ``beside-ray``: on the main thread of a process that holds an idle embedded Ray (its raylet, GCS and the
  driver's threads run beside the steps, as they run beside every trial of a study);
- ``tune``: inside a real Ray Tune trial on the study's embedded Ray (``runner.start_ray``).

``repeat`` rounds, the placements in a rotated order each round; per placement the median ms per step and its
ratio to ``main`` paired by round, and what each run saw (whether its steps ran on the main thread, whether the
main thread had run torch work first). ``python -m diffseg.bench threads [--json]``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd

from ..metrics.intervals import mean_ci_dict
from ..process import usable_cpus

PLACEMENTS = ("main", "thread", "thread-after-main", "beside-ray", "tune")
WARMUP, STEPS = 10, 60


def _time_steps(threads: int, steps: int) -> dict:
    """ms per training step (after ``WARMUP`` steps) where this function is called, and where that was."""
    import torch

    from .models import _trial_cfg, step_parts
    from .speedups import _step

    torch.set_num_threads(threads)
    step = _step(step_parts(_trial_cfg("smoke", "ensemdiff")))
    for _ in range(WARMUP):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return {"ms_per_step": 1000 * (time.perf_counter() - t0) / steps,
            "on_main_thread": threading.current_thread() is threading.main_thread(),
            "torch_threads": torch.get_num_threads(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")}


def _in_tune(threads: int, steps: int) -> dict:
    from ray import tune

    from ..studies.runner import start_ray

    start_ray(None)

    def trainable(config):
        tune.report(_time_steps(config["threads"], config["steps"]))

    grid = tune.Tuner(tune.with_resources(trainable, {"cpu": threads}),
                      param_space={"threads": threads, "steps": steps},
                      run_config=tune.RunConfig(storage_path=os.path.join(os.getcwd(), "tune"), verbose=0)).fit()
    if grid.num_errors:
        raise RuntimeError(f"the Tune trial failed: {grid.errors}")
    return {k: grid[0].metrics[k] for k in ("ms_per_step", "on_main_thread", "torch_threads", "OMP_NUM_THREADS")}


def placement_run(placement: str, threads: int, steps: int) -> dict:
    """One placement in this process (``placement_run`` is what each fresh process runs)."""
    main_ran_torch = placement == "thread-after-main"
    if main_ran_torch:
        import torch

        torch.set_num_threads(threads)
        x = torch.randn(256, 256)
        torch.nn.functional.conv2d(torch.randn(4, 16, 48, 48), torch.randn(16, 16, 3, 3))
        torch.mm(x, x)  # parallel regions on the main thread: its own OpenMP pool
    if placement in ("main", "beside-ray"):
        if placement == "beside-ray":
            from ..studies.runner import start_ray

            start_ray(None)
        out = _time_steps(threads, steps)
    elif placement == "tune":
        out = _in_tune(threads, steps)
    else:
        box = {}
        worker = threading.Thread(target=lambda: box.update(_time_steps(threads, steps)))
        worker.start()
        worker.join()
        out = box
    return {"placement": placement, "main_ran_torch": main_ran_torch, **out}


def _fresh(call: str, *args, cwd: str):
    """``threads.<call>(*args)`` in a fresh Python process; its JSON result."""
    code = ("import json, sys; from diffseg.bench import threads; "
            "print(json.dumps(getattr(threads, sys.argv[1])(*json.loads(sys.argv[2]))))")
    proc = subprocess.run([sys.executable, "-c", code, call, json.dumps(args)], capture_output=True, text=True,
                          cwd=cwd)
    if proc.returncode != 0:
        raise RuntimeError(f"{call}{args} exited with {proc.returncode}:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def step_placements(repeat: int = 3, which=PLACEMENTS, steps: int = STEPS) -> dict:
    """``repeat`` rounds of the placements (a fresh process each, the order rotated): median ms per step and the
    ratio to ``main`` paired by round."""
    threads = usable_cpus()
    rows = []
    with tempfile.TemporaryDirectory(prefix="diffseg-threads-") as tmp:
        for i in range(repeat):
            for placement in which[i % len(which):] + which[:i % len(which)]:
                rows.append({"round": i, **_fresh("placement_run", placement, threads, steps, cwd=tmp)})
    df = pd.DataFrame(rows)
    median = df.groupby("placement").ms_per_step.median()
    return {"threads": threads, "steps": steps, "repeat": repeat, "runs": rows,
            "median_ms": {p: float(median[p]) for p in which}, "ratio_to_main": paired_ratios(df)}


def run(repeat: int = 3, requests: int = 12) -> dict:
    """The placements of the training steps, then ``serving``, ``repeat`` rounds each."""
    return {**step_placements(repeat), "serving": serving(requests, repeat)}


def paired_ratios(df: pd.DataFrame) -> dict:
    """Per placement, its ms per step over ``main``'s in the same round (adjacent in time, so the machine's drift
    cancels): the mean ratio with its 95 % t interval over the rounds (``mean_ci``); empty without ``main``."""
    if "main" not in set(df.placement):
        return {}
    ms = df.pivot(index="round", columns="placement", values="ms_per_step")
    return {p: mean_ci_dict((ms[p] / ms["main"]).tolist()) for p in ms.columns}


def _served_model(root: Path) -> tuple[str, str]:
    """A smoke-budget EnsemDiff (2 training steps: the weights do not matter to the timing) logged as a study trial
    logs it; returns (tracking URI, model URI)."""
    from mlflow.tracking import MlflowClient

    from ..budgets import budget_overlay
    from ..experiments import train_trial
    from ..folder import StudyFolder
    from ..studies import tracking
    from ..studies.logged_models import log_trial_model

    folder = StudyFolder(root / "runs")
    uri = folder.store_uri
    exp_id, parent = tracking.setup_study(uri, "serving", folder.root, None, params={}, tags={})
    run_id, _ = tracking.child_run(MlflowClient(uri), exp_id, parent, "t0", "t0", {})
    result = train_trial({**budget_overlay("smoke", "synthetic-blob"), "data.dataset": "synthetic-blob",
                          "model.architecture": "ensemdiff", "train.steps": 2, "eval.val_max_images": 2,
                          "eval.test_max_images": 2, "eval.curve_points": 2, "eval.curve_max_images": 1,
                          "output_dir": str(root / "trial")})
    return uri, log_trial_model(uri, run_id, result)


def request_times(way: str, tracking_uri: str, model_uri: str, requests: int, burst: int = 4) -> list[float]:
    """ms per request as MLflow's scoring server makes them: the model loaded on the main thread, each request
    through ``asyncio.to_thread``; timed after a burst of ``burst`` concurrent requests (the executor then holds
    several threads, and a request may land on any of them). ``segmenter``: ``mlflow.pyfunc.load_model(...)
    .predict``; ``caller-threads``: the same predictor called on the request threads (the segmenter before it had
    a thread of its own)."""
    import asyncio

    import mlflow
    import numpy as np

    from ..studies.logged_models import read_model_folder

    mlflow.set_tracking_uri(tracking_uri)
    params = {"ensemble": 4, "steps": 10}
    images = (np.random.default_rng(0).random((2, 48, 48, 3)) * 255).astype(np.uint8)
    if way == "segmenter":
        model = mlflow.pyfunc.load_model(model_uri)

        def request():
            model.predict(images, params=params)
    else:
        predictor = read_model_folder(Path(mlflow.artifacts.download_artifacts(model_uri)))

        def request():
            for img in images:
                predictor.predict(img, params["ensemble"], params["steps"], None, 0)

    def timed():
        t0 = time.perf_counter()
        request()
        return 1000 * (time.perf_counter() - t0)

    async def served():
        await asyncio.gather(*(asyncio.to_thread(request) for _ in range(burst)))
        return [await asyncio.to_thread(timed) for _ in range(requests)]
    return asyncio.run(served())


def serving(requests: int = 12, repeat: int = 3, burst: int = 4) -> dict:
    """``repeat`` rounds of both ways (a fresh process each, the order alternating): median ms per request."""
    with tempfile.TemporaryDirectory(prefix="diffseg-serving-") as tmp:
        uri, model_uri = _served_model(Path(tmp))
        rows = []
        for i in range(repeat):
            for way in (("segmenter", "caller-threads") if i % 2 == 0 else ("caller-threads", "segmenter")):
                ms = _fresh("request_times", way, uri, model_uri, requests, burst, cwd=tmp)
                rows.append({"round": i, "way": way, "median_ms": float(pd.Series(ms).median())})
    df = pd.DataFrame(rows)
    return {"requests": requests, "repeat": repeat, "burst": burst, "runs": rows,
            "median_ms": {w: float(v) for w, v in df.groupby("way").median_ms.median().items()}}


def table(r: dict) -> str:
    lines = [f"training steps by placement (smoke EnsemDiff, {r['threads']} threads, {r['steps']} steps after "
             f"{WARMUP} warm-up, each run a fresh process; median of {r['repeat']}; ratio to main in the same round, "
             "mean [95 % CI])"]
    for p, ms in r["median_ms"].items():
        runs = [x for x in r["runs"] if x["placement"] == p]
        where = "main thread" if runs[0]["on_main_thread"] else "another thread"
        q = r["ratio_to_main"].get(p, {"mean": float("nan"), "low": float("nan"), "high": float("nan")})
        lines.append(f"  {p:18s} {ms:7.1f} ms/step  x{q['mean']:.2f} [{q['low']:.2f}, {q['high']:.2f}]  ({where}"
                     f"{', after torch work on the main thread' if runs[0]['main_ran_torch'] else ''}; runs: "
                     f"{', '.join(format(x['ms_per_step'], '.0f') for x in runs)})")
    sv = r["serving"]
    lines.append(f"a logged smoke EnsemDiff served as MLflow's scoring server calls it (loaded on the main thread, "
                 f"each request through asyncio.to_thread, timed after a burst of {sv['burst']} concurrent ones; "
                 f"2 images, ensemble 4, 10 steps; median ms per request of {sv['requests']}, median of "
                 f"{sv['repeat']} runs)")
    for way, ms in sv["median_ms"].items():
        runs = ", ".join(format(x["median_ms"], ".0f") for x in sv["runs"] if x["way"] == way)
        lines.append(f"  {way:18s} {ms:7.1f} ms/request  (runs: {runs})")
    return "\n".join(lines)
