"""Experiment modes E1-E4 and the trial function ``train_trial(config, report=None) -> dict``."""

from .config import EXPERIMENTS, TrialConfig, replace
from .train import Trial, train_trial

__all__ = ["EXPERIMENTS", "Trial", "TrialConfig", "replace", "train_trial"]
