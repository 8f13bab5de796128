"""Ensemble quality against cost: per dataset and prediction target (eps, v, x0) one trained EnsemDiff (the ``cpu``
budget: the smoke model at 600 steps), each target trained on its own plain MSE (``weighting.PLAIN_MSE``: eps
uniform, v v, x0 x0_mse, as the ``calibration_targets`` study trains them), its 10-member test ensemble drawn with
DDPM-1000 (the reference) and with DDPM, DDIM (eta 0 and 1) and DPM-Solver++(2M) at 10, 20 and 50 steps, from the
same weights and test images.
Probabilities are the members' vote fraction (``masks.VOTE``). Per setting: IoU, ECE (10 bins), model
evaluations, wall time, and the per-image paired difference to the reference with its 95 % BCa bootstrap interval
over test images (``metrics.cases.case_interval``; each image of these sets is its own case), its per-image SD and
the smallest IoU difference the n images detect (``metrics.cases.resolution``: alpha 0.05, 80 % power).

Goal (issue 24): within 1 IoU point and 0.01 ECE of DDPM-1000 at >= 50x fewer model evaluations. ``reached`` per
dataset: some (target, sampler, steps) meets it on the point estimates; ``reached_ci``: its whole interval lies
within the tolerance (an equivalence test; with 16 images it needs a small per-image spread). Within is two-sided:
a setting clearly better than the reference misses it. ``not_worse`` / ``not_worse_ci`` ask the question a user of
the segmentation asks, whether few steps lose quality: IoU at most 1 point lower and ECE at most 0.01 higher (on the
interval: its IoU lower bound >= -1 point and its ECE upper bound <= +0.01, a non-inferiority test).
The interval flags decide "some setting passes" over many settings, so they use Bonferroni's intervals: level 1 -
0.05 / m with m the distinct settings at >= 50x fewer evaluations over the dataset's counted targets
(``family_size``; DDPM and DDIM eta 1 are one setting); the table's intervals stay 95 % per comparison.
Where the noise floor (below) is wider than the tolerance, a point estimate within it is Monte-Carlo noise:
``unresolved`` names those targets, and there only the interval flags are evidence. All count only
where the model learned something: the reference must beat the stronger training-free baseline (blur + Otsu, all
foreground: ``metrics.TRAINING_FREE``) on the same test images (the lower bound of the paired per-image interval
above 0), or agreement with it is one failure agreeing with another.
The noise floor: the reference drawn a second time from other noise (``redraw``). Its per-image differences to the
first draw are two independent ensembles' Monte-Carlo noise alone: their mean is how far the reference reproduces
itself, their SD s / sqrt(2) the noise of one ensemble per image. Where it exists, the reference is the mean of both
draws per image (``reference``): an unbiased estimate of what one 10-member DDPM-1000 ensemble scores on that image,
with half one draw's noise variance, so a single draw that flips an image no longer counts against every setting at
once. A setting (one draw) against it carries per image the noise s sqrt(3) / 2 (one draw's variance plus half of
it; ``comparison_noise_sd``), and the goal is resolved where that noise alone gives a 95 % interval of the mean
within +-1 point: 1.96 s sqrt(3) / 2 / sqrt(n) <= 1. Every setting draws from the first draw's seed (common random
numbers: the same starting noise), so its differences to the first draw can spread less than the redraw's;
``spread_vs_redraw`` (variance of a setting's differences to the first draw / variance of the redraw's) is below 1
where a setting tracks the first draw more closely than a fresh draw of the reference itself does, and above 1 where
it differs by more than sampling noise.
What a setting's cost is made of (``why``): the vote fraction's Brier score is exactly the members' pixel error minus
their disagreement mean p (1 - p) (``masks.member_diagnostics``), per image; each setting's per-image differences to
the reference in all three, with intervals, say whether it loses because its members are worse or because they
agree more (an ensemble that agrees more is surer, right or wrong). ECE is not additive; the Brier score is.
Where a dataset has the default target (eps) and another, ``target_contrasts`` tests whether the few-step cost depends
on the target: per image and setting, (setting - DDPM-1000) with eps minus the same with the other target.
``python -m diffseg.bench quality [--json] [--cache DIR]``: ``--cache`` keeps each (dataset, target) result as a
JSON file and reuses it on the next run. While one is measured, its trained weights and the finished chunks of its
evaluations (``CHUNK`` test images each) are kept beside it (``work_files``), so a run stopped part-way continues with
its next chunk. A cached result
without the redraw gets it from weights retrained and checked to reproduce the cached DDPM-10 row image by image;
one without the baseline gets it from the test images alone. The redraw is drawn only where the reference beats the
baseline (``redraw`` None otherwise: a DDPM-1000 ensemble saved where no sampler is counted). ``--resolution`` and
``--train-steps`` replace the cpu budget's.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ..budgets import budget_overlay
from ..diffusion.targets import TARGETS
from ..diffusion.weighting import PLAIN_MSE
from ..experiments import Trial, TrialConfig, train_trial
from ..experiments.config import DiffusionConfig
from ..experiments.evaluate import per_image_metrics
from ..files import atomic_path, atomic_write_text
from ..metrics import TRAINING_FREE, stronger
from ..metrics.cases import case_interval, resolution

DATASETS = ("isic2017", "kvasir_seg", "synthetic-clusters", "ihc_her2like")
REFERENCE = ("ddpm", None, 1000)
SAMPLERS = (("ddpm", None), ("ddim", 0.0), ("ddim", 1.0), ("dpmpp_2m", None))  # (sampler, eta)
CONFIGS = [REFERENCE] + [(s, eta, k) for s, eta in SAMPLERS for k in (10, 20, 50)]
GOAL = {"iou_points": 1.0, "ece": 0.01, "fewer_evaluations": 50}
MEMBERS, IMAGES = 10, 16
DEFAULT_TARGET = DiffusionConfig().target  # the target the few-step cost of the others is contrasted with
WHY = ("brier", "member_error", "disagreement")  # Brier = member_error - disagreement, per image
DRAW_SEED, REDRAW_SEED = 4, 5  # offsets from the trial's seed: the ensembles' noise, and the reference's second draw
# A draw runs in chunks of CHUNK test images, each kept when it finishes (a DDPM-1000 draw of ISIC 2017's 400 test
# images takes hours here); chunk c draws its noise from seed + CHUNK_SEED_STRIDE * c, so one chunk (<= CHUNK images)
# is the same draw as before chunks existed, and no chunk's seed meets another draw's
CHUNK, CHUNK_SEED_STRIDE = 40, 1000


def scale_overrides(resolution: int | None = None, train_steps: int | None = None, seed: int | None = None) -> dict:
    """The cpu budget's resolution and training steps and the trial's seed (training and, offset, the ensembles'
    noise; the data split has its own), replaced where given (dotted TrialConfig keys)."""
    given = {"data.resolution": resolution, "train.steps": train_steps, "seed": seed}
    return {k: v for k, v in given.items() if v is not None}


def _config(dataset: str, target: str, out: str, images: int, scale: dict) -> TrialConfig:
    return TrialConfig.from_dict({**budget_overlay("cpu", dataset), **scale, "data.dataset": dataset,
                                  "diffusion.target": target, "diffusion.weighting": PLAIN_MSE[target],
                                  "eval.ensemble": MEMBERS, "eval.test_max_images": images,
                                  "eval.curve_points": 2, "output_dir": out})


def _trained(dataset: str, target: str, out: str, images: int, scale: dict) -> Trial:
    cfg = _config(dataset, target, out, images, scale)
    train_trial(cfg)
    trial = Trial(cfg)
    trial.load_state(torch.load(f"{out}/checkpoint/state.pt", weights_only=True))
    trial.ema.module.load_state_dict(trial.best["ema"])
    return trial


def evaluate(trial: Trial, sampler: str, eta: float | None, steps: int, seed: int = DRAW_SEED,
             span: tuple[int, int] | None = None) -> dict:
    """One setting on the trial's test images (``span``: the a-th to the b-th), its noise drawn from ``trial seed +
    seed``: summary numbers and the per-image IoU and ECE."""
    cfg = trial.cfg
    trial.cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, sampler=sampler, eta=eta))
    _, images, masks = trial._split_tensors("test", cfg.eval.test_max_images)
    a, b = span or (0, len(images))
    t0 = time.perf_counter()
    members = trial.predict(trial.ema.module, images[a:b], masks[a:b], MEMBERS, steps, cfg.seed + seed).cpu()
    wall = time.perf_counter() - t0
    trial.cfg = cfg
    rows = per_image_metrics(members, masks[a:b].cpu(), cfg.eval.ece_bins)
    return _row(sampler, eta, steps, {k: [r[k] for r in rows] for k in ("iou", "ece", *WHY)},
                steps * MEMBERS * len(rows), wall)


def _row(sampler: str, eta: float | None, steps: int, per_image: dict, evaluations: int, wall: float) -> dict:
    name = sampler if eta is None else f"{sampler}-eta{eta:g}"
    return {"sampler": name, "steps": steps, **{k: float(np.mean(v)) for k, v in per_image.items()},
            "model_evaluations": evaluations, "wall_s": wall, "per_image": per_image}


def n_test_images(trial: Trial) -> int:
    """How many test images the trial evaluates (all of the test split, ``eval.test_max_images`` at most)."""
    return len(trial._split_tensors("test", trial.cfg.eval.test_max_images)[0])


def draw(trial: Trial, sampler: str, eta: float | None, steps: int, seed: int = DRAW_SEED,
         done: dict | None = None, keep: Path | None = None) -> dict:
    """One setting on all test images, drawn in chunks of ``CHUNK`` images (chunk c from ``seed + CHUNK_SEED_STRIDE
    * c``) and joined image by image. Chunks found in ``done`` are taken from there; each one drawn is added to it
    and, with ``keep``, written there, so a draw stopped part-way continues with its next chunk."""
    done = {} if done is None else done
    n, parts = n_test_images(trial), []
    for c, a in enumerate(range(0, n, CHUNK)):
        span = (a, min(n, a + CHUNK))
        key = f"{sampler}/{eta}/{steps}/{seed}/{span[0]}-{span[1]}"
        if key not in done:
            done[key] = evaluate(trial, sampler, eta, steps, seed=seed + CHUNK_SEED_STRIDE * c, span=span)
            if keep is not None:
                atomic_write_text(keep, json.dumps(done))
        parts.append(done[key])
    per_image = {k: [x for p in parts for x in p["per_image"][k]] for k in parts[0]["per_image"]}
    return _row(sampler, eta, steps, per_image, sum(p["model_evaluations"] for p in parts),
                sum(p["wall_s"] for p in parts))


def baseline(trial: Trial) -> dict:
    """Each training-free baseline's IoU (``metrics.TRAINING_FREE``) per image, on the test images every setting
    is evaluated on."""
    idx, _, _ = trial._split_tensors("test", trial.cfg.eval.test_max_images)
    return {method: iou_of(trial.ds.images[idx], trial.ds.masks[idx]) for method, iou_of in TRAINING_FREE.items()}


def add_baseline(result: dict, images: int, scale: dict) -> dict:
    """A cached result without the baseline gets it (training-free: the test images only, no weights)."""
    with tempfile.TemporaryDirectory() as tmp:
        b = baseline(Trial(_config(result["dataset"], result["target"], tmp, images, scale)))
    if any(len(v) != len(result["rows"][0]["per_image"]["iou"]) for v in b.values()):
        raise RuntimeError(f"{result['dataset']}/{result['target']}: the baseline's test images are not the cached "
                           "result's; run it again without the cache")
    return {**result, "baseline": b}


def work_files(path: Path) -> tuple[Path, Path]:
    """A measurement's state kept beside its cache file while it runs: the trained weights (with the config and
    training time) and the finished evaluations."""
    return path.with_name(f"{path.stem}.weights.pt"), path.with_name(f"{path.stem}.partial.json")


def _kept_config(cfg: TrialConfig) -> dict:
    return {**cfg.to_dict(), "output_dir": None}


def _weights(dataset: str, target: str, tmp: str, images: int, scale: dict,
             weights: Path | None) -> tuple[Trial, float]:
    """The trained trial and its training time: loaded from ``weights`` where that file exists (refused when another
    config trained them), else trained now (and kept there)."""
    if weights is not None and weights.exists():
        state, cfg = torch.load(weights, weights_only=True), _config(dataset, target, tmp, images, scale)
        if state["config"] != _kept_config(cfg):
            raise RuntimeError(f"{weights}: kept weights of another config; remove it (and its .partial.json) to "
                               "train again")
        trial = Trial(cfg)
        trial.ema.module.load_state_dict(state["ema"])
        return trial, state["train_s"]
    t0 = time.perf_counter()
    trial = _trained(dataset, target, tmp, images, scale)
    train_s = time.perf_counter() - t0
    if weights is not None:
        with atomic_path(weights) as w:
            torch.save({"config": _kept_config(trial.cfg), "train_s": train_s, "ema": trial.ema.module.state_dict()}, w)
    return trial, train_s


def measure(dataset: str, target: str, images: int = IMAGES, scale: dict | None = None,
            keep: Path | None = None) -> dict:
    """One (dataset, target): trained, each setting of ``CONFIGS`` evaluated, the training-free baselines and, where
    the reference beats them, its redraw. With ``keep`` (the cache file) the weights and each finished chunk of an
    evaluation are kept beside it (``work_files``), so a run stopped part-way continues with its next chunk."""
    weights, partial = work_files(keep) if keep else (None, None)
    done = {}
    if partial is not None and partial.exists():
        if not weights.exists():
            raise RuntimeError(f"{partial}: finished evaluations without the weights that drew them ({weights.name}); "
                               "remove it to measure again")
        done = json.loads(partial.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        trial, train_s = _weights(dataset, target, tmp, images, scale or {}, weights)

        rows, base = [draw(trial, *c, done=done, keep=partial) for c in CONFIGS], baseline(trial)
        redraw = (draw(trial, *REFERENCE, REDRAW_SEED, done, partial) if learned({"rows": rows, "baseline": base})
                  else None)
    return {"dataset": dataset, "target": target, "weighting": trial.cfg.diffusion.weighting,
            "resolution": trial.cfg.data.resolution, "seed": trial.cfg.seed,
            "train_steps": trial.cfg.train.steps, "train_s": train_s, "rows": rows, "redraw": redraw,
            "baseline": base}


def add_redraw(result: dict, images: int, scale: dict) -> dict:
    """A cached result without the reference's second draw gets it: the weights are trained again with the same
    config and must reproduce the cached DDPM-10 row image by image first, or the redraw would measure another
    model. Where the reference does not beat the baseline it gets none (``redraw`` None): its samplers are not
    counted, so their spread against the noise floor is not needed."""
    if not learned(result):
        return {**result, "redraw": None}
    check = next(r for r in result["rows"] if (r["sampler"], r["steps"]) == ("ddpm", 10))
    with tempfile.TemporaryDirectory() as tmp:
        trial = _trained(result["dataset"], result["target"], tmp, images, scale)
        again = draw(trial, "ddpm", None, 10)
        gap = float(np.max(np.abs(np.subtract(again["per_image"]["iou"], check["per_image"]["iou"]))))
        if gap > 1e-6:
            raise RuntimeError(f"{result['dataset']}/{result['target']}: the retrained weights do not reproduce the "
                               f"cached DDPM-10 row (largest per-image IoU gap {gap:.3g}); run it again without the "
                               "cache")
        return {**result, "redraw": draw(trial, *REFERENCE, REDRAW_SEED)}


def _spread(d) -> float:
    return float(np.std(d, ddof=1)) if len(d) > 1 else float("nan")


def images_for(sd: float, half_width: float) -> int:
    """Images for a 95 % interval of the mean of +-``half_width`` at per-image SD ``sd``: (1.96 sd / w)^2."""
    return int(np.ceil((1.96 * sd / half_width) ** 2)) if np.isfinite(sd) else 0


def _diffs(row: dict, ref: dict) -> tuple[np.ndarray, np.ndarray]:
    """Per-image differences of a row to the reference: IoU in points, ECE."""
    return (100 * (np.asarray(row["per_image"]["iou"]) - ref["per_image"]["iou"]),
            np.asarray(row["per_image"]["ece"]) - ref["per_image"]["ece"])


def reference(result: dict) -> dict:
    """DDPM-1000 as every setting is compared with: the mean of its two draws per image (IoU, ECE and ``WHY``, all
    means over pixels or members, so their average is the expected score of one ensemble) where the redraw exists,
    else its one draw; its evaluations and wall time are one draw's (``draws``: how many it averages)."""
    first, again = result["rows"][0], result.get("redraw")
    if not again:
        return {**first, "draws": 1}
    per_image = {k: ((np.asarray(v) + again["per_image"][k]) / 2).tolist() for k, v in first["per_image"].items()
                 if k in again["per_image"]}
    return {**first, **{k: float(np.mean(v)) for k, v in per_image.items()}, "per_image": per_image, "draws": 2}


