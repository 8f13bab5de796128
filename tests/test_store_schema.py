"""A new local store laid down from the cached schema is the store MLflow would have built."""

import sqlite3

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from diffseg.folder import SQLITE_PREFIX
from diffseg.studies import store_schema


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFSEG_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)  # MLflow's default artifact root is relative to the working directory
    return tmp_path / "cache"


def _schema_and_rows(db):
    """Each table and index with its definition's lines as a set (MLflow's migrations write a table's constraints
    in varying order: two stores it builds differ so), and every table's rows but the experiments'."""
    with sqlite3.connect(db) as con:
        schema = sorted((kind, name, sorted(line.strip().rstrip(",") for line in (sql or "").splitlines()))
                        for kind, name, sql in con.execute("SELECT type, name, sql FROM sqlite_master "
                                                           "WHERE name NOT LIKE 'sqlite_%'"))
        tables = [name for kind, name, _ in schema if kind == "table" and name != "experiments"]
        rows = {t: sorted(con.execute(f'SELECT * FROM "{t}"'), key=repr) for t in tables}
    con.close()
    return schema, rows


def test_a_laid_down_store_is_the_store_mlflow_builds(cache, tmp_path):
    ours, theirs = tmp_path / "ours" / "mlflow.db", tmp_path / "theirs.db"
    assert store_schema.lay_down(SQLITE_PREFIX + str(ours))
    assert store_schema.template_path().parent == cache
    assert not store_schema.lay_down(SQLITE_PREFIX + str(ours))  # it exists now: left alone
    mine, built = MlflowClient(SQLITE_PREFIX + str(ours)), MlflowClient(SQLITE_PREFIX + str(theirs))
    built.search_experiments()
    assert _schema_and_rows(ours) == _schema_and_rows(theirs)
    # the Default experiment is the store's own: MLflow inserted it on opening, as in the store it built
    a, b = mine.get_experiment("0"), built.get_experiment("0")
    assert (a.name, a.artifact_location, a.lifecycle_stage) == (b.name, b.artifact_location, b.lifecycle_stage)
    assert mine.create_experiment("x") == built.create_experiment("x") == "1"


def test_a_stale_schema_copy_is_refused_and_other_stores_are_left_alone(cache, tmp_path):
    store_schema.lay_down(SQLITE_PREFIX + str(tmp_path / "first.db"))
    with sqlite3.connect(store_schema.template_path()) as con:
        con.execute("UPDATE alembic_version SET version_num = 'stale'")
    con.close()
    stale = SQLITE_PREFIX + str(tmp_path / "second.db")
    assert store_schema.lay_down(stale)
    with pytest.raises(MlflowException, match="schema"):
        MlflowClient(stale).search_experiments()
    existing = tmp_path / "existing.db"
    existing.write_bytes(b"not a store")
    assert not store_schema.lay_down(SQLITE_PREFIX + str(existing))
    assert existing.read_bytes() == b"not a store"
    assert not store_schema.lay_down("http://127.0.0.1:5000")
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))
