"""``segment()``: one run over many inputs, photos and videos alike."""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from .._version import __version__
from ..io import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    ImageLoadError,
    InputImage,
    find_images,
    load_image,
)
from ..io.calibration import calibration_images
from ..models import DEFAULT_MODEL
from ..video import MASK_FORMATS, VIDEO_SUFFIXES, VideoError, is_video
from ._files import (
    DEFAULT_OUTPUTS,
    JOURNAL,
    OUTPUT_KINDS,
    SUFFIX,
    SUMMARY_CSV,
    SUMMARY_JSON,
    VIDEO_KINDS,
    Journal,
    RunSummary,
    image_entry,
    previous_entries,
    remove_stale_temporaries,
    reserve_video_names,
    reuse,
    unique_names,
    video_output_names,
    write_outputs,
    write_summary,
)  # fmt: skip
from ._warnings import capture, routing

__all__ = ["RunError", "RunEvent", "RunInterrupted", "segment"]

StrPath = Union[str, "os.PathLike[str]"]

# Options of segment() beyond its named arguments, with their defaults: those of `seglens segment`.
_MODEL_OPTIONS = {
    "device": "auto", "batch_size": 1, "backend": "torch", "precision": "fp32", "calibration": None,
    "compile": False, "seed": 0, "scale": None, "tile": None, "overlap": 0.25,
}  # fmt: skip
_RUN_OPTIONS = {
    "alpha": 0.5, "low_confidence": 0.5, "max_pixels": DEFAULT_MAX_PIXELS, "url_timeout": 30.0, "url_max_mb": 50.0,
    "vid_stride": 1, "mask_format": "png", "workers": 2, "writers": 1, "strict": False,
}  # fmt: skip