def comparison_noise_sd(floor_sd: float) -> float:
    """Per-image Monte-Carlo noise of one draw against the two-draw reference, from the SD s of the redraw's
    differences to the first draw: one draw's variance s^2 / 2 plus the reference's s^2 / 4, s sqrt(3) / 2."""
    return floor_sd * np.sqrt(3) / 2


def why(row: dict, ref: dict) -> dict | None:
    """A row's per-image differences to the reference in the vote fraction's Brier score and its two parts
    (``WHY``: Brier = member_error - disagreement), each with its mean and 95 % interval; None for a result cached
    before the parts were recorded."""
    if not all(k in row["per_image"] for k in WHY):
        return None
    diffs = {k: np.asarray(row["per_image"][k]) - ref["per_image"][k] for k in WHY}
    return {k: {"mean": float(d.mean()), "ci": list(case_interval(d)[:2])} for k, d in diffs.items()}


def against_baseline(ref: dict, baseline: dict) -> dict:
    """The reference against the stronger training-free baseline on the same images: the paired per-image IoU
    difference in points, its 95 % interval, and ``reference_beats_it`` (the interval's lower bound above 0)."""
    means = {m: float(np.mean(v)) for m, v in baseline.items()}
    method = stronger(means)
    learned = 100 * (np.asarray(ref["per_image"]["iou"]) - baseline[method])
    lo, hi, _ = case_interval(learned)
    return {"method": method, "iou": means[method], "others": {m: v for m, v in means.items() if m != method},
            "reference_points_vs_baseline": float(learned.mean()), "ci": [lo, hi], "reference_beats_it": bool(lo > 0)}


