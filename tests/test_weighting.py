import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from diffseg.diffusion import make_schedule, make_timestep_sampler, make_weighting
from diffseg.diffusion.loss import loss_weight_table

SNRS = torch.logspace(-8, 6, 200, dtype=torch.float64)


def test_min_snr_formula():
    w = make_weighting("min_snr", gamma=5)
    torch.testing.assert_close(w(SNRS), torch.minimum(torch.ones_like(SNRS), 5 / SNRS))


def test_p2_soft_min_v_debiased_formulas():
    torch.testing.assert_close(make_weighting("p2", k=1, gamma=0.5)(SNRS), (1 + SNRS) ** -0.5)
    torch.testing.assert_close(make_weighting("soft_min_snr", gamma=4)(SNRS), 4 / (4 + SNRS))
    torch.testing.assert_close(make_weighting("v")(SNRS), (SNRS + 1) / SNRS)
    torch.testing.assert_close(make_weighting("x0_mse")(SNRS), 1 / SNRS)
    deb = make_weighting("debiased", max_weight=100.0)(SNRS)
    torch.testing.assert_close(deb, torch.clamp(SNRS**-0.5, max=100.0))
    assert make_weighting("uniform")(SNRS).eq(1).all()


def test_elbo_matches_continuous_derivative():
    s = make_schedule("cosine", 1000)
    w = make_weighting("elbo").table(s)
    lam = s.log_snr
    cont = -(lam[2:] - lam[:-2]) / (2 / 1000) / 2  # -d lambda/du / 2, central difference
    mid = slice(100, 900)
    torch.testing.assert_close(w[1:-1][mid], cont[mid], rtol=0.02, atol=0)


def test_curve_normalised_to_mean_one_and_resampled():
    s = make_schedule("linear", 1000)
    w = make_weighting("curve", values=[0, 1, 2, 3])
    tab = w.table(s)
    assert tab.shape == (1000,) and tab.mean().item() == pytest.approx(1.0)
    assert tab[0].item() == 0 and (tab[1:] >= tab[:-1]).all()
    with pytest.raises(ValueError, match="non-negative"):
        make_weighting("curve", values=[1, -1])


def test_unknown_weighting_lists_allowed():
    with pytest.raises(ValueError, match=r"allowed: .*min_snr"):
        make_weighting("minsnr")


def test_zero_terminal_snr_weights_are_finite_for_v_and_x0_targets():
    s = make_schedule("linear", 1000, zero_terminal_snr=True)
    for name in ("uniform", "min_snr", "v", "p2", "soft_min_snr"):
        for target in ("v", "x0"):
            tab = loss_weight_table(make_weighting(name), s, target)
            assert torch.isfinite(tab).all()
    # v-weighting with v-target is exactly L_simple on v (w_eps * SNR/(1+SNR) = 1)
    tab = loss_weight_table(make_weighting("v"), s, "v")
    torch.testing.assert_close(tab, torch.ones_like(tab))


def test_importance_sampler_density_and_correction():
    T = 50
    curve = torch.linspace(1, 5, T).tolist()
    smp = make_timestep_sampler("importance", T, curve=curve, correct=True)
    g = torch.Generator().manual_seed(0)
    t, scale = smp.sample(200_000, g)
    freq = torch.bincount(t, minlength=T).double() / t.numel()
    torch.testing.assert_close(freq, smp.probs(), atol=3e-3, rtol=0)
    # the correction makes E[scale * f(t)] equal the uniform mean of f
    f = torch.arange(T, dtype=torch.float64)
    assert (scale.double() * f[t]).mean().item() == pytest.approx(f.mean().item(), rel=0.02)
    _t2, scale2 = make_timestep_sampler("importance", T, curve=curve, correct=False).sample(10, g)
    assert scale2.eq(1).all()


def test_loss_second_moment_sampler_warmup_and_focus():
    T = 8
    smp = make_timestep_sampler("loss_second_moment", T, history=3)
    g = torch.Generator().manual_seed(0)
    assert torch.allclose(smp.probs(), torch.full((T,), 1 / T, dtype=torch.float64))
    for _ in range(200):
        t, _scale = smp.sample(4, g)
        smp.update(t, (t == 5).double() * 10 + 0.1)
    p = smp.probs()
    assert smp.warmed_up() and p.argmax().item() == 5 and p[5] > 0.5
    state = smp.state_dict()
    other = make_timestep_sampler("loss_second_moment", T, history=3)
    other.load_state_dict(state)
    torch.testing.assert_close(other.probs(), p)


@settings(max_examples=40, deadline=None)
@given(gamma=st.floats(0.1, 20), log_snr=st.floats(-20, 15))
def test_min_snr_bounded_and_soft_below_hard(gamma, log_snr):
    snr = torch.tensor([float(torch.tensor(log_snr).exp())], dtype=torch.float64)
    hard = make_weighting("min_snr", gamma=gamma)(snr)
    soft = make_weighting("soft_min_snr", gamma=gamma)(snr)
    assert 0 < soft.item() <= hard.item() <= 1


@pytest.mark.parametrize("schedule", [("linear", False), ("cosine", False), ("linear", True)])
def test_each_target_trains_on_its_own_plain_mse_and_not_on_anothers(schedule):
    """PLAIN_MSE[target] weighs the target's native MSE by exactly 1 at every step (zero terminal SNR included);
    another target's plain MSE does not (so the pairing is what a comparison of targets must hold fixed)."""
    from diffseg.diffusion import TARGETS
    from diffseg.diffusion.weighting import PLAIN_MSE

    s = make_schedule(schedule[0], 1000, zero_terminal_snr=schedule[1])
    assert set(PLAIN_MSE) == set(TARGETS)
    for target in TARGETS:
        for other in TARGETS:
            tab = loss_weight_table(make_weighting(PLAIN_MSE[other]), s, target)
            if other == target:
                torch.testing.assert_close(tab, torch.ones_like(tab), rtol=1e-12, atol=0)
            else:
                assert tab.max() / tab.min() > 10, (target, other)
