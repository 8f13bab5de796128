"""The trained fingerprint: E3 mask-prediction error over t for a dataset, from a study export."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def load_trained_curve(export_dir: Path, dataset: str) -> dict:
    """Mean over architectures and seeds of the E3 (unconditioned) mask_error curve of ``dataset``."""
    curves, trials = export_dir / "curves.parquet", export_dir / "trials.parquet"
    for f in (curves, trials):
        if not f.exists():
            raise FileNotFoundError(f"{f}: missing (expected a study export with curves.parquet and trials.parquet)")
    c = pd.read_parquet(curves)
    t = pd.read_parquet(trials, columns=["trial_id", "dataset", "experiment"])
    sel = c.merge(t, on="trial_id")
    sel = sel[(sel.dataset == dataset) & (sel.experiment == "e3") & (sel.kind == "mask_error")]
    if sel.empty:
        raise ValueError(f"{export_dir}: no E3 mask_error curves for dataset {dataset!r}")
    mean = sel.groupby("t", as_index=False)["value"].mean().sort_values("t")
    return {"t": mean.t.astype(int).tolist(), "error": mean.value.astype(float).tolist(), "source": str(export_dir)}
