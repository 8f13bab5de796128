"""Preprocessing: read and validate every case, cut tiles into physical-scale patches, resize, cache.

Resizing (documented choice): images use area averaging (PIL BOX, the right filter for downsampling) or bilinear;
masks use area averaging then a 0.5 threshold (keeps object areas unbiased), or nearest. Images are resized to a
square of ``resolution`` px without keeping the aspect ratio (as the reference implementations do).
Tiles with a physical scale (``patch_um`` and ``mpp``) are first cut into patches of round(patch_um / mpp) px that
cover the tile with minimal overlap, so nuclei keep a realistic size in pixels (``patch_px`` gives the patch size
directly where the scale is unknown).

The dataset identity (``dataset_hash``) hashes the content of every source file and the reader settings; the
cache key adds the preprocessing parameters. Caches are written atomically under a lock and memory-mapped.
"""

from __future__ import annotations

import functools
import json
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..files import atomic_dir, digest, locked, safe_name
from . import readers
from .cache import CACHE_VERSION, HashIndex, default_cache_dir
from .errors import DatasetError
from .io import ReadError, rasterise_polygons, read_image, read_mask, read_xml_polygons
from .registry import DatasetSpec, get_spec
from .splits import make_splits
from .synthetic import generate

RESIZE = {"area": Image.BOX, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}


@dataclass(frozen=True)
class PrepConfig:
    resolution: int = 64
    image_resize: str = "area"  # area | bilinear
    mask_resize: str = "area"  # area (then threshold 0.5) | nearest
    synthetic_seed: int = 0

    def __post_init__(self):
        if self.image_resize not in ("area", "bilinear"):
            raise ValueError(f"image_resize must be 'area' or 'bilinear', got {self.image_resize!r}")
        if self.mask_resize not in ("area", "nearest"):
            raise ValueError(f"mask_resize must be 'area' or 'nearest', got {self.mask_resize!r}")
        if not (isinstance(self.resolution, int) and self.resolution >= 8):
            raise ValueError(f"resolution must be an integer >= 8, got {self.resolution!r}")


@dataclass
class PreparedDataset:
    """Arrays at the study resolution: images (N, R, R, 3) uint8 or None (masks-only), masks (N, R, R) uint8 {0,1}."""

    name: str
    dataset_hash: str
    cache_key: str
    images: np.ndarray | None
    masks: np.ndarray
    case_ids: list[str]  # source case per sample (patches of one tile share it)
    official_splits: list[str | None]
    path: Path | None = None

    def __len__(self) -> int:
        return len(self.masks)

    def splits(self, seed: int = 0, val_fraction: float = 0.2, test_fraction: float = 0.2,
               retrain: bool = False) -> dict[str, np.ndarray]:
        return make_splits(self.case_ids, self.official_splits, seed, val_fraction, test_fraction, retrain)


def load_case(case: readers.Case, spec: DatasetSpec) -> tuple[np.ndarray | None, np.ndarray]:
    """Full-resolution (image RGB uint8 or None, mask bool); raises ReadError naming the file."""
    if case.channels:  # one grey file per channel (nnU-Net): 3 files are RGB
        image = np.stack([read_image(p)[..., 0] for p in case.channels], axis=-1)
    else:
        image = read_image(case.image) if case.image is not None else None
    if case.mask is not None:
        mask = read_mask(case.mask, spec.mask_encoding, spec.colour_key)
    else:
        h, w = image.shape[:2]
        mask = rasterise_polygons(read_xml_polygons(case.xml), h, w)
    if image is not None and image.shape[:2] != mask.shape:
        raise ReadError(f"{case.mask or case.xml}: mask size {mask.shape[1]}x{mask.shape[0]} differs from image "
                        f"{case.image} size {image.shape[1]}x{image.shape[0]}")
    return image, mask


def patch_boxes(h: int, w: int, patch: int | None) -> list[tuple[int, int, int, int]]:
    """(top, left, height, width) boxes of ``patch`` px covering the tile with minimal overlap."""
    if patch is None or (patch >= h and patch >= w):
        return [(0, 0, h, w)]
    ph, pw = min(patch, h), min(patch, w)
    ys = np.linspace(0, h - ph, math.ceil(h / ph)).round().astype(int)
    xs = np.linspace(0, w - pw, math.ceil(w / pw)).round().astype(int)
    return [(int(y), int(x), ph, pw) for y in ys for x in xs]


def resize_pair(image, mask, prep: PrepConfig):
    size = (prep.resolution, prep.resolution)
    img = None
    if image is not None:
        img = np.asarray(Image.fromarray(image).resize(size, RESIZE[prep.image_resize]))
    if prep.mask_resize == "area":
        m = np.asarray(Image.fromarray(mask.astype(np.float32), mode="F").resize(size, Image.BOX)) >= 0.5
    else:
        m = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.NEAREST)) > 127
    return img, m


def scan_cases(spec: DatasetSpec) -> tuple[list[readers.Case], list[str]]:
    """(the cases that pair up, the layout problems naming the files), without raising on the problems."""
    try:
        return readers.READERS[spec.layout](spec.root)
    except FileNotFoundError as exc:
        raise DatasetError([str(exc)], spec.name) from None


