"""The four experiment modes as small strategy objects: what is noised, what conditions, the training loss, and
how an ensemble prediction is drawn.

- E1: x = fresh N(0, 1) noise in place of the noisy mask, t = T-1, the output is a logit map trained with
  soft Dice + BCE (equal weight); members differ only in that noise (references take the image alone, N = 1).
- E2: x_t = noised mask, conditioned on the image; loss from ``diffusion.loss`` (target, weighting, sampler).
  Optional condition dropout (``train.cond_dropout`` = p, an ablation): each sample's image is replaced by the
  null condition with probability p, so the one model also predicts masks without the image.
- E3: as E2 with the null input in place of the image: an all-zero image, the mean of images scaled to [-1, 1].
- E4: x_t = noised image (3 channels), null condition; eps prediction by default.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..diffusion import SAMPLERS, Schedule, TimestepSampler, make_target, q_sample
from ..diffusion.loss import eps_space_mse, weighted_loss
from ..diffusion.targets import to_x0
from .config import sampling_options
from .kinds import EXPERIMENTS, FEED_FORWARD, GENERATION, MASK_ONLY, SEGMENTATION, Experiment

Tensor = torch.Tensor
SAMPLES_PER_CALL = 256  # images x members drawn by one ``Mode.predict`` call: the bound on ensemble memory


def sample_blocks(images: int, members: int) -> list[tuple[int, int, int, int]]:
    """(first image, end image, first member, end member) blocks of at most ``SAMPLES_PER_CALL`` samples: whole
    ensembles of ``SAMPLES_PER_CALL // members`` images, or one image's ensemble in slices where it is larger."""
    per = min(members, SAMPLES_PER_CALL)
    size = max(1, SAMPLES_PER_CALL // per)
    return [(a, min(images, a + size), m, min(members, m + per)) for a in range(0, images, size)
            for m in range(0, members, per)]


@dataclass
class DiffusionContext:
    schedule: Schedule
    table: Tensor  # w_eps * c_target per step (float64)
    sampler: TimestepSampler
    target: str
    cond_dropout: float = 0.0  # E2 only: probability of training a sample with the null condition

    @property
    def T(self) -> int:
        return self.schedule.T


def null_condition(like: Tensor, channels: int = 3) -> Tensor:
    b, _, h, w = like.shape
    return like.new_zeros(b, channels, h, w)


def soft_dice_bce(logits: Tensor, mask01: Tensor) -> Tensor:
    """Per-sample BCE-with-logits + soft Dice loss (1 - 2 sum(p g) / (sum p + sum g)), equal weight."""
    bce = F.binary_cross_entropy_with_logits(logits, mask01, reduction="none").flatten(1).mean(1)
    p = torch.sigmoid(logits).flatten(1)
    g = mask01.flatten(1)
    dice = 1 - (2 * (p * g).sum(1) + 1.0) / (p.sum(1) + g.sum(1) + 1.0)
    return bce + dice


@dataclass
class StepOutput:
    loss: Tensor  # per-sample loss to optimise (B,)
    t: Tensor | None = None  # step indices (B,)
    eps_mse: Tensor | None = None  # unweighted eps-space MSE (B,)
    weighted: Tensor | None = None  # weighted loss before the sampler's correction (B,)


class Mode:
    """The behaviour of one experiment kind; what the kind is (diffusion, conditioned, its probability rule, ...)
    is read from its ``kinds.Experiment`` record, never restated here."""

    name = ""

    @property
    def kind(self) -> Experiment:
        return EXPERIMENTS[self.name]

    @property
    def diffusion(self) -> bool:
        return self.kind.diffusion

    @property
    def conditioned(self) -> bool:  # does the image condition the model?
        return self.kind.conditioned

    @property
    def probability(self) -> str:  # how an ensemble of this mode's members makes p(foreground) (``diffseg.masks``)
        return self.kind.probability

    def data_channels(self, image_ch: int) -> int:
        return 1

    def split_batch(self, images: Tensor | None, masks: Tensor) -> tuple[Tensor, Tensor]:
        """(x0 to model, condition)."""
        cond = images if self.conditioned else null_condition(masks)
        return masks, cond

    def train_step(self, model, ctx: DiffusionContext, images, masks, g: torch.Generator) -> StepOutput:
        x0, cond = self.split_batch(images, masks)
        b = x0.shape[0]
        if self.conditioned and ctx.cond_dropout > 0:
            drop = torch.rand(b, generator=g, device=g.device).to(cond.device) < ctx.cond_dropout
            cond = torch.where(drop[:, None, None, None], null_condition(cond, cond.shape[1]), cond)
        t, scale = ctx.sampler.sample(b, generator=None if g.device.type != "cpu" else g)
        t = t.to(x0.device)
        eps = torch.randn(x0.shape, generator=g, device=g.device).to(x0.device)
        x_t, a, s = q_sample(x0, t, ctx.schedule, eps)
        pred = model(x_t, t, cond)
        native = (pred.float() - make_target(x0, eps, a, s, ctx.target).float()).pow(2).flatten(1).mean(1)
        weighted = weighted_loss(native, t, ctx.table)
        loss = weighted * scale.to(x0.device)
        aux = getattr(model, "aux_logits", None)
        if aux is not None and aux() is not None and self.conditioned:
            # MedSegDiff v1 ablation: the image branch's sigmoid head, 10 x MSE against the {0, 1} mask
            loss = loss + 10 * (torch.sigmoid(aux().float()) - (x0 > 0).float()).pow(2).flatten(1).mean(1)
        return StepOutput(loss, t, eps_space_mse(native, t, ctx.schedule, ctx.target), weighted)

    @torch.no_grad()
    def predict(self, model, ctx: DiffusionContext, images, masks, n: int, ev, g: torch.Generator) -> Tensor:
        """Ensemble members in x0 space, (B, n, C, H, W)."""
        _, cond = self.split_batch(images, masks)
        shape = (cond.shape[0], self.data_channels(3), *cond.shape[-2:])
        return SAMPLERS[ev.sampler](lambda x, t, c: model(x, t, c), ctx.schedule, shape, cond=cond,
                                    target=ctx.target, ensemble=n, generator=g, device=cond.device,
                                    **sampling_options(ev).for_sampler(ev.sampler))

    @torch.no_grad()
    def x0_error(self, model, ctx, x0, cond, t_grid, g: torch.Generator) -> list[float]:
        """MSE of clip(x0_hat) against x0 at each t of the grid, with noise fixed by ``g``."""
        out = []
        for t in t_grid:
            tt = torch.full((x0.shape[0],), int(t), device=x0.device, dtype=torch.long)
            eps = torch.randn(x0.shape, generator=g, device=g.device).to(x0.device)
            x_t, a, s = q_sample(x0, tt, ctx.schedule, eps)
            x0_hat = to_x0(model(x_t, tt, cond).float(), x_t, a, s, ctx.target).clamp(-1, 1)
            out.append(float((x0_hat - x0).pow(2).mean()))
        return out


class FeedForward(Mode):
    name = FEED_FORWARD

    def _noise_input(self, masks, g):
        return torch.randn(masks.shape, generator=g, device=g.device).to(masks.device)

    def train_step(self, model, ctx, images, masks, g) -> StepOutput:
        x = self._noise_input(masks, g)
        t = torch.full((masks.shape[0],), ctx.T - 1, device=masks.device, dtype=torch.long)
        logits = model(x, t, images)
        return StepOutput(soft_dice_bce(logits.float(), (masks > 0).float()))

    @torch.no_grad()
    def predict(self, model, ctx, images, masks, n, ev, g) -> Tensor:
        b = images.shape[0]
        cond = images.repeat_interleave(n, 0)
        x = torch.randn((b * n, 1, *images.shape[-2:]), generator=g, device=g.device).to(images.device)
        t = torch.full((b * n,), ctx.T - 1, device=images.device, dtype=torch.long)
        probs = torch.sigmoid(model(x, t, cond).float())
        return (2 * probs - 1).reshape(b, n, 1, *images.shape[-2:])


class DiffusionSegmentation(Mode):
    name = SEGMENTATION


class MaskPrediction(Mode):
    name = MASK_ONLY


class ImageGeneration(Mode):
    name = GENERATION

    def data_channels(self, image_ch: int) -> int:
        return image_ch

    def split_batch(self, images, masks):
        return images, null_condition(images)


MODES = {m.name: m for m in (FeedForward(), DiffusionSegmentation(), MaskPrediction(), ImageGeneration())}
