"""``train_trial(config, report=None) -> TrialResult``: one trial from config to metrics, usable with or without Ray.

Seeds everything; AdamW; EMA weights (with the usual (1 + n) / (10 + n) warm-up of the decay) are what is
validated and evaluated; gradient clipping; optional bf16 autocast and channels_last; a checkpoint at every
validation (model, EMA, optimiser, samplers, RNG states) that ``resume_from`` continues bit-identically on CPU;
validation on the val split with a fast DDIM sampler, best-EMA selection and early stopping on val only; final
evaluation of the best EMA weights on the test split (``eval.test_max_images`` caps it with a seeded subset spread
over all cases, never the first N); the analysis curves; NaN/inf loss ends the trial with
status ``nan_loss`` instead of raising.

``data.retrain`` trains on train + val, so validation cannot select anything: the final EMA weights are
evaluated (``selection = "final_ema"``; early stopping is refused in the config). The paper's protocol is to set
``train.steps`` to the best step of the matching non-retrain run (its ``best_step``).

Curves: the mask error over t of the model with its own input (E2: with the image; E3: without); an E2 model
trained with condition dropout also gives its mask error with the null image. The conditioning comparison of the
paper pairs an E2 trial with the matching E3 trial (``diffseg.studies.export``), never an E2 model fed an image it
never saw. The training loss over t is binned on log-spaced edges (dense near t = 0) over the last
(1 - ``train.loss_curve_from``) of training. E1/E2 report IoU and ECE for the first N members at every
N in ``ENSEMBLE_SIZES`` up to the ensemble size (``test_iou_n{N}``, ``test_ece_n{N}``, and the grey-level mean's
``test_ece_softmean_n{N}``): the vote fraction of N members takes N + 1 values, so ECE depends on N.
``train.keep_checkpoints`` keeps the EMA weights at those steps (``ema_checkpoints/step{N}.pt``) for analyses
after training (``diffseg.analysis.loss_over_t``).
"""

from __future__ import annotations

import copy
import dataclasses
import pickle
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data import BatchSampler, load_dataset, spread_subset, to_tensors
from ..files import atomic_path
from ..masks import SOFT, VOTE, ensemble_summary
from ..metrics import ece, iou
from ..models import REFERENCE_ARCHITECTURES, count_params
from . import build
from .config import TrialConfig
from .evaluate import per_image_metrics, reliability, save_gallery, summarise
from .kinds import SELECTION
from .modes import MODES, Mode, sample_blocks
from .result import (
    BEST_VAL,
    CHECKPOINT,
    CURVES,
    EARLY_STOPPED,
    EMA_CHECKPOINTS,
    FINAL_EMA,
    FINAL_ENSEMBLE,
    NAN_LOSS,
    OK,
    TRAIN_LOSS,
    TRAIN_LOSS_WEIGHTED,
    TRAIN_STEPS,
    TRAINING_PHASES,
    VALIDATION,
    WEIGHTS_FILE,
    Curve,
    TrialResult,
)

Report = Callable[[dict[str, Any], str | None], None]
Log = Callable[[dict[str, float], int], None]  # (metrics, step): the training loss every train.log_every steps
ENSEMBLE_SIZES = (1, 2, 3, 5, 10, 15, 25)


def ensemble_size_metrics(members: torch.Tensor, gts: torch.Tensor, n_bins: int, rule: str = VOTE
                          ) -> dict[str, float]:
    """Mean per-image IoU and ECE of the ensemble of the first N members, for every N of ``ENSEMBLE_SIZES`` up to
    the ensemble size (and the full size), with ``rule``'s probability and with the grey-level mean."""
    out = {}
    g = gts > 0
    for n in sorted({k for k in ENSEMBLE_SIZES if k < members.shape[1]} | {members.shape[1]}):
        mean, _, seg = ensemble_summary(members[:, :n], dim=1, rule=rule)
        soft, _, _ = ensemble_summary(members[:, :n], dim=1, rule=SOFT)
        out[f"test_iou_n{n}"] = float(iou(seg, g).mean())
        out[f"test_ece_n{n}"] = float(np.mean([float(ece(mean[i], g[i], n_bins)) for i in range(len(g))]))
        out[f"test_ece_softmean_n{n}"] = float(np.mean([float(ece(soft[i], g[i], n_bins)) for i in range(len(g))]))
    return out


