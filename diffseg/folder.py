"""The study folder (``run_study.py --out DIR``): every path in it, its own tracking store, and the rule that picks
the tracking store a command uses. Torch- and MLflow-free; the one place a folder path is spelled.

Layout::

    DIR/
      .diffseg.lock            held by the driver of the study running here
      mlflow.db, mlartifacts/  the folder's own MLflow store (when no server is given)
      optuna.db                Optuna searches (studies with algorithm: optuna)
      ray/<name>/              Ray Tune's experiment folders (the study's grid, or one search per dataset and seed)
      ray/<study>/diffseg_study.json, plan.json   the invocation's state and its saved plan
      trials/<trial name>/     each trial's outputs (selected weights, gallery, EMA checkpoints)
      cache/, fingerprints/    dataset caches and training-free fingerprints
      exports/<study>/         the Parquet exports and study.json (schemas: ``studies.schema``)
      reports/<study>/         the HTML report
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

STATE_FILE = "diffseg_study.json"
PLAN_FILE = "plan.json"
LOCK_FILE = ".diffseg.lock"
STORE_DB = "mlflow.db"
ARTIFACT_ROOT = "mlartifacts"
STUDY_META = "study.json"
SERVER_SCHEMES = ("http://", "https://")
SQLITE_PREFIX = "sqlite:///"  # a local SQLite store (MLflow, Optuna): the prefix and an absolute path


def is_server(uri: str | None) -> bool:
    """Whether a tracking URI is an MLflow server (reached over HTTP), not a local store."""
    return bool(uri) and uri.startswith(SERVER_SCHEMES)


@dataclass(frozen=True)
class StudyFolder:
    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root).expanduser().resolve())

    # --- the driver's files ---
    @property
    def lock(self) -> Path:
        return self.root / LOCK_FILE

    @property
    def ray(self) -> Path:
        """Tune's ``storage_path``."""
        return self.root / "ray"

    def tune_dir(self, name: str) -> Path:
        return self.ray / name

    def state(self, study: str) -> Path:
        return self.tune_dir(study) / STATE_FILE

    def plan(self, study: str) -> Path:
        return self.tune_dir(study) / PLAN_FILE

    def studies_with_state(self) -> list[str]:
        return sorted(p.parent.name for p in self.ray.glob(f"*/{STATE_FILE}"))

    @property
    def optuna_storage(self) -> str:
        return f"{SQLITE_PREFIX}{self.root / 'optuna.db'}"

    # --- what trials and the plan write ---
    def trial(self, trial_name: str) -> Path:
        return self.root / "trials" / trial_name

    def trial_dirs(self, pattern: str = "*") -> list[Path]:
        return sorted((self.root / "trials").glob(pattern))

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def fingerprints(self) -> Path:
        return self.root / "fingerprints"

    # --- the folder's own tracking store ---
    @property
    def store_db(self) -> Path:
        return self.root / STORE_DB

    @property
    def artifact_root(self) -> Path:
        return self.root / ARTIFACT_ROOT

    @property
    def store_uri(self) -> str:
        return f"{SQLITE_PREFIX}{self.store_db}"

    def owns(self, tracking_uri: str) -> bool:
        """Whether ``tracking_uri`` is this folder's own store (recorded relative to the folder, never as a URI, so
        that the folder stays relocatable)."""
        return tracking_uri == self.store_uri

    def recorded_uri(self, study: str) -> str | None:
        """The tracking server the study recorded (its state, else its ``study.json``); None for the folder's own
        store or a study without a record."""
        import json

        for path in (self.state(study), self.export_meta(study)):
            if path.exists():
                return json.loads(path.read_text()).get("tracking_uri")
        return None

    # --- exports and reports ---
    def exports(self, study: str) -> Path:
        return self.root / "exports" / study

    def export_table(self, study: str, table: str) -> Path:
        from .studies.schema import table_file

        return self.exports(study) / table_file(table)

    def export_meta(self, study: str) -> Path:
        return self.exports(study) / STUDY_META

    def reports(self, study: str) -> Path:
        return self.root / "reports" / study


def choose_tracking_uri(given: str | None, recorded: str | None = None, folder: StudyFolder | None = None) -> str:
    """The tracking store a command uses, by precedence: ``given`` (``--tracking-uri``), else the server the study
    recorded (its state or ``study.json``), else the folder's own store (wherever the folder is now); a command
    without a folder (``predict``) falls back to ``$MLFLOW_TRACKING_URI``. Raises ``ValueError`` when none
    applies: a store is never created where the user did not ask for one."""
    uri = given or recorded or (folder.store_uri if folder else os.environ.get("MLFLOW_TRACKING_URI"))
    if not uri:
        raise ValueError("no MLflow tracking store: give --tracking-uri, --runs DIR (a study folder) or set "
                         "MLFLOW_TRACKING_URI")
    return uri
