"""Experiment kinds E1-E4 (``kinds``, torch-free) and the trial function ``train_trial(config, ...) -> TrialResult``.

The names below load on first use (PEP 562), so that ``diffseg.experiments.kinds`` and ``.result`` stay
importable without torch."""

from importlib import import_module

_LAZY = {"EXPERIMENTS": ".kinds", "TrialConfig": ".config", "replace": ".config", "Trial": ".train",
         "train_trial": ".train"}
__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
