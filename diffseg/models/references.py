"""Feed-forward references for E1: nnU-Net's 2-D PlainConvUNet (dynamic_network_architectures) planned as
nnU-Net plans it for the resolution, and SegFormer (transformers) with MiT-b0..b3 configurations.

nnU-Net 2-D plan (nnU-Net v2 ExperimentPlanner defaults): features 32 * 2^i capped at 512, 3x3 convs, stride 2
per stage until the bottleneck is 4 px (at most 7 stages in 2-D), 2 convs per stage in encoder and decoder,
InstanceNorm (eps 1e-5, affine), LeakyReLU(0.01), conv bias. Head: one logit (sigmoid) so every E1 model
shares the Dice + BCE loss; nnU-Net itself uses a 2-class softmax.
SegFormer: randomly initialised from the MiT config, or loaded from a local directory (``pretrained``) with
``local_files_only``; logits at 1/4 resolution are upsampled bilinearly.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import nn

MIT_VARIANTS = {
    "b0": {"hidden_sizes": [32, 64, 160, 256], "depths": [2, 2, 2, 2], "decoder_hidden_size": 256},
    "b1": {"hidden_sizes": [64, 128, 320, 512], "depths": [2, 2, 2, 2], "decoder_hidden_size": 256},
    "b2": {"hidden_sizes": [64, 128, 320, 512], "depths": [3, 4, 6, 3], "decoder_hidden_size": 768},
    "b3": {"hidden_sizes": [64, 128, 320, 512], "depths": [3, 4, 18, 3], "decoder_hidden_size": 768},
}


def nnunet_plan(resolution: int, max_features: int = 512, max_stages: int = 7, min_size: int = 4) -> dict:
    n_stages = min(max_stages, int(math.log2(resolution / min_size)) + 1)
    return {
        "n_stages": n_stages,
        "features_per_stage": [min(32 * 2**i, max_features) for i in range(n_stages)],
        "strides": [1] + [2] * (n_stages - 1),
        "kernel_sizes": [3] * n_stages,
        "n_conv_per_stage": [2] * n_stages,
        "n_conv_per_stage_decoder": [2] * (n_stages - 1),
    }


class NNUNet(nn.Module):
    def __init__(self, cond_ch: int, resolution: int):
        super().__init__()
        from dynamic_network_architectures.architectures.unet import PlainConvUNet

        self.plan = nnunet_plan(resolution)
        p = self.plan
        self.net = PlainConvUNet(
            input_channels=cond_ch, n_stages=p["n_stages"], features_per_stage=p["features_per_stage"],
            conv_op=nn.Conv2d, kernel_sizes=p["kernel_sizes"], strides=p["strides"],
            n_conv_per_stage=p["n_conv_per_stage"], num_classes=1,
            n_conv_per_stage_decoder=p["n_conv_per_stage_decoder"], conv_bias=True,
            norm_op=nn.InstanceNorm2d, norm_op_kwargs={"eps": 1e-5, "affine": True},
            nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True}, deep_supervision=False,
        )

    def forward(self, x, t, cond):
        return self.net(cond)


class SegFormer(nn.Module):
    def __init__(self, cond_ch: int, variant: str = "b0", pretrained: str | None = None):
        super().__init__()
        from transformers import SegformerConfig, SegformerForSemanticSegmentation

        if variant not in MIT_VARIANTS:
            raise ValueError(f"unknown SegFormer variant {variant!r}; allowed: {sorted(MIT_VARIANTS)}")
        if pretrained:
            self.net = SegformerForSemanticSegmentation.from_pretrained(
                pretrained, num_labels=1, ignore_mismatched_sizes=True, local_files_only=True)
        else:
            cfg = SegformerConfig(num_channels=cond_ch, num_labels=1, **MIT_VARIANTS[variant])
            self.net = SegformerForSemanticSegmentation(cfg)

    def forward(self, x, t, cond):
        logits = self.net(pixel_values=cond).logits
        return F.interpolate(logits, size=cond.shape[-2:], mode="bilinear", align_corners=False)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())



