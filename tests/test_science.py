"""The analyses measure what the paper measures: settings that are what they say, no test data in training
decisions, E2 paired with its matching E3 model, ECE against the ensemble size."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from diffseg.diffusion import make_schedule, make_weighting, sample
from diffseg.diffusion.loss import loss_weight_table
from diffseg.experiments import Trial, TrialConfig, build, train_trial
from diffseg.experiments.train import loss_bin_edges
from diffseg.folder import StudyFolder
from diffseg.studies.export import conditioning_pairs
from diffseg.studies.plan import build_plan
from diffseg.studies.spec import load_spec

from .test_experiments import TINY as TINY_BASE

# the shared tiny config, with the larger ensemble and the fixed step count these checks use
TINY = {**TINY_BASE, "train.steps": 10, "eval.ensemble": 5, "eval.gallery": 0}


def cfg(**kw):
    return TrialConfig.from_dict({**TINY, **kw})


@pytest.mark.parametrize("budget", ["smoke", "cpu", "paper"])
def test_every_final_noise_arm_trains_the_last_step(tmp_path, budget):
    """Each arm's loss weight at t = T (on the native-target MSE) is not vanishing relative to its mean: the
    first sampling step is trained (an eps-space uniform weighting with the v target gave ~1e-20 there)."""
    plan = build_plan(load_spec("final_noise_levels"), budget, ["synthetic-blob"], [0], StudyFolder(tmp_path))
    assert {p.label for p in plan} >= {"zero_terminal_snr", "fingerprint", "logsnr_end=-15"}
    for p in plan:
        c = TrialConfig.from_dict(p.config)
        dc = c.diffusion
        sched = build.schedule(c)
        table = loss_weight_table(make_weighting(dc.weighting, **dc.weighting_params), sched, dc.target)
        assert float(table[-1] / table.mean()) > 1e-2, (p.label, float(table[-1]), float(table.mean()))


def test_sample_refuses_eps_at_zero_terminal_snr():
    sched = make_schedule("linear", 100, zero_terminal_snr=True)
    with pytest.raises(ValueError, match="SNR\\(T\\) = 0"):
        sample(lambda x, t, c: x, sched, (1, 1, 4, 4), target="eps", steps=5)
    out = sample(lambda x, t, c: torch.zeros_like(x), sched, (1, 1, 4, 4), target="v", steps=5)
    assert torch.isfinite(out).all()


def test_loss_bins_resolve_small_t():
    edges = loss_bin_edges(1000, 24)
    assert edges[0] == 0 and edges[-1] == 1000 and edges == sorted(set(edges))
    assert sum(1 for e in edges if e < 50) >= 8  # the dip below t = 50 the paper reports can be seen


def test_loss_curve_covers_the_last_quarter_with_log_bins():
    r = train_trial(cfg(**{"train.steps": 40, "train.val_every": 40}))
    assert TrialConfig().train.loss_curve_from == 0.75
    loss = next(c for c in r.curves if c.kind == "train_loss")
    assert sum(t < 20 for t in loss.t) >= 4 and all(np.diff(loss.t) > 0)


def test_retrain_evaluates_the_final_ema_and_refuses_early_stopping():
    r = train_trial(cfg(**{"data.retrain": True}))
    assert r.selection == "final_ema" and r.best_step == r.step == 10
    with pytest.raises(ValueError, match="early stopping"):
        cfg(**{"data.retrain": True, "train.patience": 2}).validate()


def test_condition_dropout_trains_with_null_images_and_gives_both_curves():
    trial = Trial(cfg(**{"train.cond_dropout": 0.5}))
    seen = []
    model = trial.model
    orig = model.forward

    def spy(x, t, cond):
        seen.append(cond.flatten(1).abs().sum(1) == 0)
        return orig(x, t, cond)

    model.forward = spy
    trial.train_step()
    dropped = torch.cat(seen)
    assert 0 < int(dropped.sum()) < len(dropped)
    model.forward = orig
    r = train_trial(cfg(**{"train.cond_dropout": 0.5}))
    assert {(c.kind, c.conditioned) for c in r.curves if c.kind == "mask_error"} == {
        ("mask_error", True), ("mask_error", False)}
    with pytest.raises(ValueError, match="e2 only"):
        cfg(experiment="e3", **{"train.cond_dropout": 0.2}).validate()


def test_ece_is_reported_against_the_ensemble_size():
    r = train_trial(cfg())
    m = r.metrics
    assert [k for k in m if k.startswith("test_ece_n")] == ["test_ece_n1", "test_ece_n2", "test_ece_n3",
                                                            "test_ece_n5"]
    assert m["test_ece_n5"] == pytest.approx(m["test_ece"]) and all(0 <= m[f"test_iou_n{n}"] <= 1 for n in (1, 5))


def test_paper_and_cpu_budgets_apply_the_paper_ensemble_size_per_dataset(tmp_path):
    spec = load_spec("findings")
    sizes = {}
    for budget in ("cpu", "paper"):
        for p in build_plan(spec, budget, ["monuseg", "isic2016", "ihc_her2like"], [0], StudyFolder(tmp_path)):
            sizes[(budget, p.dataset)] = p.config["eval.ensemble"]
    assert sizes[("cpu", "monuseg")] == sizes[("paper", "monuseg")] == 25
    assert sizes[("cpu", "isic2016")] == 10 and sizes[("paper", "ihc_her2like")] == 5


@pytest.mark.parametrize("native", [True, False])
def test_smoke_plans_bf16_exactly_where_the_cpu_computes_it_natively_and_the_findings_budgets_stay_fp32(
        tmp_path, monkeypatch, native):
    """The smoke budget's precision is decided once, on the planning machine, and written into every trial's config
    (so it is in the exports and MLflow params); cpu and long keep the fp32 their findings were measured in."""
    caps = {"avx512_bf16": native, "amx_bf16": False}
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: caps)
    spec = load_spec("weighting_schedules")
    for budget, want in (("smoke", native), ("cpu", False), ("long", False)):
        plan = build_plan(spec, budget, ["synthetic-blob"], [0], StudyFolder(tmp_path / budget))
        assert {TrialConfig.from_dict(p.config).train.bf16 for p in plan} == {want}, budget


def test_a_smoke_study_planned_without_native_bf16_resumes_with_bf16_set_off_and_is_refused_without(
        tmp_path, monkeypatch):
    """--resume on a machine whose CPU has bf16 (or after the budget gained it) names the changed key; setting it
    back (``--set train.bf16=false``) continues the study."""
    from diffseg.studies.plan import resume_conflict, save_plan

    spec, folder = load_spec("weighting_schedules"), StudyFolder(tmp_path)
    caps = {"avx512_bf16": False}
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: caps)
    save_plan(folder, spec.name, spec.path, build_plan(spec, "smoke", ["synthetic-blob"], [0], folder))
    caps["avx512_bf16"] = True
    conflict = resume_conflict(folder, spec.name, spec.path, build_plan(spec, "smoke", ["synthetic-blob"], [0], folder))
    assert conflict is not None and "'train.bf16'" in conflict
    assert resume_conflict(folder, spec.name, spec.path, build_plan(spec, "smoke", ["synthetic-blob"], [0], folder,
                                                                   overrides={"train.bf16": False})) is None


def _trials_row(tid, exp, seed, arch="ensemdiff", res=48):
    return {"trial_id": tid, "experiment": exp, "status": "ok", "dataset": "d", "seed": seed,
            "architecture": arch, "cfg.model.architecture": arch, "cfg.data.resolution": res,
            "cfg.diffusion.T": 1000, "cfg.diffusion.schedule": "linear", "cfg.diffusion.schedule_params": "{}",
            "cfg.diffusion.input_scale": math.nan, "cfg.diffusion.logsnr_end": math.nan,
            "cfg.diffusion.zero_terminal_snr": False}


def test_conditioning_pairs_match_e2_with_the_e3_of_the_same_settings_only():
    trials = pd.DataFrame([_trials_row("a", "e2", 0), _trials_row("b", "e3", 0), _trials_row("c", "e3", 1),
                           _trials_row("d", "e3", 0, arch="segdiff"), _trials_row("e", "e3", 0, res=64)])
    curves = pd.DataFrame([{"trial_id": tid, "kind": "mask_error", "conditioned": tid == "a", "t": t,
                            "value": v + t / 1000} for tid, v in zip("abcde", (0.1, 0.5, 0.6, 0.7, 0.8),
                                                                     strict=True) for t in (0, 500, 999)])
    pairs = conditioning_pairs(trials, curves)
    assert set(pairs.partner_trial_id) == {"b"} and set(pairs.partner) == {"e3"} and len(pairs) == 3
    assert np.allclose(pairs.without_image - pairs.with_image, 0.4)


def test_paper_budget_uses_segformer_b3_and_the_table1_labels_say_what_ran(tmp_path):
    plan = build_plan(load_spec("architectures"), "paper", ["monuseg"], [0], StudyFolder(tmp_path))
    seg = next(p for p in plan if p.config["model.architecture"] == "segformer")
    assert seg.config["model.segformer_variant"] == "b3" and seg.config["eval.ensemble"] == 25
    from diffseg.report.sections import _arch_label

    t = pd.DataFrame({"architecture": ["segformer", "nnunet"], "cfg.model.segformer_variant": ["b3", "b0"]})
    assert _arch_label(t, "segformer") == "SegFormer-B3"
    assert "PlainConvUNet" in _arch_label(t, "nnunet") and "not the nnU-Net pipeline" in _arch_label(t, "nnunet")


def test_trials_keep_an_explicit_cpu_device_on_a_gpu_machine(monkeypatch, tmp_path):
    from diffseg.studies.trainable import StudyContext, trial_config

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    ctx = StudyContext("s", "smoke", str(tmp_path), "sqlite://", "0", "p", 1, {})
    point = {"config": {**TINY, "train.device": "cpu"}}
    assert trial_config({"point": point}, ctx, tmp_path, point).train.device == "cpu"


def test_fingerprints_follow_the_trials_preprocessing(tmp_path):
    spec = load_spec("weighting_schedules")
    paths = {}
    for resize in ("area", "nearest"):
        plan = build_plan(spec, "smoke", ["synthetic-blob"], [0], StudyFolder(tmp_path),
                          overrides={"data.mask_resize": resize})
        paths[resize] = {p.fingerprint for p in plan if p.fingerprint}
    assert len(paths["area"]) == len(paths["nearest"]) == 1 and paths["area"] != paths["nearest"]


def test_cost_estimate_counts_bf16_trials_at_the_resources_bf16_gain():
    """The same trial costs its start-up plus its work / gain when it trains in bf16, and the plain work in fp32."""
    from types import SimpleNamespace

    from diffseg.studies import cost

    res = cost.Resources(slots=1, flops_per_trial=1e11, mfu=0.5, words="test", bf16_gain=1.4)
    base = {**TINY, "data.dataset": "synthetic-blob"}
    secs = {bf16: cost.estimate([SimpleNamespace(config={**base, "train.bf16": bf16}, dataset="d")], [8],
                                res)["trial_s"] - cost.PER_TRIAL_S for bf16 in (False, True)}
    assert secs[False] > 0 and secs[True] == pytest.approx(secs[False] / 1.4)
