"""Bad input never reaches Ray: exit 2, the file and key named, nothing written under --out; a busy --out or an
unreachable tracking server is refused at once."""

import json
import time

import pytest

from diffseg.files import owner_lock
from diffseg.folder import LOCK_FILE, STATE_FILE
from diffseg.studies import cli, runner
from tests.conftest import free_port

BASE = """description: reliability
experiment: e2
fixed: {model.base_channels: 8, model.channel_mult: [1, 2], data.resolution: 32}
seeds: [0]
datasets: [synthetic-blob]
"""


def run_bad(tmp_path, capsys, text: str, *args) -> str:
    spec = tmp_path / "bad_study.yaml"
    spec.write_text(text)
    out = tmp_path / "out"
    rc = cli.main(["--study", str(spec), "--out", str(out), *args])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert not out.exists(), f"an exit-2 path wrote {list(out.rglob('*'))}"
    return err


@pytest.mark.parametrize(("fixed", "message"), [
    ("train.patience: abc", "train.patience must be an integer, got 'abc'"),
    ("train.batch_size: 2.5", "train.batch_size must be an integer, got 2.5"),
    ("data.resolution: 48.0", "data.resolution must be an integer, got 48.0"),
    ("train.bf16: 'no'", "train.bf16 must be true or false, got 'no'"),
    ("train.steps: true", "train.steps must be an integer, got True"),
    ("model.channel_mult: abc", "model.channel_mult must be a non-empty list of integers, got 'abc'"),
    ("train.ema_decay: abc", "train.ema_decay must be a number, got 'abc'"),
    ("train.stepz: 3", "'train.stepz': did you mean 'train.steps'"),
])
def test_wrong_types_exit_2_naming_file_and_key(tmp_path, capsys, fixed, message):
    err = run_bad(tmp_path, capsys, BASE + "grid:\n  a:\n    - {label: x, " + fixed + "}\n")
    assert message in err and "bad_study.yaml" in err


@pytest.mark.parametrize(("text", "message"), [
    ("grid: [a, b]\n", "grid must be a mapping of axes, got ['a', 'b']"),
    ("grid:\n", "grid must be a mapping of axes, got None"),
    ("grid:\n  w:\n    - {label: uniform, diffusion.weighting: p2, diffusion.weighting: uniform}\n",
     "duplicate key 'diffusion.weighting'"),
    ("grid:\n  w: [{diffusion.weighting: p2}]\n  lr: [{diffusion.weighting: uniform}]\n",
     "grid axes set the same key(s) ['diffusion.weighting']"),
    ("grid:\n  w: [{label: a, train.lr: 0.1}, {label: a, train.lr: 0.2}]\n", "arm label(s) ['a'] occur more than once"),
    ("seeds: [1]\ngrid:\n  w: [{label: a}]\n", "duplicate key 'seeds'"),
    ("grid:\n  train.lr: [0.1, 0.1]\n", "arm label(s) ['lr=0.1'] occur more than once"),
    ("seeds: 3\n", "seeds must be a list of integers, got 3"),
])
def test_malformed_and_conflicting_study_files_exit_2(tmp_path, capsys, text, message):
    base = BASE.replace("seeds: [0]\n", "") if text.startswith("seeds: 3") else BASE
    assert message in run_bad(tmp_path, capsys, base + text)


def test_set_gives_the_type_and_a_suggestion(tmp_path, capsys):
    text = BASE + "grid:\n  w: [{label: a}]\n"
    assert "train.steps must be an integer, got 'abc'" in run_bad(tmp_path, capsys, text, "--set", "train.steps=abc")
    err = run_bad(tmp_path, capsys, text, "--set", "train.stpes=3")
    assert "did you mean 'train.steps'" in err and "data.cache_dir" not in err, "no list of 70 keys"


@pytest.mark.parametrize("flag", [["--num-samples", "-1"], ["--num-samples", "0"], ["--max-concurrent", "0"],
                                  ["--cpus-per-trial", "0"], ["--max-failures", "-2"]])
