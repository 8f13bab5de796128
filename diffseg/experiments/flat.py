"""The one flattening rule of a trial config, shared by the MLflow params and the Parquet exports.

Every dataclass field is one key, ``<section>.<field>`` (``experiment``, ``seed``, ``output_dir`` at the top);
its column type comes from the field's type hint, so a column has the same type in every study: ``int`` ->
Int64, ``float`` -> float64, ``bool`` -> boolean, ``str`` -> string, anything else (tuples, parameter mappings)
-> canonical JSON text (sorted keys, missing and non-finite numbers as ``null``). A number list longer than
``LONG`` inside a parameter mapping (a fingerprint-derived weighting or sampling density: one value per t) is
moved to its own rows (``config_curves``) and replaced in the JSON by ``{"config_curves": n}``.
"""

from __future__ import annotations

import json
import math
import types
from dataclasses import fields
from typing import Any, Union, get_args, get_origin, get_type_hints

from .config import SECTIONS, TrialConfig

LONG = 32
_DTYPES = {bool: "boolean", int: "Int64", float: "float64", str: "string"}
JSON = "json"  # a string column holding JSON text


def _dtype(hint: Any) -> str:
    if get_origin(hint) in (Union, types.UnionType):
        (inner,) = [a for a in get_args(hint) if a is not type(None)]
        return _dtype(inner)
    return _DTYPES.get(hint, JSON)


def _schema() -> dict[str, str]:
    out = {}
    top = get_type_hints(TrialConfig)
    for f in fields(TrialConfig):
        if f.name in SECTIONS:
            hints = get_type_hints(SECTIONS[f.name])
            out.update({f"{f.name}.{g.name}": _dtype(hints[g.name]) for g in fields(SECTIONS[f.name])})
        else:
            out[f.name] = _dtype(top[f.name])
    return out


SCHEMA: dict[str, str] = _schema()  # flat key -> column type ("Int64", "float64", "boolean", "string", JSON)


def _clean(v: Any) -> Any:
    """JSON-safe: tuples as lists, NaN/inf as None (JSON has no NaN; polars and DuckDB refuse the literal)."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    return v


def to_json(v: Any) -> str:
    return json.dumps(_clean(v), sort_keys=True, allow_nan=False)


def _is_curve(v: Any) -> bool:
    return (isinstance(v, (list, tuple)) and len(v) > LONG
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v))


def flat_config(config: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(flat values keyed as in ``SCHEMA``, long-curve rows ``{key, index, value}``) of a nested config dict."""
    flat, curves = {}, []
    for key, dtype in SCHEMA.items():
        node: Any = config
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            flat[key] = None
        elif dtype != JSON:
            flat[key] = None if isinstance(node, float) and not math.isfinite(node) else node
        else:
            if isinstance(node, dict):
                node = dict(node)
                for name, v in node.items():
                    if _is_curve(v):
                        curves += [{"key": f"{key}.{name}", "index": i, "value": _clean(float(x))}
                                   for i, x in enumerate(v)]
                        node[name] = {"config_curves": len(v)}
            flat[key] = to_json(node)
    return flat, curves


def unflatten(flat: dict[str, Any], curves: dict[str, list[float]] | None = None) -> dict[str, Any]:
    """The dotted config dict ``TrialConfig.from_dict`` takes, from flat values (JSON text decoded, long curves
    put back from ``curves``: key -> values in index order). Missing values are left out (the field's default)."""
    out = {}
    for key, value in flat.items():
        if key not in SCHEMA or value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        if SCHEMA[key] == JSON:
            value = json.loads(value)
            if isinstance(value, dict):
                for name, v in value.items():
                    if isinstance(v, dict) and set(v) == {"config_curves"}:
                        value[name] = (curves or {})[f"{key}.{name}"]
        elif hasattr(value, "item"):
            value = value.item()
        if SCHEMA[key] == "Int64":
            value = int(value)
        out[key] = value
    return out
