import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from diffseg.diffusion import (
    SAMPLERS,
    ddim_sample,
    ddpm_sample,
    eps_space_factor,
    make_schedule,
    make_target,
    q_sample,
    respace,
    sample,
    to_eps,
    to_v,
    to_x0,
)


@settings(max_examples=60, deadline=None)
@given(
    t=st.integers(0, 999),
    target=st.sampled_from(["eps", "x0", "v"]),
    seed=st.integers(0, 2**16),
    name=st.sampled_from(["linear", "cosine", "sigmoid"]),
)
def test_conversions_round_trip(t, target, seed, name):
    s = make_schedule(name, 1000)
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(3, 1, 4, 4, generator=g, dtype=torch.float64)
    eps = torch.randn(3, 1, 4, 4, generator=g, dtype=torch.float64)
    ti = torch.full((3,), t)
    a, sg = s.alphas[ti], s.sigmas[ti]
    x_t = a.view(-1, 1, 1, 1) * x0 + sg.view(-1, 1, 1, 1) * eps
    pred = make_target(x0, eps, a, sg, target)
    tol = {"rtol": 1e-6, "atol": 1e-6}
    # eps <-> x0 conversions divide by a or s, which can be tiny; compare where well conditioned
    if target != "eps" or a.min() > 1e-3:
        torch.testing.assert_close(to_x0(pred, x_t, a, sg, target), x0, **tol)
    if target != "x0" or sg.min() > 1e-3:
        torch.testing.assert_close(to_eps(pred, x_t, a, sg, target), eps, **tol)
    if a.min() > 1e-3 and sg.min() > 1e-3:
        torch.testing.assert_close(to_v(pred, x_t, a, sg, target), make_target(x0, eps, a, sg, "v"), **tol)


@pytest.mark.parametrize("target", ["x0", "v"])
def test_eps_space_factor_is_exact(target):
    s = make_schedule("cosine", 1000)
    g = torch.Generator().manual_seed(1)
    ti = torch.tensor([10, 300, 700])
    a, sg = s.alphas[ti], s.sigmas[ti]
    x0 = torch.randn(3, 1, 8, 8, generator=g, dtype=torch.float64)
    eps = torch.randn(3, 1, 8, 8, generator=g, dtype=torch.float64)
    x_t = a.view(-1, 1, 1, 1) * x0 + sg.view(-1, 1, 1, 1) * eps
    pred = make_target(x0, eps, a, sg, target) + 0.1 * torch.randn(3, 1, 8, 8, generator=g, dtype=torch.float64)
    native = (pred - make_target(x0, eps, a, sg, target)).pow(2).flatten(1).mean(1)
    eps_err = (to_eps(pred, x_t, a, sg, target) - eps).pow(2).flatten(1).mean(1)
    torch.testing.assert_close(native * eps_space_factor(s.snr[ti], target), eps_err)


def test_respace_spacings_match_diffusers():
    from diffusers import DDIMScheduler

    for spacing in ("trailing", "leading", "linspace"):
        ref = DDIMScheduler(num_train_timesteps=1000, timestep_spacing=spacing)
        ref.set_timesteps(20)
        assert respace(1000, 20, spacing).tolist() == ref.timesteps.tolist()


def _toy_model(x, t, cond):
    return 0.3 * x + 0.01 * t.float().view(-1, 1, 1, 1) / 1000 + (0 if cond is None else 0.1 * cond)


