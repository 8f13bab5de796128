"""Layout readers: each turns a dataset root into a list of cases (image, mask or XML, official split).

- ISIC 2016/2017/2018: ``ISIC_<id>.jpg`` images and ``ISIC_<id>_Segmentation.png`` / ``_segmentation.png``
  ground truth, in whatever folders that year's release uses (searched recursively); a folder name containing
  "test" marks the official test part, "validation" the official validation part.
- MoNuSeg 2018: ``*.tif`` tiles; the mask is a same-stem ``.png`` (binary masks) or ``.xml`` (official polygons)
  anywhere in the same part; a top folder with "test" in its name is the official test part.
- Folder of pairs: ``images/`` and ``masks/`` matched by file stem.
- Kvasir-SEG: a folder of pairs with the official split lists ``train.txt`` / ``val.txt`` (one image stem a
  line). The official ``val.txt`` images are the **test** split (what Kvasir-SEG results are reported on); the
  validation split for model selection is carved from ``train.txt`` by case with the split seed.
- Masks only: a folder of mask files (fingerprints need no images).
- nnU-Net v2 raw dataset (2-D): ``dataset.json``, ``imagesTr/<case>_0000.png`` (one RGB or grey file, or one
  grey file per channel ``_0000``, ``_0001``, ... of 1 or 3 channels) and ``labelsTr/<case>.png`` with the integer
  labels of ``dataset.json``; the binary target is one label (``nnunet_label``). ``imagesTs`` (unlabelled) is
  not read for training.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


@dataclass(frozen=True)
class Case:
    id: str
    image: Path | None
    mask: Path | None = None
    xml: Path | None = None
    split: str | None = None  # official split where the release defines one: train / val / test
    channels: tuple[Path, ...] = ()  # one grey file per channel (nnU-Net ``_0000``, ``_0001``, ...), else ()


def _require_dir(root: Path, layout: str) -> None:
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: dataset root does not exist (expected {layout})")


def _split_from_parts(path: Path, root: Path) -> str:
    rel = str(path.relative_to(root)).lower()
    if "test" in rel:
        return "test"
    if "validation" in rel:
        return "val"
    return "train"


_ISIC_IMG = re.compile(r"^(ISIC_\d+)\.jpe?g$", re.IGNORECASE)
_ISIC_GT = re.compile(r"^(ISIC_\d+)_[Ss]egmentation\.png$")
ISIC_LAYOUT = "ISIC_<id>.jpg images and ISIC_<id>_Segmentation.png (or _segmentation.png) masks under the root"


def read_isic(root: Path) -> tuple[list[Case], list[str]]:
    _require_dir(root, ISIC_LAYOUT)
    images, masks = {}, {}
    for p in sorted(root.rglob("*")):
        if m := _ISIC_IMG.match(p.name):
            images[m.group(1)] = p
        elif m := _ISIC_GT.match(p.name):
            masks[m.group(1)] = p
    problems = [f"{p}: image has no ground-truth mask ISIC_..._Segmentation.png" for k, p in images.items()
                if k not in masks]
    problems += [f"{p}: mask has no image {k}.jpg" for k, p in masks.items() if k not in images]
    if not images and not masks:
        problems.append(f"{root}: no ISIC files found (expected {ISIC_LAYOUT})")
    cases = [Case(k, images[k], masks[k], split=_split_from_parts(images[k], root)) for k in sorted(images)
             if k in masks]
    return cases, problems


MONUSEG_LAYOUT = "TCGA-*.tif tiles with same-stem .png binary masks or .xml polygon annotations (train and test parts)"


def read_monuseg(root: Path) -> tuple[list[Case], list[str]]:
    _require_dir(root, MONUSEG_LAYOUT)
    tifs = sorted(p for p in root.rglob("*") if p.suffix.lower() in (".tif", ".tiff"))
    by_stem: dict[tuple[str, str], dict[str, Path]] = {}
    for p in root.rglob("*"):
        if p.suffix.lower() in (".png", ".xml"):
            by_stem.setdefault((_split_from_parts(p, root), p.stem), {})[p.suffix.lower()] = p
    cases, problems, used = [], [], set()
    for tif in tifs:
        split = _split_from_parts(tif, root)
        found = by_stem.get((split, tif.stem), {})
        used.add((split, tif.stem))
        if not found:
            problems.append(f"{tif}: tile has no mask ({tif.stem}.png) or annotation ({tif.stem}.xml)")
            continue
        cases.append(Case(tif.stem, tif, found.get(".png"), None if ".png" in found else found[".xml"], split))
    for key, files in by_stem.items():
        if key not in used:
            problems += [f"{p}: annotation has no tile {key[1]}.tif" for p in files.values()]
    if not tifs and not by_stem:
        problems.append(f"{root}: no MoNuSeg files found (expected {MONUSEG_LAYOUT})")
    return cases, problems


FOLDER_LAYOUT = "images/ and masks/ folders with files matched by stem"


def _files(folder: Path, problems: list[str]) -> dict[str, Path]:
    """Image files by stem; two files with one stem (``x.png``, ``x.jpg``) are a problem, not a silent choice."""
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() in IMAGE_EXTS:
            if p.stem in out:
                problems.append(f"{p}: has the same stem as {out[p.stem].name} (which pairs with which mask is "
                                "ambiguous); rename one")
            out.setdefault(p.stem, p)
    return out


def read_folder(root: Path) -> tuple[list[Case], list[str]]:
    _require_dir(root, FOLDER_LAYOUT)
    img_dir, mask_dir = root / "images", root / "masks"
    missing = [d for d in (img_dir, mask_dir) if not d.is_dir()]
    if missing:
        return [], [f"{d}: folder missing (expected {FOLDER_LAYOUT})" for d in missing]
    problems: list[str] = []
    images, masks = _files(img_dir, problems), _files(mask_dir, problems)
    problems += [f"{p}: image has no mask in {mask_dir}" for k, p in images.items() if k not in masks]
    problems += [f"{p}: mask has no image in {img_dir}" for k, p in masks.items() if k not in images]
    if not images and not masks:
        problems.append(f"{root}: no image files found (expected {FOLDER_LAYOUT})")
    return [Case(k, images[k], masks[k]) for k in sorted(images) if k in masks], problems


KVASIR_LISTS = {"train.txt": "train", "val.txt": "test"}  # official list -> our split


def read_kvasir(root: Path) -> tuple[list[Case], list[str]]:
    cases, problems = read_folder(root)
    split_of, by_id = {}, {c.id: c for c in cases}
    for name, split in KVASIR_LISTS.items():
        path = root / name
        if not path.is_file():
            problems.append(f"{path}: official split list missing (Kvasir-SEG needs {sorted(KVASIR_LISTS)})")
            continue
        for line in path.read_text().split():
            if line in split_of:
                problems.append(f"{path}: {line!r} is listed twice (also in the {split_of[line]} list)")
            elif line not in by_id:
                problems.append(f"{path}: {line!r} has no image/mask pair under {root}")
            split_of[line] = split
    problems += [f"{by_id[k].image}: in no split list {sorted(KVASIR_LISTS)}" for k in by_id if k not in split_of]
    return [Case(c.id, c.image, c.mask, split=split_of.get(c.id)) for c in cases], problems


def read_masks_only(root: Path) -> tuple[list[Case], list[str]]:
    _require_dir(root, "a folder of mask files")
    problems: list[str] = []
    masks = _files(root, problems)
    if not masks:
        return [], [f"{root}: no mask files found (expected a folder of mask images)"]
    return [Case(k, None, p) for k, p in masks.items()], problems


NNUNET_LAYOUT = "dataset.json, imagesTr/<case>_0000.png (+ _0001 ... channels) and labelsTr/<case>.png"
_NNUNET_IMG = re.compile(r"^(.+)_(\d{4})$")


def nnunet_labels(root: Path) -> dict[str, int]:
    """The ``labels`` of an nnU-Net raw dataset's ``dataset.json`` (name -> integer value)."""
    path = root / "dataset.json"
    try:
        meta = json.loads(path.read_text())
        raw = meta["labels"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FileNotFoundError(f"{path}: not a readable nnU-Net dataset.json with 'labels' ({exc})") from None
    if not isinstance(raw, dict) or not raw:
        raise FileNotFoundError(f"{path}: 'labels' must be a mapping of label names to integer values, got {raw!r}")
    bad = {k: v for k, v in raw.items() if isinstance(v, bool) or not isinstance(v, int)}
    if bad:
        raise FileNotFoundError(f"{path}: label values must be integers (nnU-Net label maps), got {bad}")
    channels = meta.get("channel_names", {"0": "image"})
    if not isinstance(channels, dict) or not channels:
        raise FileNotFoundError(f"{path}: 'channel_names' must be a mapping of channel indices to names, got "
                                f"{channels!r}")
    return {str(k): v for k, v in raw.items()}


def nnunet_declared(root: Path) -> list[int]:
    """Every label value ``dataset.json`` declares (a label map with another value is refused when read)."""
    return sorted(set(nnunet_labels(root).values()))


def nnunet_target(root: Path, label: str | None) -> int:
    """The label value that is foreground: ``label`` by name, else the single non-background label; a dataset
    with several labels needs ``label``, and the error lists them."""
    labels = nnunet_labels(root)
    fg = {k: v for k, v in labels.items() if v != 0}
    if label is not None:
        if label not in fg:
            raise ValueError(f"{root}: label {label!r} is not a foreground label of dataset.json; labels: {fg}")
        return fg[label]
    if len(fg) != 1:
        raise ValueError(f"{root}: {len(fg)} foreground labels {fg}: choose one with --label NAME")
    return next(iter(fg.values()))


def read_nnunet(root: Path) -> tuple[list[Case], list[str]]:
    _require_dir(root, NNUNET_LAYOUT)
    meta = json.loads((root / "dataset.json").read_text()) if (root / "dataset.json").is_file() else None
    if meta is None:
        return [], [f"{root / 'dataset.json'}: missing (expected {NNUNET_LAYOUT})"]
    try:
        nnunet_labels(root)  # labels and channel_names of the right shape
    except FileNotFoundError as exc:
        return [], [str(exc)]
    ending = meta.get("file_ending", ".png")
    n_channels = len(meta.get("channel_names", {"0": "image"}))
    img_dir, lab_dir = root / "imagesTr", root / "labelsTr"
    missing = [d for d in (img_dir, lab_dir) if not d.is_dir()]
    if missing:
        return [], [f"{d}: folder missing (expected {NNUNET_LAYOUT})" for d in missing]
    channels: dict[str, dict[int, Path]] = {}
    problems = []
    for p in sorted(img_dir.glob(f"*{ending}")):
        m = _NNUNET_IMG.match(p.name[: -len(ending)])
        if not m:
            problems.append(f"{p}: image name is not <case>_<4-digit channel>{ending}")
            continue
        channels.setdefault(m.group(1), {})[int(m.group(2))] = p
    labels = {p.name[: -len(ending)]: p for p in sorted(lab_dir.glob(f"*{ending}"))}
    cases = []
    for case, files in sorted(channels.items()):
        if case not in labels:
            problems.append(f"{files[min(files)]}: case {case!r} has no label {lab_dir / (case + ending)}")
            continue
        n_files = len(files)
        if sorted(files) != list(range(n_files)):
            problems.append(f"{img_dir}: case {case!r} has channels {sorted(files)}, expected 0..{n_files - 1}")
            continue
        if n_files > 1 and (n_files != n_channels or n_files not in (1, 3)):
            problems.append(f"{img_dir}: case {case!r} has {n_files} channel files; diffseg reads 1 (RGB or grey) "
                            f"or 3 grey channel files (dataset.json declares {n_channels})")
            continue
        image = files[0]
        cases.append(Case(case, image, labels[case], channels=tuple(files[i] for i in range(n_files))
                          if n_files > 1 else ()))
    problems += [f"{p}: label has no image {img_dir / (k + '_0000' + ending)}" for k, p in labels.items()
                 if k not in channels]
    if not channels and not labels:
        problems.append(f"{root}: no nnU-Net cases found (expected {NNUNET_LAYOUT})")
    return cases, problems


READERS = {"isic": read_isic, "monuseg": read_monuseg, "folder": read_folder, "kvasir": read_kvasir,
           "masks": read_masks_only,
           "nnunet": read_nnunet}
