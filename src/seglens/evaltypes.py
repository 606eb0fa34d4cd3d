"""The types of an evaluation: how to score (:class:`EvalConfig`, :class:`TTA`) and what came out
(:class:`EvalResult` and its parts), as frozen dataclasses.

A leaf: numpy only (no torch, no other seglens module), so :mod:`seglens.report`, the command
line and tools that read ``metrics.json`` import it cheaply. Their public home is
:mod:`seglens.evaluation` (and ``seglens.EvalResult``), which re-exports them.

Scores are percentages rounded to 4 decimals, None where undefined (a class absent from ground
truth and predictions, an empty size bucket), exactly as ``metrics.json`` holds them:
``EvalResult.from_dict(r.to_dict())`` gives ``r`` back (apart from the worst images' pixels,
which ``metrics.json`` does not hold), and ``from_dict(metrics).to_dict() == metrics``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "PROTOCOLS",
    "TTA",
    "BoundaryAnalysis",
    "ClassScore",
    "ConfusionPair",
    "DatasetInfo",
    "EvalConfig",
    "EvalEvent",
    "EvalResult",
    "EvalSettings",
    "ImageScore",
    "LabelProblem",
    "LabelSurvey",
    "Published",
    "ScorePair",
    "SizeAnalysis",
    "SizeBucket",
    "SkippedImage",
    "TTAComparison",
    "WorstImage",
]

PROTOCOLS = ("torchvision", "native")


@dataclass(frozen=True)
class TTA:
    """Test-time augmentation: logits averaged over scales and, optionally, horizontal flips."""

    scales: tuple[float, ...] = (1.0,)
    flip: bool = False

    @classmethod
    def parse(cls, text: str) -> TTA:
        """``"flip"``, ``"scales=0.75,1.0,1.25"`` or ``"scales=0.75,1.0,1.25,flip"``.

        Raises:
            ValueError: ``"'rotate': use 'flip' or ..."`` (the text, then what is wrong).
        """
        text = text.strip()
        if text == "flip":
            return cls(flip=True)
        if not text.startswith("scales="):
            raise ValueError(f"{text!r}: use 'flip' or 'scales=0.75,1.0,1.25[,flip]'")
        parts = [p.strip() for p in text.removeprefix("scales=").split(",") if p.strip()]
        flip = "flip" in parts
        try:
            scales = tuple(float(p) for p in parts if p != "flip")
        except ValueError as e:
            raise ValueError(f"{text!r}: scales must be numbers, e.g. scales=0.75,1.0,1.25") from e
        if not scales or any(not (0.1 <= s <= 4.0) for s in scales):
            raise ValueError(f"{text!r}: give one or more scales between 0.1 and 4")
        return cls(scales=scales, flip=flip)

    def __str__(self) -> str:
        if self.scales == (1.0,):
            return "flip" if self.flip else "none"
        return "scales=" + ",".join(f"{s:g}" for s in self.scales) + (",flip" if self.flip else "")


@dataclass(frozen=True)
class EvalConfig:
    """How to score.

    Attributes:
        protocol: ``"torchvision"``, ``"native"`` (see :mod:`seglens.evaluation`), or None: the
            dataset kind's default (torchvision for voc and coco-voc, native for folder and ade20k).
        tta: augmentation for the reported numbers; ``None`` for plain inference.
        compare_tta: also score plain inference in the same pass and report the gain (needs tta).
        boundary_width: pixels on each side of a ground-truth boundary counted as "boundary".
        worst: how many of the lowest-mIoU images to keep for the gallery.
    """

    protocol: str | None = None
    tta: TTA | None = None
    compare_tta: bool = False
    boundary_width: int = 5
    worst: int = 8

    def __post_init__(self) -> None:
        if self.protocol is not None and self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol {self.protocol!r}: choose one of {', '.join(PROTOCOLS)}")
        if self.tta is not None and not isinstance(self.tta, TTA):
            raise TypeError(
                f"tta must be a TTA or None (TTA.parse({self.tta!r}) reads text), got {type(self.tta).__name__}"
            )
        if self.compare_tta and self.tta is None:
            raise ValueError("compare_tta needs tta (e.g. tta='flip')")
        if isinstance(self.boundary_width, bool) or not isinstance(self.boundary_width, int) or self.boundary_width < 1:
            raise ValueError(f"boundary_width must be a positive integer, got {self.boundary_width!r}")
        if isinstance(self.worst, bool) or not isinstance(self.worst, int) or self.worst < 0:
            raise ValueError(f"worst must be an integer >= 0, got {self.worst!r}")


# --- the result ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelProblem:
    """One problem found by :func:`seglens.datasets.validate_labels` or ``survey_labels``.

    Attributes:
        name: the sample's name; ``"(dataset)"`` for problems of the dataset as a whole
            ("class_absent", "mostly_ignored": ``seglens.datasets.DATASET_PROBLEM_KINDS``).
        path: the file at fault (the mask; the image for "missing_mask" and unreadable images;
            the annotation file for COCO segmentations; the masks folder, or the dataset root,
            for dataset-level problems).
        kind: one of ``seglens.datasets.PROBLEM_KINDS``.
        detail: one line saying what is wrong and how to fix it.
    """

    name: str
    path: str
    kind: str
    detail: str


@dataclass(frozen=True)
class LabelSurvey:
    """What :func:`seglens.datasets.survey_labels` found, reading every mask once.

    Pixel counts are of the targets a model is trained and scored on: after ``mask_values`` or
    classes-file colours are applied (and ADE20K's value - 1).

    Attributes:
        problems: per-mask problems in sample order (as :func:`~seglens.datasets.validate_labels`
            reports them), then the dataset-level ones (name ``"(dataset)"``): "class_absent"
            per class in index order, then "mostly_ignored".
        class_pixels: pixels of each class 0..num_classes-1.
        ignore_pixels: pixels read as the ignore index (values or colours the mapping does not
            list included).
        images_with_class: for each class, the number of masks it occurs in.
        total_pixels: every pixel of the masks read (out-of-range values included, so
            ``total_pixels - sum(class_pixels) - ignore_pixels`` of them are neither).
        masks: the masks read (missing and unreadable ones are not).
    """

    problems: tuple[LabelProblem, ...]
    class_pixels: tuple[int, ...]
    ignore_pixels: int
    images_with_class: tuple[int, ...]
    total_pixels: int
    masks: int

    def to_dict(self) -> dict[str, Any]:
        """JSON types only (problems as dicts)."""
        return {
            "problems": [dataclasses.asdict(p) for p in self.problems],
            "class_pixels": list(self.class_pixels),
            "ignore_pixels": self.ignore_pixels,
            "images_with_class": list(self.images_with_class),
            "total_pixels": self.total_pixels,
            "masks": self.masks,
        }


@dataclass(frozen=True)
class EvalEvent:
    """What an evaluation tells as it goes (``evaluate(on_event=)``); nothing is printed by the library.

    kind:
        ``"warning"``: about the run as a whole, e.g. weights that are a random init;
        ``"note"``: e.g. a model scored with another protocol than asked;
        ``"label_problems"``: the label check found ``problems`` (scoring goes on unless strict).
    """

    kind: str
    message: str = ""
    problems: tuple[LabelProblem, ...] = ()


@dataclass(frozen=True)
class DatasetInfo:
    """What was scored. ``images``: the images scored (unreadable ones skipped are not counted);
    ``ignore_index``: None when read from a metrics.json that does not say."""

    kind: str
    root: str
    split: str | None
    images: int
    ignore_index: int | None = None


@dataclass(frozen=True)
class EvalSettings:
    """The run: model, weights, device, dataset, protocol and TTA as used.

    ``protocol`` is the one used (Hugging Face models are always scored with ``native``); ``tta``
    its text (``str(TTA)``) or None. The fields from ``backend`` on are None when read from a
    metrics.json written before seglens recorded them (and then left out of :meth:`EvalResult.to_dict`).
    ``engine``: ``"ray"`` for a run on a Ray cluster (``device`` is then the workers'), None for
    one in this process (metrics.json then has no ``engine`` key). ``refine``: the post-processing
    of the predictions (``"guided=8:0.001,small=0.0005"``), None for none (and no key).
    """

    seglens_version: str
    model: str
    weights: str
    weights_sha256: str | None
    device: str
    dataset: DatasetInfo
    protocol: str
    tta: str | None
    backend: str | None = None
    precision: str | None = None
    weights_tag: str | None = None
    weights_meaningful: bool | None = None  # False for random weights: the scores measure the pipeline only
    engine: str | None = None
    refine: str | None = None


@dataclass(frozen=True)
class Published:
    """The numbers published for the weights (torchvision's meta), to put beside the measured ones."""

    miou: float | None
    pixel_acc: float | None
    source: str


@dataclass(frozen=True)
class ClassScore:
    """One class's scores (%). ``absent``: in neither ground truth nor predictions; a class
    predicted but not in the ground truth is absent with IoU 0."""

    name: str
    index: int
    iou: float | None
    acc: float | None
    dice: float | None
    gt_pixels: int
    pred_pixels: int
    absent: bool


@dataclass(frozen=True)
class ConfusionPair:
    """Ground-truth pixels of ``gt`` predicted as ``pred``; ``fraction_of_gt`` in % of gt's pixels."""

    gt: str
    pred: str
    pixels: int
    fraction_of_gt: float | None


@dataclass(frozen=True)
class SizeBucket:
    """Recall (%) of the ground-truth regions in one size bucket."""

    regions: int
    pixels: int
    hit_pixels: int
    pixel_recall: float | None
    mean_region_recall: float | None


@dataclass(frozen=True)
class SizeAnalysis:
    """Recall by object size: buckets ``"small"``, ``"medium"``, ``"large"`` split at
    ``thresholds`` (areas in pixels; small < thresholds[0] <= medium < thresholds[1] <= large)."""

    thresholds: tuple[int, ...]
    unit: str
    buckets: dict[str, SizeBucket]


@dataclass(frozen=True)
class BoundaryAnalysis:
    """Pixel accuracy (%) within ``width`` pixels of a ground-truth class boundary and inside regions."""

    width: int | None
    band_pixels: int
    band_acc: float | None
    interior_pixels: int
    interior_acc: float | None


@dataclass(frozen=True)
class ImageScore:
    """One image's mIoU and pixel accuracy (%)."""

    name: str
    miou: float | None
    pixel_acc: float | None


@dataclass(frozen=True, eq=False)  # eq=False: arrays have no single truth value
class WorstImage:
    """One of the lowest-mIoU images.

    Attributes:
        name: the sample's name.
        miou: its mIoU (%).
        file: its panel (image | ground truth | prediction | errors) relative to the report
            folder, once written (``evaluate(..., out=)``); else None.
        image, target, pred: (H, W, 3) uint8 image, (H, W) uint8 ground truth and prediction at
            the protocol's resolution; None when read back from metrics.json.
    """

    name: str
    miou: float | None
    file: str | None = None
    image: np.ndarray | None = field(default=None, repr=False)
    target: np.ndarray | None = field(default=None, repr=False)
    pred: np.ndarray | None = field(default=None, repr=False)


@dataclass(frozen=True)
class ScorePair:
    miou: float | None
    pixel_acc: float | None


@dataclass(frozen=True)
class TTAComparison:
    """Plain inference vs TTA, scored in the same pass; gains in points (TTA minus plain)."""

    plain: ScorePair
    tta: ScorePair
    gain_miou: float | None
    gain_pixel_acc: float | None


@dataclass(frozen=True)
class SkippedImage:
    """A sample that could not be read (``index`` in the dataset); the run went on without it."""

    index: int
    error: str


@dataclass(frozen=True, eq=False)  # eq=False: the confusion matrix is an array
class EvalResult:
    """Everything an evaluation measured; what ``metrics.json`` holds and the report renders.

    Attributes:
        settings: model, weights, device, dataset, protocol and TTA as used.
        miou, pixel_acc, mean_acc, fwiou, mean_dice: the headline scores (%).
        published: the weights' published numbers when comparable (coco-voc val, torchvision
            protocol); else None.
        absent_rule: how absent classes enter the means (one sentence).
        class_names: display names, index = label value.
        per_class: class name -> :class:`ClassScore`, in index order.
        confusion_matrix: (C, C) int64 pixel counts, rows ground truth, columns predictions
            (read-only).
        top_confusions: the class pairs that take most pixels from each other.
        size: recall by object size.
        boundary: accuracy near boundaries vs inside regions.
        per_image: each scored image's mIoU and pixel accuracy, in dataset order.
        worst: the lowest-mIoU images, lowest first.
        tta_comparison: with ``compare_tta``; else None.
        label_problems: what the label check found (scoring went on unless ``strict``).
        skipped: samples that could not be read (None: not recorded, in a metrics.json
            written before seglens recorded them).
        seconds, images_per_s: scoring time (the label check excluded).
    """

    settings: EvalSettings
    miou: float | None
    pixel_acc: float | None
    mean_acc: float | None
    fwiou: float | None
    mean_dice: float | None
    published: Published | None
    absent_rule: str
    class_names: tuple[str, ...]
    per_class: dict[str, ClassScore]
    confusion_matrix: np.ndarray = field(repr=False)
    top_confusions: tuple[ConfusionPair, ...]
    size: SizeAnalysis
    boundary: BoundaryAnalysis
    per_image: tuple[ImageScore, ...] = field(repr=False)
    worst: tuple[WorstImage, ...] = ()
    tta_comparison: TTAComparison | None = None
    label_problems: tuple[LabelProblem, ...] = ()
    skipped: tuple[SkippedImage, ...] | None = ()
    seconds: float = 0.0
    images_per_s: float | None = None
    image_counts: Any = field(default=None, repr=False, compare=False)  # per-image class counts (compare)

    def __post_init__(self) -> None:
        cm = np.array(self.confusion_matrix, dtype=np.int64)  # a private, read-only copy
        cm.flags.writeable = False
        object.__setattr__(self, "confusion_matrix", cm)

    def to_dict(self) -> dict[str, Any]:
        """The ``metrics.json`` dict (JSON types only; key order as written)."""
        s, d = self.settings, self.settings.dataset
        out: dict[str, Any] = {"seglens_version": s.seglens_version, "model": s.model, "weights": s.weights}
        out |= _known({"weights_tag": s.weights_tag, "weights_meaningful": s.weights_meaningful})
        out |= {"weights_sha256": s.weights_sha256, "device": s.device}
        out |= _known({"backend": s.backend, "precision": s.precision, "engine": s.engine, "refine": s.refine})
        dataset = {"kind": d.kind, "root": d.root, "split": d.split, "images": d.images} | _known(
            {"ignore_index": d.ignore_index}
        )
        out |= {
            "dataset": dataset,
            "protocol": s.protocol,
            "tta": s.tta,
            "miou": self.miou,
            "pixel_acc": self.pixel_acc,
            "mean_acc": self.mean_acc,
            "fwiou": self.fwiou,
            "mean_dice": self.mean_dice,
            "published": None if self.published is None else dataclasses.asdict(self.published),
            "absent_rule": self.absent_rule,
            "class_names": list(self.class_names),
            "per_class": {name: _fields(c, skip=("name",)) for name, c in self.per_class.items()},
            "confusion_matrix": self.confusion_matrix.tolist(),
            "top_confusions": [dataclasses.asdict(c) for c in self.top_confusions],
            "size": {
                "thresholds": list(self.size.thresholds),
                "unit": self.size.unit,
                "buckets": {name: dataclasses.asdict(b) for name, b in self.size.buckets.items()},
            },
            "boundary": dataclasses.asdict(self.boundary),
            "per_image": [dataclasses.asdict(p) for p in self.per_image],
            "worst": [{"name": w.name, "miou": w.miou, "file": w.file} for w in self.worst],
            "tta_comparison": None if self.tta_comparison is None else dataclasses.asdict(self.tta_comparison),
            "label_problems": [dataclasses.asdict(p) for p in self.label_problems],
        }
        if self.skipped is not None:
            out["skipped"] = [dataclasses.asdict(s) for s in self.skipped]
        return out | {"seconds": self.seconds, "images_per_s": self.images_per_s}

    def to_json(self, *, indent: int | None = 2) -> str:
        """:meth:`to_dict` as JSON text; NaN / infinity are refused (ValueError), as in metrics.json."""
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False, allow_nan=False)

    @classmethod
    def from_dict(cls, m: Mapping[str, Any]) -> EvalResult:
        """Read a ``metrics.json`` dict back. Keys seglens added later (``published``, ``tta``,
        ``tta_comparison``, ``images_per_s``, ...) may be missing."""
        data = m["dataset"]
        settings = EvalSettings(
            seglens_version=m["seglens_version"],
            model=m["model"],
            weights=m["weights"],
            weights_sha256=m.get("weights_sha256"),
            device=m["device"],
            dataset=DatasetInfo(
                data["kind"], data["root"], data.get("split"), data["images"], data.get("ignore_index")
            ),
            protocol=m["protocol"],
            tta=m.get("tta"),
            backend=m.get("backend"),
            precision=m.get("precision"),
            weights_tag=m.get("weights_tag"),
            weights_meaningful=m.get("weights_meaningful"),
            engine=m.get("engine"),
            refine=m.get("refine"),
        )
        published = m.get("published")
        comparison = m.get("tta_comparison")
        size = m["size"]
        return cls(
            settings=settings,
            miou=m["miou"],
            pixel_acc=m["pixel_acc"],
            mean_acc=m["mean_acc"],
            fwiou=m["fwiou"],
            mean_dice=m["mean_dice"],
            published=Published(**published) if published else None,
            absent_rule=m["absent_rule"],
            class_names=tuple(m["class_names"]),
            per_class={name: ClassScore(name=name, **c) for name, c in m["per_class"].items()},
            confusion_matrix=np.asarray(m["confusion_matrix"], dtype=np.int64),
            top_confusions=tuple(ConfusionPair(**c) for c in m["top_confusions"]),
            size=SizeAnalysis(
                tuple(size["thresholds"]), size["unit"], {k: SizeBucket(**b) for k, b in size["buckets"].items()}
            ),
            boundary=BoundaryAnalysis(**m["boundary"]),
            per_image=tuple(ImageScore(**p) for p in m.get("per_image", ())),
            worst=tuple(WorstImage(name=w["name"], miou=w["miou"], file=w.get("file")) for w in m.get("worst", ())),
            tta_comparison=None
            if not comparison
            else TTAComparison(
                plain=ScorePair(**comparison["plain"]),
                tta=ScorePair(**comparison["tta"]),
                gain_miou=comparison["gain_miou"],
                gain_pixel_acc=comparison["gain_pixel_acc"],
            ),
            label_problems=tuple(LabelProblem(**p) for p in m.get("label_problems", ())),
            skipped=None if "skipped" not in m else tuple(SkippedImage(**s) for s in m["skipped"]),
            seconds=m.get("seconds", 0.0),
            images_per_s=m.get("images_per_s"),
        )

    @classmethod
    def from_json(cls, text: str) -> EvalResult:
        """Read ``metrics.json``'s text back (see :meth:`from_dict`)."""
        return cls.from_dict(json.loads(text))


def _known(values: dict[str, Any]) -> dict[str, Any]:
    """The entries whose value is known (not None): optional keys of metrics.json."""
    return {k: v for k, v in values.items() if v is not None}


def _fields(obj: Any, *, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.name not in skip}
