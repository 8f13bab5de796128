"""What "best" means, once: the rule that picks a study's best trial per dataset and ranks its arms, used by the
model registry, the parent run's summary, the console summary and the report (pandas only, no torch).

- Candidates: finished trials (``FINISHED``) with a validation value (``best_val``).
- ``best_trials``: per dataset, the single best trial by its selection metric (``SELECTION``) among the
  experiments that segment (``SEGMENTING``: E1/E2, the ones that log a model) when the dataset has any; a
  dataset with only E3/E4 trials gets its best trial by their shared metric. Never the test split.
- ``rank_arms``: per dataset and selection metric, the arms ranked by their mean validation value over seeds.
  The best trial need not belong to the rank-1 arm (one lucky seed); the report says which rule it shows.
"""

from __future__ import annotations

import pandas as pd

from .kinds import BY_METRIC, SEGMENTING
from .result import FINISHED

BEST_RULE = ("best single trial per dataset by validation, among the segmenting experiments (E1/E2) where the "
             "dataset has any")
RANK_RULE = "arms ranked per dataset by their mean validation value over seeds (1 = best)"


def candidates(trials: pd.DataFrame) -> pd.DataFrame:
    return trials[trials.status.isin(FINISHED) & trials.best_val.notna()]


def best_trials(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per dataset: the best trial (all of its columns), by ``BEST_RULE``."""
    rows = []
    for _, grp in candidates(trials).groupby("dataset", sort=True):
        seg = grp[grp.experiment.isin(SEGMENTING)] if "experiment" in grp else grp.iloc[:0]
        pool = seg if len(seg) else grp
        metric = pool.selection_metric.mode().iloc[0]
        pool = pool[pool.selection_metric == metric]
        rows.append(pool.loc[BY_METRIC[metric].best_index(pool.best_val)])
    return pd.DataFrame(rows)


def rank_arms(trials: pd.DataFrame) -> pd.DataFrame:
    """(dataset, selection_metric, arm, mean_val, seeds, rank) by ``RANK_RULE``."""
    rows = []
    for (ds, metric), grp in candidates(trials.dropna(subset=["arm"])).groupby(["dataset", "selection_metric"]):
        val = grp.groupby("arm").best_val.agg(["mean", "size"]).sort_values(
            "mean", ascending=BY_METRIC[metric].ascending)
        for rank, (arm, r) in enumerate(val.iterrows(), 1):
            rows.append({"dataset": ds, "selection_metric": metric, "arm": arm, "mean_val": float(r["mean"]),
                         "seeds": int(r["size"]), "rank": rank, "of": len(val)})
    return pd.DataFrame(rows, columns=["dataset", "selection_metric", "arm", "mean_val", "seeds", "rank", "of"])
