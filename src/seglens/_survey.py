"""Reading every mask of a dataset once: its label problems and pixel counts (:class:`LabelSurvey`).

The engine of :func:`seglens.datasets.survey_labels` and :func:`~seglens.datasets.validate_labels`.
It is handed a dataset's pieces (items, label rule, folders), not the dataset, so that imports
run one way: datasets -> _survey -> _labels, _masks, evaltypes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._labels import _color_text, _LabelRule, _rgb_keys
from ._masks import DatasetError, _header_size, _Item, _mask_values, _MaskProblem, _size_text
from .evaltypes import LabelProblem, LabelSurvey

__all__ = ["DATASET_PROBLEM_KINDS"]

# Problems of the dataset as a whole (LabelProblem name "(dataset)"), found by survey_labels only:
# scoring a small validation subset where some classes never occur is normal, training on it is not.
DATASET_PROBLEM_KINDS: tuple[str, ...] = ("class_absent", "mostly_ignored")
_MOSTLY = 0.5  # "mostly_ignored": the ignore value covers more than this share of all mask pixels
_LISTED = 10  # values or colours named in an out_of_range detail


class _Tally:
    """Pixel counts of the targets, added mask by mask."""

    def __init__(self, num_classes: int, ignore: int) -> None:
        self.class_pixels = np.zeros(num_classes, dtype=np.int64)
        self.images_with_class = np.zeros(num_classes, dtype=np.int64)
        self.ignore, self.ignore_pixels, self.total, self.masks = ignore, 0, 0, 0

    def add(self, targets: np.ndarray, counts: np.ndarray) -> None:
        """One mask: the distinct target values in it and their pixel counts."""
        targets, counts = np.asarray(targets, dtype=np.int64), np.asarray(counts, dtype=np.int64)
        is_class = (targets >= 0) & (targets < len(self.class_pixels)) & (targets != self.ignore)
        np.add.at(self.class_pixels, targets[is_class], counts[is_class])
        self.images_with_class[np.unique(targets[is_class & (counts > 0)])] += 1
        self.ignore_pixels += int(counts[targets == self.ignore].sum())
        self.total += int(counts.sum())
        self.masks += 1

    def survey(self, problems: Sequence[LabelProblem]) -> LabelSurvey:
        return LabelSurvey(
            problems=tuple(problems),
            class_pixels=tuple(int(c) for c in self.class_pixels),
            ignore_pixels=self.ignore_pixels,
            images_with_class=tuple(int(c) for c in self.images_with_class),
            total_pixels=self.total,
            masks=self.masks,
        )


def _value_counts(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if values.dtype == np.uint8:
        counts = np.bincount(values.ravel(), minlength=256)
        present = np.flatnonzero(counts)
        return present, counts[present]
    return np.unique(values, return_counts=True)


def _listed(pairs: list[tuple[str, int]]) -> str:
    return ", ".join(f"{v} ({c} px)" for v, c in pairs[:_LISTED]) + (", ..." if len(pairs) > _LISTED else "")


def survey_masks(
    items: Sequence[_Item],
    num_classes: int,
    rule: _LabelRule,
    *,
    unmatched: Sequence[tuple[str, Path]],
    mask_dir: Path,
    categories: Sequence[str] | None,
    hint: str = "",
    colours_from: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> LabelSurvey:
    """Survey voc, folder and ade20k masks (see seglens.datasets.survey_labels). ``hint``: added
    to the rgb_mask advice; ``colours_from``: the classes file that gave ``rule.colors``."""
    tally = _Tally(num_classes, rule.ignore)
    slots: list[Any] = []
    multiclass = False  # some mask holds a class value that a binary mask would not
    for item in items:
        found, shows_classes = _check_item(item, num_classes, rule, tally, hint=hint, colours_from=colours_from)
        slots += found
        multiclass = multiclass or shows_classes
        if progress:
            progress(1)
    problems = []
    for slot in slots:
        if isinstance(slot, tuple):  # (binary_mask, out_of_range or None): see _check_item
            slot = slot[1] if multiclass else slot[0]
        if slot is not None:
            problems.append(slot)
    problems += [LabelProblem(n, str(p), "missing_mask", f"no mask: expected {mask_dir / n}.png") for n, p in unmatched]
    return tally.survey(problems + _dataset_problems(tally, categories, str(mask_dir), "masks"))


def _check_item(
    item: _Item, n: int, rule: _LabelRule, tally: _Tally, *, hint: str, colours_from: str | None
) -> tuple[list[Any], bool]:
    """Problems of one mask (a binary-looking one as a (binary_mask, out_of_range or None) slot,
    decided once every mask is read), and whether it holds a class value no binary mask holds.

    Binary masks: only where stored values are the targets (no mask_values, not ade20k). {0, 255}
    is reported when num_classes > 2, or num_classes == 2 and no mask holds class 1 (255 would be
    ignored: the foreground never learned); {0, 1} when num_classes > 2."""
    found: list[Any] = []
    mask = str(item.mask)
    try:
        values = _mask_values(item.mask, rgb=rule.colors is not None, hint=hint) if item.mask is not None else None
    except _MaskProblem as p:
        if p.kind == "missing_mask":
            found.append(LabelProblem(item.name, str(item.image), p.kind, f"no mask: expected {item.mask}"))
        else:
            found.append(LabelProblem(item.name, mask, p.kind, p.detail))
        return found, False
    rgb = values.ndim == 3
    present, counts = np.unique(_rgb_keys(values).ravel(), return_counts=True) if rgb else _value_counts(values)
    targets, unlisted = rule.classify(present, rgb=rgb)
    tally.add(targets, counts)
    detail = _out_of_range(present, counts, targets, unlisted, n, rule, rgb=rgb, colours_from=colours_from)
    out_of_range = None if detail is None else LabelProblem(item.name, mask, "out_of_range", detail)
    plain = not rgb and not rule.maps_values
    values_set = {int(v) for v in present} if plain else set()
    if plain and ((n > 2 and values_set in ({0, 255}, {0, 1})) or (n == 2 and values_set == {0, 255})):
        found.append((LabelProblem(item.name, mask, "binary_mask", _binary_text(max(values_set), n, rule.ignore)),
                      out_of_range))  # fmt: skip
    elif out_of_range is not None:
        found.append(out_of_range)
    try:
        size = _header_size(item.image, oriented=True)
    except DatasetError as e:
        found.append(LabelProblem(item.name, str(item.image), "unreadable", str(e)))
    else:
        if values.shape[:2] != (size[1], size[0]):
            found.append(LabelProblem(item.name, mask, "size_mismatch", _size_text(item.image, size, values.shape)))
    return found, any(v != rule.ignore and 0 < v < n and (n == 2 or v > 1) for v in values_set)


def _binary_text(top: int, n: int, ignore: int) -> str:
    text = (
        f"looks like a binary 0/{top} mask, not class indices: pixel values must be class indices "
        f"0..{n - 1} ({ignore} for ignored pixels)"
    )
    if top == 255:
        return (
            f"{text}, so 255 is {'ignored' if ignore == 255 else 'no class'} and the foreground is never "
            "learned or scored; if 0 is background and 255 foreground, pass --mask-values 0,255"
        )
    return (
        f"{text}; it is read as background (0) and class 1 of {n}: for background/foreground masks "
        "pass --mask-values 0,1 and use a 2-class model, otherwise the class count is wrong"
    )


def _out_of_range(
    present: np.ndarray,
    counts: np.ndarray,
    targets: np.ndarray,
    unlisted: np.ndarray,
    n: int,
    rule: _LabelRule,
    *,
    rgb: bool,
    colours_from: str | None,
) -> str | None:
    """The out_of_range detail of one mask, or None."""
    show = _color_text if rgb else str
    if rule.ade20k:  # stored as class + 1; 0 is unlabelled
        bad = [(show(v), int(c)) for v, c in zip(present, counts) if v != 0 and not 1 <= v <= n]
        if bad:
            return (
                f"{sum(c for _, c in bad)} pixels have annotation values outside 0..{n} "
                f"(ADE20K stores class + 1, 0 for unlabelled): {_listed(bad)}"
            )
        return None
    outside = ~unlisted & (targets != rule.ignore) & ((targets < 0) | (targets >= n))
    bad = [(show(v), int(c)) for v, c in zip(present[outside], counts[outside])]
    if not rgb and rule.values is None:
        if not bad:
            return None
        return (
            f"{sum(c for _, c in bad)} pixels have values outside the classes 0..{n - 1} "
            f"that are not the ignore index {rule.ignore}: {_listed(bad)}"
        )
    parts = []
    if unlisted.any():
        gone = [(show(v), int(c)) for v, c in zip(present[unlisted], counts[unlisted])]
        if rgb:
            what = f"colours that {colours_from or 'the classes file'} does not list"
        else:
            what = f"values that are not mask values ({','.join(map(str, rule.values))}) nor the ignore index"
        parts.append(f"{sum(c for _, c in gone)} pixels have {what} (read as ignored): {_listed(gone)}")
    if bad:
        parts.append(f"{sum(c for _, c in bad)} pixels map to classes outside 0..{n - 1}: {_listed(bad)}")
    return "; ".join(parts) or None


def _dataset_problems(tally: _Tally, categories: Sequence[str] | None, where: str, unit: str) -> list[LabelProblem]:
    """class_absent per class never seen, then mostly_ignored (nothing when no mask was read)."""
    if not tally.masks:
        return []
    problems = []
    for c, pixels in enumerate(tally.class_pixels):
        if pixels == 0:
            name = f' "{categories[c]}"' if categories and c < len(categories) else ""
            problems.append(LabelProblem("(dataset)", where, "class_absent",
                                         f"class {c}{name} never occurs in {tally.masks} {unit}: the model cannot "
                                         "learn it; check --classes / --mask-values"))  # fmt: skip
    if tally.total and tally.ignore_pixels > _MOSTLY * tally.total:
        share = 100.0 * tally.ignore_pixels / tally.total
        problems.append(LabelProblem("(dataset)", where, "mostly_ignored",
                                     f"the ignore value {tally.ignore} covers {share:.1f}% of the {tally.total} "
                                     "pixels of the masks, so most pixels are never learned or scored; if "
                                     f"{tally.ignore} is really a class, pass --ignore-index with the real void "
                                     "value, or map the stored values with --mask-values"))  # fmt: skip
    return problems


def survey_coco(
    items: Sequence[_Item],
    sizes: Sequence[tuple[int, int] | None],
    annotations: dict[int, list[tuple[int, Any, Any]]],
    ann_file: Path,
    num_classes: int,
    *,
    target: Callable[[int, tuple[int, int]], np.ndarray] | None,
    root: Path,
    categories: Sequence[str] | None,
    progress: Callable[[int], None] | None = None,
) -> LabelSurvey:
    """Survey coco-voc: image header vs the json's width/height, RLE sizes vs the image,
    unreadable images; with ``target(i, (w, h))`` also each image's decoded target (counts,
    undecodable segmentations as "unreadable" and the dataset-level problems)."""
    tally = _Tally(num_classes, 255)
    problems = []
    for i, item in enumerate(items):
        before = len(problems)
        try:
            size = _header_size(item.image, oriented=False)  # the stored pixels, as the reference reads them
        except DatasetError as e:
            problems.append(LabelProblem(item.name, str(item.image), "unreadable", str(e)))
            size = None
        json_size = sizes[i]
        if size is not None and json_size is not None and size != json_size:
            detail = f"image is {size[0]}x{size[1]} but {ann_file.name} says {json_size[0]}x{json_size[1]} (WxH)"
            problems.append(LabelProblem(item.name, str(item.image), "size_mismatch", detail))
        expected = size or json_size
        for _, segm, ann_id in annotations.get(i, []):
            rle_size = segm.get("size") if isinstance(segm, dict) else None
            if not (isinstance(rle_size, (list, tuple)) and len(rle_size) == 2):
                continue  # polygons take the image's size; malformed RLEs fail in dataset[i]
            if expected is not None and list(rle_size) != [expected[1], expected[0]]:
                detail = (
                    f"annotation {ann_id}: RLE size is {rle_size[1]}x{rle_size[0]} but the image is "
                    f"{expected[0]}x{expected[1]} (WxH)"
                )
                problems.append(LabelProblem(item.name, str(ann_file), "size_mismatch", detail))
        if target is not None and expected is not None and len(problems) == before:
            try:
                tally.add(*_value_counts(target(i, expected)))
            except DatasetError as e:
                problems.append(LabelProblem(item.name, str(ann_file), "unreadable", str(e)))
        if progress:
            progress(1)
    if target is not None:
        problems += _dataset_problems(tally, categories, str(root), "images")
    return tally.survey(problems)
