"""Faults as an operator meets them, end to end through Ray and MLflow with tiny trials: Ctrl-C, kill -9 of the
driver and of a trial worker, a tracking server that dies mid-study, two studies on one server, a study in which
no trial finishes ok. Drivers run as subprocesses in their own session (their embedded Ray included), so a kill
reaches exactly that study."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from diffseg.experiments import train_trial
from diffseg.experiments.result import RESULT_ARTIFACT
from tests.conftest import free_port, start_mlflow_server, stop_server

ROOT = Path(__file__).resolve().parents[1]
STEPS = 40  # 40 steps of about 70 ms, a checkpoint every 10: long enough to interrupt, short enough for CI
FIXED = ("{model.architecture: ensemdiff, model.base_channels: 8, model.channel_mult: [1, 2], data.resolution: 32, "
         f"train.steps: {STEPS}, train.val_every: 10, train.batch_size: 8, eval.ensemble: 2, eval.steps: 2, "
         "eval.val_steps: 2, eval.val_max_images: 3, eval.test_max_images: 3, eval.curve_points: 4, "
         "eval.curve_max_images: 3}")


def study_file(path: Path, arms: str = "[{label: uniform}, {label: p2, diffusion.weighting: p2}]") -> Path:
    path.write_text(f"description: faults\nexperiment: e2\nfixed: {FIXED}\ngrid:\n  w: {arms}\nseeds: [0]\n"
                    "datasets: [synthetic-blob]\nbudgets:\n  smoke: {}\n")
    return path


def start(spec: Path, out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, str(ROOT / "studies" / "run_study.py"), "--study", str(spec), "--out",
                             str(out), "--cpus-per-trial", "1", *extra], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def wait_for(cond, timeout: float = 120, what: str = "") -> None:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


def checkpoints(out: Path) -> list[Path]:
    return list((out / "trials").glob("*/checkpoint/state.pt")) if (out / "trials").exists() else []


def children(client: MlflowClient, study: str):
    exp = client.get_experiment_by_name(study)
    runs = client.search_runs([exp.experiment_id], max_results=100)
    parents = [r for r in runs if r.data.tags.get("diffseg.role") == "study"]
    return parents, [r for r in runs if r.data.tags.get("diffseg.role") == "trial"]


@pytest.mark.slow(seconds=110)
def test_ctrl_c_then_kill_9_then_resume(tmp_path):
    spec, out = study_file(tmp_path / "faults.yaml"), tmp_path / "runs"
    proc = start(spec, out)
    wait_for(lambda: checkpoints(out), what="a first checkpoint")
    proc.send_signal(signal.SIGINT)  # Ctrl-C on the driver
    rc, log = finish(proc)
    assert rc == 1 and "interrupted" in log, log
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    parents, kids = children(client, "faults")
    assert len(parents) == 1 and parents[0].info.status == "KILLED"
    assert kids and all(r.info.status != "RUNNING" for r in kids), [r.info.status for r in kids]
    # resume, and kill -9 the whole driver (its Ray too) once it has written a new checkpoint
    before = {p: p.stat().st_mtime_ns for p in checkpoints(out)}
    proc = start(spec, out, "--resume")
    wait_for(lambda: any(before.get(p) != p.stat().st_mtime_ns for p in checkpoints(out)), what="a new checkpoint")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    rc, log = finish(start(spec, out, "--resume"))
    assert rc == 0, log
    parents, kids = children(client, "faults")
    assert len(parents) == 1 and len(kids) == 2 and {r.info.status for r in kids} == {"FINISHED"}
    history = pd.read_parquet(out / "exports" / "faults" / "history.parquet")
    assert not history.duplicated(["trial_id", "step"]).any()
    assert sorted(history.groupby("trial_id").step.apply(list).iloc[0]) == list(range(10, STEPS + 1, 10))
    for run in kids:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_iou")]
        assert sorted(set(steps)) == list(range(10, STEPS + 1, 10))
        # the buffered training loss: what a killed attempt had not written is replayed, nothing twice
        losses = sorted(m.step for m in client.get_metric_history(run.info.run_id, "train_loss"))
        assert losses == list(range(10, STEPS + 1, 10)), losses
    _matches_an_uninterrupted_run(out)


def _matches_an_uninterrupted_run(out: Path) -> None:
    """The interrupted, killed and resumed trials end with bit-identical metrics to the same configs run straight
    through in this process."""
    import json

    import torch

    trials = pd.read_parquet(out / "exports" / "faults" / "trials.parquet")
    threads = torch.get_num_threads()
    try:
        for row in trials.itertuples():
            result = json.loads((out / "trials" / row.trial_name / RESULT_ARTIFACT).read_text())  # kept on disk
            config = {**result["config"], "output_dir": str(out / "straight" / row.trial_id)}
            straight = train_trial(config)
            assert (straight.metrics["test_iou"], straight.metrics["test_ece"], straight.best_val) == (
                row.test_iou, row.test_ece, row.best_val)
    finally:
        torch.set_num_threads(threads)


def _kill_workers(driver: subprocess.Popen) -> None:
    """kill -9 the trial workers of this driver's Ray (its session only)."""
    ps = subprocess.run(["ps", "-eo", "pid=,sid=,args="], capture_output=True, text=True).stdout.splitlines()
    workers = [int(line.split()[0]) for line in ps if int(line.split()[1]) == driver.pid and "ImplicitFunc" in line]
    assert workers, "no trial worker found in the driver's session"
    for pid in workers:
        os.kill(pid, signal.SIGKILL)


