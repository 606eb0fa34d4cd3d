"""What segmenting gives back: :class:`SegmentationResult` (one image's labels with its picture,
classes, colours and their one JSON form) and :class:`Prediction` (labels alone).

numpy, Pillow and :mod:`seglens.visualize` only: no torch, so results can be read, serialised
and drawn where the model does not run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from .visualize import ClassStat, background_index, class_stats, colorize, figure, overlay

__all__ = ["Prediction", "SegmentationResult"]


@dataclass(frozen=True, eq=False)  # eq=False: arrays have no single truth value
class Prediction:
    """One image's labels from :meth:`Segmenter.predict` / :meth:`Segmenter.predict_tensors`.

    Attributes:
        labels: (H, W) uint8 class indices at the image's own size.
        seconds: the image's share of the wall time.
        confidence: (H, W) uint8, the winning class's probability x 255, when the Segmenter
            computes confidence (``confidence=True``); else None.
    """

    labels: np.ndarray
    seconds: float
    confidence: np.ndarray | None = None


@dataclass(frozen=True, eq=False)
class SegmentationResult:
    """One image's segmentation.

    Attributes:
        labels: (H, W) uint8 class indices, H and W of the input image.
        image: the RGB input as segmented (PIL, EXIF orientation applied).
        categories: class names, index = label value.
        palette: (256, 3) uint8 colours, index = label value.
        seconds: wall time spent on this image (its share of a batch).
        confidence: (H, W) uint8, the winning class's probability x 255 (max softmax), when the
            Segmenter was made with ``confidence=True``; else None.
    """

    labels: np.ndarray
    image: Image.Image
    categories: tuple[str, ...]
    palette: np.ndarray = field(repr=False)
    seconds: float = 0.0
    confidence: np.ndarray | None = field(default=None, repr=False)

    @property
    def classes(self) -> list[ClassStat]:
        """Classes present, largest first, with pixel counts, fractions, colours and (with
        confidence maps) each class's mean confidence."""
        return class_stats(self.labels, self.categories, self.palette, confidence=self.confidence)

    def to_dict(self, *, digits: int | None = 6, hex_colors: bool = False) -> dict:
        """This result as JSON-ready data: the one serialisation ``summary.json`` (one entry per
        image), the web API's JSON answer and the video summary (per frame) are made of.

        Args:
            digits: decimal places of each class's ``fraction``; ``seconds`` and
                ``mean_confidence`` get ``digits - 2``. None: exact floats.
            hex_colors: also give each class's colour as ``"hex": "#rrggbb"``.

        Returns:
            ``{"width", "height", "seconds", "classes"}``: ``classes`` as :attr:`classes`, most
            pixels first, in :meth:`class_rows`' form.
        """
        height, width = self.labels.shape
        return {
            "width": width,
            "height": height,
            "seconds": self.seconds if digits is None else round(self.seconds, max(0, digits - 2)),
            "classes": self.class_rows(self.classes, digits=digits, hex_colors=hex_colors),
        }

    @staticmethod
    def class_rows(stats: Sequence[ClassStat], *, digits: int | None = 6, hex_colors: bool = False) -> list[dict]:
        """``ClassStat`` s as JSON rows: ``{"index", "name", "pixels", "fraction", "color"}``, plus
        ``"hex"`` (with ``hex_colors``) and ``"mean_confidence"`` (for stats that carry one);
        ``digits`` as in :meth:`to_dict`. Also used for class totals over a video's frames."""

        def rounded(value: float, places: int) -> float:
            return value if digits is None else round(value, max(0, places))

        rows = []
        for c in stats:
            row = {
                "index": c.index,
                "name": c.name,
                "pixels": c.pixels,
                "fraction": rounded(c.fraction, digits or 0),
                "color": list(c.color),
            }
            if hex_colors:
                row["hex"] = "#{:02x}{:02x}{:02x}".format(*c.color)
            if c.confidence is not None:
                row["mean_confidence"] = rounded(c.confidence, (digits or 0) - 2)
            rows.append(row)
        return rows

    def colorize(self) -> np.ndarray:
        """(H, W, 3) uint8 colour mask."""
        return colorize(self.labels, self.palette)

    def overlay(self, alpha: float = 0.5) -> np.ndarray:
        """(H, W, 3) uint8 image with the colour mask blended in (a background class left as is,
        :func:`seglens.visualize.background_index`; classes at index 0 that are not background,
        e.g. ADE20K's "wall", are tinted)."""
        return overlay(self.image, self.labels, self.palette, alpha=alpha, background=background_index(self.categories))

    def figure(self, *, title: str | None = None):
        """Matplotlib figure: image | colour mask (| confidence heat map), with a legend of the
        classes present."""
        return figure(self.image, self.labels, self.categories, self.palette, title=title, confidence=self.confidence)
