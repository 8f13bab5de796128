import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from diffseg.masks import SOFT, ensemble_summary, foreground, member_diagnostics, member_probs, to_signed
from diffseg.metrics import (
    TRAINING_FREE,
    adaptive_ece,
    auroc,
    brier,
    dice,
    ece,
    ged,
    hungarian_iou,
    iou,
    nll,
    reliability_table,
    uncertainty_auroc,
)


def test_iou_dice_known_values_and_empty_convention():
    p = torch.zeros(3, 4, 4, dtype=torch.bool)
    g = torch.zeros(3, 4, 4, dtype=torch.bool)
    p[0, :2] = True  # 8 px
    g[0, 1:3] = True  # 8 px, overlap 4
    g[1, 0, 0] = True  # pred empty, gt not
    # image 2: both empty
    torch.testing.assert_close(iou(p, g), torch.tensor([4 / 12, 0.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(dice(p, g), torch.tensor([8 / 16, 0.0, 1.0], dtype=torch.float64))


def test_training_free_baselines_agree_with_iou_of_their_masks():
    """Each baseline's IoU is ``iou`` of the mask it predicts: all foreground scores the foreground fraction (an
    empty mask 0), blur + Otsu takes the darker side (a dark square on a bright image: 1; bright on dark: 0)."""
    import numpy as np

    masks = np.zeros((3, 8, 8), np.uint8)
    masks[0, :2] = 1  # 25 % foreground
    masks[1, 2:6, 2:6] = 1  # the dark square below
    images = np.full((3, 8, 8, 3), 220, np.uint8)
    images[1, 2:6, 2:6] = 20
    images[2] = 20
    images[2, 2:6, 2:6] = 220
    masks[2, 2:6, 2:6] = 1  # a bright foreground: Otsu's dark side misses it
    assert set(TRAINING_FREE) == {"blur_otsu", "all_foreground"}
    assert TRAINING_FREE["all_foreground"](images, masks) == pytest.approx([0.25, 16 / 64, 16 / 64])
    assert TRAINING_FREE["all_foreground"](images[:1], np.zeros((1, 8, 8))) == [0.0]
    otsu = TRAINING_FREE["blur_otsu"](images, masks)
    assert otsu[1] > 0.5 and otsu[2] == 0.0


def test_ece_matches_torchmetrics():
    from torchmetrics.functional.classification import binary_calibration_error

    g = torch.Generator().manual_seed(0)
    p = torch.rand(50_000, generator=g)
    y = (torch.rand(50_000, generator=g) < p**1.5).long()
    ref = binary_calibration_error(p, y, n_bins=10, norm="l1")
    assert ece(p, y).item() == pytest.approx(ref.item(), abs=1e-6)


def test_ece_perfect_and_worst():
    y = torch.tensor([0, 1, 0, 1])
    assert ece(y.float(), y).item() == 0
    assert ece(1 - y.float(), y).item() == 1


def test_reliability_table_counts_and_adaptive_bins_equal_mass():
    g = torch.Generator().manual_seed(1)
    p = torch.rand(1000, generator=g) ** 3
    y = torch.rand(1000, generator=g) < p
    tab = reliability_table(p, y)
    assert tab["count"].sum().item() == 1000 and tab["count"].shape == (10,)
    ad = reliability_table(p, y, adaptive=True)
    assert ad["count"].eq(100).all()
    assert adaptive_ece(p, y).item() >= 0


def test_brier_and_nll():
    p = torch.tensor([0.9, 0.2])
    y = torch.tensor([1, 0])
    assert brier(p, y).item() == pytest.approx((0.01 + 0.04) / 2)
    expected = -(math.log(0.9) + math.log(0.8)) / 2
    assert nll(p, y).item() == pytest.approx(expected, rel=1e-6)


def test_auroc_matches_torchmetrics_with_ties():
    from torchmetrics.functional.classification import binary_auroc

    g = torch.Generator().manual_seed(2)
    s = torch.randint(0, 20, (5000,), generator=g).float() / 20  # in [0, 1]: torchmetrics applies no sigmoid
    lab = torch.rand(5000, generator=g) < (s / 2 + 0.2)
    assert auroc(s, lab).item() == pytest.approx(binary_auroc(s, lab.long()).item(), abs=1e-6)
    assert torch.isnan(auroc(s, torch.zeros(5000, dtype=torch.bool)))


def test_uncertainty_auroc_perfect_when_std_marks_errors():
    gt = torch.zeros(8, 8, dtype=torch.bool)
    seg = gt.clone()
    seg[:2] = True  # wrong rows
    std = torch.zeros(8, 8)
    std[:2] = 0.4
    assert uncertainty_auroc(std, seg, gt).item() == 1.0


def test_ged_and_hungarian_known_values():
    a = torch.zeros(4, 4, dtype=torch.bool)
    a[:2] = True
    b = torch.zeros(4, 4, dtype=torch.bool)
    b[1:3] = True  # IoU(a, b) = 1/3
    same = torch.stack([a, a])
    assert ged(same, a[None]).item() == pytest.approx(0.0)
    mixed = torch.stack([a, b])
    # 2*mean(d(S,Y)) - mean(d(S,S')) - 0 = 2*(0 + 2/3)/2 - 2/3 = 0
    assert ged(mixed, a[None]).item() == pytest.approx(0.0, abs=1e-12)
    assert ged(torch.stack([b, b]), a[None]).item() == pytest.approx(4 / 3)
    assert hungarian_iou(mixed, torch.stack([b, a])).item() == pytest.approx(1.0)
    assert hungarian_iou(mixed, a[None]).item() == pytest.approx((1 + 1 / 3) / 2)
    empty = torch.zeros(2, 4, 4, dtype=torch.bool)
    assert ged(empty, empty[:1]).item() == 0.0


def test_mask_convention():
    m = torch.tensor([[0, 1], [1, 0]])
    x0 = to_signed(m)
    assert x0.tolist() == [[-1.0, 1.0], [1.0, -1.0]]
    assert foreground(x0).eq(m.bool()).all()
    samples = torch.stack([x0 * 2, torch.zeros_like(x0), -x0])[None]  # (1, 3, 2, 2)
    vote, _std, seg = ensemble_summary(samples)  # votes: m, 0, 1 - m -> 1/3 everywhere
    torch.testing.assert_close(vote[0], torch.full((2, 2), 1 / 3))
    soft, _, _ = ensemble_summary(samples, rule=SOFT)  # grey levels: clip(m), 0.5, clip(1 - m) -> 1/2
    torch.testing.assert_close(member_probs(x0 * 2, SOFT), m.float())
    torch.testing.assert_close(soft[0], torch.full((2, 2), 0.5))
    assert not seg.any()


@pytest.mark.parametrize("error_rate", [0.02, 0.05, 0.1])
def test_vote_fraction_ece_is_bounded_by_the_members_error_and_the_grey_mean_is_not(error_rate):
    """Binary members that each flip a pixel with probability ``error_rate`` (decided, |x0| = 1) give a
    vote-fraction ECE <= their mean pixel error (ECE <= mean |y - k/N| = mean error). The same members with the
    background at a grey level (x0 = -0.4 instead of -1, still background by the sign) keep every vote and every
    segmentation, but their grey-level mean puts p = 0.3 on the background: its ECE exceeds the bound."""
    g = torch.Generator().manual_seed(0)
    gt = to_signed(torch.rand(4, 1, 32, 32, generator=g) < 0.3)
    flips = torch.rand(4, 10, 1, 32, 32, generator=g) < error_rate
    members = torch.where(flips, -gt[:, None], gt[:, None])
    diag = member_diagnostics(members, gt)
    assert diag["member_error"].mean().item() == pytest.approx(error_rate, abs=0.02)
    assert diag["binariness"].eq(1).all()
    grey = torch.where(members < 0, torch.full_like(members, -0.4), members)
    for i in range(4):
        y = gt[i] > 0
        bound = diag["member_error"][i].item()
        vote, _, _ = ensemble_summary(grey[i : i + 1])
        assert ece(vote[0], y).item() <= bound + 1e-6
        soft, _, _ = ensemble_summary(grey[i : i + 1], rule=SOFT)
        assert ece(soft[0], y).item() > bound + 0.05
    assert member_diagnostics(grey, gt)["bg_prob_softmean"].min().item() > 0.25


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), members=st.integers(1, 12), spread=st.floats(0.0, 1.0))
def test_vote_brier_is_member_error_minus_disagreement(seed, members, spread):
    """The ambiguity decomposition the bench explains a sampler's cost with: per image, the vote fraction's Brier
    score equals the members' pixel error minus their disagreement mean p (1 - p), for members of any grey level
    (only their sign votes). Members that agree everywhere have disagreement 0 and Brier = their error; members that
    split 50/50 on a pixel set have disagreement 0.25 there."""
    g = torch.Generator().manual_seed(seed)
    gt = to_signed(torch.rand(3, 1, 16, 16, generator=g) < 0.4)
    base = torch.randn(3, 1, 1, 16, 16, generator=g)
    x0 = (base + spread * torch.randn(3, members, 1, 16, 16, generator=g)).clamp(-1, 1)
    diag = member_diagnostics(x0, gt)
    vote, _, _ = ensemble_summary(x0)
    for i in range(3):
        b = brier(vote[i], gt[i] > 0).item()
        assert b == pytest.approx(diag["member_error"][i].item() - diag["disagreement"][i].item(), abs=1e-6)
    agree = base.expand(3, members, 1, 16, 16)
    torch.testing.assert_close(member_diagnostics(agree, gt)["disagreement"], torch.zeros(3))
    split = torch.cat([torch.ones(1, 1, 1, 4, 4), -torch.ones(1, 1, 1, 4, 4)], 1)
    assert member_diagnostics(split, torch.ones(1, 1, 4, 4))["disagreement"].item() == pytest.approx(0.25)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 500), seed=st.integers(0, 1000), bins=st.integers(2, 20))
