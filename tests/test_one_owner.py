"""Each fact has one owner: the four behaviours that went wrong while facts had several (budget per dataset,
device, preprocessing, selection metric), and the resolved plan as JSON."""

import json

import pytest
import torch

from diffseg.data import load_dataset
from diffseg.experiments import TrialConfig, build, train_trial
from diffseg.experiments.kinds import SELECTION
from diffseg.experiments.result import TrialResult
from diffseg.studies import cli, runner
from diffseg.studies.spec import load_spec


def dry_run_json(capsys, *args) -> list[dict]:
    assert cli.main(["--dry-run", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_paper_budget_applies_the_per_dataset_ensemble_sizes(capsys, shared_data, tmp_path):
    sizes = {}
    for ds in ("monuseg", "isic2016", "ihc_her2like"):
        plan = dry_run_json(capsys, "--study", "noise_schedules", "--budget", "paper", "--dataset", ds,
                            "--out", str(tmp_path))
        sizes[ds] = {p["config"]["eval.ensemble"] for p in plan}
    assert sizes == {"monuseg": {25}, "isic2016": {10}, "ihc_her2like": {5}}
    assert not any(tmp_path.iterdir()), "a dry run writes nothing"


def test_dry_run_json_is_the_config_each_trial_receives(capsys, tmp_path):
    plan = dry_run_json(capsys, "--study", "weighting_schedules", "--dataset", "synthetic-blob", "--seed", "3",
                        "--set", "train.steps=7", "--out", str(tmp_path))
    spec = load_spec("weighting_schedules")
    assert [p["label"] for p in plan] == [a.label for a in spec.arms()]
    for p in plan:
        cfg = TrialConfig.from_dict(p["config"]).validate()
        assert (cfg.seed, cfg.train.steps, cfg.data.dataset, p["seed"]) == (3, 7, "synthetic-blob", 3)
        assert p["selection_metric"] == SELECTION[cfg.experiment].metric


@pytest.mark.parametrize("device, expected", [("cpu", "cpu"), ("auto", "cuda")])
def test_device_is_resolved_only_when_auto(monkeypatch, device, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert build.device(TrialConfig.from_dict({"train.device": device})).type == expected


def test_driver_caches_with_the_trials_preprocessing(monkeypatch, tmp_path, shared_data):
    """The driver's pre-cache (its set-up, beside Ray's start) builds exactly the cache the trials then load
    (mask_resize included)."""
    class Stop(Exception):
        pass

    def no_ray(address):
        raise Stop

    monkeypatch.setattr(runner, "start_ray", no_ray)
    out = tmp_path / "out"
    with pytest.raises(Stop):
        cli.main(["--study", "noise_schedules", "--dataset", "ihc_her2like", "--out", str(out),
                  "--set", "data.mask_resize=nearest", "--set", "data.image_resize=bilinear"])
    def caches():
        return sorted(p.name for p in (out / "cache").iterdir() if p.is_dir() and not p.name.startswith("."))

    built = caches()
    cfg = TrialConfig.from_dict({"data.dataset": "ihc_her2like", "data.resolution": 48,
                                 "data.mask_resize": "nearest", "data.image_resize": "bilinear"})
    assert len(built) == 1
    load_dataset("ihc_her2like", build.prep(cfg), None, out / "cache")
    assert caches() == built, "the trial's load is a cache hit"


def test_each_experiment_owns_its_selection_metric(capsys, tmp_path):
    spec = load_spec("segmentation_vs_generation")
    assert spec.selection() is None, "E2 and E4 select on different metrics: no single study metric"
    assert load_spec("weighting_schedules").selection() == SELECTION["e2"]
    plan = dry_run_json(capsys, "--study", "segmentation_vs_generation", "--dataset", "synthetic-blob",
                        "--out", str(tmp_path))
    assert {(p["experiment"], p["selection_metric"]) for p in plan} == {("e2", "val_iou"), ("e4", "val_x0_error")}


def test_trial_result_is_the_contract(tmp_path):
    r = train_trial({"experiment": "e4", "data.dataset": "synthetic-blob", "data.resolution": 16,
                     "model.base_channels": 8, "model.channel_mult": [1, 2], "train.steps": 2, "train.val_every": 2,
                     "train.batch_size": 2, "eval.curve_points": 3, "eval.curve_max_images": 2,
                     "eval.val_max_images": 2, "output_dir": str(tmp_path)})
    assert isinstance(r, TrialResult) and r.selection_metric == "val_x0_error"
    as_json = json.loads(json.dumps(r.to_dict()))
    assert TrialResult.from_dict(as_json).to_dict() == as_json
    with pytest.raises(ValueError, match="status 'done' is not one of"):
        TrialResult.from_dict({**r.to_dict(), "status": "done"})


def test_the_target_studies_and_the_quality_bench_train_each_target_on_its_plain_mse():
    """One owner (``weighting.PLAIN_MSE``) of how a target is trained where targets are compared: the
    ``calibration_targets`` study's arms and the quality bench's trials agree with it, and the bench's cached
    results are named by it (results of another training are not reused)."""
    from diffseg.bench import quality
    from diffseg.diffusion import TARGETS
    from diffseg.diffusion.weighting import PLAIN_MSE

    arms = [a.overrides for a in load_spec("calibration_targets").arms() if "diffusion.target" in a.overrides]
    assert {a["diffusion.target"] for a in arms} == set(TARGETS)
    assert all(a["diffusion.weighting"] == PLAIN_MSE[a["diffusion.target"]] for a in arms), arms
    for target in TARGETS:
        cfg = quality._config("isic2017", target, "/tmp/unused", 16, {})
        assert (cfg.diffusion.target, cfg.diffusion.weighting) == (target, PLAIN_MSE[target])
        assert f"-{target}-{PLAIN_MSE[target]}-" in quality.cache_name("isic2017", target, 16, 32, None)
