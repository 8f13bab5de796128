"""Segmentation, calibration, sample-set and uncertainty metrics, batched in torch."""

from .calibration import adaptive_ece, brier, ece, nll, reliability_table
from .overlap import dice, iou
from .sets import ged, hungarian_iou, pairwise_iou
from .uncertainty import auroc, uncertainty_auroc

__all__ = [
    "adaptive_ece",
    "auroc",
    "brier",
    "dice",
    "ece",
    "ged",
    "hungarian_iou",
    "iou",
    "nll",
    "pairwise_iou",
    "reliability_table",
    "uncertainty_auroc",
]
