"""Case-level statistics: patches of one tile are one case, seeds are nested within cases."""

import numpy as np
import pandas as pd
import pytest

from diffseg.metrics.cases import BCA, PERCENTILE, case_interval, case_means, paired_case_differences, resolution


def _patches(tiles=4, patches=16, seeds=3, tile_sd=0.1, patch_sd=0.01, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for t in range(tiles):
        effect = rng.normal(0.7, tile_sd)
        for p in range(patches):
            for s in range(seeds):
                rows.append({"case_id": f"tile{t}", "image_id": f"tile{t}#{p}", "seed": s,
                             "iou": effect + rng.normal(0, patch_sd)})
    return pd.DataFrame(rows)


def test_case_level_interval_over_few_tiles_is_wider_than_the_patch_level_one():
    rows = _patches()
    cases = case_means(rows, "iou")
    assert len(cases) == 4  # 64 patches x 3 seeds of 4 tiles are 4 cases
    patch_lo, patch_hi, _ = case_interval(rows.groupby("image_id").iou.mean())  # wrong: patches as cases
    case_lo, case_hi, _ = case_interval(cases)
    assert case_hi - case_lo > 3 * (patch_hi - patch_lo)


def test_seeds_are_nested_within_cases_not_new_cases():
    rows = _patches(tiles=6, patches=1, seeds=5)
    assert len(case_means(rows, "iou")) == 6
    diff = paired_case_differences(rows.assign(iou=rows.iou + 0.05), rows, "iou")
    assert len(diff) == 6 and np.allclose(diff, 0.05)


def test_resolution_states_what_n_cases_can_decide():
    r = resolution(np.r_[np.ones(5), -np.ones(5)])
    assert r["n_cases"] == 10 and r["p_min"] == pytest.approx(2 / 1024)
    assert r["mde"] == pytest.approx((1.959964 + 0.841621) * np.std(np.r_[np.ones(5), -np.ones(5)], ddof=1)
                                     / np.sqrt(10), rel=1e-5)
    assert resolution([0.3, 0.4, 0.5])["p_min"] == 0.25  # 3 cases can never give p < 0.05


def test_degenerate_bootstrap_falls_back_to_the_percentile_interval_and_says_so(monkeypatch):
    from scipy import stats

    assert case_interval(np.linspace(0, 1, 50))[2] == BCA
    real = stats.bootstrap

    def bca_degenerate(data, statistic, *, method, **kw):  # what scipy does when BCa's z0 or acceleration fails
        if method == "BCa":
            import warnings

            warnings.warn("The BCa confidence interval cannot be calculated.", stats.DegenerateDataWarning,
                          stacklevel=2)
        return real(data, statistic, method=method, **kw)

    monkeypatch.setattr(stats, "bootstrap", bca_degenerate)
    lo, hi, method = case_interval(np.linspace(0, 1, 50))
    assert method == PERCENTILE and lo < 0.5 < hi
