"""Statistics at the level of independent cases (images or tiles), with seeds nested within cases.

Patches of one tile are not independent test cases: a finding drawn from 64 patches of 4 tiles rests on 4 cases.
Every per-image value is first averaged within its case (over its patches, then over seeds: the seeds are repeats
of the same test case, not new cases), and intervals and tests are over cases.

- ``case_means``: per-case means of a metric (or of a paired difference of two arms).
- ``case_interval``: 95 % (or another level) bootstrap interval of the mean over cases (scipy's BCa; where BCa
  cannot be computed, e.g. all cases nearly equal or too few distinct values, the percentile interval, and the
  method says so: scipy's degenerate-data warnings are never silenced, they choose the fallback).
- ``resolution``: what the test can decide at that n: the smallest two-sided p the Wilcoxon signed-rank test
  can reach (every case with the same sign: 2 / 2^n) and the smallest detectable effect of a paired comparison at
  alpha = 0.05 and 80 % power, (z_0.975 + z_0.8) sd / sqrt(n) (normal approximation).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
from scipy import stats

BCA, PERCENTILE, NONE = "BCa", "percentile (BCa degenerate)", "none (n < 2)"


def case_means(rows: pd.DataFrame, metric: str, case: str = "case_id") -> pd.Series:
    """Mean of ``metric`` per case: over the case's patches within each seed, then over seeds."""
    key = case if case in rows else "image_id"
    per_seed = rows.groupby([key, "seed"])[metric].mean() if "seed" in rows else rows.groupby(key)[metric].mean()
    return per_seed.groupby(level=0).mean().dropna()


def paired_case_differences(arm: pd.DataFrame, base: pd.DataFrame, metric: str) -> pd.Series:
    """Per case: mean over its patches and the seeds both ran of (arm - base) on the same image and seed."""
    key = "case_id" if "case_id" in arm and "case_id" in base else "image_id"
    cols = ["seed", "image_id", metric] + ([key] if key != "image_id" else [])
    j = arm[cols].merge(base[["seed", "image_id", metric]], on=["seed", "image_id"], suffixes=("", "_base"))
    j = j.assign(d=j[metric] - j[f"{metric}_base"]).dropna(subset=["d"])
    return case_means(j.rename(columns={"d": "_d"}), "_d", key)


def case_interval(values, seed: int = 0, level: float = 0.95) -> tuple[float, float, str]:
    """(low, high, method) of the ``level`` (95 %) bootstrap interval of the mean of ``values`` (one per case)."""
    x = np.asarray(values, dtype=np.float64)
    if len(x) < 2:
        return math.nan, math.nan, NONE
    if np.ptp(x) <= 1e-12 * max(1.0, float(np.abs(x).max())):
        return float(x.mean()), float(x.mean()), PERCENTILE
    with warnings.catch_warnings():
        warnings.simplefilter("error", stats.DegenerateDataWarning)
        try:
            ci = stats.bootstrap((x,), np.mean, n_resamples=9999, method="BCa", confidence_level=level,
                                 random_state=np.random.default_rng(seed)).confidence_interval
            if np.isfinite(ci.low) and np.isfinite(ci.high):
                return float(ci.low), float(ci.high), BCA
        except stats.DegenerateDataWarning:
            pass
    ci = stats.bootstrap((x,), np.mean, n_resamples=9999, method="percentile", confidence_level=level,
                         random_state=np.random.default_rng(seed)).confidence_interval
    return float(ci.low), float(ci.high), PERCENTILE


def resolution(values, alpha: float = 0.05, power: float = 0.8) -> dict[str, float]:
    """n of cases, the smallest reachable two-sided Wilcoxon p (2 / 2^n) and the smallest detectable mean effect."""
    x = np.asarray(values, dtype=np.float64)
    n = len(x)
    sd = float(x.std(ddof=1)) if n > 1 else math.nan
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    return {"n_cases": n, "p_min": 2.0 / 2.0**n if n else math.nan,
            "mde": float(z * sd / math.sqrt(n)) if n > 1 else math.nan}


def summarise_cases(values, seed: int = 0) -> dict[str, float | str]:
    """Mean, interval, method, Wilcoxon p (paired differences: against 0) and the resolution of ``values``."""
    x = np.asarray(values, dtype=np.float64)
    lo, hi, method = case_interval(x, seed)
    p = float(stats.wilcoxon(x).pvalue) if len(x) > 1 and np.any(x != 0) else (1.0 if len(x) > 1 else math.nan)
    return {"mean": float(x.mean()) if len(x) else math.nan, "low": lo, "high": hi, "ci_method": method, "p": p,
            **resolution(x)}


def fmt_cases(s: dict) -> str:
    """'mean [low, high] (n=cases)' of a ``summarise_cases`` result."""
    if not s["n_cases"]:
        return "-"
    if s["n_cases"] < 2:
        return f"{s['mean']:.3f} (n=1)"
    mark = "" if s["ci_method"] == BCA else " pct"
    return f"{s['mean']:.3f} [{s['low']:.3f}, {s['high']:.3f}]{mark} (n={s['n_cases']})"