def learned(result: dict) -> bool:
    """Whether a (dataset, target) result's reference (``reference``) beats the stronger training-free baseline."""
    return against_baseline(reference(result), result["baseline"])["reference_beats_it"]


def _cheap(ref: dict, row: dict) -> bool:
    """At least the goal's fewer model evaluations than the reference."""
    return ref["model_evaluations"] / row["model_evaluations"] >= GOAL["fewer_evaluations"]


def family_size(results: list[dict]) -> dict[str, int]:
    """Per dataset, the settings its interval flags decide over: the distinct settings at >= 50x fewer evaluations
    (rows with equal numbers, DDPM and DDIM eta 1, are one) of each counted (learned) target, summed."""
    out: dict[str, int] = {}
    for r in results:
        if learned(r):
            out[r["dataset"]] = out.get(r["dataset"], 0) + len(same_numbers(
                [x for x in r["rows"][1:] if _cheap(r["rows"][0], x)], ("steps", "iou", "ece")))
    return out


def compare(result: dict, family: int = 1) -> dict:
    """Each setting against the reference (``reference``: DDPM-1000, the mean of its two draws where redrawn) of its
    (dataset, target): paired differences with 95 % intervals, and whether it meets the goal on the point estimates
    (``meets_goal``, ``not_worse``) and on the interval (``meets_goal_ci``, ``not_worse_ci``: Bonferroni's interval
    over ``family`` settings, level ``decision_level``); with a redraw, the noise floor (the redraw against the first
    draw) and each setting's spread against it."""
    first, ref, rows = result["rows"][0], reference(result), []
    level = 1 - 0.05 / max(1, family)
    floor = result.get("redraw")
    floor_iou, floor_ece = _diffs(floor, first) if floor else (None, None)
    floor_sd = _spread(floor_iou) if floor else None
    for r in [ref, *result["rows"][1:]]:
        d_iou, d_ece = _diffs(r, ref)
        sd = _spread(d_iou)
        iou95, ece95 = case_interval(d_iou)[:2], case_interval(d_ece)[:2]
        (iou_lo, iou_hi), (ece_lo, ece_hi) = (iou95, ece95) if family <= 1 else (
            case_interval(d_iou, level=level)[:2], case_interval(d_ece, level=level)[:2])
        fewer = ref["model_evaluations"] / r["model_evaluations"]
        cheap = _cheap(ref, r)
        rows.append({**{k: v for k, v in r.items() if k != "per_image"}, "target": result["target"],
                     "iou_points_vs_ref": float(d_iou.mean()), "iou_points_ci": list(iou95),
                     "decision_ci": {"iou_points": [iou_lo, iou_hi], "ece": [ece_lo, ece_hi]},
                     "iou_points_sd": sd, "iou_points_mde": resolution(d_iou)["mde"],
                     "images_for_1pt": images_for(sd, 1.0),
                     "spread_vs_redraw": _spread(_diffs(r, first)[0]) ** 2 / floor_sd ** 2
                     if floor and floor_sd > 0 else None,
                     "ece_vs_ref": float(d_ece.mean()), "ece_ci": list(ece95), "fewer_evaluations": fewer,
                     "why": why(r, ref),
                     "meets_goal": bool(cheap and abs(d_iou.mean()) <= GOAL["iou_points"]
                                        and abs(d_ece.mean()) <= GOAL["ece"]),
                     "meets_goal_ci": bool(cheap and -GOAL["iou_points"] <= iou_lo and iou_hi <= GOAL["iou_points"]
                                           and -GOAL["ece"] <= ece_lo and ece_hi <= GOAL["ece"]),
                     "not_worse": bool(cheap and d_iou.mean() >= -GOAL["iou_points"] and d_ece.mean() <= GOAL["ece"]),
                     "not_worse_ci": bool(cheap and iou_lo >= -GOAL["iou_points"] and ece_hi <= GOAL["ece"])})
    out = {"dataset": result["dataset"], "target": result["target"], "weighting": result["weighting"],
           "resolution": result["resolution"],
           "seed": result.get("seed", 0),  # results measured before the seed was recorded: the config's default, 0
           "train_steps": result["train_steps"], "train_s": result["train_s"],
           "n_images": len(ref["per_image"]["iou"]), "family": family, "decision_level": level,
           "reference": rows[0], "settings": rows[1:], "noise_floor": None,
           "baseline": against_baseline(ref, result["baseline"])}
    if floor:
        noise = comparison_noise_sd(floor_sd)
        out["noise_floor"] = {"first_iou": first["iou"], "first_ece": first["ece"], "iou": floor["iou"],
                              "ece": floor["ece"], "wall_s": floor["wall_s"],
                              "iou_points_vs_first": float(floor_iou.mean()),
                              "iou_points_ci": list(case_interval(floor_iou)[:2]),
                              "iou_points_sd": floor_sd, "noise_sd_per_draw": floor_sd / np.sqrt(2),
                              "comparison_noise_sd": noise,
                              "resolves_goal": bool(1.96 * noise / np.sqrt(len(floor_iou)) <= GOAL["iou_points"]),
                              "images_for_1pt": images_for(noise, 1.0), "ece_vs_first": float(floor_ece.mean()),
                              "ece_ci": list(case_interval(floor_ece)[:2]), "ece_sd": _spread(floor_ece)}
    return out


