"""Seeded synthetic fingerprint sets at any resolution, with images from which the mask is learnable.

Three fingerprint types, sized relative to a 64 px reference (s = size / 64):
- ``synthetic-blob``: one large, roughly central lesion with a wobbly outline (radius 0.18-0.35 of the image),
  dark textured lesion on lighter textured skin (ISIC-like).
- ``synthetic-nuclei``: 30-70 s^2 small elliptical nuclei (radii 1.2-2.6 s px), purple on pink (MoNuSeg-like).
- ``synthetic-clusters``: 0-4 clusters of small brown positive cells, 15% of images empty, plus blue negative
  cells that are *not* foreground (HER2/IHC-like: colour, not shape, separates the classes).
Images get low-frequency colour variation, texture noise and a slight blur so the task is not a threshold.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

KINDS = ("blob", "nuclei", "clusters")


def _paint_ellipse(mask, cy, cx, ry, rx, angle):
    """Set the pixels of a rotated ellipse to True, touching only its bounding box."""
    h, w = mask.shape
    r = max(ry, rx)
    y0, y1 = max(0, int(cy - r) - 1), min(h, int(cy + r) + 2)
    x0, x1 = max(0, int(cx - r) - 1), min(w, int(cx + r) + 2)
    if y0 >= y1 or x0 >= x1:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(float)
    c, s = np.cos(angle), np.sin(angle)
    dy, dx = yy - cy, xx - cx
    u, v = c * dx + s * dy, -s * dx + c * dy
    mask[y0:y1, x0:x1] |= (u / rx) ** 2 + (v / ry) ** 2 <= 1.0


def _texture(rng, size, sigma, amp):
    return gaussian_filter(rng.normal(0, 1, (size, size)), sigma) * amp * sigma


CONTRAST = 0.35  # fraction of the full colour difference between object and background that the image shows


def _render(rng, size, fg_layers, bg_colour):
    """fg_layers: list of (bool mask, RGB colour); objects show CONTRAST of their colour difference to the
    background, over low-frequency shading, texture and pixel noise; returns uint8 image."""
    s = size / 64
    bg = np.asarray(bg_colour, dtype=float)
    img = np.empty((size, size, 3))
    img[:] = bg
    img += _texture(rng, size, 4 * s, 8.0)[..., None]
    for m, colour in fg_layers:
        soft = gaussian_filter(m.astype(float), 0.6 * s)[..., None]
        tex = _texture(rng, size, 1.0 * s, 12.0)[..., None]
        target = bg + CONTRAST * (np.asarray(colour, dtype=float) - bg)
        img = img * (1 - soft) + (target + tex) * soft
    img += rng.normal(0, 14.0, img.shape)
    return np.clip(gaussian_filter(img, (0.5 * s, 0.5 * s, 0)), 0, 255).astype(np.uint8)


def blob(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    cy, cx = size / 2 + rng.normal(0, 0.08 * size, 2)
    r0 = rng.uniform(0.18, 0.35) * size
    theta = np.arctan2(yy - cy, xx - cx)
    r = np.full_like(theta, r0)
    for k in (2, 3, 4, 5):
        r += r0 * rng.uniform(0, 0.1) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    mask = np.hypot(yy - cy, xx - cx) <= r
    shade = rng.uniform(0.7, 1.1)
    img = _render(rng, size, [(mask, (130 * shade, 85 * shade, 65 * shade))], (215, 170, 150))
    return img, mask


def nuclei(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    s = size / 64
    mask = np.zeros((size, size), bool)
    for _ in range(int(rng.integers(30, 71) * s * s)):
        cy, cx = rng.uniform(0, size, 2)
        ry, rx = rng.uniform(1.2, 2.6, 2) * s
        _paint_ellipse(mask, cy, cx, ry, rx, rng.uniform(0, np.pi))
    img = _render(rng, size, [(mask, (95, 55, 140))], (230, 175, 205))
    return img, mask


def clusters(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    s = size / 64
    pos = np.zeros((size, size), bool)
    n_clusters = 0 if rng.random() < 0.15 else int(rng.integers(1, 5))
    for _ in range(n_clusters):
        ccy, ccx = rng.uniform(0.1, 0.9, 2) * size
        spread = rng.uniform(0.03, 0.12) * size
        for _ in range(int(rng.integers(3, 16))):
            cy, cx = rng.normal((ccy, ccx), spread)
            r = rng.uniform(1.0, 2.0) * s
            _paint_ellipse(pos, cy, cx, r, r * rng.uniform(0.8, 1.2), rng.uniform(0, np.pi))
    neg = np.zeros_like(pos)
    for _ in range(int(rng.integers(10, 30) * s * s)):
        cy, cx = rng.uniform(0, size, 2)
        r = rng.uniform(1.0, 2.0) * s
        _paint_ellipse(neg, cy, cx, r, r, 0.0)
    neg &= ~pos
    img = _render(rng, size, [(neg, (80, 95, 170)), (pos, (150, 90, 40))], (235, 228, 222))
    return img, pos


GENERATORS = {"blob": blob, "nuclei": nuclei, "clusters": clusters}


def generate(kind: str, n: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (n, size, size, 3), masks bool (n, size, size)); case i depends only on (kind, seed, i)."""
    if kind not in GENERATORS:
        raise ValueError(f"unknown synthetic kind {kind!r}; allowed: {list(KINDS)}")
    images = np.empty((n, size, size, 3), np.uint8)
    masks = np.empty((n, size, size), bool)
    for i in range(n):
        rng = np.random.default_rng([seed, KINDS.index(kind), i])
        images[i], masks[i] = GENERATORS[kind](rng, size)
    return images, masks