class RunError(ValueError):
    """A run that cannot start: no inputs found, or no output folder. Nothing was written.

    Attributes:
        problems: ``(input, reason)`` for the inputs that gave nothing (when none was found).
    """

    def __init__(self, message: str, problems: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM turned into it) during a run; ``summary`` is what was done and written
    to ``summary.json``. A subclass of KeyboardInterrupt: a script stops as it would anyway."""

    def __init__(self, summary: RunSummary) -> None:
        super().__init__("interrupted")
        self.summary = summary


@dataclass(frozen=True)
class RunEvent:
    """What a run tells as it goes (``on_event``); nothing is printed by the library.

    kind:
        ``"failed"``: ``input`` failed, ``message`` says why (also in the summary's ``failed``);
        ``"item_warning"``: reading ``input`` raised a Python warning, ``message`` is
        ``"Category: text"`` (also in its entry's ``warnings``);
        ``"warning"`` / ``"note"``: about the run as a whole (``input`` None), e.g. weights
        that are a random init;
        ``"done"``: ``input`` was segmented; ``"skipped"``: its outputs were there (resume).
    """

    kind: str
    input: str | None = None
    message: str = ""


def segment(
    inputs: StrPath | InputImage | Sequence[StrPath | InputImage],
    out: StrPath,
    *,
    model: str = DEFAULT_MODEL,
    weights: StrPath = "official",
    outputs: Sequence[str] | None = None,
    skip_existing: bool = False,
    progress: bool | Callable[..., Any] | None = None,
    segmenter=None,
    on_event: Callable[[RunEvent], None] | None = None,
    **options: Any,
) -> RunSummary:
    """Segment images and videos into ``out``: masks, overlays, figures, ``summary.json``.

    What ``seglens segment`` does, as a library call: inputs are found (files, folders searched
    recursively, glob patterns, http(s) URLs, videos by suffix), each gets a unique output name,
    images go through :meth:`Segmenter.stream` in batches (read ahead in ``workers`` threads),
    their outputs are encoded in ``writers`` threads and written atomically, then each video
    through :func:`seglens.video.segment_video`. An input that cannot be read or segmented is
    recorded in ``failures`` and the others go on. ``summary.json`` and ``summary.csv`` are
    written at the end, also when the run is interrupted or raises.

    Resume: every finished input is appended to a journal (``out/.seglens-journal.jsonl``, removed
    once the summary is written), so a run killed at any moment (even ``kill -9``) and run again
    with ``skip_existing=True`` ends with the files and summary of a clean run: inputs whose
    outputs all exist and that an earlier run's summary or journal lists (with the same model
    settings) are skipped and keep their entries; any other input is done again. Temporary files
    the killed run left for this run's outputs are removed when a run starts.

    Warnings: Python warnings raised while an image is read and decoded (e.g. Pillow's "Tag data
    larger than file") are not shown; they go into that input's entry (``"warnings"``) and an
    ``"item_warning"`` event (per reading thread, see :mod:`seglens.pipeline._warnings`).

    Args:
        inputs: a path, folder, glob pattern or URL, or a list of them; ``InputImage`` items are
            taken as they are (their ``name`` is their output stem), before the others.
        out: output folder (created once the model is loaded).
        model: a torchvision builder name or ``"hf:<repo-or-folder>"``.
        weights: ``"official"``, ``"random"`` or a state-dict file.
        outputs: any of ``"mask"``, ``"overlay"``, ``"figure"``, ``"confidence"``; None: mask,
            overlay and figure for images, overlay for videos. Videos write the overlay and
            mask of these (``"note"`` event for the rest).
        skip_existing: skip inputs an earlier run into ``out`` finished (see Resume).
        progress: None or False: no progress bars; True: tqdm bars on stderr; or a factory
            called like ``tqdm(total=, initial=, unit=, desc=, [leave=, position=])`` returning
            an object with ``update(n)`` and ``close()``, e.g.
            ``functools.partial(tqdm, file=sys.stderr)``. Also shows the weights download.
        segmenter: a ready :class:`~seglens.inference.Segmenter` to use instead of building one
            (``model``, ``weights`` and the model options then do not apply).
        on_event: called with a :class:`RunEvent` for failures, warnings and finished inputs.
        **options: as ``seglens segment``'s flags: ``device`` ("auto"), ``batch_size`` (1),
            ``backend`` ("torch"), ``precision`` ("fp32"), ``calibration`` (int8: a folder of
            images or a list of PIL images; default the bundled examples), ``compile`` (False),
            ``seed`` (0), ``scale`` (None: the weights' resize), ``tile`` (None), ``overlap``
            (0.25), ``alpha`` (0.5), ``low_confidence`` (0.5), ``max_pixels`` (100 000 000; a given
            segmenter's own),
            ``url_timeout`` (30 s), ``url_max_mb`` (50), ``vid_stride`` (1), ``mask_format``
            ("png" or "video"), ``workers`` (2 reading threads; 0: none), ``writers`` (1
            encoding thread; 0: none), ``strict`` (False; True raises errors other than
            unreadable or refused inputs instead of recording them).

    Returns:
        The :class:`RunSummary` (what ``summary.json`` holds).

    Raises:
        RunError: no inputs found, or the output folder cannot be made (nothing written).
        RunInterrupted: Ctrl-C; the summary of what was done is written first.
        seglens.models.WeightsError, ValueError: the model cannot be built, or a bad option.
    """
    opts = _options(options, segmenter)
    image_outputs, video_outputs = _outputs(outputs)
    emit = on_event or (lambda event: None)
    out = Path(out)
    images, videos, problems = _discover(inputs, out)
    if not images and not videos:
        detail = "; ".join(f"{source}: {reason}" for source, reason in problems)
        raise RunError(
            f"no images found ({detail}); give image or video files, folders, glob patterns or http(s) URLs", problems
        )
    for source, reason in problems:
        emit(RunEvent("failed", source, reason))
    if videos and outputs is not None and set(image_outputs) - set(VIDEO_KINDS) and video_outputs:
        emit(
            RunEvent(
                "note",
                None,
                f"videos get {','.join(video_outputs)} only "
                f"({','.join(sorted(set(image_outputs) - set(VIDEO_KINDS)))}: images only)",
            )
        )
    bars = _Bars(progress)
    seg = segmenter if segmenter is not None else _build(model, weights, opts, "confidence" in image_outputs, bars)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunError(f"cannot create output folder {out} ({e.strerror or e}); choose another out=") from None
    if not seg.loaded.meaningful:
        emit(
            RunEvent(
                "warning",
                None,
                f"weights are a {seg.loaded.weights_tag}: the masks show the pipeline works, not what is in the images",
            )
        )
    settings = {
        "seglens_version": __version__, "model": seg.loaded.name,
        "weights": seg.loaded.weights, "weights_tag": seg.loaded.weights_tag, "weights_sha256": seg.loaded.sha256,
        "device": str(seg.device),
        "batch_size": seg.batch_size, "backend": seg.backend, "precision": seg.precision, "scale": seg.scale,
        "tile": seg.tile, "overlap": seg.overlap if seg.tile else None,
    }  # fmt: skip
    run = _Run(seg, out, settings, opts, image_outputs=image_outputs, video_outputs=video_outputs, bars=bars, emit=emit)
    return run.execute(images, videos, problems, skip_existing=skip_existing)


def _options(options: dict, segmenter) -> dict:
    unknown = sorted(set(options) - set(_MODEL_OPTIONS) - set(_RUN_OPTIONS))
    if unknown:
        raise TypeError(
            f"segment() got unknown options {', '.join(unknown)}; "
            f"options: {', '.join([*_MODEL_OPTIONS, *_RUN_OPTIONS])}"
        )
    if segmenter is not None and set(options) & set(_MODEL_OPTIONS):
        raise ValueError(
            f"{', '.join(f'{k}=' for k in sorted(set(options) & set(_MODEL_OPTIONS)))}: "
            "a given segmenter= is used as it is; build it with these instead"
        )
    opts = {**_MODEL_OPTIONS, **_RUN_OPTIONS, **options}
    if segmenter is not None and "max_pixels" not in options:
        opts["max_pixels"] = segmenter.max_pixels
    for key in ("alpha", "low_confidence"):
        if not 0.0 <= opts[key] <= 1.0:
            raise ValueError(f"{key}= must be between 0 and 1, got {opts[key]!r}")
    for key in ("url_timeout", "url_max_mb"):
        if not opts[key] > 0:
            raise ValueError(f"{key}= must be a positive number, got {opts[key]!r}")
    for key, low in (("vid_stride", 1), ("workers", 0), ("writers", 0)):
        if isinstance(opts[key], bool) or not isinstance(opts[key], int) or opts[key] < low:
            raise ValueError(f"{key}= must be an integer >= {low}, got {opts[key]!r}")
    if opts["mask_format"] not in MASK_FORMATS:
        raise ValueError(f"mask_format= must be one of {', '.join(MASK_FORMATS)}, got {opts['mask_format']!r}")
    return opts


def _outputs(outputs: Sequence[str] | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(image outputs, video outputs) for ``outputs`` (None: the defaults)."""
    if outputs is None:
        return DEFAULT_OUTPUTS, ("overlay",)
    kinds = tuple(dict.fromkeys([outputs] if isinstance(outputs, str) else outputs))
    bad = [k for k in kinds if k not in OUTPUT_KINDS]
    if bad or not kinds:
        raise ValueError(
            f"unknown output {','.join(map(str, bad)) or repr(outputs)}; choose from {','.join(OUTPUT_KINDS)}"
        )
    return kinds, tuple(k for k in kinds if k in VIDEO_KINDS)


def _discover(inputs, out: Path) -> tuple[list[InputImage], list[InputImage], list[tuple[str, str]]]:
    if isinstance(inputs, (str, os.PathLike, InputImage)):
        inputs = [inputs]
    given = [x for x in inputs if isinstance(x, InputImage)]
    rest = [x for x in inputs if not isinstance(x, InputImage)]
    found, problems = find_images(rest, suffixes=IMAGE_EXTENSIONS | VIDEO_SUFFIXES, exclude=[out]) if rest else ([], [])
    items = given + found
    videos = [f for f in items if not f.is_url and is_video(f.path)]
    images = [f for f in items if f.is_url or not is_video(f.path)]
    return images, videos, problems


def _build(model: str, weights: StrPath, opts: dict, confidence: bool, bars: _Bars):
    from ..inference import Segmenter

    calibration = calibration_images(opts["calibration"]) if opts["precision"] == "int8" else None
    return Segmenter(
        model, weights=weights, device=opts["device"], progress=bars.factory is not None, seed=opts["seed"],
        backend=opts["backend"], precision=opts["precision"], calibration=calibration, batch_size=opts["batch_size"],
        max_pixels=opts["max_pixels"], compile=opts["compile"], scale=opts["scale"], tile=opts["tile"],
        overlap=opts["overlap"], confidence=confidence, window_progress=bars.windows,
    )  # fmt: skip


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


class _Bars:
    """Progress bars from the ``progress`` factory (none without one)."""

    def __init__(self, progress) -> None:
        if progress is True:
            from tqdm import tqdm

            progress = functools.partial(tqdm, file=sys.stderr, dynamic_ncols=True)
        self.factory = progress or None
        self._windows = None

    def open(self, **kwargs):
        return self.factory(**kwargs) if self.factory is not None else _NoBar()

    def windows(self, done: int, total: int) -> None:
        """Segmenter's window_progress: a second bar while a huge image is tiled."""
        if self.factory is None or total < 8:
            return
        if self._windows is None:
            self._windows = self.factory(total=total, unit="window", desc="windows", leave=False, position=1)
            self._seen = 0
        self._windows.update(done - self._seen)
        self._seen = done
        if done >= total:
            self._windows.close()
            self._windows = None


@dataclass
class _Item:
    index: int
    image: InputImage
    paths: dict[str, Path]
    warnings: list[str] = field(default_factory=list)  # filled by the reading thread (capture)


def _reason(e: BaseException) -> str:
    return getattr(e, "reason", None) or str(e) or type(e).__name__


class _Run:
    """One run's state; everything but the reading and encoding happens in the calling thread."""

    def __init__(
        self, seg, out: Path, settings: dict, opts: dict, *, image_outputs, video_outputs, bars: _Bars, emit
    ) -> None:
        self.seg, self.out, self.settings, self.opts = seg, out, settings, opts
        self.image_outputs, self.video_outputs = image_outputs, video_outputs
        self.bars, self.emit = bars, emit
        self.journal = Journal(out)
        self.done: dict[int, dict] = {}  # input index -> entry: the summary keeps input order
        self.failures: list[dict] = []
        self.segmented = self.skipped = 0

    # ------------------------------------------------------------ the run

    def execute(
        self, images: list[InputImage], videos: list[InputImage], problems, *, skip_existing: bool
    ) -> RunSummary:
        names = unique_names(images, self.image_outputs)
        videos = reserve_video_names(videos, names)
        mask_format = self.opts["mask_format"]
        finals = [self.out / n for n in (JOURNAL, SUMMARY_JSON, SUMMARY_CSV)]
        finals += [self.out / (n + SUFFIX[k]) for n in names for k in OUTPUT_KINDS]
        finals += [
            self.out / rel
            for v in videos
            for rel in (*video_output_names(v.name, "png").values(), video_output_names(v.name, "video")["mask"])
        ]
        remove_stale_temporaries(finals)
        journal_options = {k: self.opts[k] for k in ("alpha", "low_confidence", "mask_format", "vid_stride")}
        previous = previous_entries(self.out, self.settings, journal_options) if skip_existing else {}
        self.failures = [{"input": s, "error": r} for s, r in problems]

        todo = []
        for i, (img, name) in enumerate(zip(images, names)):
            paths = {k: self.out / (name + SUFFIX[k]) for k in self.image_outputs}
            entry = None
            if skip_existing and all(p.is_file() for p in paths.values()):
                entry = reuse(
                    previous.get(img.label), {k: p.relative_to(self.out).as_posix() for k, p in paths.items()}
                )
            if entry is not None:
                self._skip(i, entry)
            else:
                todo.append(_Item(i, img, paths))
        skipped_images = self.skipped
        for j, video in enumerate(videos):
            rels = {k: video_output_names(video.name, mask_format)[k] for k in self.video_outputs}
            if skip_existing and rels and all((self.out / r).exists() for r in rels.values()):
                entry = reuse(previous.get(video.label), rels)
                if entry is not None and not entry.get("error"):  # one that broke part-way is tried again
                    self._skip(len(images) + j, entry)

        self.journal.start(
            {"journal": 1, "settings": self.settings, "options": journal_options},
            [self.done[i] for i in sorted(self.done)],
        )
        interrupted = False
        try:
            with routing():
                self._images(todo, len(images), skipped_images)
            for j, video in enumerate(videos):
                if len(images) + j not in self.done:
                    self._video(len(images) + j, video)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            self.journal.close()
            summary = RunSummary(
                items=tuple(self.done[i] for i in sorted(self.done)), failures=tuple(self.failures),
                settings=self.settings, out=self.out, segmented=self.segmented, skipped=self.skipped,
            )  # fmt: skip
            write_summary(self.out, summary)
            self.journal.remove()  # summary.json now holds all it did
        if interrupted:
            raise RunInterrupted(summary)
        return summary

    def _skip(self, index: int, entry: dict) -> None:
        self.done[index] = entry
        self.skipped += 1
        self.emit(RunEvent("skipped", entry["input"]))

    def _finished(self, index: int, entry: dict) -> None:
        self.done[index] = entry
        self.segmented += 1
        self.journal.add(entry)
        self.emit(RunEvent("done", entry["input"]))

    def _fail(self, source: str, reason: str, warnings: Sequence[str] = ()) -> None:
        self.failures.append({"input": source, "error": reason} | ({"warnings": list(warnings)} if warnings else {}))
        self.emit(RunEvent("failed", source, reason))

    def _warned(self, item: _Item) -> None:
        for text in item.warnings:
            self.emit(RunEvent("item_warning", item.image.label, text))

    # ------------------------------------------------------------ images

    def _load(self, item: _Item):
        """Read one image (in a reading thread), its Python warnings kept with the item."""
        o = self.opts
        with capture(item.warnings):
            # check_size: shapes the model cannot take are refused from the header, before decoding
            return load_image(
                item.image.path, max_pixels=o["max_pixels"], url_timeout=o["url_timeout"],
                url_max_bytes=round(o["url_max_mb"] * 2**20), check_size=self.seg.check_size,
            )  # fmt: skip

    def _write(self, item: _Item, result) -> dict:
        """Encode and write one image's outputs (in a writer thread); its summary entry."""
        img = item.image
        low = self.opts["low_confidence"] if "confidence" in self.image_outputs else 0.0
        write_outputs(result, item.paths, self.opts["alpha"], img.label if img.is_url else Path(img.path).name, low)
        return image_entry(img, result, item.paths, self.out, item.warnings)

    def _collect(self, item: _Item, future) -> None:
        self._warned(item)
        try:
            entry = future.result()
        except OSError as e:
            self._fail(
                item.image.label,
                f"cannot write outputs ({e}); check free space and permissions of {self.out}",
                item.warnings,
            )
            return
        self._finished(item.index, entry)

    def _images(self, todo: list[_Item], total: int, skipped: int) -> None:
        if not total:
            return
        writers = self.opts["writers"]
        bar = self.bars.open(total=total, initial=skipped, unit="img", desc="segment")
        pool = ThreadPoolExecutor(writers, thread_name_prefix="seglens-write") if writers else None
        pending: deque = deque()  # (item, future) being written, in input order
        windows = self.seg.window_progress
        if windows is None and self.bars.factory is not None:
            self.seg.window_progress = self.bars.windows  # a given segmenter: restored below
        try:
            stream = self.seg.stream(
                todo, self._load, workers=self.opts["workers"], prefetch=max(8, 2 * self.seg.batch_size)
            )
            with contextlib.closing(stream):
                for item, result in stream:
                    if isinstance(result, Exception):
                        if self.opts["strict"] and not isinstance(result, (ImageLoadError, ValueError)):
                            raise result
                        self._warned(item)
                        self._fail(item.image.label, _reason(result), item.warnings)
                        bar.update(1)
                        continue
                    if pool is None:
                        self._collect(item, _Now(self._write, item, result))
                        bar.update(1)
                        continue
                    pending.append((item, pool.submit(self._write, item, result)))
                    while pending and (pending[0][1].done() or len(pending) > 2 * writers):  # results hold whole images
                        self._collect(*pending.popleft())
                        bar.update(1)
        finally:
            while pending:  # every started write completes (or fails) before the summary
                self._collect(*pending.popleft())
                bar.update(1)
            if pool is not None:
                pool.shutdown(wait=True)
            bar.close()
            self.seg.window_progress = windows

    # ------------------------------------------------------------ videos

    def _video(self, index: int, video: InputImage) -> None:
        """One video through seglens.video.segment_video, with a progress bar in frames. A
        partial video (decoding stopped part-way) keeps its entry, with "error" set, and fails."""
        from ..video import probe, segment_video

        label = video.label
        if not self.video_outputs:
            self._fail(label, "nothing to write for a video; add overlay and/or mask to outputs=")
            return
        o = self.opts
        try:
            info = probe(video.path)
        except VideoError as e:
            self._fail(label, e.reason)
            return
        total = -(-info.frames // o["vid_stride"]) if info.frames else None
        bar = self.bars.open(total=total, unit="frame", desc=Path(video.path).name)
        try:
            entry = segment_video(
                self.seg, video.path, self.out, video.name, outputs=self.video_outputs, stride=o["vid_stride"],
                alpha=o["alpha"], mask_format=o["mask_format"], progress=bar.update, workers=o["workers"],
            )  # fmt: skip
        except VideoError as e:
            self._fail(label, e.reason)
            return
        except OSError as e:
            self._fail(label, f"cannot write outputs ({e}); check free space and permissions of {self.out}")
            return
        finally:
            bar.close()
        self._finished(index, entry)
        if entry.get("error"):
            self._fail(label, entry["error"])


class _Now:
    """A finished 'future' for writing in the calling thread (writers=0)."""

    def __init__(self, fn, *args) -> None:
        try:
            self._value, self._error = fn(*args), None
        except OSError as e:
            self._value, self._error = None, e

    def result(self):
        if self._error is not None:
            raise self._error
        return self._value
