"""The shared UNet backbone (Ho et al. 2020; Nichol & Dhariwal 2021 layout), sized entirely by ``UNetConfig``.

Levels i = 0..L-1 run at resolution R / 2^i with ``base * mult[i]`` channels and ``num_res_blocks`` residual
blocks each; the ``attn_levels`` lowest levels (and the middle block) add self-attention. Conditioning
architectures use three hooks: ``first_add`` (added after the first conv), ``level_hook(i, h) -> h`` (called after
the blocks of encoder level i, before downsampling) and ``bottleneck_add`` (added before the middle block).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .blocks import Attention, Downsample, ResBlock, Upsample, norm, timestep_embedding


@dataclass(frozen=True)
class UNetConfig:
    base_channels: int = 32
    channel_mult: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    attn_levels: int = 1  # attention at this many lowest-resolution levels
    heads: int = 1
    dropout: float = 0.0

    def widths(self) -> list[int]:
        return [self.base_channels * m for m in self.channel_mult]

    def check_resolution(self, resolution: int) -> None:
        factor = 2 ** (len(self.channel_mult) - 1)
        if resolution % factor:
            raise ValueError(f"resolution {resolution} is not divisible by 2^(levels-1) = {factor}")


class UNet(nn.Module):
    def __init__(self, cfg: UNetConfig, in_ch: int, out_ch: int, time_scale: float = 1.0):
        super().__init__()
        self.cfg = cfg
        self.time_scale = time_scale
        ch0 = cfg.base_channels
        temb = 4 * ch0
        self.temb = nn.Sequential(nn.Linear(ch0, temb), nn.SiLU(), nn.Linear(temb, temb))
        self.inp = nn.Conv2d(in_ch, ch0, 3, padding=1)
        widths = cfg.widths()
        n = len(widths)
        attn_from = n - cfg.attn_levels
        self.down = nn.ModuleList()
        skip_ch = [ch0]
        ch = ch0
        for i, w in enumerate(widths):
            blocks = nn.ModuleList()
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResBlock(ch, w, temb, cfg.dropout))
                ch = w
                if i >= attn_from:
                    blocks.append(Attention(ch, cfg.heads))
                skip_ch.append(ch)
            level = nn.Module()
            level.blocks = blocks
            level.down = Downsample(ch) if i < n - 1 else None
            if level.down is not None:
                skip_ch.append(ch)
            self.down.append(level)
        self.mid = nn.ModuleList([ResBlock(ch, ch, temb, cfg.dropout), Attention(ch, cfg.heads),
                                  ResBlock(ch, ch, temb, cfg.dropout)])
        self.up = nn.ModuleList()
        for i, w in reversed(list(enumerate(widths))):
            blocks = nn.ModuleList()
            for _ in range(cfg.num_res_blocks + 1):
                blocks.append(ResBlock(ch + skip_ch.pop(), w, temb, cfg.dropout))
                ch = w
                if i >= attn_from:
                    blocks.append(Attention(ch, cfg.heads))
            level = nn.Module()
            level.blocks = blocks
            level.up = Upsample(ch) if i > 0 else None
            self.up.append(level)
        self.out = nn.Sequential(norm(ch), nn.SiLU(), nn.Conv2d(ch, out_ch, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)
        self.out_channels = out_ch

    def embed(self, t: torch.Tensor) -> torch.Tensor:
        return self.temb(timestep_embedding(t.float() * self.time_scale, self.cfg.base_channels))

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        first_add: torch.Tensor | None = None,
        level_hook: Callable[[int, torch.Tensor], torch.Tensor] | None = None,
        bottleneck_add: Callable[[], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        emb = self.embed(t)
        h = self.inp(x)
        if first_add is not None:
            h = h + first_add
        skips = [h]
        for i, level in enumerate(self.down):
            for blk in level.blocks:
                h = blk(h, emb)
                if isinstance(blk, ResBlock):
                    skips.append(h)
                else:
                    skips[-1] = h
            if level_hook is not None:
                h = level_hook(i, h)
            if level.down is not None:
                h = level.down(h)
                skips.append(h)
        if bottleneck_add is not None:
            h = h + bottleneck_add()
        for blk in self.mid:
            h = blk(h, emb)
        for level in self.up:
            for blk in level.blocks:
                if isinstance(blk, ResBlock):
                    h = blk(torch.cat([h, skips.pop()], 1), emb)
                else:
                    h = blk(h, emb)
            if level.up is not None:
                h = level.up(h)
        return self.out(h)
