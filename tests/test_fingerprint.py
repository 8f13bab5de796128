import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from diffseg.data import PrepConfig, load_dataset
from diffseg.diffusion import make_schedule
from diffseg.fingerprint import (
    FingerprintSpec,
    compute_fingerprint,
    fingerprint_masks,
    fingerprint_path,
    fingerprint_weighting,
    label_mmse,
    load_fingerprint,
    load_or_compute,
    mask_error_curve,
    mask_statistics,
    pooling_area_histogram,
    prior_error,
    rederive,
    save_fingerprint,
    trained_agreement,
)
from diffseg.fingerprint.cli import main as fp_main
from diffseg.fingerprint.information import clipped_disc_area, pixel_areas
from diffseg.fingerprint.stats import boundary_map


@pytest.fixture(scope="module")
def real_fingerprints(shared_data):
    return {name: compute_fingerprint(FingerprintSpec(name, PrepConfig(128)))
            for name in ("isic2016", "monuseg", "ihc_her2like")}


def test_isic_keeps_its_labels_150_steps_longer_than_monuseg_and_ihc(real_fingerprints):
    """The paper's fingerprint: one large lesion survives far more noise than many nuclei or a few small cells
    (128 px, linear T = 1000)."""
    th = {k: fp["training_free"]["t_half"] for k, fp in real_fingerprints.items()}
    assert th["isic2016"] >= th["monuseg"] + 150, th
    assert th["isic2016"] >= th["ihc_her2like"] + 150, th


def test_fingerprints_never_see_the_test_split(real_fingerprints):
    for name, fp in real_fingerprints.items():
        sp = fp["split"]
        assert sp["used"] == "train+val" and sp["excluded_test_samples"] > 0, name
        assert fp["mask_stats"]["cases"] == sp["samples"]
    assert real_fingerprints["monuseg"]["split"]["excluded_test_samples"] == 14 * 16  # the official test tiles


def test_test_masks_do_not_change_the_fingerprint(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(10):
        m = np.zeros((32, 32), np.uint8)
        y, x = rng.integers(4, 20, 2)
        m[y:y + 8, x:x + 10] = 255
        Image.fromarray(m).save(tmp_path / f"m{i}.png")
    spec = FingerprintSpec(f"masks:{tmp_path}", PrepConfig(32))
    before = compute_fingerprint(spec, cache_dir=tmp_path / "cache")
    ds = load_dataset(spec.dataset, spec.prep, cache_dir=tmp_path / "cache")
    split = ds.splits()
    test_case, train_case = ds.case_ids[split["test"][0]], ds.case_ids[split["train"][0]]
    Image.fromarray(np.full((32, 32), 255, np.uint8)).save(tmp_path / f"{test_case}.png")
    after_test = compute_fingerprint(spec, cache_dir=tmp_path / "cache")
    assert after_test["dataset_hash"] != before["dataset_hash"]
    assert after_test["training_free"]["error"] == before["training_free"]["error"]
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / f"{train_case}.png")
    after_train = compute_fingerprint(spec, cache_dir=tmp_path / "cache")
    assert after_train["training_free"]["error"] != before["training_free"]["error"]


def test_ihc_reported_sparse_and_others_not(real_fingerprints):
    assert real_fingerprints["ihc_her2like"]["mask_stats"]["sparse"]
    assert not real_fingerprints["isic2016"]["mask_stats"]["sparse"]
    assert not real_fingerprints["monuseg"]["mask_stats"]["sparse"]


