"""The three diffusion segmentation architectures on the shared UNet. Every model maps (x_t, t, cond) to the
network output: x_t is the noisy mask (or image, for E4), cond the image or the null input (all zeros).

- EnsemDiff (Wolleb et al. 2022): cond concatenated to x_t at every step.
- SegDiff (Amit et al. 2021): F(x_t) + G(I) after the first conv, G an RRDB encoder at full resolution with no
  time input (as the official code); ``multilevel`` also adds pooled G features after every encoder level (the
  variant the analysis paper describes).
- MedSegDiff (Wu et al. 2023, paper version): a second encoder for the image; after each chosen encoder level the
  mask features pass an FF-Parser (learnable complex weights on the 2-D real FFT) and condition the image
  features by dynamic conditional encoding LN(m_I) * LN(m_x') * m_I; the image encoder's output is added to the
  mask path at the bottleneck. ``aux_head`` (ablation, off by default): official v1's sigmoid head on the image
  branch, trained with 10 x MSE against the mask.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import Downsample, ResBlock
from .unet import UNet, UNetConfig


class EnsemDiff(nn.Module):
    def __init__(self, cfg: UNetConfig, data_ch: int, cond_ch: int, resolution: int, time_scale: float = 1.0):
        super().__init__()
        cfg.check_resolution(resolution)
        self.unet = UNet(cfg, data_ch + cond_ch, data_ch, time_scale)

    def forward(self, x, t, cond):
        return self.unet(torch.cat([cond, x], 1), t)


class ResidualDenseBlock(nn.Module):
    """ESRGAN's 5-conv dense block (growth ``gc``), residual scaled by 0.2."""

    def __init__(self, nf: int, gc: int):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(nf + i * gc, gc if i < 4 else nf, 3, padding=1) for i in range(5))

    def forward(self, x):
        feats = [x]
        for i, conv in enumerate(self.convs):
            out = conv(torch.cat(feats, 1))
            if i < 4:
                feats.append(F.leaky_relu(out, 0.2))
        return x + 0.2 * out


class RRDB(nn.Module):
    def __init__(self, nf: int, gc: int):
        super().__init__()
        self.blocks = nn.Sequential(*(ResidualDenseBlock(nf, gc) for _ in range(3)))

    def forward(self, x):
        return x + 0.2 * self.blocks(x)


