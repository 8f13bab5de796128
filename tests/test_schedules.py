import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from diffseg.diffusion import SCHEDULES, make_schedule


def test_linear_terminal_snr_matches_ddpm():
    s = make_schedule("linear", 1000)
    assert s.snr[-1].item() == pytest.approx(4.04e-5, rel=0.01)
    assert s.log_snr[-1].item() == pytest.approx(-10.12, abs=0.01)
    assert s.alphas_cumprod.dtype == torch.float64 and s.alphas_cumprod.shape == (1000,)
    assert s.params == {}


def test_linear_rescaled_for_other_T():
    s = make_schedule("linear", 100)
    assert s.betas[0].item() == pytest.approx(1e-3)
    assert s.betas[-1].item() == pytest.approx(0.2)


def test_cosine_terminal_snr():
    s = make_schedule("cosine", 1000)
    assert s.snr[-1].item() == pytest.approx(2.4e-9, rel=0.05)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("linear", {"beta_schedule": "linear"}),
        ("cosine", {"beta_schedule": "squaredcos_cap_v2"}),
    ],
)
@pytest.mark.parametrize("zero", [False, True])
def test_cross_check_against_diffusers(name, kwargs, zero):
    from diffusers import DDPMScheduler

    params = {"zero_terminal_snr": True} if zero else {}
    ours = make_schedule(name, 1000, **params).alphas_cumprod
    ref = DDPMScheduler(num_train_timesteps=1000, rescale_betas_zero_snr=zero, **kwargs).alphas_cumprod.double()
    # diffusers computes betas in float32; compare at float32 precision
    torch.testing.assert_close(ours, ref, rtol=2e-5, atol=2e-7)


def test_zero_terminal_snr_keeps_first_step():
    base = make_schedule("linear", 1000)
    z = make_schedule("linear", 1000, zero_terminal_snr=True)
    assert z.snr[-1].item() == 0.0
    assert z.alphas_cumprod[0].item() == base.alphas_cumprod[0].item()
    assert z.params == {"zero_terminal_snr": True}


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_logsnr_end_lands_exactly(name):
    s = make_schedule(name, 1000, logsnr_end=-12.0)
    assert s.log_snr[-1].item() == pytest.approx(-12.0, abs=1e-9)
    assert s.log_snr[0].item() == make_schedule(name, 1000).log_snr[0].item()


def test_shifted_cosine_shift_is_exact():
    ref = make_schedule("shifted_cosine", 1000, size=64, ref_size=64)
    s = make_schedule("shifted_cosine", 1000, size=256, ref_size=64)
    shift = torch.full((1000,), 2 * math.log(64 / 256), dtype=torch.float64)
    torch.testing.assert_close(s.log_snr - ref.log_snr, shift)


def test_shifted_cosine_interpolated_moves_between_shifts():
    s = make_schedule("shifted_cosine", 1000, size=128, interpolated=True)
    low = make_schedule("shifted_cosine", 1000, size=128, ref_size=32)
    high = make_schedule("shifted_cosine", 1000, size=128, ref_size=256)
    assert (low.log_snr <= s.log_snr + 1e-12).all() and (s.log_snr <= high.log_snr + 1e-12).all()
    assert s.log_snr[-1].item() == pytest.approx(high.log_snr[-1].item())


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_input_scale_shifts_logsnr(name):
    base = make_schedule(name, 500)
    s = make_schedule(name, 500, input_scale=0.5)
    torch.testing.assert_close(s.log_snr - base.log_snr, torch.full((500,), 2 * math.log(0.5), dtype=torch.float64))


def test_sigmoid_is_chen_not_geodiff():
    s = make_schedule("sigmoid", 1000, start=-3, end=3, tau=1)
    u = 0.5
    sig = torch.sigmoid
    v = (sig(torch.tensor(3.0)) - sig(torch.tensor(0.0))) / (sig(torch.tensor(3.0)) - sig(torch.tensor(-3.0)))
    assert s.alphas_cumprod[499].item() == pytest.approx(v.item(), rel=1e-6)
    assert u == 0.5


def test_laplace_centre_and_density():
    s = make_schedule("laplace", 1000, mu=1.0, b=0.5)
    assert s.log_snr[499].item() == pytest.approx(1.0, abs=1e-9)  # u = 0.5 gives lambda = mu


def test_bad_names_and_params():
    with pytest.raises(ValueError, match=r"unknown schedule .lineer.*allowed"):
        make_schedule("lineer", 1000)
    with pytest.raises(ValueError, match="bad parameters for schedule 'cosine'"):
        make_schedule("cosine", 1000, tau=3)
    with pytest.raises(ValueError, match="not both"):
        make_schedule("linear", 1000, logsnr_end=-5, zero_terminal_snr=True)
    with pytest.raises(ValueError, match="beta_end"):
        make_schedule("linear", 10)
    with pytest.raises(ValueError, match="input_scale"):
        make_schedule("linear", 1000, input_scale=0)


schedule_params = st.sampled_from(
    [
        ("linear", {}),
        ("cosine", {}),
        ("sigmoid", {"start": -3.0, "end": 3.0, "tau": 0.9}),
        ("sigmoid", {"start": 0.0, "end": 3.0, "tau": 0.7}),
        ("shifted_cosine", {"size": 256}),
        ("shifted_cosine", {"size": 128, "interpolated": True}),
        ("laplace", {"mu": 0.0, "b": 0.5}),
        ("laplace", {"mu": -1.0, "b": 1.0}),
    ]
)


@settings(max_examples=60, deadline=None)
@given(
    sp=schedule_params,
    T=st.integers(min_value=25, max_value=1500),
    scale=st.one_of(st.none(), st.floats(min_value=0.05, max_value=2.0)),
    end=st.one_of(st.none(), st.floats(min_value=-25.0, max_value=-8.0), st.just("zero")),
)
def test_every_schedule_strictly_decreasing(sp, T, scale, end):
    name, params = sp
    params = dict(params)
    if scale is not None:
        params["input_scale"] = scale
    if end == "zero":
        params["zero_terminal_snr"] = True
    elif end is not None:
        params["logsnr_end"] = end
    s = make_schedule(name, T, **params)
    assert (s.log_snr[1:] < s.log_snr[:-1]).all()
    ab = s.alphas_cumprod
    assert ((ab >= 0) & (ab < 1)).all()
