"""Architectures keyed by the names search-space files use: ensemdiff, segdiff, medsegdiff (diffusion-capable)
and nnunet, segformer (feed-forward references, E1 only)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from .conditioning import EnsemDiff, MedSegDiff, SegDiff
from .references import NNUNet, SegFormer, count_params, nnunet_plan
from .unet import UNet, UNetConfig

DIFFUSION_ARCHITECTURES = ("ensemdiff", "segdiff", "medsegdiff")
REFERENCE_ARCHITECTURES = ("nnunet", "segformer")
ARCHITECTURES = DIFFUSION_ARCHITECTURES + REFERENCE_ARCHITECTURES


@dataclass(frozen=True)
class ModelConfig:
    architecture: str = "ensemdiff"
    base_channels: int = 32
    channel_mult: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    attn_levels: int = 1
    heads: int = 1
    dropout: float = 0.0
    rrdb_blocks: int = 2  # segdiff
    segdiff_multilevel: bool = False
    medsegdiff_levels: tuple[int, ...] | None = None  # None: every level
    medsegdiff_aux_head: bool = False
    segformer_variant: str = "b0"
    segformer_pretrained: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def unet(self) -> UNetConfig:
        return UNetConfig(self.base_channels, tuple(self.channel_mult), self.num_res_blocks, self.attn_levels,
                          self.heads, self.dropout)


def build_model(cfg: ModelConfig, data_ch: int, cond_ch: int, resolution: int, T: int) -> nn.Module:
    """Instantiate an architecture; time indices t in [0, T) are embedded as t * 1000 / T."""
    scale = 1000.0 / T
    arch = cfg.architecture
    if arch == "ensemdiff":
        return EnsemDiff(cfg.unet(), data_ch, cond_ch, resolution, scale)
    if arch == "segdiff":
        return SegDiff(cfg.unet(), data_ch, cond_ch, resolution, scale, cfg.rrdb_blocks, cfg.segdiff_multilevel)
    if arch == "medsegdiff":
        levels = None if cfg.medsegdiff_levels is None else tuple(cfg.medsegdiff_levels)
        return MedSegDiff(cfg.unet(), data_ch, cond_ch, resolution, scale, levels, cfg.medsegdiff_aux_head)
    if arch == "nnunet":
        return NNUNet(cond_ch, resolution)
    if arch == "segformer":
        return SegFormer(cond_ch, cfg.segformer_variant, cfg.segformer_pretrained)
    raise ValueError(f"unknown architecture {arch!r}; allowed: {list(ARCHITECTURES)}")


__all__ = [
    "ARCHITECTURES",
    "DIFFUSION_ARCHITECTURES",
    "REFERENCE_ARCHITECTURES",
    "ModelConfig",
    "UNet",
    "UNetConfig",
    "build_model",
    "count_params",
    "nnunet_plan",
]
