"""Segmentation, calibration, sample-set and uncertainty metrics, batched in torch."""

from .baselines import TRAINING_FREE, all_foreground_iou, blur_otsu, blur_otsu_iou, stronger
from .calibration import adaptive_ece, brier, ece, nll, reliability_table
from .intervals import fmt_ci, mean_ci
from .overlap import dice, iou
from .sets import ged, hungarian_iou, pairwise_iou
from .uncertainty import auroc, uncertainty_auroc

__all__ = [
    "TRAINING_FREE",
    "adaptive_ece",
    "all_foreground_iou",
    "auroc",
    "blur_otsu",
    "blur_otsu_iou",
    "brier",
    "dice",
    "ece",
    "fmt_ci",
    "ged",
    "hungarian_iou",
    "iou",
    "mean_ci",
    "nll",
    "pairwise_iou",
    "reliability_table",
    "stronger",
    "uncertainty_auroc",
]