@pytest.mark.parametrize("spacing", ["trailing", "leading"])
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_and_ddpm_match_diffusers(spacing, eta):
    """Our sampler against diffusers' DDIMScheduler.step on the same alphas, model and noise (eta=1 is DDPM)."""
    from diffusers import DDIMScheduler

    s = make_schedule("linear", 1000)
    ref = DDIMScheduler(num_train_timesteps=1000, timestep_spacing=spacing, clip_sample=False, set_alpha_to_one=True)
    ref.alphas_cumprod = s.alphas_cumprod.float()
    ref.set_timesteps(25)
    x_T = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(5)  # our sampler draws one z per step but the last, in this order
    x = x_T.clone()
    steps = ref.timesteps.tolist()
    for j, t in enumerate(steps):
        eps = _toy_model(x, torch.full((2,), t), None)
        z = torch.randn(x.shape, generator=g) if (eta > 0 and j + 1 < len(steps)) else torch.zeros_like(x)
        x = ref.step(eps, t, x, eta=eta, variance_noise=z).prev_sample
    ours = sample(_toy_model, s, (2, 1, 8, 8), steps=25, spacing=spacing, eta=eta, noise=x_T,
                  generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(ours[:, 0], x, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("steps", [5, 20])
def test_dpmpp_2m_matches_diffusers(steps):
    """DPM-Solver++(2M) against diffusers' DPMSolverMultistepScheduler (dpmsolver++, order 2, final sigma 0,
    trailing spacing) on the same alphas, model and noise."""
    from diffusers import DPMSolverMultistepScheduler

    s = make_schedule("linear", 1000)
    ref = DPMSolverMultistepScheduler(num_train_timesteps=1000, algorithm_type="dpmsolver++", solver_order=2,
                                      prediction_type="epsilon", timestep_spacing="trailing",
                                      final_sigmas_type="zero", lower_order_final=True, thresholding=False)
    ref.set_timesteps(steps)
    x_T = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = x_T.clone()
    for t in ref.timesteps.tolist():
        x = ref.step(_toy_model(x, torch.full((2,), t), None), t, x).prev_sample
    ours = SAMPLERS["dpmpp_2m"](_toy_model, s, (2, 1, 8, 8), steps=steps, noise=x_T.float())
    assert respace(1000, steps).tolist() == ref.timesteps.tolist()
    torch.testing.assert_close(ours[:, 0].double(), x, rtol=1e-4, atol=1e-4)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**16), members=st.integers(1, 4), name=st.sampled_from(["linear", "cosine", "laplace"]),
       spacing=st.sampled_from(["trailing", "leading", "linspace"]))
def test_ddim_eta0_full_T_is_deterministic_and_batched(seed, members, name, spacing):
    """DDIM with eta = 0 and k = T is a deterministic map of the noise, and an ensemble member folded into the
    batch equals DDIM sampling of that member alone from the same noise."""
    s = make_schedule(name, 50)
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(2 * members, 1, 8, 8, generator=g)
    cond = torch.randn(2, 1, 8, 8, generator=g)
    kw = {"cond": cond, "ensemble": members, "noise": noise, "steps": 50, "spacing": spacing, "eta": 0.0}
    a = ddim_sample(_toy_model, s, (2, 1, 8, 8), **kw, generator=torch.Generator().manual_seed(1))
    b = sample(_toy_model, s, (2, 1, 8, 8), **kw, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    m = members - 1
    one = sample(_toy_model, s, (1, 1, 8, 8), cond=cond[1:2], ensemble=1, noise=noise[members + m : members + m + 1],
                 steps=50, spacing=spacing)
    torch.testing.assert_close(a[1, m], one[0, 0])


def test_ensemble_costs_one_call_per_step():
    s = make_schedule("linear", 1000)
    calls = []

    def model(x, t, cond):
        calls.append(x.shape[0])
        return torch.zeros_like(x)

    out = sample(model, s, (3, 1, 4, 4), cond=torch.zeros(3, 3, 4, 4), ensemble=5, steps=10)
    assert out.shape == (3, 5, 1, 4, 4)
    assert calls == [15] * 10


def test_perfect_x0_model_recovers_mask_with_clipping():
    s = make_schedule("linear", 1000)
    mask = torch.sign(torch.randn(2, 1, 8, 8))

    def model(x, t, cond):
        return cond

    out = ddpm_sample(model, s, (2, 1, 8, 8), cond=mask, target="x0", steps=20, clip_x0=True,
                      generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out[:, 0], mask, atol=1e-5, rtol=0)


def test_q_sample_statistics():
    s = make_schedule("linear", 1000)
    x0 = torch.ones(20000, 1, 1, 1)
    t = torch.full((20000,), 600)
    xt, _a, _sg = q_sample(x0, t, s, torch.randn(20000, 1, 1, 1, generator=torch.Generator().manual_seed(0)))
    assert xt.mean().item() == pytest.approx(s.alphas[600].item(), abs=0.02)
    assert xt.std().item() == pytest.approx(s.sigmas[600].item(), abs=0.02)
