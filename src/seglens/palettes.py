"""Palettes and class lists: the PASCAL VOC colour map, ADE20K's and Cityscapes' classes and
colours, distinct colours for other class lists, and the one background rule.

numpy only (a leaf module): the web page, the video legend and the reports pick colours here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "ADE20K_CATEGORIES",
    "CITYSCAPES_CATEGORIES",
    "ade20k_palette",
    "background_index",
    "cityscapes_palette",
    "distinct_palette",
    "palette_for",
    "voc_palette",
]


def voc_palette(n: int = 256) -> np.ndarray:
    """The PASCAL VOC devkit colour map (``VOClabelcolormap.m``).

    Bits (0, 1, 2) of the class index set the most significant bit of (R, G, B), bits (3, 4, 5)
    the next one, and so on: 0 -> (0, 0, 0), 1 -> (128, 0, 0), 20 tvmonitor -> (0, 64, 128),
    255 (VOC's "void") -> (224, 224, 192). All 256 colours are distinct.

    Args:
        n: number of colours, 1..256.

    Returns:
        (n, 3) uint8 array; a new array on every call.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= 256:
        raise ValueError(f"n must be an integer in 1..256 (the VOC map has 256 colours), got {n!r}")
    bits = (np.arange(n)[:, None] >> np.arange(24)) & 1  # (n, 24): bit k of each index
    bits = bits.reshape(n, 8, 3)  # [index, level, channel] = bit 3 * level + channel
    weights = 1 << (7 - np.arange(8))  # level 0 -> 128, level 7 -> 1
    return (bits * weights[None, :, None]).sum(axis=1).astype(np.uint8)


# --- dataset palettes (seglens.hf picks one from a checkpoint's class names) -----------------

# The 150 ADE20K scene-parsing classes and their colours, in the benchmark's order (annotation
# value i + 1 is class i), as MMSegmentation's ADE20KDataset.METAINFO lists them (the CSAIL
# scene-parsing toolkit's objectInfo150 order; mmseg writes "bed " with a trailing space).
ADE20K_CATEGORIES: tuple[str, ...] = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
    "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand",
    "path", "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove",
    "palm", "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus",
    "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver",
    "airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle",
    "buffet", "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything",
    "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven",
    "ball", "food", "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle", "lake",
    "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray",
    "ashcan", "fan", "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator",
    "glass", "clock", "flag",
)  # fmt: skip
_ADE20K_COLORS = (
    (120, 120, 120), (180, 120, 120), (6, 230, 230), (80, 50, 50), (4, 200, 3), (120, 120, 80),
    (140, 140, 140), (204, 5, 255), (230, 230, 230), (4, 250, 7), (224, 5, 255), (235, 255, 7),
    (150, 5, 61), (120, 120, 70), (8, 255, 51), (255, 6, 82), (143, 255, 140), (204, 255, 4),
    (255, 51, 7), (204, 70, 3), (0, 102, 200), (61, 230, 250), (255, 6, 51), (11, 102, 255),
    (255, 7, 71), (255, 9, 224), (9, 7, 230), (220, 220, 220), (255, 9, 92), (112, 9, 255),
    (8, 255, 214), (7, 255, 224), (255, 184, 6), (10, 255, 71), (255, 41, 10), (7, 255, 255),
    (224, 255, 8), (102, 8, 255), (255, 61, 6), (255, 194, 7), (255, 122, 8), (0, 255, 20),
    (255, 8, 41), (255, 5, 153), (6, 51, 255), (235, 12, 255), (160, 150, 20), (0, 163, 255),
    (140, 140, 140), (250, 10, 15), (20, 255, 0), (31, 255, 0), (255, 31, 0), (255, 224, 0),
    (153, 255, 0), (0, 0, 255), (255, 71, 0), (0, 235, 255), (0, 173, 255), (31, 0, 255),
    (11, 200, 200), (255, 82, 0), (0, 255, 245), (0, 61, 255), (0, 255, 112), (0, 255, 133),
    (255, 0, 0), (255, 163, 0), (255, 102, 0), (194, 255, 0), (0, 143, 255), (51, 255, 0),
    (0, 82, 255), (0, 255, 41), (0, 255, 173), (10, 0, 255), (173, 255, 0), (0, 255, 153),
    (255, 92, 0), (255, 0, 255), (255, 0, 245), (255, 0, 102), (255, 173, 0), (255, 0, 20),
    (255, 184, 184), (0, 31, 255), (0, 255, 61), (0, 71, 255), (255, 0, 204), (0, 255, 194),
    (0, 255, 82), (0, 10, 255), (0, 112, 255), (51, 0, 255), (0, 194, 255), (0, 122, 255),
    (0, 255, 163), (255, 153, 0), (0, 255, 10), (255, 112, 0), (143, 255, 0), (82, 0, 255),
    (163, 255, 0), (255, 235, 0), (8, 184, 170), (133, 0, 255), (0, 255, 92), (184, 0, 255),
    (255, 0, 31), (0, 184, 255), (0, 214, 255), (255, 0, 112), (92, 255, 0), (0, 224, 255),
    (112, 224, 255), (70, 184, 160), (163, 0, 255), (153, 0, 255), (71, 255, 0), (255, 0, 163),
    (255, 204, 0), (255, 0, 143), (0, 255, 235), (133, 255, 0), (255, 0, 235), (245, 0, 255),
    (255, 0, 122), (255, 245, 0), (10, 190, 212), (214, 255, 0), (0, 204, 255), (20, 0, 255),
    (255, 255, 0), (0, 153, 255), (0, 41, 255), (0, 255, 204), (41, 0, 255), (41, 255, 0),
    (173, 0, 255), (0, 245, 255), (71, 0, 255), (122, 0, 255), (0, 255, 184), (0, 92, 255),
    (184, 255, 0), (0, 133, 255), (255, 214, 0), (25, 194, 194), (102, 255, 0), (92, 0, 255),
)  # fmt: skip

