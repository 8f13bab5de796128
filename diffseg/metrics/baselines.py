"""Training-free segmentation baselines, each an IoU per image (``TRAINING_FREE``, keyed by the name the exports
use). A learned model that does not beat the stronger of them has not shown that it learned anything:
- ``blur_otsu``: Gaussian blur + Otsu threshold on the grey image, darker side = foreground (lesions, nuclei and
  stained cells are darker than their background; scikit-image's Otsu);
- ``all_foreground``: every pixel foreground, IoU = the mask's foreground fraction. Where the foreground is not
  darker (Kvasir-SEG's polyps: blur + Otsu 0.03 IoU) and large, this is the bar: a model that marks everything
  scores it without looking at the image."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import torch
from skimage.color import rgb2gray
from skimage.filters import gaussian, threshold_otsu

from .overlap import iou


def blur_otsu(image: np.ndarray, sigma_fraction: float = 0.02) -> np.ndarray:
    """Binary mask (H, W) from an RGB image (H, W, 3) uint8; blur sigma = ``sigma_fraction`` of the image side."""
    grey = gaussian(rgb2gray(np.asarray(image)), sigma=max(0.5, sigma_fraction * image.shape[0]))
    if np.ptp(grey) == 0:
        return np.zeros(grey.shape, bool)
    return grey < threshold_otsu(grey)


def _iou(preds: np.ndarray, masks) -> list[float]:
    """Per-image IoU (``overlap.iou``: empty vs empty = 1) of binary predictions (N, H, W) against masks (N, H, W;
    foreground > 0)."""
    return iou(torch.as_tensor(preds), torch.as_tensor(np.asarray(masks) > 0)).tolist()


def blur_otsu_iou(images, masks) -> list[float]:
    """IoU of ``blur_otsu`` against each mask (images (N, H, W, 3) uint8, masks (N, H, W))."""
    return _iou(np.array([blur_otsu(image) for image in images], bool).reshape(np.shape(masks)), masks)


def all_foreground_iou(images, masks) -> list[float]:
    """IoU of calling every pixel foreground against each mask: its foreground fraction (an empty mask: 0)."""
    return _iou(np.ones(np.shape(masks), bool), masks)


TRAINING_FREE: dict[str, Callable[..., list[float]]] = {"blur_otsu": blur_otsu_iou,
                                                         "all_foreground": all_foreground_iou}


def stronger(mean_iou: Mapping[str, float]) -> str:
    """The baseline a model must beat: of the methods given with their mean IoU on the same images, the higher."""
    return max(mean_iou, key=mean_iou.__getitem__)
