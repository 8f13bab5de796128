"""A keyed seal on Ray Tune's state files, so that ``--resume`` never unpickles a state this user's driver did not
write. Ray restores a study by unpickling ``tuner.pkl``, the cloudpickled trials in ``experiment_state-*.json``,
the searcher's state and the trials' ``error.pkl``: a planted file would run its code.

The driver records HMAC-SHA256 (RFC 2104) of each such file in ``<tune dir>/diffseg_state_seal.json`` whenever
they change (a Tune callback, after each of Ray's saves, and once after ``fit``), keyed with a per-user secret kept
outside the study folder (``$XDG_CONFIG_HOME/diffseg/state.key``, else ``~/.config/diffseg/state.key``; 32 random
bytes, created 0600 on first use). ``--resume`` verifies the seal before anything is restored; ``--trust-state``
skips the check for a folder copied from another user (the driver then seals the state with this user's key).

Ray saves its state in the driver's loop into a staging folder and copies it into the tune dir on a background
thread. The seal records the staged files' MACs in the iteration that saved them (``STAGED``), and the tune dir's once
the copy lands (the next iteration), so a driver killed between the two leaves a file that matches one of them: a
state file may be either version this user's driver wrote (a rollback by one save is not detected; planted bytes
are). Window: a driver killed -9 within the iteration that saved, between Ray's save and the seal (milliseconds),
or during the copy itself, leaves a state newer than its seal, which ``--resume`` refuses like a planted one (the
message says so; ``--trust-state`` continues).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path

from ..files import atomic_write_text
from ..folder import PLAN_FILE, STATE_FILE

SEAL_FILE = "diffseg_state_seal.json"
STAGED = "staged_hmac_sha256"  # the seal's MACs of the files in Ray's staging folder, name -> MAC
KEY_BYTES = 32
OURS = {STATE_FILE, PLAN_FILE, SEAL_FILE}  # diffseg's own files in a tune dir (read as JSON, never unpickled)


def key_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "diffseg" / "state.key"


def user_key() -> bytes:
    """This user's seal key, created (0600, in a 0700 folder) on first use."""
    path = key_path()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another driver created it first
            return path.read_bytes()
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(KEY_BYTES))
    key = path.read_bytes()
    if len(key) < KEY_BYTES:
        raise ValueError(f"{path}: the state seal key is shorter than {KEY_BYTES} bytes; delete it (a new one is "
                         "made) and resume with --trust-state")
    return key


def _top_files(folder: Path) -> list[Path]:
    """Every top-level file of a tune dir (or of Ray's staging folder) but diffseg's own."""
    return [p for p in folder.iterdir() if p.is_file() and p.name not in OURS]


def state_files(tune_dir: Path) -> list[Path]:
    """The files Ray may read on restore: every top-level file but diffseg's own, and the trials' pickles."""
    return sorted(_top_files(tune_dir) + [p for p in tune_dir.glob("*/*.pkl") if p.is_file()])


def _mac(key: bytes, path: Path) -> str:
    return hmac.new(key, path.read_bytes(), hashlib.sha256).hexdigest()


def top_level(tune_dir: Path) -> frozenset | None:
    """The tune dir's entries, with size and mtime for its top-level state files (None: no such folder): one
    directory listing and a stat per top-level file, whatever the number of trials."""
    def entry(e: os.DirEntry) -> tuple:
        if e.name in OURS or e.is_dir():
            return (e.name,)
        st = e.stat()
        return e.name, st.st_size, st.st_mtime_ns

    try:
        with os.scandir(tune_dir) as entries:
            return frozenset(entry(e) for e in entries)
    except (FileNotFoundError, NotADirectoryError):
        return None


