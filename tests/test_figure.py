"""The Pillow figure (seglens._figure) that seglens segment writes: the same panels, colours and
legend as visualize.figure's matplotlib one, at a fraction of the cost."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from seglens._figure import figure_image
from seglens.visualize import class_stats, colorize, figure, heat_palette, voc_palette


def _labels() -> np.ndarray:
    labels = np.zeros((90, 120), np.uint8)
    labels[10:60, 20:70] = 15  # person
    labels[50:90, 80:120] = 7  # car
    labels[0, 0] = 3  # one pixel of bird: "<0.1%"
    return labels


def _find(haystack: np.ndarray, needle: np.ndarray) -> tuple[int, int] | None:
    """Where ``needle`` sits in ``haystack`` exactly (its first row located, then checked)."""
    h, w = needle.shape[:2]
    for y in range(haystack.shape[0] - h + 1):
        row = haystack[y]
        for x in range(haystack.shape[1] - w + 1):
            if np.array_equal(row[x : x + w], needle[0]) and np.array_equal(haystack[y : y + h, x : x + w], needle):
                return y, x
    return None


def test_the_figure_holds_the_exact_mask_panel_and_legend_colours():
    labels = _labels()
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    categories = [f"c{i}" for i in range(21)]
    fig = figure_image(image, labels, categories, title="t.jpg")
    assert fig.mode == "RGB"
    pixels = np.asarray(fig)
    # panels 4 inches wide at 100 dpi: the mask resized by nearest neighbour to 400x300, exactly
    mask_panel = np.asarray(Image.fromarray(colorize(labels)).resize((400, 300), Image.Resampling.NEAREST))
    assert _find(pixels[:, 400:], mask_panel[:40]) is not None
    colors = {tuple(c) for c in pixels.reshape(-1, 3).tolist()}
    for s in class_stats(labels, categories):
        assert s.color in colors  # every legend patch (and mask colour) is drawn in the class's colour
    # the same size as matplotlib's figure at 100 dpi, within its layout's rounding
    buf = io.BytesIO()
    figure(image, labels, categories, title="t.jpg").savefig(buf, format="png", dpi=100)
    reference = Image.open(buf)
    assert abs(fig.width - reference.width) <= 2 and abs(fig.height - reference.height) <= 30


def test_confidence_panel_and_large_images():
    labels = np.kron(_labels(), np.ones((20, 20), np.uint8))  # 1800x2400: shrunk to 1200 for display
    confidence = np.full(labels.shape, 200, np.uint8)
    image = np.zeros((*labels.shape, 3), np.uint8)
    fig = figure_image(image, labels, [f"c{i}" for i in range(21)], confidence=confidence)
    pixels = np.asarray(fig)
    heat = tuple(int(v) for v in heat_palette()[200])
    assert (pixels.reshape(-1, 3) == heat).all(axis=1).sum() >= 400 * 300  # a whole panel of that colour
    assert fig.width >= 3 * 400
    assert tuple(voc_palette()[15]) in {tuple(c) for c in pixels.reshape(-1, 3).tolist()}
