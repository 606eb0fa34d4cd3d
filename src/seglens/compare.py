"""Compare segmentation configurations on the same images in one run: ``seglens compare``.

A configuration is a model, its weights and how it runs (backend, precision, TTA, refinement,
scale); an entry may instead be a ``seglens eval`` output folder holding ``per_image_counts.npz``.
:func:`compare` opens the dataset once and runs every configuration on each image in turn (the
order rotating from image to image), so that timings are measured under the same conditions, and
scores each one exactly as :func:`seglens.evaluate` does (same inputs, same labels, the same
confusion-matrix arithmetic): a configuration's mIoU, pixel accuracy and per-class IoU equal
``seglens eval``'s on the same dataset. Whether a difference is real is answered by a paired
bootstrap over images (:mod:`seglens._compare_stats`); the images where the configurations
disagree most are kept for the report (:mod:`seglens._compare_report`).

Entries are spelled ``key=value`` pairs separated by commas, e.g.
``weights=tuned.pth,backend=openvino,precision=int8,tta=scales:0.75:1:1.25+flip,refine=guided+small``,
or an eval folder's path (:mod:`seglens._compare_types` has the rules, and the result types).
"""

from __future__ import annotations

import dataclasses
import heapq
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._compare_stats import (
    COUNTS_FILE,
    ImageCounts,
    count_scores,
    image_row,
    paired_bootstrap,
    read_counts,
    write_counts,
)
from ._compare_types import (
    KEYS,
    CompareConfig,
    CompareResult,
    ConfigDelta,
    ConfigResult,
    Delta,
    Disagreement,
    EvalFolder,
    _names,
    parse_entry,
)
from ._eval_options import _Bar, _bar_factory
from ._eval_tally import _diff, _pct, protocol_inputs, resolve_protocol
from .datasets import DatasetError, SegmentationDataset, open_dataset
from .evaltypes import TTA, DatasetInfo, EvalConfig, EvalEvent, EvalResult, SkippedImage
from .metrics import confusion_matrix, scores
from .visualize import display_name

__all__ = [
    "KEYS",
    "CompareConfig",
    "CompareResult",
    "ConfigDelta",
    "ConfigResult",
    "Delta",
    "Disagreement",
    "EvalFolder",
    "ImageCounts",
    "compare",
    "paired_bootstrap",
    "parse_entry",
    "read_counts",
    "write_counts",
]

_DATA_OPTIONS = {"split": "val", "images": None, "masks": None, "classes": None, "ignore_index": 255,
                 "mask_values": None, "limit": None}  # fmt: skip


# --- running configurations -----------------------------------------------------------------


class _Run:
    """One configuration at work: its Segmenter and what it has measured so far."""

    def __init__(self, name: str, config: CompareConfig, seg, protocol: str | None = None) -> None:
        self.name, self.config, self.seg, self.protocol = name, config, seg, protocol
        self.tta = config.tta or TTA()
        n = len(seg.categories)
        self.total = np.zeros((n, n), np.int64)
        self.rows: list[np.ndarray] = []  # per image (3, C): tp, gt, pred
        self.model_s: list[float] = []
        self.total_s: list[float] = []
        self._cuda = seg.device.type == "cuda"

    def _sync(self) -> None:
        if self._cuda:
            import torch

            torch.cuda.synchronize(self.seg.device)

    def predict(self, sample) -> tuple[np.ndarray, np.ndarray, Any, float, float]:
        """(pred, target, image as scored, model seconds, end-to-end seconds): Scorer.score's steps."""
        seg = self.seg
        start = time.perf_counter()
        x, target, shown = protocol_inputs(seg, self.protocol, sample)
        self._sync()
        t0 = time.perf_counter()
        logits = seg.logits(x[None], scales=self.tta.scales, flip=self.tta.flip).logits
        self._sync()
        t1 = time.perf_counter()
        pred = seg.labels_from_logits(logits[0], target.shape, shown)
        return pred, target, shown, t1 - t0, time.perf_counter() - start

    def add(self, target: np.ndarray, pred: np.ndarray, model_s: float, total_s: float) -> None:
        m = confusion_matrix(target, pred, len(self.total))
        self.total += m
        self.rows.append(image_row(m))
        self.model_s.append(model_s)
        self.total_s.append(total_s)


