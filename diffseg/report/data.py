"""Loading what a report is built from: a study's Parquet exports (``<runs>/exports/<study>/``), the training-free
fingerprint of each dataset at exactly the settings its trials used (``fingerprint.load_or_compute`` under
``<runs>/fingerprints``: the E3 trials' resolution, preprocessing, split and schedule; train + val masks only) and
the trials' uncertainty galleries (``<runs>/trials/<trial_name>/gallery.png``) when the runs folder still has them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..experiments import TrialConfig
from ..experiments.flat import unflatten
from ..experiments.kinds import MASK_ONLY
from ..experiments.result import EXPORT_TABLES, FINISHED, STUDY_META, export_dir
from ..fingerprint import load_or_compute, spec_for_trial


class NoExports(FileNotFoundError):
    """The study has no Parquet exports in the runs folder."""


@dataclass
class StudyData:
    study: str
    runs: Path
    meta: dict
    trials: pd.DataFrame
    config_curves: pd.DataFrame
    history: pd.DataFrame
    curves: pd.DataFrame
    images: pd.DataFrame
    reliability: pd.DataFrame
    conditioning: pd.DataFrame
    comparisons: pd.DataFrame
    fingerprints: dict[str, dict] = field(default_factory=dict)  # dataset -> fingerprint.json
    notes: list[str] = field(default_factory=list)
    mlflow_url: str | None = None  # the MLflow server's UI, when known: table rows link to their runs

    def run_links(self) -> dict[str, str]:
        """MLflow run id -> its page in the MLflow UI (empty without a server URL)."""
        if not self.mlflow_url:
            return {}
        from ..studies.tracking import ui_url

        return {r: ui_url(self.mlflow_url, self.meta.get("experiment_id"), r) for r in self.trials.run_id.dropna()}

    def ok_trials(self) -> pd.DataFrame:
        return self.trials[self.trials.status.isin(FINISHED)]

    def prior(self, dataset: str) -> float | None:
        """Foreground fraction of the dataset's train + val masks (from its fingerprint)."""
        fp = self.fingerprints.get(dataset)
        return fp["training_free"]["prior_fg"] if fp else None

    def gallery(self, trial_name: str) -> Path | None:
        p = self.runs / "trials" / trial_name / "gallery.png"
        return p if p.exists() else None


def load_study(runs: Path, study: str) -> StudyData:
    exports = export_dir(runs, study)
    missing = [f"{name}.parquet" for name in EXPORT_TABLES if not (exports / f"{name}.parquet").exists()]
    missing += [STUDY_META] if not (exports / STUDY_META).exists() else []
    if missing:
        raise NoExports(f"{exports}: no complete Parquet exports for study {study!r} (missing {missing}); run "
                        f"`python studies/run_study.py --study {study} --out {runs}` or re-create them with "
                        f"`python studies/export.py --study {study} --out {runs}`")
    frames = {name: pd.read_parquet(exports / f"{name}.parquet") for name in EXPORT_TABLES}
    meta = json.loads((exports / STUDY_META).read_text())
    d = StudyData(study, runs, meta, **frames)
    d.fingerprints, d.notes = study_fingerprints(d)
    return d


def trial_config(row: pd.Series, config_curves: pd.DataFrame | None = None) -> TrialConfig:
    """The TrialConfig of an exported trial row, rebuilt from its ``cfg.*`` columns and its long curves."""
    curves = {}
    if config_curves is not None and len(config_curves):
        own = config_curves[config_curves.trial_id == row["trial_id"]].sort_values("index")
        curves = {k: g.value.tolist() for k, g in own.groupby("key")}
    flat = {k[4:]: (None if pd.api.types.is_scalar(v) and pd.isna(v) else v)
            for k, v in row.items() if k.startswith("cfg.")}
    return TrialConfig.from_dict(unflatten(flat, curves))


def study_fingerprints(d: StudyData) -> tuple[dict[str, dict], list[str]]:
    """One training-free fingerprint per dataset, at the settings of its E3 trials (else of its first trial)."""
    t = d.ok_trials()
    fps, notes = {}, []
    for ds in sorted(t.dataset.dropna().unique()):
        rows = t[t.dataset == ds].sort_values("experiment", key=lambda s: s != MASK_ONLY)
        cfg = trial_config(rows.iloc[0], d.config_curves)
        try:
            fp, _ = load_or_compute(d.runs / "fingerprints", spec_for_trial(cfg), cfg.data.data_root,
                                    d.runs / "cache")
        except (OSError, ValueError) as exc:
            notes.append(f"no training-free fingerprint for {ds}: {exc}")
            continue
        if fp["dataset_hash"] != d.meta.get("datasets", {}).get(ds):
            notes.append(f"{ds}: the data found now differs from the data the study used; no fingerprint shown")
            continue
        fps[ds] = fp
    return fps, notes
