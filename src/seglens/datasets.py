"""Labelled segmentation datasets for ``seglens eval`` and ``seglens train``, and checks of their labels.

Four kinds, opened with :func:`open_dataset`:

- ``voc``: PASCAL VOC 2012 (``JPEGImages/``, ``SegmentationClass/`` palette PNGs,
  ``ImageSets/Segmentation/{split}.txt``); 255 marks ignored ("void") pixels.
- ``coco-voc``: COCO instances annotations converted to the 20 VOC classes exactly as
  torchvision's ``references/segmentation/coco_utils.py`` does (the protocol behind the mIoU
  numbers in torchvision's weights metadata); see :class:`_CocoVocDataset`.
- ``folder``: ``images/`` and ``masks/`` (PNG class indices), or any two folders given as
  ``images=`` and ``masks=``, matched by relative path and stem; optionally a classes file
  (names, and colours that map RGB masks to classes: :func:`read_classes`) and ``mask_values``
  (the stored value of each class, e.g. (0, 255) for binary masks).
- ``ade20k``: the ADE20K scene-parsing benchmark as ``ADEChallengeData2016`` unpacks
  (``images/{training,validation}/*.jpg``, ``annotations/{training,validation}/*.png``);
  annotation 0 ("other") becomes 255 (ignored) and 1..150 become classes 0..149, the
  ``reduce_zero_label`` convention of MMSegmentation and Hugging Face's 150-class models.

Reading is lazy: opening a dataset reads only list files (or the COCO json); each
``dataset[i]`` reads one image and its labels. :func:`validate_labels` and :func:`survey_labels`
read every mask but only the image headers, so they are far cheaper than running a model over
the dataset; the survey also counts each class's pixels and reports dataset-level problems (a
class that never occurs, a mostly ignored dataset) that would ruin training.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as coco_mask
from torchvision.models.segmentation import DeepLabV3_ResNet50_Weights

from ._labels import ClassList, _check_mask_values, _LabelRule, parse_mask_values, read_classes
from ._masks import (
    _COLOURS_HINT,
    _UNDO_ORIENTATION,
    DatasetError,
    _files_by_stem,
    _Item,
    _load,
    _mask_or_error,
    _orientation,
    _size_text,
)
from ._survey import DATASET_PROBLEM_KINDS, survey_coco, survey_masks
from .evaltypes import LabelProblem, LabelSurvey  # their home: a leaf that report.py reads without torch
from .io import IMAGE_EXTENSIONS
from .visualize import ADE20K_CATEGORIES

__all__ = [
    "COCO_VOC_CATEGORY_IDS",
    "DATASET_KINDS",
    "DATASET_PROBLEM_KINDS",
    "PROBLEM_KINDS",
    "ClassList",
    "DatasetError",
    "LabelProblem",
    "LabelSurvey",
    "Sample",
    "SegmentationDataset",
    "open_dataset",
    "parse_mask_values",
    "read_classes",
    "survey_labels",
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
    *DATASET_PROBLEM_KINDS,  # "class_absent", "mostly_ignored": survey_labels only
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


class SegmentationDataset:
    """Base of the dataset kinds: a sized, indexable sequence of :class:`Sample`.

    Attributes:
        kind: "voc", "coco-voc", "folder" or "ade20k".
        root: the dataset folder (for voc, the VOC2012 folder itself; for ade20k,
            ADEChallengeData2016; for a folder dataset given as ``images=`` and ``masks=``, the
            images folder).
        split: "val", "train", ... (None for folder datasets).
        categories: class names by index, or None when the dataset does not name them.
        ignore_index: the target value of unlabelled pixels.
        unmatched: (name, image path) of images that have no mask; not samples.
        mask_dir: the folder of the masks (None for coco-voc).
        classes_file: the classes file the categories come from, or None.
        mask_values: the stored mask value of each class (folder datasets), or None.
        palette: (256, 3) uint8 colours by class index when the classes file gives a colour for
            every class (other rows: distinct colours), else None.
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
        mask_dir: Path | None = None,
        classes: ClassList | None = None,
        rule: _LabelRule | None = None,
    ) -> None:
        self.kind, self.root, self.split = kind, root, split
        self.categories, self.ignore_index = categories, ignore_index
        self.unmatched, self.mask_dir = unmatched, mask_dir
        self.classes_file = None if classes is None else Path(classes.path)
        self.palette = None if classes is None else classes.palette()
        self._rule = rule or _LabelRule(ignore=ignore_index)
        self.mask_values = self._rule.values
        self._items = items

    @property
    def num_classes(self) -> int | None:
        """The number of classes the dataset defines (its categories, or its mask values), or None."""
        if self.categories is not None:
            return len(self.categories)
        return None if self.mask_values is None else len(self.mask_values)

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
        rgb = self._rule.colors is not None
        values = _mask_or_error(item.mask, item.name, rgb=rgb, hint=_COLOURS_HINT * (self.kind == "folder"))
        if values.shape[:2] != (image.height, image.width):
            raise DatasetError(f"{item.mask}: {_size_text(item.image, image.size, values.shape)}")
        return Sample(name=item.name, image=image, target=self._rule.target(values, item.mask), instances=None)


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
        target, anns, masks = self._target(i, image.size)
        instances = tuple((int(c), m.astype(bool)) for (c, _, _), m in zip(anns, masks))
        return Sample(name=item.name, image=image, target=target, instances=instances)

    def _target(self, i: int, size: tuple[int, int]) -> tuple[np.ndarray, list, np.ndarray]:
        """Sample i's target at the stored image size (w, h), its annotations and their masks."""
        item, (w, h) = self._items[i], size
        anns = self._annotations.get(i if i >= 0 else len(self) + i, [])
        masks = np.zeros((0, h, w), dtype=np.uint8)
        if anns:
            masks = np.stack([self._decode(segm, h, w, ann_id, item) for _, segm, ann_id in anns])
            cats = np.array([c for c, _, _ in anns], dtype=np.uint8)
            target = (masks * cats[:, None, None]).max(axis=0)
            target[masks.sum(axis=0) > 1] = 255  # the reference's "discard overlapping instances"
        else:
            target = np.zeros((h, w), dtype=np.uint8)
        return target, anns, masks

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
    which the published 150-class numbers are measured (``_LabelRule(ade20k=True)``).
    ``mask_path(i)`` is the raw annotation; ``mask_dir`` is ``annotations/<split folder>``.
    """


def open_dataset(
    kind: str,
    root: str | os.PathLike | None = None,
    *,
    split: str = "val",
    images: str | os.PathLike | None = None,
    masks: str | os.PathLike | None = None,
    classes_file: str | os.PathLike | None = None,
    ignore_index: int = 255,
    mask_values: Sequence[int] | str | None = None,
    limit: int | None = None,
) -> SegmentationDataset:
    """Open a labelled dataset (reads list files, the classes file or the COCO json only).

    Example: CamVid as SegNet packages it (label maps named as the photos, void = 11)::

        open_dataset("folder", images="camvid/train", masks="camvid/trainannot",
                     classes_file="camvid/classes.txt", ignore_index=11)

    Args:
        kind: "voc", "coco-voc", "folder" or "ade20k".
        root: voc: the VOC2012 folder, or a folder holding VOCdevkit/VOC2012 or VOC2012.
            ade20k: the ADEChallengeData2016 folder, or the folder holding it.
            coco-voc: the folder holding ``{split}2017/`` and
            ``annotations/instances_{split}2017.json``. folder: the folder holding ``images/``
            and ``masks/`` (``masks/a/b.png`` labels ``images/a/b.jpg``; sample name "a/b").
        split: voc and coco-voc split ("val", "train", ...); ade20k: "val" (= "validation") or
            "train" (= "training"); ignored for folder datasets.
        images, masks: folder only, instead of ``root``: the images folder and the masks folder,
            matched by relative path and stem as under a root (a mask may have the image's file
            name when both are .png).
        classes_file: folder only: class names, one per line, each optionally followed by its
            colour (``road 128,64,128`` or ``road #804080``; see :func:`read_classes`). With
            colours, RGB masks are read by colour (unlisted colours: ``ignore_index``) and the
            dataset has a ``palette``.
        ignore_index: the label of unlabelled pixels, 0..255 (voc and coco-voc use 255).
        mask_values: folder only: the stored mask value of each class in class order (or their
            text, "0,255"): value ``mask_values[k]`` becomes class k and any other value
            ``ignore_index``; e.g. (0, 255) for binary masks saved as 0/255.
        limit: keep only the first ``limit`` images (in the dataset's sorted order).

    Raises:
        DatasetError: unknown kind, missing folders or files, unreadable list or json, a bad
            classes file, options that do not fit the kind or each other.
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
    folder_only = [f"{k}=" for k, v in (("images", images), ("masks", masks), ("mask_values", mask_values)) if v]
    if kind != "folder" and folder_only:
        raise DatasetError(f"{' and '.join(folder_only)} apply only to folder datasets ({kind} takes root=)")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise DatasetError(f"limit must be a positive integer or None, got {limit!r}")
    if kind == "folder":
        return _open_folder(root, images, masks, classes_file, ignore_index, mask_values, limit)
    if root is None:
        raise DatasetError(f"{kind} needs root= (the dataset's folder)")
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such folder (give the {kind} dataset's root folder)")
    if kind == "voc":
        return _open_voc(root, split, limit)
    if kind == "coco-voc":
        return _open_coco_voc(root, split, limit)
    return _open_ade20k(root, split, limit)


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
    return SegmentationDataset(kind="voc", root=base, split=split, categories=_voc_categories(), ignore_index=255,
                               items=items[:limit], mask_dir=base / "SegmentationClass")  # fmt: skip


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
        rule=_LabelRule(ignore=255, ade20k=True),
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
    root: str | os.PathLike | None,
    images: str | os.PathLike | None,
    masks: str | os.PathLike | None,
    classes_file: str | os.PathLike | None,
    ignore_index: int,
    mask_values: Sequence[int] | str | None,
    limit: int | None,
) -> SegmentationDataset:
    if root is not None and (images is not None or masks is not None):
        raise DatasetError("a folder dataset is root= (holding images/ and masks/) or images= and masks=, not both")
    if root is None:
        if images is None or masks is None:
            raise DatasetError(
                "a folder dataset needs root= (a folder holding images/ and masks/) or images= and masks=" if images
                is None and masks is None else f"{'masks=' if masks is None else 'images='} is missing: a folder "
                "dataset is images= (the images folder) and masks= (the masks folder), or root= alone"
            )  # fmt: skip
        base = image_dir = Path(images)
        mask_dir = Path(masks)
        for folder, what in ((image_dir, "images"), (mask_dir, "masks")):
            if not folder.is_dir():
                raise DatasetError(f"{folder}: no such folder (give the folder of the {what})")
    else:
        base = Path(root)
        if not base.is_dir():
            raise DatasetError(f"{base}: no such folder (give the folder dataset's root folder)")
        image_dir, mask_dir = base / "images", base / "masks"
        layout = "images/NAME.jpg (any image type) and masks/NAME.png (class indices)"
        for folder in (image_dir, mask_dir):
            if not folder.is_dir():
                raise DatasetError(f"{folder}: missing folder (a folder dataset holds {layout})")
    classes = None if classes_file is None else read_classes(classes_file)
    values = None if mask_values is None else _check_mask_values(mask_values)
    if values is not None and classes is not None and len(values) != len(classes.names):
        raise DatasetError(f"{classes.path}: {len(classes.names)} classes, but mask_values gives "
                           f"{len(values)} values; give one stored value per class")  # fmt: skip
    if values is not None and ignore_index < len(values):
        raise DatasetError(f"ignore_index {ignore_index} is one of the {len(values)} classes mask_values defines; "
                           f"use an ignore index >= {len(values)} (default 255)")  # fmt: skip
    found = _files_by_stem(image_dir, IMAGE_EXTENSIONS)
    mask_files = _files_by_stem(mask_dir, frozenset({".png"}))
    if not found:
        raise DatasetError(f"{image_dir}: no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    chosen = sorted(found)[:limit]
    return SegmentationDataset(
        kind="folder",
        root=base,
        split=None,
        categories=None if classes is None else classes.names,
        ignore_index=ignore_index,
        items=[_Item(n, found[n], mask_files[n]) for n in chosen if n in mask_files],
        unmatched=tuple((n, found[n]) for n in chosen if n not in mask_files),
        mask_dir=mask_dir,
        classes=classes,
        rule=_LabelRule(ignore=ignore_index, values=values, colors=None if classes is None else classes.colors),
    )


def survey_labels(
    dataset: SegmentationDataset, num_classes: int, *, progress: Callable[[int], None] | None = None
) -> LabelSurvey:
    """Read every mask of ``dataset`` once: its problems and each class's pixels, for training.

    Problems: everything :func:`validate_labels` reports (same order and kinds), then those of
    the dataset as a whole (``DATASET_PROBLEM_KINDS``; name "(dataset)", path the masks folder or
    the dataset root): "class_absent" for each class 0..num_classes-1 that no mask holds (the
    model cannot learn it), "mostly_ignored" when the ignore index covers more than half of all
    mask pixels. coco-voc: each image's annotations are decoded at the image's stored size
    (undecodable ones: "unreadable").

    Args:
        dataset: from :func:`open_dataset`.
        num_classes: the model's number of classes.
        progress: called with 1 after each sample.

    Returns:
        A :class:`LabelSurvey`: problems, pixels per class and ignored, masks per class.
    """
    return _survey(dataset, num_classes, progress, counts=True)


def validate_labels(
    dataset: SegmentationDataset, num_classes: int, *, progress: Callable[[int], None] | None = None
) -> list[LabelProblem]:
    """Check every label file of ``dataset`` against a model's number of classes.

    Reads each mask fully but only each image's header. Kinds found (see ``PROBLEM_KINDS``):
    "out_of_range" (values not in ``0..num_classes-1`` and not ``ignore_index``; with
    ``mask_values`` or classes-file colours, stored values or colours they do not list),
    "binary_mask" (every mask holds only {0, 255} or {0, 1} and ``num_classes > 2``, or {0, 255}
    and ``num_classes == 2`` with no mask holding 1: reported instead of out_of_range; when any
    mask holds another class value, such masks are taken as genuine background/void or
    background/class-1 labels; never with ``mask_values``), "rgb_mask" (not with a classes file
    that gives colours), "size_mismatch" (image WxH, after EXIF rotation, vs mask WxH),
    "missing_mask" (folder images without a mask come after the samples' problems),
    "unreadable". coco-voc: image header vs the json's width/height and RLE sizes vs the image;
    unreadable images. The dataset-level kinds are :func:`survey_labels`' only.

    Args:
        dataset: from :func:`open_dataset`.
        num_classes: the model's number of classes.
        progress: called with 1 after each sample.

    Returns:
        Problems in sample order; empty when the labels look right.
    """
    survey = _survey(dataset, num_classes, progress, counts=False)
    return [p for p in survey.problems if p.kind not in DATASET_PROBLEM_KINDS]


def _survey(
    dataset: SegmentationDataset, num_classes: int, progress: Callable[[int], None] | None, *, counts: bool
) -> LabelSurvey:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or not 1 <= num_classes <= 256:
        raise ValueError(f"num_classes must be an integer 1..256, got {num_classes!r}")
    if isinstance(dataset, _CocoVocDataset):
        return survey_coco(dataset._items, dataset._sizes, dataset._annotations, dataset.ann_file, num_classes,
                           target=(lambda i, size: dataset._target(i, size)[0]) if counts else None,
                           root=dataset.root, categories=dataset.categories, progress=progress)  # fmt: skip
    return survey_masks(
        dataset._items,
        num_classes,
        dataset._rule,
        unmatched=dataset.unmatched,
        mask_dir=dataset.mask_dir or dataset.root,
        categories=dataset.categories,
        hint=_COLOURS_HINT * (dataset.kind == "folder"),
        colours_from=None if dataset.classes_file is None else str(dataset.classes_file),
        progress=progress,
    )
