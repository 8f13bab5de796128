"""A local MLflow tracking server on 127.0.0.1 with its artifact proxy (``--artifacts-destination``: clients log
artifacts through the server, never to a path of their own), for the cluster benchmark and the tests; the same
flags as the README's cluster recipe. Started in its own session so that it can be stopped (or killed) alone."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from ..folder import SQLITE_PREFIX
from .store_schema import lay_down


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def console_script(name: str) -> str:
    """A console script of this environment (mlflow, ray)."""
    return str(Path(sys.executable).with_name(name))


def start(db: Path, artifacts: Path, port: int, timeout_s: float = 90.0) -> subprocess.Popen:
    """``mlflow server`` on 127.0.0.1:``port`` (SQLite ``db``, artifacts served from ``artifacts``), returned once
    it answers ``/health``; raises ``RuntimeError`` if it does not within ``timeout_s``. A new ``db`` gets the
    cached schema first (``store_schema.lay_down``)."""
    lay_down(f"{SQLITE_PREFIX}{db}")
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = subprocess.Popen(
        [console_script("mlflow"), "server", "--backend-store-uri", f"{SQLITE_PREFIX}{db}", "--serve-artifacts",
         "--artifacts-destination", str(artifacts), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.5)
    stop(proc)
    raise RuntimeError(f"mlflow server on port {port} did not answer /health within {timeout_s:.0f} s")


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    proc.wait(timeout=30)