def _segmenter(c: CompareConfig, device: str, download_progress: bool):
    from .inference import Segmenter
    from .io.calibration import calibration_images

    calibration = calibration_images(c.calibration) if c.precision == "int8" else None
    return Segmenter(c.model, weights=c.weights, device=c.device or device, progress=download_progress,
                     backend=c.backend, precision=c.precision, calibration=calibration, scale=c.scale,
                     refine=c.refine or ())  # fmt: skip


def _protocols(runs: list[_Run], dataset: SegmentationDataset, protocol: str | None, emit) -> str:
    """The one protocol every run configuration is scored with (their pixels must be the same)."""
    resolved = {r.name: resolve_protocol(r.seg, dataset, EvalConfig(protocol=protocol, tta=r.config.tta)) for r in runs}
    chosen = next(iter(resolved.values()))
    if len(set(resolved.values())) > 1:
        chosen = "native"
        emit(EvalEvent("note", "the configurations resolve to different protocols (" + ", ".join(
            f"{k}: {v}" for k, v in resolved.items()) + "): all are scored with native"))  # fmt: skip
    if chosen == "torchvision" and len({r.seg.reference_short_side for r in runs}) > 1:
        raise ValueError("the configurations' weights resize to different short sides under the torchvision "
                         "protocol, so their pixels differ: use protocol='native'")  # fmt: skip
    for r in runs:
        r.protocol = chosen
    return chosen


class _Disagreements:
    """The ``k`` images where the run configurations differ most from the first, with pixels."""

    def __init__(self, k: int, num_classes: int) -> None:
        self.k, self.n, self.heap = k, num_classes, []

    def add(self, i: int, name: str, shown, target: np.ndarray, preds: dict[str, np.ndarray]) -> None:
        valid = target < self.n
        count = int(valid.sum())
        if self.k <= 0 or len(preds) < 2 or count == 0:
            return
        first, *others = preds
        differ = {o: (preds[o] != preds[first]) & valid for o in others}
        fraction = float(np.logical_or.reduce(list(differ.values())).sum() / count)
        key = (fraction, -i)
        if fraction == 0 or (len(self.heap) == self.k and key <= self.heap[0][:2]):
            return
        item = Disagreement(i, name, round(fraction, 6), {o: round(float(d.sum() / count), 6) for o, d in
                            differ.items()}, np.asarray(shown.convert("RGB")), target, dict(preds))  # fmt: skip
        (heapq.heappush if len(self.heap) < self.k else heapq.heapreplace)(self.heap, (*key, item))

    def worst_first(self) -> tuple[Disagreement, ...]:
        return tuple(d for *_, d in sorted(self.heap, key=lambda t: (-t[0], -t[1])))


def _score(dataset, runs: list[_Run], disagree: int, bar) -> tuple[list[str], list[SkippedImage], _Disagreements]:
    """Every run configuration on each image, interleaved (starting one further each image)."""
    n = len(runs[0].total)
    names, skipped, panels = [], [], _Disagreements(disagree, n)
    for i in range(len(dataset)):
        try:
            sample = dataset[i]
        except DatasetError as e:
            skipped.append(SkippedImage(i, str(e)))
            bar.update(1)
            continue
        if not names:  # warm-up, untimed: first-call costs (allocations, kernel choice) out of the timings
            for r in runs:
                r.predict(sample)
        got = {}
        for r in runs[i % len(runs) :] + runs[: i % len(runs)]:
            got[r.name] = r.predict(sample)
        target = got[runs[0].name][1]
        for r in runs:
            pred, t, _, model_s, total_s = got[r.name]
            if t.shape != target.shape or not np.array_equal(t, target):
                raise ValueError(f"{r.name} and {runs[0].name} score different ground-truth pixels")
            r.add(target, pred, model_s, total_s)
        names.append(sample.name)
        panels.add(i, sample.name, got[runs[0].name][2], target, {r.name: got[r.name][0] for r in runs})
        bar.update(1)
    return names, skipped, panels


# --- eval folders ----------------------------------------------------------------------------


