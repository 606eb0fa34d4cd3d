"""The scoring loop of :func:`seglens.evaluation.score_dataset`, split so that it can run anywhere.

:class:`Scorer` is the per-image work (the protocol's inputs, inference with TTA, the label maps);
:class:`Tally` is what it accumulates (confusion matrices, size and boundary counts, per-image
scores, the worst images, the skipped samples), a picklable state that merges exactly;
:func:`build_result` makes the :class:`EvalResult` from a tally. The local engine runs one Scorer
over the whole dataset into one Tally; the Ray engine (:mod:`seglens._eval_ray`) runs one per
actor over chunks of indices and merges the chunks' tallies on the driver, in whatever order they
arrive, into the same state, so both give the same result. Private to evaluation.py and
_eval_ray.py (which both import it: no import cycle).
"""

from __future__ import annotations

import dataclasses
import heapq
import math
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.models import get_model_weights

from ._compare_stats import ImageCounts, image_row
from ._version import __version__
from .datasets import DatasetError, Sample, SegmentationDataset
from .evaltypes import (
    TTA,
    BoundaryAnalysis,
    ClassScore,
    ConfusionPair,
    DatasetInfo,
    EvalConfig,
    EvalResult,
    EvalSettings,
    ImageScore,
    LabelProblem,
    Published,
    ScorePair,
    SizeAnalysis,
    SizeBucket,
    SkippedImage,
    TTAComparison,
    WorstImage,
)
from .inference import Segmenter
from .metrics import (
    ABSENT_RULE,
    SIZE_BUCKETS,
    BoundaryAccuracy,
    ConfusionMatrix,
    SizeRecall,
    confusion_matrix,
    scores,
    top_confusions,
)
from .visualize import display_name

_PUBLISHED_KEY = "COCO-val2017-VOC-labels"  # torchvision's weights meta: where its numbers come from


def default_protocol(kind: str) -> str:
    """The protocol a dataset kind is scored with unless told: ``torchvision`` for voc and
    coco-voc (the published numbers' protocol), ``native`` for folder and ade20k."""
    return "native" if kind in ("folder", "ade20k") else "torchvision"


def resolve_protocol(seg: Segmenter, dataset: SegmentationDataset, config: EvalConfig) -> str:
    """The protocol ``seg`` is scored with on ``dataset``: the config's or the kind's default,
    ``native`` for a network run at a scale of the image and for models without torchvision's preset."""
    if seg.tile is not None:
        raise ValueError("evaluation scores whole images: use a Segmenter without tile=")
    protocol = config.protocol or default_protocol(dataset.kind)
    if seg.scale is not None:  # the network runs at a scale of the image: the native protocol's inputs
        if config.protocol == "torchvision":
            raise ValueError("scale= runs the network at a scale of each image, which the torchvision protocol's "
                             "fixed 520-pixel resize excludes: use protocol='native'")  # fmt: skip
        protocol = "native"
    if seg.reference_short_side is None:
        protocol = "native"
    return protocol


def _torchvision_view(seg: Segmenter, sample: Sample) -> tuple[Image.Image, np.ndarray]:
    size = seg.reference_short_side  # the 520 base size (and the mean and std) come from the weights
    image = TF.resize(sample.image, size, interpolation=TF.InterpolationMode.BILINEAR)
    target = TF.resize(Image.fromarray(sample.target), size, interpolation=TF.InterpolationMode.NEAREST)
    return image, np.asarray(target)


def _torchvision_inputs(seg: Segmenter, sample: Sample) -> tuple[torch.Tensor, np.ndarray, Image.Image]:
    """Image and target as references/segmentation's SegmentationPresetEval(base_size=520) makes them."""
    image, target = _torchvision_view(seg, sample)
    return seg.network_input(image, resize=False), target, image


def _resize_instances(instances, size: tuple[int, int]):
    if instances is None:
        return None
    h, w = size
    return [
        (c, np.asarray(Image.fromarray(m.astype(np.uint8)).resize((w, h), Image.Resampling.NEAREST)).astype(bool))
        for c, m in instances
    ]