class RRDBEncoder(nn.Module):
    """SegDiff's G: conv_first, ``n_blocks`` RRDBs, trunk conv, HR conv, conv_last; LeakyReLU 0.2, no norm."""

    def __init__(self, cond_ch: int, nf: int, out_ch: int, n_blocks: int):
        super().__init__()
        gc = max(8, nf // 2)
        self.first = nn.Conv2d(cond_ch, nf, 3, padding=1)
        self.body = nn.Sequential(*(RRDB(nf, gc) for _ in range(n_blocks)))
        self.trunk = nn.Conv2d(nf, nf, 3, padding=1)
        self.hr = nn.Conv2d(nf, nf, 3, padding=1)
        self.last = nn.Conv2d(nf, out_ch, 3, padding=1)

    def forward(self, x):
        f = self.first(x)
        f = f + self.trunk(self.body(f))
        return self.last(F.leaky_relu(self.hr(f), 0.2))


class SegDiff(nn.Module):
    def __init__(self, cfg: UNetConfig, data_ch: int, cond_ch: int, resolution: int, time_scale: float = 1.0,
                 rrdb_blocks: int = 2, multilevel: bool = False):
        super().__init__()
        cfg.check_resolution(resolution)
        self.unet = UNet(cfg, data_ch, data_ch, time_scale)
        # the official G works with 64 features (conv_first 3 -> 64) and projects to the UNet's width at the end
        self.encoder = RRDBEncoder(cond_ch, min(64, cfg.base_channels), cfg.base_channels, rrdb_blocks)
        self.level_proj = (nn.ModuleList(nn.Conv2d(cfg.base_channels, w, 1) for w in cfg.widths())
                           if multilevel else None)

    def forward(self, x, t, cond):
        g = self.encoder(cond)
        hook = None
        if self.level_proj is not None:
            def hook(i, h):
                pooled = F.adaptive_avg_pool2d(g, h.shape[-2:])
                return h + self.level_proj[i](pooled)
        return self.unet(x, t, first_add=g, level_hook=hook)


class ChannelLayerNorm(nn.Module):
    """LayerNorm over channels at every pixel, with a learnable per-channel gain."""

    def __init__(self, ch: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.g = nn.Parameter(torch.ones(1, ch, 1, 1))

    def forward(self, x):
        var, mean = torch.var_mean(x, dim=1, unbiased=False, keepdim=True)
        return (x - mean) * torch.rsqrt(var + self.eps) * self.g


class FFParser(nn.Module):
    """x' = irfft2(A * rfft2(x)) with a learnable complex A of shape (C, H, W//2 + 1), initialised to identity."""

    def __init__(self, ch: int, h: int, w: int):
        super().__init__()
        weight = torch.zeros(ch, h, w // 2 + 1, 2)
        weight[..., 0] = 1.0
        self.weight = nn.Parameter(weight)
        self.size = (h, w)

    def forward(self, x):
        dtype = x.dtype
        # contiguous: model.to(memory_format=channels_last) (train.channels_last, the paper budget) also re-lays
        # this 4-D parameter, and view_as_complex needs its last dimension dense
        spec = torch.fft.rfft2(x.float(), norm="ortho") * torch.view_as_complex(self.weight.contiguous())
        return torch.fft.irfft2(spec, s=self.size, norm="ortho").to(dtype)


class MedSegDiff(nn.Module):
    def __init__(self, cfg: UNetConfig, data_ch: int, cond_ch: int, resolution: int, time_scale: float = 1.0,
                 levels: tuple[int, ...] | None = None, aux_head: bool = False):
        super().__init__()
        cfg.check_resolution(resolution)
        self.unet = UNet(cfg, data_ch, data_ch, time_scale)
        widths = cfg.widths()
        self.levels = tuple(range(len(widths))) if levels is None else tuple(levels)
        bad = [lv for lv in self.levels if not 0 <= lv < len(widths)]
        if bad:
            raise ValueError(f"medsegdiff levels {bad} outside 0..{len(widths) - 1}")
        self.img_in = nn.Conv2d(cond_ch, cfg.base_channels, 3, padding=1)
        self.img_levels = nn.ModuleList()
        ch = cfg.base_channels
        for i, w in enumerate(widths):
            blocks = nn.ModuleList()
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResBlock(ch, w, None, cfg.dropout))
                ch = w
            self.img_levels.append(nn.ModuleDict({
                "blocks": blocks,
                "down": Downsample(ch) if i < len(widths) - 1 else nn.Identity(),
            }))
        self.ff = nn.ModuleDict()
        self.ln_img = nn.ModuleDict()
        self.ln_mask = nn.ModuleDict()
        for lv in self.levels:
            r = resolution // 2**lv
            self.ff[str(lv)] = FFParser(widths[lv], r, r)
            self.ln_img[str(lv)] = ChannelLayerNorm(widths[lv])
            self.ln_mask[str(lv)] = ChannelLayerNorm(widths[lv])
        self.bottleneck = nn.Conv2d(widths[-1], widths[-1], 1)
        self.aux = nn.Sequential(nn.Conv2d(widths[-1], 1, 1)) if aux_head else None
        self._aux_logits: torch.Tensor | None = None

    def forward(self, x, t, cond):
        state = {"img": self.img_in(cond)}

        def hook(i, h_mask):
            img = state["img"]
            for blk in self.img_levels[i]["blocks"]:
                img = blk(img)
            key = str(i)
            if key in self.ff:
                mx = self.ff[key](h_mask)
                img = self.ln_img[key](img) * self.ln_mask[key](mx) * img
            state["img"] = self.img_levels[i]["down"](img)
            return h_mask

        out = self.unet(x, t, level_hook=hook, bottleneck_add=lambda: self.bottleneck(state["img"]))
        if self.aux is not None:
            self._aux_logits = F.interpolate(self.aux(state["img"]), size=x.shape[-2:], mode="bilinear",
                                             align_corners=False)
        return out

    def aux_logits(self) -> torch.Tensor | None:
        """Logits of the auxiliary head from the last forward (ablation only)."""
        return self._aux_logits