def summary(compared: list[dict]) -> dict:
    """Per dataset: ``reached`` / ``reached_ci`` and the settings that reach it (``by``, ``by_ci``), ``not_worse`` /
    ``not_worse_ci`` and theirs (``not_worse_by``, ``not_worse_by_ci``), and the closest setting at >= 50x fewer
    evaluations (the smallest |IoU gap|): the best trade-off where none reaches the goal. Only a (dataset,
    target) whose reference beats the training-free baseline (the lower bound of its paired interval above 0)
    counts: where the model learned nothing, a few-step ensemble agrees with DDPM-1000 as one failure with
    another, and that says nothing of the samplers (``not_learned`` lists those targets). ``unresolved`` lists the
    counted targets whose noise floor does not resolve the goal (a draw's Monte-Carlo noise against the two-draw
    reference alone gives a 95 % interval wider than +-1 IoU point, or the reference was not drawn again): there a
    point estimate within 1 point is Monte-Carlo noise, so ``reached`` and ``not_worse`` are not evidence and only
    the interval flags decide."""
    out = {}
    for c in compared:
        d = out.setdefault(c["dataset"], {"family": c["family"], "decision_level": c["decision_level"],
                                          "reached": False, "reached_ci": False, "by": [], "by_ci": [],
                                          "not_worse": False, "not_worse_ci": False, "not_worse_by": [],
                                          "not_worse_by_ci": [], "closest": None, "not_learned": [],
                                          "unresolved": []})
        if not c["baseline"]["reference_beats_it"]:
            d["not_learned"].append(c["target"])
            continue
        if not (c["noise_floor"] or {}).get("resolves_goal"):
            d["unresolved"].append(c["target"])
        for s in c["settings"]:
            label = f"{c['target']}/{s['sampler']}-{s['steps']}"
            d["by"] += [label] if s["meets_goal"] else []
            d["by_ci"] += [label] if s["meets_goal_ci"] else []
            d["not_worse_by"] += [label] if s["not_worse"] else []
            d["not_worse_by_ci"] += [label] if s["not_worse_ci"] else []
            best = d["closest"]
            if s["fewer_evaluations"] >= GOAL["fewer_evaluations"] and (
                    best is None or abs(s["iou_points_vs_ref"]) < abs(best["iou_points_vs_ref"])):
                d["closest"] = {"setting": label, "iou_points_vs_ref": s["iou_points_vs_ref"],
                                "ece_vs_ref": s["ece_vs_ref"]}
        d["reached"], d["reached_ci"] = bool(d["by"]), bool(d["by_ci"])
        d["not_worse"], d["not_worse_ci"] = bool(d["not_worse_by"]), bool(d["not_worse_by_ci"])
    return out


