"""Colour masks, overlays, class statistics and figures for label maps.

Pure numpy + Pillow + matplotlib (no torch, no pyplot): every function returns a new array or
``Figure`` and never prints, shows or writes files, so all of it is safe in worker threads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from PIL import Image

from .palettes import (
    ADE20K_CATEGORIES,
    CITYSCAPES_CATEGORIES,
    ade20k_palette,
    background_index,
    cityscapes_palette,
    distinct_palette,
    palette_for,
    voc_palette,
)

__all__ = [
    "ClassStat",
    "class_stats",
    "colorize",
    "comparison_figure",
    "display_name",
    "error_map",
    "figure",
    "overlay",
    "heat_palette",
    "outline_low_confidence",
    "voc_palette",
    "ADE20K_CATEGORIES",
    "CITYSCAPES_CATEGORIES",
    "ade20k_palette",
    "background_index",
    "cityscapes_palette",
    "distinct_palette",
    "palette_for",
]

_DISPLAY_PIXELS = 1200  # long side of a panel's picture; 4 inches at up to 300 dpi
_PANEL_INCHES = 4.0  # width of one image panel; its height follows the image's aspect ratio
_MAX_PANEL_HEIGHT = 6.0  # very tall images shrink so the figure stays on a screen
_LEGEND_COLUMN_INCHES = 1.9  # fits "pottedplant  100.0%" at the legend's font size
_LEGEND_ROW_INCHES = 0.25


def display_name(category: str) -> str:
    """Human-readable class name: torchvision's ``"__background__"`` -> ``"background"``."""
    return "background" if category == "__background__" else category


def _check_labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"labels must be an (H, W) integer array of class indices, got shape {labels.shape} "
            f"and dtype {labels.dtype}; convert with labels.astype(np.int64)"
        )
    if labels.size and labels.min() < 0:
        raise ValueError(f"labels must be non-negative class indices, got minimum {labels.min()}")
    return labels


def _check_palette(palette: np.ndarray | None, labels: np.ndarray) -> np.ndarray:
    palette = voc_palette() if palette is None else np.asarray(palette)
    if palette.ndim != 2 or palette.shape[1] != 3 or palette.dtype != np.uint8:
        raise ValueError(f"palette must be an (N, 3) uint8 array, got shape {palette.shape} and dtype {palette.dtype}")
    if labels.size and labels.max() >= len(palette):
        raise ValueError(
            f"label value {labels.max()} is outside the palette of {len(palette)} colours; "
            f"pass a palette with at least {labels.max() + 1} rows"
        )
    return palette


def _as_rgb(image: Image.Image | np.ndarray, labels: np.ndarray) -> np.ndarray:
    array = np.asarray(image.convert("RGB")) if isinstance(image, Image.Image) else np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ValueError(
            f"image must be a PIL image or an (H, W, 3) uint8 array, got shape {array.shape} and dtype {array.dtype}"
        )
    if array.shape[:2] != labels.shape:
        raise ValueError(
            f"image shape {array.shape} does not match labels shape {labels.shape}; resize one to the other"
        )
    return array


def colorize(labels: np.ndarray, palette: np.ndarray | None = None) -> np.ndarray:
    """Colour a label map by palette lookup.

    Args:
        labels: (H, W) integer class indices, each in ``0..len(palette) - 1``.
        palette: (N, 3) uint8 colours; default ``voc_palette()``.

    Returns:
        (H, W, 3) uint8 array, ``palette[labels]``.
    """
    labels = _check_labels(labels)
    return _check_palette(palette, labels)[labels]


