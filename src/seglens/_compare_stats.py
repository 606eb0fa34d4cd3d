"""Per-image class counts and the paired bootstrap of ``seglens compare`` (numpy only).

A configuration's mIoU, pixel accuracy and per-class IoU depend on three per-class sums only: the
true positives (the confusion matrix's diagonal), the ground-truth pixels (its row sums) and the
predicted pixels (its column sums). Kept per image, as (N, C) int64 arrays, they give the scores
of any multiset of the images: a bootstrap resample is a (N,) vector of how often each image was
drawn, and its counts are that vector times the per-image counts. ``per_image_counts.npz`` stores
them so that ``seglens eval`` folders can be compared without running their models again.

No seglens imports beyond numpy and :mod:`seglens.io`: :mod:`seglens.evaluation` may import this
module to write the npz without an import cycle (:mod:`seglens.compare` imports evaluation).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .io import atomic_open

__all__ = [
    "BootstrapDeltas",
    "ImageCounts",
    "count_scores",
    "image_row",
    "paired_bootstrap",
    "read_counts",
    "write_counts",
]

COUNTS_FILE = "per_image_counts.npz"  # in a seglens eval folder


@dataclass(frozen=True, eq=False)  # eq=False: arrays
class ImageCounts:
    """Per-image, per-class pixel counts of one configuration at the protocol's resolution.

    Attributes:
        names: the images' sample names, in dataset order (unreadable samples left out).
        tp: (N, C) int64 pixels of class c labelled c (the confusion matrix's diagonal).
        gt: (N, C) int64 ground-truth pixels of class c (rows; ignored pixels not counted).
        pred: (N, C) int64 valid pixels predicted as c (columns).
        class_names: the C class names (may be empty when unknown).
    """

    names: tuple[str, ...]
    tp: np.ndarray
    gt: np.ndarray
    pred: np.ndarray
    class_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        n = len(self.names)
        shapes = {a.shape for a in (self.tp, self.gt, self.pred)}
        if len(shapes) != 1 or next(iter(shapes))[:1] != (n,) or len(next(iter(shapes))) != 2:
            raise ValueError(f"counts: tp, gt and pred must be ({n}, C) arrays, got shapes {sorted(shapes)}")
        if self.class_names and len(self.class_names) != self.tp.shape[1]:
            raise ValueError(f"counts: {len(self.class_names)} class names for {self.tp.shape[1]} classes")

    @classmethod
    def from_rows(
        cls, names: Sequence[str], rows: Sequence[np.ndarray], class_names: Sequence[str] = ()
    ) -> ImageCounts:
        """From one (3, C) array per image: its (tp, gt, pred), as :func:`image_row` makes them."""
        c = len(class_names) if class_names else (rows[0].shape[1] if len(rows) else 0)
        m = np.stack(rows).astype(np.int64) if len(rows) else np.zeros((0, 3, c), np.int64)
        return cls(tuple(names), m[:, 0].copy(), m[:, 1].copy(), m[:, 2].copy(), tuple(class_names))

    @property
    def num_classes(self) -> int:
        return int(self.tp.shape[1])

    def totals(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The (C,) sums over the images: (tp, gt, pred)."""
        return self.tp.sum(axis=0), self.gt.sum(axis=0), self.pred.sum(axis=0)


def image_row(matrix: np.ndarray) -> np.ndarray:
    """(3, C) int64 (tp, gt, pred) of one image's (C, C) confusion matrix: all the bootstrap
    needs of it, C times smaller than the matrix (150 classes: 3.6 KB an image, not 180 KB)."""
    return np.stack([np.diagonal(matrix), matrix.sum(axis=1), matrix.sum(axis=0)]).astype(np.int64)


def write_counts(path: str | os.PathLike, counts: ImageCounts) -> None:
    """Write ``counts`` as an npz (names, class_names, tp, gt, pred), atomically."""
    with atomic_open(path) as f:
        np.savez_compressed(f, names=np.array(counts.names, dtype=str), class_names=np.array(counts.class_names,
                            dtype=str), tp=counts.tp, gt=counts.gt, pred=counts.pred)  # fmt: skip


def read_counts(path: str | os.PathLike) -> ImageCounts:
    """Read what :func:`write_counts` wrote. ValueError when it is not such a file."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in ("names", "class_names", "tp", "gt", "pred")}
    except (OSError, KeyError, ValueError) as e:
        raise ValueError(f"{os.fsdecode(path)}: not a per-image counts file ({e})") from None
    for k in ("tp", "gt", "pred"):
        if not np.issubdtype(arrays[k].dtype, np.integer) or (arrays[k].size and arrays[k].min() < 0):
            raise ValueError(f"{os.fsdecode(path)}: {k} must hold non-negative integer pixel counts")
    try:
        return ImageCounts(tuple(str(s) for s in arrays["names"]), *(arrays[k].astype(np.int64) for k in
                           ("tp", "gt", "pred")), tuple(str(s) for s in arrays["class_names"]))  # fmt: skip
    except ValueError as e:
        raise ValueError(f"{os.fsdecode(path)}: {e}") from None


def count_scores(tp: np.ndarray, gt: np.ndarray, pred: np.ndarray) -> tuple[float, float, np.ndarray]:
    """(mIoU, pixel accuracy, per-class IoU) of summed (C,) counts, fractions: the arithmetic of
    :func:`seglens.metrics.scores` (same operations, same bits), with its absent rule: a class
    with neither ground truth nor prediction has IoU NaN and is left out of the mean."""
    tp, gt, pred = (np.asarray(a, dtype=np.int64) for a in (tp, gt, pred))
    union = gt + pred - tp
    present = union > 0
    iou = np.full(tp.shape, np.nan)
    np.divide(tp, union, out=iou, where=union != 0)
    total = int(gt.sum())
    miou = float(iou[present].mean()) if present.any() else math.nan
    return miou, float(tp.sum() / total) if total else math.nan, iou


@dataclass(frozen=True, eq=False)
class BootstrapDeltas:
    """Percentile intervals, in percentage points, of one configuration minus the first.

    Attributes:
        miou, pixel_acc: (lo, hi), or None when no resample defines the delta.
        iou: (C, 2) float64 per-class (lo, hi); NaN rows where no resample has the class
            present in both configurations.
    """

    miou: tuple[float, float] | None
    pixel_acc: tuple[float, float] | None
    iou: np.ndarray


def _resample_weights(n: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(resamples, n) float64: how often each image is drawn in each resample (n draws with
    replacement), as a count matrix so that a resample's counts are one matrix product."""
    idx = rng.integers(0, n, size=(resamples, n))
    flat = (idx + (np.arange(resamples) * n)[:, None]).ravel()
    return np.bincount(flat, minlength=resamples * n).reshape(resamples, n).astype(np.float64)


def _resampled(w: np.ndarray, c: ImageCounts) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(B,) mIoU, (B,) pixel accuracy, (B, C) IoU of each resample (fractions; NaN: undefined).
    Counts are integers below 2**53, so the float64 products are exact."""
    tp, gt, pred = (w @ a.astype(np.float64) for a in (c.tp, c.gt, c.pred))
    union = gt + pred - tp
    iou = np.full(tp.shape, np.nan)
    np.divide(tp, union, out=iou, where=union > 0)
    present = (union > 0).sum(axis=1)
    miou = np.full(len(w), np.nan)
    np.divide(np.where(union > 0, iou, 0.0).sum(axis=1), present, out=miou, where=present > 0)
    total = gt.sum(axis=1)
    acc = np.full(len(w), np.nan)
    np.divide(tp.sum(axis=1), total, out=acc, where=total > 0)
    return miou, acc, iou


def _interval(deltas: np.ndarray, level: float) -> np.ndarray:
    """Percentile interval over axis 0, ignoring NaN; NaN where nothing is defined."""
    tail = 100 * (1 - level) / 2
    out = np.full((2,) + deltas.shape[1:], np.nan)
    defined = ~np.isnan(deltas).all(axis=0)
    if np.any(defined):
        out[:, defined] = np.nanpercentile(deltas[:, defined], [tail, 100 - tail], axis=0)
    return np.round(out, 4)


def paired_bootstrap(
    counts: Sequence[ImageCounts], *, resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> list[BootstrapDeltas]:
    """Paired bootstrap over images of each configuration's score minus the first one's.

    Every resample draws the N images with replacement (a seeded ``numpy.random.Generator``) and
    scores every configuration on the same draw, so what the images have in common cancels in
    the difference; the interval is the ``level`` percentile interval of the differences, in
    percentage points. Identical counts give identical resampled scores: every delta and both
    ends of every interval are exactly 0.

    Args:
        counts: one :class:`ImageCounts` per configuration, the same images in the same order.
        resamples: B, the number of resamples (>= 1).
        seed: of the generator; the same seed, counts and B give the same intervals.
        level: the interval's coverage, in (0, 1).

    Returns:
        One :class:`BootstrapDeltas` per configuration after the first.
    """
    if resamples < 1 or not 0 < level < 1:
        raise ValueError(f"resamples must be >= 1 and level in (0, 1), got {resamples} and {level}")
    if len(counts) < 2:
        return []
    first = counts[0]
    for c in counts[1:]:
        if c.names != first.names or c.tp.shape != first.tp.shape:
            raise ValueError("paired bootstrap: every configuration must have counts of the same images and classes")
    n = len(first.names)
    if n == 0:
        return [BootstrapDeltas(None, None, np.full((first.num_classes, 2), np.nan)) for _ in counts[1:]]
    rng = np.random.default_rng(seed)
    w = _resample_weights(n, resamples, rng)
    base = _resampled(w, first)
    out = []
    for c in counts[1:]:
        other = _resampled(w, c)
        miou, acc, iou = (_interval(100 * (o - b), level) for o, b in zip(other, base))
        out.append(BootstrapDeltas(_pair(miou), _pair(acc), iou.T.copy()))
    return out


def _pair(interval: np.ndarray) -> tuple[float, float] | None:
    lo, hi = float(interval[0]), float(interval[1])
    return None if math.isnan(lo) else (lo, hi)
