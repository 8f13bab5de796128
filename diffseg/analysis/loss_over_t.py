"""The eps-loss over t measured post hoc on kept EMA checkpoints (``train.keep_checkpoints``), with the curve an
optimal mask denoiser would reach beside it, and the dip rule of finding (a) (``analysis.dip``).

Measurement: a fixed batch of training samples (the first ``images`` of a seeded permutation of the train split),
``draws`` noise draws per sample and t, the same noise for every checkpoint of a trial; t on a dense grid below 60
(every 2 steps) and a sparse one above (``loss_t_grid``). Per sample, draw and t the unweighted eps-space MSE
||eps_hat - eps||^2 (``diffusion.loss.eps_space_mse``: the same quantity the training loss curve bins). Intervals:
2.5 / 97.5 % quantiles of a two-way bootstrap over samples x draws.

Optimal curve (masks only): the eps error of the best estimate of eps given the noisy mask, SNR(t) x0-MMSE(t),
because eps_hat = (x_t - a x0_hat) / s gives ||eps_hat - eps||^2 = SNR ||x0_hat - x0||^2; x0-MMSE(t) is the
training-free fingerprint's mask error (``fingerprint.information``) of the train + val masks, times the prior's
error. It is near 0 for small t, peaks at mid t and falls to 0 at T. It is a proxy of a mask-only denoiser (an
E3 model; E2 with the image can do better), and not defined for image generation (E4).

``python -m diffseg.analysis.loss_over_t --runs OUT [--study S] [--json]`` writes
``OUT/exports/<study>/loss_over_t.parquet`` (one row per trial, checkpoint step and t) and
``loss_over_t_verdicts.parquet`` (one row per trial and checkpoint: the dip statistics and verdict).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..data import load_dataset
from ..diffusion import q_sample
from ..diffusion.loss import eps_space_mse
from ..diffusion.targets import make_target
from ..experiments import build
from ..experiments.config import TrialConfig
from ..experiments.kinds import EXPERIMENTS
from ..experiments.modes import MODES
from ..experiments.result import EMA_CHECKPOINTS
from ..experiments.train import load_checkpoint
from ..files import atomic_path
from ..fingerprint.core import fingerprint_masks, spec_for_trial
from ..fingerprint.information import prior_error
from ..folder import StudyFolder
from ..studies.schema import conform
from .dip import dip_verdict, two_way_bootstrap


def loss_t_grid(T: int) -> list[int]:
    """Every 2 steps on [0, 60), then a sparse grid up to T - 1."""
    sparse = [60, 70, 80, 90, 100, 125, 150, 175, 200, 250, 300, 400, 500, 600, 700, 800, 900, T - 1]
    return sorted({*range(0, min(60, T), 2), *(t for t in sparse if t < T)})


def optimal_eps_curve(cfg: TrialConfig, ds) -> np.ndarray:
    """SNR(t) * x0-MMSE(t) of the trial's train + val masks (the training-free estimate), over all T steps."""
    spec = spec_for_trial(cfg)
    sched = build.schedule(cfg)
    split = ds.splits(spec.split.split_seed, spec.split.val_fraction, spec.split.test_fraction)
    masks = np.asarray(ds.masks)[np.sort(np.concatenate([split["train"], split["val"]]))]
    tf = fingerprint_masks(masks, sched)["training_free"]
    return sched.snr.numpy() * np.asarray(tf["error"]) * prior_error(tf["prior_fg"])


@torch.no_grad()
def measure(model, cfg: TrialConfig, images, masks, t_grid: list[int], noise: torch.Tensor) -> np.ndarray:
    """eps-space MSE (samples, draws, len(t_grid)) with ``noise`` (draws, samples, C, H, W) fixed."""
    mode, ctx = MODES[cfg.experiment], build.diffusion_context(cfg)
    x0, cond = mode.split_batch(images, masks)
    out = np.zeros((x0.shape[0], noise.shape[0], len(t_grid)))
    model.eval()
    for j, t in enumerate(t_grid):
        tt = torch.full((x0.shape[0],), int(t), dtype=torch.long)
        for d in range(noise.shape[0]):
            x_t, a, s = q_sample(x0, tt, ctx.schedule, noise[d])
            native = (model(x_t, tt, cond).float() - make_target(x0, noise[d], a, s, ctx.target)).pow(2)
            out[:, d, j] = eps_space_mse(native.flatten(1).mean(1), tt, ctx.schedule, ctx.target).numpy()
    return out


