"""A trained segmentation model applied to new images, with the training preprocessing: each image is cut into the
dataset's patches (the same physical size as in training, e.g. MoNuSeg's 64 um), each patch resized to the trial's
resolution with its resize filter, an ensemble drawn with the trial's sampler (or the one asked for), and the mean
foreground probability and the ensemble std resized back and stitched at the original size (overlaps averaged).
Memory is bounded: patches and members are drawn in blocks of at most ``modes.SAMPLES_PER_CALL`` samples, each
block's member probabilities reduced to running sums (float64, per patch) and stitched before the next block, so an
ensemble of any size costs the same; the stitched maps take 10 bytes per image pixel (two float32 maps and a uint16
overlap count), beside the caller's 3-byte RGB image.
E1 models (and the feed-forward references) give one member; E3/E4 models do not segment images and are refused.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..data.prepare import RESIZE, patch_boxes
from ..data.registry import get_spec
from ..masks import member_probs
from ..models import REFERENCE_ARCHITECTURES
from . import build
from .config import TrialConfig
from .kinds import FEED_FORWARD, SEGMENTING
from .modes import MODES, sample_blocks


class IncompatibleModel(ValueError):
    """The weights or config cannot segment images (wrong experiment, architecture or shapes)."""


@dataclass
class Prediction:
    probability: np.ndarray  # (H, W) float32 in [0, 1]: mean foreground probability of the members
    std: np.ndarray  # (H, W) float32 >= 0: std of the members' probabilities (the uncertainty map)
    mask: np.ndarray  # (H, W) bool: probability > 0.5
    members: int


class Predictor:
    def __init__(self, config: TrialConfig | dict[str, Any], weights: dict[str, torch.Tensor],
                 device: str = "auto"):
        cfg = config if isinstance(config, TrialConfig) else TrialConfig.from_dict(config)
        if cfg.experiment not in SEGMENTING:
            raise IncompatibleModel(f"a model trained as {cfg.experiment} does not segment images (only "
                                    f"{list(SEGMENTING)} models do)")
        self.cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, device=device))
        self.device = build.device(self.cfg)
        self.mode = MODES[cfg.experiment]
        self.ctx = build.diffusion_context(self.cfg)
        self.model = build.model(self.cfg, 3)
        try:
            self.model.load_state_dict(weights)
        except RuntimeError as exc:
            raise IncompatibleModel(f"the weights do not fit the configured {cfg.model.architecture} "
                                    f"({str(exc).splitlines()[0]})") from None
        self.model.to(self.device).eval()
        spec = get_spec(cfg.data.dataset, cfg.data.data_root) if ":" not in cfg.data.dataset else None
        self.patch = spec.patch_size() if spec is not None else None

    def _prepare(self, crop: np.ndarray) -> torch.Tensor:
        r = self.cfg.data.resolution
        img = np.asarray(Image.fromarray(crop).resize((r, r), RESIZE[self.cfg.data.image_resize]))
        return torch.from_numpy(np.array(img, dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1.0

    @torch.no_grad()
    def predict(self, image: np.ndarray, ensemble: int | None = None, steps: int | None = None,
                sampler: str | None = None, seed: int = 0) -> Prediction:
        """``image``: (H, W, 3) uint8 RGB at its original size."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}")
        ev = self.cfg.eval
        # another sampler than the trial's does not inherit the trial sampler's eta (DDIM's option only)
        ev = dataclasses.replace(ev, steps=steps or ev.steps, sampler=sampler or ev.sampler,
                                 eta=ev.eta if (sampler or ev.sampler) == ev.sampler else None)
        n = 1 if self.cfg.experiment == FEED_FORWARD and self.cfg.model.architecture in REFERENCE_ARCHITECTURES \
            else (ensemble or ev.ensemble)
        h, w = image.shape[:2]
        boxes = patch_boxes(h, w, self.patch)
        prob, unc = np.zeros((h, w), np.float32), np.zeros((h, w), np.float32)
        count = np.zeros((h, w), np.uint16)
        g = torch.Generator(device=self.device).manual_seed(seed)
        total = second = None
        for a, b, m, e in sample_blocks(len(boxes), n):
            if m == 0:
                batch = torch.stack([self._prepare(image[y : y + bh, x : x + bw])
                                     for y, x, bh, bw in boxes[a:b]]).to(self.device)
                masks = torch.zeros(batch.shape[0], 1, *batch.shape[-2:], device=self.device)
                total = second = 0.0
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.train.bf16):
                members = self.mode.predict(self.model, self.ctx, batch, masks, e - m, ev, g)
            p = member_probs(members.float(), self.mode.probability).double()
            total, second = total + p.sum(dim=1), second + p.pow(2).sum(dim=1)
            if e < n:
                continue
            mean = (total / n).clamp(0, 1)
            std = (second / n - mean.pow(2)).clamp_min(0).sqrt()  # population std over members, as in masks
            for (y, x, bh, bw), mu, sd in zip(boxes[a:b], mean[:, 0].cpu().numpy(), std[:, 0].cpu().numpy(),
                                              strict=True):
                prob[y : y + bh, x : x + bw] += _resize(mu, bw, bh)
                unc[y : y + bh, x : x + bw] += _resize(sd, bw, bh)
                count[y : y + bh, x : x + bw] += 1
        if len(boxes) > 1:  # overlaps averaged (one box covers the image once)
            np.divide(prob, count, out=prob)
            np.divide(unc, count, out=unc)
        del count
        np.clip(prob, 0, 1, out=prob)
        np.clip(unc, 0, None, out=unc)
        return Prediction(prob, unc, prob > 0.5, n)


def _resize(a: np.ndarray, w: int, h: int) -> np.ndarray:
    return np.asarray(Image.fromarray(a.astype(np.float32), mode="F").resize((w, h), Image.BILINEAR))
