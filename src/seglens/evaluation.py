"""Score a Segmenter on a labelled dataset: protocols, test-time augmentation, failure analysis.

:func:`evaluate` is ``seglens eval`` as a library call (``seglens.evaluate``); :func:`score_dataset`
is its scoring loop, for a Segmenter and a dataset already at hand. No printing here: progress
goes to bars from a factory and events to a callback; the CLI renders both. Metric definitions
live in :mod:`seglens.metrics`, dataset reading in :mod:`seglens.datasets`, the result types in
:mod:`seglens.evaltypes` (re-exported here), rendering in :mod:`seglens.report`, evaluate()'s
options in :mod:`seglens._eval_options`, the scoring loop's per-image work and mergeable state in
:mod:`seglens._eval_tally`, and ``engine="ray"`` (the same loop on a Ray cluster) in
:mod:`seglens._eval_ray`.

Protocols:

- ``torchvision`` (default for ``voc`` and ``coco-voc``): what torchvision's reference
  ``SegmentationPresetEval(base_size=520)`` does, image resized to a 520-pixel short side with
  PIL bilinear, target with nearest, metrics at that size, batch 1. With the official weights on
  COCO val2017 this is the protocol of the published mIoU / pixel accuracy.
- ``native`` (default for ``folder`` and ``ade20k``): the Segmenter's own path
  (``weights.transforms()``, logits upsampled to the image's original size), metrics at full
  resolution against the untouched target.

Models without torchvision's preset (Hugging Face checkpoints, ``hf:<repo>``) are always scored
with ``native``, whatever the config asks; ``settings.protocol`` names the protocol used. The
520-pixel torchvision protocol means nothing for them, while ``native`` runs the checkpoint's
own image processor and scores at each image's original size against the untouched annotation,
which is how their published numbers were measured (MMSegmentation, the SegFormer and
Mask2Former code all resize predictions back to the original image). What can still differ is
the resize before the network: Hugging Face's processors resize as their configs say (e.g.
SegFormer to a fixed 512 x 512 square, where MMSegmentation keeps the aspect ratio with a
512-pixel short side), so expect numbers close to, not equal to, the published ones.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._eval_options import _Bar, _bar_factory, _build, _config, _options
from ._eval_tally import Scorer, build_result, default_protocol, resolve_protocol
from ._eval_tally import _torchvision_inputs as _torchvision_inputs  # re-exported (tests use it)
from .datasets import DatasetError, SegmentationDataset, open_dataset, validate_labels
from .evaltypes import PROTOCOLS, TTA, EvalConfig, EvalEvent, EvalResult, LabelProblem, WorstImage
from .inference import Segmenter
from .io import atomic_open
from .models import DEFAULT_MODEL
from .visualize import comparison_figure

__all__ = [
    "PROTOCOLS",
    "TTA",
    "EvalConfig",
    "EvalEvent",
    "EvalResult",
    "LabelProblemsError",
    "WorstImage",
    "default_protocol",
    "evaluate",
    "score_dataset",
    "write_worst",
]


class LabelProblemsError(DatasetError):
    """``strict=True`` and the label check found problems; nothing was scored.

    Attributes:
        problems: all of them, in sample order.
    """

    def __init__(self, problems: Sequence[LabelProblem]) -> None:
        self.problems = tuple(problems)
        first = self.problems[0]
        n = len(self.problems)
        super().__init__(f"{n} label problem{'' if n == 1 else 's'} "
                         f"(first: {first.path}: {first.kind}: {first.detail}); "
                         "fix them or pass strict=False to score anyway")  # fmt: skip

    def __reduce__(self):  # picklable across worker processes
        return (type(self), (self.problems,))


# --- scoring -------------------------------------------------------------------------------


def score_dataset(
    seg: Segmenter,
    dataset: SegmentationDataset,
    config: EvalConfig = EvalConfig(),
    *,
    progress: Callable[[int], None] | None = None,
    label_problems: Sequence[LabelProblem] = (),
) -> EvalResult:
    """Score ``seg`` on every sample of ``dataset`` (no label check: see :func:`evaluate`).

    Args:
        seg: the model to score, not tiled (batch size is ignored: batch 1, as the protocols
            specify).
        dataset: from :func:`seglens.datasets.open_dataset`; when it names as many classes as
            the model has (a classes file, VOC's, ADE20K's), the result uses its names, else the
            model's.
        config: protocol, TTA and analysis settings; a model without torchvision's preset
            (``hf:`` checkpoints) is scored with ``native`` (see the module docstring).
        progress: called with 1 after each image.
        label_problems: what a label check found, kept in the result.

    Returns:
        The :class:`EvalResult`; its worst images hold their pixels, no files yet (:func:`write_worst`).
    """
    protocol = resolve_protocol(seg, dataset, config)
    scorer = Scorer(seg, protocol, config)
    tally = scorer.tally(dataset)
    start = time.perf_counter()
    scorer.run(dataset, range(len(dataset)), tally, progress)
    seconds = time.perf_counter() - start
    return build_result(tally, seg, dataset, protocol, config, seconds=seconds, label_problems=label_problems)


def _check_classes(dataset: SegmentationDataset, n: int) -> None:
    """DatasetError when the dataset's class count (names or mask values) is not the model's ``n``."""
    k = dataset.num_classes
    if k is not None and k != n:
        where = dataset.classes_file or ("mask_values" if dataset.categories is None else dataset.root)
        raise DatasetError(f"{where}: the dataset has {k} classes, the model {n}; "
                           f"pass weights with {k} classes or fix the class list")  # fmt: skip


def write_worst(
    result: EvalResult,
    out_dir: str | os.PathLike,
    seg: Segmenter,
    *,
    ignore_index: int | None = None,
    palette: np.ndarray | None = None,
) -> EvalResult:
    """Render the worst images as image | ground truth | prediction | error map PNGs into
    ``out_dir/worst/`` and return the result with their ``file`` set (relative to out_dir).

    Legends name the classes as the result does (``result.class_names``). Worst images without
    pixels (read back from metrics.json) keep their ``file``. ``ignore_index``: default the
    dataset's (255 when the result does not say). ``palette``: (256, 3) uint8 class colours
    (e.g. the dataset's, from a classes file); default the Segmenter's.
    """
    out_dir = Path(out_dir)
    if ignore_index is None:
        ignore_index = result.settings.dataset.ignore_index if result.settings.dataset.ignore_index is not None else 255
    worst = []
    for rank, w in enumerate(result.worst, start=1):
        if w.image is None or w.target is None or w.pred is None:
            worst.append(w)
            continue
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in w.name)[:80]
        rel = f"worst/{rank:02d}_{safe}.png"
        miou = "n/a" if w.miou is None else f"{w.miou:.1f}"
        fig = comparison_figure(
            w.image,
            w.target,
            w.pred,
            result.class_names,
            seg.palette if palette is None else palette,
            ignore_index=ignore_index,
            title=f"{w.name}: mIoU {miou}",
        )
        with atomic_open(out_dir / rel) as f:
            fig.savefig(f, format="png", dpi=80)
        worst.append(dataclasses.replace(w, file=rel))
    return dataclasses.replace(result, worst=tuple(worst))


# --- the library call ------------------------------------------------------------------------


def evaluate(
    kind: str | SegmentationDataset,
    root: str | os.PathLike | None = None,
    *,
    model: str = DEFAULT_MODEL,
    weights: str | os.PathLike = "official",
    out: str | os.PathLike | None = None,
    segmenter: Segmenter | None = None,
    config: EvalConfig | None = None,
    progress: bool | Callable[..., Any] | None = None,
    on_event: Callable[[EvalEvent], None] | None = None,
    **options: Any,
) -> EvalResult:
    """Score a model on a labelled dataset: what ``seglens eval`` does, as a library call.

    The dataset is opened, its labels checked against the model's classes (problems are
    reported and kept in the result; ``strict`` stops before scoring), every image scored
    (:func:`score_dataset`) and, with ``out``, the report written: ``metrics.json``,
    ``report.md``, ``report.html``, ``plots/`` and ``worst/`` as ``seglens eval --out`` writes
    them.

    Example::

        r = seglens.evaluate("folder", "my_data/", model="lraspp_mobilenet_v3_large", limit=50)
        r.miou, r.pixel_acc, r.per_class["person"].iou

    Args:
        kind: ``"voc"``, ``"coco-voc"``, ``"ade20k"`` or ``"folder"`` (see
            :func:`seglens.datasets.open_dataset`), or a dataset it opened (then no ``root``
            and no dataset options).
        root: the dataset's folder (folder datasets: or ``images=`` and ``masks=``).
        model: a torchvision builder name or ``"hf:<repo-or-folder>"``.
        weights: ``"official"``, ``"random"`` or a state-dict file.
        out: report folder; None: nothing is written.
        segmenter: a ready :class:`~seglens.inference.Segmenter` (e.g. a training loop's) to
            score instead of building one; ``model``, ``weights`` and the model options then
            may not be given.
        config: an :class:`EvalConfig` instead of the options protocol, tta, compare_tta,
            boundary_width and worst.
        progress: None or False: no progress bars; True: tqdm bars on stderr (and the weights
            download's); or a factory called like ``tqdm(total=, unit=, desc=)`` returning an
            object with ``update(n)`` and ``close()``.
        on_event: called with an :class:`EvalEvent`: warnings, notes, the label problems found.
        **options: as ``seglens eval``'s flags.
            Dataset: ``split`` ("val"), ``images`` and ``masks`` (folder: two folders instead
            of ``root``), ``classes`` (folder: a file of class names, one per line, optionally
            with colours; the result and report then use these names), ``ignore_index`` (255),
            ``mask_values`` (folder: the stored value of each class, e.g. (0, 255)), ``limit``
            (None: all images); see :func:`seglens.datasets.open_dataset`.
            Scoring: ``protocol`` (None: torchvision for voc and coco-voc, native for folder
            and ade20k), ``tta`` (None, ``"flip"``, ``"scales=0.75,1.0,1.25[,flip]"`` or a
            :class:`TTA`), ``compare_tta`` (False), ``boundary_width`` (5), ``worst`` (8
            images kept, lowest mIoU first).
            Labels: ``strict`` (False; True raises :class:`LabelProblemsError` before scoring
            when the labels have problems), ``check_labels`` (True; False skips the check).
            Model: ``device`` ("auto"), ``backend`` ("torch"), ``precision`` ("fp32"),
            ``calibration`` (int8: a folder of images or a list of PIL images; default the
            bundled examples), ``seed`` (0, for ``weights="random"``).
            Engine: ``engine`` ("local"; ``"ray"``: the images are scored on a Ray cluster by a
            pool of actors, each holding the model, and the result is the local one's, timings
            aside, for the same arithmetic (device, torch threads: see :mod:`seglens._eval_ray`);
            the dataset, the weights file and a calibration folder must be readable at the same
            paths on every node), ``ray_address`` (None: ``$RAY_ADDRESS``, else a Ray started
            for this process; ``"auto"``, ``"HOST:PORT"``, ``"ray://HOST:PORT"``),
            ``ray_workers`` (``"N"`` or ``"MIN:MAX"`` actors), ``cpus_per_worker``,
            ``gpus_per_worker`` (None: :mod:`seglens._cluster`'s sizing rule).

    Returns:
        The :class:`EvalResult` (what ``metrics.json`` holds, plus the worst images' pixels).

    Raises:
        seglens.datasets.DatasetError: the dataset cannot be opened, has no images, or its
            class count (classes file or mask values) is not the model's;
            :class:`LabelProblemsError` with ``strict``.
        seglens.models.WeightsError, ValueError: the model cannot be built, or a bad option.
        TypeError: an unknown option.
        seglens._cluster.ClusterError: ``engine="ray"`` without Ray installed, no cluster at
            ``ray_address``, a pool the cluster cannot hold, or workers that died more often
            than retried.
    """
    opts = _options(options, model=model, weights=weights, segmenter=segmenter, config=config, root=root,
                    dataset_given=isinstance(kind, SegmentationDataset))  # fmt: skip
    config = config or _config(opts)
    bars = _bar_factory(progress)
    cluster = None
    if opts["engine"] == "ray":  # connect first: no label check of a large dataset before a missing Ray
        from ._eval_ray import RayEval

        cluster = RayEval(model, weights, opts, address=opts["ray_address"], workers=opts["ray_workers"],
                          cpus_per_worker=opts["cpus_per_worker"], gpus_per_worker=opts["gpus_per_worker"])  # fmt: skip

    if isinstance(kind, SegmentationDataset):
        dataset = kind
    else:
        if root is None and opts["images"] is None and opts["masks"] is None:
            raise TypeError("evaluate() needs root= (the dataset's folder), or images= and masks= for folder")
        dataset = open_dataset(
            kind,
            root,
            split=opts["split"],
            images=opts["images"],
            masks=opts["masks"],
            classes_file=opts["classes"],
            ignore_index=opts["ignore_index"],
            mask_values=opts["mask_values"],
            limit=opts["limit"],
        )
    if len(dataset) == 0:
        raise DatasetError(f"{dataset.root}: the dataset has no images with masks")
    seg = segmenter if segmenter is not None else _build(model, weights, opts, download_progress=bars is not None)
    if seg.tile is not None:
        raise ValueError("evaluation scores whole images: use a Segmenter without tile=")
    n = len(seg.categories)
    _check_classes(dataset, n)
    emit = on_event or (lambda event: None)
    if not seg.loaded.meaningful:
        emit(
            EvalEvent("warning", f"weights are a {seg.loaded.weights_tag}: the scores measure nothing but the pipeline")
        )

    problems: list[LabelProblem] = []
    if opts["check_labels"] or opts["strict"]:
        with _Bar(bars, len(dataset), "check labels") as bar:
            problems = validate_labels(dataset, n, progress=bar.update)
    if problems:
        emit(
            EvalEvent(
                "label_problems", f"{len(problems)} label problem{'' if len(problems) == 1 else 's'}", tuple(problems)
            )
        )
        if opts["strict"]:
            raise LabelProblemsError(problems)
    if (config.protocol or default_protocol(dataset.kind)) == "torchvision" and seg.reference_short_side is None:
        emit(EvalEvent("note", "models without torchvision's preset (Hugging Face checkpoints) are scored with the "
                               "native protocol (their own image processor; the torchvision protocol is "
                               "torchvision's 520-pixel preset)"))  # fmt: skip
    if cluster is not None:
        emit(EvalEvent("note", f"Ray: {cluster.pool.describe()}"))
    with _Bar(bars, len(dataset), "eval") as bar:
        score = score_dataset if cluster is None else cluster.score
        result = score(seg, dataset, config, progress=bar.update, label_problems=problems)
    if out is not None:
        from .report import write_report

        result = write_worst(result, out, seg, palette=dataset.palette)
        write_report(result, out)
        if result.image_counts is not None:  # what seglens compare reads from an eval folder
            from ._compare_stats import COUNTS_FILE, write_counts

            write_counts(Path(out) / COUNTS_FILE, result.image_counts)
    return result
