"""The trained fingerprint: E3 mask-prediction error over t for a dataset, from a study export."""

from __future__ import annotations

from pathlib import Path

from ..experiments.kinds import MASK_ONLY
from ..experiments.result import FINISHED, MASK_ERROR


def load_trained_curve(export_dir: Path, dataset: str, resolution: int, schedule: str, T: int) -> dict:
    """Mean over architectures and seeds of the E3 mask_error curves of ``dataset`` trained at ``resolution``
    with ``schedule`` and ``T`` (curves of other settings are not comparable and are refused, not mixed)."""
    from ..studies.schema import read, table_file

    for name in ("curves", "trials"):
        if not (export_dir / table_file(name)).exists():
            raise FileNotFoundError(f"{export_dir / table_file(name)}: missing (expected a study export with "
                                    "curves.parquet and trials.parquet)")
    c = read(export_dir, "curves")
    cols = ["trial_id", "dataset", "experiment", "cfg.data.resolution", "cfg.diffusion.schedule", "cfg.diffusion.T",
            "status"]
    t = read(export_dir, "trials")[cols]
    e3 = t[(t.dataset == dataset) & (t.experiment == MASK_ONLY) & t.status.isin(FINISHED)]
    if e3.empty:
        raise ValueError(f"{export_dir}: no E3 trials for dataset {dataset!r}")
    match = e3[(e3["cfg.data.resolution"] == resolution) & (e3["cfg.diffusion.schedule"] == schedule)
               & (e3["cfg.diffusion.T"] == T)]
    if match.empty:
        found = sorted({(int(r), s, int(n)) for r, s, n in e3[cols[3:6]].itertuples(index=False)})
        raise ValueError(f"{export_dir}: E3 trials of {dataset!r} were trained at (resolution, schedule, T) "
                         f"{found}, not ({resolution}, {schedule!r}, {T})")
    sel = c.merge(match[["trial_id"]], on="trial_id")
    sel = sel[sel.kind == MASK_ERROR]
    mean = sel.groupby("t", as_index=False)["value"].mean().sort_values("t")
    return {"t": mean.t.astype(int).tolist(), "error": mean.value.astype(float).tolist(), "source": str(export_dir),
            "trials": int(match.trial_id.nunique())}
