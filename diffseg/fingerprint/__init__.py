"""Dataset fingerprints: how fast a dataset's masks lose their information under a noise schedule, and the
final noise level, weighting and timestep density derived from it."""

from .core import (
    SCHEMA,
    compute_fingerprint,
    fingerprint_masks,
    fingerprint_weighting,
    load_fingerprint,
    rederive,
    save_fingerprint,
    trained_agreement,
)
from .information import channel_information, info_loss_curve, pooling_area_histogram
from .stats import mask_statistics

__all__ = [
    "SCHEMA",
    "channel_information",
    "compute_fingerprint",
    "fingerprint_masks",
    "fingerprint_weighting",
    "info_loss_curve",
    "load_fingerprint",
    "mask_statistics",
    "pooling_area_histogram",
    "rederive",
    "save_fingerprint",
    "trained_agreement",
]
