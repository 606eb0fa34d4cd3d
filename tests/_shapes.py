"""Tiny labelled datasets for the training tests: coloured shapes on textured backgrounds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("background", "square", "disc")
COLOURS = ((0, 0, 0), (220, 40, 40), (40, 80, 220))


def shapes_pair(rng: np.random.Generator, size: int = 64, ignore: int = 255) -> tuple[Image.Image, np.ndarray]:
    """One image: a grey-green textured background, a red-ish square and a blue-ish disc (each
    maybe absent), labelled 0/1/2 with a 1-pixel ignore ring around the disc."""
    h = w = size
    texture = rng.normal(0, 18, (h, w, 1)) + rng.normal(0, 6, (h, w, 3))
    image = np.clip(np.array([110, 130, 100]) + texture, 0, 255)
    target = np.zeros((h, w), np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    if rng.random() < 0.85:
        s = int(rng.integers(size // 6, size // 3))
        y0, x0 = (int(v) for v in rng.integers(0, size - s, 2))
        image[y0 : y0 + s, x0 : x0 + s] = np.array([220, 40, 40]) + rng.normal(0, 15, (s, s, 3))
        target[y0 : y0 + s, x0 : x0 + s] = 1
    if rng.random() < 0.85:
        r = float(rng.uniform(size / 10, size / 5))
        cy, cx = (float(v) for v in rng.uniform(r, size - r, 2))
        d = np.hypot(yy - cy, xx - cx)
        image[d <= r] = np.array([40, 80, 220]) + rng.normal(0, 15, (int((d <= r).sum()), 3))
        target[d <= r] = 2
        target[(d > r) & (d <= r + 1)] = ignore
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)), target


def write_shapes(root: Path, n: int, *, seed: int = 0, size: int = 64, ignore: int = 255) -> Path:
    """``root/images/NNN.jpg`` + ``root/masks/NNN.png`` (mode L) and ``root/classes.txt`` with
    colours; returns root."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        image, target = shapes_pair(rng, size, ignore)
        image.save(root / "images" / f"{i:03d}.png")
        Image.fromarray(target, mode="L").save(root / "masks" / f"{i:03d}.png")
    lines = [f"{name} {r},{g},{b}" for name, (r, g, b) in zip(CLASSES, COLOURS)]
    (root / "classes.txt").write_text("\n".join(lines) + "\n")
    return root