@pytest.mark.parametrize("name", ["isic2016", "monuseg", "ihc_her2like"])
def test_curve_rises_from_zero_and_parts_add_up(real_fingerprints, name):
    tf = real_fingerprints[name]["training_free"]
    err = np.asarray(tf["error"])
    assert err.shape == (1000,) and err[0] < 0.01
    np.testing.assert_allclose(np.asarray(tf["foreground"]) + np.asarray(tf["background"]), err, atol=1e-12)
    # monotone until it is no better than the prior; beyond, background pixels of very large pooling discs can
    # sit slightly above the prior's error (the estimator uses one dataset-wide prior), never far above it
    end = int(np.argmax(err >= 0.95)) if (err >= 0.95).any() else len(err)
    assert np.all(np.diff(err[:end]) >= -1e-9)
    assert err.max() < 1.1
    t_half = tf["t_half"]
    assert err[t_half] >= 0.5 and (t_half == 0 or err[t_half - 1] < 0.5)


def test_sparse_foreground_dominates_the_error(real_fingerprints):
    """In the sparse IHC set the few cells carry most of the error at t_half (the old mutual-information average
    let the far background dominate and ranked IHC as durable as ISIC)."""
    tf = real_fingerprints["ihc_her2like"]["training_free"]
    t = tf["t_half"]
    assert tf["foreground"][t] > tf["background"][t]


def test_label_mmse_limits_and_monte_carlo():
    prior = 0.2
    assert label_mmse(np.array([0.0]), prior, 1)[0] == pytest.approx(4 * (1 - prior) ** 2, rel=1e-6)
    assert label_mmse(np.array([0.0]), prior, -1)[0] == pytest.approx(4 * prior**2, rel=1e-6)
    assert label_mmse(np.array([1e4]), prior, 1)[0] < 1e-6
    rng = np.random.default_rng(0)
    z = rng.standard_normal(400_000)
    for s in (0.05, 0.5, 2.0, 8.0):
        for x in (1, -1):
            y = math.sqrt(s) * x + z
            est = np.tanh(0.5 * math.log(prior / (1 - prior)) + math.sqrt(s) * y)
            sq = (x - est) ** 2
            se = float(sq.std() / math.sqrt(len(sq)))
            assert label_mmse(np.array([s]), prior, x)[0] == pytest.approx(float(sq.mean()), abs=4 * se), (s, x)
    # the prior-weighted mixture is the MMSE of the channel: 1 at s = 0, decreasing in s
    s = np.exp(np.linspace(-8, 6, 200))
    mix = (prior * label_mmse(s, prior, 1) + (1 - prior) * label_mmse(s, prior, -1)) / prior_error(prior)
    assert np.all(np.diff(mix) <= 0) and mix[0] == pytest.approx(1, abs=1e-3) and mix[-1] < 1e-6


