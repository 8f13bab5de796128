"""The trial plan of a study invocation: arms x datasets x seeds (x num_samples draws), with fingerprint values
resolved per dataset (computed if missing, cached by dataset hash and schedule under ``<out>/fingerprints``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data import PrepConfig, load_dataset
from ..data.cache import digest, safe_name
from ..experiments.config import TrialConfig
from ..fingerprint import compute_fingerprint, load_fingerprint, save_fingerprint
from .spec import FINGERPRINT, StudySpec


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
    return any(over.get(k) == FINGERPRINT for k in
               ("diffusion.weighting", "diffusion.timestep_sampler", "diffusion.final_noise"))


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


def fingerprint_for(flat: dict[str, Any], out: Path, cache_dir: Path, data_root) -> tuple[dict, Path]:
    """The fingerprint of the point's dataset under the point's base schedule (no terminal modifiers)."""
    cfg = TrialConfig.from_dict({k: v for k, v in flat.items() if k != "diffusion.final_noise"
                                 and not (v == FINGERPRINT)})
    dc, res = cfg.diffusion, cfg.data.resolution
    sched_params = {k: v for k, v in dc.schedule_kwargs(res).items() if k not in ("logsnr_end", "zero_terminal_snr")}
    ds = load_dataset(cfg.data.dataset, PrepConfig(res), data_root, cache_dir)
    key = digest({"dataset": ds.dataset_hash, "schedule": dc.schedule, "T": dc.T, "params": sched_params,
                  "resolution": res})[:16]
    path = out / "fingerprints" / f"{safe_name(cfg.data.dataset)}-{key}" / "fingerprint.json"
    if path.exists():
        return load_fingerprint(path), path
    fp = compute_fingerprint(cfg.data.dataset, dc.schedule, dc.T, res, sched_params, data_root, cache_dir)
    save_fingerprint(fp, path)
    return fp, path


def build_plan(spec: StudySpec, budget: str, datasets: list[str] | None, seeds: list[int] | None, out: Path,
               cache_dir: Path, data_root=None, overrides: dict[str, Any] | None = None) -> list[TrialPoint]:
    """Every trial point; ``overrides`` (dotted keys, e.g. from ``--set``) apply last, to every trial."""
    overlay, spec_seeds, spec_datasets = spec.for_budget(budget)
    points = []
    for dataset in datasets or spec_datasets:
        for seed in seeds if seeds is not None else spec_seeds:
            for arm in spec.arms():
                flat = {"experiment": spec.experiment, **overlay, **spec.fixed, **arm.overrides,
                        "data.dataset": dataset, "seed": seed, "data.cache_dir": str(cache_dir), **(overrides or {})}
                if data_root is not None:
                    flat["data.data_root"] = str(data_root)
                fp_path = None
                if needs_fingerprint(flat):
                    fp, fp_path = fingerprint_for(flat, out, cache_dir, data_root)
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


def plan_json(points: list[TrialPoint]) -> str:
    return json.dumps([p.to_dict() for p in points])
