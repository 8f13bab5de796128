"""Mean and 95 % confidence interval over seeds (Student t with n - 1 degrees of freedom, scipy): how every
finding is reported. One seed gives no interval (NaN bounds), never a fake one."""

from __future__ import annotations

import math

import numpy as np


def mean_ci(values, level: float = 0.95) -> tuple[float, float, float, int]:
    """(mean, low, high, n) of the finite values."""
    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    n = len(x)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    m = float(x.mean())
    if n == 1:
        return m, math.nan, math.nan, 1
    from scipy import stats  # here, not at the top: 0.3 s of import in every trial worker, which never calls it

    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * x.std(ddof=1) / math.sqrt(n))
    return m, m - half, m + half, n


def mean_ci_dict(values, level: float = 0.95) -> dict:
    """``mean_ci`` as {"mean", "low", "high", "n"} (the benchmarks' JSON)."""
    return dict(zip(("mean", "low", "high", "n"), mean_ci(values, level), strict=True))


def fmt_ci(values, digits: int = 3) -> str:
    """'mean [low, high] (n=N)', or 'mean (n=1)'; '-' without values."""
    m, lo, hi, n = mean_ci(values)
    if n == 0:
        return "-"
    if n == 1:
        return f"{m:.{digits}f} (n=1)"
    return f"{m:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}] (n={n})"
