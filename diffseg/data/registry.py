"""Dataset registry: names as search-space files and the CLI use them.

Built in: ``isic2016``, ``isic2017``, ``isic2018``, ``monuseg``, ``kvasir_seg`` (Kvasir-SEG), ``synthetic-blob``,
``synthetic-nuclei``, ``synthetic-clusters``; ``folder:PATH`` (images/ + masks/), ``masks:PATH`` (masks only),
``nnunet:PATH`` (an nnU-Net v2 raw dataset; ``nnunet:PATH?label=NAME`` picks the foreground label,
which ``--label NAME`` adds); plus the names in ``datasets.yaml``. Default roots live under the data
directory: ``$DIFFSEG_DATA_DIR``, else ``../shared/data``
next to the project checkout; ``data_root`` overrides a dataset's root.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..registry import suggest
from . import readers
from .synthetic import KINDS

PROJECT_ROOT = Path(__file__).resolve().parents[2]
_YAML = Path(__file__).with_name("datasets.yaml")


@dataclass(frozen=True)
class DatasetSpec:
    """How to read one dataset. ``patch_um``/``mpp``: cut tiles into patches of this physical size first;
    ``patch_px``: cut them into patches of this many pixels (where the physical scale is unknown)."""

    name: str
    layout: str  # isic | monuseg | folder | kvasir | masks | synthetic
    root: Path | None = None
    mask_encoding: str = "auto"
    colour_key: tuple[int, int, int] = (255, 0, 0)
    patch_um: float | None = None
    patch_px: int | None = None
    mpp: float | None = None
    synthetic_kind: str | None = None
    synthetic_n: int = 160
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def reader_params(self) -> dict[str, Any]:
        """Everything that changes what is read (part of the dataset identity)."""
        return {"layout": self.layout, "mask_encoding": self.mask_encoding, "colour_key": list(self.colour_key),
                "synthetic_kind": self.synthetic_kind, "synthetic_n": self.synthetic_n, "patch": self.patch_size()}

    def patch_size(self) -> int | None:
        """Patch side in source pixels (None: whole tiles)."""
        if self.patch_px:
            return int(self.patch_px)
        return round(self.patch_um / self.mpp) if self.patch_um and self.mpp else None


def data_dir() -> Path:
    env = os.environ.get("DIFFSEG_DATA_DIR")
    return Path(env) if env else (PROJECT_ROOT.parent / "shared" / "data")


def _builtin() -> dict[str, DatasetSpec]:
    d = data_dir()
    specs = {
        f"isic{year}": DatasetSpec(f"isic{year}", "isic", d / f"isic{year}", mask_encoding="binary255",
                                   description=f"ISIC {year} lesion segmentation (official release layout)")
        for year in (2016, 2017, 2018)
    }
    specs["monuseg"] = DatasetSpec(
        "monuseg", "monuseg", d / "monuseg", mask_encoding="binary01", patch_um=64.0, mpp=0.2527,
        description="MoNuSeg 2018 H&E nuclei; 1000 px tiles at 0.2527 um/px cut into 64 um patches")
    specs["kvasir_seg"] = DatasetSpec(
        "kvasir_seg", "kvasir", d / "kvasir_seg", mask_encoding="binary255",
        description="Kvasir-SEG colonoscopy polyps; official val.txt (120 images) = test, val carved from train.txt")
    for kind in KINDS:
        specs[f"synthetic-{kind}"] = DatasetSpec(f"synthetic-{kind}", "synthetic", synthetic_kind=kind,
                                                 description=f"synthetic {kind} fingerprint set")
    with open(_YAML) as fh:
        for name, entry in (yaml.safe_load(fh) or {}).items():
            entry = dict(entry)
            root = Path(entry.pop("root"))
            specs[name] = DatasetSpec(name, entry.pop("layout"), root if root.is_absolute() else d / root,
                                      mask_encoding=entry.pop("mask_encoding", "auto"),
                                      colour_key=tuple(entry.pop("colour_key", (255, 0, 0))),
                                      patch_px=entry.pop("patch_px", None),
                                      description=entry.pop("description", ""), extra=entry)
    return specs


def dataset_names() -> list[str]:
    return sorted(_builtin())


def with_label(name: str, label: str | None) -> str:
    """``nnunet:PATH`` with the foreground label chosen by ``--label`` (``nnunet:PATH?label=NAME``)."""
    if label is None:
        return name
    if not name.startswith("nnunet:"):
        raise ValueError(f"--label applies to nnunet:PATH datasets only, not {name!r}")
    return name if "?label=" in name else f"{name}?label={label}"


def get_spec(name: str, data_root: str | Path | None = None, **overrides: Any) -> DatasetSpec:
    """Resolve a dataset name (or ``folder:PATH`` / ``masks:PATH``) to its spec; ``data_root`` replaces the root."""
    for prefix in ("folder", "masks", "nnunet"):
        if name.startswith(prefix + ":"):
            path_text, _, label = name.split(":", 1)[1].partition("?label=")
            path = Path(path_text).expanduser().resolve()
            spec = DatasetSpec(name, prefix, path)
            if prefix == "nnunet":
                try:
                    value = readers.nnunet_target(path, label or None)
                    declared = ",".join(map(str, readers.nnunet_declared(path)))
                except FileNotFoundError as exc:
                    raise ValueError(str(exc)) from None
                spec = dataclasses.replace(spec, mask_encoding=f"label:{value}:{declared}")
            break
    else:
        specs = _builtin()
        if name not in specs:
            raise ValueError(f"unknown dataset {name!r}; {suggest(name, specs)} or folder:PATH / masks:PATH / "
                             "nnunet:PATH")
        spec = specs[name]
    if data_root is not None:
        overrides["root"] = Path(data_root).expanduser().resolve()
    if overrides:
        spec = dataclasses.replace(spec, **overrides)
    return spec
