"""``segment()``: one run over many inputs, photos and videos alike."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from .._cluster import check_engine, parse_workers, require_ray
from ..io import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    InputImage,
    find_images,
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
    previous_entries,
    remove_stale_temporaries,
    reserve_video_names,
    reuse,
    unique_names,
    video_output_names,
    write_summary,
)  # fmt: skip
from ._images import ImageWork, Item, _Bars, resolve_auto, settings_of
from ._warnings import routing

__all__ = ["RunError", "RunEvent", "RunInterrupted", "segment"]

StrPath = Union[str, "os.PathLike[str]"]

# Options of segment() beyond its named arguments, with their defaults: those of `seglens segment`.
_MODEL_OPTIONS = {
    "device": "auto", "batch_size": 1, "backend": "auto", "precision": "fp32", "calibration": None,
    "compile": False, "seed": 0, "scale": None, "tile": None, "overlap": 0.25, "refine": None,
}  # fmt: skip
_RUN_OPTIONS = {
    "alpha": 0.5, "low_confidence": 0.5, "max_pixels": DEFAULT_MAX_PIXELS, "url_timeout": 30.0, "url_max_mb": 50.0,
    "vid_stride": 1, "mask_format": "png", "workers": 2, "writers": 1, "strict": False,
}  # fmt: skip
# Options of engine="ray" (see seglens._cluster): None takes its sizing rule.
_RAY_OPTIONS = {"ray_address": None, "ray_workers": None, "cpus_per_worker": None, "gpus_per_worker": None}


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
    engine: str = "local",
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
            ``backend`` ("auto": :func:`seglens.backends.choose_backend` picks OpenVINO f32 on a CPU
            when its export is cached or the run repays it, else torch; "torch" forces torch),
            ``precision`` ("fp32"), ``calibration`` (int8: a folder of images or a list of PIL
            images; default the bundled examples), ``compile`` (False), ``refine`` (None: see
            :mod:`seglens.refine`),
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
    check_engine(engine)
    opts = _options(options, segmenter, engine)
    image_outputs, video_outputs = _outputs(outputs)
    emit = on_event or (lambda event: None)
    remote = _remote_out(out, engine)
    images, videos, problems = _discover(inputs, None if remote else Path(out), engine)
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
    if engine == "ray":
        cluster = _ray_images(model, weights, opts, image_outputs, remote or str(out), segmenter, len(images))
        described = cluster.describe()
        settings, meaningful, tag = described["settings"], described["meaningful"], described["weights_tag"]
        seg, run_images = None, cluster.run
        emit(RunEvent("note", None, f"Ray: {cluster.pool.describe()}"))
    else:
        seg = segmenter
        if seg is None:
            seg = _build(model, weights, opts, "confidence" in image_outputs, bars, images=len(images))
        settings, meaningful, tag, run_images = settings_of(seg), seg.loaded.meaningful, seg.loaded.weights_tag, None

    if settings.get("backend_choice"):
        emit(RunEvent("note", None, f"backend {settings['backend']} ({settings['backend_choice']})"))
    out = _staging(remote) if remote else Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunError(f"cannot create output folder {out} ({e.strerror or e}); choose another out=") from None
    if not meaningful:
        emit(
            RunEvent(
                "warning", None, f"weights are a {tag}: the masks show the pipeline works, not what is in the images"
            )
        )
    run = _Run(seg, out, settings, opts, image_outputs=image_outputs, video_outputs=video_outputs, bars=bars, emit=emit)
    run.remote, run.run_images = remote, run_images
    return run.execute(images, videos, problems, skip_existing=skip_existing)


def _remote_out(out, engine: str) -> str | None:
    """``out`` when it is an object-store URI (the Ray engine only), else None."""
    text = os.fspath(out) if isinstance(out, (str, os.PathLike)) else out
    if not (isinstance(text, str) and "://" in text):
        return None
    from ..io.storage import is_uri

    if not is_uri(text):
        return None
    if engine != "ray":
        raise RunError(f"out={text}: object-store outputs are written by engine='ray' (--engine ray)")
    return text.rstrip("/")


def _staging(uri: str) -> Path:
    """Where the driver keeps the summary and journal of a run into ``uri`` before uploading
    them: a folder per URI under the user's cache, so a killed driver's rerun finds its journal."""
    import hashlib

    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "seglens" / "runs"
    return base / hashlib.sha256(uri.encode()).hexdigest()[:16]


def _ray_images(model, weights, opts: dict, image_outputs, out: str, segmenter, images: int):
    if segmenter is not None:
        raise ValueError("segmenter= runs in this process; engine='ray' builds one per worker from model= and weights=")
    from ._ray import RayImages

    model_options = {k: opts[k] for k in _MODEL_OPTIONS}
    model_options["max_pixels"] = opts["max_pixels"]
    if isinstance(model_options["calibration"], (str, os.PathLike)):
        model_options["calibration"] = os.fspath(model_options["calibration"])
    run_opts = {k: opts[k] for k in _RUN_OPTIONS}
    spec = {"model": model, "weights": os.fspath(weights), "model_options": model_options, "opts": run_opts,
            "outputs": list(image_outputs), "out": out, "images": images}  # fmt: skip
    return RayImages(
        spec, address=opts["ray_address"], workers=opts["ray_workers"],
        cpus_per_worker=opts["cpus_per_worker"], gpus_per_worker=opts["gpus_per_worker"],
    )  # fmt: skip


def _options(options: dict, segmenter, engine: str = "local") -> dict:
    unknown = sorted(set(options) - set(_MODEL_OPTIONS) - set(_RUN_OPTIONS) - set(_RAY_OPTIONS))
    if unknown:
        raise TypeError(
            f"segment() got unknown options {', '.join(unknown)}; "
            f"options: {', '.join([*_MODEL_OPTIONS, *_RUN_OPTIONS, *_RAY_OPTIONS])}"
        )
    if segmenter is not None and set(options) & set(_MODEL_OPTIONS):
        raise ValueError(
            f"{', '.join(f'{k}=' for k in sorted(set(options) & set(_MODEL_OPTIONS)))}: "
            "a given segmenter= is used as it is; build it with these instead"
        )
    if engine != "ray" and set(options) & set(_RAY_OPTIONS):
        raise ValueError(
            f"{', '.join(f'{k}=' for k in sorted(set(options) & set(_RAY_OPTIONS)))}: for engine='ray' only"
        )
    opts = {**_MODEL_OPTIONS, **_RUN_OPTIONS, **_RAY_OPTIONS, **options}
    if engine == "ray":  # refused before Ray starts
        parse_workers(opts["ray_workers"])
        for key in ("cpus_per_worker", "gpus_per_worker"):
            if opts[key] is not None and not (isinstance(opts[key], (int, float)) and opts[key] >= 0):
                raise ValueError(f"{key}= must be a number >= 0, got {opts[key]!r}")
        require_ray()
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


def _discover(
    inputs, out: Path | None, engine: str
) -> tuple[list[InputImage], list[InputImage], list[tuple[str, str]]]:
    if isinstance(inputs, (str, os.PathLike, InputImage)):
        inputs = [inputs]
    given = [x for x in inputs if isinstance(x, InputImage)]
    rest = [x for x in inputs if not isinstance(x, InputImage)]
    uris = [x for x in rest if isinstance(x, str) and _is_uri(x)]
    rest = [x for x in rest if not (isinstance(x, str) and _is_uri(x))]
    exclude = [out] if out is not None else []
    found, problems = (
        find_images(rest, suffixes=IMAGE_EXTENSIONS | VIDEO_SUFFIXES, exclude=exclude) if rest else ([], [])
    )
    for uri in uris:
        if engine != "ray":
            problems.append((uri, "object-store URIs are read by engine='ray' (--engine ray)"))
            continue
        listed, problem = _list_uri(uri)
        found += listed
        if problem:
            problems.append((uri, problem))
    items = given + found
    videos = [f for f in items if not f.is_url and not _is_uri(str(f.path)) and is_video(f.path)]
    images = [f for f in items if f not in videos]
    return images, videos, problems


def _is_uri(text: str) -> bool:
    if "://" not in text:
        return False
    from ..io.storage import is_uri

    return is_uri(text)


def _list_uri(uri: str) -> tuple[list[InputImage], str | None]:
    """The images under an object-store URI (named like a folder's files), or why there are none."""
    from ..io.storage import StorageError, list_files, relative_name

    try:
        files = list_files(uri, IMAGE_EXTENSIONS)
    except StorageError as e:
        return [], e.reason
    if not files:
        return [], f"no images under {uri} (suffixes {', '.join(sorted(IMAGE_EXTENSIONS))})"
    return [InputImage(f, relative_name(uri, f)) for f in files], None


def _build(model: str, weights: StrPath, opts: dict, confidence: bool, bars: _Bars, images: int = 0):
    """The run's Segmenter; ``backend="auto"`` chosen here (:func:`seglens.backends.choose_backend`,
    for ``images`` inputs), the choice kept as ``seg.backend_choice``."""
    from ..inference import Segmenter

    calibration = calibration_images(opts["calibration"]) if opts["precision"] == "int8" else None
    model, opts, choice = resolve_auto(model, weights, opts, images, progress=bars.factory is not None)
    seg = Segmenter(
        model, weights=weights, device=opts["device"], progress=bars.factory is not None, seed=opts["seed"],
        backend=opts["backend"], precision=opts["precision"], calibration=calibration, batch_size=opts["batch_size"],
        max_pixels=opts["max_pixels"], compile=opts["compile"], scale=opts["scale"], tile=opts["tile"],
        overlap=opts["overlap"], confidence=confidence, window_progress=bars.windows, refine=opts["refine"] or (),
    )  # fmt: skip
    seg.backend_choice = choice
    return seg


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
        self.failures: list[tuple[int, dict]] = []  # (input index, -1 for discovery; failure): sorted at the end
        self.segmented = self.skipped = 0
        self.remote: str | None = None  # an object-store URI the outputs go to (out is then a staging folder)
        self.run_images = None  # the Ray engine's RayImages.run; None: ImageWork here

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
        if skip_existing and self.remote:
            from ..io.storage import download_file

            if not download_file(f"{self.remote}/{SUMMARY_JSON}", self.out / SUMMARY_JSON):
                (self.out / SUMMARY_JSON).unlink(missing_ok=True)  # a staging copy the store no longer has
        previous = previous_entries(self.out, self.settings, journal_options) if skip_existing else {}
        self.failures = [(-1, {"input": s, "error": r}) for s, r in problems]

        todo = []
        there = self._existing(names) if skip_existing else set()
        for i, (img, name) in enumerate(zip(images, names)):
            paths = {k: self.out / (name + SUFFIX[k]) for k in self.image_outputs}
            entry = None
            if skip_existing and all(p in there for p in paths.values()):
                entry = reuse(
                    previous.get(img.label), {k: p.relative_to(self.out).as_posix() for k, p in paths.items()}
                )
            if entry is not None:
                self._skip(i, entry)
            else:
                todo.append(Item(i, dataclasses.replace(img, name=name), paths))
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
                items=tuple(self.done[i] for i in sorted(self.done)), failures=self._failures(),
                settings=self.settings, out=self.remote or self.out, segmented=self.segmented, skipped=self.skipped,
            )  # fmt: skip
            write_summary(self.out, summary)
            if self.remote:
                self._upload_summary()
            self.journal.remove()  # summary.json now holds all it did
        if interrupted:
            raise RunInterrupted(summary)
        return summary

    def _existing(self, names: Sequence[str]) -> set[Path]:
        """The image outputs of ``names`` that exist (in the output folder or object store)."""
        paths = [self.out / (n + SUFFIX[k]) for n in names for k in self.image_outputs]
        if not self.remote:
            return {p for p in paths if p.is_file()}
        from ..io.storage import exists, join

        uris = {join(self.remote, p.relative_to(self.out).as_posix()): p for p in paths}
        return {uris[u] for u in exists(list(uris))}

    def _upload_summary(self) -> None:
        """summary.json and summary.csv to the object store (the journal stays in the staging folder)."""
        from ..io.storage import upload_file

        for name in (SUMMARY_JSON, SUMMARY_CSV):
            upload_file(self.out / name, f"{self.remote}/{name}")

    def _skip(self, index: int, entry: dict) -> None:
        self.done[index] = entry
        self.skipped += 1
        self.emit(RunEvent("skipped", entry["input"]))

    def _finished(self, index: int, entry: dict) -> None:
        self.done[index] = entry
        self.segmented += 1
        self.journal.add(entry)
        self.emit(RunEvent("done", entry["input"]))

    def _failures(self) -> tuple[dict, ...]:
        """The failures in input order (discovery's first), whichever engine finished them first."""
        return tuple(f for _, f in sorted(self.failures, key=lambda t: t[0]))

    def _fail(self, index: int, source: str, reason: str, warnings: Sequence[str] = ()) -> None:
        failure = {"input": source, "error": reason} | ({"warnings": list(warnings)} if warnings else {})
        self.failures.append((index, failure))
        self.emit(RunEvent("failed", source, reason))

    def _warned(self, item: Item) -> None:
        for text in item.warnings:
            self.emit(RunEvent("item_warning", item.image.label, text))

    # ------------------------------------------------------------ images

    def _images(self, todo: list[Item], total: int, skipped: int) -> None:
        if not total:
            return
        bar = self.bars.open(total=total, initial=skipped, unit="img", desc="segment")
        callbacks = {"done": self._image_done, "failed": self._image_failed, "step": lambda: bar.update(1)}
        if self.run_images is not None:
            try:
                self.run_images(todo, **callbacks)
            finally:
                bar.close()
            return
        windows = self.seg.window_progress
        if windows is None and self.bars.factory is not None:
            self.seg.window_progress = self.bars.windows  # a given segmenter: restored below
        try:
            ImageWork(self.seg, self.out, self.opts, self.image_outputs).run(todo, **callbacks)
        finally:
            bar.close()
            self.seg.window_progress = windows

    def _image_done(self, item: Item, entry: dict) -> None:
        self._warned(item)
        self._finished(item.index, entry)

    def _image_failed(self, item: Item, why: str) -> None:
        self._warned(item)
        self._fail(item.index, item.image.label, why, item.warnings)

    # ------------------------------------------------------------ videos

    def _video(self, index: int, video: InputImage) -> None:
        """One video through seglens.video.segment_video, with a progress bar in frames. A
        partial video (decoding stopped part-way) keeps its entry, with "error" set, and fails."""
        from ..video import probe, segment_video

        label = video.label
        if self.run_images is not None:
            self._fail(index, label, "videos are segmented by the local engine only; run them without --engine ray")
            return
        if not self.video_outputs:
            self._fail(index, label, "nothing to write for a video; add overlay and/or mask to outputs=")
            return
        o = self.opts
        try:
            info = probe(video.path)
        except VideoError as e:
            self._fail(index, label, e.reason)
            return
        total = -(-info.frames // o["vid_stride"]) if info.frames else None
        bar = self.bars.open(total=total, unit="frame", desc=Path(video.path).name)
        try:
            entry = segment_video(
                self.seg, video.path, self.out, video.name, outputs=self.video_outputs, stride=o["vid_stride"],
                alpha=o["alpha"], mask_format=o["mask_format"], progress=bar.update, workers=o["workers"],
            )  # fmt: skip
        except VideoError as e:
            self._fail(index, label, e.reason)
            return
        except OSError as e:
            self._fail(index, label, f"cannot write outputs ({e}); check free space and permissions of {self.out}")
            return
        finally:
            bar.close()
        self._finished(index, entry)
        if entry.get("error"):
            self._fail(index, label, entry["error"])
