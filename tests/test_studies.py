"""Studies: spec validation, the CLI, and end-to-end runs through Ray, MLflow (a real server) and Parquet."""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from diffseg.studies.cli import main as study_main
from diffseg.studies.spec import SpecError, list_studies, load_spec
from tests.conftest import bin_path as _bin
from tests.conftest import free_port as _free_port

ROOT = Path(__file__).resolve().parents[1]
STUDIES = ["architectures", "calibration_targets", "conditioning", "final_noise_levels", "findings", "fingerprints",
           "long_training", "noise_schedules",
           "segmentation_vs_generation", "weighting_schedules"]
TINY_BUDGET = ("{train.steps: 6, train.val_every: 3, train.log_every: 2, eval.test_max_images: 3, "
               "eval.curve_points: 4, eval.curve_max_images: 3, eval.ensemble: 2, eval.steps: 2, eval.val_steps: 2, "
               "eval.val_max_images: 3}")


def tiny_spec(path: Path, arms: str = "", datasets: str = "[synthetic-blob]") -> Path:
    arms = arms or """
    - {label: uniform, diffusion.weighting: uniform}
    - {label: min_snr, diffusion.weighting: min_snr, diffusion.weighting_params: {gamma: 5}}
    - {label: fingerprint, diffusion.weighting: fingerprint}"""
    path.write_text(f"""
description: tiny end-to-end study
experiment: e2
fixed: {{model.architecture: ensemdiff, model.base_channels: 8, model.channel_mult: [1, 2], data.resolution: 32}}
grid:
  weighting:{arms}
seeds: [0]
datasets: {datasets}
budgets:
  smoke: {TINY_BUDGET}
""")
    return path


