"""Loading what a report is built from: a study's Parquet exports (``<runs>/exports/<study>/``), the
fingerprints the study resolved (``<runs>/fingerprints``) and the trials' uncertainty galleries
(``<runs>/trials/<trial_id>/gallery.png``) when the runs folder still has them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..fingerprint import load_fingerprint

EXPORT_FILES = ("trials", "history", "curves", "images", "reliability")


class NoExports(FileNotFoundError):
    """The study has no Parquet exports in the runs folder."""


@dataclass
class StudyData:
    study: str
    runs: Path
    meta: dict
    trials: pd.DataFrame
    history: pd.DataFrame
    curves: pd.DataFrame
    images: pd.DataFrame
    reliability: pd.DataFrame
    fingerprints: dict[str, dict] = field(default_factory=dict)  # dataset -> fingerprint.json

    def ok_trials(self) -> pd.DataFrame:
        return self.trials[self.trials.status.isin(["ok", "early_stopped"])]

    def gallery(self, trial_id: str) -> Path | None:
        p = self.runs / "trials" / trial_id / "gallery.png"
        return p if p.exists() else None


def load_study(runs: Path, study: str) -> StudyData:
    exports = runs / "exports" / study
    missing = [f"{name}.parquet" for name in EXPORT_FILES if not (exports / f"{name}.parquet").exists()]
    if missing or not (exports / "study.json").exists():
        raise NoExports(f"{exports}: no complete Parquet exports for study {study!r} (missing "
                        f"{missing or ['study.json']}); run `python studies/run_study.py --study {study} "
                        f"--out {runs}` or re-create them with `python studies/export.py --study {study} --out {runs}`")
    frames = {name: pd.read_parquet(exports / f"{name}.parquet") for name in EXPORT_FILES}
    meta = json.loads((exports / "study.json").read_text())
    fps = {}
    hashes = meta.get("datasets", {})
    for path in sorted((runs / "fingerprints").glob("*/fingerprint.json")):
        fp = load_fingerprint(path)
        if hashes.get(fp["dataset"]) == fp["dataset_hash"] and fp["schedule"]["name"] == "linear":
            fps.setdefault(fp["dataset"], fp)
    return StudyData(study, runs, meta, **frames, fingerprints=fps)