# Cityscapes' 19 evaluation classes (train ids 0..18) and colours, as the Cityscapes scripts'
# labels.py and MMSegmentation's CityscapesDataset.METAINFO give them.
CITYSCAPES_CATEGORIES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)  # fmt: skip
_CITYSCAPES_COLORS = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
)  # fmt: skip

# The 21 PASCAL VOC classes as torchvision names them (weights.meta["categories"]).
_VOC_CATEGORIES = (
    "__background__", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
_BACKGROUND_NAMES = frozenset({"background", "bg", "unlabeled", "unlabelled", "void", "other", "none", "ignore"})
_GENERIC_FIRST = "class 0"  # seglens.models' name for class 0 of a head without class names
# Fraction of positions whose names must agree (after _name_key) for a class list to count as a
# dataset's: tolerates checkpoints that spell a few classes differently ("window " for
# "windowpane", "street lamp" for "streetlight" in detectron2's ADE20K list), never a reordering.
_MATCH_FRACTION = 0.8
_GOLDEN = 0.618033988749895  # golden-ratio conjugate: hue steps that never line up with earlier ones


def _padded(colors: Sequence[tuple[int, int, int]]) -> np.ndarray:
    """(256, 3) uint8: the listed colours first, black for the label values past them."""
    out = np.zeros((256, 3), dtype=np.uint8)
    out[: len(colors)] = np.asarray(colors, dtype=np.uint8)
    return out


def ade20k_palette() -> np.ndarray:
    """The ADE20K colours of MMSegmentation / the CSAIL scene-parsing toolkit, class order
    wall (120, 120, 120), building (180, 120, 120), sky (6, 230, 230), ...; see ``ADE20K_CATEGORIES``.

    Returns:
        (256, 3) uint8: rows 0..149 are the 150 classes (road and skyscraper share
        (140, 140, 140) in the published list), rows 150..255 black. A new array on every call.
    """
    return _padded(_ADE20K_COLORS)


def cityscapes_palette() -> np.ndarray:
    """The Cityscapes colours by train id: road (128, 64, 128), sidewalk (244, 35, 232), ...,
    bicycle (119, 11, 32); see ``CITYSCAPES_CATEGORIES``.

    Returns:
        (256, 3) uint8: rows 0..18 are the 19 classes, rows 19..255 black (Cityscapes' ignore
        value 255 is black in its own scripts too).
    """
    return _padded(_CITYSCAPES_COLORS)


def distinct_palette(n: int = 256) -> np.ndarray:
    """Deterministic, visually distinct colours for class lists without a published palette.

    Colour i has hue ``(0.1 + i * 0.618...) mod 1`` (golden-ratio steps: consecutive classes get
    far-apart hues and no hue repeats), saturation cycling over 3 levels and brightness over 5.
    Hues nearly coincide for indices a Fibonacci number apart (89, 144, 233, ...); none of those
    up to 233 is a multiple of 15, so such pairs always differ in saturation or brightness. All
    256 colours are distinct (any two at least 12 apart in summed |dR| + |dG| + |dB|, the first
    20 at least 64) and none is black, so no class looks like an untinted background.

    Args:
        n: number of colours, 1..256.

    Returns:
        (n, 3) uint8 array.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= 256:
        raise ValueError(f"n must be an integer in 1..256, got {n!r}")
    import colorsys

    saturation, value = (0.85, 0.55, 0.7), (0.95, 0.7, 0.85, 0.6, 0.8)
    rows = [colorsys.hsv_to_rgb((0.1 + i * _GOLDEN) % 1.0, saturation[i % 3], value[i % 5]) for i in range(n)]
    return np.rint(np.asarray(rows) * 255).astype(np.uint8)


def _name_key(name: str) -> str:
    """A class name reduced for matching: lower case, first synonym only ("road, route" ->
    "road", "building;edifice" -> "building"), no spaces, underscores or hyphens."""
    text = str(name).strip().lower().split(";")[0].split(",")[0]
    return "".join(ch for ch in text if ch not in " _-")


def _same_classes(categories: Sequence[str], reference: Sequence[str]) -> bool:
    if len(categories) != len(reference):
        return False
    agree = sum(_name_key(a) == _name_key(b) for a, b in zip(categories, reference))
    return agree >= _MATCH_FRACTION * len(reference)


def background_index(categories: Sequence[str]) -> int | None:
    """0 when the first class is a background / unlabelled class ("__background__", "background",
    "unlabeled", "void", "other"), else None (e.g. ADE20K's class 0 is "wall", Cityscapes' "road").

    Also 0 for the generic names seglens gives a torchvision head without class names ("class 0",
    "class 1", ...: :func:`seglens.models.load_model`): torchvision's recipe trains class 0 as
    background.

    The one background rule: overlays leave this class untinted
    (:meth:`seglens.inference.SegmentationResult.overlay`), video legends leave it out and
    generated palettes keep it black. Use it as ``overlay(..., background=background_index(categories))``
    so that real classes at index 0 are tinted too."""
    if not len(categories):
        return None
    first = str(categories[0])
    return 0 if first == _GENERIC_FIRST or _name_key(first) in _BACKGROUND_NAMES else None


def palette_for(categories: Sequence[str]) -> np.ndarray:
    """The palette that fits a class list.

    - the 21 PASCAL VOC classes -> :func:`voc_palette` (also "background", "dining table", ...);
    - the 150 ADE20K classes -> :func:`ade20k_palette`;
    - the 19 Cityscapes classes -> :func:`cityscapes_palette`;
    - anything else -> :func:`distinct_palette`, with black at 0 if class 0 is background-like.

    Names are compared position by position after :func:`_name_key`; at least 80% must agree
    (see ``_MATCH_FRACTION``), so Hugging Face checkpoints' spellings ("bed ", "road, route")
    are recognised while a reordered class list is not.

    Returns:
        (256, 3) uint8 array, index = label value; a new array on every call.
    """
    categories = list(categories)
    if _same_classes(categories, _VOC_CATEGORIES):
        return voc_palette(256)
    if _same_classes(categories, ADE20K_CATEGORIES):
        return ade20k_palette()
    if _same_classes(categories, CITYSCAPES_CATEGORIES):
        return cityscapes_palette()
    palette = distinct_palette(256)
    if background_index(categories) == 0:
        palette[0] = 0
    return palette
