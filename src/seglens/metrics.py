"""Segmentation metrics over a confusion matrix, and two failure analyses (object size, boundaries).

Pure numpy + scipy: no torch, no files, no printing. Every score is a fraction in [0, 1]; callers
turn them into percent.

Definitions follow torchvision's reference ``ConfusionMatrix`` (``references/segmentation/utils.py``):
rows are ground truth, columns prediction; pixels whose target is outside ``[0, n)`` (VOC's 255
"void"/ignore label) are skipped; ``acc_global = diag.sum() / h.sum()``, ``acc = diag / h.sum(1)``,
``iu = diag / (h.sum(1) + h.sum(0) - diag)``. The one difference is the mean over classes, see
``ABSENT_RULE``. Accumulators only add integer counts, so they merge exactly across batches or
workers, and every score is computed once from the summed counts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = [
    "ABSENT_RULE",
    "SIZE_BUCKETS",
    "BoundaryAccuracy",
    "BoundaryStats",
    "BucketStats",
    "Confusion",
    "ConfusionMatrix",
    "Scores",
    "SizeRecall",
    "boundary_band",
    "confusion_matrix",
    "image_scores",
    "regions",
    "scores",
    "top_confusions",
]

ABSENT_RULE = (
    "A class absent from both ground truth and predictions is reported as absent and left out of the "
    "means (torchvision's iu.mean() would turn it into NaN); a class predicted but absent from ground "
    "truth counts with IoU 0."
)

# COCO's area thresholds (pycocotools COCOeval areaRng): (name, lowest area, first area too large).
SIZE_BUCKETS: tuple[tuple[str, int, int | None], ...] = (
    ("small", 0, 32**2),
    ("medium", 32**2, 96**2),
    ("large", 96**2, None),
)

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


# --- validation ------------------------------------------------------------------------------


def _check_num_classes(num_classes: int) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    return int(num_classes)


def _check_pair(target: np.ndarray, pred: np.ndarray, *, ndim: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    target, pred = np.asarray(target), np.asarray(pred)
    for name, array in (("target", target), ("pred", pred)):
        if not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"{name} must be an integer array of class indices, got dtype {array.dtype}")
    if target.shape != pred.shape:
        raise ValueError(f"target shape {target.shape} and pred shape {pred.shape} differ; they must match")
    if ndim is not None and target.ndim != ndim:
        raise ValueError(f"target and pred must be (H, W) label maps, got shape {target.shape}")
    return target, pred


def _check_pred_range(pred: np.ndarray, num_classes: int) -> None:
    if pred.size and (pred.min() < 0 or pred.max() >= num_classes):
        bad = pred.min() if pred.min() < 0 else pred.max()
        raise ValueError(
            f"pred contains class {bad}, outside [0, {num_classes}); predictions must be class indices "
            f"(is num_classes={num_classes} right?)"
        )


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator as float64, NaN where the denominator is 0 (and no warning)."""
    out = np.full(np.shape(numerator), np.nan)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else math.nan


# --- confusion matrix and scores ------------------------------------------------------------