def _pct(x: float | None) -> float | None:
    return None if x is None or math.isnan(x) else round(100.0 * float(x), 4)


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 4)


# --- the accumulated state ---------------------------------------------------------------------


class Tally:
    """What scoring a set of samples accumulates, keyed by sample index so that tallies of
    disjoint index sets merge into exactly the tally of their union, in any order.

    Integer counts (the confusion matrices, the boundary counts, the size buckets' region and
    pixel counts) are plain sums. Per-image records (scores, worst images, skipped samples) are
    kept by index and come out in index order; the worst images are the ``worst`` lowest-mIoU
    ones, ties to the lower index, which a merge of partial worst lists keeps exactly. The one
    float sum, the size analysis' sum of region recalls, is folded in index order: images past a
    gap wait in ``_size_parts`` until the images before them arrive, so it has the bits of one
    pass over the dataset whatever order the parts come in.
    """

    def __init__(self, num_classes: int, *, ignore_index: int, boundary_width: int, worst: int, compare: bool) -> None:
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.boundary_width, self.worst_k, self.compare = boundary_width, worst, compare
        self.cm, self.cm_plain = ConfusionMatrix(num_classes), ConfusionMatrix(num_classes)
        self.boundary = BoundaryAccuracy()
        self.per_image: dict[int, ImageScore] = {}
        self.rows: dict[int, np.ndarray] = {}  # per image: its per-class counts (seglens compare's bootstrap)
        self.skipped: dict[int, SkippedImage] = {}
        self.worst: list[tuple[float, int, WorstImage]] = []  # min-heap of (-mIoU, -index): the worst on top
        self._size = SizeRecall()  # images 0 .. _size_next - 1, in index order
        self._size_next = 0
        self._size_parts: dict[int, SizeRecall | None] = {}  # later images (None: skipped)

    @property
    def count(self) -> int:
        """Samples tallied, scored or skipped."""
        return len(self.per_image) + len(self.skipped)

    def indices(self) -> set[int]:
        return set(self.per_image) | set(self.skipped)

    def add(
        self,
        i: int,
        name: str,
        target: np.ndarray,
        pred: np.ndarray,
        *,
        plain: np.ndarray | None = None,
        shown: Image.Image | None = None,
        instances=None,
    ) -> None:
        """Tally sample ``i`` scored: its ground truth and prediction at the protocol's size,
        ``plain`` the prediction without TTA (with ``compare``), ``shown`` the image as scored
        (kept with the worst images)."""
        self._refuse_twice(i)
        n = self.num_classes
        counts = confusion_matrix(target, pred, n)  # once: the total, the bootstrap's row, the image's scores
        self.cm.add(counts)
        self.rows[i] = image_row(counts)
        if self.compare:
            self.cm_plain.update(target, plain)
        part = SizeRecall()
        part.update(target, pred, num_classes=n, ignore_index=self.ignore_index, instances=instances)
        self._size_parts[i] = part
        self.boundary.update(target, pred, width=self.boundary_width, ignore_index=self.ignore_index)
        s = scores(counts)
        self.per_image[i] = ImageScore(name, _pct(s.miou), _pct(s.pixel_acc))
        if self.worst_k and not math.isnan(s.miou):
            key = (-s.miou, -i)
            if len(self.worst) < self.worst_k or key > self.worst[0][:2]:
                image = None if shown is None else np.asarray(shown.convert("RGB"))
                self._keep_worst((*key, WorstImage(name, _pct(s.miou), None, image, target, pred)))
        self._fold()

    def skip(self, i: int, error: str) -> None:
        """Tally sample ``i`` as unreadable."""
        self._refuse_twice(i)
        self.skipped[i] = SkippedImage(i, error)
        self._size_parts[i] = None
        self._fold()

    def merge(self, other: Tally) -> None:
        """Add ``other``'s samples (disjoint from this tally's; ValueError otherwise: they would
        count twice). ``other`` is not to be used afterwards (its records are taken, not copied)."""
        mine = (self.num_classes, self.ignore_index, self.boundary_width, self.worst_k, self.compare)
        theirs = (other.num_classes, other.ignore_index, other.boundary_width, other.worst_k, other.compare)
        if mine != theirs:
            raise ValueError(f"cannot merge a tally of {theirs} into one of {mine} (classes, ignore index, "
                             "boundary width, worst, compare_tta)")  # fmt: skip
        twice = self.indices() & other.indices()
        if twice:
            raise ValueError(f"both tallies hold samples {sorted(twice)[:5]}: merging would count them twice")
        self.cm.merge(other.cm)
        self.cm_plain.merge(other.cm_plain)
        self.boundary.merge(other.boundary)
        self.per_image.update(other.per_image)
        self.rows.update(other.rows)
        self.skipped.update(other.skipped)
        for item in other.worst:
            if len(self.worst) < self.worst_k or item[:2] > self.worst[0][:2]:
                self._keep_worst(item)
        if other._size_next:  # its folded images start at 0, so this tally has folded none (else: twice)
            self._size.merge(other._size)  # into an empty one: the same bits
            self._size_next = other._size_next
        self._size_parts.update(other._size_parts)
        self._fold()

    def strip_pixels(self) -> None:
        """Drop the worst images' image and ground truth (the driver reads them again: see
        :meth:`fill_pixels`), keeping the prediction: what a worker sends is then small."""
        self.worst = [(a, b, dataclasses.replace(w, image=None, target=None)) for a, b, w in self.worst]

    def fill_pixels(self, read: Callable[[int], tuple[np.ndarray, np.ndarray] | None]) -> None:
        """Put back the image and ground truth of worst images sent without them: ``read(index)``
        gives (image, target) as scored, or None (the image then stays without pixels)."""
        for k, (a, b, w) in enumerate(self.worst):
            if w.image is None and w.pred is not None:
                got = read(-b)
                if got is not None:
                    self.worst[k] = (a, b, dataclasses.replace(w, image=got[0], target=got[1]))

    def image_counts(self, class_names: Sequence[str]) -> ImageCounts:
        """Per-image per-class counts in index order: what per_image_counts.npz stores."""
        order = sorted(self.rows)
        return ImageCounts.from_rows(
            [self.per_image[i].name for i in order], [self.rows[i] for i in order], class_names
        )

    def size_recall(self) -> SizeRecall:
        """The size analysis' accumulator over every image tallied (in index order)."""
        for i in sorted(self._size_parts):  # gaps (samples never tallied) are stepped over
            part = self._size_parts.pop(i)
            if part is not None:
                self._size.merge(part)
            self._size_next = i + 1
        return self._size

    def _refuse_twice(self, i: int) -> None:
        if i in self.per_image or i in self.skipped:
            raise ValueError(f"sample {i} is tallied already")

    def _keep_worst(self, item: tuple[float, int, WorstImage]) -> None:
        if len(self.worst) < self.worst_k:
            heapq.heappush(self.worst, item)
        else:
            heapq.heapreplace(self.worst, item)

    def _fold(self) -> None:
        while self._size_next in self._size_parts:
            part = self._size_parts.pop(self._size_next)
            if part is not None:
                self._size.merge(part)
            self._size_next += 1