def test_counts_must_be_positive(tmp_path, capsys, flag):
    with pytest.raises(SystemExit) as info:
        cli.main(["--study", "weighting_schedules", "--out", str(tmp_path / "out"), *flag])
    assert info.value.code == 2 and "must be" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_unwritable_out_is_exit_2(tmp_path, capsys):
    afile = tmp_path / "a_file"
    afile.write_text("x")
    assert cli.main(["--study", "weighting_schedules", "--out", str(afile / "runs")]) == 2
    assert f"{afile} is a file, not a folder" in capsys.readouterr().err
    assert cli.main(["--study", "weighting_schedules", "--out", str(afile)]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err


def test_a_bad_second_dataset_leaves_nothing_written(tmp_path, capsys, shared_data):
    """The first dataset prepares fine; the second fails: no cache or fingerprint of the first is written."""
    out = tmp_path / "out"
    rc = cli.main(["--study", "weighting_schedules", "--dataset", "ihc_her2like", "--dataset", "isic2016",
                   "--data-root", str(tmp_path / "missing"), "--out", str(out)])
    assert rc == 2 and "does not exist" in capsys.readouterr().err and not out.exists()
    rc = cli.main(["--study", "weighting_schedules", "--dataset", "ihc_her2like", "--dataset", f"folder:{tmp_path}",
                   "--out", str(out)])
    assert rc == 2 and "folder missing" in capsys.readouterr().err and not out.exists()


def test_unreachable_tracking_server_is_exit_2_within_seconds(tmp_path, capsys):
    uri = f"http://127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    rc = cli.main(["--study", "weighting_schedules", "--dataset", "synthetic-blob", "--out", str(tmp_path / "o"),
                   "--tracking-uri", uri])
    assert rc == 2 and time.monotonic() - t0 < 30
    assert f"the MLflow tracking server {uri} does not answer" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_second_command_on_one_out_is_refused_and_a_stale_lock_taken_over(tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    args = ["--study", "weighting_schedules", "--dataset", "synthetic-blob", "--out", str(out)]
    with owner_lock(out / LOCK_FILE, {"study": "other_study"}):
        assert cli.main(args) == 2
        err = capsys.readouterr().err
        assert "is in use by study 'other_study'" in err and "pid" in err
    (out / LOCK_FILE).write_text(json.dumps({"study": "killed", "pid": 999999, "host": "gone"}))  # no live holder
    monkeypatch.setattr(runner, "_run", lambda *a, **k: runner.StudyOutcome(problem="stopped by the test"))
    assert cli.main(args) == 1
    err = capsys.readouterr().err
    assert "took over the lock of a driver that is gone" in err and "stopped by the test" in err


def test_resume_with_nothing_to_resume_or_another_study_exits_2_and_writes_nothing(tmp_path, capsys):
    from diffseg.studies.cli import main as study_main

    out = tmp_path / "runs"
    assert study_main(["--study", "weighting_schedules", "--out", str(out), "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*"))
    state = out / "ray" / "weighting_schedules" / STATE_FILE  # a folder holding another study
    state.parent.mkdir(parents=True)
    state.write_text('{"parent_run_id": "x", "tracking_uri": null}')
    before = sorted(out.rglob("*"))
    assert study_main(["--study", "architectures", "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "holds the study weighting_schedules, not architectures" in err and sorted(out.rglob("*")) == before


def test_trials_logging_the_same_new_dataset_at_once_all_succeed(tmp_path):
    """MLflow's SQL store inserts an experiment's dataset row check-then-insert: concurrent trials race on it
    (UNIQUE constraint failed: seen here in 6 of 30 raw calls, and as a failed trial in a study)."""
    import threading

    from mlflow.tracking import MlflowClient

    from diffseg.studies import tracking

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client, failures = MlflowClient(uri), []

    def trial(exp_id):
        own = MlflowClient(uri)
        run = own.create_run(exp_id)
        try:
            tracking.log_dataset(own, run.info.run_id, "synthetic-blob", "ab" * 32, None)
        except Exception as exc:
            failures.append(repr(exc))

    for rep in range(4):
        exp_id = client.create_experiment(f"race{rep}")
        threads = [threading.Thread(target=trial, args=(exp_id,)) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        runs = client.search_runs([exp_id])
        assert all(r.inputs.dataset_inputs[0].dataset.name == "synthetic-blob" for r in runs)
    assert failures == []


def test_step_metrics_reach_mlflow_in_one_batch_per_interval_with_their_own_steps(tmp_path, monkeypatch):
    """A trial's training loss every train.log_every steps is buffered: one MLflow write per ``every_s`` and per
    flush (the trial flushes at each validation and at its end), each value at its own step."""
    from mlflow.tracking import MlflowClient

    from diffseg.studies import tracking

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = client.create_run(client.create_experiment("buffer")).info.run_id
    writes = []
    log_batch = client.log_batch
    monkeypatch.setattr(client, "log_batch", lambda *a, **k: (writes.append(len(k["metrics"])), log_batch(*a, **k)))
    now = [0.0]
    buffer = tracking.MetricBuffer(client, run_id, every_s=10.0, clock=lambda: now[0])
    for step in range(10, 60, 10):  # 5 losses within 4 s: nothing written yet
        now[0] += 0.8
        buffer.add({"train_loss": 1.0 / step}, step)
    assert writes == []
    now[0] += 7.0  # 11 s after the buffer started: this one writes all six
    buffer.add({"train_loss": 1.0 / 60}, 60)
    buffer.add({"train_loss": 1.0 / 70}, 70)
    buffer.flush()
    assert writes == [6, 1]
    history = client.get_metric_history(run_id, "train_loss")
    assert [(m.step, m.value) for m in history] == [(s, 1.0 / s) for s in range(10, 80, 10)]