def _server(root: Path, port: int) -> subprocess.Popen:
    return start_mlflow_server(root / "db.sqlite", root / "artifacts", port)


@pytest.mark.slow(seconds=106)
def test_server_dies_mid_study_then_resume_syncs_once(tmp_path):
    port, root = free_port(), tmp_path / "server"
    server = _server(root, port)
    uri = f"http://127.0.0.1:{port}"
    spec, out = study_file(tmp_path / "faults.yaml"), tmp_path / "runs"
    proc = start(spec, out, "--tracking-uri", uri)
    wait_for(lambda: checkpoints(out), what="a first checkpoint")
    stop_server(server, signal.SIGKILL)
    t0 = time.monotonic()
    rc, log = finish(proc, timeout=240)
    took = time.monotonic() - t0
    assert rc == 1 and "--resume" in log and uri in log, log
    assert took < 120, f"the driver took {took:.0f} s to give up"
    server = _server(root, port)
    try:
        rc, log = finish(start(spec, out, "--resume"))
        assert rc == 0, log
        parents, kids = children(MlflowClient(uri), "faults")
        assert len(parents) == 1 and len(kids) == 2 and {r.info.status for r in kids} == {"FINISHED"}
        assert parents[0].info.status == "FINISHED"
    finally:
        stop_server(server)


@pytest.mark.slow(seconds=62)
def test_two_studies_on_one_server_a_killed_worker_and_a_study_without_an_ok_trial(tmp_path):
    """Two studies log to one server at once: one loses its trial worker to kill -9 (retried from the checkpoint,
    ending bit-identical to a straight run), the other has no trial that finishes ok (exit 1)."""
    port, root = free_port(), tmp_path / "server"
    server = _server(root, port)
    uri = f"http://127.0.0.1:{port}"
    try:
        good = start(study_file(tmp_path / "faults.yaml", "[{label: uniform}]"), tmp_path / "a",
                     "--tracking-uri", uri)
        nan = start(study_file(tmp_path / "nan_study.yaml",
                               "[{label: exploding, train.lr: 10.0, train.grad_clip: 0.0}]"), tmp_path / "b",
                    "--tracking-uri", uri)
        wait_for(lambda: checkpoints(tmp_path / "a"), what="a first checkpoint")
        _kill_workers(good)
        (rc_good, log_good), (rc_nan, log_nan) = finish(good), finish(nan)
        assert rc_good == 0, log_good
        assert rc_nan == 1 and "no trial finished ok" in log_nan, log_nan
        client = MlflowClient(uri)
        for study, status in (("faults", "FINISHED"), ("nan_study", "FAILED")):
            parents, kids = children(client, study)
            assert len(parents) == 1 and len(kids) == 1 and kids[0].info.status == status
        trials = pd.read_parquet(tmp_path / "b" / "exports" / "nan_study" / "trials.parquet")
        assert list(trials.status) == ["nan_loss"]
        _matches_an_uninterrupted_run(tmp_path / "a")
    finally:
        stop_server(server)