def same_numbers(rows: list[dict], fields: tuple[str, ...]) -> list[tuple[dict, str]]:
    """Each group of rows equal in ``fields`` once, as (its first row, its samplers joined "a = b"): DDPM is DDIM at
    eta 1, the same update, so their rows are equal and one would hide the other."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(tuple(r[f]) if isinstance(r[f], list) else r[f] for f in fields), []).append(r)
    return [(g[0], " = ".join(sorted(x["sampler"] for x in g))) for g in groups.values()]


def _contrast(d_iou: np.ndarray, d_ece: np.ndarray) -> dict:
    """Mean, 95 % interval and (IoU) smallest detectable effect of per-image differences."""
    return {"iou_points": float(d_iou.mean()), "iou_points_ci": list(case_interval(d_iou)[:2]),
            "iou_points_mde": resolution(d_iou)["mde"], "ece": float(d_ece.mean()),
            "ece_ci": list(case_interval(d_ece)[:2]), "n_images": len(d_iou)}


def target_contrasts(results: list[dict], base: str = DEFAULT_TARGET) -> dict:
    """Does the few-step cost depend on the prediction target? Per dataset, for each setting drawn with ``base`` (the
    default target, eps) and with another target on the same test images: the difference in differences
    d_base - d_other per image, with d = setting - that target's own DDPM-1000 (IoU points, ECE; ``what``: "cost"),
    its 95 % interval over the images and the smallest IoU effect the n images detect. Negative IoU (positive ECE):
    the setting costs more with ``base`` than with the other target, the suspicion that eps amplifies the noise
    estimate's error at large t by s/a and few-step samplers inherit it. First, the references themselves
    (``what``: "reference", DDPM-1000 with ``base`` minus with the other): one trained model per target, so its
    interval covers the images and the ensembles' noise, not another training seed. ``counted`` only where both
    references beat the training-free baseline. Both targets must hold the same test images: their training-free
    baselines per image are compared."""
    out = {}
    by_ds: dict[str, dict[str, dict]] = {}
    for r in results:
        by_ds.setdefault(r["dataset"], {})[r["target"]] = r
    for ds, by_target in by_ds.items():
        if base not in by_target:
            continue
        b = by_target[base]
        for target, o in by_target.items():
            if target == base:
                continue
            if b["baseline"] != o["baseline"]:
                raise ValueError(f"{ds}: the {base} and {target} results hold other test images (their training-free "
                                 "baselines differ per image); measure both with the same --images")
            head = {"target": base, "against": target, "counted": learned(b) and learned(o)}
            b_ref, o_ref = reference(b), reference(o)
            rows = out.setdefault(ds, [])
            rows.append({**head, "what": "reference", "sampler": b_ref["sampler"], "steps": b_ref["steps"],
                         **_contrast(*_diffs(b_ref, o_ref))})
            others = {(r["sampler"], r["steps"]): r for r in o["rows"][1:]}
            for r in b["rows"][1:]:
                if (twin := others.get((r["sampler"], r["steps"]))) is not None:
                    (bi, be), (oi, oe) = _diffs(r, b_ref), _diffs(twin, o_ref)
                    rows.append({**head, "what": "cost", "sampler": r["sampler"], "steps": r["steps"],
                                 **_contrast(bi - oi, be - oe)})
    return out


def cache_name(dataset: str, target: str, images: int, resolution: int | None, train_steps: int | None,
               seed: int | None = None) -> str:
    """Named by the target's training (its weighting and seed too: results of another training are not reused)."""
    steps = f"-{train_steps}steps" if train_steps else ""
    seeded = f"-seed{seed}" if seed else ""
    return f"{dataset}-{target}-{PLAIN_MSE[target]}-{resolution or 'cpu'}px-{images}img{steps}{seeded}.json"


