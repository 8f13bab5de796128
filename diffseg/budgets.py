"""Budgets: the scale a study runs at. ``smoke`` is minutes on a 2-core CPU; ``cpu`` the findings reproduction on
the real sample sets (the smoke model at 600 steps, about 5 minutes a trial on one core, the paper's ensemble
sizes); ``long`` the cpu model at 32 px for 20k steps with EMA weights kept for post-hoc analysis; ``small`` an
hour on a CPU or one GPU; ``paper`` the published settings on GPUs (256 px, guided-diffusion widths, T = 1000,
full DDPM sampling with ensembles of 25 / 10 / 5 for MoNuSeg / ISIC / HER2, SegFormer-B3 as the paper;
``model.segformer_pretrained`` points at local weights). Each budget is a dotted-key overlay on
TrialConfig, applied per dataset (``budget_overlay(budget, dataset)``).
smoke, cpu and small sample with respaced ancestral DDPM (DDIM eta = 1): with few steps, eta = 0 leaves the
members' background far from -1 and inflates ECE (measured: ECE 0.24 vs 0.16 at equal IoU on synthetic-blob).
smoke trains and samples with bf16 autocast where the planning machine's CPU computes bf16 natively (``native_bf16``;
written into every trial's config, ``train.bf16``): the smoke study 1.41x faster on 2 AMD EPYC cores; over its
24 trials, bf16 - fp32 test IoU +0.5 [-0.9, +1.8] points and ECE +0.008 [-0.000, +0.017], half a seed's spread
(README, Development). The findings budgets (cpu, long) and small stay fp32: their numbers were measured so."""

from __future__ import annotations

from typing import Any

_SMOKE: dict[str, Any] = {
    "data.resolution": 48, "diffusion.T": 1000,
    "model.base_channels": 16, "model.channel_mult": [1, 2, 2, 2], "model.num_res_blocks": 1,
    "model.attn_levels": 1, "model.rrdb_blocks": 1,
    "train.steps": 200, "train.batch_size": 8, "train.lr": 5e-4, "train.val_every": 100,
    "eval.ensemble": 4, "eval.steps": 8, "eval.eta": 1.0, "eval.val_steps": 5, "eval.val_ensemble": 3,
    "eval.val_max_images": 8, "eval.test_max_images": 16, "eval.curve_points": 16, "eval.curve_max_images": 8,
}
# cpu: the smoke model at 3x the steps, all test images up to 64, the paper ensemble sizes per dataset
_CPU = {**_SMOKE, "train.steps": 600, "train.val_every": 200, "eval.ensemble": 10, "eval.steps": 10,
        "eval.val_max_images": 16, "eval.test_max_images": 64, "eval.curve_points": 20, "eval.curve_max_images": 16,
        "eval.loss_bins": 24}
# long: the cpu model at 32 px trained 20k steps (the regime of finding (a)), a checkpoint every 1k steps
# (resumable) and the EMA weights kept at 1k, 2k, 5k, 10k, 20k for the post-hoc loss over t
_LONG = {**_CPU, "data.resolution": 32, "train.steps": 20000, "train.val_every": 1000,
         "train.keep_checkpoints": [1000, 2000, 5000, 10000, 20000], "eval.test_max_images": 32}
BUDGETS: dict[str, dict[str, Any]] = {
    "smoke": _SMOKE,
    "cpu": _CPU,
    "long": _LONG,
    "small": {
        "data.resolution": 64, "diffusion.T": 1000,
        "model.base_channels": 32, "model.channel_mult": [1, 2, 2, 2], "model.num_res_blocks": 2,
        "model.attn_levels": 1, "model.rrdb_blocks": 2,
        "train.steps": 3000, "train.batch_size": 16, "train.lr": 2e-4, "train.val_every": 500,
        "eval.ensemble": 10, "eval.steps": 25, "eval.eta": 1.0, "eval.val_steps": 10, "eval.val_ensemble": 3,
        "eval.val_max_images": 64, "eval.curve_points": 50, "eval.curve_max_images": 64,
    },
    "paper": {
        "data.resolution": 256, "diffusion.T": 1000,
        "model.base_channels": 128, "model.channel_mult": [1, 1, 2, 2, 4, 4], "model.num_res_blocks": 2,
        "model.attn_levels": 2, "model.heads": 1, "model.rrdb_blocks": 12, "model.segformer_variant": "b3",
        "train.steps": 60000, "train.batch_size": 8, "train.lr": 1e-4, "train.val_every": 5000,
        "train.ema_decay": 0.9999, "train.bf16": True, "train.channels_last": True,
        "eval.ensemble": 10, "eval.sampler": "ddpm", "eval.steps": 1000, "eval.val_steps": 50,
        "eval.val_ensemble": 3, "eval.val_max_images": 64, "eval.curve_points": 100, "eval.curve_max_images": 128,
    },
}
# Ensemble sizes of the analysis paper per dataset (applied in the paper and cpu budgets).
PAPER_ENSEMBLE = {"monuseg": 25, "isic2016": 10, "isic2017": 10, "isic2018": 10, "ihc_her2like": 5}
PAPER_ENSEMBLE_BUDGETS = ("paper", "cpu")
NATIVE_BF16_BUDGETS = ("smoke",)  # train.bf16 = native_bf16() when the budget is applied


def native_bf16() -> bool:
    """Whether this machine's CPU computes bf16 natively (AVX512-BF16 or AMX-BF16): there torch's CPU autocast runs
    oneDNN's bf16 convolutions and matmuls (the smoke EnsemDiff's training step 1.42x at one thread,
    ``OMP_NUM_THREADS=1 python -m diffseg.bench speedups``); without them oneDNN emulates bf16, so fp32 is kept."""
    import torch

    caps = torch.cpu.get_capabilities()
    return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))


def budget_overlay(budget: str, dataset: str | None = None) -> dict[str, Any]:
    if budget not in BUDGETS:
        raise ValueError(f"unknown budget {budget!r}; allowed: {sorted(BUDGETS)}")
    out = dict(BUDGETS[budget])
    if budget in PAPER_ENSEMBLE_BUDGETS and dataset in PAPER_ENSEMBLE:
        out["eval.ensemble"] = PAPER_ENSEMBLE[dataset]
    if budget in NATIVE_BF16_BUDGETS:
        out["train.bf16"] = native_bf16()
    return out
