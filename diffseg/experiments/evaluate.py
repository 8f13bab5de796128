"""Segmentation evaluation of ensemble members (x0 space, the convention of ``diffseg.masks``): per-image
metrics, pooled calibration, and the uncertainty gallery."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..masks import SOFT, VOTE, ensemble_summary, member_diagnostics
from ..metrics import (
    adaptive_ece,
    brier,
    dice,
    ece,
    ged,
    hungarian_iou,
    iou,
    nll,
    reliability_table,
    uncertainty_auroc,
)

# per-image columns: the metrics of the ensemble probability (the experiment's rule, ``masks``), the grey-level
# mean's ECE beside it, and the members' diagnostics that make a grey-level artefact visible
PER_IMAGE = ("iou", "dice", "ece", "brier", "nll", "ged", "hm_iou", "unc_auroc", "fg_gt", "fg_pred",
             "ece_softmean", "member_error", "disagreement", "binariness", "bg_prob", "bg_prob_softmean")


def per_image_metrics(members: torch.Tensor, gt: torch.Tensor, n_bins: int = 10,
                      rule: str = VOTE) -> list[dict[str, float]]:
    """members (B, N, 1, H, W) in x0 space, gt (B, 1, H, W) in {-1, +1}; ``rule`` makes the ensemble's
    probability (``masks.VOTE`` for sampled members, ``masks.SOFT`` for feed-forward probabilities)."""
    mean, std, seg = ensemble_summary(members, dim=1, rule=rule)
    soft, _, _ = ensemble_summary(members, dim=1, rule=SOFT)
    diag = member_diagnostics(members, gt)
    g = gt > 0
    ious, dices = iou(seg, g), dice(seg, g)
    rows = []
    for i in range(members.shape[0]):
        samples = members[i, :, 0] > 0
        rows.append({
            "iou": float(ious[i]), "dice": float(dices[i]),
            "ece": float(ece(mean[i], g[i], n_bins)), "brier": float(brier(mean[i], g[i])),
            "nll": float(nll(mean[i], g[i])),
            "ged": float(ged(samples, g[i])), "hm_iou": float(hungarian_iou(samples, g[i])),
            "unc_auroc": float(uncertainty_auroc(std[i], seg[i], g[i])),
            "fg_gt": float(g[i].float().mean()), "fg_pred": float(seg[i].float().mean()),
            "ece_softmean": float(ece(soft[i], g[i], n_bins)), **{k: float(v[i]) for k, v in diag.items()},
        })
    return rows


def summarise(rows: list[dict[str, float]], mean_maps: torch.Tensor, gts: torch.Tensor,
              n_bins: int = 10) -> dict[str, float]:
    """Means over images (NaN-aware for AUROC) plus pooled-pixel calibration over the whole split."""
    out = {}
    for key in PER_IMAGE:
        vals = np.asarray([r[key] for r in rows], dtype=float)
        out[f"test_{key}"] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
    out["test_iou_std"] = float(np.std([r["iou"] for r in rows]))
    g = gts > 0
    out["test_ece_pooled"] = float(ece(mean_maps, g, n_bins))
    out["test_ece_adaptive"] = float(adaptive_ece(mean_maps, g, n_bins))
    return out


def reliability(mean_maps: torch.Tensor, gts: torch.Tensor, n_bins: int = 10) -> list[dict[str, float]]:
    tab = reliability_table(mean_maps, gts > 0, n_bins)
    return [{"bin": b, **{k: float(v[b]) for k, v in tab.items()}} for b in range(n_bins)]


def _to_rgb(img: torch.Tensor) -> np.ndarray:
    """(C, H, W) image in [-1, 1] or map in [0, 1] (1 channel) -> uint8 RGB."""
    a = img.detach().float().cpu()
    a = (a + 1) / 2 if a.shape[0] == 3 else a.expand(3, -1, -1)
    return (a.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


GALLERY_COLUMNS = ("image", "ground truth", "mean probability", "2 x std")


def save_gallery(path: Path, images, gts, members, k: int, min_width: int = 112, rule: str = VOTE) -> Path | None:
    """Rows of (image, ground truth, mean probability, 2 x std over members) for the first k images, as one PNG
    with the column names drawn in a header band; every column at least ``min_width`` px wide."""
    if k <= 0 or members.shape[0] == 0:
        return None
    mean, std, _ = ensemble_summary(members[:k], dim=1, rule=rule)
    rows = []
    for i in range(min(k, members.shape[0])):
        img = _to_rgb(images[i]) if images is not None else _to_rgb(torch.zeros(3, *gts.shape[-2:]))
        gt = _to_rgb((gts[i] > 0).float())
        rows.append(np.concatenate([img, gt, _to_rgb(mean[i]), _to_rgb((std[i] * 2).clamp(0, 1))], 1))
    grid = np.concatenate(rows, 0)
    scale = -(-min_width // gts.shape[-1])
    body = Image.fromarray(grid).resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST)
    font, col, band = ImageFont.load_default(size=12), gts.shape[-1] * scale, 20
    out = Image.new("RGB", (body.width, body.height + band), "white")
    out.paste(body, (0, band))
    draw = ImageDraw.Draw(out)
    for j, name in enumerate(GALLERY_COLUMNS):
        draw.text((j * col + col / 2, band / 2), name, fill="black", font=font, anchor="mm")
    path.parent.mkdir(parents=True, exist_ok=True)
    out.save(path)
    return path