def run(datasets=DATASETS, targets=TARGETS, images: int = IMAGES, cache: str | None = None,
        resolution: int | None = None, train_steps: int | None = None, seed: int | None = None) -> dict:
    """``resolution`` (px) replaces the cpu budget's 48 px (e.g. 32 to fit a run into a session on 2 cores),
    ``train_steps`` its training steps (for a set the model does not learn in them), ``seed`` the trial's seed
    (default 0; another seed trains another model, tested on the same images)."""
    scale, results = scale_overrides(resolution, train_steps, seed), []
    for ds in datasets:
        for target in targets:
            path = Path(cache) / cache_name(ds, target, images, resolution, train_steps, seed) if cache else None
            if path is not None and path.exists():
                r = {"train_steps": budget_overlay("cpu", ds)["train.steps"],  # files named without steps: cpu's
                     **json.loads(path.read_text())}
                if "baseline" not in r:
                    r = add_baseline(r, images, scale)
                    atomic_write_text(path, json.dumps(r))
                if "redraw" not in r:
                    r = add_redraw(r, images, scale)
                    atomic_write_text(path, json.dumps(r))
                results.append(r)
                continue
            r = measure(ds, target, images, scale, keep=path)
            if path is not None:
                atomic_write_text(path, json.dumps(r))
                for f in work_files(path):
                    f.unlink(missing_ok=True)
            results.append(r)
    family = family_size(results)
    compared = [compare(r, family.get(r["dataset"], 1)) for r in results]
    return {"goal": GOAL, "members": MEMBERS, "images": images, "threads": torch.get_num_threads(),
            "results": compared, "per_dataset": summary(compared), "target_contrasts": target_contrasts(results)}


