"""Score a Segmenter on a labelled dataset: protocols, test-time augmentation, failure analysis.

No printing here; progress goes through a callback and the CLI renders it. Metric definitions
live in :mod:`seglens.metrics`, dataset reading in :mod:`seglens.datasets`, rendering in
:mod:`seglens.report`.

Protocols:

- ``torchvision`` (default for ``voc`` and ``coco-voc``): what torchvision's reference
  ``SegmentationPresetEval(base_size=520)`` does, image resized to a 520-pixel short side with
  PIL bilinear, target with nearest, metrics at that size, batch 1. With the official weights on
  COCO val2017 this is the protocol of the published mIoU / pixel accuracy.
- ``native``: the Segmenter's own path (``weights.transforms()``, logits upsampled to the image's
  original size), metrics at full resolution against the untouched target.

Models without torchvision's preset (Hugging Face checkpoints, ``hf:<repo>``) are always scored
with ``native``, whatever the config asks; ``metrics["protocol"]`` names the protocol used. The
520-pixel torchvision protocol means nothing for them, while ``native`` runs the checkpoint's
own image processor and scores at each image's original size against the untouched annotation,
which is how their published numbers were measured (MMSegmentation, the SegFormer and
Mask2Former code all resize predictions back to the original image). What can still differ is
the resize before the network: Hugging Face's processors resize as their configs say (e.g.
SegFormer to a fixed 512 x 512 square, where MMSegmentation keeps the aspect ratio with a
512-pixel short side), so expect numbers close to, not equal to, the published ones.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.models import get_model_weights

from . import __version__
from .datasets import DatasetError, Sample, SegmentationDataset
from .inference import Segmenter, upsample_argmax
from .io import atomic_open
from .metrics import ABSENT_RULE, SIZE_BUCKETS, BoundaryAccuracy, ConfusionMatrix, SizeRecall, image_scores, scores, top_confusions
from .visualize import comparison_figure, display_name

__all__ = ["PROTOCOLS", "TTA", "EvalConfig", "EvalResult", "evaluate", "write_worst"]

PROTOCOLS = ("torchvision", "native")
_PUBLISHED_KEY = "COCO-val2017-VOC-labels"  # torchvision's weights meta: where its numbers come from


@dataclass(frozen=True)
class TTA:
    """Test-time augmentation: logits averaged over scales and, optionally, horizontal flips."""

    scales: tuple[float, ...] = (1.0,)
    flip: bool = False

    @classmethod
    def parse(cls, text: str) -> TTA:
        """``"flip"``, ``"scales=0.75,1.0,1.25"`` or ``"scales=0.75,1.0,1.25,flip"``."""
        text = text.strip()
        if text == "flip":
            return cls(flip=True)
        if not text.startswith("scales="):
            raise ValueError(f"--tta {text!r}: use 'flip' or 'scales=0.75,1.0,1.25[,flip]'")
        parts = [p.strip() for p in text.removeprefix("scales=").split(",") if p.strip()]
        flip = "flip" in parts
        try:
            scales = tuple(float(p) for p in parts if p != "flip")
        except ValueError as e:
            raise ValueError(f"--tta {text!r}: scales must be numbers, e.g. scales=0.75,1.0,1.25") from e
        if not scales or any(not (0.1 <= s <= 4.0) for s in scales):
            raise ValueError(f"--tta {text!r}: give one or more scales between 0.1 and 4")
        return cls(scales=scales, flip=flip)

    def __str__(self) -> str:
        if self.scales == (1.0,):
            return "flip" if self.flip else "none"
        return "scales=" + ",".join(f"{s:g}" for s in self.scales) + (",flip" if self.flip else "")


@dataclass(frozen=True)
class EvalConfig:
    """How to score.

    Attributes:
        protocol: ``"torchvision"`` or ``"native"`` (see the module docstring).
        tta: augmentation for the reported numbers; ``None`` for plain inference.
        compare_tta: also score plain inference in the same pass and report the gain.
        boundary_width: pixels on each side of a ground-truth boundary counted as "boundary".
        worst: how many of the lowest-mIoU images to keep for the gallery.
    """

    protocol: str = "torchvision"
    tta: TTA | None = None
    compare_tta: bool = False
    boundary_width: int = 5
    worst: int = 8


@dataclass(frozen=True)
class WorstImage:
    name: str
    miou: float
    image: np.ndarray  # (H, W, 3) uint8 at the protocol's resolution
    target: np.ndarray  # (H, W) uint8
    pred: np.ndarray  # (H, W) uint8


@dataclass(frozen=True)
class EvalResult:
    metrics: dict  # what metrics.json holds (report.py renders it)
    worst: list[WorstImage] = field(default_factory=list)


def _has_torchvision_preset(seg: Segmenter) -> bool:
    """Whether the model's transforms are torchvision's SemanticSegmentation preset (the
    torchvision protocol needs its resize_size, mean and std)."""
    tf = seg.loaded.transforms
    return all(hasattr(tf, a) for a in ("resize_size", "mean", "std"))


def _torchvision_inputs(seg: Segmenter, sample: Sample) -> tuple[torch.Tensor, np.ndarray, Image.Image]:
    """Image and target as references/segmentation's SegmentationPresetEval(base_size=520) makes them."""
    tf = seg.loaded.transforms  # mean, std and the 520 base size come from the weights
    size = tf.resize_size[0]
    image = TF.resize(sample.image, size, interpolation=TF.InterpolationMode.BILINEAR)
    target = TF.resize(Image.fromarray(sample.target), size, interpolation=TF.InterpolationMode.NEAREST)
    x = TF.normalize(TF.convert_image_dtype(TF.pil_to_tensor(image), torch.float), mean=tf.mean, std=tf.std)
    return x, np.asarray(target), image


