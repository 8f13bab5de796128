"""Valid ranges of numeric config fields, stated next to each field (``bounded``) and checked in one place
(``check``): every float must be finite, every bounded number inside its bounds; a tuple field's bounds apply to
each of its items. A value out of range is refused naming the field, never clipped."""

from __future__ import annotations

import math
from dataclasses import field, fields
from typing import Any


def bounded(default: Any, ge: float | None = None, le: float | None = None, gt: float | None = None) -> Any:
    """A dataclass field with its valid range: ``ge <= value <= le`` (and ``value > gt``); None: unbounded."""
    kw = {"default_factory": lambda: default} if isinstance(default, (list, dict)) else {"default": default}
    return field(metadata={"range": (ge, le, gt)}, **kw)


def _words(ge, le, gt) -> str:
    parts = [f">= {ge:g}" if ge is not None else None, f"> {gt:g}" if gt is not None else None,
             f"<= {le:g}" if le is not None else None]
    return " and ".join(p for p in parts if p)


def check(obj: Any, where: str) -> None:
    """Raise ``ValueError`` naming ``<where>.<field>`` for a non-finite float or a value outside its range."""
    for f in fields(obj):
        value = getattr(obj, f.name)
        items = value if isinstance(value, (tuple, list)) else (value,)
        for v in items:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            if isinstance(v, float) and not math.isfinite(v):
                raise ValueError(f"{where}.{f.name}: must be a finite number, got {v}")
            ge, le, gt = f.metadata.get("range", (None, None, None))
            if (ge is not None and v < ge) or (le is not None and v > le) or (gt is not None and v <= gt):
                raise ValueError(f"{where}.{f.name}: must be {_words(ge, le, gt)}, got {value!r}")
