import os
from pathlib import Path

import pytest

from diffseg.data.registry import data_dir

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real samples; their absence is an error, not a skip (CI has them)."""
    d = data_dir()
    if not (d / "SOURCES.md").exists():
        pytest.fail(f"real sample data not found at {d} (set DIFFSEG_DATA_DIR or place ../shared/data beside the repo)")
    return d


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("DIFFSEG_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "diffseg-cache"))
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