def _resize_instances(instances, size: tuple[int, int]):
    if instances is None:
        return None
    h, w = size
    return [(c, np.asarray(Image.fromarray(m.astype(np.uint8)).resize((w, h), Image.Resampling.NEAREST)).astype(bool)) for c, m in instances]


@torch.inference_mode()
def _logits(run: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tta: TTA | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(C, h, w) logits for one (3, h, w) input, averaged over the augmentations, and the plain
    (scale 1, unflipped) logits when the augmentations include them (else None).

    ``run`` is the network through its backend: (N, 3, h, w) -> (N, C, h, w), e.g. Segmenter.run.
    """
    h, w = x.shape[-2:]
    tta = tta or TTA()
    total, count, plain = None, 0, None
    for s in tta.scales:
        xs = x
        if s != 1.0:
            size = (max(1, round(h * s)), max(1, round(w * s)))
            xs = F.interpolate(x[None], size=size, mode="bilinear", align_corners=False, antialias=s < 1)[0]
        for flip in (False, True) if tta.flip else (False,):
            out = run((xs.flip(-1) if flip else xs)[None])[0].float().contiguous()
            if flip:
                out = out.flip(-1)
            if s != 1.0:
                out = F.interpolate(out[None], size=(h, w), mode="bilinear", align_corners=False)[0]
            if s == 1.0 and not flip:
                plain = out
            total = out.clone() if total is None else total.add_(out)
            count += 1
    return total / count, plain


def _labels(logits: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits.argmax(0).to(torch.uint8).cpu().numpy()
    return upsample_argmax(logits, size).to(torch.uint8).cpu().numpy()


def _pct(x: float) -> float | None:
    return None if x is None or math.isnan(x) else round(100.0 * float(x), 4)


def _published(seg: Segmenter, dataset: SegmentationDataset, protocol: str) -> dict | None:
    if dataset.kind != "coco-voc" or protocol != "torchvision" or dataset.split != "val":
        return None
    meta = get_model_weights(seg.loaded.name).DEFAULT.meta.get("_metrics", {}).get(_PUBLISHED_KEY)
    if not meta:
        return None
    source = f"torchvision weights meta, {_PUBLISHED_KEY}"
    if seg.loaded.weights != "official":
        source += " (for the official weights; these are not them)"
    return {"miou": meta["miou"], "pixel_acc": meta["pixel_acc"], "source": source}


def evaluate(
    seg: Segmenter,
    dataset: SegmentationDataset,
    config: EvalConfig = EvalConfig(),
    *,
    progress: Callable[[int], None] | None = None,
) -> EvalResult:
    """Score ``seg`` on every sample of ``dataset``.

    Args:
        seg: the model to score (batch size is ignored: batch 1, as the protocols specify).
        dataset: from :func:`seglens.datasets.open_dataset`.
        config: protocol, TTA and analysis settings; a model without torchvision's preset
            (``hf:`` checkpoints) is scored with ``native`` (see the module docstring).
        progress: called with 1 after each image.

    Returns:
        EvalResult with the metrics dict (schema: see report.py) and the worst images.
    """
    if config.protocol not in PROTOCOLS:
        raise ValueError(f"protocol {config.protocol!r}: choose one of {', '.join(PROTOCOLS)}")
    protocol = config.protocol if _has_torchvision_preset(seg) else "native"
    n = len(seg.categories)
    ignore = dataset.ignore_index
    names = [display_name(c) for c in seg.categories]
    cm, cm_plain = ConfusionMatrix(n), ConfusionMatrix(n)
    size_recall, boundary = SizeRecall(), BoundaryAccuracy()
    per_image: list[dict] = []
    worst: list[tuple[float, int, WorstImage]] = []  # max-heap by mIoU via negation
    compare = config.compare_tta and config.tta is not None
    start = time.perf_counter()
    skipped: list[dict] = []
    for i in range(len(dataset)):
        try:
            sample = dataset[i]
        except DatasetError as e:  # one unreadable pair must not end a long run
            skipped.append({"index": i, "error": str(e)})
            if progress:
                progress(1)
            continue
        if protocol == "torchvision":
            x, target, shown = _torchvision_inputs(seg, sample)
            instances = _resize_instances(sample.instances, target.shape)
        else:
            x, target, shown, instances = seg.preprocess(sample.image), sample.target, sample.image, sample.instances
        logits, plain = _logits(seg.run, x, config.tta)
        pred = _labels(logits, target.shape)
        cm.update(target, pred)
        if compare:
            if plain is None:
                plain, _ = _logits(seg.run, x, None)
            cm_plain.update(target, _labels(plain, target.shape))
        size_recall.update(target, pred, num_classes=n, ignore_index=ignore, instances=instances)
        boundary.update(target, pred, width=config.boundary_width, ignore_index=ignore)
        s = image_scores(target, pred, n)
        per_image.append({"name": sample.name, "miou": _pct(s.miou), "pixel_acc": _pct(s.pixel_acc)})
        if config.worst and not math.isnan(s.miou):
            item = (-s.miou, -i, WorstImage(sample.name, s.miou, np.asarray(shown.convert("RGB")), target, pred))
            if len(worst) < config.worst:
                heapq.heappush(worst, item)
            elif item > worst[0]:
                heapq.heapreplace(worst, item)
        if progress:
            progress(1)
    seconds = time.perf_counter() - start

    final = scores(cm.matrix)
    metrics = {
        "seglens_version": __version__,
        "model": seg.loaded.name,
        "weights": seg.loaded.weights,
        "weights_sha256": seg.loaded.sha256,
        "device": str(seg.device),
        "dataset": {"kind": dataset.kind, "root": str(dataset.root), "split": dataset.split, "images": len(dataset) - len(skipped)},
        "protocol": protocol,
        "tta": str(config.tta) if config.tta else None,
        "miou": _pct(final.miou),
        "pixel_acc": _pct(final.pixel_acc),
        "mean_acc": _pct(final.mean_acc),
        "fwiou": _pct(final.fwiou),
        "mean_dice": _pct(final.mean_dice),
        "published": _published(seg, dataset, protocol),
        "absent_rule": ABSENT_RULE,
        "class_names": names,
        "per_class": {
            names[c]: {
                "index": c,
                "iou": _pct(final.iou[c]),
                "acc": _pct(final.acc[c]),
                "dice": _pct(final.dice[c]),
                "gt_pixels": int(final.gt_pixels[c]),
                "pred_pixels": int(final.pred_pixels[c]),
                "absent": not bool(final.present[c]),
            }
            for c in range(n)
        },
        "confusion_matrix": cm.matrix.tolist(),
        "top_confusions": [
            {"gt": names[t.gt], "pred": names[t.pred], "pixels": t.pixels, "fraction_of_gt": _pct(t.fraction_of_gt)}
            for t in top_confusions(cm.matrix, k=10)
        ],
        "size": {
            "thresholds": [b[2] for b in SIZE_BUCKETS if b[2] is not None],
            "unit": "pixels of a ground-truth region at the protocol's resolution ("
            + ("instance masks" if dataset.kind == "coco-voc" else "8-connected components per class")
            + ", background excluded)",
            "buckets": {
                name: {
                    "regions": b.regions,
                    "pixels": b.pixels,
                    "hit_pixels": b.hit_pixels,
                    "pixel_recall": _pct(b.pixel_recall),
                    "mean_region_recall": _pct(b.mean_region_recall),
                }
                for name, b in size_recall.result().items()
            },
        },
        "boundary": _boundary_dict(boundary.result()),
        "per_image": per_image,
        "worst": [],
        "tta_comparison": None,
        "label_problems": [],
        "skipped": skipped,
        "seconds": round(seconds, 3),
        "images_per_s": round(len(dataset) / seconds, 4) if seconds > 0 else None,
    }
    if compare:
        p = scores(cm_plain.matrix)
        plain_d = {"miou": _pct(p.miou), "pixel_acc": _pct(p.pixel_acc)}
        tta_d = {"miou": metrics["miou"], "pixel_acc": metrics["pixel_acc"]}
        metrics["tta_comparison"] = {
            "plain": plain_d,
            "tta": tta_d,
            "gain_miou": _diff(tta_d["miou"], plain_d["miou"]),
            "gain_pixel_acc": _diff(tta_d["pixel_acc"], plain_d["pixel_acc"]),
        }
    ordered = [w for _, _, w in sorted(worst, key=lambda t: (-t[0], -t[1]))]
    return EvalResult(metrics=metrics, worst=ordered)


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 4)


def _boundary_dict(b) -> dict:
    return {
        "width": b.width,
        "band_pixels": b.band_pixels,
        "band_acc": _pct(b.band_acc),
        "interior_pixels": b.interior_pixels,
        "interior_acc": _pct(b.interior_acc),
    }


def write_worst(result: EvalResult, out_dir, seg: Segmenter, *, ignore_index: int = 255) -> list[dict]:
    """Render the worst images as image | ground truth | prediction | error map PNGs into
    ``out_dir/worst/`` and return their ``metrics["worst"]`` entries (file paths relative to out_dir)."""
    from pathlib import Path

    out_dir = Path(out_dir)
    entries = []
    for rank, w in enumerate(result.worst, start=1):
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in w.name)[:80]
        rel = f"worst/{rank:02d}_{safe}.png"
        fig = comparison_figure(w.image, w.target, w.pred, seg.categories, seg.palette, ignore_index=ignore_index, title=f"{w.name}: mIoU {100 * w.miou:.1f}")
        with atomic_open(out_dir / rel) as f:
            fig.savefig(f, format="png", dpi=80)
        entries.append({"name": w.name, "miou": _pct(w.miou), "file": rel})
    return entries
