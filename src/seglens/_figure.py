"""The side-by-side figure drawn with Pillow: what ``seglens segment`` writes as ``*_figure.png``.

:func:`seglens.visualize.figure` lays the same figure out with matplotlib (a ``Figure`` to show
or save at any dpi); drawing and saving it costs more than a small network's forward pass (at
480x360, lraspp: 6.1 img/s for masks alone, 3.5 img/s with figures). This module composes the
same picture at matplotlib's 100 dpi directly with Pillow: panels resized once, the titles and
legend in matplotlib's own font (DejaVu Sans, shipped with matplotlib), the legend's patches
and layout as :func:`~seglens.visualize.figure` places them. Fonts are loaded once per process.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .visualize import (
    _DISPLAY_PIXELS,
    _LEGEND_COLUMN_INCHES,
    _LEGEND_ROW_INCHES,
    _MAX_PANEL_HEIGHT,
    _PANEL_INCHES,
    _as_rgb,
    _check_labels,
    _check_palette,
    _percent,
    class_stats,
    heat_palette,
    overlay,
)

__all__ = ["figure_image"]

_DPI = 100
_TITLE_PX = 17  # matplotlib's "large" (12 pt) at 100 dpi
_LEGEND_PX = 12  # "small" (8.33 pt)
_PAD = 8
_GAP = 16  # between panels
_PATCH = (20, 10)  # the legend's colour patch, as matplotlib draws it at this font size


@functools.lru_cache(maxsize=4)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        import matplotlib

        path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
        return ImageFont.truetype(str(path), size)
    except (ImportError, OSError):
        return ImageFont.load_default(size)


def _resize(array: np.ndarray, size: tuple[int, int], nearest: bool) -> Image.Image:
    im = Image.fromarray(array)
    if im.size == size:
        return im
    return im.resize(size, Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR, reducing_gap=2.0)


def _indexed(values: np.ndarray, palette: np.ndarray | None, size: tuple[int, int]) -> Image.Image:
    """``colorize(values, palette)`` resized by nearest neighbour to ``size``, done the cheap way
    round: the indices are resized as a palette image and coloured once (the same pixels)."""
    colors = _check_palette(palette, values)
    im = Image.fromarray(values.astype(np.uint8, copy=False), "L").convert("P")
    im.putpalette(colors[:256].astype(np.uint8).tobytes())
    if im.size != size:
        im = im.resize(size, Image.Resampling.NEAREST)
    return im.convert("RGB")


def figure_image(
    image: Image.Image | np.ndarray,
    labels: np.ndarray,
    categories: Sequence[str],
    palette: np.ndarray | None = None,
    *,
    title: str | None = None,
    alpha: float | None = None,
    confidence: np.ndarray | None = None,
) -> Image.Image:
    """:func:`seglens.visualize.figure`'s picture (same panels, titles, legend entries and
    colours, 100 dpi) as an RGB ``PIL.Image``, drawn with Pillow."""
    labels = _check_labels(labels)
    rgb = _as_rgb(image, labels)
    stats = class_stats(labels, categories, palette, confidence=confidence)
    height, width = labels.shape
    scale = min(1.0, _DISPLAY_PIXELS / max(height, width))
    panel_w, panel_h = _PANEL_INCHES, _PANEL_INCHES * height / max(width, 1)
    if panel_h > _MAX_PANEL_HEIGHT:
        panel_w, panel_h = panel_w * _MAX_PANEL_HEIGHT / panel_h, _MAX_PANEL_HEIGHT
    size = (max(1, round(panel_w * _DPI)), max(1, round(panel_h * _DPI)))
    if scale < 1:  # as visualize._display_size: label maps shrink by nearest neighbour
        small = (max(1, round(width * scale)), max(1, round(height * scale)))
        rgb = np.asarray(_resize(rgb, small, nearest=False))
        labels = np.asarray(_resize(labels.astype(np.uint8), small, nearest=True))
        if confidence is not None:
            confidence = np.asarray(_resize(confidence, small, nearest=True))
    panels = [("Image", _resize(rgb, size, nearest=False)), ("Segmentation", _indexed(labels, palette, size))]
    if alpha is not None:
        panels.append(("Overlay", _resize(overlay(rgb, labels, palette, alpha=alpha), size, nearest=False)))
    if confidence is not None:
        panels.append(("Confidence", _indexed(confidence, heat_palette(), size)))

    n = len(panels)
    fig_w = max(round((panel_w * n + 0.4) * _DPI), round(2 * _LEGEND_COLUMN_INCHES * _DPI))
    ncol = max(1, min(len(stats), int(fig_w // (_LEGEND_COLUMN_INCHES * _DPI))))
    rows = math.ceil(len(stats) / ncol) if stats else 0
    title_h = round(0.4 * _DPI) if title else 0
    panels_w = n * size[0] + (n - 1) * _GAP
    top = _PAD + title_h
    legend_top = top + _TITLE_PX + 8 + size[1] + _PAD
    fig_h = legend_top + rows * round(_LEGEND_ROW_INCHES * _DPI) + _PAD
    fig = Image.new("RGB", (max(fig_w, panels_w + 2 * _PAD), fig_h), "white")
    draw = ImageDraw.Draw(fig)
    title_font, legend_font = _font(_TITLE_PX), _font(_LEGEND_PX)
    if title:
        draw.text((fig.width / 2, _PAD + title_h / 2), title, fill="black", font=title_font, anchor="mm")
    x = (fig.width - panels_w) // 2
    for name, picture in panels:
        draw.text((x + size[0] / 2, top + _TITLE_PX / 2), name, fill="black", font=title_font, anchor="mm")
        fig.paste(picture, (x, top + _TITLE_PX + 8))
        x += size[0] + _GAP
    column_w = round(_LEGEND_COLUMN_INCHES * _DPI)
    row_h = round(_LEGEND_ROW_INCHES * _DPI)
    left = (fig.width - ncol * column_w) // 2
    for k, s in enumerate(stats):
        c, r = divmod(k, rows)  # column by column, as matplotlib's legend fills them
        px, py = left + c * column_w, legend_top + r * row_h + (row_h - _PATCH[1]) // 2
        draw.rectangle((px, py, px + _PATCH[0], py + _PATCH[1]), fill=s.color, outline=(102, 102, 102))
        text = f"{s.name}  {_percent(s.fraction)}" + (f"  p={s.confidence:.2f}" if s.confidence is not None else "")
        draw.text((px + _PATCH[0] + 6, py + _PATCH[1] / 2), text, fill="black", font=legend_font, anchor="lm")
    return fig
