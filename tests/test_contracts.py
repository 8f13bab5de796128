"""One contract per registry, every entry held to it (as diffusers' SchedulerCommonTest holds every scheduler):
a new schedule, weighting, timestep sampler, sampler or architecture is tested by being registered."""

import json
import math

import pytest
import torch

from diffseg.diffusion import (
    SAMPLERS,
    SCHEDULES,
    TIMESTEP_SAMPLERS,
    WEIGHTINGS,
    make_schedule,
    make_timestep_sampler,
    make_weighting,
)
from diffseg.models import ARCHITECTURES, REFERENCE_ARCHITECTURES, ModelConfig, build_model, count_params
from diffseg.registry import Registry

# Parameters an entry cannot do without (everything else takes its defaults).
REQUIRED = {"curve": {"values": [1.0, 2.0, 3.0]}, "importance": {"curve": [1.0, 2.0, 3.0]}}
T = 100


@pytest.mark.parametrize("registry", [SCHEDULES, WEIGHTINGS, TIMESTEP_SAMPLERS, SAMPLERS, ARCHITECTURES])
def test_every_registry_names_its_kind_and_suggests_on_a_typo(registry):
    assert isinstance(registry, Registry) and len(registry) >= 2
    name = next(iter(registry))
    with pytest.raises(ValueError, match=rf"unknown {registry.kind} '{name}x'; did you mean '{name}'"):
        registry[name + "x"]
    assert name in registry and name + "x" not in registry


@pytest.mark.parametrize("name", list(SCHEDULES))
@pytest.mark.parametrize("terminal", [{}, {"logsnr_end": -12.0}, {"zero_terminal_snr": True}])
def test_schedule_contract(name, terminal):
    s = make_schedule(name, T, **terminal)
    lam = s.log_snr
    assert lam.shape == (T,) and lam.dtype == torch.float64
    assert bool(torch.all(lam[1:] < lam[:-1])), "log-SNR strictly decreasing"
    assert bool(torch.isfinite(lam[:-1]).all()) and float(s.alphas_cumprod[0]) > 0.5
    if terminal.get("zero_terminal_snr"):
        assert float(s.alphas_cumprod[-1]) == 0.0
    elif terminal:
        assert math.isclose(float(lam[-1]), -12.0, abs_tol=1e-6)
    json.dumps(s.describe())
    with pytest.raises(ValueError, match=f"bad parameters for schedule '{name}'"):
        make_schedule(name, T, not_a_parameter=1)


@pytest.mark.parametrize("name", list(WEIGHTINGS))
@pytest.mark.parametrize("zero", [False, True])
def test_weighting_contract(name, zero):
    w = make_weighting(name, **REQUIRED.get(name, {}))
    assert w.name == name
    table = w.table(make_schedule("linear", T, zero_terminal_snr=zero))
    assert table.shape == (T,) and table.dtype == torch.float64
    assert bool(torch.isfinite(table).all()) and bool((table >= 0).all()) and float(table.sum()) > 0
    with pytest.raises(ValueError, match=f"bad parameters for weighting '{name}'"):
        make_weighting(name, not_a_parameter=1)


@pytest.mark.parametrize("name", list(TIMESTEP_SAMPLERS))
def test_timestep_sampler_contract(name):
    s = make_timestep_sampler(name, T, **REQUIRED.get(name, {}))
    p = s.probs()
    assert p.shape == (T,) and math.isclose(float(p.sum()), 1.0, rel_tol=1e-9) and bool((p >= 0).all())
    for _ in range(3):  # learning samplers see losses
        t, scale = s.sample(64, torch.Generator().manual_seed(0))
        assert t.dtype == torch.long and int(t.min()) >= 0 and int(t.max()) < T
        assert scale.shape == (64,) and bool((scale > 0).all()) and bool(torch.isfinite(scale).all())
        s.update(t, torch.rand(64, dtype=torch.float64) + t / T)
    twin = make_timestep_sampler(name, T, **REQUIRED.get(name, {}))
    twin.load_state_dict(s.state_dict())
    a, b = s.sample(32, torch.Generator().manual_seed(5)), twin.sample(32, torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]), "state_dict round trip continues identically"
    with pytest.raises(ValueError, match=f"bad parameters for timestep sampler '{name}'"):
        make_timestep_sampler(name, T, not_a_parameter=1)