def _why_lines(c: dict) -> list[str]:
    """The settings' Brier differences to the reference split into members' error and disagreement."""
    ref = c["reference"]
    if ref["why"] is None:
        return []
    lines = [f"    why (vote-fraction Brier = members' pixel error - their disagreement, per image): DDPM-1000 "
             f"{ref['brier']:.4f} = {ref['member_error']:.4f} - {ref['disagreement']:.4f}; each setting minus it:"]
    for x, sampler in same_numbers(c["settings"], ("steps", *WHY)):
        brier, error, disagreement = (f"{w['mean']:+.4f} [{w['ci'][0]:+.4f},{w['ci'][1]:+.4f}]"
                                      for w in (x["why"][k] for k in WHY))
        lines.append(f"    {sampler:22s} {x['steps']:4d}: Brier {brier} = error {error} - disagreement {disagreement}")
    return lines


def _goal_mark(x: dict) -> str:
    """A setting's goal column: within (two-sided) and not worse (one-sided), each on the interval or the point."""
    within = "within CI" if x["meets_goal_ci"] else "within" if x["meets_goal"] else ""
    not_worse = "not worse CI" if x["not_worse_ci"] else "not worse" if x["not_worse"] else ""
    return ", ".join(m for m in (within, not_worse) if m)


def table(r: dict) -> str:
    g = r["goal"]
    lines = [f"ensemble quality vs cost ({r['members']} members, {r['images']} test images, cpu-budget EnsemDiff at "
             f"{', '.join(sorted({str(c['resolution']) for c in r['results']}))} px, "
             f"vote-fraction probability, threads {r['threads']}); goal: within {g['iou_points']} IoU point and "
             f"{g['ece']} ECE of DDPM-1000 at >= {g['fewer_evaluations']}x fewer model evaluations"]
    for c in r["results"]:
        ref = c["reference"]
        b = c["baseline"]
        lines.append(f"  {c['dataset']} / {c['target']} (weighting {c['weighting']}, {c['train_steps']} training "
                     f"steps, seed {c['seed']}): DDPM-1000{' (the mean of its two draws)' * (ref['draws'] == 2)} "
                     f"IoU {ref['iou']:.3f} ECE {ref['ece']:.3f} ({ref['wall_s']:.0f} s a draw; n = {c['n_images']} "
                     "images); "
                     f"training-free {b['method']} IoU {b['iou']:.3f} (the stronger; "
                     f"{', '.join(f'{m} {v:.3f}' for m, v in b['others'].items())}), the reference "
                     f"{b['reference_points_vs_baseline']:+.2f} pt [{b['ci'][0]:+.2f},{b['ci'][1]:+.2f}]"
                     f"{'' if b['reference_beats_it'] else ': does not beat it, not counted'}")
        if not b["reference_beats_it"] and not c["noise_floor"]:
            lines.append("    noise floor: not drawn (the reference did not learn; its samplers are not counted)")
        if nf := c["noise_floor"]:
            lines.append(f"    noise floor, DDPM-1000's first draw IoU {nf['first_iou']:.3f} ECE "
                         f"{nf['first_ece']:.3f}, "
                         f"drawn again IoU {nf['iou']:.3f} ({nf['iou_points_vs_first']:+.2f} pt "
                         f"[{nf['iou_points_ci'][0]:+.2f},{nf['iou_points_ci'][1]:+.2f}], per-image SD "
                         f"{nf['iou_points_sd']:.1f} pt: one ensemble's noise {nf['noise_sd_per_draw']:.1f} pt per "
                         f"image, a draw against the two-draw reference {nf['comparison_noise_sd']:.1f} pt, +-1 pt "
                         f"there needs {nf['images_for_1pt']} images), ECE {nf['ece']:.3f} "
                         f"({nf['ece_vs_first']:+.3f} [{nf['ece_ci'][0]:+.3f},{nf['ece_ci'][1]:+.3f}])")
        lines.append(f"    {'sampler':12s} {'steps':>5s} {'IoU':>6s} {'dIoU pt [95% CI]':>22s} {'SD':>5s} "
                     f"{'MDE':>5s} {'/re':>4s} {'ECE':>6s} {'dECE [95% CI]':>26s} {'fewer':>6s} {'wall s':>7s} goal")
        for x in c["settings"]:
            lo, hi = x["iou_points_ci"]
            elo, ehi = x["ece_ci"]
            ratio = "" if x["spread_vs_redraw"] is None else f"{x['spread_vs_redraw']:.2f}"
            lines.append(f"    {x['sampler']:12s} {x['steps']:5d} {x['iou']:6.3f} {x['iou_points_vs_ref']:+7.2f} "
                         f"[{lo:+6.2f},{hi:+6.2f}] {x['iou_points_sd']:5.1f} {x['iou_points_mde']:5.1f} {ratio:>4s} "
                         f"{x['ece']:6.3f} {x['ece_vs_ref']:+7.3f} [{elo:+7.3f},{ehi:+7.3f}] "
                         f"{x['fewer_evaluations']:6.0f} {x['wall_s']:7.1f} "
                         f"{_goal_mark(x)}")
        lines += _why_lines(c)
    for ds, rows in r.get("target_contrasts", {}).items():
        lines.append(f"  {ds}: one target minus another; the references (DDPM-1000, one trained model each), then each "
                     "setting's cost (d = setting - its own DDPM-1000; negative IoU / positive ECE: costs more with "
                     "the first)")
        for x, sampler in same_numbers(rows, ("what", "against", "steps", "iou_points", "ece")):
            lo, hi = x["iou_points_ci"]
            elo, ehi = x["ece_ci"]
            uncounted = x["what"] == "cost" and not x["counted"]
            lines.append(f"    {x['what']:9s} {x['target']} - {x['against']:4s} {sampler:9s} {x['steps']:4d}: IoU "
                         f"{x['iou_points']:+6.2f} pt [{lo:+6.2f},{hi:+6.2f}] (MDE {x['iou_points_mde']:.1f}), ECE "
                         f"{x['ece']:+.3f} [{elo:+.3f},{ehi:+.3f}], n = {x['n_images']}"
                         f"{' (not counted: a reference did not learn)' if uncounted else ''}")
    for ds, d in r["per_dataset"].items():
        c = d["closest"]
        closest = (f"{c['setting']} ({c['iou_points_vs_ref']:+.2f} IoU pt, {c['ece_vs_ref']:+.3f} ECE)" if c else
                   "none counted")
        caveats = f"; not learned (not counted): {', '.join(d['not_learned'])}" if d["not_learned"] else ""
        if d["unresolved"]:
            caveats += (f"; the noise floor is wider than the goal for {', '.join(d['unresolved'])}: 'reached' and "
                        "'not worse' on the point estimates are noise there, not evidence")
        lines.append(f"  {ds}: reached {d['reached']} ({', '.join(d['by']) or '-'}), on the interval "
                     f"(Bonferroni over {d['family']} settings: {100 * d['decision_level']:.2f} % intervals) "
                     f"{d['reached_ci']} ({', '.join(d['by_ci']) or '-'}); not worse {d['not_worse']} "
                     f"({', '.join(d['not_worse_by']) or '-'}), on the interval {d['not_worse_ci']} "
                     f"({', '.join(d['not_worse_by_ci']) or '-'}); closest at >= {g['fewer_evaluations']}x: "
                     f"{closest}{caveats}")
    return "\n".join(lines)
