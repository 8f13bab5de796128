"""Training batches straight from the prepared arrays (held in memory as tensors: no worker processes needed at
study resolutions). Images are scaled to [-1, 1] (channels first); masks to {-1, +1} (see ``diffseg.masks``).
Augmentation (off by default): random flips, 90-degree rotations and light colour jitter (brightness, contrast,
per-channel gain), applied per sample on the batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from ..masks import to_signed
from .prepare import PreparedDataset


@dataclass(frozen=True)
class AugmentConfig:
    enabled: bool = False
    flips: bool = True
    rot90: bool = True
    colour_jitter: float = 0.1  # max relative brightness / contrast / channel gain change


def to_tensors(ds: PreparedDataset, index: np.ndarray) -> tuple[torch.Tensor | None, torch.Tensor]:
    """(images (N, 3, R, R) float in [-1, 1] or None, masks (N, 1, R, R) in {-1, +1})."""
    idx = np.sort(np.asarray(index))
    masks = to_signed(torch.from_numpy(np.ascontiguousarray(ds.masks[idx]))).unsqueeze(1)
    if ds.images is None:
        return None, masks
    images = torch.from_numpy(np.ascontiguousarray(ds.images[idx])).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return images.contiguous(), masks


def augment(images: torch.Tensor | None, masks: torch.Tensor, cfg: AugmentConfig, g: torch.Generator):
    if not cfg.enabled:
        return images, masks
    pair = masks if images is None else torch.cat([images, masks], 1)
    n = pair.shape[0]
    out = pair.clone()
    if cfg.flips:
        fh = torch.rand(n, generator=g) < 0.5
        fv = torch.rand(n, generator=g) < 0.5
        out[fh] = out[fh].flip(-1)
        out[fv] = out[fv].flip(-2)
    if cfg.rot90:
        k = torch.randint(0, 4, (n,), generator=g)
        for r in range(1, 4):
            sel = k == r
            out[sel] = torch.rot90(out[sel], r, dims=(-2, -1))
    if images is None:
        return None, out
    img, m = out[:, :-1], out[:, -1:]
    if cfg.colour_jitter > 0:
        j = cfg.colour_jitter
        bright = (torch.rand(n, 1, 1, 1, generator=g) * 2 - 1) * j
        contrast = 1 + (torch.rand(n, 1, 1, 1, generator=g) * 2 - 1) * j
        gain = 1 + (torch.rand(n, img.shape[1], 1, 1, generator=g) * 2 - 1) * j / 2
        mean = img.mean(dim=(1, 2, 3), keepdim=True)
        img = ((img - mean) * contrast + mean) * gain + bright
        img = img.clamp(-1, 1)
    return img, m


class BatchSampler:
    """Endless shuffled batches (epoch-wise permutation) from one split, seeded; resumable via ``state``."""

    def __init__(self, ds: PreparedDataset, index: np.ndarray, batch_size: int, seed: int,
                 augment_cfg: AugmentConfig | None = None):
        if len(index) == 0:
            raise ValueError(f"dataset {ds.name!r}: the training split is empty")
        self.images, self.masks = to_tensors(ds, index)
        self.batch_size = batch_size
        self.aug = augment_cfg or AugmentConfig()
        self.g = torch.Generator().manual_seed(seed)
        self._perm = torch.empty(0, dtype=torch.long)
        self._pos = 0

    def __len__(self) -> int:
        return self.masks.shape[0]

    def next(self) -> tuple[torch.Tensor | None, torch.Tensor]:
        take = []
        need = self.batch_size
        while need > 0:
            if self._pos >= len(self._perm):
                self._perm = torch.randperm(len(self), generator=self.g)
                self._pos = 0
            chunk = self._perm[self._pos : self._pos + need]
            self._pos += len(chunk)
            need -= len(chunk)
            take.append(chunk)
        idx = torch.cat(take)
        imgs = None if self.images is None else self.images[idx]
        return augment(imgs, self.masks[idx], self.aug, self.g)

    def __iter__(self) -> Iterator[tuple[torch.Tensor | None, torch.Tensor]]:
        while True:
            yield self.next()

    def state(self) -> dict:
        return {"g": self.g.get_state(), "perm": self._perm.clone(), "pos": self._pos}

    def load_state(self, state: dict) -> None:
        self.g.set_state(state["g"])
        self._perm = state["perm"].clone()
        self._pos = int(state["pos"])