def _folder(path: Path) -> tuple[EvalResult, ImageCounts]:
    """An eval folder's result and per-image counts, checked against each other."""
    try:
        result = EvalResult.from_dict(json.loads((path / "metrics.json").read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a seglens eval folder (metrics.json: {e})") from None
    if not (path / COUNTS_FILE).is_file():
        raise ValueError(f"{path}: no {COUNTS_FILE}, which compare needs for the bootstrap; run seglens eval "
                         "again with a seglens that writes it")  # fmt: skip
    counts = read_counts(path / COUNTS_FILE)
    miou, acc, _ = count_scores(*counts.totals())
    if (_pct(miou), _pct(acc)) != (result.miou, result.pixel_acc) or counts.num_classes != len(result.class_names):
        raise ValueError(f"{path}: {COUNTS_FILE} does not match metrics.json (written by another run?)")
    return result, counts


def _folder_result(name: str, path: Path, r: EvalResult) -> ConfigResult:
    s = r.settings
    iou = [None] * len(r.class_names)
    for c in r.per_class.values():
        iou[c.index] = c.iou
    return ConfigResult(name, "folder", str(path), s.model, s.weights, s.backend, s.precision, s.tta,
                        s.refine, None, r.miou, r.pixel_acc, tuple(iou), s.weights_meaningful)  # fmt: skip


def _run_result(r: _Run) -> ConfigResult:
    s, c, seg = scores(r.total), r.config, r.seg
    ms = np.array(r.model_s) * 1000
    e2e = np.array(r.total_s) * 1000
    tta = str(c.tta) if c.tta else None
    refine = ",".join(map(str, seg.refine)) or None
    timing = (None,) * 4
    if len(ms) and e2e.sum() > 0:
        speed = round(float(len(e2e) / (e2e.sum() / 1000)), 4)
        timing = (speed, round(float(np.median(ms)), 3), round(float(ms.mean()), 3), round(float(np.median(e2e)), 3))
    return ConfigResult(r.name, "run", c.spec, seg.loaded.name, seg.loaded.weights, seg.backend, seg.precision, tta,
                        refine, c.scale, _pct(s.miou), _pct(s.pixel_acc), tuple(_pct(x) for x in s.iou),
                        seg.loaded.meaningful, *timing)  # fmt: skip


# --- the library call ------------------------------------------------------------------------


def compare(
    kind: str | SegmentationDataset | None = None,
    root: str | os.PathLike | None = None,
    configs: Sequence[str | os.PathLike | Mapping[str, Any] | CompareConfig | EvalFolder] = (),
    *,
    out: str | os.PathLike | None = None,
    progress: bool | Callable[..., Any] | None = None,
    on_event: Callable[[EvalEvent], None] | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
    disagree: int = 6,
    protocol: str | None = None,
    device: str = "auto",
    **dataset_options: Any,
) -> CompareResult:
    """Score two or more configurations on the same images in one run, with the differences'
    bootstrap intervals: what ``seglens compare`` does, as a library call.

    Example::

        r = seglens.compare.compare("folder", "data/", ["weights=a.pth", "weights=b.pth,tta=flip"])
        r.delta("B").miou.value, r.delta("B").miou.ci, r.delta("B").miou.excludes_zero

    Args:
        kind, root: the dataset, as :func:`seglens.evaluate` takes them (or a dataset object);
            may be left out when every entry is an eval folder.
        configs: entries, the first the baseline every delta is taken against: ``"key=value,..."``
            strings (see the module docstring), mappings of the keys, :class:`CompareConfig`,
            or eval folders (a path, :class:`EvalFolder`) holding ``per_image_counts.npz``.
        out: report folder (``compare.json``, ``compare.md``, ``compare.html``, ``plots/``,
            ``disagree/``); None: nothing is written.
        progress: as :func:`seglens.evaluate`'s.
        on_event: called with an :class:`~seglens.evaltypes.EvalEvent` (warnings, notes).
        bootstrap: resamples of the paired bootstrap (0: no intervals).
        seed: the bootstrap's seed.
        disagree: images kept where the run configurations disagree most.
        protocol: as evaluate's (None: the dataset kind's default); configurations that resolve
            to different protocols are all scored with ``native``.
        device: where configurations without ``device=`` run ("auto").
        **dataset_options: evaluate's dataset options: split, images, masks, classes,
            ignore_index, mask_values, limit.

    Raises:
        ValueError: a bad entry (its key named), fewer than two entries, entries that did not
            score the same pixels; DatasetError, WeightsError: as evaluate's.
    """
    unknown = sorted(set(dataset_options) - set(_DATA_OPTIONS))
    if unknown:
        raise TypeError(
            f"compare() got unknown options {', '.join(unknown)}; dataset options: {', '.join(_DATA_OPTIONS)}"
        )
    if bootstrap < 0:
        raise ValueError(f"bootstrap must be >= 0 resamples, got {bootstrap}")
    entries = [parse_entry(c) for c in configs]
    if len(entries) < 2:
        raise ValueError("compare needs two or more entries (configurations or eval folders)")
    names = _names(entries)
    emit = on_event or (lambda event: None)
    start = time.perf_counter()
    folders = {n: (e.path, *_folder(Path(e.path))) for n, e in zip(names, entries) if isinstance(e, EvalFolder)}
    bars = _bar_factory(progress)
    runs: list[_Run] = []
    skipped: list[SkippedImage] = []
    panels, info, chosen, palette = None, None, None, None
    if len(folders) < len(entries):
        if isinstance(kind, SegmentationDataset) and (dataset_options or root is not None):
            raise ValueError("a dataset object is used as it is: give no root= and no dataset options with it")
        dataset = kind if isinstance(kind, SegmentationDataset) else _open(kind, root, dataset_options)
        for n, e in zip(names, entries):
            if isinstance(e, CompareConfig):
                runs.append(_Run(n, e, _segmenter(e, device, download_progress=bars is not None)))
                if not runs[-1].seg.loaded.meaningful:
                    emit(EvalEvent("warning", f"{n}: weights are a {runs[-1].seg.loaded.weights_tag}"))
        _check_classes(dataset, runs)
        chosen = _protocols(runs, dataset, protocol, emit)
        with _Bar(bars, len(dataset), "compare") as bar:
            image_names, skipped, panels = _score(dataset, runs, disagree, bar)
        if not image_names:
            raise DatasetError(f"{dataset.root}: no image could be read")
        info = DatasetInfo(dataset.kind, str(dataset.root), dataset.split, len(image_names), dataset.ignore_index)
        classes = _class_names(dataset.categories, runs[0].seg.categories)
        counts = {r.name: ImageCounts.from_rows(image_names, r.rows, classes) for r in runs}
        palette = dataset.palette if dataset.palette is not None else runs[0].seg.palette
    else:
        first = next(iter(folders.values()))[1]
        info, chosen, classes, counts = first.settings.dataset, first.settings.protocol, first.class_names, {}
    for n, (path, r, c) in folders.items():
        if c.num_classes != len(classes):
            raise ValueError(f"{n} ({path}) has {c.num_classes} classes, {names[0]} {len(classes)}")
        counts[n] = ImageCounts(c.names, c.tp, c.gt, c.pred, tuple(classes))
    counts = {n: counts[n] for n in names}
    _check_counts(counts, folders, chosen)
    results = {r.name: _run_result(r) for r in runs} | {n: _folder_result(n, p, r) for n, (p, r, _) in folders.items()}
    configs_out = tuple(results[n] for n in names)
    intervals = paired_bootstrap(list(counts.values()), resamples=bootstrap, seed=seed) if bootstrap else []
    deltas = tuple(
        _deltas(configs_out[0], c, intervals[k] if intervals else None) for k, c in enumerate(configs_out[1:])
    )
    result = CompareResult(info, chosen, tuple(classes), configs_out, deltas, panels.worst_first() if panels else (),
                           tuple(skipped), bootstrap, seed, 0.95, _notes(runs, folders, len(names)),
                           round(time.perf_counter() - start, 3), counts)  # fmt: skip
    if out is not None:
        from ._compare_report import write_panels, write_report

        files = write_panels(Path(out), result.disagreements, classes, palette, ignore_index=info.ignore_index or 255)
        result = dataclasses.replace(result, disagreements=tuple(dataclasses.replace(d, file=f) for d, f in
                                                                 zip(result.disagreements, files)))  # fmt: skip
        write_report(result.to_dict(), Path(out))
    return result


def _open(kind, root, options: dict) -> SegmentationDataset:
    opts = {**_DATA_OPTIONS, **options}
    if kind is None:
        raise TypeError("compare() needs the dataset (kind, root) to run configurations; only eval folders go without")
    if root is None and opts["images"] is None and opts["masks"] is None:
        raise TypeError("compare() needs root= (the dataset's folder), or images= and masks= for folder")
    dataset = open_dataset(kind, root, split=opts["split"], images=opts["images"], masks=opts["masks"],
                           classes_file=opts["classes"], ignore_index=opts["ignore_index"],
                           mask_values=opts["mask_values"], limit=opts["limit"])  # fmt: skip
    if len(dataset) == 0:
        raise DatasetError(f"{dataset.root}: the dataset has no images with masks")
    return dataset


def _check_classes(dataset: SegmentationDataset, runs: list[_Run]) -> None:
    sizes = {r.name: len(r.seg.categories) for r in runs}
    if len(set(sizes.values())) > 1:
        raise ValueError("the configurations' models have different class counts: " + ", ".join(
            f"{k}: {v}" for k, v in sizes.items()))  # fmt: skip
    n, k = next(iter(sizes.values())), dataset.num_classes
    if k is not None and k != n:
        where = dataset.classes_file or ("mask_values" if dataset.categories is None else dataset.root)
        raise DatasetError(f"{where}: the dataset has {k} classes, the models {n}")


def _class_names(dataset_categories, model_categories) -> tuple[str, ...]:
    """As :func:`seglens._eval_tally.build_result` names them: the dataset's when it has the model's count."""
    named = dataset_categories is not None and len(dataset_categories) == len(model_categories)
    return tuple(display_name(c) for c in (dataset_categories if named else model_categories))


def _check_counts(counts: dict[str, ImageCounts], folders: dict, protocol: str | None) -> None:
    """Every entry scored the same images and the same ground-truth pixels (folders included)."""
    (a, first), *rest = counts.items()
    for n, c in rest:
        if c.names != first.names:
            raise ValueError(f"{n} and {a} scored different images ({len(c.names)} and {len(first.names)}; "
                             "same dataset, split and limit?)")  # fmt: skip
        if c.gt.shape != first.gt.shape or not np.array_equal(c.gt, first.gt):
            raise ValueError(f"{n} and {a} scored different ground-truth pixels (different protocols or datasets?)")
    for n, (path, r, _) in folders.items():
        if protocol is not None and r.settings.protocol != protocol:
            raise ValueError(f"{n} ({path}) was scored with the {r.settings.protocol} protocol, the others {protocol}")


def _deltas(base: ConfigResult, c: ConfigResult, boot) -> ConfigDelta:
    def ci(pair):
        return None if pair is None else (float(pair[0]), float(pair[1]))

    iou = []
    for k, (x, y) in enumerate(zip(c.iou, base.iou)):
        row = None if boot is None or np.isnan(boot.iou[k]).any() else tuple(boot.iou[k])
        iou.append(Delta(_diff(x, y), ci(row) if x is not None and y is not None else None))
    miou = Delta(_diff(c.miou, base.miou), ci(boot.miou) if boot else None)
    return ConfigDelta(c.name, base.name, miou, Delta(_diff(c.pixel_acc, base.pixel_acc),
                       ci(boot.pixel_acc) if boot else None), tuple(iou))  # fmt: skip


def _notes(runs: list[_Run], folders: dict, entries: int) -> tuple[str, ...]:
    notes = []
    if runs:
        notes.append(
            "Timings: every configuration ran on each image in turn (the order rotating from image to "
            "image) after one untimed warm-up image; end to end is network input, model, labels and "
            "refinement (the dataset read, shared, is left out); model is Segmenter.logits (TTA included)."
        )
    if folders:
        notes.append(f"{', '.join(folders)}: read from seglens eval folders (their per_image_counts.npz): scores and "
                     "intervals only, no timing and no disagreement panels.")  # fmt: skip
    if len(runs) < 2 and entries > 1:
        notes.append("Disagreement panels need two or more configurations run here.")
    return tuple(notes)