def test_every_shipped_study_validates_for_every_budget():
    assert set(list_studies()) == set(STUDIES)
    for name in STUDIES:
        spec = load_spec(name)
        assert spec.arms() and spec.datasets and spec.description


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("description: x\nexperiment: e2\ndatasets: [synthetic-blob]\nbogus: 1\n", "unknown key(s) ['bogus']"),
        ("datasets: [synthetic-blob]\ngrid:\n  w:\n    - {diffusion.weighting: minsnr}\n",
         "diffusion.weighting='minsnr' is not allowed; did you mean 'min_snr' or 'soft_min_snr'?"),
        ("datasets: [synthetic-blob]\nfixed: {diffusion.schedul: linear}\n",
         "unknown config key(s) ['diffusion.schedul']"),
        ("datasets: [synthetic-blob]\nsearch:\n  train.lr: {type: loguniform, low: 0.1, high: 0.01}\n",
         "low (0.1) must be below high (0.01)"),
        ("datasets: [nope]\n", "unknown dataset 'nope'"),
        ("datasets: [synthetic-blob]\nmetric: test_iou\n", "the selection metric and mode are set by each trial's"),
        ("datasets: [synthetic-blob]\ngrid:\n  experiment: [e2, e3]\nscheduler: {type: asha}\n",
         "ASHA and Optuna need one"),
    ],
)
def test_bad_study_files_exit_2_with_the_message(tmp_path, capsys, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        load_spec(str(path))
    assert message in str(info.value) and str(path) in str(info.value)
    assert study_main(["--study", str(path), "--out", str(tmp_path / "out"), "--dry-run"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out" / "ray").exists()


def test_unknown_study_and_list(capsys):
    assert study_main(["--study", "nope"]) == 2
    assert "unknown study 'nope'; allowed: ['architectures'" in capsys.readouterr().err
    assert study_main(["--list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in STUDIES)


def test_dry_run_prints_plan_and_resolves_fingerprints(tmp_path, capsys):
    rc = study_main(["--study", "weighting_schedules", "--dry-run", "--out", str(tmp_path), "--dataset",
                     "synthetic-blob", "--cpus-per-trial", "1"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "8 trials" in out and "fingerprint_sampling" in out and "1.0 CPU" in out
    assert not (tmp_path / "fingerprints").exists()  # a dry run computes fingerprints but writes nothing


def test_bad_dataset_root_exits_2_before_ray(tmp_path, capsys):
    rc = study_main(["--study", "weighting_schedules", "--dataset", "isic2016", "--data-root", str(tmp_path / "x"),
                     "--out", str(tmp_path / "out")])
    assert rc == 2 and "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "out" / "ray").exists()


# --- end to end -------------------------------------------------------------------------------------------------


def _rest(url: str, path: str, body: dict | None = None) -> dict:
    req = urllib.request.Request(f"{url}/api/2.0/mlflow/{path}", method="POST" if body is not None else "GET",
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


@pytest.mark.slow(seconds=52)
def test_tiny_study_through_ray_mlflow_server_and_parquet(tmp_path, ray_session, mlflow_server, artifacts_dir,
                                                          shared_data, browser):
    spec = tiny_spec(tmp_path / "e2e_study.yaml")
    out = tmp_path / "runs"
    rc = study_main(["--study", str(spec), "--out", str(out), "--tracking-uri", mlflow_server])
    assert rc == 0
    exp = _rest(mlflow_server, "experiments/get-by-name?experiment_name=e2e_study")["experiment"]
    runs = _rest(mlflow_server, "runs/search", {"experiment_ids": [exp["experiment_id"]], "max_results": 100})["runs"]
    parents = [r for r in runs if {"key": "diffseg.role", "value": "study"} in r["data"]["tags"]]
    assert len(parents) == 1
    pid = parents[0]["info"]["run_id"]
    children = _rest(mlflow_server, "runs/search", {"experiment_ids": [exp["experiment_id"]],
                                                   "filter": f"tags.mlflow.parentRunId = '{pid}'"})["runs"]
    assert len(children) == 3
    for child in children:
        tags = {t["key"]: t["value"] for t in child["data"]["tags"]}
        params = {p["key"]: p["value"] for p in child["data"]["params"]}
        metrics = {m["key"] for m in child["data"]["metrics"]}
        assert tags["ray_trial_id"] and tags["git_commit"] and tags["dataset_hash"] and tags["budget"] == "smoke"
        assert params["diffusion.weighting"] in {"uniform", "min_snr", "curve"} and params["data.resolution"] == "32"
        assert {"val_iou", "test_iou", "test_ece", "t_half_of_end.mask_error.cond"} <= metrics
        assert "step" not in metrics and not any(m.startswith("curve.") for m in metrics), metrics
        arts = _rest(mlflow_server, f"artifacts/list?run_id={child['info']['run_id']}")["files"]
        names = {a["path"] for a in arts}
        assert {"result.json", "curves.json", "curves.png", "per_image.json", "uncertainty"} <= names
        assert tags["diffseg.model_uri"].startswith("models:/")  # the trial's logged pyfunc model
        assert child["inputs"]["dataset_inputs"][0]["dataset"]["name"] == "synthetic-blob"
        if params["diffusion.weighting"] == "curve":
            assert "fingerprint_curve.json" in names
        hist = _rest(mlflow_server, f"metrics/get-history?run_id={child['info']['run_id']}&metric_key=val_iou")
        assert [m["step"] for m in hist["metrics"]] == [3, 6]
        loss = _rest(mlflow_server, f"metrics/get-history?run_id={child['info']['run_id']}&metric_key=train_loss")
        assert sorted(m["step"] for m in loss["metrics"]) == [2, 4, 6]  # every train.log_every steps
    exports = out / "exports" / "e2e_study"
    trials = pd.read_parquet(exports / "trials.parquet")
    # trial folders carry the arm; checkpoints are Ray's copies only (the last two), not also in the trial's folder
    for row in trials.itertuples():
        assert row.trial_name.startswith(f"{row.arm}-synthetic-blob-s0-") and (out / "trials" / row.trial_name).is_dir()
        assert not (out / "trials" / row.trial_name / "checkpoint").exists()
        assert len(list((out / "ray").glob(f"*/{row.trial_name}/checkpoint_*/state.pt"))) == 2  # 6 steps, 2 saves
    assert len(trials) == 3 and set(trials.status) == {"ok"} and trials.test_iou.between(0, 1).all()
    assert trials.retries.eq(0).all() and trials.node_id.notna().all()  # each trial's one attempt, on its node
    assert str(trials.seed.dtype) == "Int64" and str(trials.wall_time_s.dtype) == "float64"
    # two trials at once on 2 CPUs, one CPU each: each trial's torch runs 1 thread (no oversubscription)
    assert trials.threads.eq(1).all() and trials.time_train_steps_s.ge(0).all() and trials.time_mlflow_s.gt(0).all()
    assert "cfg.diffusion.weighting" in trials.columns and trials.dataset_hash.notna().all()
    curves = pd.read_parquet(exports / "curves.parquet")
    assert {"mask_error", "train_loss"} <= set(curves.kind) and str(curves.t.dtype) == "float64"
    cond = pd.read_parquet(exports / "conditioning.parquet")  # no E3 trial to pair with: empty, typed
    assert cond.empty and str(cond.with_image.dtype) == "float64"
    assert len(pd.read_parquet(exports / "history.parquet")) == 6
    images = pd.read_parquet(exports / "images.parquet")
    assert len(images) == 9 and set(images.arm) == {"uniform", "min_snr", "fingerprint"}
    comp = pd.read_parquet(exports / "comparisons.parquet")  # each arm against the first (baseline) arm
    assert set(comp.baseline) == {"uniform"} and set(comp.arm) == {"min_snr", "fingerprint"}
    assert set(comp.metric) == {"iou", "ece"} and comp.n_images.eq(3).all() and comp.p_holm.between(0, 1).all()
    shutil.copytree(exports, artifacts_dir / "e2e_exports", dirs_exist_ok=True)
    # re-creatable from MLflow alone
    shutil.rmtree(exports)
    proc = subprocess.run([sys.executable, str(ROOT / "studies" / "export.py"), "--study", "e2e_study", "--out",
                           str(out), "--tracking-uri", mlflow_server], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    again = pd.read_parquet(exports / "trials.parquet")
    assert sorted(again.run_id) == sorted(trials.run_id)
    # resume reuses the parent run and never duplicates a child
    rc = study_main(["--study", str(spec), "--out", str(out), "--tracking-uri", mlflow_server, "--resume"])
    assert rc == 0
    runs = _rest(mlflow_server, "runs/search", {"experiment_ids": [exp["experiment_id"]], "max_results": 100})["runs"]
    assert len(runs) == 4
    _mlflow_ui_shows_the_study(browser, mlflow_server, exp["experiment_id"], pid, artifacts_dir / "mlflow_ui")
    _registered_model_segments_isic(tmp_path, mlflow_server, trials, shared_data, browser, artifacts_dir)


def _wait_text(driver, *texts, timeout=90):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(lambda d: all(t in d.find_element(By.TAG_NAME, "body").text for t in texts))
    return driver.find_element(By.TAG_NAME, "body").text


def _mlflow_ui_shows_the_study(driver, url, exp_id, parent_id, shots):
    """The MLflow UI as a user meets it (headless Chromium against the real server; screenshots in ``shots``)."""
    from selenium.webdriver.common.by import By

    from diffseg.studies.tracking import KEY_VIEW_NAME, ui_url

    shots.mkdir(parents=True, exist_ok=True)
    driver.set_window_size(2400, 1000)
    # the address run_study prints opens the runs table (not MLflow 3's GenAI overview) in the key-columns view
    driver.get(ui_url(url, exp_id))
    body = _wait_text(driver, "Runs", KEY_VIEW_NAME, "e2e_study-")
    assert "Token Usage" not in body and "Traces\n0" not in body
    for button in driver.find_elements(By.CSS_SELECTOR, "button[data-component-id*='runnamecellrenderer']"):
        button.click()  # expand the study's parent run: its trials
    body = _wait_text(driver, "uniform s0", "min_snr s0", "fingerprint s0")
    driver.save_screenshot(str(shots / "experiment_runs_key_columns.png"))
    headers = [h.get_attribute("col-id") for h in driver.find_elements(By.CSS_SELECTOR, ".ag-header-cell")]
    for col in ("tags.`arm`", "tags.`dataset`", "tags.`seed`", "tags.`trial_status`", "metrics.`best_val`",
                "metrics.`test_iou`", "metrics.`test_ece`", "attributes.`Dataset`"):
        assert col in headers, (col, headers)
    assert "synthetic-blob (" in body  # the Datasets column is filled: name (digest)
    # the parent run: description, summary metrics, best-child tag
    driver.get(ui_url(url, exp_id, parent_id))
    _wait_text(driver, "Description", "tiny end-to-end study", "3 arms: uniform, min_snr, fingerprint",
               "best.synthetic-blob.val_iou", "best_child.synthetic-blob")
    driver.save_screenshot(str(shots / "parent_run_overview.png"))
    # ... and its artifacts: the study file, the resolved plan, the Parquet exports
    driver.get(ui_url(url, exp_id, parent_id).replace("?", "/artifacts?"))
    _wait_text(driver, "plan.json", "exports", "study")
    driver.save_screenshot(str(shots / "parent_run_artifacts.png"))


def _registered_model_segments_isic(tmp_path, uri, trials, shared_data, browser, artifacts_dir):
    """From study to use: the best trial per dataset is registered once (the --resume above did not register it
    again), ``mlflow.pyfunc.load_model`` predicts probabilities and uncertainty, ``predict.py`` segments a folder of
    the shared ISIC sample at the original sizes, and the Model Registry page shows the model."""
    import mlflow
    import numpy as np
    from mlflow.tracking import MlflowClient
    from PIL import Image

    from diffseg.studies.predict import main as predict_main

    client, name = MlflowClient(uri), "diffseg-e2e_study-synthetic-blob"
    versions = client.search_model_versions(f"name = '{name}'")
    best = trials.loc[trials.best_val.idxmax()]
    assert len(versions) == 1, "registered once, also after --resume"
    assert versions[0].tags["diffseg.run_id"] == best.run_id and versions[0].tags["selection_metric"] == "val_iou"
    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model(f"models:/{name}/1")
    jpgs = sorted(shared_data.glob("isic2016/**/ISIC_*.jpg"))[:3]
    batch = np.stack([np.asarray(Image.open(p).convert("RGB").resize((64, 48))) for p in jpgs[:2]])
    maps = model.predict(batch, params={"ensemble": 3, "steps": 2})
    assert maps.shape == (2, 2, 48, 64) and maps.dtype == np.float32
    assert maps[:, 0].min() >= 0 and maps[:, 0].max() <= 1 and maps[:, 1].min() >= 0
    folder = tmp_path / "new_images"
    folder.mkdir()
    for p in jpgs:
        shutil.copy(p, folder / p.name)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n-truncated")
    pred = tmp_path / "predictions"
    args = ["--model", f"models:/{name}/1", "--images", str(folder), "--out", str(pred), "--tracking-uri", uri,
            "--ensemble", "3", "--steps", "2", "--device", "cpu"]
    t0 = time.perf_counter()
    assert predict_main(args) == 1, "an unreadable image is listed, the others written, exit code 1"
    per_image = (time.perf_counter() - t0) / len(jpgs)
    rows = pd.read_parquet(pred / "predictions.parquet")
    assert sorted(rows.image) == sorted(p.name for p in jpgs) and per_image > 0
    for p in jpgs:
        w, h = Image.open(p).size
        for kind, mode in (("mask", "L"), ("prob", "I;16"), ("std", "I;16")):
            with Image.open(pred / f"{p.stem}_{kind}.png") as im:
                assert im.size == (w, h) and im.mode == mode
    assert rows.mean_uncertainty.ge(0).all() and rows.foreground_fraction.between(0, 1).all()
    assert predict_main(args) == 2, "an existing --out is not overwritten silently"
    assert predict_main([*args, "--overwrite"]) == 1
    assert predict_main(["--model", "nonexistent-model", *args[2:], "--overwrite"]) == 2
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{uri}/#/models")
    WebDriverWait(browser, 60).until(lambda d: name in d.find_element(By.TAG_NAME, "body").text)
    from selenium.webdriver.common.keys import Keys

    # MLflow 3 announces its new Model Registry UI in a dialog over the page on a first visit: dismiss it
    browser.execute_script("document.querySelectorAll('[role=dialog] button').forEach(function (b) {"
                           "if ((b.getAttribute('aria-label') || '').toLowerCase() === 'close') b.click(); });")
    browser.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
    time.sleep(1)
    browser.save_screenshot(str(artifacts_dir / "model_registry.png"))


@pytest.mark.slow(seconds=32)
def test_run_on_separately_started_ray_head(tmp_path):
    """A head started with `ray start --head` (its own process group, stopped by signal, so any other Ray on
    the machine is untouched); the study connects with --address. Token auth as the README sets it, explicit on
    the head and the driver: with RAY_AUTH_MODE unset, `ray start` turns it on when ~/.ray/auth_token exists (an
    earlier local Ray writes one) and the driver does not, which failed this test when it ran alone."""
    import secrets

    port = _free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_worker_niceness": "0",  # as the README starts nodes
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    head = subprocess.Popen(
        [_bin("ray"), "start", "--head", f"--port={port}", "--num-cpus=2", "--num-gpus=0", "--block",
         "--include-dashboard=false", "--object-store-memory=150000000", "--disable-usage-stats"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        spec = tiny_spec(tmp_path / "cluster_study.yaml", arms="\n    - {label: uniform, diffusion.weighting: uniform}")
        cmd = [sys.executable, str(ROOT / "studies" / "run_study.py"), "--study", str(spec),
               "--out", str(tmp_path / "runs"), "--address", f"127.0.0.1:{port}"]
        for _ in range(60):  # wait for the head to accept drivers
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
            if "Could not find any running Ray instance" not in proc.stderr + proc.stdout:
                break
            time.sleep(1)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        trials = pd.read_parquet(tmp_path / "runs" / "exports" / "cluster_study" / "trials.parquet")
        assert list(trials.status) == ["ok"]
        assert head.poll() is None, "the study stops only the Ray it started: here it disconnects from the head"
    finally:
        # SIGTERM to `ray start` alone: it drains its node and stops its own processes (2 s). SIGTERM to the whole
        # group also stopped the GCS first, and the drain then waited its full 30 s for it (measured: 33 s)
        head.terminate()
        try:
            head.wait(timeout=60)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(head.pid, signal.SIGKILL)  # whatever of the group is left


def test_summary_warns_on_one_seed_and_on_validation_test_disagreement():
    from diffseg.studies.cli import summary_warnings

    t = pd.DataFrame({"status": ["ok"] * 4, "seed": [0, 0, 0, 0], "dataset": ["a", "a", "b", "b"],
                      "arm": ["x", "y", "x", "y"], "selection_metric": ["val_iou"] * 4,
                      "best_val": [0.9, 0.8, 0.9, 0.8], "test_iou": [0.5, 0.7, 0.8, 0.6]})
    w = summary_warnings(t)
    assert any("one seed only" in s for s in w)
    assert any(s.startswith("a: validation picks 'x', test would pick 'y'") for s in w)
    assert not any(s.startswith("b:") for s in w)
    assert summary_warnings(t.assign(seed=[0, 1, 0, 1]).drop(columns="test_iou")) == []


@pytest.mark.parametrize("arm, message", [
    ("{label: ms, diffusion.weighting: min_snr, diffusion.weighting_params: {gama: 5}}",
     r"arm 'ms'.*diffusion.weighting_params.*unknown parameter 'gama'; did you mean 'gamma'"),
    ("{label: sch, diffusion.schedule: cosine, diffusion.schedule_params: {sss: 1}}",
     r"arm 'sch'.*diffusion.schedule_params.*unknown parameter 'sss'"),
    ("{label: ts, diffusion.timestep_sampler: uniform, diffusion.timestep_sampler_params: {x: 1}}",
     r"arm 'ts'.*diffusion.timestep_sampler_params.*'x'; it takes no parameters"),
])
def test_unknown_registry_parameters_are_refused_before_ray(tmp_path, capsys, arm, message):
    """Validation checks every point's weighting, schedule and sampler parameters (not only their types)."""
    import re

    spec = tiny_spec(tmp_path / "typo.yaml", f"\n    - {arm}")
    assert study_main(["--study", str(spec), "--out", str(tmp_path / "runs"), "--dry-run"]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "runs").exists()


def test_the_embedded_ray_runs_trials_at_normal_priority_and_its_log_monitor_polls_less():
    """Ray starts its workers at niceness 15; the study's own Ray (``start_ray``) at 0, so a trial's steps do not
    yield to the driver, raylet and tracking server (the niceness of a worker, in a fresh process). Its log monitor
    (a child of the driver) starts with ``LOCAL_RAY_ENV``, so it lists its log folder every 0.5 s, not each poll."""
    from diffseg.studies.runner import LOCAL_RAY_ENV

    code = ("import os, ray\nfrom pathlib import Path\nfrom diffseg.studies.runner import start_ray\n"
            "start_ray(None)\n"
            "print('niceness', ray.get(ray.remote(lambda: os.nice(0)).remote()))\n"
            "for p in Path('/proc').glob('[0-9]*'):\n"
            "    try:\n"
            "        stat, cmd = (p / 'stat').read_text(), (p / 'cmdline').read_bytes()\n"
            "        if int(stat[stat.rindex(')') + 2:].split()[1]) == os.getpid() and b'log_monitor.py' in cmd:\n"
            "            print('log monitor', [e.decode() for e in (p / 'environ').read_bytes().split(b'\\0')\n"
            "                                  if e.startswith(b'RAY_LOG_MONITOR_')])\n"
            "    except (OSError, ValueError):\n"
            "        pass\n"
            "ray.shutdown()\n")
    env = {k: v for k, v in os.environ.items() if k not in LOCAL_RAY_ENV}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "niceness 0" in p.stdout
    assert "log monitor ['RAY_LOG_MONITOR_MANY_FILES_THRESHOLD=0']" in p.stdout, p.stdout