@pytest.mark.parametrize("name", list(SAMPLERS))
@pytest.mark.parametrize("steps", [1, 7])
def test_sampler_contract(name, steps):
    sched = make_schedule("linear", T)
    calls = []

    def model(x, t, c):
        calls.append(x.shape[0])
        return 0.1 * x + c.mean()  # any deterministic function of the inputs

    cond = torch.randn(2, 3, 8, 8)
    kw = {"cond": cond, "target": "eps", "steps": steps, "ensemble": 3, "clip_x0": True}
    a = SAMPLERS[name](model, sched, (2, 1, 8, 8), generator=torch.Generator().manual_seed(0), **kw)
    assert a.shape == (2, 3, 1, 8, 8) and bool(torch.isfinite(a).all())
    assert calls == [6] * steps, "one batched network call per step with the members folded into the batch"
    b = SAMPLERS[name](model, sched, (2, 1, 8, 8), generator=torch.Generator().manual_seed(0), **kw)
    assert torch.equal(a, b), "same generator, same samples"


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_architecture_contract(name):
    cfg = ModelConfig(architecture=name, base_channels=8, channel_mult=(1, 2), attn_levels=1, rrdb_blocks=1)
    data_ch = 1
    model = build_model(cfg, data_ch, 3, 32, 1000).eval()
    assert count_params(model) > 0
    x, t, c = torch.randn(2, data_ch, 32, 32), torch.tensor([0, 999]), torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model(x, t, c)
        assert out.shape == (2, data_ch, 32, 32) and bool(torch.isfinite(out).all())
        assert torch.equal(out, model(x, t, c)), "deterministic in eval mode"
    if name not in REFERENCE_ARCHITECTURES:  # diffusion models also denoise images (E4: data = 3 channels)
        assert build_model(cfg, 3, 3, 32, 1000)(torch.randn(1, 3, 32, 32), t[:1], c[:1]).shape == (1, 3, 32, 32)


def test_every_mode_follows_its_experiment_record():
    """One record per experiment kind (``experiments.kinds``); the training modes behave as their record says."""
    import torch

    from diffseg.experiments.kinds import BY_METRIC, EXPERIMENTS, SEGMENTING, SELECTION
    from diffseg.experiments.modes import MODES
    from diffseg.experiments.result import CURVE_KINDS
    from diffseg.masks import RULES

    assert list(MODES) == list(EXPERIMENTS)
    images, masks = torch.randn(2, 3, 8, 8), torch.ones(2, 1, 8, 8)
    for name, kind in EXPERIMENTS.items():
        mode = MODES[name]
        assert mode.name == kind.name == name and mode.kind is kind
        x0, cond = mode.split_batch(images, masks)
        assert (x0.shape[1] == 3) == (kind.predicts == "image"), name  # what it predicts
        assert torch.equal(cond, images) == kind.conditioned, name  # what conditions it
        assert (kind.curve in CURVE_KINDS) == kind.diffusion, name
        assert kind.probability in RULES and SELECTION[name] is kind.selection
        assert (name in SEGMENTING) == kind.segments and BY_METRIC[kind.selection.metric] == kind.selection


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_sampler_takes_the_options_object_and_refuses_what_it_lacks(name):
    """Every sampler takes the sampling options object: members folded into the batch, the shape (B, n, C, H, W),
    finite x0 in [-1, 1] when clipped, reproducible from its generator; an option it does not support is refused
    (eta: DDIM's only), never ignored."""
    from diffseg.diffusion.sampling import SamplingOptions

    s = make_schedule("cosine", T)
    model = lambda x, t, c: 0.1 * x  # noqa: E731 (a toy denoiser)
    opts = SamplingOptions(steps=5, clip_x0=True)

    def draw(seed):
        return SAMPLERS[name](model, s, (2, 1, 4, 4), cond=torch.zeros(2, 3, 4, 4), ensemble=3,
                              generator=torch.Generator().manual_seed(seed), **opts.for_sampler(name))
    out = draw(0)
    assert out.shape == (2, 3, 1, 4, 4) and bool(torch.isfinite(out).all())
    assert torch.equal(out, draw(0))
    with_eta = SamplingOptions(steps=5, eta=0.5)
    if name == "ddim":
        assert with_eta.for_sampler(name)["eta"] == 0.5
    else:
        with pytest.raises(ValueError, match=f"sampler '{name}' takes no eta"):
            with_eta.for_sampler(name)
        with pytest.raises(TypeError):
            SAMPLERS[name](model, s, (1, 1, 4, 4), steps=2, eta=0.5)
