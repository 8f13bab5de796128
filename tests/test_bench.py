import itertools
import json

from diffseg.bench.__main__ import main


def test_data_bench_json(shared_data, capsys):
    assert main(["data", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert set(r["cold_build_s"]) == {"64", "128"} and r["samples"]["64"] == 480
    assert r["warm_load_s"] > 0 and r["loader_samples_per_s"] > 0 and r["loader_samples_per_s_augmented"] > 0


def test_counted_flops_match_an_analytic_conv_stack():
    """FlopCounterMode on a plain conv stack (forward + backward) against 2 B H W Cin Cout k^2 per conv forward,
    twice that backward (grad input + grad weight); the first layer's input needs no gradient."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    b, r, chans = 4, 16, [3, 8, 16, 16]
    net = torch.nn.Sequential(*[torch.nn.Conv2d(i, o, 3, padding=1, bias=False) for i, o in itertools.pairwise(chans)])
    with FlopCounterMode(display=False) as fc:
        net(torch.randn(b, 3, r, r)).sum().backward()
    fwd = [2 * b * r * r * i * o * 9 for i, o in itertools.pairwise(chans)]
    analytic = sum(fwd) + sum(2 * f for f in fwd) - fwd[0]  # no grad input for the first layer's input
    assert fc.get_total_flops() == analytic


def test_model_benchmark_mfu_is_a_fraction_of_a_measured_peak():
    from diffseg.bench import models

    r = models.run(archs=("ensemdiff",), sizes=("smoke",), steps=1, peak_sizes=(256, 512, 1024))
    m = r["models"]["ensemdiff/smoke"]
    assert 0 < m["mfu"] <= 1 and r["peak_flops"] >= max(r["kernels"].values()) * 0.999
    assert abs(sum(m["time_split"].values()) - 1) < 1e-9 and set(m["time_split"]) == {"forward", "backward",
                                                                                       "optimizer", "ema"}
