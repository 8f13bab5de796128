"""One rule for "best": the registry, the parent run, the console and the report all use it."""

import pandas as pd

from diffseg.experiments.selection import best_trials, rank_arms


def _trials():
    # a mixed study on one dataset: E3 first (as its exported row order may put it), then two E2 arms x 2 seeds
    return pd.DataFrame([
        {"dataset": "d", "arm": "mask", "experiment": "e3", "seed": 0, "status": "ok", "run_id": "r3",
         "selection_metric": "val_x0_error", "best_val": 0.01},
        {"dataset": "d", "arm": "a", "experiment": "e2", "seed": 0, "status": "ok", "run_id": "a0",
         "selection_metric": "val_iou", "best_val": 0.60},
        {"dataset": "d", "arm": "a", "experiment": "e2", "seed": 1, "status": "ok", "run_id": "a1",
         "selection_metric": "val_iou", "best_val": 0.62},
        {"dataset": "d", "arm": "b", "experiment": "e2", "seed": 0, "status": "ok", "run_id": "b0",
         "selection_metric": "val_iou", "best_val": 0.70},
        {"dataset": "d", "arm": "b", "experiment": "e2", "seed": 1, "status": "error", "run_id": "b1",
         "selection_metric": "val_iou", "best_val": 0.90},
        {"dataset": "g", "arm": "mask", "experiment": "e4", "seed": 0, "status": "ok", "run_id": "g4",
         "selection_metric": "val_x0_error", "best_val": 0.2},
    ])


def test_a_mixed_study_picks_the_segmenting_winner_not_the_first_rows_metric():
    best = best_trials(_trials()).set_index("dataset")
    assert best.loc["d", "run_id"] == "b0"  # not the E3 row, not the failed trial with the higher value
    assert best.loc["g", "run_id"] == "g4"  # a dataset without segmenting trials: its own metric


def test_arms_are_ranked_by_mean_validation_and_the_best_trial_can_differ():
    t = _trials()
    t.loc[t.run_id == "b1", "status"] = "ok"
    t.loc[t.run_id == "b1", "best_val"] = 0.30  # arm b: one lucky seed (0.70), mean 0.50 < arm a's 0.61
    r = rank_arms(t)
    seg = r[(r.dataset == "d") & (r.selection_metric == "val_iou")].set_index("arm")
    assert seg.loc["a", "rank"] == 1 and seg.loc["b", "rank"] == 2
    assert best_trials(t).set_index("dataset").loc["d", "arm"] == "b"  # the rule the report must name
