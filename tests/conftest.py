import os
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from diffseg.data.registry import data_dir
from diffseg.studies import local_server
from diffseg.studies.local_server import console_script, free_port

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


if os.environ.get("PYTEST_XDIST_WORKER"):  # one of `make test`'s parallel processes: one torch thread each
    import torch

    torch.set_num_threads(1)


def pytest_collection_modifyitems(items):
    """The longest tests first, by ``slow(seconds=...)`` (each one's wall time in ``make test``), the rest in
    collection order after them: with ``--dist load --maxschedchunk 1`` a test process takes the next test when
    it is free (longest-processing-time-first), so the processes end together instead of one running a long test
    alone at the end. xdist sends each of the n processes its first two tests at once: the first 2n are paired
    longest with shortest, so no process starts with two of the longest."""
    def seconds(item) -> float:
        mark = item.get_closest_marker("slow")
        return mark.kwargs.get("seconds", 0) if mark else 0

    items.sort(key=seconds, reverse=True)  # stable: equal ones keep their order
    n = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", 0))  # set by xdist in the processes that collect
    if n > 1 and len(items) >= 2 * n:
        head = items[:2 * n]
        items[:2 * n] = [t for i in range(n) for t in (head[i], head[2 * n - 1 - i])]


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
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.getbasetemp() / "config"))  # the state seal's key
    scratch = tmp_path_factory.getbasetemp() / "scratch"  # trials without output_dir: pytest prunes old runs
    scratch.mkdir(exist_ok=True)
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def bin_path(name: str) -> str:
    """A console script of this environment (mlflow, ray)."""
    return console_script(name)


@pytest.fixture(scope="session")
def ray_session():
    import ray

    from diffseg.studies.runner import start_ray

    start_ray(None)  # the study's own embedded Ray (its settings and environment), shared by the session's tests
    yield
    ray.shutdown()


def start_mlflow_server(db: Path, artifacts: Path, port: int) -> subprocess.Popen:
    """A real ``mlflow server`` on 127.0.0.1 (its own session, so a test can kill it), once it answers /health."""
    try:
        return local_server.start(db, artifacts, port)
    except RuntimeError as exc:
        pytest.fail(str(exc))


def stop_server(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    local_server.stop(proc, sig)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    proc = start_mlflow_server(root / "db.sqlite", root / "artifacts", port)
    yield f"http://127.0.0.1:{port}"
    stop_server(proc)


@pytest.fixture(scope="session")
def browser():
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail("headless Chromium is needed: apt-get install chromium chromium-driver (.ci/run does this)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--no-first-run",
                 "--disable-sync", "--window-size=1400,1000"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    yield driver
    driver.quit()
