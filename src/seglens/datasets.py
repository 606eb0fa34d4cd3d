"""Labelled segmentation datasets for ``seglens eval``, and checks of their label files.

Four kinds, opened with :func:`open_dataset`:

- ``voc``: PASCAL VOC 2012 (``JPEGImages/``, ``SegmentationClass/`` palette PNGs,
  ``ImageSets/Segmentation/{split}.txt``); 255 marks ignored ("void") pixels.
- ``coco-voc``: COCO instances annotations converted to the 20 VOC classes exactly as
  torchvision's ``references/segmentation/coco_utils.py`` does (the protocol behind the mIoU
  numbers in torchvision's weights metadata); see :class:`_CocoVocDataset`.
- ``folder``: ``images/`` and ``masks/`` (PNG class indices) matched by relative path and stem.
- ``ade20k``: the ADE20K scene-parsing benchmark as ``ADEChallengeData2016`` unpacks
  (``images/{training,validation}/*.jpg``, ``annotations/{training,validation}/*.png``);
  annotation 0 ("other") becomes 255 (ignored) and 1..150 become classes 0..149, the
  ``reduce_zero_label`` convention of MMSegmentation and Hugging Face's 150-class models.

Reading is lazy: opening a dataset reads only list files (or the COCO json); each
``dataset[i]`` reads one image and its labels. :func:`validate_labels` reads every mask but
only the image headers, so it is far cheaper than running a model over the dataset.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as coco_mask
from torchvision.models.segmentation import DeepLabV3_ResNet50_Weights

from ._masks import (
    _UNDO_ORIENTATION,
    DatasetError,
    _header_size,
    _load,
    _mask_or_error,
    _mask_values,
    _MaskProblem,
    _orientation,
    _size_text,
)
from .evaltypes import LabelProblem  # its home: a leaf that report.py reads without torch
from .io import IMAGE_EXTENSIONS
from .visualize import ADE20K_CATEGORIES

__all__ = [
    "COCO_VOC_CATEGORY_IDS",
    "DATASET_KINDS",
    "PROBLEM_KINDS",
    "DatasetError",
    "LabelProblem",
    "Sample",
    "SegmentationDataset",
    "open_dataset",
    "validate_labels",
]

DATASET_KINDS: tuple[str, ...] = ("voc", "coco-voc", "folder", "ade20k")
PROBLEM_KINDS: tuple[str, ...] = (
    "out_of_range",
    "binary_mask",
    "rgb_mask",
    "size_mismatch",
    "missing_mask",
    "unreadable",
)
# CAT_LIST of get_coco in torchvision's references/segmentation/coco_utils.py: the COCO category
# id at position i becomes VOC class i (1 person -> 15, 18 dog -> 12, ...); 0 is no COCO id.
COCO_VOC_CATEGORY_IDS: tuple[int, ...] = (0, 5, 2, 16, 9, 44, 6, 3, 17, 62, 21, 67, 18, 19, 4, 1, 64, 20, 63, 7, 72)
# ADE20K's split folders; "val" and "train" are accepted as the other kinds name them.
_ADE20K_SPLITS = {"val": "validation", "validation": "validation", "train": "training", "training": "training"}


@dataclass(frozen=True, eq=False)  # eq=False: arrays have no single truth value
class Sample:
    """One labelled image.

    Attributes:
        name: stable id used in reports ("2007_000033", "000000000139", "sub/photo").
        image: mode-"RGB" image.
        target: (H, W) uint8 class indices, ``ignore_index`` where unlabelled; the image's size.
        instances: ``(class, (H, W) bool mask)`` per object for datasets with instances
            (coco-voc, in annotation-file order, crowd regions included), else None.
    """

    name: str
    image: Image.Image
    target: np.ndarray
    instances: tuple[tuple[int, np.ndarray], ...] | None


@dataclass(frozen=True)
class _Item:
    name: str
    image: Path
    mask: Path | None


class SegmentationDataset:
    """Base of the dataset kinds: a sized, indexable sequence of :class:`Sample`.

    Attributes:
        kind: "voc", "coco-voc", "folder" or "ade20k".
        root: the dataset folder (for voc, the VOC2012 folder itself; for ade20k, ADEChallengeData2016).
        split: "val", "train", ... (None for folder datasets).
        categories: class names by index, or None when the dataset does not name them.
        ignore_index: the target value of unlabelled pixels.
        unmatched: (name, image path) of images that have no mask; not samples.
    """

    def __init__(
        self,
        *,
        kind: str,
        root: Path,
        split: str | None,
        categories: tuple[str, ...] | None,
        ignore_index: int,
        items: list[_Item],
        unmatched: tuple[tuple[str, Path], ...] = (),
    ) -> None:
        self.kind, self.root, self.split = kind, root, split
        self.categories, self.ignore_index = categories, ignore_index
        self.unmatched = unmatched
        self._items = items

    def __len__(self) -> int:
        return len(self._items)

    def names(self) -> list[str]:
        """Sample names, in index order."""
        return [item.name for item in self._items]

    def image_path(self, i: int) -> Path:
        """The image file of sample ``i``."""
        return self._items[i].image

    def mask_path(self, i: int) -> Path | None:
        """The mask file of sample ``i`` (None for coco-voc, whose labels live in the json)."""
        return self._items[i].mask

    def __getitem__(self, i: int) -> Sample:
        """Read sample ``i``; raises DatasetError (one line, naming the file) if it cannot be read."""
        item = self._items[i]
        image = _load(item.image)
        values = _mask_or_error(item.mask, item.name)
        if values.min(initial=0) < 0 or values.max(initial=0) > 255:
            raise DatasetError(
                f"{item.mask}: mask values {values.min()}..{values.max()} do not fit class "
                "indices 0..255; save the mask as an 8-bit palette (P) or grayscale (L) PNG"
            )
        if values.shape != (image.height, image.width):
            raise DatasetError(f"{item.mask}: {_size_text(item.image, image.size, values.shape)}")
        return Sample(name=item.name, image=image, target=values.astype(np.uint8), instances=None)


class _CocoVocDataset(SegmentationDataset):
    """COCO instances converted to VOC classes as torchvision's reference does.

    ``references/segmentation/coco_utils.py``: ``CocoDetection`` lists images by sorted id and
    gives every annotation of an image, crowd ones included (``getAnnIds(id)``, iscrowd=None);
    ``FilterAndRemapCocoCategories`` keeps annotations whose category is in CAT_LIST and
    renumbers them by position; ``convert_coco_poly_to_mask`` decodes each segmentation with
    ``frPyObjects(segm, h, w)`` + ``decode`` (h, w from the image) and ORs a polygon's parts;
    ``ConvertCocoPolysToMask`` takes ``(masks * cats[:, None, None]).max(0)`` and sets pixels
    inside two or more instances to 255; an image without annotations is all 0. The val split
    keeps images without annotations (only train drops them). Images keep their stored
    orientation (CocoDetection ignores EXIF; COCO's widths, heights and polygons are for the
    stored pixels), so an EXIF rotation applied by :func:`load_image` is undone.
    """

    def __init__(
        self,
        *,
        ann_file: Path,
        annotations: dict[int, list[tuple[int, Any, Any]]],
        sizes: list[tuple[int, int] | None],
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.ann_file = ann_file
        self._annotations = annotations  # image index -> [(VOC class, segmentation, annotation id)]
        self._sizes = sizes  # (width, height) from the json

    def mask_path(self, i: int) -> Path | None:
        self._items[i]  # IndexError for a bad index, as for the other kinds
        return None

    def __getitem__(self, i: int) -> Sample:
        item = self._items[i]
        image = _load(item.image)
        with Image.open(item.image) as raw:
            method = _UNDO_ORIENTATION.get(_orientation(raw))
        if method is not None:
            image = image.transpose(method)
        w, h = image.size
        anns = self._annotations.get(i if i >= 0 else len(self) + i, [])
        masks = np.zeros((0, h, w), dtype=np.uint8)
        if anns:
            masks = np.stack([self._decode(segm, h, w, ann_id, item) for _, segm, ann_id in anns])
            cats = np.array([c for c, _, _ in anns], dtype=np.uint8)
            target = (masks * cats[:, None, None]).max(axis=0)
            target[masks.sum(axis=0) > 1] = 255  # the reference's "discard overlapping instances"
        else:
            target = np.zeros((h, w), dtype=np.uint8)
        instances = tuple((int(c), m.astype(bool)) for (c, _, _), m in zip(anns, masks))
        return Sample(name=item.name, image=image, target=target, instances=instances)

    def _decode(self, segm: Any, h: int, w: int, ann_id: Any, item: _Item) -> np.ndarray:
        where = f"{self.ann_file}: annotation {ann_id} of {item.image.name}"
        try:
            if isinstance(segm, dict) and isinstance(segm.get("counts"), (str, bytes)):
                # Compressed RLE: the reference's frPyObjects raises ValueError on it (COCO's own
                # files never contain one); decode it as pycocotools' COCO.annToRLE does.
                mask = coco_mask.decode({"size": segm["size"], "counts": segm["counts"]})
            else:  # polygons (list of lists) or uncompressed RLE (counts list; size from the RLE)
                if isinstance(segm, dict) and sum(segm["counts"]) != segm["size"][0] * segm["size"][1]:
                    # pycocotools would decode the missing tail from uninitialised memory
                    raise ValueError(f"RLE counts sum to {sum(segm['counts'])}, not height*width of {segm['size']}")
                mask = coco_mask.decode(coco_mask.frPyObjects(segm, h, w))
        except Exception as e:  # malformed segmentation: pycocotools raises many types
            raise DatasetError(f"{where}: cannot decode its segmentation ({type(e).__name__}: {e})") from None
        mask = mask.reshape(*mask.shape[:2], -1).any(axis=2)  # a polygon's parts OR-ed, as the reference
        if mask.shape != (h, w):
            raise DatasetError(f"{where}: segmentation is {mask.shape[1]}x{mask.shape[0]} but the image is {w}x{h}")
        return mask.astype(np.uint8)


class _Ade20kDataset(SegmentationDataset):
    """ADE20K scene parsing: each annotation PNG holds class + 1, and 0 for "other".

    ``dataset[i].target`` is 255 (ignored) where the annotation is 0 and ``value - 1`` elsewhere,
    so classes 1..150 become 0..149 in ``ADE20K_CATEGORIES`` order: the ``reduce_zero_label``
    rule of MMSegmentation's ADE20KDataset and of Hugging Face's ADE20K image processors, under
    which the published 150-class numbers are measured. ``mask_path(i)`` is the raw annotation.
    """

    def __init__(self, *, mask_dir: Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mask_dir = mask_dir  # annotations/<split folder>

    def __getitem__(self, i: int) -> Sample:
        sample = super().__getitem__(i)  # raw values, range- and size-checked
        return Sample(name=sample.name, image=sample.image, target=_ade20k_labels(sample.target), instances=None)


def _ade20k_labels(values: np.ndarray) -> np.ndarray:
    """ADE20K annotation values (0..255) -> class indices: 0 ("other") -> 255, v -> v - 1."""
    values = np.asarray(values).astype(np.int64)
    return np.where(values == 0, 255, values - 1).astype(np.uint8)


def open_dataset(
    kind: str,
    root: str | os.PathLike,
    *,
    split: str = "val",
    classes_file: str | os.PathLike | None = None,
    ignore_index: int = 255,
    limit: int | None = None,
) -> SegmentationDataset:
    """Open a labelled dataset (reads list files or the COCO json only).

    Args:
        kind: "voc", "coco-voc", "folder" or "ade20k".
        root: voc: the VOC2012 folder, or a folder holding VOCdevkit/VOC2012 or VOC2012.
            ade20k: the ADEChallengeData2016 folder, or the folder holding it.
            coco-voc: the folder holding ``{split}2017/`` and
            ``annotations/instances_{split}2017.json``. folder: the folder holding ``images/``
            and ``masks/`` (``masks/a/b.png`` labels ``images/a/b.jpg``; sample name "a/b").
        split: voc and coco-voc split ("val", "train", ...); ade20k: "val" (= "validation") or
            "train" (= "training"); ignored for folder datasets.
        classes_file: folder only: class names, one per line (blank lines ignored).
        ignore_index: the label of unlabelled pixels, 0..255 (voc and coco-voc use 255).
        limit: keep only the first ``limit`` images (in the dataset's sorted order).

    Raises:
        DatasetError: unknown kind, missing folders or files, unreadable list or json.
    """
    if kind not in DATASET_KINDS:
        raise DatasetError(f"unknown dataset kind {kind!r}: choose one of {', '.join(DATASET_KINDS)}")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int) or not 0 <= ignore_index <= 255:
        raise DatasetError(f"ignore_index must be an integer 0..255, got {ignore_index!r}")
    if kind != "folder" and ignore_index != 255:
        raise DatasetError(f"{kind} labels mark ignored pixels with 255; ignore_index must be 255, got {ignore_index}")
    if kind != "folder" and classes_file is not None:
        named = "the 150 ADE20K classes" if kind == "ade20k" else "the 21 VOC classes"
        raise DatasetError(f"a classes file applies only to folder datasets ({kind} has {named})")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise DatasetError(f"limit must be a positive integer or None, got {limit!r}")
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such folder (give the {kind} dataset's root folder)")
    if kind == "voc":
        return _open_voc(root, split, limit)
    if kind == "coco-voc":
        return _open_coco_voc(root, split, limit)
    if kind == "ade20k":
        return _open_ade20k(root, split, limit)
    return _open_folder(root, classes_file, ignore_index, limit)


def _voc_categories() -> tuple[str, ...]:
    return tuple(DeepLabV3_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1.meta["categories"])


def _open_voc(root: Path, split: str, limit: int | None) -> SegmentationDataset:
    layout = "JPEGImages/NAME.jpg, SegmentationClass/NAME.png and ImageSets/Segmentation/SPLIT.txt"
    bases = [root, root / "VOCdevkit" / "VOC2012", root / "VOC2012"]
    base = next((b for b in bases if (b / "JPEGImages").is_dir() or (b / "ImageSets").is_dir()), None)
    if base is None:
        raise DatasetError(
            f"{root}: not a PASCAL VOC 2012 folder: expected {layout} in it, in VOCdevkit/VOC2012/ or in VOC2012/"
        )
    for folder in (base / "JPEGImages", base / "SegmentationClass"):
        if not folder.is_dir():
            raise DatasetError(f"{folder}: missing folder (a VOC2012 folder holds {layout})")
    lists = base / "ImageSets" / "Segmentation"
    list_file = lists / f"{split}.txt"
    if not list_file.is_file():
        found = sorted(p.stem for p in lists.glob("*.txt")) if lists.is_dir() else []
        also = f" (splits found: {', '.join(found)})" if found else ""
        raise DatasetError(f"{list_file}: missing split list{also}; a VOC2012 folder holds {layout}")
    try:
        names = [line.strip() for line in list_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{list_file}: cannot read the split list ({e})") from None
    if not names:
        raise DatasetError(f"{list_file}: the split list is empty (expected one image name per line)")
    items = [_Item(n, base / "JPEGImages" / f"{n}.jpg", base / "SegmentationClass" / f"{n}.png") for n in names]
    return SegmentationDataset(
        kind="voc", root=base, split=split, categories=_voc_categories(), ignore_index=255, items=items[:limit]
    )


def _open_ade20k(root: Path, split: str, limit: int | None) -> SegmentationDataset:
    layout = "images/SPLIT/NAME.jpg and annotations/SPLIT/NAME.png (SPLIT: validation or training)"
    base = root if (root / "images").is_dir() or (root / "annotations").is_dir() else root / "ADEChallengeData2016"
    if not base.is_dir():
        raise DatasetError(f"{root}: not an ADE20K folder: expected {layout} in it or in ADEChallengeData2016/")
    folder = _ADE20K_SPLITS.get(split)
    if folder is None:
        raise DatasetError(f"ade20k has no split {split!r}: use val (the validation folder) or train (training)")
    image_dir, mask_dir = base / "images" / folder, base / "annotations" / folder
    for path in (image_dir, mask_dir):
        if not path.is_dir():
            raise DatasetError(f"{path}: missing folder (an ADEChallengeData2016 folder holds {layout})")
    images = _files_by_stem(image_dir, IMAGE_EXTENSIONS)
    masks = _files_by_stem(mask_dir, frozenset({".png"}))
    if not images:
        raise DatasetError(f"{image_dir}: no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    chosen = sorted(images)[:limit]
    items = [_Item(n, images[n], masks[n]) for n in chosen if n in masks]
    unmatched = tuple((n, images[n]) for n in chosen if n not in masks)
    # The 150 benchmark names (not None): the CLI then checks the model's class count against
    # them, and a Hugging Face ADE20K checkpoint reports the same names from its id2label.
    return _Ade20kDataset(
        kind="ade20k",
        root=base,
        split=split,
        categories=ADE20K_CATEGORIES,
        ignore_index=255,
        items=items,
        unmatched=unmatched,
        mask_dir=mask_dir,
    )


def _open_coco_voc(root: Path, split: str, limit: int | None) -> SegmentationDataset:
    folder = root / f"{split}2017"
    ann_file = root / "annotations" / f"instances_{split}2017.json"
    layout = f"{split}2017/ (images) and annotations/instances_{split}2017.json, as COCO 2017 unpacks"
    for path, what in ((folder, "image folder"), (ann_file, "annotation file")):
        if not path.exists():
            raise DatasetError(f"{path}: missing {what} (the COCO root holds {layout})")
    try:
        with open(ann_file, "rb") as f:
            data = json.load(f)
        images = {img["id"]: img for img in data["images"]}  # as pycocotools' COCO.createIndex
        ids = sorted(images)  # as CocoDetection.ids
        index = {image_id: i for i, image_id in enumerate(ids[:limit])}
        voc_class = {cat: i for i, cat in enumerate(COCO_VOC_CATEGORY_IDS)}  # FilterAndRemapCocoCategories
        annotations: dict[int, list[tuple[int, Any, Any]]] = {}
        for ann in data["annotations"]:
            i, c = index.get(ann["image_id"]), voc_class.get(ann["category_id"])
            if i is not None and c is not None:
                annotations.setdefault(i, []).append((c, ann["segmentation"], ann.get("id")))
        items = [_Item(Path(images[k]["file_name"]).stem, folder / images[k]["file_name"], None) for k in index]
        sizes = [_json_size(images[k]) for k in index]
    except (OSError, ValueError) as e:
        raise DatasetError(f"{ann_file}: cannot read the annotations ({e})") from None
    except (KeyError, TypeError) as e:
        raise DatasetError(f"{ann_file}: not a COCO instances file (missing or malformed {e})") from None
    if not items:
        raise DatasetError(f"{ann_file}: lists no images")
    return _CocoVocDataset(
        kind="coco-voc",
        root=root,
        split=split,
        categories=_voc_categories(),
        ignore_index=255,
        items=items,
        ann_file=ann_file,
        annotations=annotations,
        sizes=sizes,
    )


def _json_size(image: dict[str, Any]) -> tuple[int, int] | None:
    width, height = image.get("width"), image.get("height")
    return (width, height) if isinstance(width, int) and isinstance(height, int) else None


def _open_folder(
    root: Path, classes_file: str | os.PathLike | None, ignore_index: int, limit: int | None
) -> SegmentationDataset:
    layout = "images/NAME.jpg (any image type) and masks/NAME.png (class indices)"
    for folder in (root / "images", root / "masks"):
        if not folder.is_dir():
            raise DatasetError(f"{folder}: missing folder (a folder dataset holds {layout})")
    images = _files_by_stem(root / "images", IMAGE_EXTENSIONS)
    masks = _files_by_stem(root / "masks", frozenset({".png"}))
    if not images:
        raise DatasetError(f"{root / 'images'}: no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    chosen = sorted(images)[:limit]
    items = [_Item(n, images[n], masks[n]) for n in chosen if n in masks]
    unmatched = tuple((n, images[n]) for n in chosen if n not in masks)
    categories = None
    if classes_file is not None:
        try:
            text = Path(classes_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise DatasetError(f"{os.fsdecode(classes_file)}: cannot read the classes file ({e})") from None
        categories = tuple(line.strip() for line in text.splitlines() if line.strip())
        if not categories:
            raise DatasetError(f"{os.fsdecode(classes_file)}: no class names (expected one per line)")
    return SegmentationDataset(
        kind="folder",
        root=root,
        split=None,
        categories=categories,
        ignore_index=ignore_index,
        items=items,
        unmatched=unmatched,
    )


def _files_by_stem(folder: Path, suffixes: frozenset[str]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.suffix.lower() in suffixes and path.is_file() and not any(p.startswith(".") for p in rel.parts):
            stem = rel.with_suffix("").as_posix()
            if stem in found:
                raise DatasetError(
                    f"{path}: same name as {found[stem]}; files are matched by name without "
                    "extension, so rename or remove one"
                )
            found[stem] = path
    return found


def validate_labels(
    dataset: SegmentationDataset, num_classes: int, *, progress: Callable[[int], None] | None = None
) -> list[LabelProblem]:
    """Check every label file of ``dataset`` against a model's number of classes.

    Reads each mask fully but only each image's header. Kinds found (see ``PROBLEM_KINDS``):
    "out_of_range" (values not in ``0..num_classes-1`` and not ``ignore_index``), "binary_mask"
    (every mask holds only {0, 255} or {0, 1} and ``num_classes > 2``: reported instead of
    out_of_range; when any mask holds another class value, such masks are taken as genuine
    background/void or background/class-1 labels), "rgb_mask", "size_mismatch" (image WxH,
    after EXIF rotation, vs mask WxH), "missing_mask" (folder images without a mask come after
    the samples' problems), "unreadable". coco-voc: image header vs the json's width/height and
    RLE sizes vs the image; unreadable images.

    Args:
        dataset: from :func:`open_dataset`.
        num_classes: the model's number of classes.
        progress: called with 1 after each sample.

    Returns:
        Problems in sample order; empty when the labels look right.
    """
    if isinstance(dataset, _CocoVocDataset):
        return _validate_coco(dataset, progress)
    slots: list[LabelProblem | tuple[LabelProblem, LabelProblem | None]] = []
    multiclass = False  # some mask holds a class other than 0 and 1
    ade = isinstance(dataset, _Ade20kDataset)
    for item in dataset._items:
        found, shows_classes = _check_item(item, num_classes, dataset.ignore_index, ade20k=ade)
        slots += found
        multiclass = multiclass or shows_classes
        if progress:
            progress(1)
    problems = []
    for slot in slots:
        if isinstance(slot, tuple):  # (binary_mask, out_of_range or None): see the docstring
            slot = slot[1] if multiclass else slot[0]
        if slot is not None:
            problems.append(slot)
    mask_dir = dataset.mask_dir if ade else dataset.root / "masks"
    return problems + [
        LabelProblem(n, str(p), "missing_mask", f"no mask: expected {mask_dir / n}.png") for n, p in dataset.unmatched
    ]


def _value_counts(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if values.dtype == np.uint8:
        counts = np.bincount(values.ravel(), minlength=256)
        present = np.flatnonzero(counts)
        return present, counts[present]
    return np.unique(values, return_counts=True)


def _check_item(item: _Item, num_classes: int, ignore: int, *, ade20k: bool = False) -> tuple[list[Any], bool]:
    """Problems of one voc/folder/ade20k item, and whether its mask holds a class other than 0 and 1.

    ade20k: stored values 0 (unlabelled) and 1..num_classes (class + 1) are valid, and masks are
    never reported as binary (an annotation of "other" and "wall" only is legitimate)."""
    found: list[Any] = []
    mask = str(item.mask)
    try:
        values = _mask_values(item.mask) if item.mask is not None else None
    except _MaskProblem as p:
        if p.kind == "missing_mask":
            found.append(LabelProblem(item.name, str(item.image), p.kind, f"no mask: expected {item.mask}"))
        else:
            found.append(LabelProblem(item.name, mask, p.kind, p.detail))
        return found, False
    present, counts = _value_counts(values)
    if ade20k:  # stored as class + 1; 0 is unlabelled
        bad = [(int(v), int(c)) for v, c in zip(present, counts) if v != 0 and not 1 <= v <= num_classes]
    else:
        bad = [(int(v), int(c)) for v, c in zip(present, counts) if not 0 <= v < num_classes and v != ignore]
    out_of_range = None
    if bad:
        listed = ", ".join(f"{v} ({c} px)" for v, c in bad[:10]) + (", ..." if len(bad) > 10 else "")
        if ade20k:
            detail = (
                f"{sum(c for _, c in bad)} pixels have annotation values outside 0..{num_classes} "
                f"(ADE20K stores class + 1, 0 for unlabelled): {listed}"
            )
        else:
            detail = (
                f"{sum(c for _, c in bad)} pixels have values outside the classes 0..{num_classes - 1} "
                f"that are not the ignore index {ignore}: {listed}"
            )
        out_of_range = LabelProblem(item.name, mask, "out_of_range", detail)
    values_set = {int(v) for v in present}
    if num_classes > 2 and not ade20k and values_set in ({0, 255}, {0, 1}):
        detail = (
            f"looks like a binary 0/{max(values_set)} mask, not class indices: pixel values must be class "
            f"indices 0..{num_classes - 1} ({ignore} for ignored pixels)"
        )
        found.append((LabelProblem(item.name, mask, "binary_mask", detail), out_of_range))
    elif out_of_range is not None:
        found.append(out_of_range)
    try:
        size = _header_size(item.image, oriented=True)
    except DatasetError as e:
        found.append(LabelProblem(item.name, str(item.image), "unreadable", str(e)))
    else:
        if values.shape != (size[1], size[0]):
            found.append(LabelProblem(item.name, mask, "size_mismatch", _size_text(item.image, size, values.shape)))
    return found, any(1 < v < num_classes and v != ignore for v in values_set)


def _validate_coco(dataset: _CocoVocDataset, progress: Callable[[int], None] | None) -> list[LabelProblem]:
    problems = []
    for i, item in enumerate(dataset._items):
        try:
            size = _header_size(item.image, oriented=False)  # the stored pixels, as the reference reads them
        except DatasetError as e:
            problems.append(LabelProblem(item.name, str(item.image), "unreadable", str(e)))
            size = None
        json_size = dataset._sizes[i]
        if size is not None and json_size is not None and size != json_size:
            detail = (
                f"image is {size[0]}x{size[1]} but {dataset.ann_file.name} says {json_size[0]}x{json_size[1]} (WxH)"
            )
            problems.append(LabelProblem(item.name, str(item.image), "size_mismatch", detail))
        expected = size or json_size
        for _, segm, ann_id in dataset._annotations.get(i, []):
            rle_size = segm.get("size") if isinstance(segm, dict) else None
            if not (isinstance(rle_size, (list, tuple)) and len(rle_size) == 2):
                continue  # polygons take the image's size; malformed RLEs fail in dataset[i]
            if expected is not None and list(rle_size) != [expected[1], expected[0]]:
                detail = (
                    f"annotation {ann_id}: RLE size is {rle_size[1]}x{rle_size[0]} but the image is "
                    f"{expected[0]}x{expected[1]} (WxH)"
                )
                problems.append(LabelProblem(item.name, str(dataset.ann_file), "size_mismatch", detail))
        if progress:
            progress(1)
    return problems
