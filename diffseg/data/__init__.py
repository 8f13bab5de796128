"""Data layer: official-layout readers, registry, validation, cached preprocessing, splits, synthetic sets."""

from .errors import DatasetError
from .loader import AugmentConfig, BatchSampler, to_tensors
from .prepare import PreparedDataset, PrepConfig, load_dataset
from .registry import DatasetSpec, dataset_names, get_spec
from .splits import spread_subset

__all__ = [
    "AugmentConfig",
    "BatchSampler",
    "DatasetError",
    "DatasetSpec",
    "PrepConfig",
    "PreparedDataset",
    "dataset_names",
    "get_spec",
    "load_dataset",
    "spread_subset",
    "to_tensors",
]