def list_cases(spec: DatasetSpec) -> list[readers.Case]:
    """Cases of a file-based dataset; every layout problem raises one DatasetError naming the files."""
    cases, problems = scan_cases(spec)
    if problems:
        raise DatasetError(problems, spec.name)
    return cases


def dataset_hash(spec: DatasetSpec, cases: list[readers.Case], index: HashIndex) -> str:
    files = []
    for c in cases:
        for p in (c.image, c.mask, c.xml, *c.channels):
            if p is not None:
                files.append((str(p.relative_to(spec.root)), index.sha256(p)))
    return digest({"reader": spec.reader_params(), "files": sorted(files)})


def _build(spec: DatasetSpec, cases: list[readers.Case], prep: PrepConfig):
    patch = spec.patch_size()

    def work(case):
        try:
            image, mask = load_case(case, spec)
        except ReadError as exc:
            return case, None, str(exc)
        out = []
        for y, x, h, w in patch_boxes(*mask.shape, patch):
            crop = image[y : y + h, x : x + w] if image is not None else None
            out.append(resize_pair(crop, mask[y : y + h, x : x + w], prep))
        return case, out, None

    with ThreadPoolExecutor() as pool:
        results = list(pool.map(work, cases))
    problems = [err for _, _, err in results if err]
    if problems:
        raise DatasetError(problems, spec.name)
    images, masks, ids, splits = [], [], [], []
    for case, out, _ in results:
        for img, m in out:
            images.append(img)
            masks.append(m)
            ids.append(case.id)
            splits.append(case.split)
    imgs = None if images[0] is None else np.stack(images)
    return imgs, np.stack(masks).astype(np.uint8), ids, splits


def _load_cached(path: Path, name: str) -> PreparedDataset:
    meta = json.loads((path / "meta.json").read_text())
    images = np.load(path / "images.npy", mmap_mode="r") if (path / "images.npy").exists() else None
    return PreparedDataset(name, meta["dataset_hash"], meta["cache_key"], images,
                           np.load(path / "masks.npy", mmap_mode="r"), meta["case_ids"], meta["official_splits"], path)


_UNWRITTEN: dict[Path, tuple] = {}  # cache folder -> arrays prepared by a write=False call in this process


@functools.lru_cache(maxsize=4)
def _synthetic(kind: str, n: int, resolution: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic set's (images, uint8 masks), generated once per process and read-only like a cached set's
    memory map: a study's driver asks for each set once per fingerprinted arm and again when it writes its plan
    (18 draws of the smoke study's three sets, 0.1-0.5 s each), a reused trial worker once per trial."""
    images, masks = generate(kind, n, resolution, seed)
    masks = masks.astype(np.uint8)
    images.flags.writeable = masks.flags.writeable = False
    return images, masks


def load_dataset(name: str, prep: PrepConfig | None = None, data_root: str | Path | None = None,
                 cache_dir: str | Path | None = None, *, write: bool = True) -> PreparedDataset:
    """Resolve, validate, preprocess (or load from cache) a dataset at the study resolution. ``write=False``
    (a study's checks before anything is written) prepares a missing cache in memory only; a later call with
    ``write=True`` in the same process writes those arrays instead of preparing them again."""
    prep = prep or PrepConfig()
    spec = get_spec(name, data_root)
    if spec.layout == "synthetic":
        images, masks = _synthetic(spec.synthetic_kind, spec.synthetic_n, prep.resolution, prep.synthetic_seed)
        h = digest({"reader": spec.reader_params(), "seed": prep.synthetic_seed, "version": CACHE_VERSION})
        key = digest({"dataset": h, "prep": asdict(prep)})[:16]
        ids = [f"{spec.synthetic_kind}-{i:05d}" for i in range(len(masks))]
        return PreparedDataset(name, h, key, images, masks, ids, [None] * len(ids))
    cases = list_cases(spec)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    index = HashIndex(cache_dir)
    dhash = dataset_hash(spec, cases, index)
    if write:
        index.save()
    key = digest({"dataset": dhash, "prep": asdict(prep), "patch": spec.patch_size(), "version": CACHE_VERSION})[:16]
    safe = safe_name(name)
    final = cache_dir / f"{safe}-{key}"
    if (final / "meta.json").exists():
        return _load_cached(final, name)
    if not write:
        _UNWRITTEN[final] = _UNWRITTEN.get(final) or _build(spec, cases, prep)
        images, masks, ids, splits = _UNWRITTEN[final]
        return PreparedDataset(name, dhash, key, images, masks, ids, splits)
    with locked(cache_dir / ".locks" / f"{safe}-{key}.lock"):
        if not (final / "meta.json").exists():
            images, masks, ids, splits = _UNWRITTEN.pop(final, None) or _build(spec, cases, prep)
            with atomic_dir(final) as tmp:
                if images is not None:
                    np.save(tmp / "images.npy", images)
                np.save(tmp / "masks.npy", masks)
                meta = {"name": name, "dataset_hash": dhash, "cache_key": key, "prep": asdict(prep),
                        "patch_px": spec.patch_size(), "case_ids": ids, "official_splits": splits,
                        "root": str(spec.root), "version": CACHE_VERSION}
                (tmp / "meta.json").write_text(json.dumps(meta))
    return _load_cached(final, name)
