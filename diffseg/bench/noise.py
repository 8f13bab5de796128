"""``python -m diffseg.bench noise [--json] [--cache DIR]``: one ensemble's Monte-Carlo noise per test image for a
trained model, in minutes where the quality benchmark takes hours: how many test images would decide its goal.

Two ensembles of ``quality.MEMBERS`` with the budget's own sampler (the cpu budget's respaced ancestral DDPM at 10
steps) from the same weights on the quality benchmark's test images, their noise drawn from the trial's seed +
``quality.DRAW_SEED`` and + ``quality.REDRAW_SEED``. Per image d = IoU_2 - IoU_1 in points: one ensemble's noise is
SD(d) / sqrt(2), and +-1 point between two draws needs (1.96 SD(d))^2 images (``quality.images_for``). This is the
noise of the few-step ensembles; the quality benchmark's noise floor is DDPM-1000's, drawn twice (the README
compares the two). With ``--cache`` the weights are the quality benchmark's own (``quality.work_files``): trained
once, kept, and used by a later quality run of the same options. As in the quality benchmark, the first draw is
set against the stronger training-free baseline (``learned``): the noise of a model that learned nothing says
nothing of the test images a sampler comparison needs."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from ..diffusion.targets import TARGETS
from . import quality


def measure(dataset: str, target: str, images: int, scale: dict, keep: Path | None = None) -> dict:
    """One (dataset, target): trained (or its weights loaded from ``keep``'s work files), drawn twice."""
    weights = quality.work_files(keep)[0] if keep is not None and not keep.exists() else None
    with tempfile.TemporaryDirectory() as tmp:
        trial, train_s = quality.trained_weights(dataset, target, tmp, images, scale, weights)
        e = trial.cfg.eval
        draws = [quality.evaluate(trial, e.sampler, e.eta, e.steps, seed)
                 for seed in (quality.DRAW_SEED, quality.REDRAW_SEED)]
        base = quality.baseline(trial)
    d = 100 * (np.asarray(draws[1]["per_image"]["iou"]) - draws[0]["per_image"]["iou"])
    sd = float(np.std(d, ddof=1))
    vs = quality.against_baseline(draws[0], base)
    return {"dataset": dataset, "target": target, "resolution": trial.cfg.data.resolution,
            "train_steps": trial.cfg.train.steps, "seed": trial.cfg.seed, "train_s": train_s, "n_images": len(d),
            "sampler": draws[0]["sampler"], "steps": e.steps,
            "draws": [{k: x[k] for k in ("iou", "ece", "wall_s")} for x in draws],
            "draw_sd_points": sd, "noise_per_draw_points": sd / np.sqrt(2),
            "images_for_1pt": quality.images_for(sd, 1.0), "baseline": vs, "learned": vs["reference_beats_it"]}


def run(datasets=quality.DATASETS, targets=TARGETS, images: int = quality.IMAGES, cache: str | None = None,
        resolution: int | None = None, train_steps: int | None = None, seed: int | None = None) -> dict:
    """The quality benchmark's options, the same meaning (``quality.run``)."""
    scale = quality.scale_overrides(resolution, train_steps, seed)
    results = [measure(ds, target, images, scale,
                       Path(cache) / quality.cache_name(ds, target, images, resolution, train_steps, seed)
                       if cache else None)
               for ds in datasets for target in targets]
    return {"members": quality.MEMBERS, "images": images, "results": results}


def table(r: dict) -> str:
    lines = [f"one ensemble's noise per image ({r['members']} members, two draws of the same weights, "
             f"{r['images']} test images)"]
    for x in r["results"]:
        (a, b), base = x["draws"], x["baseline"]
        lines.append(
            f"  {x['dataset']} / {x['target']} ({x['resolution']} px, {x['train_steps']} training steps, seed "
            f"{x['seed']}; {x['sampler']} {x['steps']} steps): IoU {a['iou']:.3f} / {b['iou']:.3f}, ECE "
            f"{a['ece']:.3f} / {b['ece']:.3f}; {base['method']} {base['iou']:.3f}"
            f"{'' if x['learned'] else ' (not beaten: nothing learned to measure)'}; draw-to-draw SD "
            f"{x['draw_sd_points']:.1f} pt, one ensemble's noise {x['noise_per_draw_points']:.1f} pt per image, "
            f"+-1 pt between two draws needs {x['images_for_1pt']} images (n = {x['n_images']})")
    return "\n".join(lines)
