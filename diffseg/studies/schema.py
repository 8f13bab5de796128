"""The export schema: every table a study folder's ``exports/<study>/`` holds, its columns in order and their types.

The exporter writes with ``conform`` (one type per column whatever the study), the report reads with ``read``
(which refuses a table that does not match), and a test holds the README's schema table to this one. Columns that
depend on the study (the test metrics, the timing phases, the validation metrics of ``history``) match a
pattern with one type. Types are pandas dtype names; ``timestamp`` is UTC.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..experiments.evaluate import PER_IMAGE
from ..experiments.flat import JSON
from ..experiments.flat import SCHEMA as CONFIG
from ..metrics.paired import TYPES as PAIRED

TIMESTAMP = "timestamp"
S, I, F, B = "string", "Int64", "float64", "bool"


@dataclass(frozen=True)
class Table:
    name: str
    columns: dict[str, str]  # fixed columns, in order
    extra: str | None = None  # a regex of the study-dependent columns (all float64), placed after ``before``
    before: str | None = None  # the first fixed column the extra columns precede (None: at the end)
    required: bool = True  # written by every export (False: by an analysis command, e.g. loss_over_t)

    @property
    def file(self) -> str:
        return f"{self.name}.parquet"

    def dtype(self, column: str) -> str | None:
        if column in self.columns:
            return self.columns[column]
        return F if self.extra and re.fullmatch(self.extra, column) else None


def _of(names, dtype: str) -> dict[str, str]:
    return dict.fromkeys(names, dtype)


TRIALS = {
    **_of(["study", "parent_run_id", "run_id", "trial_id", "trial_name", "arm", "dataset", "dataset_hash"], S),
    "seed": I, "experiment": S, "architecture": S, "budget": S, "status": S, "mlflow_status": S,
    "start_time": TIMESTAMP, "end_time": TIMESTAMP, **_of(["wall_time_s", "train_time_s", "eval_time_s"], F),
    "step": I, "best_step": I, "best_val": F, "selection_metric": S, "selection": S, "n_params": I,
    "git_commit": S, "hardware": S, "threads": I, "node_id": S, "node_ip": S, "retries": I}
CONFIG_COLUMNS = {f"cfg.{k}": (S if t == JSON else t) for k, t in CONFIG.items()}

TABLES: dict[str, Table] = {t.name: t for t in (
    Table("trials", {**TRIALS, **CONFIG_COLUMNS}, extra=r"(test|time|val)_\w+", before=next(iter(CONFIG_COLUMNS))),
    Table("config_curves", {"trial_id": S, "key": S, "index": I, "value": F}),
    Table("history", {"trial_id": S, "step": I, "train_loss": F}, extra=r"\w+"),
    Table("curves", {"trial_id": S, "kind": S, "conditioned": B, "t": F, "value": F}),
    Table("images", {**_of(["trial_id", "dataset", "arm"], S), "seed": I, "image_id": S, "case_id": S,
                     **_of(PER_IMAGE, F)}),
    Table("reliability", {"trial_id": S, "bin": I, "count": I, **_of(["confidence", "accuracy", "lower", "upper"],
                                                                      F)}),
    Table("conditioning", {"dataset": S, "architecture": S, "seed": I, "e2_trial_id": S, "partner_trial_id": S,
                           "partner": S, "t": F, "with_image": F, "without_image": F}),
    Table("comparisons", dict(PAIRED)),
    Table("fingerprints", {"dataset": S, "masks_from": S, "dataset_hash": S, "resolution": I, "schedule": S,
                           "T": I, "masks": I, "prior_fg": F, "t_half": F, "fingerprint": S}),
    Table("baselines", {"dataset": S, "method": S, "test_images": I, "test_cases": I, "iou": F}),
    Table("loss_over_t", {"trial": S, "experiment": S, "dataset": S, "step": I, "t": I, "loss": F, "low": F,
                          "high": F, "optimal": F}, required=False),
    Table("loss_over_t_verdicts", {"trial": S, "experiment": S, "dataset": S, "step": I, "images": I, "draws": I,
                                   **_of(["dip_depth", "dip_depth_low", "dip_depth_high", "rise", "rise_low",
                                          "rise_high"], F), "verdict": S}, required=False),
)}
REQUIRED = tuple(name for name, t in TABLES.items() if t.required)


class SchemaError(ValueError):
    """An export table that does not match its schema (named with the file and the column)."""


def table_file(name: str) -> str:
    if name not in TABLES:
        from ..registry import suggest

        raise ValueError(f"unknown export table {name!r}; {suggest(name, TABLES)}")
    return TABLES[name].file


def conform(name: str, df):
    """``df`` with the table's columns in order (fixed ones added when missing, extras sorted, unknown ones
    refused) and cast to their types; an all-missing column keeps its type."""
    import pandas as pd

    t = TABLES[name]
    unknown = [c for c in df.columns if t.dtype(c) is None]
    if unknown:
        raise SchemaError(f"{t.file}: columns {unknown} are not in the export schema (studies/schema.py)")
    extra = sorted(c for c in df.columns if c not in t.columns)
    fixed = list(t.columns)
    at = fixed.index(t.before) if t.before else len(fixed)
    df = df.reindex(columns=[*fixed[:at], *extra, *fixed[at:]])
    for col in df.columns:
        dtype = t.dtype(col)
        if dtype == TIMESTAMP:
            df[col] = pd.to_datetime(df[col], utc=True)
        elif dtype in (I, F, "int64"):
            df[col] = pd.to_numeric(df[col]).astype(dtype)
        else:
            df[col] = df[col].astype(dtype)
    return df


def _kind(dtype: str) -> str:
    return "timestamp" if dtype.startswith("datetime64") or dtype == TIMESTAMP else \
        {"str": "string", "object": "string", "boolean": "bool"}.get(dtype, dtype)


def problems(name: str, df) -> list[str]:
    """What in ``df`` does not match the schema of table ``name`` (empty: it matches)."""
    t = TABLES[name]
    out = [f"missing column {c!r}" for c in t.columns if c not in df.columns]
    for col in df.columns:
        want = t.dtype(col)
        if want is None:
            out.append(f"column {col!r} is not in the schema")
        elif _kind(str(df[col].dtype)) != _kind(want):
            out.append(f"column {col!r} is {df[col].dtype}, the schema says {want}")
    return out


def read(folder: Path, name: str):
    """Table ``name`` of an export folder, checked against the schema (``SchemaError`` names file and columns)."""
    import pandas as pd

    path = Path(folder) / table_file(name)
    try:
        df = pd.read_parquet(path)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise SchemaError(f"{path}: not a readable Parquet file ({str(exc).splitlines()[0]}); re-create it with "
                          "`python studies/export.py`") from None
    bad = problems(name, df)
    if bad:
        raise SchemaError(f"{path}: does not match the export schema: {'; '.join(bad[:5])}"
                          + (f" (+{len(bad) - 5} more)" if len(bad) > 5 else "")
                          + "; re-create it with `python studies/export.py`")
    return df
