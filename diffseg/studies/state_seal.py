"""A keyed seal on Ray Tune's state files, so that ``--resume`` never unpickles a state this user's driver did not
write. Ray restores a study by unpickling ``tuner.pkl``, the cloudpickled trials in ``experiment_state-*.json``,
the searcher's state and the trials' ``error.pkl``: a planted file would run its code.

The driver records HMAC-SHA256 (RFC 2104) of each such file in ``<tune dir>/diffseg_state_seal.json`` whenever
they change (a Tune callback, after each of Ray's saves, and once after ``fit``), keyed with a per-user secret kept
outside the study folder (``$XDG_CONFIG_HOME/diffseg/state.key``, else ``~/.config/diffseg/state.key``; 32 random
bytes, created 0600 on first use). ``--resume`` verifies the seal before anything is restored; ``--trust-state``
skips the check for a folder copied from another user (the driver then seals the state with this user's key).

Window: Ray saves its state in the driver's loop into a staging folder and copies it into the tune dir on a
background thread; the seal follows at the end of the loop iteration after the copy lands (up to one iteration, about
0.1 s, later). A driver killed -9 in between leaves a state newer than its seal, which ``--resume`` refuses like a
planted one (the message says so; ``--trust-state`` continues).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path

from ..files import atomic_write_text
from ..folder import PLAN_FILE, STATE_FILE

SEAL_FILE = "diffseg_state_seal.json"
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


def state_files(tune_dir: Path) -> list[Path]:
    """The files Ray may read on restore: every top-level file but diffseg's own, and the trials' pickles."""
    top = [p for p in tune_dir.iterdir() if p.is_file() and p.name not in OURS]
    return sorted(top + [p for p in tune_dir.glob("*/*.pkl") if p.is_file()])


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
    It holds no key (Ray pickles its callbacks, this one's sealer included, into ``tuner.pkl``)."""

    def __init__(self, tune_dir: Path):
        self.dir = Path(tune_dir)
        self._seen: dict[str, tuple[int, int, str]] = {}
        self._top: frozenset | None = None  # ``top_level`` when last sealed

    def seal(self, tune_dir: Path | None = None) -> None:
        """Seal ``tune_dir`` (default: the one given at construction; a restored study passes where it is now)."""
        if tune_dir is not None and Path(tune_dir) != self.dir:
            self.dir, self._seen = Path(tune_dir), {}
        top = top_level(self.dir)  # before the files are read: a change while they are is seen by the next check
        if top is None:
            self._top = None
            return
        macs, changed, key = {}, False, None
        for p in state_files(self.dir):
            rel, st = p.relative_to(self.dir).as_posix(), p.stat()
            old = self._seen.get(rel)
            if old is None or old[:2] != (st.st_size, st.st_mtime_ns):
                key = key or user_key()
                self._seen[rel] = (st.st_size, st.st_mtime_ns, _mac(key, p))
                changed = True
            macs[rel] = self._seen[rel][2]
        if changed or set(macs) != set(self._seen) or not (self.dir / SEAL_FILE).exists():
            self._seen = {k: v for k, v in self._seen.items() if k in macs}
            atomic_write_text(self.dir / SEAL_FILE, json.dumps({"hmac_sha256": macs}, indent=1, sort_keys=True))
        self._top = top | {(SEAL_FILE,)}

    def seal_if_moved(self, tune_dir: Path | None = None) -> None:
        """``seal`` if the tune dir's top level moved since the last seal (``top_level``: Ray saved its experiment
        state, a trial folder or file came or went, the seal file went). The trials' pickles in existing trial
        folders change only on trial events, after which the caller seals in full (``progress.SealState``)."""
        moved = tune_dir is not None and Path(tune_dir) != self.dir
        if moved or self._top is None or top_level(self.dir) != self._top:
            self.seal(tune_dir)


def problem(tune_dir: Path) -> str | None:
    """Why the Ray state in ``tune_dir`` may not be restored (no seal, a file added, changed or unsealed), or None."""
    files = state_files(tune_dir)
    if not files:
        return None
    trust = "if you copied this folder from another user and trust it, resume with --trust-state"
    seal_path = tune_dir / SEAL_FILE
    try:
        sealed = json.loads(seal_path.read_text())["hmac_sha256"]
    except FileNotFoundError:
        return f"{tune_dir}: Ray's state has no diffseg seal (written by another diffseg or planted); {trust}"
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return f"{seal_path}: unreadable seal; {trust}"
    key = user_key()
    for p in files:
        rel = p.relative_to(tune_dir).as_posix()
        mac = sealed.get(rel) if isinstance(sealed, dict) else None
        if mac is None or not hmac.compare_digest(str(mac), _mac(key, p)):
            what = "was not written by this user's diffseg driver" if mac is None else "changed after it was sealed"
            return (f"{p}: this Ray state file {what} (planted, copied from another user, or left newer than its "
                    f"seal by a driver killed -9 within a step); restoring it would unpickle it. Refused; {trust}")
    return None
