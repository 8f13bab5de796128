"""The report as a user sees it: built from real smoke-study exports, opened in headless Chromium."""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from diffseg.report.cli import main as report_main
from diffseg.studies.cli import main as study_main
from diffseg.studies.export_cli import main as export_main

# the shipped study files at the smoke budget, shrunk to one dataset and a few steps so the suite stays short
SHRINK = ["--dataset", "synthetic-blob", "--set", "train.steps=10", "--set", "train.val_every=5",
          "--set", "data.resolution=32", "--set", "eval.test_max_images=6", "--set", "eval.curve_points=8",
          "--set", "eval.curve_max_images=4", "--set", "eval.val_max_images=4", "--set", "eval.ensemble=2",
          "--set", "eval.steps=4", "--set", "eval.val_ensemble=2", "--set", "eval.val_steps=2"]


def test_no_exports_is_a_clear_error(tmp_path, capsys):
    assert report_main(["--study", "weighting_schedules", "--runs", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no complete Parquet exports for study 'weighting_schedules'" in err and "run_study.py" in err


def _check_in_browser(driver, html: Path, shots: Path) -> dict:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get_log("browser")  # drop what earlier pages of this shared browser logged (e.g. the MLflow UI's)
    driver.get(html.as_uri())
    WebDriverWait(driver, 120).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-rendered")
                                     or d.execute_script("return window.__reportErrors.length"))
    body = driver.find_element(By.TAG_NAME, "body")
    expected = int(body.get_attribute("data-charts"))
    errors = driver.execute_script("return window.__reportErrors")
    severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    charts = driver.find_elements(By.CSS_SELECTOR, "div.chart")
    drawn = [c for c in charts if c.find_elements(By.CSS_SELECTOR, "svg, canvas")]
    shots.mkdir(parents=True, exist_ok=True)
    sections = driver.find_elements(By.TAG_NAME, "section")
    for s in sections:
        driver.execute_script("arguments[0].scrollIntoView()", s)
        s.screenshot(str(shots / f"{s.get_attribute('id')}.png"))
    return {"expected": expected, "rendered": int(body.get_attribute("data-rendered") or -1), "charts": len(charts),
            "drawn": len(drawn), "errors": errors, "severe": severe,
            "sections": [s.get_attribute("id") for s in sections]}


@pytest.mark.parametrize(("study", "sections"), [
    pytest.param("weighting_schedules", {"summary", "fingerprints", "conditioning", "comparison", "calibration"},
                 marks=pytest.mark.slow(seconds=90)),
    pytest.param("architectures", {"summary", "table1", "conditioning", "comparison", "calibration"},
                 marks=pytest.mark.slow(seconds=69)),
])
def test_smoke_study_report_renders_in_chromium(study, sections, tmp_path, ray_session, browser, artifacts_dir):
    ran = tmp_path / "ran"
    assert study_main(["--study", study, "--budget", "smoke", "--out", str(ran), *SHRINK]) == 0
    # the study folder is relocatable: moved elsewhere, it is read (and the report attached) from where it is now
    runs = tmp_path / "moved" / "runs"
    runs.parent.mkdir()
    shutil.move(ran, runs)
    assert not ran.exists() and b"/ran/" in (runs / "mlflow.db").read_bytes()
    assert report_main(["--study", study, "--runs", str(runs)]) == 0
    exports = runs / "exports" / study
    assert json.loads((exports / "study.json").read_text())["tracking_uri"] is None  # no absolute store path
    before = pd.read_parquet(exports / "trials.parquet")
    assert export_main(["--study", study, "--out", str(runs)]) == 0  # every trial's result.json is read again
    assert pd.read_parquet(exports / "trials.parquet").run_id.tolist() == before.run_id.tolist()
    out = runs / "reports" / study
    pngs = sorted((out / "charts").glob("*.png"))
    assert pngs
    for p in pngs:
        with Image.open(p) as im:
            assert im.width > 100 and im.height > 50
            assert im.convert("L").getextrema()[0] < 200  # something was drawn, not a blank canvas
    shots = artifacts_dir / "report_screenshots" / study
    shutil.rmtree(shots, ignore_errors=True)
    r = _check_in_browser(browser, out / "report.html", shots)
    assert r["errors"] == [] and r["severe"] == [], r
    assert r["expected"] == r["charts"] == r["drawn"] == r["rendered"] == len(pngs), r
    assert sections <= set(r["sections"]), r["sections"]
    assert {p.stem for p in shots.glob("*.png")} == set(r["sections"])
    shutil.copy(out / "report.html", artifacts_dir / f"report_{study}.html")
    # the report is attached to the study's MLflow parent run
    from mlflow.tracking import MlflowClient

    meta = json.loads((runs / "exports" / study / "study.json").read_text())
    client = MlflowClient(f"sqlite:///{runs / 'mlflow.db'}")
    attached = {a.path for a in client.list_artifacts(meta["parent_run_id"], "report")}
    assert "report/report.html" in attached and "report/charts" in attached
    if study == "weighting_schedules":
        _hostile_labels_stay_text(runs, study, tmp_path, browser, artifacts_dir)


HOSTILE = "</script><script>window.__pwned = 1; document.title = 'pwned'</script><img src=x onerror=window.__pwned=2>"


def _hostile_labels_stay_text(runs, study, tmp_path, browser, artifacts_dir):
    """Arm labels (any study text) cannot inject script: the page renders, no script of the label runs."""
    exports = runs / "exports" / study
    trials = pd.read_parquet(exports / "trials.parquet")
    trials["arm"] = trials["arm"].map(lambda a: f"{a} {HOSTILE}")
    trials.to_parquet(exports / "trials.parquet", index=False)
    out = tmp_path / "hostile"
    assert report_main(["--study", study, "--runs", str(runs), "--out", str(out), "--no-mlflow"]) == 0
    r = _check_in_browser(browser, out / "report.html", artifacts_dir / "report_screenshots" / "hostile")
    assert r["errors"] == [] and r["expected"] == r["drawn"] == r["rendered"] > 0, r
    assert browser.execute_script("return window.__pwned === undefined") and browser.title != "pwned"
    assert HOSTILE in browser.find_element("tag name", "body").text, "the label is shown as text"


@pytest.mark.slow(seconds=63)
def test_findings_study_report_pairs_e2_with_e3_and_writes_the_findings_doc(tmp_path, ray_session, browser,
                                                                           artifacts_dir):
    """The findings study end to end at a tiny size: E2 curves paired with the matching E3 trial, the training-free
    fingerprint at the trials' resolution (not another one), seed intervals in the findings page."""
    from diffseg.report.findings_doc import main as doc_main

    runs = tmp_path / "runs"
    assert study_main(["--study", "findings", "--budget", "smoke", "--out", str(runs), "--seed", "0", "--seed", "1",
                       *SHRINK]) == 0
    cond = pd.read_parquet(runs / "exports" / "findings" / "conditioning.parquet")
    trials = pd.read_parquet(runs / "exports" / "findings" / "trials.parquet").set_index("trial_id")
    assert set(cond.partner) == {"e3"} and cond.e2_trial_id.nunique() == 2
    for pair in cond[["e2_trial_id", "partner_trial_id"]].drop_duplicates().itertuples():
        e2, e3 = trials.loc[pair.e2_trial_id], trials.loc[pair.partner_trial_id]
        assert (e2.experiment, e3.experiment) == ("e2", "e3") and e2.seed == e3.seed
    assert report_main(["--study", "findings", "--runs", str(runs), "--no-mlflow"]) == 0
    fps = [json.loads(p.read_text()) for p in (runs / "fingerprints").glob("*/fingerprint.json")]
    assert fps and {fp["resolution"] for fp in fps} == {32} and {fp["split"]["used"] for fp in fps} == {"train+val"}
    shots = artifacts_dir / "report_screenshots" / "findings"
    shutil.rmtree(shots, ignore_errors=True)
    r = _check_in_browser(browser, runs / "reports" / "findings" / "report.html", shots)
    assert r["errors"] == [] and r["severe"] == [] and r["expected"] == r["drawn"], r
    assert {"fingerprints", "conditioning", "calibration"} <= set(r["sections"])
    assert doc_main(["--runs", str(runs), "--out", str(tmp_path / "doc")]) == 0
    text = (tmp_path / "doc" / "findings.md").read_text()
    assert "(n=2)" in text and "(b) mask error with the image" in text and "(c) fingerprints" in text
    from diffseg.metrics import TRAINING_FREE

    bases = pd.read_parquet(runs / "exports" / "findings" / "baselines.parquet")  # every one, on the same images
    assert sorted(bases.method) == sorted(TRAINING_FREE) and bases.test_images.nunique() == 1
    assert f"| {bases.loc[bases.iou.idxmax(), 'method']} " in text.split("the stronger training-free baseline")[1]
    assert "## weighting_schedules\n\n_not run" in text
    assert list((tmp_path / "doc").glob("findings_training_loss_over_t.png"))


def _study_data(trials: pd.DataFrame, meta: dict):
    from diffseg.report.data import StudyData

    empty = pd.DataFrame(columns=["trial_id"])
    return StudyData("s", Path("/nonexistent"), meta, trials, *(empty,) * 7)


def _trials(n_arms=3, seeds=(0, 1)):
    rows = []
    for a in range(n_arms):
        for s in seeds:
            rows.append({"trial_id": f"t{a}{s}", "trial_name": f"arm{a}-x-s{s}-t{a}{s}", "run_id": f"run{a}{s}",
                         "arm": f"arm{a}", "dataset": "ds", "seed": s, "status": "ok", "selection_metric": "val_iou",
                         "best_val": 0.5 + 0.1 * a + 0.01 * s, "test_iou": 0.9 - 0.1 * a, "test_ece": 0.1,
                         "cfg.diffusion.weighting_params": ["{}", '{"gamma": 5}', "{}"][a % 3],
                         "cfg.diffusion.input_scale": [None, 0.5, None][a % 3], "cfg.train.lr": 1e-3 * (a + 1)})
    return pd.DataFrame(rows)


def test_arm_table_is_full_sorted_by_validation_and_links_runs_when_a_server_is_known():
    from diffseg.report.sections import comparison

    t = _trials()
    t.loc[t.arm == "arm1", "arm"] = HOSTILE  # an arm label is text, never markup
    d = _study_data(t, {"experiment_id": "7"})
    html = comparison(d).tables[0]
    assert "<script>" not in html and "&lt;/script&gt;" in html and "href" not in html  # no server: no links
    order = [html.index(a) for a in ("arm2", "&lt;/script&gt;", "arm0")]  # best validation first (not test)
    assert order == sorted(order)
    d.mlflow_url = "http://127.0.0.1:5000"
    html = comparison(d).tables[0]
    assert html.count('href="http://127.0.0.1:5000/#/experiments/7/runs/run') == 6 and ">s1</a>" in html


def test_search_overview_only_for_searches_and_without_missing_categories():
    from diffseg.report.sections import search_overview

    assert search_overview(_study_data(_trials(), {"algorithm": "grid"})) is None
    s = search_overview(_study_data(_trials(), {"algorithm": "optuna"}))
    values = set()
    for _, chart in s.charts:
        spec = chart.to_dict()
        for rows in spec["datasets"].values():
            values |= {str(v) for r in rows for k, v in r.items() if k not in ("best_val", "dataset")}
        assert "value" not in json.dumps(spec["encoding"])  # axes are named after the parameter
    assert {"default", "defaults", '{"gamma": 5}', "0.5"} <= values
    assert not values & {"nan", "NaN", "None", "null", "{}", "<NA>"}, values
