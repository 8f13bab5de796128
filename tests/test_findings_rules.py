"""The findings' rules on small synthetic exports: each verdict can go either way, n is counted in cases."""

from pathlib import Path

import numpy as np
import pandas as pd

from diffseg.report import findings
from diffseg.report.data import StudyData


def _study(e2_shift: float, tiles=6, patches=8, seeds=(0, 1, 2), seed=0):
    rng = np.random.default_rng(seed)
    trials, images = [], []
    for arm, exp, shift in (("e1", "e1", 0.0), ("e2_v", "e2", e2_shift)):
        for s in seeds:
            tid = f"{arm}-{s}"
            trials.append({"trial_id": tid, "run_id": f"r{tid}", "arm": arm, "dataset": "d", "seed": s,
                           "status": "ok", "experiment": exp, "architecture": "ensemdiff", "test_ece": 0.1,
                           "test_iou": 0.8, "cfg.diffusion.target": "v", "cfg.eval.ensemble": 10})
            for t in range(tiles):
                base = 0.05 + 0.02 * t  # tiles differ more than their patches do
                for p in range(patches):
                    e = base + shift + rng.normal(0, 0.005)
                    images.append({"trial_id": tid, "dataset": "d", "arm": arm, "seed": s, "image_id": f"t{t}#{p}",
                                   "case_id": f"t{t}", "iou": 0.8 + rng.normal(0, 0.01), "ece": e,
                                   "ece_softmean": e + 0.1, "member_error": e + 0.01, "disagreement": 0.004,
                                   "binariness": 0.9, "bg_prob": 0.02})
    empty = pd.DataFrame(columns=["trial_id"])
    return StudyData("s", Path("/nonexistent"), {}, pd.DataFrame(trials), empty, empty, empty, pd.DataFrame(images),
                     empty, empty, empty)


def test_calibration_counts_cases_not_patches_and_can_go_either_way():
    up = findings.calibration(_study(+0.03)).iloc[0]
    assert up["n cases"] == 6 and up["verdict"] == "E2 raises ECE"  # 6 tiles, not 48 patches x 3 seeds
    assert up["smallest p at n"] == f"{2 / 2**6:.2g}" and up["ECE <= member error (images)"] == "100%"
    assert up["E2 disagreement"] == 0.004
    down = findings.calibration(_study(-0.03)).iloc[0]
    assert down["verdict"] == "E2 lowers ECE"
    same = findings.calibration(_study(0.0, seed=1)).iloc[0]
    assert same["verdict"] == "no clear difference"


def test_three_cases_cannot_reach_p_below_005():
    r = findings.calibration(_study(+0.03, tiles=3)).iloc[0]
    assert r["n cases"] == 3 and float(r["smallest p at n"]) == 0.25
    assert r["verdict"].startswith("too few cases to decide")


def test_the_baseline_verdict_uses_the_stronger_training_free_baseline_and_goes_either_way():
    """Kvasir-SEG's case: polyps are not darker, blur + Otsu scores 0.03 and all foreground 0.15; a model at
    0.16 +- 0.02 over seeds beats the first but not the second, one at 0.45 beats both."""
    d = _study(0.0)
    d.trials = d.trials.assign(test_iou=np.where(d.trials.arm == "e1", [0.44, 0.45, 0.46] * 2, [0.14, 0.16, 0.18] * 2))
    rows = [{"dataset": "d", "method": m, "test_images": 120, "test_cases": 120, "iou": iou}
            for m, iou in (("blur_otsu", 0.031), ("all_foreground", 0.153))]
    d.baselines = pd.DataFrame(rows)
    t = findings.training_free_baseline(d).set_index("model")
    assert set(t.baseline) == {"all_foreground"} and set(t["baseline IoU"]) == {0.153}
    assert t.loc["ensemdiff E1 (e1)", "beats the baseline"].startswith("yes")
    assert t.loc["ensemdiff E2 (e2_v)", "beats the baseline"] == "no"
    d.baselines = pd.DataFrame(rows[:1])  # an export from before all foreground was a baseline: blur + Otsu only
    assert findings.training_free_baseline(d).set_index("model").loc["ensemdiff E2 (e2_v)", "beats the baseline"] \
        .startswith("yes")
