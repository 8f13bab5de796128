"""Post-hoc analyses: the dip rule of finding (a) on curves that must go each way, and the loss over t measured
on kept checkpoints with the same noise for every checkpoint."""

import numpy as np
import pytest

from diffseg.analysis.dip import DIP, NO_DIP, UNDECIDED, dip_statistics, dip_verdict, two_way_bootstrap
from diffseg.analysis.loss_over_t import analyse_trial, loss_t_grid
from diffseg.experiments import train_trial
from diffseg.experiments.result import EMA_CHECKPOINTS

from .test_experiments import cfg

T = 1000
GRID = np.asarray(loss_t_grid(T))


def _losses(curve, noise=0.02, images=24, draws=8, seed=0):
    """(images, draws, t) measurements around ``curve``: multiplicative noise per (image, draw), shared over t as
    in the real measurement (the same samples and noise at every t), plus a third of it per measurement."""
    rng = np.random.default_rng(seed)
    return curve * np.exp(rng.normal(0, noise, (images, draws, 1))
                          + rng.normal(0, noise / 3, (images, draws, len(curve))))


def _verdict(curve, **kw):
    losses = _losses(curve, **kw)
    return dip_verdict(GRID, losses.mean((0, 1)), two_way_bootstrap(losses))


def test_a_curve_that_dips_and_rises_is_a_dip_even_with_its_global_minimum_at_T():
    t = GRID.astype(float)
    # high at t = 0 (the 1/s amplification), a dip near t = 15, a bump at mid t, then down to 0 at T
    curve = 0.5 * np.exp(-t / 5) + 0.05 + 0.2 * np.exp(-((t - 150) / 60) ** 2) - 0.05 * t / T
    assert int(np.argmin(curve)) == len(t) - 1  # the old rule (global minimum below t = 50) could never fire here
    v = _verdict(curve)
    assert v["verdict"] == DIP and v["dip_depth_low"] > 0 and v["rise_low"] >= 1.5


def test_a_monotone_falling_curve_is_no_dip():
    curve = 1.0 / (1 + GRID / 10.0)
    assert _verdict(curve)["verdict"] == NO_DIP


def test_a_dip_without_a_rise_is_no_dip():
    curve = 0.5 * np.exp(-GRID / 5) + 0.05 * (1 - GRID / T) + 1e-3
    v = _verdict(curve)
    assert v["dip_depth_low"] > 0 and v["verdict"] == NO_DIP


def test_noise_larger_than_the_effect_is_undecided():
    t = GRID.astype(float)
    curve = 0.10 + 0.01 * np.exp(-t / 5) + 0.05 * np.exp(-((t - 150) / 60) ** 2)  # a rise to ~1.49x: at the line
    assert _verdict(curve, noise=0.3, images=6, draws=2)["verdict"] == UNDECIDED
    assert _verdict(curve, noise=0.05)["verdict"] == NO_DIP  # measured precisely: just below 1.5x


def test_dip_statistics_need_the_windows():
    with pytest.raises(ValueError, match="t grid needs"):
        dip_statistics(np.arange(10, 40), np.ones(30))


def test_loss_over_t_on_kept_checkpoints(tmp_path):
    out = tmp_path / "trial"
    r = train_trial(cfg(**{"train.steps": 4, "train.val_every": 2, "train.keep_checkpoints": [2, 4],
                           "output_dir": str(out)}))
    assert r.status == "ok"
    assert sorted(p.name for p in (out / EMA_CHECKPOINTS).iterdir()) == ["step2.pt", "step4.pt"]
    curves, verdicts = analyse_trial(out, images=4, draws=3)
    assert sorted(verdicts.step) == [2, 4] and set(verdicts.verdict) <= {DIP, NO_DIP, UNDECIDED}
    grid = loss_t_grid(100)
    assert len(curves) == 2 * len(grid) and (curves.low <= curves.loss + 1e-12).all()
    assert (curves.high >= curves.loss - 1e-12).all() and curves.optimal.notna().all()
    # the optimal mask denoiser: ~0 at t = 0 (the mask is recoverable), 0 at T (eps_hat = x_t / s is exact)
    opt = curves[curves.step == 2].set_index("t").optimal
    assert opt[0] < 1e-3 and opt.max() > 10 * max(opt[0], opt[99])
    again, _ = analyse_trial(out, images=4, draws=3)
    assert np.array_equal(again.loss.to_numpy(), curves.loss.to_numpy())  # fixed batch and noise


def test_keep_checkpoints_must_be_positive_steps():
    with pytest.raises(ValueError, match=r"train.keep_checkpoints \[0, -3\] must be positive"):
        cfg(**{"train.steps": 4, "train.keep_checkpoints": [2, 0, -3]}).validate()
    cfg(**{"train.steps": 4, "train.keep_checkpoints": [2, 9]}).validate()  # 9 is never reached: allowed
