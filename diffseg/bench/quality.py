"""Ensemble quality against cost: one trained EnsemDiff (the ``cpu`` budget: the smoke model at 600 steps) per
dataset, its 10-member test ensemble drawn with DDPM-1000 (the reference) and with DDPM, DDIM (eta 0) and
DPM-Solver++(2M) at 10, 20 and 50 steps; test IoU, ECE, GED and uncertainty AUROC, model evaluations and wall time
side by side in one run. ``python -m diffseg.bench quality [--json]``."""

from __future__ import annotations

import dataclasses
import tempfile
import time

import torch

from ..budgets import budget_overlay
from ..experiments import Trial, TrialConfig, train_trial
from ..experiments.evaluate import per_image_metrics, summarise
from ..masks import ensemble_summary

DATASETS = ("synthetic-clusters", "ihc_her2like")
CONFIGS = [("ddpm", 1000)] + [(s, k) for s in ("ddpm", "ddim", "dpmpp_2m") for k in (10, 20, 50)]
GOAL = {"iou_points": 1.0, "ece": 0.01, "fewer_evaluations": 50}


def _trained(dataset: str, out: str, images: int) -> Trial:
    cfg = TrialConfig.from_dict({**budget_overlay("cpu", dataset), "data.dataset": dataset, "eval.ensemble": 10,
                                 "eval.test_max_images": images, "eval.curve_points": 2, "output_dir": out})
    train_trial(cfg)
    trial = Trial(cfg)
    trial.load_state(torch.load(f"{out}/checkpoint/state.pt", weights_only=True))
    trial.ema.module.load_state_dict(trial.best["ema"])
    return trial


def evaluate(trial: Trial, sampler: str, steps: int, members: int = 10) -> dict:
    cfg = trial.cfg
    trial.cfg = dataclasses.replace(cfg, eval=dataclasses.replace(
        cfg.eval, sampler=sampler, eta=0.0 if sampler == "ddim" else None))
    _, images, masks = trial._split_tensors("test", cfg.eval.test_max_images)
    t0 = time.perf_counter()
    members_x0 = trial.predict(trial.ema.module, images, masks, members, steps, cfg.seed + 4).cpu()
    wall = time.perf_counter() - t0
    trial.cfg = cfg
    rows = per_image_metrics(members_x0, masks.cpu(), cfg.eval.ece_bins)
    mean, _, _ = ensemble_summary(members_x0, dim=1)
    s = summarise(rows, mean, masks.cpu(), cfg.eval.ece_bins)
    return {"sampler": sampler, "steps": steps, "iou": s["test_iou"], "ece": s["test_ece"], "ged": s["test_ged"],
            "unc_auroc": s["test_unc_auroc"], "model_evaluations": steps * members * images.shape[0],
            "wall_s": wall}


def run(datasets=DATASETS, configs=CONFIGS, images: int = 16) -> dict:
    out = {}
    for ds in datasets:
        with tempfile.TemporaryDirectory() as tmp:
            trial = _trained(ds, tmp, images)
            rows = [evaluate(trial, s, k) for s, k in configs]
        ref = rows[0]
        for r in rows:
            r["iou_points_vs_ref"] = 100 * (r["iou"] - ref["iou"])
            r["ece_vs_ref"] = r["ece"] - ref["ece"]
            r["fewer_evaluations"] = ref["model_evaluations"] / r["model_evaluations"]
            r["meets_goal"] = bool(abs(r["iou_points_vs_ref"]) <= GOAL["iou_points"]
                                   and abs(r["ece_vs_ref"]) <= GOAL["ece"]
                                   and r["fewer_evaluations"] >= GOAL["fewer_evaluations"])
        out[ds] = rows
    return {"datasets": out, "goal": GOAL, "images": images, "threads": torch.get_num_threads(),
            "reached_by": _reached(out)}


def _reached(out: dict) -> list[str]:
    """The sampler/step settings that meet the goal on every dataset."""
    keys = [{(r["sampler"], r["steps"]) for r in rows if r["meets_goal"]} for rows in out.values()]
    common = set.intersection(*keys) if keys else set()
    return [f"{s}-{k}" for s, k in sorted(common, key=lambda x: (x[1], x[0]))]


def table(r: dict) -> str:
    lines = [f"ensemble quality vs cost (10 members, {r['images']} test images, cpu-budget EnsemDiff, threads "
             f"{r['threads']}); goal: within {r['goal']['iou_points']} IoU point and {r['goal']['ece']} ECE of "
             f"DDPM-1000 at >= {r['goal']['fewer_evaluations']}x fewer model evaluations"]
    for ds, rows in r["datasets"].items():
        lines.append(f"  {ds}")
        lines.append(f"    {'sampler':10s} {'steps':>5s} {'IoU':>6s} {'dIoU pt':>8s} {'ECE':>6s} {'dECE':>7s} "
                     f"{'GED':>6s} {'AUROC':>6s} {'evals':>8s} {'fewer':>6s} {'wall s':>7s} goal")
        for x in rows:
            lines.append(f"    {x['sampler']:10s} {x['steps']:5d} {x['iou']:6.3f} {x['iou_points_vs_ref']:+8.2f} "
                         f"{x['ece']:6.3f} {x['ece_vs_ref']:+7.3f} {x['ged']:6.3f} {x['unc_auroc']:6.3f} "
                         f"{x['model_evaluations']:8d} {x['fewer_evaluations']:6.0f} {x['wall_s']:7.1f} "
                         f"{'yes' if x['meets_goal'] else ''}")
    lines.append(f"  reached on every dataset by: {', '.join(r['reached_by']) or 'none'}")
    return "\n".join(lines)
