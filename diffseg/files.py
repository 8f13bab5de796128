"""Generic file helpers used across the packages: atomic writes, safe file names, digests, advisory locks.

Atomic writes go to a temporary sibling and ``os.replace`` it onto the target, so a reader (or a resumed study)
never sees a half-written file."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def safe_name(name: str, length: int = 40, keep: str = "-_") -> str:
    """``name`` as a file-name part: alphanumerics and the characters in ``keep``, anything else '_'."""
    return "".join(ch if ch.isalnum() or ch in keep else "_" for ch in str(name))[:length]


def digest(obj) -> str:
    """SHA-256 of the canonical JSON of ``obj`` (sorted keys)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling path to write (any writer: ``to_parquet``, ``torch.save``, ...); on success it
    replaces ``path`` (with the permissions the umask gives a new file), on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600: the file follows the umask like any other
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it is renamed to ``final``, on error removed."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-"))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Exclusive advisory lock on ``path`` (created if needed), e.g. several trials building one cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class Busy(RuntimeError):
    """Another live process holds the lock; ``holder`` is what it wrote into the lock file."""

    def __init__(self, path: Path, holder: dict):
        super().__init__(f"{path} is held by {holder}")
        self.path, self.holder = path, holder


@contextlib.contextmanager
def owner_lock(path: Path, info: dict) -> Iterator[dict]:
    """Hold ``path`` exclusively for this process (``fcntl.flock``, released by the kernel when the process dies, so
    a lock file left by a killed process is taken over) and write ``info`` (+ pid, host, start time) into it.
    Raises ``Busy`` with the holder's info at once when another live process holds it."""
    import socket
    import time

    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        try:
            holder = json.loads(fh.read() or "{}")
        except ValueError:
            holder = {}
        fh.close()
        raise Busy(path, holder) from None
    fh.seek(0)
    stale = fh.read()
    mine = {**info, "pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    fh.seek(0)
    fh.truncate()
    fh.write(json.dumps(mine))
    fh.flush()
    try:
        yield {"taken_over": json.loads(stale) if stale.strip() else None, **mine}
    finally:
        fh.seek(0)
        fh.truncate()
        fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()
