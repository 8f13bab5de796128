"""Architectures keyed by the names search-space files use: ensemdiff, segdiff, medsegdiff (diffusion-capable)
and nnunet, segformer (feed-forward references, E1 only)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from ..ranges import bounded
from ..registry import Registry
from .conditioning import EnsemDiff, MedSegDiff, SegDiff
from .references import NNUNet, SegFormer, count_params, nnunet_plan
from .unet import UNet, UNetConfig

REFERENCE_ARCHITECTURES = ("nnunet", "segformer")  # feed-forward: E1 only, one member


@dataclass(frozen=True)
class ModelConfig:
    architecture: str = "ensemdiff"
    base_channels: int = bounded(32, ge=1, le=4096)
    channel_mult: tuple[int, ...] = bounded((1, 2, 2), ge=1, le=64)
    num_res_blocks: int = bounded(1, ge=0, le=64)
    attn_levels: int = bounded(1, ge=0, le=16)
    heads: int = bounded(1, ge=1, le=128)
    dropout: float = bounded(0.0, ge=0.0, le=0.99)
    rrdb_blocks: int = bounded(2, ge=0, le=64)  # segdiff
    segdiff_multilevel: bool = False
    medsegdiff_levels: tuple[int, ...] | None = None  # None: every level
    medsegdiff_aux_head: bool = False
    segformer_variant: str = "b0"
    segformer_pretrained: str | None = None

    def unet(self) -> UNetConfig:
        return UNetConfig(self.base_channels, tuple(self.channel_mult), self.num_res_blocks, self.attn_levels,
                          self.heads, self.dropout)


# name -> factory(cfg, data_ch, cond_ch, resolution, time_scale) -> nn.Module
ARCHITECTURES: Registry[Callable[..., nn.Module]] = Registry("architecture")


@ARCHITECTURES.register("ensemdiff")
def _ensemdiff(cfg: ModelConfig, data_ch: int, cond_ch: int, resolution: int, scale: float) -> nn.Module:
    return EnsemDiff(cfg.unet(), data_ch, cond_ch, resolution, scale)


@ARCHITECTURES.register("segdiff")
def _segdiff(cfg: ModelConfig, data_ch: int, cond_ch: int, resolution: int, scale: float) -> nn.Module:
    return SegDiff(cfg.unet(), data_ch, cond_ch, resolution, scale, cfg.rrdb_blocks, cfg.segdiff_multilevel)


@ARCHITECTURES.register("medsegdiff")
def _medsegdiff(cfg: ModelConfig, data_ch: int, cond_ch: int, resolution: int, scale: float) -> nn.Module:
    levels = None if cfg.medsegdiff_levels is None else tuple(cfg.medsegdiff_levels)
    return MedSegDiff(cfg.unet(), data_ch, cond_ch, resolution, scale, levels, cfg.medsegdiff_aux_head)


@ARCHITECTURES.register("nnunet")
def _nnunet(cfg: ModelConfig, data_ch: int, cond_ch: int, resolution: int, scale: float) -> nn.Module:
    return NNUNet(cond_ch, resolution)


@ARCHITECTURES.register("segformer")
def _segformer(cfg: ModelConfig, data_ch: int, cond_ch: int, resolution: int, scale: float) -> nn.Module:
    return SegFormer(cond_ch, cfg.segformer_variant, cfg.segformer_pretrained)


DIFFUSION_ARCHITECTURES = tuple(a for a in ARCHITECTURES if a not in REFERENCE_ARCHITECTURES)


def build_model(cfg: ModelConfig, data_ch: int, cond_ch: int, resolution: int, T: int) -> nn.Module:
    """Instantiate an architecture; time indices t in [0, T) are embedded as t * 1000 / T."""
    return ARCHITECTURES.build(cfg.architecture, cfg, data_ch, cond_ch, resolution, 1000.0 / T)


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
