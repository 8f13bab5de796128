import pytest
import torch

from diffseg.models import ARCHITECTURES, ModelConfig, build_model, count_params, nnunet_plan
from diffseg.models.conditioning import FFParser

TINY = {"base_channels": 8, "channel_mult": (1, 2), "num_res_blocks": 1, "attn_levels": 1}


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize(("res", "batch"), [(32, 2), (64, 3)])
def test_forward_backward_shapes(arch, res, batch):
    cfg = ModelConfig(arch, **TINY)
    model = build_model(cfg, data_ch=1, cond_ch=3, resolution=res, T=100)
    x = torch.randn(batch, 1, res, res)
    cond = torch.randn(batch, 3, res, res)
    t = torch.randint(0, 100, (batch,))
    out = model(x, t, cond)
    assert out.shape == (batch, 1, res, res)
    (out - 1).pow(2).mean().backward()  # zero-initialised heads give no gradient for out.pow(2)
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_channels_last_gives_the_same_outputs_and_gradients(arch):
    """``train.channels_last`` (the paper budget) converts model and batch; every architecture must run in that
    layout and compute what it computes in the default one (MedSegDiff's FF-Parser failed on it)."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch, **TINY), data_ch=1, cond_ch=3, resolution=32, T=100).eval()  # no dropout
    x, cond, t = torch.randn(2, 1, 32, 32), torch.randn(2, 3, 32, 32), torch.tensor([3, 70])
    outs, grads = [], []
    for layout in (torch.contiguous_format, torch.channels_last):
        model.to(memory_format=layout)
        model.zero_grad()
        out = model(x.contiguous(memory_format=layout), t, cond.contiguous(memory_format=layout))
        (out - 1).pow(2).mean().backward()
        outs.append(out.detach())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert torch.allclose(outs[0], outs[1], atol=1e-5)
    assert torch.allclose(grads[0], grads[1], atol=1e-5)


@pytest.mark.parametrize("arch", ["ensemdiff", "segdiff", "medsegdiff"])
def test_diffusion_architectures_generate_images_for_e4(arch):
    model = build_model(ModelConfig(arch, **TINY), data_ch=3, cond_ch=3, resolution=32, T=1000)
    out = model(torch.randn(2, 3, 32, 32), torch.tensor([1, 999]), torch.zeros(2, 3, 32, 32))
    assert out.shape == (2, 3, 32, 32)


@pytest.mark.parametrize("arch", ["ensemdiff", "segdiff", "medsegdiff"])
def test_condition_and_time_change_the_output(arch):
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch, **TINY), 1, 3, 32, 1000)
    for p in model.parameters():  # zero-initialised output layers would hide the dependence
        torch.nn.init.normal_(p, std=0.3)
    x, c = torch.randn(1, 1, 32, 32), torch.randn(1, 3, 32, 32)
    t = torch.tensor([10])
    base = model(x, t, c)
    assert not torch.allclose(base, model(x, t, torch.zeros_like(c)))
    assert not torch.allclose(base, model(x, torch.tensor([900]), c))


def test_segdiff_multilevel_and_medsegdiff_options():
    m = build_model(ModelConfig("segdiff", segdiff_multilevel=True, **TINY), 1, 3, 32, 100)
    plain = build_model(ModelConfig("segdiff", **TINY), 1, 3, 32, 100)
    assert count_params(m) > count_params(plain)
    aux_cfg = ModelConfig("medsegdiff", medsegdiff_aux_head=True, medsegdiff_levels=(1,), **TINY)
    aux = build_model(aux_cfg, 1, 3, 32, 100)
    aux(torch.randn(2, 1, 32, 32), torch.tensor([1, 2]), torch.randn(2, 3, 32, 32))
    assert aux.aux_logits().shape == (2, 1, 32, 32)
    with pytest.raises(ValueError, match="levels"):
        build_model(ModelConfig("medsegdiff", medsegdiff_levels=(5,), **TINY), 1, 3, 32, 100)


def test_ff_parser_identity_at_init_and_learnable():
    ff = FFParser(4, 16, 16)
    x = torch.randn(2, 4, 16, 16)
    torch.testing.assert_close(ff(x), x, atol=1e-5, rtol=1e-5)
    ff.weight.data[..., 0] = 0.0
    assert ff(x).abs().max() < 1e-6


def test_resolution_must_divide():
    with pytest.raises(ValueError, match="not divisible"):
        build_model(ModelConfig("ensemdiff", base_channels=8, channel_mult=(1, 2, 2, 2)), 1, 3, 36, 100)


def test_nnunet_plan_as_nnunet_would():
    p64 = nnunet_plan(64)
    assert p64["n_stages"] == 5 and p64["features_per_stage"] == [32, 64, 128, 256, 512]
    p256 = nnunet_plan(256)
    assert p256["n_stages"] == 7 and p256["features_per_stage"][-1] == 512 and p256["strides"][0] == 1


def test_segformer_variants():
    m = build_model(ModelConfig("segformer", segformer_variant="b1"), 1, 3, 64, 100)
    assert m.net.config.hidden_sizes == [64, 128, 320, 512]
    with pytest.raises(ValueError, match="variant"):
        build_model(ModelConfig("segformer", segformer_variant="b9"), 1, 3, 64, 100)
