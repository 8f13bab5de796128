import json

import numpy as np
import pytest
import torch
from PIL import Image

from diffseg.diffusion import make_schedule
from diffseg.fingerprint import (
    channel_information,
    compute_fingerprint,
    fingerprint_masks,
    fingerprint_weighting,
    info_loss_curve,
    load_fingerprint,
    mask_statistics,
    pooling_area_histogram,
    rederive,
    save_fingerprint,
    trained_agreement,
)
from diffseg.fingerprint.cli import main as fp_main


@pytest.fixture(scope="module")
def real_fingerprints(shared_data):
    return {name: compute_fingerprint(name, "linear", 1000, resolution=128)
            for name in ("isic2016", "monuseg", "ihc_her2like")}


def test_isic_recoverable_to_clearly_higher_t_than_monuseg(real_fingerprints):
    isic, mono = real_fingerprints["isic2016"], real_fingerprints["monuseg"]
    assert isic["training_free"]["t_half"] >= mono["training_free"]["t_half"] + 100
    assert isic["derived"]["recoverable_until_t"] > mono["derived"]["recoverable_until_t"] + 100
    # one large lesion keeps information at T under DDPM linear; MoNuSeg's nuclei lose far more of it
    assert not isic["derived"]["converged_at_T"]
    assert mono["derived"]["info_loss_at_T"] > isic["derived"]["info_loss_at_T"]


def test_ihc_reported_sparse_and_others_not(real_fingerprints):
    assert real_fingerprints["ihc_her2like"]["mask_stats"]["sparse"]
    assert not real_fingerprints["isic2016"]["mask_stats"]["sparse"]
    assert not real_fingerprints["monuseg"]["mask_stats"]["sparse"]


@pytest.mark.parametrize("name", ["isic2016", "monuseg", "ihc_her2like"])
def test_curve_is_monotone_from_zero(real_fingerprints, name):
    il = np.asarray(real_fingerprints[name]["training_free"]["info_loss"])
    assert il.shape == (1000,) and il[0] < 0.01
    assert np.all(np.diff(il) >= -1e-12)
    t_half = real_fingerprints[name]["training_free"]["t_half"]
    assert il[t_half] >= 0.5 and (t_half == 0 or il[t_half - 1] < 0.5)


def test_json_round_trip_reproduces_derived_weighting_exactly(real_fingerprints, tmp_path):
    fp = real_fingerprints["monuseg"]
    path = save_fingerprint(fp, tmp_path / "fingerprint.json")
    back = load_fingerprint(path)
    assert back["training_free"]["t"] == list(range(1000))
    assert rederive(back) == back["derived"] == fp["derived"]
    w = fingerprint_weighting(back).table(make_schedule("linear", 1000))
    stored = torch.tensor(fp["derived"]["weighting"], dtype=torch.float64)
    assert torch.equal(w, stored / stored.mean())
    assert sum(back["derived"]["sampling_density"]) == pytest.approx(1.0)


def test_channel_information_limits():
    prior = 0.3
    h = -(prior * np.log2(prior) + (1 - prior) * np.log2(1 - prior))
    info = channel_information(np.array([0.0, 1e-4, 1.0, 1e3]), prior)
    assert info[0] == pytest.approx(0, abs=1e-12) and info[-1] == pytest.approx(h, rel=1e-6)
    assert np.all(np.diff(info) > 0)


def test_object_size_orders_information_loss():
    small = np.zeros((20, 64, 64), bool)
    small[:, ::8, ::8] = True  # single-pixel dots
    large = np.zeros((20, 64, 64), bool)
    large[:, 16:48, 16:48] = True
    sched = make_schedule("linear", 1000)
    curves = {}
    for name, m in (("small", small), ("large", large)):
        a, c = pooling_area_histogram(m)
        curves[name] = info_loss_curve(a, c, sched.log_snr.numpy(), m.mean())
    assert np.argmax(curves["small"] >= 0.5) < np.argmax(curves["large"] >= 0.5)


def test_mask_statistics_known_values():
    m = np.zeros((4, 32, 32), bool)
    m[0, 2:6, 2:6] = True  # 16 px
    m[0, 20:22, 20:22] = True  # 4 px
    m[1, :, :16] = True
    s = mask_statistics(m)
    assert s["cases"] == 4 and s["empty_fraction"] == 0.5
    assert s["objects_per_mask"]["max"] == 2 and s["object_area_px"]["max"] == 512
    assert s["object_area_px"]["min"] == 4 and 0 < s["boundary_fraction"] < 1


def test_masks_only_dataset_and_cli(tmp_path, capsys):
    for i in range(6):
        m = np.zeros((48, 48), np.uint8)
        m[10 : 20 + i, 10:30] = 255
        Image.fromarray(m).save(tmp_path / f"m{i}.png")
    assert fp_main(["--dataset", f"masks:{tmp_path}", "--resolution", "32", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "t_half" in out
    files = list((tmp_path / "out").glob("*/fingerprint.*"))
    assert {f.suffix for f in files} == {".json", ".html", ".png"}
    fp = json.loads(next(f for f in files if f.suffix == ".json").read_text())
    assert fp["schema"] == "diffseg.fingerprint/1" and fp["resolution"] == 32 and fp["mask_stats"]["cases"] == 6
    assert fp_main(["--dataset", f"masks:{tmp_path / 'nope'}", "--out", str(tmp_path / "o2")]) == 2


def test_trained_agreement_correlates():
    sched = make_schedule("linear", 1000)
    _, m = __import__("diffseg.data.synthetic", fromlist=["generate"]).generate("blob", 10, 32)
    fp = fingerprint_masks(m, sched)
    t = list(range(0, 1000, 50))
    il = np.asarray(fp["training_free"]["info_loss"])[t]
    prior = fp["training_free"]["prior_fg"]
    err = (il * 4 * prior * (1 - prior)).tolist()  # a trained curve that agrees perfectly
    agree = trained_agreement(fp["training_free"]["info_loss"], t, err, prior)
    assert agree["pearson"] == pytest.approx(1.0) and agree["normalised"] == pytest.approx(il.tolist())
