"""Dataset fingerprints: how fast a dataset's masks become unrecoverable under a noise schedule (the training-free
counterpart of the trained E3 curve), and the final noise level, weighting and timestep density derived from it."""

from .core import (
    SCHEMA,
    FingerprintSpec,
    SplitSpec,
    compute_fingerprint,
    fingerprint_masks,
    fingerprint_path,
    fingerprint_weighting,
    load_fingerprint,
    load_or_compute,
    rederive,
    save_fingerprint,
    spec_for_trial,
    trained_agreement,
)
from .information import label_mmse, mask_error_curve, pooling_area_histogram, prior_error
from .stats import mask_statistics

__all__ = [
    "SCHEMA",
    "FingerprintSpec",
    "SplitSpec",
    "compute_fingerprint",
    "fingerprint_masks",
    "fingerprint_path",
    "fingerprint_weighting",
    "label_mmse",
    "load_fingerprint",
    "load_or_compute",
    "mask_error_curve",
    "mask_statistics",
    "pooling_area_histogram",
    "prior_error",
    "rederive",
    "save_fingerprint",
    "spec_for_trial",
    "trained_agreement",
]
