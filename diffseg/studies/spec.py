"""Declarative study files (``search_spaces/<study>.yaml``), validated before anything runs.

Keys: ``description`` (one line), ``experiment`` (default for every trial), ``fixed`` (dotted TrialConfig keys),
``grid`` (axes; an axis named by a dotted config key takes scalar values, any other axis takes *arms*: mappings
of dotted keys plus an optional ``label``), ``search`` (sampled dimensions: ``{type: choice, values}``,
``{type: uniform|loguniform, low, high}``, ``{type: randint, low, high}``), ``algorithm`` (``grid``: the grid
times ``num_samples`` draws of the search dimensions; ``optuna``: Optuna TPE over the search dimensions, one
persistent Optuna study per dataset and seed), ``num_samples``, ``scheduler`` (``{type: asha, grace_period,
reduction_factor, max_t}``), ``seeds``, ``datasets``, ``budgets`` (per-budget overrides of dotted keys;
``seeds``/``datasets`` allowed too). What trials are selected on (metric and mode) is not a study setting: each
experiment owns it (``experiments.result.SELECTION``); a study whose arms mix experiments with different metrics
cannot use ASHA or Optuna, which need one metric.

Special values resolved per dataset at study start from its fingerprint: ``diffusion.weighting: fingerprint``,
``diffusion.timestep_sampler: fingerprint`` and ``diffusion.final_noise: fingerprint``.
"""

from __future__ import annotations

import itertools
import math
import re
import unicodedata
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from ..budgets import BUDGETS, budget_overlay
from ..data.registry import get_spec
from ..experiments.config import SECTIONS, TrialConfig
from ..experiments.kinds import SEGMENTATION, SELECTION, Selection
from ..registry import suggest

SEARCH_SPACES = Path(__file__).resolve().parents[2] / "search_spaces"
TOP_KEYS = ("description", "experiment", "fixed", "grid", "search", "algorithm", "num_samples", "scheduler",
            "seeds", "datasets", "budgets", "baseline")
DIM_TYPES = {"choice": ("values",), "uniform": ("low", "high"), "loguniform": ("low", "high"),
             "randint": ("low", "high")}
FINGERPRINT = "fingerprint"
FINGERPRINT_KEYS = ("diffusion.weighting", "diffusion.timestep_sampler", "diffusion.final_noise")


class SpecError(ValueError):
    """A study file problem; the message names the file and the field."""


@dataclass(frozen=True)
class Arm:
    label: str
    overrides: dict[str, Any]


@dataclass
class StudySpec:
    name: str
    path: Path
    description: str = ""
    experiment: str = SEGMENTATION
    fixed: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    search: dict[str, dict[str, Any]] = field(default_factory=dict)
    algorithm: str = "grid"
    num_samples: int = 1
    scheduler: dict[str, Any] | None = None
    seeds: list[int] = field(default_factory=lambda: [0])
    datasets: list[str] = field(default_factory=list)
    budgets: dict[str, dict[str, Any]] = field(default_factory=dict)
    baseline: str | None = None  # the arm every other arm is compared with (default: the first arm)

    def baseline_arm(self) -> str:
        return self.baseline if self.baseline is not None else self.arms()[0].label

    def arms(self) -> list[Arm]:
        """The cartesian product of the grid axes, each as one labelled set of overrides."""
        axes = []
        for axis, values in self.grid.items():
            opts = []
            for v in values:
                if isinstance(v, dict):
                    over = {k: x for k, x in v.items() if k != "label"}
                    opts.append(Arm(str(v.get("label", _label(over))), over))
                else:
                    opts.append(Arm(f"{axis.split('.')[-1]}={v}", {axis: v}))
            axes.append(opts)
        out = []
        for combo in itertools.product(*axes) if axes else [()]:
            over: dict[str, Any] = {}
            for arm in combo:
                clash = sorted(set(over) & set(arm.overrides))
                if clash:
                    raise SpecError(f"{self.path}: grid axes set the same key(s) {clash} (arm {arm.label!r}); "
                                    "each key may be set by one axis only")
                over.update(arm.overrides)
            out.append(Arm("/".join(a.label for a in combo) or "default", over))
        return out

    def experiments(self) -> list[str]:
        """The experiment of every arm, in arm order."""
        base = self.fixed.get("experiment", self.experiment)
        return [arm.overrides.get("experiment", base) for arm in self.arms()]

    def selection(self) -> Selection | None:
        """The selection metric and mode shared by every arm (``SELECTION`` of their experiments), or None when
        the arms' experiments select on different metrics (each trial then uses its own)."""
        found = {SELECTION[e] for e in self.experiments() if e in SELECTION}
        return found.pop() if len(found) == 1 else None

    def for_budget(self, budget: str, dataset: str | None = None) -> tuple[dict[str, Any], list[int], list[str]]:
        """(config overlay of the budget for ``dataset`` and the study's budget overrides, seeds, datasets)."""
        extra = dict(self.budgets.get(budget, {}))
        seeds = extra.pop("seeds", self.seeds)
        datasets = extra.pop("datasets", self.datasets)
        return {**budget_overlay(budget, dataset), **extra}, list(seeds), list(datasets)