def confusion_matrix(target: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Pixel confusion matrix, as torchvision's reference ``ConfusionMatrix.update``.

    Args:
        target: integer ground-truth labels, any shape (e.g. (H, W) or (N, H, W)). Pixels outside
            ``[0, num_classes)`` (the ignore index 255, negatives) are skipped.
        pred: integer predicted labels, same shape, every value in ``[0, num_classes)``.
        num_classes: n.

    Returns:
        (n, n) int64; ``[i, j]`` = pixels of ground-truth class i predicted as j.
    """
    n = _check_num_classes(num_classes)
    target, pred = _check_pair(target, pred)
    _check_pred_range(pred, n)
    valid = (target >= 0) & (target < n)
    index = n * target[valid].astype(np.int64) + pred[valid]
    return np.bincount(index, minlength=n * n).reshape(n, n)


class ConfusionMatrix:
    """Accumulates a confusion matrix over images; it only adds.

    Args:
        num_classes: n.
    """

    def __init__(self, num_classes: int) -> None:
        self._n = _check_num_classes(num_classes)
        self._mat = np.zeros((self._n, self._n), dtype=np.int64)

    @property
    def num_classes(self) -> int:
        return self._n

    @property
    def matrix(self) -> np.ndarray:
        """(n, n) int64 copy of the counts so far (rows ground truth, columns prediction)."""
        return self._mat.copy()

    def update(self, target: np.ndarray, pred: np.ndarray) -> None:
        """Add one image or batch; arguments as ``confusion_matrix``."""
        self.add(confusion_matrix(target, pred, self._n))

    def add(self, matrix: np.ndarray) -> None:
        """Add an (n, n) matrix of counts already made by ``confusion_matrix`` (one image's, say)."""
        self._mat += matrix

    def merge(self, other: ConfusionMatrix) -> None:
        """Add another accumulator's counts (e.g. from another worker)."""
        if not isinstance(other, ConfusionMatrix) or other.num_classes != self._n:
            raise ValueError(f"can only merge a ConfusionMatrix with num_classes={self._n}, got {other!r}")
        self._mat += other._mat

    def __repr__(self) -> str:
        return f"ConfusionMatrix(num_classes={self._n}, pixels={int(self._mat.sum())})"


@dataclass(frozen=True, eq=False)  # eq=False: arrays have no single truth value to compare
class Scores:
    """Scores from one confusion matrix; fractions in [0, 1]. Arrays are (n,) and read-only.

    Attributes:
        pixel_acc: ``diag.sum() / total``; NaN if no valid pixel.
        mean_acc: mean of ``acc`` over classes with ground-truth pixels.
        miou: mean of ``iou`` over ``present`` classes (see ``ABSENT_RULE``).
        fwiou: sum over classes of ``gt_pixels / total * iou`` (frequency-weighted IoU).
        mean_dice: mean of ``dice`` over ``present`` classes.
        acc: float64 per-class recall ``diag / gt_pixels``, NaN where no ground-truth pixels.
        iou: float64 ``diag / (gt_pixels + pred_pixels - diag)``, NaN where not present.
        dice: float64 ``2 diag / (gt_pixels + pred_pixels)`` = 2TP / (2TP + FP + FN), NaN where not present.
        gt_pixels: int64 row sums.
        pred_pixels: int64 column sums.
        present: bool, class in ground truth or prediction.
    """

    pixel_acc: float
    mean_acc: float
    miou: float
    fwiou: float
    mean_dice: float
    acc: np.ndarray
    iou: np.ndarray
    dice: np.ndarray
    gt_pixels: np.ndarray
    pred_pixels: np.ndarray
    present: np.ndarray


def scores(matrix: np.ndarray) -> Scores:
    """All scores of a confusion matrix.

    Args:
        matrix: (n, n) non-negative integer counts, rows ground truth, columns prediction.

    Returns:
        ``Scores``; means over no classes (an empty matrix) are NaN.
    """
    matrix = np.asarray(matrix)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] < 1:
        raise ValueError(f"matrix must be a square (n, n) confusion matrix, got shape {matrix.shape}")
    if not np.issubdtype(matrix.dtype, np.integer) or (matrix.size and matrix.min() < 0):
        raise ValueError(f"matrix must hold non-negative integer pixel counts, got dtype {matrix.dtype}")
    matrix = matrix.astype(np.int64)
    diag = np.diag(matrix)
    gt = matrix.sum(axis=1)
    predicted = matrix.sum(axis=0)
    total = int(gt.sum())
    union = gt + predicted - diag
    present = union > 0
    acc = _divide(diag, gt)
    iou = _divide(diag, union)
    dice = _divide(2 * diag, gt + predicted)
    has_gt = gt > 0
    arrays = (acc, iou, dice, gt, predicted, present)
    for array in arrays:
        array.setflags(write=False)
    return Scores(
        pixel_acc=float(diag.sum() / total) if total else math.nan,
        mean_acc=_mean(acc[has_gt]),
        miou=_mean(iou[present]),
        # Classes without ground truth weigh 0 (their IoU may be NaN), so sum over has_gt only.
        fwiou=float((gt[has_gt] * iou[has_gt]).sum() / total) if total else math.nan,
        mean_dice=_mean(dice[present]),
        acc=acc,
        iou=iou,
        dice=dice,
        gt_pixels=gt,
        pred_pixels=predicted,
        present=present,
    )


def image_scores(target: np.ndarray, pred: np.ndarray, num_classes: int) -> Scores:
    """``scores(confusion_matrix(target, pred, num_classes))``, e.g. for per-image mIoU."""
    return scores(confusion_matrix(target, pred, num_classes))


@dataclass(frozen=True)
class Confusion:
    """One off-diagonal cell: ``pixels`` of ground-truth class ``gt`` predicted as ``pred``.

    Attributes:
        gt: ground-truth class index.
        pred: predicted class index (``!= gt``).
        pixels: the cell's count, > 0.
        fraction_of_gt: ``pixels / gt_pixels[gt]``.
    """

    gt: int
    pred: int
    pixels: int
    fraction_of_gt: float


def top_confusions(matrix: np.ndarray, *, k: int = 10) -> list[Confusion]:
    """The largest off-diagonal cells of a confusion matrix.

    Args:
        matrix: (n, n) non-negative integer counts, rows ground truth.
        k: at most this many cells (>= 0).

    Returns:
        Cells with pixels > 0, most pixels first, ties by (gt, pred).
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"k must be a non-negative integer, got {k!r}")
    gt_pixels = scores(matrix).gt_pixels  # validates the matrix
    matrix = np.asarray(matrix, dtype=np.int64)
    off = matrix * ~np.eye(len(matrix), dtype=bool)
    gt, pred = np.nonzero(off)  # row-major, so already in (gt, pred) order
    order = np.argsort(-off[gt, pred], kind="stable")[:k]
    return [
        Confusion(gt=int(g), pred=int(p), pixels=int(matrix[g, p]), fraction_of_gt=float(matrix[g, p] / gt_pixels[g]))
        for g, p in zip(gt[order], pred[order])
    ]


# --- failure analysis: object size ----------------------------------------------------------


def _valid(target: np.ndarray, num_classes: int, ignore_index: int) -> np.ndarray:
    return (target >= 0) & (target < num_classes) & (target != ignore_index)


def _component_labels(target: np.ndarray, num_classes: int, ignore_index: int) -> tuple[np.ndarray, np.ndarray]:
    """One label image for all classes' 8-connected components: (H, W) int64, 0 = no region,
    regions numbered 1.. by class then scipy's scan order; and (k,) int64 class of each region."""
    valid = _valid(target, num_classes, ignore_index)
    labels = np.zeros(target.shape, dtype=np.int64)
    classes: list[np.ndarray] = []
    count = 0
    for c in np.unique(target[valid]):
        if c == 0:  # background is not an object
            continue
        component, found = ndimage.label(target == c, structure=_EIGHT_CONNECTED)
        labels[component > 0] = component[component > 0] + count
        classes.append(np.full(found, c, dtype=np.int64))
        count += found
    return labels, np.concatenate(classes) if classes else np.zeros(0, dtype=np.int64)


def _instance_masks(
    target: np.ndarray, num_classes: int, ignore_index: int, instances: Sequence[tuple[int, np.ndarray]]
) -> list[tuple[int, np.ndarray]]:
    valid = _valid(target, num_classes, ignore_index)
    out = []
    for i, (c, mask) in enumerate(instances):
        mask = np.asarray(mask)
        if mask.shape != target.shape:
            raise ValueError(f"instance {i}: mask shape {mask.shape} differs from target shape {target.shape}")
        if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or not 0 <= c < num_classes:
            raise ValueError(f"instance {i}: class {c!r} is outside [0, {num_classes})")
        kept = mask.astype(bool) & valid
        if kept.any():  # an instance wholly under ignore pixels has nothing to score
            out.append((int(c), kept))
    return out


def regions(
    target: np.ndarray,
    num_classes: int,
    *,
    ignore_index: int = 255,
    instances: Sequence[tuple[int, np.ndarray]] | None = None,
) -> list[tuple[int, np.ndarray]]:
    """Ground-truth object regions.

    Args:
        target: (H, W) integer ground-truth labels.
        num_classes: n; target values outside ``[0, n)`` and ``ignore_index`` belong to no region.
        ignore_index: label of pixels to leave out (VOC's void).
        instances: optional (class, (H, W) bool mask) pairs, e.g. COCO instance masks. Mask pixels
            whose target is ignored are dropped; instances left with no pixel are dropped.

    Returns:
        (class, (H, W) bool mask) pairs: the instances in their order, or without instances the
        8-connected components of each class except background 0, by class then scan order.
        One full-size mask per region: to score many images use ``SizeRecall``, which counts
        regions over one label image instead.
    """
    n = _check_num_classes(num_classes)
    target = np.asarray(target)
    if target.ndim != 2 or not np.issubdtype(target.dtype, np.integer):
        raise ValueError(f"target must be an (H, W) integer label map, got shape {target.shape}, dtype {target.dtype}")
    if instances is not None:
        return _instance_masks(target, n, ignore_index, instances)
    labels, classes = _component_labels(target, n, ignore_index)
    out = []
    for i, (c, box) in enumerate(zip(classes, ndimage.find_objects(labels))):
        mask = np.zeros(target.shape, dtype=bool)  # compare only inside the region's bounding box
        mask[box] = labels[box] == i + 1
        out.append((int(c), mask))
    return out


@dataclass(frozen=True)
class BucketStats:
    """Recall of the ground-truth regions in one size bucket.

    Attributes:
        regions: number of regions.
        pixels: their pixels.
        hit_pixels: those predicted as the region's class.
        pixel_recall: ``hit_pixels / pixels``; NaN when the bucket is empty.
        mean_region_recall: mean over regions of each region's recall; NaN when empty.
    """

    regions: int
    pixels: int
    hit_pixels: int
    pixel_recall: float
    mean_region_recall: float


class SizeRecall:
    """Accumulates recall by ground-truth region size, bucketed by ``SIZE_BUCKETS``.

    A region's area is its count of valid (non-ignored) pixels.
    """

    def __init__(self) -> None:
        k = len(SIZE_BUCKETS)
        self._regions = np.zeros(k, dtype=np.int64)
        self._pixels = np.zeros(k, dtype=np.int64)
        self._hits = np.zeros(k, dtype=np.int64)
        self._recall_sum = np.zeros(k, dtype=np.float64)

    def update(
        self,
        target: np.ndarray,
        pred: np.ndarray,
        *,
        num_classes: int,
        ignore_index: int = 255,
        instances: Sequence[tuple[int, np.ndarray]] | None = None,
    ) -> None:
        """Add one image.

        Args:
            target: (H, W) integer ground-truth labels.
            pred: (H, W) integer predictions in ``[0, num_classes)``.
            num_classes: n.
            ignore_index: ground-truth label to leave out.
            instances: optional (class, (H, W) bool mask) pairs; see ``regions``.
        """
        n = _check_num_classes(num_classes)
        target, pred = _check_pair(target, pred, ndim=2)
        _check_pred_range(pred, n)
        if instances is None:
            labels, _ = _component_labels(target, n, ignore_index)
            count = int(labels.max(initial=0))
            area = np.bincount(labels.ravel(), minlength=count + 1)[1:]
            # Inside a component target == its class, so a hit is pred == target.
            hits = np.bincount(labels[pred == target], minlength=count + 1)[1:]
        else:
            masks = _instance_masks(target, n, ignore_index, instances)
            area = np.array([m.sum() for _, m in masks], dtype=np.int64)
            hits = np.array([np.count_nonzero(pred[m] == c) for c, m in masks], dtype=np.int64)
        edges = [low for _, low, _ in SIZE_BUCKETS[1:]]
        bucket = np.searchsorted(edges, area, side="right")
        k = len(SIZE_BUCKETS)
        self._regions += np.bincount(bucket, minlength=k)
        self._pixels += np.bincount(bucket, weights=area, minlength=k).astype(np.int64)
        self._hits += np.bincount(bucket, weights=hits, minlength=k).astype(np.int64)
        self._recall_sum += np.bincount(bucket, weights=hits / np.maximum(area, 1), minlength=k)

    def merge(self, other: SizeRecall) -> None:
        """Add another accumulator's counts (e.g. from another worker). The region and pixel
        counts add exactly; the sum of region recalls is a float sum, so merging in another order
        than the images came may change its last bits (merge per-image accumulators in image order
        to reproduce one pass exactly, as :mod:`seglens.evaluation` does)."""
        if not isinstance(other, SizeRecall):
            raise ValueError(f"can only merge a SizeRecall, got {other!r}")
        self._regions += other._regions
        self._pixels += other._pixels
        self._hits += other._hits
        self._recall_sum += other._recall_sum

    def result(self) -> dict[str, BucketStats]:
        """Bucket name -> ``BucketStats``, every bucket of ``SIZE_BUCKETS`` in order."""
        return {
            name: BucketStats(
                regions=int(self._regions[i]),
                pixels=int(self._pixels[i]),
                hit_pixels=int(self._hits[i]),
                pixel_recall=float(self._hits[i] / self._pixels[i]) if self._pixels[i] else math.nan,
                mean_region_recall=float(self._recall_sum[i] / self._regions[i]) if self._regions[i] else math.nan,
            )
            for i, (name, _, _) in enumerate(SIZE_BUCKETS)
        }


# --- failure analysis: boundaries -----------------------------------------------------------


def boundary_band(target: np.ndarray, width: int, *, ignore_index: int = 255) -> np.ndarray:
    """Valid pixels near a ground-truth boundary.

    A boundary pixel is a valid pixel (``target != ignore_index``) with a 4-neighbour of another
    label value; the ignore value counts as another value, so VOC's void outlines make boundaries.
    The image border is not a boundary.

    Args:
        target: (H, W) integer ground-truth labels.
        width: >= 1; the band holds valid pixels whose Euclidean distance to the nearest boundary
            pixel is at most ``width`` (``scipy.ndimage.distance_transform_edt``).
        ignore_index: label of pixels that are never in the band.

    Returns:
        (H, W) bool.
    """
    target = np.asarray(target)
    if target.ndim != 2 or not np.issubdtype(target.dtype, np.integer):
        raise ValueError(f"target must be an (H, W) integer label map, got shape {target.shape}, dtype {target.dtype}")
    if isinstance(width, bool) or not isinstance(width, (int, np.integer)) or width < 1:
        raise ValueError(f"width must be an integer >= 1 (pixels), got {width!r}")
    valid = target != ignore_index
    differs = np.zeros(target.shape, dtype=bool)
    vertical = target[1:, :] != target[:-1, :]
    horizontal = target[:, 1:] != target[:, :-1]
    differs[1:, :] |= vertical
    differs[:-1, :] |= vertical
    differs[:, 1:] |= horizontal
    differs[:, :-1] |= horizontal
    boundary = differs & valid
    if not boundary.any():
        return np.zeros(target.shape, dtype=bool)
    return (ndimage.distance_transform_edt(~boundary) <= width) & valid


@dataclass(frozen=True)
class BoundaryStats:
    """Pixel accuracy near boundaries (the band) and away from them (the interior).

    Attributes:
        width: the band width used (None before any update).
        band_pixels: valid pixels in the band.
        band_correct: those with pred == target.
        band_acc: ``band_correct / band_pixels``; NaN when 0.
        interior_pixels: valid pixels outside the band.
        interior_correct: those with pred == target.
        interior_acc: ``interior_correct / interior_pixels``; NaN when 0.
    """

    width: int | None
    band_pixels: int
    band_correct: int
    band_acc: float
    interior_pixels: int
    interior_correct: int
    interior_acc: float


class BoundaryAccuracy:
    """Accumulates pixel accuracy inside and outside ``boundary_band``; one width per accumulator."""

    def __init__(self) -> None:
        self._width: int | None = None
        self._counts = np.zeros(4, dtype=np.int64)  # band, band correct, interior, interior correct

    def update(self, target: np.ndarray, pred: np.ndarray, *, width: int, ignore_index: int = 255) -> None:
        """Add one image.

        Args:
            target: (H, W) integer ground-truth labels.
            pred: (H, W) integer predictions.
            width: band width, see ``boundary_band``; the same on every call.
            ignore_index: ground-truth label to leave out.
        """
        target, pred = _check_pair(target, pred, ndim=2)
        if self._width is not None and width != self._width:
            raise ValueError(f"width {width!r} differs from the width {self._width} of earlier updates")
        band = boundary_band(target, width, ignore_index=ignore_index)
        self._width = int(width)
        valid = target != ignore_index
        correct = pred == target
        interior = valid & ~band
        self._counts += [
            np.count_nonzero(band),
            np.count_nonzero(band & correct),
            np.count_nonzero(interior),
            np.count_nonzero(interior & correct),
        ]

    def merge(self, other: BoundaryAccuracy) -> None:
        """Add another accumulator's counts (e.g. from another worker); widths must agree."""
        if not isinstance(other, BoundaryAccuracy):
            raise ValueError(f"can only merge a BoundaryAccuracy, got {other!r}")
        if self._width is not None and other._width is not None and other._width != self._width:
            raise ValueError(f"width {other._width} differs from the width {self._width} of this accumulator")
        self._width = self._width if self._width is not None else other._width
        self._counts += other._counts

    def result(self) -> BoundaryStats:
        band, band_correct, interior, interior_correct = (int(c) for c in self._counts)
        return BoundaryStats(
            width=self._width,
            band_pixels=band,
            band_correct=band_correct,
            band_acc=band_correct / band if band else math.nan,
            interior_pixels=interior,
            interior_correct=interior_correct,
            interior_acc=interior_correct / interior if interior else math.nan,
        )