def overlay(
    image: Image.Image | np.ndarray,
    labels: np.ndarray,
    palette: np.ndarray | None = None,
    *,
    alpha: float = 0.5,
    background: int | None = 0,
) -> np.ndarray:
    """Blend the colour mask into the image.

    Each pixel becomes ``np.rint((1 - alpha) * image + alpha * color)``, computed in float32;
    ``np.rint`` rounds halves to even (50.5 -> 50, 51.5 -> 52), as ``cv2.addWeighted`` does.
    Pixels whose label equals ``background`` keep the image's value.

    Args:
        image: PIL image (converted to RGB) or (H, W, 3) uint8 array.
        labels: (H, W) integer class indices, same H, W as the image.
        palette: (N, 3) uint8 colours; default ``voc_palette()``.
        alpha: weight of the mask colour, 0 (image only) .. 1 (colour only).
        background: label left untinted; ``None`` tints every pixel.

    Returns:
        (H, W, 3) uint8 array.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    labels = _check_labels(labels)
    rgb = _as_rgb(image, labels)
    colors = _check_palette(palette, labels)
    # Every (image value, colour value) pair has one answer: a 256 x 256 table, indexed by
    # image * 256 + colour, gives exactly the float32 formula at a fraction of its cost.
    a = np.float32(alpha)
    values = np.arange(256, dtype=np.float32)
    table = (
        np.clip(np.rint((np.float32(1) - a) * values[:, None] + a * values[None, :]), 0, 255).astype(np.uint8).ravel()
    )
    out = np.empty_like(rgb)
    # Row blocks of ~4 MP: the uint16 index temporaries stay small for 100-megapixel images.
    step = max(1, (1 << 22) // max(1, rgb.shape[1]))
    for r in range(0, rgb.shape[0], step):
        block = rgb[r : r + step]
        np.take(table, (block.astype(np.uint16) << 8) | colors[labels[r : r + step]], out=out[r : r + step])
        if background is not None:
            np.copyto(out[r : r + step], block, where=(labels[r : r + step] == background)[..., None])
    return out


@dataclass(frozen=True)
class ClassStat:
    """One class present in a label map.

    Attributes:
        index: class index.
        name: ``display_name(categories[index])``, or ``"class {index}"`` beyond the categories.
        pixels: number of pixels with this label.
        fraction: ``pixels / labels.size``.
        color: the class's palette colour (R, G, B), 0..255.
        confidence: mean confidence (0..1) of the class's pixels, when a confidence map was given.
    """

    index: int
    name: str
    pixels: int
    fraction: float
    color: tuple[int, int, int]
    confidence: float | None = None


def class_stats(
    labels: np.ndarray,
    categories: Sequence[str],
    palette: np.ndarray | None = None,
    *,
    confidence: np.ndarray | None = None,
) -> list[ClassStat]:
    """Pixel counts of the classes present in a label map.

    Args:
        labels: (H, W) integer class indices.
        categories: class names by index, e.g. ``weights.meta["categories"]``.
        palette: (N, 3) uint8 colours; default ``voc_palette()``.
        confidence: optional (H, W) uint8 confidence map (probability x 255); each class then
            gets the mean confidence of its pixels, ``sum(confidence) / (255 * pixels)``.

    Returns:
        One ``ClassStat`` per class with at least one pixel, most pixels first, ties by index.
        Label values >= ``len(categories)`` (e.g. VOC's 255 "void") are named ``"class {i}"``.
    """
    labels = _check_labels(labels)
    palette = _check_palette(palette, labels)
    counts = np.bincount(labels.ravel())
    present = np.flatnonzero(counts)
    order = present[np.lexsort((present, -counts[present]))]
    sums = None
    if confidence is not None:
        if confidence.shape != labels.shape:
            raise ValueError(f"confidence map {confidence.shape} does not match the labels {labels.shape}")
        sums = np.bincount(labels.ravel(), weights=confidence.ravel().astype(np.float64), minlength=len(counts))
    return [
        ClassStat(
            index=int(i),
            name=display_name(categories[i]) if i < len(categories) else f"class {i}",
            pixels=int(counts[i]),
            fraction=float(counts[i] / labels.size),
            color=(int(palette[i, 0]), int(palette[i, 1]), int(palette[i, 2])),
            confidence=None if sums is None else float(sums[i] / (255.0 * counts[i])),
        )
        for i in order
    ]


def heat_palette() -> np.ndarray:
    """(256, 3) uint8 colours of matplotlib's "inferno" map: 0 black-purple (unsure) .. 255 yellow (sure).

    A confidence map saved as an indexed PNG with this palette (``io.save_mask_png(path, conf,
    heat_palette())``) shows as a heat map and reads back as the probability x 255."""
    from matplotlib import colormaps

    return np.rint(colormaps["inferno"](np.arange(256) / 255.0)[:, :3] * 255).astype(np.uint8)


_LOW_CONFIDENCE_COLOR = (255, 255, 0)


def outline_low_confidence(
    rgb: np.ndarray,
    confidence: np.ndarray,
    *,
    threshold: float = 0.5,
    color: tuple[int, int, int] = _LOW_CONFIDENCE_COLOR,
    width: int = 1,
) -> np.ndarray:
    """Draw the outline of the regions whose confidence is below ``threshold`` onto an image.

    Args:
        rgb: (H, W, 3) uint8 image (e.g. an overlay); not modified.
        confidence: (H, W) uint8 map, probability x 255.
        threshold: probability under which a pixel counts as low confidence.
        color: outline colour; width: outline thickness in pixels (drawn inside the region).

    Returns:
        (H, W, 3) uint8 copy with the low-confidence regions' boundary pixels set to ``color``.
    """
    from scipy import ndimage

    if confidence.shape != rgb.shape[:2]:
        raise ValueError(f"confidence map {confidence.shape} does not match the image {rgb.shape[:2]}")
    low = confidence < threshold * 255
    edge = low & ~ndimage.binary_erosion(low, iterations=max(1, width), border_value=1)
    out = rgb.copy()
    out[edge] = color
    return out


def _percent(fraction: float) -> str:
    """One decimal; a class that is present never reads as 0.0%."""
    return "<0.1%" if 0 < fraction < 0.0005 else f"{100 * fraction:.1f}%"


def _display_size(rgb: np.ndarray, *label_maps: np.ndarray) -> tuple[np.ndarray, ...]:
    """Shrink the image and its label maps to at most _DISPLAY_PIXELS on the long side: a panel
    shows no more than that, and drawing a 50 MP photo would take matplotlib tens of seconds.
    Label maps use nearest-neighbour so no colour appears that is not a class; legends take their
    percentages from the full maps."""
    height, width = rgb.shape[:2]
    scale = _DISPLAY_PIXELS / max(height, width)
    if scale >= 1:
        return (rgb, *label_maps)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small_rgb = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0))
    nearest = Image.Resampling.NEAREST
    return (small_rgb, *(np.asarray(Image.fromarray(m.astype(np.uint8)).resize(size, nearest)) for m in label_maps))


def figure(
    image: Image.Image | np.ndarray,
    labels: np.ndarray,
    categories: Sequence[str],
    palette: np.ndarray | None = None,
    *,
    title: str | None = None,
    alpha: float | None = None,
    confidence: np.ndarray | None = None,
) -> Figure:
    """Image and colour mask side by side, with a legend of the classes present below them.

    Built on ``matplotlib.figure.Figure`` without pyplot: no global state, no window, safe in
    threads. Save it with ``fig.savefig(fileobj, format="png", dpi=100)``.

    Args:
        image: PIL image (converted to RGB) or (H, W, 3) uint8 array.
        labels: (H, W) integer class indices, same H, W as the image.
        categories: class names by index.
        palette: (N, 3) uint8 colours; default ``voc_palette()``.
        title: optional figure title.
        alpha: if given, a third panel shows ``overlay(image, labels, palette, alpha=alpha)``.
        confidence: optional (H, W) uint8 confidence map (probability x 255): a last panel shows
            it as a heat map (:func:`heat_palette`) and legend entries add each class's mean.

    Returns:
        The Figure: 2 axes ('Image', 'Segmentation'), 3 with 'Overlay' or 'Confidence', 4 with
        both. Legend entries are ``"name  12.3%"`` (``"name  12.3%  p=0.87"`` with confidence) in
        ``class_stats`` order, patches in the mask's exact colours.
    """
    labels = _check_labels(labels)
    rgb = _as_rgb(image, labels)
    stats = class_stats(labels, categories, palette, confidence=confidence)
    maps = (labels,) if confidence is None else (labels, confidence)
    rgb, labels, *small_conf = _display_size(rgb, *maps)
    panels = [("Image", rgb), ("Segmentation", colorize(labels, palette))]
    if alpha is not None:
        panels.append(("Overlay", overlay(rgb, labels, palette, alpha=alpha)))
    if small_conf:
        panels.append(("Confidence", heat_palette()[small_conf[0]]))

    height, width = labels.shape
    panel_w, panel_h = _PANEL_INCHES, _PANEL_INCHES * height / max(width, 1)
    if panel_h > _MAX_PANEL_HEIGHT:
        panel_w, panel_h = panel_w * _MAX_PANEL_HEIGHT / panel_h, _MAX_PANEL_HEIGHT
    fig_w = max(panel_w * len(panels) + 0.4, 2 * _LEGEND_COLUMN_INCHES)
    ncol = max(1, min(len(stats), int(fig_w // _LEGEND_COLUMN_INCHES)))
    rows = math.ceil(len(stats) / ncol)
    fig_h = panel_h + 0.5 + rows * _LEGEND_ROW_INCHES + (0.4 if title else 0.0)

    # Constrained layout reserves room for an "outside" legend, so it never covers a panel.
    fig = Figure(figsize=(fig_w, fig_h), layout="constrained")
    for ax, (name, array) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels):
        ax.imshow(array, interpolation="nearest")
        ax.set_title(name)
        ax.set_axis_off()
    if title:
        fig.suptitle(title)
    handles = [
        Patch(
            facecolor=np.array(s.color) / 255,
            edgecolor="0.4",  # a thin outline keeps black and near-white patches visible
            linewidth=0.5,
            label=f"{s.name}  {_percent(s.fraction)}" + (f"  p={s.confidence:.2f}" if s.confidence is not None else ""),
        )
        for s in stats
    ]
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncol=ncol, fontsize="small", frameon=False)
    return fig


_WRONG = (255, 0, 0)
_IGNORED = (224, 224, 192)  # VOC's "void" colour


def error_map(
    image: Image.Image | np.ndarray, target: np.ndarray, pred: np.ndarray, *, ignore_index: int = 255
) -> np.ndarray:
    """Where a prediction is wrong: a dimmed grey copy of the image, wrong pixels in red,
    pixels without ground truth (``ignore_index``) in VOC's void colour.

    Args:
        image: PIL image or (H, W, 3) uint8 array.
        target, pred: (H, W) integer class indices.

    Returns:
        (H, W, 3) uint8 array.
    """
    target, pred = _check_labels(target), _check_labels(pred)
    if target.shape != pred.shape:
        raise ValueError(f"target {target.shape} and prediction {pred.shape} differ in shape")
    gray = np.asarray(Image.fromarray(_as_rgb(image, target)).convert("L"))
    out = np.repeat((gray // 2)[..., None], 3, axis=2)
    ignored = target == ignore_index
    out[(target != pred) & ~ignored] = _WRONG
    out[ignored] = _IGNORED
    return out


def comparison_figure(
    image: Image.Image | np.ndarray,
    target: np.ndarray,
    pred: np.ndarray,
    categories: Sequence[str],
    palette: np.ndarray | None = None,
    *,
    ignore_index: int = 255,
    title: str | None = None,
) -> Figure:
    """Image | ground truth | prediction | error map, with a legend of the classes in either map.

    Legend entries give each class's share of the ground truth and of the prediction
    (``"cat  12.3% / 9.8%"``), then the error map's two colours.
    """
    target, pred = _check_labels(target), _check_labels(pred)
    rgb = _as_rgb(image, target)
    gt_stats = {c.index: c for c in class_stats(target, categories, palette)}
    pred_stats = {c.index: c for c in class_stats(pred, categories, palette)}
    palette = _check_palette(palette, np.maximum(target.max(initial=0), pred.max(initial=0)).reshape(1, 1))
    rgb, target, pred = _display_size(rgb, target, pred)
    errors = error_map(rgb, target, pred, ignore_index=ignore_index)
    small = [rgb, colorize(target, palette), colorize(pred, palette), errors]
    height, width = small[0].shape[:2]
    panel_w, panel_h = 3.2, 3.2 * height / max(width, 1)
    fig = Figure(figsize=(panel_w * 4 + 0.4, panel_h + 1.6 + (0.4 if title else 0.0)), layout="constrained")
    for ax, name, array in zip(fig.subplots(1, 4), ("Image", "Ground truth", "Prediction", "Errors"), small):
        ax.imshow(array, interpolation="nearest")
        ax.set_title(name)
        ax.set_axis_off()
    if title:
        fig.suptitle(title)
    handles = []
    for index in sorted((set(gt_stats) | set(pred_stats)) - {ignore_index}):  # ignore has its own entry
        stat = gt_stats.get(index) or pred_stats[index]
        shares = [_percent(d[index].fraction) if index in d else "-" for d in (gt_stats, pred_stats)]
        handles.append(
            Patch(
                facecolor=np.array(stat.color) / 255,
                edgecolor="0.4",
                linewidth=0.5,
                label=f"{stat.name}  {shares[0]} / {shares[1]}",
            )
        )
    handles.append(Patch(facecolor=np.array(_WRONG) / 255, label="wrong"))
    handles.append(Patch(facecolor=np.array(_IGNORED) / 255, edgecolor="0.4", linewidth=0.5, label="no ground truth"))
    fig.legend(
        handles=handles,
        loc="outside lower center",
        ncol=min(6, len(handles)),
        fontsize="small",
        frameon=False,
        title="class  ground truth / prediction",
        title_fontsize="small",
    )
    return fig
