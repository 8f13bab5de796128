"""The preprocessed-array cache's own facts: its version, default location and the memo of file hashes."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..files import atomic_write_text, file_sha256

CACHE_VERSION = 1


def default_cache_dir() -> Path:
    return Path(os.environ.get("DIFFSEG_CACHE_DIR", Path.home() / ".cache" / "diffseg"))


class HashIndex:
    """Memo of file content hashes keyed by (absolute path, size, mtime_ns), stored as JSON in the cache dir."""

    def __init__(self, cache_dir: Path):
        self.path = cache_dir / "hash-index.json"
        try:
            self._data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self._data = {}
        self._dirty = False

    def sha256(self, path: Path) -> str:
        st = path.stat()
        key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
        if key not in self._data:
            self._data[key] = file_sha256(path)
            self._dirty = True
        return self._data[key]

    def save(self) -> None:
        if self._dirty:
            atomic_write_text(self.path, json.dumps(self._data))