# --- the per-image work ------------------------------------------------------------------------


def protocol_inputs(seg: Segmenter, protocol: str, sample: Sample) -> tuple[torch.Tensor, np.ndarray, Image.Image]:
    """``(network input, target, image)`` of ``sample`` as ``protocol`` scores it: torchvision's
    520-pixel preset for both, or the Segmenter's own input and the untouched target (native)."""
    if protocol == "torchvision":
        return _torchvision_inputs(seg, sample)
    return seg.network_input(sample.image), sample.target, sample.image


class Scorer:
    """Scores samples with a Segmenter under a resolved protocol and a config, into a :class:`Tally`."""

    def __init__(self, seg: Segmenter, protocol: str, config: EvalConfig) -> None:
        self.seg, self.protocol, self.config = seg, protocol, config
        self.tta = config.tta or TTA()
        self.compare = config.compare_tta and config.tta is not None

    def tally(self, dataset: SegmentationDataset) -> Tally:
        """An empty tally for this scorer on ``dataset``."""
        return Tally(len(self.seg.categories), ignore_index=dataset.ignore_index,
                     boundary_width=self.config.boundary_width, worst=self.config.worst,
                     compare=self.compare)  # fmt: skip

    def run(
        self,
        dataset: SegmentationDataset,
        indices: Iterable[int],
        tally: Tally,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """Score the samples ``indices`` of ``dataset`` into ``tally``; an unreadable one is
        tallied as skipped (one bad pair must not end a long run). ``progress(1)`` after each."""
        for i in indices:
            try:
                sample = dataset[i]
            except DatasetError as e:
                tally.skip(i, str(e))
            else:
                self.score(i, sample, tally)
            if progress:
                progress(1)

    def score(self, i: int, sample: Sample, tally: Tally) -> None:
        seg, tta = self.seg, self.tta
        x, target, shown = protocol_inputs(seg, self.protocol, sample)
        instances = (
            _resize_instances(sample.instances, target.shape) if self.protocol == "torchvision" else sample.instances
        )
        logits, plain = seg.logits(x[None], scales=tta.scales, flip=tta.flip)
        pred = seg.labels_from_logits(logits[0], target.shape, shown)  # with the Segmenter's refine
        plain_pred = None
        if self.compare:
            plain = seg.logits(x[None]).logits if plain is None else plain
            plain_pred = seg.labels_from_logits(plain[0], target.shape, shown)
        tally.add(i, sample.name, target, pred, plain=plain_pred, shown=shown, instances=instances)

    def view(self, sample: Sample) -> tuple[np.ndarray, np.ndarray]:
        """The (H, W, 3) image and (H, W) ground truth of ``sample`` as scored (no inference)."""
        if self.protocol == "torchvision":
            image, target = _torchvision_view(self.seg, sample)
            return np.asarray(image.convert("RGB")), target
        return np.asarray(sample.image.convert("RGB")), sample.target


# --- the result ----------------------------------------------------------------------------------


def _published(settings: EvalSettings) -> Published | None:
    """The numbers torchvision publishes for the model, when this run measured the same thing."""
    d = settings.dataset
    if d.kind != "coco-voc" or settings.protocol != "torchvision" or d.split != "val":
        return None
    meta = get_model_weights(settings.model).DEFAULT.meta.get("_metrics", {}).get(_PUBLISHED_KEY)
    if not meta:
        return None
    source = f"torchvision weights meta, {_PUBLISHED_KEY}"
    if settings.weights != "official":
        source += " (for the official weights; these are not them)"
    return Published(miou=meta["miou"], pixel_acc=meta["pixel_acc"], source=source)


def _settings(
    seg: Segmenter,
    dataset: SegmentationDataset,
    images: int,
    protocol: str,
    tta: TTA | None,
    device: str | None = None,
    engine: str | None = None,
) -> EvalSettings:
    """The run's settings; model metadata from the Segmenter's LoadedModel (name, weights, digest).
    ``device``: where the images were scored, when not ``seg``'s (the Ray workers')."""
    model = seg.loaded
    return EvalSettings(
        seglens_version=__version__,
        model=model.name,
        weights=model.weights,
        weights_sha256=model.sha256,
        device=device or str(seg.device),
        dataset=DatasetInfo(dataset.kind, str(dataset.root), dataset.split, images, dataset.ignore_index),
        protocol=protocol,
        tta=str(tta) if tta else None,
        backend=seg.backend,
        precision=seg.precision,
        weights_tag=model.weights_tag,
        weights_meaningful=model.meaningful,
        engine=engine,
        refine=",".join(map(str, seg.refine)) or None,
    )


def _boundary(b) -> BoundaryAnalysis:
    return BoundaryAnalysis(b.width, b.band_pixels, _pct(b.band_acc), b.interior_pixels, _pct(b.interior_acc))


def build_result(
    tally: Tally,
    seg: Segmenter,
    dataset: SegmentationDataset,
    protocol: str,
    config: EvalConfig,
    *,
    seconds: float,
    label_problems: Iterable[LabelProblem] = (),
    device: str | None = None,
    engine: str | None = None,
) -> EvalResult:
    """The :class:`EvalResult` of ``tally`` (every sample of ``dataset``, scored by ``seg``'s model
    under ``protocol``); ``seconds``: the scoring time; ``device``, ``engine``: see :func:`_settings`."""
    n = len(seg.categories)
    named = dataset.categories is not None and len(dataset.categories) == n  # evaluate() refuses other counts
    names = [display_name(c) for c in (dataset.categories if named else seg.categories)]
    cm = tally.cm.matrix
    final = scores(cm)
    tta_comparison = None
    if tally.compare:
        p = scores(tally.cm_plain.matrix)
        plain_s, tta_s = ScorePair(_pct(p.miou), _pct(p.pixel_acc)), ScorePair(_pct(final.miou), _pct(final.pixel_acc))
        tta_comparison = TTAComparison(
            plain_s, tta_s, _diff(tta_s.miou, plain_s.miou), _diff(tta_s.pixel_acc, plain_s.pixel_acc)
        )
    unit = "instance masks" if dataset.kind == "coco-voc" else "8-connected components per class"
    settings = _settings(seg, dataset, len(dataset) - len(tally.skipped), protocol, config.tta, device, engine)
    return EvalResult(
        image_counts=tally.image_counts(names),
        settings=settings,
        miou=_pct(final.miou),
        pixel_acc=_pct(final.pixel_acc),
        mean_acc=_pct(final.mean_acc),
        fwiou=_pct(final.fwiou),
        mean_dice=_pct(final.mean_dice),
        published=_published(settings),
        absent_rule=ABSENT_RULE,
        class_names=tuple(names),
        per_class={
            names[c]: ClassScore(
                name=names[c],
                index=c,
                iou=_pct(final.iou[c]),
                acc=_pct(final.acc[c]),
                dice=_pct(final.dice[c]),
                gt_pixels=int(final.gt_pixels[c]),
                pred_pixels=int(final.pred_pixels[c]),
                absent=not bool(final.present[c]),
            )
            for c in range(n)
        },
        confusion_matrix=cm,
        top_confusions=tuple(
            ConfusionPair(names[t.gt], names[t.pred], t.pixels, _pct(t.fraction_of_gt))
            for t in top_confusions(cm, k=10)
        ),
        size=SizeAnalysis(
            thresholds=tuple(b[2] for b in SIZE_BUCKETS if b[2] is not None),
            unit=f"pixels of a ground-truth region at the protocol's resolution ({unit}, background excluded)",
            buckets={
                name: SizeBucket(b.regions, b.pixels, b.hit_pixels, _pct(b.pixel_recall), _pct(b.mean_region_recall))
                for name, b in tally.size_recall().result().items()
            },
        ),
        boundary=_boundary(tally.boundary.result()),
        per_image=tuple(tally.per_image[i] for i in sorted(tally.per_image)),
        worst=tuple(w for _, _, w in sorted(tally.worst, key=lambda t: (-t[0], -t[1]))),
        tta_comparison=tta_comparison,
        label_problems=tuple(label_problems),
        skipped=tuple(tally.skipped[i] for i in sorted(tally.skipped)),
        seconds=round(seconds, 3),
        images_per_s=round(len(dataset) / seconds, 4) if seconds > 0 else None,
    )
