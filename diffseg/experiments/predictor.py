"""A trained segmentation model applied to new images, with the training preprocessing: each image is cut into the
dataset's patches (the same physical size as in training, e.g. MoNuSeg's 64 um), each patch resized to the trial's
resolution with its resize filter, an ensemble drawn with the trial's sampler (or the one asked for), and the mean
foreground probability and the ensemble std resized back and stitched at the original size (overlaps averaged).
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
from ..masks import ensemble_summary
from ..models import REFERENCE_ARCHITECTURES
from . import build
from .config import TrialConfig
from .kinds import FEED_FORWARD, SEGMENTING
from .modes import MODES


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
        batch = torch.stack([self._prepare(image[y : y + bh, x : x + bw]) for y, x, bh, bw in boxes]).to(self.device)
        masks = torch.zeros(batch.shape[0], 1, *batch.shape[-2:], device=self.device)
        g = torch.Generator(device=self.device).manual_seed(seed)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.train.bf16):
            members = self.mode.predict(self.model, self.ctx, batch, masks, n, ev, g).float().cpu()
        mean, std, _ = ensemble_summary(members, dim=1, rule=self.mode.probability)
        prob, unc, count = (np.zeros((h, w), np.float64) for _ in range(3))
        for (y, x, bh, bw), m, s in zip(boxes, mean[:, 0].numpy(), std[:, 0].numpy(), strict=True):
            prob[y : y + bh, x : x + bw] += _resize(m, bw, bh)
            unc[y : y + bh, x : x + bw] += _resize(s, bw, bh)
            count[y : y + bh, x : x + bw] += 1
        prob = np.clip(prob / count, 0, 1).astype(np.float32)
        unc = np.clip(unc / count, 0, None).astype(np.float32)
        return Prediction(prob, unc, prob > 0.5, n)


def _resize(a: np.ndarray, w: int, h: int) -> np.ndarray:
    return np.asarray(Image.fromarray(a.astype(np.float32), mode="F").resize((w, h), Image.BILINEAR))