class Sealer:
    """Keeps ``<tune dir>/diffseg_state_seal.json`` current; a file is re-read only when its size or mtime moved.
    It holds no key (Ray pickles its callbacks, this one's sealer included, into ``tuner.pkl``). Given Ray's
    staging folder, it also records the MACs of the files staged there (``STAGED``): the bytes Ray's background copy
    is about to write into the tune dir, so a driver killed before the seal follows the copy leaves a state that
    ``problem`` accepts in either version."""

    def __init__(self, tune_dir: Path):
        self.dir = Path(tune_dir)
        self._seen: dict[str, tuple[int, int, str]] = {}
        self._staged_seen: dict[str, tuple[int, int, str]] = {}
        self._top: frozenset | None = None  # ``top_level`` of the tune dir when last sealed
        self._staging: Path | None = None
        self._staging_top: frozenset | None = None
        self._written: dict | None = None

    def __setstate__(self, state: dict) -> None:
        """A sealer unpickled from the ``tuner.pkl`` of a study begun by an earlier diffseg (``--resume`` after an
        upgrade) gets the attributes it lacks."""
        self.__init__(state["dir"])
        self.__dict__.update(state)

    def seal(self, tune_dir: Path | None = None, staging: Path | None = None) -> None:
        """Seal ``tune_dir`` (default: the one given at construction; a restored study passes where it is now) and
        the files staged in ``staging`` (Ray's driver staging folder; default: the last one given)."""
        if tune_dir is not None and Path(tune_dir) != self.dir:
            self.dir, self._seen = Path(tune_dir), {}
        if staging is not None:
            self._staging = Path(staging)
        top = top_level(self.dir)  # before the files are read: a change while they are is seen by the next check
        if top is None:
            self._top = None
            return
        key = functools.cache(user_key)  # read only if a file has to be (re-)MACed
        macs = _macs(key, self.dir, state_files(self.dir), self._seen)
        staging_top = top_level(self._staging) if self._staging is not None else None
        staged = {} if staging_top is None else _macs(key, self._staging, _top_files(self._staging),
                                                       self._staged_seen)
        doc = {"hmac_sha256": macs, STAGED: staged}
        if doc != self._written or not (self.dir / SEAL_FILE).exists():
            atomic_write_text(self.dir / SEAL_FILE, json.dumps(doc, indent=1, sort_keys=True))
            self._written = doc
        self._top, self._staging_top = top | {(SEAL_FILE,)}, staging_top

    def seal_if_moved(self, tune_dir: Path | None = None, staging: Path | None = None) -> None:
        """``seal`` if the tune dir's top level moved since the last seal (``top_level``: Ray's copy of its saved
        state landed, a trial folder or file came or went, the seal file went) or the staging folder's did (Ray
        saved). The trials' pickles in existing trial folders change only on trial events, after which the caller
        seals in full (``progress.SealState``)."""
        moved = tune_dir is not None and Path(tune_dir) != self.dir
        staging = Path(staging) if staging is not None else self._staging
        if moved or self._top is None or top_level(self.dir) != self._top \
                or (staging is not None and top_level(staging) != self._staging_top):
            self.seal(tune_dir, staging)


def _macs(key: Callable[[], bytes], root: Path, files: list[Path],
          seen: dict[str, tuple[int, int, str]]) -> dict[str, str]:
    """``root``-relative name -> MAC of each file, re-read only where its size or mtime moved (``seen`` is the
    cache, pruned to ``files``); ``key()`` is called only for a file read."""
    macs = {}
    for p in files:
        rel, st = p.relative_to(root).as_posix(), p.stat()
        old = seen.get(rel)
        if old is None or old[:2] != (st.st_size, st.st_mtime_ns):
            seen[rel] = (st.st_size, st.st_mtime_ns, _mac(key(), p))
        macs[rel] = seen[rel][2]
    for rel in set(seen) - set(macs):
        del seen[rel]
    return macs


def problem(tune_dir: Path) -> str | None:
    """Why the Ray state in ``tune_dir`` may not be restored (no seal, a file added, changed or unsealed), or None."""
    files = state_files(tune_dir)
    if not files:
        return None
    trust = "if you copied this folder from another user and trust it, resume with --trust-state"
    seal_path = tune_dir / SEAL_FILE
    try:
        doc = json.loads(seal_path.read_text())
        sealed, staged = doc["hmac_sha256"], doc.get(STAGED, {})
    except FileNotFoundError:
        return f"{tune_dir}: Ray's state has no diffseg seal (written by another diffseg or planted); {trust}"
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
        return f"{seal_path}: unreadable seal; {trust}"
    if not isinstance(sealed, dict) or not isinstance(staged, dict):
        return f"{seal_path}: unreadable seal; {trust}"
    key = user_key()
    for p in files:
        rel = p.relative_to(tune_dir).as_posix()
        macs = [str(m) for m in (sealed.get(rel), staged.get(rel) if "/" not in rel else None) if m is not None]
        actual = _mac(key, p)
        if not any(hmac.compare_digest(m, actual) for m in macs):
            what = "was not written by this user's diffseg driver" if not macs else "changed after it was sealed"
            return (f"{p}: this Ray state file {what} (planted, copied from another user, or left newer than its "
                    f"seal by a driver killed -9 within a step); restoring it would unpickle it. Refused; {trust}")
    return None
