"""Loading what a report is built from: a study's exports only (``<runs>/exports/<study>/``, each table checked
against ``studies.schema``; the dataset fingerprints and the blur + Otsu baseline among them), and the trials'
uncertainty galleries (``<runs>/trials/<trial_name>/gallery.png``) when the runs folder still has them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..experiments.result import FINISHED
from ..folder import StudyFolder
from ..studies.dataset_tables import TEST, TRAIN_VAL
from ..studies.schema import REQUIRED, SchemaError, read


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
    baselines: pd.DataFrame = field(default_factory=pd.DataFrame)  # training-free baselines per dataset
    fingerprints: dict[str, dict] = field(default_factory=dict)  # dataset -> fingerprint of its train + val masks
    test_fingerprints: dict[str, dict] = field(default_factory=dict)  # dataset -> that of E3's test masks
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
        p = StudyFolder(self.runs).trial(trial_name) / "gallery.png"
        return p if p.exists() else None


def load_study(runs: Path, study: str) -> StudyData:
    folder = StudyFolder(runs)
    exports = folder.exports(study)
    missing = [p.name for p in (*(folder.export_table(study, n) for n in REQUIRED), folder.export_meta(study))
               if not p.exists()]
    if missing:
        raise NoExports(f"{exports}: no complete Parquet exports for study {study!r} (missing {missing}); run "
                        f"`python studies/run_study.py --study {study} --out {runs}` or re-create them with "
                        f"`python studies/export.py --study {study} --out {runs}`")
    try:
        frames = {name: read(exports, name) for name in REQUIRED}
    except SchemaError as exc:
        raise NoExports(str(exc)) from None
    try:
        meta = json.loads(folder.export_meta(study).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise NoExports(f"{folder.export_meta(study)}: not readable JSON ({exc}); re-create the exports with "
                        f"`python studies/export.py --study {study} --out {runs}`") from None
    fps = frames.pop("fingerprints")
    d = StudyData(study, folder.root, meta, **frames)
    for masks_from, into in ((TRAIN_VAL, d.fingerprints), (TEST, d.test_fingerprints)):
        into.update({r.dataset: {**json.loads(r.fingerprint), "masks": int(r.masks)}
                     for r in fps[fps.masks_from == masks_from].itertuples()})
    d.notes = list(meta.get("notes", []))
    return d