def _fixed_batch(cfg: TrialConfig, ds, n: int):
    from ..data import to_tensors

    train = ds.splits(cfg.data.split_seed, cfg.data.val_fraction, cfg.data.test_fraction)["train"]
    idx = np.sort(np.random.default_rng(cfg.data.split_seed).permutation(train)[:n])
    images, masks = to_tensors(ds, idx)
    if images is None:
        images = torch.zeros(masks.shape[0], 3, *masks.shape[-2:])
    return images, masks


def analyse_trial(folder: Path, images: int = 32, draws: int = 16, seed: int = 0,
                  cache_dir: Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Curves and verdicts of every kept checkpoint of one trial folder."""
    files = sorted((folder / EMA_CHECKPOINTS).glob("step*.pt"), key=lambda p: int(p.stem.removeprefix("step")))
    curves, verdicts = [], []
    if not files:
        return pd.DataFrame(), pd.DataFrame()
    cfg = TrialConfig.from_dict(load_checkpoint(files[0])["config"])
    ds = load_dataset(cfg.data.dataset, build.prep(cfg), cfg.data.data_root, cache_dir)
    x_img, x_mask = _fixed_batch(cfg, ds, images)
    grid = loss_t_grid(cfg.diffusion.T)
    mode = MODES[cfg.experiment]
    x0, _ = mode.split_batch(x_img, x_mask)
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn((draws, *x0.shape), generator=g)  # the same noise for every checkpoint
    optimal = optimal_eps_curve(cfg, ds) if EXPERIMENTS[cfg.experiment].predicts == "mask" else None
    model = build.model(cfg, x_img.shape[1])
    for path in files:
        state = load_checkpoint(path)
        model.load_state_dict({k.removeprefix("module."): v for k, v in state["ema"].items()
                               if k != "n_averaged"})
        losses = measure(model, cfg, x_img, x_mask, grid, noise)
        point = losses.mean((0, 1))
        reps = two_way_bootstrap(losses, seed=seed)
        lo, hi = np.quantile(reps, [0.025, 0.975], axis=0)
        step = int(state["step"])
        for j, t in enumerate(grid):
            curves.append({"trial": folder.name, "experiment": cfg.experiment, "dataset": cfg.data.dataset,
                           "step": step, "t": t, "loss": point[j], "low": lo[j], "high": hi[j],
                           "optimal": float(optimal[t]) if optimal is not None else np.nan})
        verdicts.append({"trial": folder.name, "experiment": cfg.experiment, "dataset": cfg.data.dataset,
                         "step": step, "images": images, "draws": draws, **dip_verdict(np.asarray(grid), point,
                                                                                        reps)})
    return pd.DataFrame(curves), pd.DataFrame(verdicts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m diffseg.analysis.loss_over_t", description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=Path, required=True, help="a study folder (--out of run_study)")
    ap.add_argument("--study", default="long_training", help="export folder name under <runs>/exports/")
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--draws", type=int, default=16)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    runs = StudyFolder(a.runs)
    folders = [p.parent for p in runs.trial_dirs(f"*/{EMA_CHECKPOINTS}")]
    if not folders:
        print(f"error: {runs.root}: no trial folder holds {EMA_CHECKPOINTS}/ (train.keep_checkpoints)",
              file=sys.stderr)
        return 2
    parts = [analyse_trial(f, a.images, a.draws, cache_dir=runs.cache) for f in folders]
    curves = pd.concat([c for c, _ in parts], ignore_index=True)
    verdicts = pd.concat([v for _, v in parts], ignore_index=True)
    for name, df in (("loss_over_t", curves), ("loss_over_t_verdicts", verdicts)):
        with atomic_path(runs.export_table(a.study, name)) as tmp:
            conform(name, df).to_parquet(tmp, index=False)
    if a.json:
        print(json.dumps(verdicts.to_dict("records"), indent=1))
    else:
        print(verdicts[["trial", "step", "dip_depth", "dip_depth_low", "rise", "rise_low", "rise_high",
                        "verdict"]].to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