def _label(over: dict[str, Any]) -> str:
    return ",".join(f"{k.split('.')[-1]}={v}" for k, v in over.items()) or "default"


def config_keys() -> set[str]:
    keys = {f.name for f in fields(TrialConfig) if f.name not in SECTIONS}
    for section, cls in SECTIONS.items():
        keys |= {f"{section}.{f.name}" for f in fields(cls)}
    return keys | {"diffusion.final_noise"}


def study_path(name: str) -> Path:
    return SEARCH_SPACES / f"{name}.yaml"


def list_studies() -> dict[str, str]:
    out = {}
    for p in sorted(SEARCH_SPACES.glob("*.yaml")):
        with open(p) as fh:
            out[p.stem] = (yaml.safe_load(fh) or {}).get("description", "")
    return out


MAX_STUDY_BYTES = 1 << 20  # a study file is a page of YAML: 1 MiB is far beyond any real one
MAX_YAML_NODES = 100_000  # YAML nodes after aliases are expanded (an alias bomb expands exponentially)
MAX_TRIALS = 10_000  # planned trials (arms x datasets x seeds x samples) a study may have
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")  # a study name is a folder name in --out


def _expanded_nodes(node, memo: dict) -> int:
    """Nodes of the YAML graph with every alias expanded, counted in linear time (shared nodes memoised)."""
    if id(node) not in memo:
        memo[id(node)] = 0  # a recursive alias counts once
        children = node.value if isinstance(node.value, list) else []
        kids = [c for pair in children for c in (pair if isinstance(pair, tuple) else (pair,))]
        memo[id(node)] = 1 + sum(_expanded_nodes(k, memo) for k in kids)
    return memo[id(node)]


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses a key given twice in one mapping (plain YAML keeps the last silently); merge keys
    (``<<: *anchor``) work as YAML defines them (the mapping's own keys override merged ones); a document whose
    aliases expand beyond ``MAX_YAML_NODES`` nodes is refused before it is built."""

    def construct_document(self, node):
        n = _expanded_nodes(node, {})
        if n > MAX_YAML_NODES:
            raise yaml.constructor.ConstructorError(
                None, None, f"the document expands to {n} YAML nodes through its aliases (more than "
                f"{MAX_YAML_NODES}): refused", node.start_mark)
        return super().construct_document(node)

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first at line {seen[key] + 1})", key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


# top-level key -> (accepted types, words for the message)
SHAPES = {"description": (str, "a string"), "experiment": (str, "a string"), "fixed": (dict, "a mapping"),
          "grid": (dict, "a mapping of axes"), "search": (dict, "a mapping of dimensions"),
          "algorithm": (str, "a string"), "num_samples": (int, "an integer"),
          "scheduler": ((dict, type(None)), "a mapping"), "seeds": (list, "a list of integers"),
          "datasets": (list, "a list of dataset names"), "budgets": (dict, "a mapping of budgets"),
          "baseline": (str, "an arm label")}


def _check_shapes(path: Path, raw: dict[str, Any]) -> None:
    for key, value in raw.items():
        types_, words = SHAPES[key]
        if not isinstance(value, types_) or isinstance(value, bool):
            raise SpecError(f"{path}: {key} must be {words}, got {value!r}")
    for key, value in raw.get("budgets", {}).items():
        if not isinstance(value, dict):
            raise SpecError(f"{path}: budgets.{key} must be a mapping of config keys, got {value!r}")
    if not all(isinstance(d, str) for d in raw.get("datasets", [])):
        raise SpecError(f"{path}: datasets must be a list of dataset names, got {raw['datasets']!r}")


def load_spec(name_or_path: str) -> StudySpec:
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = study_path(name_or_path)
        if not path.exists():
            raise SpecError(f"unknown study {name_or_path!r}; allowed: {sorted(list_studies())}")
    if not SAFE_NAME.fullmatch(path.stem):
        raise SpecError(f"{path}: the study name {path.stem!r} (the file name) must be letters, digits, '_', '-' "
                        "or '.', starting with a letter or digit (it names folders in --out)")
    try:
        size = path.stat().st_size
        if size > MAX_STUDY_BYTES:
            raise SpecError(f"{path}: {size} bytes; a study file may have at most {MAX_STUDY_BYTES}")
        with open(path, encoding="utf-8") as fh:
            raw = yaml.load(fh, Loader=_UniqueKeyLoader) or {}
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except (OSError, yaml.YAMLError) as exc:
        text = str(exc)
        raise SpecError(f"{path}: cannot read study file ({text[:500]}{' ...' if len(text) > 500 else ''})") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: a study file must be a mapping")
    owned = sorted({"metric", "mode"} & set(raw))
    if owned:
        raise SpecError(f"{path}: {owned}: the selection metric and mode are set by each trial's experiment "
                        f"({', '.join(f'{e}: {s.metric} ({s.mode})' for e, s in SELECTION.items())}); "
                        "remove the key(s)")
    unknown = sorted(set(raw) - set(TOP_KEYS))
    if unknown:
        raise SpecError(f"{path}: unknown key(s) {unknown}; allowed: {list(TOP_KEYS)}")
    _check_shapes(path, raw)
    spec = StudySpec(name=path.stem, path=path, **raw)
    validate(spec)
    return spec


def _check_keys(path: Path, where: str, keys, allowed: set[str]) -> None:
    bad = sorted(k for k in keys if k not in allowed)
    if bad:
        raise SpecError(f"{path}: {where}: unknown config key(s) {bad}; "
                        + "; ".join(f"{k!r}: {suggest(k, allowed)}" for k in bad))


def _placeholder(over: dict[str, Any]) -> dict[str, Any]:
    """Replace fingerprint values with valid stand-ins so the rest of a config can be validated now."""
    out = dict(over)
    if out.get("diffusion.weighting") == FINGERPRINT:
        out["diffusion.weighting"], out["diffusion.weighting_params"] = "curve", {"values": [1.0, 1.0]}
    if out.get("diffusion.timestep_sampler") == FINGERPRINT:
        out["diffusion.timestep_sampler"] = "importance"
        out["diffusion.timestep_sampler_params"] = {"curve": [1.0, 1.0], "correct": False}
    fn = out.pop("diffusion.final_noise", None)
    if fn is not None and fn != FINGERPRINT:
        raise ValueError(f"diffusion.final_noise={fn!r} is not allowed; allowed: ['fingerprint'] "
                         "(use diffusion.logsnr_end or diffusion.zero_terminal_snr for explicit values)")
    if fn == FINGERPRINT:
        out["diffusion.logsnr_end"] = -12.0
    return out


def planned_trials(spec: StudySpec) -> int:
    """Arms x datasets x seeds x samples at the largest of the study's budgets, counted without expanding."""
    arms = math.prod(len(v) if isinstance(v, list) else 1 for v in spec.grid.values())
    sets = [(len(spec.for_budget(b)[1]), len(spec.for_budget(b)[2])) for b in BUDGETS]
    return arms * max(s * d for s, d in sets) * (spec.num_samples if isinstance(spec.num_samples, int) else 1)


def validate(spec: StudySpec, budgets: tuple[str, ...] = tuple(BUDGETS)) -> None:
    p = spec.path
    allowed = config_keys()
    _check_keys(p, "fixed", spec.fixed, allowed)
    n = planned_trials(spec)
    if n > MAX_TRIALS:
        raise SpecError(f"{p}: {n} trials planned (arms x datasets x seeds x num_samples); a study may have at most "
                        f"{MAX_TRIALS}")
    labels = [a.label for a in spec.arms()]
    bad = sorted({a for a in labels if any(unicodedata.category(ch).startswith("C") for ch in a)})
    if bad:
        raise SpecError(f"{p}: arm label(s) {bad} hold control characters; use printable text")
    twice = sorted({x for x in labels if labels.count(x) > 1})
    if twice:
        raise SpecError(f"{p}: arm label(s) {twice} occur more than once; give each arm its own label")
    if spec.baseline is not None and spec.baseline not in labels:
        raise SpecError(f"{p}: baseline={spec.baseline!r} is not an arm; {suggest(spec.baseline, labels)}")
    if spec.algorithm not in ("grid", "optuna"):
        raise SpecError(f"{p}: algorithm={spec.algorithm!r} is not allowed; allowed: ['grid', 'optuna']")
    if spec.algorithm == "optuna" and (spec.grid or not spec.search):
        raise SpecError(f"{p}: algorithm 'optuna' needs search dimensions and takes no grid axes")
    bad_exp = sorted({str(e) for e in spec.experiments() if e not in SELECTION})
    if bad_exp:
        raise SpecError(f"{p}: experiment(s) {bad_exp} not allowed; allowed: {sorted(SELECTION)}")
    if spec.selection() is None and (spec.scheduler is not None or spec.algorithm == "optuna"):
        raise SpecError(f"{p}: the arms mix experiments that select on different metrics "
                        f"({sorted({SELECTION[e].metric for e in spec.experiments()})}); ASHA and Optuna need one")
    if not isinstance(spec.num_samples, int) or spec.num_samples < 1:
        raise SpecError(f"{p}: num_samples must be a positive integer, got {spec.num_samples!r}")
    if not spec.datasets:
        raise SpecError(f"{p}: datasets: give at least one dataset")
    if not spec.seeds or not all(isinstance(s, int) for s in spec.seeds):
        raise SpecError(f"{p}: seeds must be a non-empty list of integers, got {spec.seeds!r}")
    for axis, values in spec.grid.items():
        if not isinstance(values, list) or not values:
            raise SpecError(f"{p}: grid.{axis} must be a non-empty list")
        for v in values:
            if isinstance(v, dict):
                _check_keys(p, f"grid.{axis} arm {v.get('label', '')!r}", [k for k in v if k != "label"], allowed)
            elif axis not in allowed:
                raise SpecError(f"{p}: grid.{axis}: scalar values need a config key as axis name; "
                                f"allowed: {sorted(allowed)}")
    _check_keys(p, "search", spec.search, allowed)
    for key, dim in spec.search.items():
        t = dim.get("type") if isinstance(dim, dict) else None
        if t not in DIM_TYPES:
            raise SpecError(f"{p}: search.{key}: type={t!r} is not allowed; allowed: {sorted(DIM_TYPES)}")
        missing = [k for k in DIM_TYPES[t] if k not in dim]
        if missing:
            raise SpecError(f"{p}: search.{key}: missing {missing}")
        if t != "choice" and not dim["low"] < dim["high"]:
            raise SpecError(f"{p}: search.{key}: low ({dim['low']}) must be below high ({dim['high']})")
        if t == "loguniform" and dim["low"] <= 0:
            raise SpecError(f"{p}: search.{key}: loguniform needs low > 0, got {dim['low']}")
        if t == "choice" and not dim["values"]:
            raise SpecError(f"{p}: search.{key}: choice needs values")
    if spec.scheduler is not None:
        if spec.scheduler.get("type") != "asha":
            raise SpecError(f"{p}: scheduler.type={spec.scheduler.get('type')!r} is not allowed; allowed: ['asha']")
        bad = sorted(set(spec.scheduler) - {"type", "grace_period", "reduction_factor", "max_t"})
        if bad:
            raise SpecError(f"{p}: scheduler: unknown key(s) {bad}")
    for budget in spec.budgets:
        if budget not in BUDGETS:
            raise SpecError(f"{p}: budgets.{budget}: unknown budget; allowed: {sorted(BUDGETS)}")
        _check_keys(p, f"budgets.{budget}", [k for k in spec.budgets[budget] if k not in ("seeds", "datasets")],
                    allowed)
    for name in spec.datasets:
        try:
            get_spec(name)
        except ValueError as exc:
            raise SpecError(f"{p}: datasets: {exc}") from None
    samples = {k: (d["values"][0] if d["type"] == "choice" else d["low"]) for k, d in spec.search.items()}
    for budget in budgets:
        overlay, _, _ = spec.for_budget(budget)
        for arm in spec.arms():
            flat = {"experiment": spec.experiment, **overlay, **spec.fixed, **arm.overrides, **samples}
            try:
                TrialConfig.from_dict(_placeholder(flat)).validate()
            except ValueError as exc:
                raise SpecError(f"{p}: arm {arm.label!r} (budget {budget}): {exc}") from None
