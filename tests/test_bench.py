import itertools


def test_data_bench_measures_each_set_and_resolution(shared_data):
    from diffseg.bench import data

    r = data.run(sets=("monuseg",), resolutions=(48, 64), loader_batches=5)
    assert [(x["dataset"], x["resolution"], x["samples"]) for x in r["rows"]] == [("monuseg", 48, 480),
                                                                                 ("monuseg", 64, 480)]
    big, small = r["rows"][1], r["rows"][0]
    assert big["cache_mb"] > small["cache_mb"] > 0 and small["warm_load_s"] < small["cold_build_s"]
    assert small["loader_samples_per_s"] > 0 and small["loader_samples_per_s_augmented"] > 0 and r["passed"]
    assert "monuseg" in data.table(r)


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


def test_speedups_measure_each_change_against_eager_and_the_loader_against_a_step(shared_data):
    from diffseg.bench import speedups

    r = speedups.layouts_and_compile("ensemdiff", compile_model=False)
    assert r["eager_step_s"] > 0 and r["channels_last_step_s"] > 0 and "compiled_step_s" not in r
    ld = speedups.loader_share(batches=3)
    assert 0 < ld["plain_share"] < 1 and 0 < ld["augmented_share"] < 1
    assert ld["augmented_batch_s"] > 0 and ld["dataset"] == "isic2017"
