"""Reading images and masks, with the checks that make bad input fail early and by name.

Mask encodings: ``binary01`` (values {0, 1}), ``binary255`` ({0, 255}), ``auto`` (either; a mask of only 0 is
empty and valid), and ``rgb`` (foreground = pixels equal to ``colour_key`` (R, G, B), everything else background).
MoNuSeg XML: one ``Region`` per nucleus with ``Vertex`` X/Y floats, rasterised as filled polygons (PIL, pixel
centres inside the polygon are foreground).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ENCODINGS = ("auto", "binary01", "binary255", "rgb")


class ReadError(ValueError):
    """A single file problem; the message starts with the path."""


SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def read_image(path: Path) -> np.ndarray:
    """RGB uint8 (H, W, 3). A 16-bit grey image is scaled to 8 bits (value / 257), never saturated; truncated,
    unreadable or decompression-bomb files (PIL's pixel limit) raise ReadError naming the file."""
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in SIXTEEN_BIT:
                grey = np.asarray(im, dtype=np.int64)
                if grey.min() < 0 or grey.max() > 65535:
                    raise ReadError(f"{path}: {im.mode} image with values outside 0..65535; convert it to 8 or "
                                    "16 bits first")
                return np.repeat(np.round(grey / 257.0).astype(np.uint8)[..., None], 3, axis=2)
            return np.asarray(im if im.mode == "RGB" else im.convert("RGB"))  # (convert copies even RGB)
    except Image.DecompressionBombError as exc:
        raise ReadError(f"{path}: refused as a decompression bomb ({exc})") from None
    except ReadError:
        raise
    except (OSError, SyntaxError, ValueError) as exc:
        raise ReadError(f"{path}: unreadable or truncated image ({exc})") from None


def decode_mask(raw: np.ndarray, path: Path, encoding: str = "auto", colour_key=(255, 0, 0)) -> np.ndarray:
    """Raw mask pixels -> bool (H, W), checking the declared encoding."""
    if encoding == "rgb":
        if raw.ndim != 3:
            raise ReadError(f"{path}: mask encoding 'rgb' needs a colour image, got shape {raw.shape}")
        return np.all(raw[..., :3] == np.asarray(colour_key, dtype=raw.dtype), axis=-1)
    if raw.ndim == 3:
        if not (np.all(raw[..., 0] == raw[..., 1]) and np.all(raw[..., 0] == raw[..., 2])):
            raise ReadError(f"{path}: colour mask but encoding is {encoding!r} (use encoding 'rgb' with a colour_key)")
        raw = raw[..., 0]
    if encoding.startswith("label:"):  # integer label map (nnU-Net) "label:<foreground>:<declared values>"
        _, target, *declared = encoding.split(":")
        allowed_labels = {int(v) for v in (declared[0] if declared else "").split(",") if v}
        undeclared = sorted(set(np.unique(raw).tolist()) - allowed_labels) if allowed_labels else []
        if undeclared:
            raise ReadError(f"{path}: label values {undeclared[:8]} are not declared in dataset.json "
                            f"{sorted(allowed_labels)}")
        return raw == int(target)
    values = np.unique(raw)
    allowed = {"binary01": {0, 1}, "binary255": {0, 255}}.get(encoding)
    if allowed is None:
        if encoding != "auto":
            raise ReadError(f"{path}: unknown mask encoding {encoding!r}; allowed: {list(ENCODINGS)}")
        allowed = {0, 1} if set(values.tolist()) <= {0, 1} else {0, 255}
    bad = sorted(set(values.tolist()) - allowed)
    if bad:
        raise ReadError(f"{path}: mask values {bad[:8]} outside the {encoding} encoding {sorted(allowed)}")
    return raw > 0


def read_mask(path: Path, encoding: str = "auto", colour_key=(255, 0, 0)) -> np.ndarray:
    try:
        with Image.open(path) as im:
            im.load()
            raw = np.asarray(im.convert("RGB") if encoding == "rgb" else im)
    except (OSError, SyntaxError, ValueError) as exc:
        raise ReadError(f"{path}: unreadable or truncated mask ({exc})") from None
    return decode_mask(raw, path, encoding, colour_key)


def read_xml_polygons(path: Path) -> list[np.ndarray]:
    """MoNuSeg annotation: one (K, 2) float array of (x, y) vertices per Region."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise ReadError(f"{path}: unreadable XML ({exc})") from None
    polys = []
    for region in root.iter("Region"):
        pts = [(float(v.get("X")), float(v.get("Y"))) for v in region.iter("Vertex")]
        if len(pts) >= 3:
            polys.append(np.asarray(pts, dtype=np.float64))
    if not polys:
        raise ReadError(f"{path}: XML annotation without regions (expected Regions/Region/Vertices/Vertex)")
    return polys


def rasterise_polygons(polys: list[np.ndarray], height: int, width: int) -> np.ndarray:
    """Filled polygons -> bool (H, W)."""
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for p in polys:
        draw.polygon([tuple(xy) for xy in p.tolist()], fill=1, outline=1)
    return np.asarray(canvas) > 0