def loss_bin_edges(T: int, n: int) -> list[int]:
    """Bin edges over [0, T) for the training loss over t: [0, 1) then log-spaced edges up to T, so the small-t
    range (where the paper reports a dip below t = 50) is resolved; at most n bins."""
    edges = np.unique(np.round(np.geomspace(1, T, n)).astype(int))
    return [0, *edges[edges < T].tolist(), T]


class UnsafeCheckpoint(ValueError):
    """A checkpoint that holds anything but tensors and plain data (it could run code when unpickled)."""


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A trial checkpoint, loaded with ``weights_only=True``: only tensors and plain containers/numbers/strings,
    never arbitrary objects, so a planted file cannot run code on the nodes that resume from it."""
    try:
        return torch.load(path, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UnsafeCheckpoint(f"{path}: refused to load a checkpoint holding objects other than tensors and plain "
                               f"data ({str(exc).splitlines()[0]}); it was not written by diffseg, or was "
                               "tampered with") from None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - seeds third-party code using the legacy global RNG
    torch.manual_seed(seed)


def t_grid(T: int, points: int) -> list[int]:
    return sorted(set(np.linspace(0, T - 1, points).round().astype(int).tolist()))


class Trial:
    """State of one trial; ``run()`` does the work. Split from ``train_trial`` so tests can reach the parts."""

    def __init__(self, cfg: TrialConfig, report: Report | None = None, resume_from: str | Path | None = None,
                 log: Log | None = None):
        self.cfg = cfg.validate()
        self.report, self.log = report, log
        self.resume_from = Path(resume_from) if resume_from else None
        self.checkpoint_dir = self.resume_from  # the latest checkpoint: this run's, else the one resumed from
        self.mode: Mode = MODES[cfg.experiment]
        self.kind = self.mode.kind
        self.out = Path(cfg.output_dir) if cfg.output_dir else Path(tempfile.mkdtemp(prefix="diffseg-trial-"))
        self.out.mkdir(parents=True, exist_ok=True)
        self.device = build.device(cfg)
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        seed_everything(cfg.seed)
        d = cfg.data
        self.ds = load_dataset(d.dataset, build.prep(cfg), d.data_root, d.cache_dir)
        if self.ds.images is None and self.kind.needs_images:
            raise ValueError(f"dataset {d.dataset!r} has masks only: experiment {cfg.experiment} needs images")
        self.splits = self.ds.splits(d.split_seed, d.val_fraction, d.test_fraction, d.retrain)
        for name in ("train", "val", "test"):
            if len(self.splits[name]) == 0:
                raise ValueError(f"dataset {d.dataset!r}: the {name} split is empty ({len(self.ds)} samples)")
        self.ctx = build.diffusion_context(cfg)
        self.schedule = self.ctx.schedule
        self.model = build.model(cfg, 3 if self.ds.images is None else self.ds.images.shape[-1])
        self.model.to(self.device)
        if cfg.train.channels_last and self.device.type == "cuda":
            self.model.to(memory_format=torch.channels_last)
        self.ema = build.ema(cfg, self.model)
        self.opt = build.optimizer(cfg, self.model)
        self.batches = BatchSampler(self.ds, self.splits["train"], cfg.train.batch_size, cfg.seed + 2,
                                    build.augment(cfg))
        self.g = torch.Generator(device=self.device).manual_seed(cfg.seed + 1)
        self.loss_edges = torch.tensor(loss_bin_edges(cfg.diffusion.T, cfg.eval.loss_bins))
        self.loss_bins = torch.zeros(3, len(self.loss_edges) - 1, dtype=torch.float64)  # eps-mse, weighted, count
        self.step = 0
        self.history: list[dict[str, float]] = []
        self.best: dict[str, Any] = {"value": None, "step": 0, "ema": None}
        self.bad_validations = 0
        # where this invocation's time goes (seconds; a resumed trial counts from its resume)
        self.timing = dict.fromkeys(TRAINING_PHASES, 0.0)

    # --- state ---------------------------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {
            "step": self.step, "model": self.model.state_dict(), "ema": self.ema.state_dict(),
            "opt": self.opt.state_dict(), "batches": self.batches.state(), "g": self.g.get_state(),
            "torch_rng": torch.get_rng_state(), "ts_sampler": self.ctx.sampler.state_dict(),
            "loss_bins": self.loss_bins.clone(), "history": copy.deepcopy(self.history),
            "best": {"value": self.best["value"], "step": self.best["step"], "ema": self.best["ema"]},
            "bad_validations": self.bad_validations, "config": self.cfg.to_dict(),
        }

    def load_state(self, st: dict[str, Any]) -> None:
        self.step = st["step"]
        self.model.load_state_dict(st["model"])
        self.ema.load_state_dict(st["ema"])
        self.opt.load_state_dict(st["opt"])
        self.batches.load_state(st["batches"])
        self.g.set_state(st["g"])
        torch.set_rng_state(st["torch_rng"])
        self.ctx.sampler.load_state_dict(st["ts_sampler"])
        self.loss_bins = st["loss_bins"].clone()
        self.history = st["history"]
        self.best = dict(st["best"])
        self.bad_validations = st["bad_validations"]

    def save_checkpoint(self) -> Path:
        ckpt = self.out / "checkpoint"
        ckpt.mkdir(exist_ok=True)
        with atomic_path(ckpt / "state.pt") as tmp:
            torch.save(self.state(), tmp)
        self.checkpoint_dir = ckpt
        return ckpt

    def keep_ema(self) -> Path:
        """The EMA weights of this step, kept for analyses after training (``EMA_CHECKPOINTS/step{N}.pt``)."""
        path = self.out / EMA_CHECKPOINTS / f"step{self.step}.pt"
        path.parent.mkdir(exist_ok=True)
        with atomic_path(path) as tmp:
            torch.save({"step": self.step, "ema": self.ema.module.state_dict(), "config": self.cfg.to_dict()}, tmp)
        return path

    # --- training ------------------------------------------------------------------------------------------------

    def _autocast(self):
        enabled = self.cfg.train.bf16
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def _batch(self):
        images, masks = self.batches.next()
        images = images.to(self.device) if images is not None else None
        masks = masks.to(self.device)
        if self.cfg.train.channels_last and self.device.type == "cuda" and images is not None:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, masks

    def train_step(self) -> float:
        images, masks = self._batch()
        self.model.train()
        with self._autocast():
            out = self.mode.train_step(self.model, self.ctx, images, masks, self.g)
        loss = out.loss.mean()
        if not torch.isfinite(loss):
            return float("nan")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.train.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip)
        self.opt.step()
        self.ema.update_parameters(self.model)
        if out.t is not None:
            self.ctx.sampler.update(out.t.cpu(), out.weighted.detach().cpu())
            if self.step >= self.cfg.train.loss_curve_from * self.cfg.train.steps:
                bins = torch.bucketize(out.t.cpu(), self.loss_edges, right=True) - 1
                self.loss_bins[0].index_add_(0, bins, out.eps_mse.detach().double().cpu())
                self.loss_bins[1].index_add_(0, bins, out.weighted.detach().double().cpu())
                self.loss_bins[2].index_add_(0, bins, torch.ones_like(bins, dtype=torch.float64))
        return float(loss.detach())

    # --- evaluation ------------------------------------------------------------------------------------------------

    def _split_tensors(self, split: str, limit: int | None):
        idx = spread_subset(self.splits[split], self.ds.case_ids, limit, self.cfg.data.split_seed)
        images, masks = to_tensors(self.ds, idx)
        if images is None:
            images = torch.zeros(masks.shape[0], 3, *masks.shape[-2:])
        return idx, images.to(self.device), masks.to(self.device)

    @torch.no_grad()
    def predict(self, model, images, masks, n: int, steps: int, seed: int) -> torch.Tensor:
        ev = self.cfg.eval
        ev_local = dataclasses.replace(ev, steps=steps)
        g = torch.Generator(device=self.device).manual_seed(seed)
        if self.cfg.model.architecture in REFERENCE_ARCHITECTURES:
            n = 1
        outs: dict[int, list[torch.Tensor]] = {}
        model.eval()
        with self._autocast():
            for a, b, m, e in sample_blocks(images.shape[0], n):
                outs.setdefault(a, []).append(
                    self.mode.predict(model, self.ctx, images[a:b], masks[a:b], e - m, ev_local, g).float())
        return torch.cat([torch.cat(members, dim=1) for members in outs.values()])

    @torch.no_grad()
    def x0_errors(self, model, split: str, conditioned: bool, grid: list[int], limit: int, seed: int) -> list[float]:
        _, images, masks = self._split_tensors(split, limit)
        x0, cond = self.mode.split_batch(images, masks)
        if not conditioned:
            cond = torch.zeros_like(cond)
        g = torch.Generator(device=self.device).manual_seed(seed)
        model.eval()
        with self._autocast():
            return self.mode.x0_error(model, self.ctx, x0, cond, grid, g)

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        ev = self.cfg.eval
        model = self.ema.module
        name = SELECTION[self.cfg.experiment].metric
        if self.kind.segments:
            _, images, masks = self._split_tensors("val", ev.val_max_images)
            members = self.predict(model, images, masks, ev.val_ensemble, ev.val_steps, self.cfg.seed + 3)
            _, _, seg = ensemble_summary(members, dim=1, rule=self.mode.probability)
            return {name: float(iou(seg, masks > 0).mean())}
        grid = t_grid(self.ctx.T, min(10, ev.curve_points))
        errs = self.x0_errors(model, "val", self.mode.conditioned, grid, ev.val_max_images, self.cfg.seed + 3)
        return {name: float(np.mean(errs))}

    def _improved(self, value: float) -> bool:
        return SELECTION[self.cfg.experiment].better(value, self.best["value"])

    # --- run -------------------------------------------------------------------------------------------------------

    def run(self) -> TrialResult:
        t0 = time.perf_counter()
        cfg = self.cfg
        if self.resume_from is not None:
            self.load_state(load_checkpoint(self.resume_from / "state.pt"))
        status = OK
        losses: list[float] = []  # since the last validation
        window: list[float] = []  # since the last train-loss log
        clock = self.timing
        while self.step < cfg.train.steps:
            t = time.perf_counter()
            loss = self.train_step()
            clock[TRAIN_STEPS] += time.perf_counter() - t
            self.step += 1
            if not np.isfinite(loss):
                status = NAN_LOSS
                break
            losses.append(loss)
            window.append(loss)
            if self.step in (cfg.train.keep_checkpoints or ()):
                self.keep_ema()
            if self.log is not None and self.step % cfg.train.log_every == 0:
                self.log({"train_loss": float(np.mean(window))}, self.step)
                window = []
            if self.step % cfg.train.val_every == 0 or self.step == cfg.train.steps:
                t = time.perf_counter()
                metrics = {"step": self.step, "train_loss": float(np.mean(losses)) if losses else float("nan"),
                           **self.validate()}
                clock[VALIDATION] += time.perf_counter() - t
                losses = []
                value = metrics[SELECTION[cfg.experiment].metric]
                if cfg.data.retrain or self._improved(value):  # retrain: val was trained on, keep the latest
                    self.best = {"value": value, "step": self.step,
                                 "ema": {k: v.detach().clone() for k, v in self.ema.module.state_dict().items()}}
                    self.bad_validations = 0
                else:
                    self.bad_validations += 1
                self.history.append(metrics)
                t = time.perf_counter()
                ckpt = self.save_checkpoint()
                clock[CHECKPOINT] += time.perf_counter() - t
                if self.report is not None:
                    self.report(dict(metrics), str(ckpt))
                if cfg.train.patience is not None and self.bad_validations >= cfg.train.patience:
                    status = EARLY_STOPPED
                    break
        return self.finish(status, time.perf_counter() - t0)

    def finish(self, status: str, train_time: float) -> TrialResult:
        cfg, ev = self.cfg, self.cfg.eval
        result = TrialResult(
            status=status, config=cfg.to_dict(), dataset=cfg.data.dataset, dataset_hash=self.ds.dataset_hash,
            step=self.step, n_params=count_params(self.model), history=self.history,
            selection_metric=SELECTION[cfg.experiment].metric, best_step=self.best["step"],
            best_val=self.best["value"], train_time_s=train_time, selection=FINAL_EMA if cfg.data.retrain else BEST_VAL,
            output_dir=str(self.out), schedule=self.schedule.describe(), threads=torch.get_num_threads(),
            timing=self.timing)
        if status == NAN_LOSS or self.best["ema"] is None:
            return result
        model = copy.deepcopy(self.ema.module)
        model.load_state_dict(self.best["ema"])
        with atomic_path(self.out / WEIGHTS_FILE) as tmp:  # the weights the test metrics below belong to
            torch.save(self.best["ema"], tmp)
        result.artifacts["weights"] = str(self.out / WEIGHTS_FILE)
        t_eval = time.perf_counter()
        if self.kind.segments:
            idx, images, masks = self._split_tensors("test", ev.test_max_images)
            members = self.predict(model, images, masks, ev.ensemble, ev.steps, cfg.seed + 4)
            rule = self.mode.probability
            rows = per_image_metrics(members.cpu(), masks.cpu(), ev.ece_bins, rule)
            for i, r in zip(idx.tolist(), rows, strict=True):
                r["image_id"] = f"{self.ds.case_ids[i]}#{i}"
                r["case_id"] = self.ds.case_ids[i]
            mean, _, _ = ensemble_summary(members.cpu(), dim=1, rule=rule)
            result.metrics = summarise(rows, mean, masks.cpu(), ev.ece_bins)
            result.metrics["test_cases"] = float(len({r["case_id"] for r in rows}))
            result.metrics.update(ensemble_size_metrics(members.cpu(), masks.cpu(), ev.ece_bins, rule))
            result.per_image = rows
            result.reliability = reliability(mean, masks.cpu(), ev.ece_bins)
            gallery = save_gallery(self.out / "gallery.png", images.cpu(), masks.cpu(), members.cpu(), ev.gallery,
                                   rule=rule)
            if gallery:
                result.artifacts["gallery"] = str(gallery)
        self.timing[FINAL_ENSEMBLE] = time.perf_counter() - t_eval
        t_curves = time.perf_counter()
        if self.mode.diffusion:
            grid = t_grid(self.ctx.T, ev.curve_points)
            flags = [self.mode.conditioned] + ([False] if self.ctx.cond_dropout > 0 else [])
            for cond in flags:
                errs = self.x0_errors(model, "test", cond, grid, ev.curve_max_images, cfg.seed + 5)
                result.curves.append(Curve(self.kind.curve, cond, grid, errs))
            counts = self.loss_bins[2]
            lo, hi = self.loss_edges[:-1].double(), self.loss_edges[1:].double() - 1
            centres = ((lo + hi) / 2).tolist()  # mean step of each bin
            keep = counts > 0
            for k, kind in ((0, TRAIN_LOSS), (1, TRAIN_LOSS_WEIGHTED)):
                vals = (self.loss_bins[k] / counts.clamp(min=1))[keep].tolist()
                result.curves.append(Curve(kind, self.mode.conditioned,
                                           [c for c, m in zip(centres, keep.tolist(), strict=True) if m], vals))
            if not self.kind.segments:
                result.metrics["test_x0_error"] = float(np.mean(result.curves[0].value))
        result.metrics["best_val"] = float(self.best["value"])
        self.timing[CURVES] = time.perf_counter() - t_curves
        result.eval_time_s = time.perf_counter() - t_eval
        if self.checkpoint_dir is not None:
            result.artifacts["checkpoint"] = str(self.checkpoint_dir)
        return result


def train_trial(config: TrialConfig | dict[str, Any], report: Report | None = None,
                resume_from: str | Path | None = None, log: Log | None = None) -> TrialResult:
    """Run one trial. ``config``: a TrialConfig or a (nested or dotted) dict. ``report(metrics, checkpoint_dir)``
    is called at every validation (the history's ``train_loss`` is the mean since the previous validation),
    ``log(metrics, step)`` every ``train.log_every`` steps with the mean training loss of those steps; the same
    numbers come back in the result with curves and artifact paths."""
    cfg = config if isinstance(config, TrialConfig) else TrialConfig.from_dict(config)
    return Trial(cfg, report, resume_from, log).run()
