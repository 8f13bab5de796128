"""A new local SQLite tracking store starts from a copy of MLflow's empty schema instead of building it.

MLflow creates a new SQLite store by creating its initial tables and running every Alembic migration since
(about 1 CPU-s here, per store: each study folder, each test's store, each local tracking server). The schema
depends only on the MLflow version, so it is built once per version into the user's cache
(``<default_cache_dir()>/mlflow-<version>-schema.db``) and copied. The copy holds the tables, the Alembic revision
and the rows the migrations insert, but no experiment: MLflow inserts its Default experiment itself when it first
opens the store (with the artifact root and time of that store, as for a store it built), and refuses a copy
whose revision is not its head (``_verify_schema``), so a stale copy cannot pass unnoticed.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

from ..data.cache import default_cache_dir
from ..files import atomic_path
from ..folder import SQLITE_PREFIX


def template_path() -> Path:
    from mlflow import __version__

    return default_cache_dir() / f"mlflow-{__version__}-schema.db"


def _build(path: Path) -> None:
    """MLflow's own schema for an empty store, written to ``path`` whole (``files.atomic_path``: MLflow builds it in
    the empty temporary file, an empty SQLite database)."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    with atomic_path(path) as db:
        store = SqlAlchemyStore(SQLITE_PREFIX + str(db), path.parent.as_uri())  # the root is never created
        store.engine.dispose()
        with sqlite3.connect(db) as con:
            con.execute("DELETE FROM experiments")  # the Default experiment: each store's own (see above)
        con.close()


def lay_down(tracking_uri: str) -> bool:
    """Give a local SQLite store that does not exist yet MLflow's schema (a copy of the cached one); any other URI,
    or a store that exists, is left alone. Returns whether a store was laid down. Two drivers creating one store at
    once: the first link wins, the other's copy is dropped."""
    if not tracking_uri.startswith(SQLITE_PREFIX) or "?" in tracking_uri:
        return False
    db = Path(tracking_uri[len(SQLITE_PREFIX):])
    if db.exists():
        return False
    template = template_path()
    if not template.exists():
        _build(template)
    db.parent.mkdir(parents=True, exist_ok=True)
    tmp = db.with_name(f".{db.name}.{os.getpid()}.tmp")
    try:
        shutil.copyfile(template, tmp)
        os.link(tmp, db)  # never over a store that appeared meanwhile
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
    return True
