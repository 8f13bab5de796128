"""The trial plan of a study invocation: arms x datasets x seeds (x num_samples draws), with the budget applied
per dataset and fingerprint values resolved per dataset (``fingerprint.load_or_compute`` under
``<out>/fingerprints``: train + val masks, the trial's resolution, preprocessing, split and base schedule)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..experiments.config import TrialConfig
from ..files import atomic_write_text
from ..fingerprint import load_or_compute, spec_for_trial
from ..folder import StudyFolder
from .spec import FINGERPRINT, FINGERPRINT_KEYS, StudySpec


@dataclass
class TrialPoint:
    label: str
    dataset: str
    seed: int
    config: dict[str, Any]  # dotted keys, fingerprints resolved
    fingerprint: str | None = None  # path of the fingerprint the point used

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "dataset": self.dataset, "seed": self.seed, "config": self.config,
                "fingerprint": self.fingerprint}


def needs_fingerprint(over: dict[str, Any]) -> bool:
    return any(over.get(k) == FINGERPRINT for k in FINGERPRINT_KEYS)


def resolve_fingerprint(flat: dict[str, Any], fp: dict[str, Any]) -> dict[str, Any]:
    out = dict(flat)
    d = fp["derived"]
    if out.get("diffusion.weighting") == FINGERPRINT:
        out["diffusion.weighting"], out["diffusion.weighting_params"] = "curve", {"values": d["weighting"]}
    if out.get("diffusion.timestep_sampler") == FINGERPRINT:
        out["diffusion.timestep_sampler"] = "importance"
        out["diffusion.timestep_sampler_params"] = {"curve": d["sampling_density"], "correct": False}
    if out.pop("diffusion.final_noise", None) == FINGERPRINT:
        out["diffusion.logsnr_end"] = d["recommended_logsnr_end"]
    return out


def fingerprint_for(flat: dict[str, Any], folder: StudyFolder, data_root, write: bool = True) -> tuple[dict, Path]:
    """The fingerprint of the point's dataset under the point's base schedule (no terminal modifiers)."""
    cfg = TrialConfig.from_dict({k: v for k, v in flat.items() if k != "diffusion.final_noise" and v != FINGERPRINT})
    return load_or_compute(folder.fingerprints, spec_for_trial(cfg), data_root, folder.cache, write=write)


def build_plan(spec: StudySpec, budget: str, datasets: list[str] | None, seeds: list[int] | None,
               folder: StudyFolder, data_root=None, overrides: dict[str, Any] | None = None,
               write: bool = True) -> list[TrialPoint]:
    """Every trial point; ``overrides`` (dotted keys, e.g. from ``--set``) apply last, to every trial.
    ``write=False`` (dry runs) computes missing fingerprints without writing them."""
    _, spec_seeds, spec_datasets = spec.for_budget(budget)
    points = []
    # seed-major order: an interrupted study has whole seeds of every dataset and arm
    for seed in seeds if seeds is not None else spec_seeds:
        for dataset in datasets or spec_datasets:
            overlay, _, _ = spec.for_budget(budget, dataset)
            for arm in spec.arms():
                flat = {"experiment": spec.experiment, **overlay, **spec.fixed, **arm.overrides,
                        "data.dataset": dataset, "seed": seed, "data.cache_dir": str(folder.cache), **(overrides or {})}
                if data_root is not None:
                    flat["data.data_root"] = str(data_root)
                fp_path = None
                if needs_fingerprint(flat):
                    fp, fp_path = fingerprint_for(flat, folder, data_root, write)
                    flat = resolve_fingerprint(flat, fp)
                TrialConfig.from_dict(flat).validate()
                points.append(TrialPoint(arm.label, dataset, seed, flat, str(fp_path) if fp_path else None))
    return points


def describe_plan(points: list[TrialPoint]) -> str:
    lines = [f"{'#':>3s}  {'arm':34s} {'dataset':22s} {'seed':>4s}  experiment  steps  px"]
    for i, p in enumerate(points):
        c = p.config
        lines.append(f"{i:3d}  {p.label[:34]:34s} {p.dataset[:22]:22s} {p.seed:4d}  {c.get('experiment', ''):10s}  "
                     f"{c.get('train.steps', ''):5}  {c.get('data.resolution', '')}")
    return "\n".join(lines)


_LOCATION_KEYS = ("data.cache_dir", "data.data_root", "output_dir")  # where, not what: a folder may move


def study_file_hash(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def save_plan(folder: StudyFolder, study: str, study_file: Path, points: list[TrialPoint]) -> Path:
    """Write the plan with the study file's hash (``folder.plan(study)``, beside the study's Ray state),
    atomically: what ``--resume`` compares with."""
    path = folder.plan(study)
    atomic_write_text(path, json.dumps({"study_file": str(study_file), "study_sha256": study_file_hash(study_file),
                                        "points": [p.to_dict() for p in points]}, indent=1))
    return path


def _what(p: dict[str, Any]) -> tuple:
    return (p["label"], p["dataset"], p["seed"],
            tuple(sorted((k, repr(v)) for k, v in p["config"].items() if k not in _LOCATION_KEYS)))


def resume_conflict(folder: StudyFolder, study: str, study_file: Path, points: list[TrialPoint]) -> str | None:
    """Why ``--resume`` must not continue with this study file and plan (None: it may). A folder written before
    plans were saved has nothing to compare with and may continue."""
    path = folder.plan(study)
    if not path.exists():
        return None
    saved = json.loads(path.read_text())
    old = {(p["label"], p["dataset"], p["seed"]): _what(p) for p in saved["points"]}
    new = {(p.label, p.dataset, p.seed): _what(p.to_dict()) for p in points}
    problems, now = [], study_file_hash(study_file)
    if now != saved["study_sha256"]:
        problems.append(f"the study file {study_file} changed since the study started (sha256 "
                        f"{saved['study_sha256'][:12]} then, {now[:12]} now)")
    gone, added = sorted(set(old) - set(new)), sorted(set(new) - set(old))
    changed = sorted(k for k in set(old) & set(new) if old[k] != new[k])
    for words, keys in (("no longer planned", gone), ("new", added), ("with a changed config", changed)):
        if keys:
            shown = ", ".join(f"{a}/{d}/s{s}" for a, d, s in keys[:5]) + (" ..." if len(keys) > 5 else "")
            problems.append(f"{len(keys)} trial(s) {words}: {shown}")
    for k in changed[:1]:
        before, after = dict(old[k][3]), dict(new[k][3])
        diff = sorted(key for key in set(before) | set(after) if before.get(key) != after.get(key))
        problems.append(f"e.g. {k[0]}/{k[1]}/s{k[2]} differs in {diff}")
    if not problems:
        return None
    return ("--resume refused: " + "; ".join(problems) + f" (the saved plan is {path}); restore the study file or "
            "start a new study in another --out")