def test_clipped_disc_area_matches_pixel_counting():
    h = w = 64
    yy, xx = np.mgrid[0:h * 8, 0:w * 8] / 8 + 1 / 16  # 8x supersampled pixel centres
    # inside; one corner; two borders; two borders and their corner; four borders, no corner; every corner
    for (y, x, r) in [(31, 31, 10.0), (0, 0, 20.0), (0, 40, 30.0), (10, 63, 45.0), (40, 20, 35.0), (31, 31, 40.0),
                      (5, 5, 100.0)]:
        cy, cx = y + 0.5, x + 0.5
        counted = float(((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).sum()) / 64
        exact = float(clipped_disc_area(np.array([r]), np.array([y]), np.array([x]), h, w)[0])
        assert exact == pytest.approx(counted, rel=0.02), (y, x, r)
    assert clipped_disc_area(np.array([1000.0]), np.array([31]), np.array([7]), h, w)[0] == pytest.approx(h * w)
    # a corner pixel pools at most the image, never the 4x it would with an unclipped disc
    m = np.zeros((1, 16, 16), bool)
    m[0, 8:, 8:] = True
    a = pixel_areas(m[0], boundary_map(m)[0])
    assert a.max() <= 16 * 16 and a[0, 0] < math.pi * 7**2


def test_object_size_orders_the_curve():
    small = np.zeros((20, 64, 64), bool)
    small[:, ::8, ::8] = True  # single-pixel dots
    large = np.zeros((20, 64, 64), bool)
    large[:, 16:48, 16:48] = True
    sched = make_schedule("linear", 1000)
    t_half = {}
    for name, m in (("small", small), ("large", large)):
        a, c = pooling_area_histogram(m)
        curve = mask_error_curve(a, c, sched.log_snr.numpy(), m.mean())["error"]
        t_half[name] = int(np.argmax(curve >= 0.5))
    assert t_half["small"] + 200 < t_half["large"]


def test_agreement_measures_shifts_and_is_not_a_correlation():
    sched = make_schedule("linear", 1000)
    _, m = __import__("diffseg.data.synthetic", fromlist=["generate"]).generate("blob", 10, 32)
    fp = fingerprint_masks(m, sched)
    tf, prior = np.asarray(fp["training_free"]["error"]), fp["training_free"]["prior_fg"]
    t = list(range(0, 1000, 10))
    same = trained_agreement(tf.tolist(), t, (tf[t] * prior_error(prior)).tolist(), prior)
    assert same["t_half"]["abs_diff"] == pytest.approx(0, abs=1.0) and same["mean_abs_diff"] == pytest.approx(0)
    # a trained curve 80 steps earlier: monotone like the other, so it correlates perfectly, but disagrees
    shifted = np.concatenate([tf[80:], np.full(80, tf[-1])])
    agree = trained_agreement(tf.tolist(), t, (shifted[t] * prior_error(prior)).tolist(), prior)
    assert agree["t_half"]["abs_diff"] == pytest.approx(80, abs=10) and agree["mean_abs_diff"] > 0.05
    # a trained curve that keeps information at T (E3 learns the spatial prior) never reaches 0.95
    flat = np.minimum(tf, 0.6)
    agree = trained_agreement(tf.tolist(), t, (flat[t] * prior_error(prior)).tolist(), prior)
    assert agree["t_095"]["trained"] is None and agree["t_095"]["abs_diff"] is None


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


def test_old_schema_is_refused_with_a_clear_message(tmp_path):
    p = tmp_path / "fingerprint.json"
    p.write_text(json.dumps({"schema": "diffseg.fingerprint/1", "training_free": {"info_loss": [0.1]}}))
    with pytest.raises(ValueError, match=r"fingerprint\.json: fingerprint schema 'diffseg\.fingerprint/1' is not"):
        load_fingerprint(p)


def test_load_or_compute_owns_the_path_and_identity(tmp_path):
    spec = FingerprintSpec("synthetic-blob", PrepConfig(24), T=200)
    fp, path = load_or_compute(tmp_path, spec, write=False)
    assert not path.exists() and path.name == "fingerprint.json"
    fp, path = load_or_compute(tmp_path, spec)
    assert path.exists() and load_or_compute(tmp_path, spec)[1] == path
    assert path == fingerprint_path(tmp_path, spec, fp["dataset_hash"])
    other = [FingerprintSpec("synthetic-blob", PrepConfig(32), T=200), FingerprintSpec("synthetic-blob",
             PrepConfig(24), T=300), FingerprintSpec("synthetic-blob", PrepConfig(24, mask_resize="nearest"), T=200)]
    assert len({fingerprint_path(tmp_path, s, fp["dataset_hash"]) for s in [spec, *other]}) == 4


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
    assert fp_main(["--dataset", f"masks:{tmp_path}", "--resolution", "32", "--T", "100",
                    "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "t_half" in out and "None" not in out and "test masks excluded" in out
    files = list((tmp_path / "out").glob("*/fingerprint.*"))
    assert {f.suffix for f in files} == {".json", ".html", ".png"}
    fp = json.loads(next(f for f in files if f.suffix == ".json").read_text())
    assert fp["schema"] == "diffseg.fingerprint/2" and fp["resolution"] == 32
    assert fp["split"]["used"] == "train+val" and fp["mask_stats"]["cases"] == fp["split"]["samples"] < 6
    assert fp_main(["--dataset", f"masks:{tmp_path / 'nope'}", "--out", str(tmp_path / "o2")]) == 2