def test_ece_bounded_and_adaptive_counts(n, seed, bins):
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(n, generator=g)
    y = torch.rand(n, generator=g) < 0.5
    e = ece(p, y, bins).item()
    assert 0 <= e <= 1
    assert reliability_table(p, y, bins, adaptive=True)["count"].sum().item() == n


def test_holm_matches_statsmodels():
    import numpy as np
    from statsmodels.stats.multitest import multipletests

    from diffseg.metrics.paired import holm

    rng = np.random.default_rng(3)
    for m in (1, 2, 5, 12):
        for p in (rng.uniform(0, 0.2, m), rng.choice([0.001, 0.01, 0.04, 0.5], m), np.full(m, 0.03)):
            np.testing.assert_allclose(holm(p), multipletests(p, method="holm")[1], rtol=0, atol=1e-15)
    assert holm(np.array([0.01, 0.04, 0.03])).tolist() == [0.03, 0.06, 0.06]  # 3 x 0.01; max(2 x 0.03, ...)


def test_paired_comparison_interval_and_holm():
    import numpy as np
    import pandas as pd

    from diffseg.metrics.paired import compare_arms

    rng = np.random.default_rng(0)
    rows = []
    for seed in (0, 1, 2):
        base = rng.uniform(0.4, 0.8, 40)
        for arm, shift in (("base", 0.0), ("same", 0.0), ("better", 0.05), ("noisy", 0.0)):
            noise = {"better": 0.01, "noisy": 0.05}.get(arm)
            iou_ = base + shift + (rng.normal(0, noise, 40) if noise else 0)
            for i in range(40):
                rows.append({"dataset": "d", "arm": arm, "seed": seed, "image_id": f"c{i}", "iou": iou_[i],
                             "ece": 0.1 - shift + 0.0 * i})
    out = compare_arms(pd.DataFrame(rows), "base").set_index(["arm", "metric"])
    better, same, noisy = out.loc[("better", "iou")], out.loc[("same", "iou")], out.loc[("noisy", "iou")]
    assert better.ci_low > 0 and better.better and better.p_holm < 0.05 and better.n_seeds == 3
    assert same.ci_low <= 0 <= same.ci_high and same.p_holm == 1 and not same.better
    assert noisy.ci_low < 0 < noisy.ci_high and not noisy.better
    assert out.loc[("better", "ece")]["diff"] < 0 and out.loc[("better", "ece")].better  # lower ECE is better
    assert set(out.reset_index().columns) >= {"dataset", "arm", "baseline", "metric", "diff", "ci_low", "ci_high",
                                              "p_holm"}
