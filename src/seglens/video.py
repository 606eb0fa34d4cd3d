"""Videos: probe, decode every n-th frame, segment, write an overlay video and masks.

Decoding and encoding go through PyAV (its wheels carry FFmpeg), an optional dependency imported
only inside functions: ``pip install 'seglens[video]'``. Nothing here prints; results come back
as return values, :class:`VideoError` and a ``progress`` callback.

Outputs are written under temporary names (``.{final}.{token}.partial``) and renamed to their
final names only after their containers are closed, so a stopped run never leaves a
half-written file that looks complete. A video that breaks part-way (truncated download,
corrupt data) still gives outputs for the frames that decoded, with the problem reported in
the summary's ``"error"``. The encoders, the legend and the audio copy live in
:mod:`seglens._video_write`; many videos at once (next to images): :func:`seglens.pipeline.segment`.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image

from ._video_write import (
    _draw_legend,
    _ffmpeg_reason,
    _install,
    _legend_classes,
    _mux_audio,
    _remove,
    _temp_path,
    _VideoFile,
)
from .io import save_mask_png
from .visualize import ClassStat, display_name

__all__ = [
    "MASK_FORMATS",
    "OUTPUT_KINDS",
    "VIDEO_SUFFIXES",
    "Frame",
    "FrameReader",
    "VideoError",
    "VideoInfo",
    "is_video",
    "probe",
    "segment_video",
]

StrPath = Union[str, "os.PathLike[str]"]

# GIF stays an image: seglens.io reads its first frame like any other picture.
VIDEO_SUFFIXES: frozenset[str] = frozenset(
    {".mp4", ".mov", ".m4v", ".mkv", ".avi", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".mts", ".m2ts", ".3gp"}
)
OUTPUT_KINDS = ("overlay", "mask")
MASK_FORMATS = ("png", "video")

_CRF = "20"  # x264 quality: visually close to the source at a modest size (18 = near lossless)
_PROBE_PACKETS = 64  # packets probe() reads looking for the first frame (for its rotation)


class VideoError(Exception):
    """A video that cannot be read, or a missing PyAV.

    Attributes:
        path: the file.
        reason: one line saying what is wrong and how to fix it.
    """

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = " ".join(reason.split())  # always one line
        super().__init__(f"{path}: {self.reason}")

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across worker processes
        return (type(self), (self.path, self.reason))


def is_video(path: StrPath) -> bool:
    """True if the file name ends with one of ``VIDEO_SUFFIXES`` (any case)."""
    return Path(os.fsdecode(path)).suffix.lower() in VIDEO_SUFFIXES


def _import_av(path: StrPath):
    try:
        import av
    except ImportError:
        raise VideoError(os.fsdecode(path), "reading videos needs PyAV: pip install 'seglens[video]'") from None
    return av


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video's first video stream.

    Attributes:
        width, height: frame size in pixels as displayed (after the stream's rotation).
        fps: average frame rate.
        frames: frame count if the container stores it, else ``round(duration * fps)``, else None.
        duration: seconds, or None if unknown.
        codec: decoder name, e.g. ``"h264"``.
        rotation: degrees counter-clockwise that frames are turned for display (0, 90, 180, -90);
            :class:`FrameReader` applies it, as :func:`seglens.io.load_image` applies EXIF.
    """

    width: int
    height: int
    fps: Fraction
    frames: int | None
    duration: float | None
    codec: str
    rotation: int = 0


def _open_input(av, path: StrPath):
    label = os.fsdecode(path)
    p = Path(label)
    if not p.exists():
        raise VideoError(label, "no such file (check the path)")
    if not p.is_file():
        raise VideoError(label, "not a regular file (give a video file such as clip.mp4)")
    if p.stat().st_size == 0:
        raise VideoError(label, "empty file (0 bytes); re-download or re-export it")
    try:
        container = av.open(label, "r")
    except av.FFmpegError as e:
        reason = f"cannot open as a video ({_ffmpeg_reason(e)}); check that it is a complete video file"
        if p.suffix.lower() in (".mp4", ".mov", ".m4v"):  # their index is often written last
            reason += " (an MP4/MOV cut off before its end has lost its index: re-download or re-export it)"
        raise VideoError(label, reason) from None
    try:
        streams = [s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
        if not streams:
            raise VideoError(
                label, "no video stream (an audio file, or a damaged header?); give a video file or re-download it"
            )
        stream = streams[0]
        if stream.codec_context is None:
            raise VideoError(
                label,
                "its video stream cannot be decoded (damaged header or a codec FFmpeg lacks); "
                "re-download it or re-export it as H.264 MP4",
            )
        if not stream.codec_context.width or not stream.codec_context.height:
            raise VideoError(
                label, "the video stream has no frame size; the file may be corrupt (re-download or re-export it)"
            )
    except BaseException:
        container.close()
        raise
    return container, stream


def _rate(stream) -> Fraction | None:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return Fraction(rate)
    return None


def _first_rotation(av, container, stream) -> int:
    """The first decodable frame's display rotation; 0 if none decodes in the first packets."""
    with contextlib.suppress(av.FFmpegError):  # a damaged start: probe still answers
        for n, packet in enumerate(container.demux(stream)):
            for frame in packet.decode():
                return _normal_rotation(frame.rotation)
            if n >= _PROBE_PACKETS:
                break
    return 0


def _normal_rotation(degrees: float) -> int:
    """Nearest of 0, 90, 180, -90 (FFmpeg's display matrix may hold -180 or 270)."""
    turns = round(degrees / 90) % 4
    return (0, 90, 180, -90)[turns]


def probe(path: StrPath) -> VideoInfo:
    """Read a video's size, frame rate, frame count, duration and codec (decodes one frame).

    Raises:
        VideoError: missing file, not a video, no video stream, or PyAV not installed.
    """
    av = _import_av(path)
    container, stream = _open_input(av, path)
    with container:
        fps = _rate(stream)
        if fps is None or fps <= 0:
            raise VideoError(
                os.fsdecode(path), "the container gives no frame rate; remux it (ffmpeg -i in -c copy out.mp4)"
            )
        duration = _duration(container, stream)
        frames = stream.frames or (round(duration * fps) if duration else None)
        width, height = stream.codec_context.width, stream.codec_context.height
        codec = stream.codec_context.name
        rotation = _first_rotation(av, container, stream)
    if rotation in (90, -90):
        width, height = height, width
    return VideoInfo(
        width=width, height=height, fps=fps, frames=frames or None, duration=duration, codec=codec, rotation=rotation
    )


@dataclass(frozen=True)
class Frame:
    """One decoded frame.

    Attributes:
        index: 0-based position among the source's decoded frames.
        time: seconds since the stream's first timestamp.
        image: mode-"RGB" PIL image, rotated for display.
    """

    index: int
    time: float
    image: Image.Image


_ROTATE = {90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180, -90: Image.Transpose.ROTATE_270}


class FrameReader:
    """Iterate over every ``stride``-th frame of a video: frames 0, stride, 2 * stride, ...

    Each iteration decodes the file from its start. Decoding problems part-way are not raised:
    iteration ends, the frames before have been yielded, and :attr:`error` says what happened.
    A file that stops before the frame count its header lists (a truncated download) counts
    as such a problem. Frames whose size differs from the first frame's are scaled to it, so
    every image has one size.

    Attributes:
        path: the video.
        stride: keep every stride-th decoded frame.
        error: one line, set when decoding stopped early; None otherwise.
        decoded: frames decoded so far in the current (or last) iteration, kept or not.

    Raises (on iteration):
        VideoError: the file cannot be opened as a video at all.
    """

    def __init__(self, path: StrPath, *, stride: int = 1) -> None:
        if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
            raise ValueError(f"stride must be an integer >= 1, got {stride!r}")
        self.path = path
        self.stride = stride
        self.error: str | None = None
        self.decoded = 0

    def __iter__(self) -> Iterator[Frame]:
        av = _import_av(self.path)
        self.error, self.decoded = None, 0
        container, stream = _open_input(av, self.path)
        with container:
            fps = _rate(stream) or Fraction(25)
            start = stream.start_time or 0
            size = None
            for frame in self._decode(av, container, stream):
                index = self.decoded
                self.decoded += 1
                if index % self.stride:
                    continue
                size = size or _display_size(frame)
                image = _to_image(frame, size)
                if frame.pts is not None and stream.time_base:
                    seconds = float((frame.pts - start) * stream.time_base)
                else:
                    seconds = float(index / fps)
                yield Frame(index=index, time=seconds, image=image)

    def _decode(self, av, container, stream) -> Iterator[Any]:
        packets = 0
        last = None  # presentation time (s) of the last decoded frame
        try:
            for packet in container.demux(stream):
                packets += packet.size > 0
                for frame in packet.decode():  # the final empty packet drains the decoder
                    last = frame.time if frame.time is not None else last
                    yield frame
        except av.FFmpegError as e:
            self.error = f"{_ffmpeg_reason(e)} (the file may be truncated or corrupt)"
            with contextlib.suppress(av.FFmpegError):  # frames already inside the decoder
                yield from stream.codec_context.decode(None)
            return
        if stream.frames and packets < stream.frames:
            self.error = f"the file holds {packets} of the {stream.frames} frames its header lists (truncated?)"
            return
        # Containers without a frame count (Matroska, WebM, MPEG-TS) still state a duration: a
        # file whose frames end well before it was cut short (variable frame rates end close to it).
        duration = _duration(container, stream)
        begin = (
            float(stream.start_time * stream.time_base) if stream.start_time is not None and stream.time_base else 0.0
        )
        if duration and last is not None and last - begin < duration - max(1.0, 0.1 * duration):
            self.error = f"the frames end at {last - begin:.1f} s of the {duration:.1f} s the file states (truncated?)"


def _duration(container, stream) -> float | None:
    """Seconds the stream (or else the container) states, or None."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / 1_000_000  # AV_TIME_BASE
    return None


def _display_size(frame) -> tuple[int, int]:
    """(width, height) after the frame's display rotation."""
    rotation = _normal_rotation(frame.rotation)
    return (frame.height, frame.width) if rotation in (90, -90) else (frame.width, frame.height)


def _to_image(frame, size: tuple[int, int]) -> Image.Image:
    rotation = _normal_rotation(frame.rotation)
    image = Image.fromarray(frame.to_ndarray(format="rgb24"))  # the frame's own colour matrix
    if rotation:
        image = image.transpose(_ROTATE[rotation])
    if image.size != size:  # a stream that changes resolution mid-way
        image = image.resize(size, Image.Resampling.BILINEAR)
    return image


class _PngFolder:
    """Indexed mask PNGs named by source frame index, in a temporary folder until installed."""

    def __init__(self, final: Path) -> None:
        self.final, self.tmp = final, _temp_path(final)
        self.tmp.mkdir()

    def write(self, index: int, labels: np.ndarray, palette: np.ndarray) -> None:
        save_mask_png(self.tmp / f"{index:06d}.png", labels, palette)

    def close(self) -> None:
        pass

    def discard(self) -> None:
        _remove(self.tmp)

    def install(self) -> None:
        _install(self.tmp, self.final)


def _overlay_file(av, final: Path, rate: Fraction, size: tuple[int, int]) -> _VideoFile:
    width, height = size
    # H.264 4:2:0 needs even sizes; 4:4:4 (High 4:4:4 profile) keeps any size exactly.
    pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
    try:
        av.codec.Codec("libx264", "w")
    except ValueError:  # av.codec.codec.UnknownCodecError
        raise VideoError(
            str(final), "this FFmpeg has no libx264 encoder; install PyAV's own wheel: pip install --force-reinstall av"
        ) from None
    return _VideoFile(
        av,
        final,
        container_format="mp4",
        codec="libx264",
        pix_fmt=pix_fmt,
        rate=rate,
        size=size,
        options={"crf": _CRF},
        container_options={"movflags": "+faststart"},
        bt709=True,
    )


def _mask_file(av, final: Path, rate: Fraction, size: tuple[int, int]) -> _VideoFile:
    # FFV1 is lossless and stores 8-bit gray as is: pixel value = class index, exactly.
    return _VideoFile(
        av, final, container_format="matroska", codec="ffv1", pix_fmt="gray", rate=rate, size=size, options={}
    )


# --- segment_video --------------------------------------------------------------------------------


def _check_args(outputs: Iterable[str], stride: int, alpha: float, mask_format: str) -> tuple[str, ...]:
    outputs = tuple(outputs)
    for kind in outputs:
        if kind not in OUTPUT_KINDS:
            raise ValueError(f"unknown video output {kind!r}; choose from {', '.join(OUTPUT_KINDS)}")
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise ValueError(f"stride must be an integer >= 1, got {stride!r}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    if mask_format not in MASK_FORMATS:
        raise ValueError(f"mask_format must be one of {', '.join(MASK_FORMATS)}, got {mask_format!r}")
    return outputs


def _output_names(name: str, outputs: Sequence[str], mask_format: str) -> dict[str, str]:
    names = {}
    if "overlay" in outputs:
        names["overlay"] = f"{name}_overlay.mp4"
    if "mask" in outputs:
        names["mask"] = f"{name}_mask.mkv" if mask_format == "video" else f"{name}_mask"
    return names


class _Outputs:
    """One video's output files: opened at the first frame (its size), installed at the end."""

    def __init__(self, av, out: Path, names: dict[str, str], *, mask_format: str, rate: Fraction, alpha: float) -> None:
        self.av, self.out, self.names = av, out, names
        self.mask_format, self.rate, self.alpha = mask_format, rate, alpha
        self.files: dict[str, _VideoFile | _PngFolder] | None = None

    def _open(self, size: tuple[int, int]) -> None:
        self.files = {}
        for kind, rel in self.names.items():
            final = self.out / rel
            final.parent.mkdir(parents=True, exist_ok=True)
            if kind == "overlay":
                self.files[kind] = _overlay_file(self.av, final, self.rate, size)
            elif self.mask_format == "video":
                self.files[kind] = _mask_file(self.av, final, self.rate, size)
            else:
                self.files[kind] = _PngFolder(final)

    def write(self, frame: Frame, result, stats: Sequence[ClassStat]) -> None:
        """Add one segmented frame (``result`` a SegmentationResult, ``stats`` its classes)."""
        if self.files is None:
            self._open((result.labels.shape[1], result.labels.shape[0]))
        if "overlay" in self.files:
            legend = _legend_classes(stats, result.categories)
            self.files["overlay"].write(self.av, _draw_legend(result.overlay(self.alpha), legend), "rgb24", frame.time)
        if "mask" in self.files:
            if self.mask_format == "video":
                self.files["mask"].write(self.av, result.labels, "gray", frame.time)
            else:
                self.files["mask"].write(frame.index, result.labels, result.palette)

    def finish(self, source: Path | None = None, span: tuple[float, float] | None = None) -> str | None:
        """Close every file, copy the source's audio into the overlay (when there is one and
        ``source`` is given), then give each file its final name. Returns what happened to the
        audio (see :func:`_mux_audio`)."""
        for f in (self.files or {}).values():
            f.close()
        audio = None
        overlay = (self.files or {}).get("overlay")
        if source is not None and span is not None and isinstance(overlay, _VideoFile):
            audio = _mux_audio(self.av, overlay.tmp, source, *span)
        for f in (self.files or {}).values():
            f.install()
        return audio

    def discard(self) -> None:
        for f in (self.files or {}).values():
            f.discard()


def _class_totals(
    counts: np.ndarray, categories: Sequence[str], palette: np.ndarray, rows: Callable[[list[ClassStat]], list[dict]]
) -> list[dict]:
    """Summary rows (``rows``: SegmentationResult.class_rows) for pixel counts summed over
    frames, most pixels first (as class_stats)."""
    total = int(counts.sum())
    present = np.flatnonzero(counts)
    order = present[np.lexsort((present, -counts[present]))]
    stats = [
        ClassStat(
            index=int(i),
            name=display_name(categories[i]) if i < len(categories) else f"class {i}",
            pixels=int(counts[i]),
            fraction=float(counts[i] / total),
            color=(int(palette[i, 0]), int(palette[i, 1]), int(palette[i, 2])),
        )
        for i in order
    ]
    return rows(stats)


def segment_video(
    seg,
    path: StrPath,
    out_dir: StrPath,
    name: str,
    *,
    outputs: Iterable[str] = ("overlay",),
    stride: int = 1,
    alpha: float = 0.5,
    mask_format: str = "png",
    progress: Callable[[int], None] | None = None,
    workers: int = 2,
) -> dict:
    """Segment every ``stride``-th frame of a video and write the outputs into ``out_dir``.

    Outputs (names relative to ``out_dir``; ``name`` may contain "/"):
        "overlay": ``{name}_overlay.mp4``, H.264 at ``fps / stride`` and the input's size, each
            frame ``result.overlay(alpha)`` with a legend of the classes in it (background left
            out). Even sizes are 4:2:0 (plays everywhere); odd sizes 4:4:4 to keep them exact.
        "mask": ``mask_format="png"``: folder ``{name}_mask/`` of indexed PNGs named by source
            frame index (``000000.png``, ``000003.png``, ...); ``"video"``: ``{name}_mask.mkv``,
            lossless FFV1 8-bit gray whose pixel values are the class indices.

    Each output is renamed into place only once complete; an existing one is replaced then. If
    decoding stops part-way (or a frame cannot be segmented), the frames before are written and
    the summary's ``"error"`` says so. Anything raised (KeyboardInterrupt, a full disk, a failing
    ``progress``) removes the temporary outputs and leaves earlier outputs untouched.

    Args:
        seg: a :class:`seglens.inference.Segmenter`.
        path: the video.
        out_dir: output folder (created if missing).
        name: output stem.
        outputs: any of ``"overlay"``, ``"mask"``; none gives the summary alone.
        stride: segment frames 0, stride, 2 * stride, ...
        alpha: overlay weight of the mask colour, 0..1.
        mask_format: ``"png"`` or ``"video"``.
        progress: called with 1 after each frame is written (total ``ceil(frames / stride)``).
        workers: threads preparing frames for the model (``Segmenter.stream``).

    Returns:
        The summary entry: input, kind ("video"), width, height, fps, stride, frames_total,
        frames_segmented, seconds, classes (summed over frames, largest first), frames (per
        frame: index, time, classes as {name: fraction}), outputs ({kind: relative path}), error.

    Raises:
        VideoError: the file cannot be opened as a video, its frame size is one ``seg`` refuses
            (:meth:`~seglens.inference.Segmenter.check_size`, checked before decoding), or no
            frame of it could be decoded.
    """
    kinds = _check_args(outputs, stride, alpha, mask_format)
    t0 = time.perf_counter()
    info = probe(path)
    check_size = getattr(seg, "check_size", None)
    if check_size is not None:  # a frame size the model cannot take: refused before frames are decoded
        try:
            check_size(info.width, info.height)
        except ValueError as e:
            raise VideoError(os.fsdecode(path), str(e)) from None
    names = _output_names(name, kinds, mask_format)
    files = _Outputs(
        _import_av(path), Path(out_dir), names, mask_format=mask_format, rate=info.fps / stride, alpha=alpha
    )
    reader = FrameReader(path, stride=stride)
    counts = np.zeros(256, dtype=np.int64)  # pixels per class over all frames (labels are uint8)
    frames: list[dict] = []
    last = None
    stop: str | None = None
    audio = None
    try:
        with contextlib.closing(seg.stream(reader, load=lambda f: f.image, workers=workers)) as results:
            for frame, result in results:
                if isinstance(result, Exception):
                    stop = f"frame {frame.index} could not be segmented ({' '.join(str(result).split())})"
                    break
                stats = result.classes
                files.write(frame, result, stats)
                counts += np.bincount(result.labels.ravel(), minlength=256)
                rows = result.class_rows(stats)  # SegmentationResult.to_dict()'s rows: one serialisation
                frames.append(
                    {
                        "index": frame.index,
                        "time": round(frame.time, 4),
                        "classes": {c["name"]: c["fraction"] for c in rows},
                    }
                )
                last = result
                if progress is not None:
                    progress(1)
        if stop is None and reader.error is not None:
            stop = f"decoding stopped after {reader.decoded} frames: {reader.error}"
        if last is None:
            raise VideoError(
                os.fsdecode(path),
                f"no frame could be segmented: {stop or 'the video has no frames'}; check that the file plays",
            )
        first_time, last_time = frames[0]["time"], frames[-1]["time"]
        audio = files.finish(Path(os.fsdecode(path)), (first_time, last_time - first_time + stride / float(info.fps)))
    except BaseException:
        files.discard()
        raise
    return {
        "input": os.fsdecode(path),
        "kind": "video",
        "width": info.width,
        "height": info.height,
        "fps": float(info.fps),
        "stride": stride,
        "frames_total": info.frames,
        "frames_segmented": len(frames),
        "seconds": round(time.perf_counter() - t0, 4),
        "classes": _class_totals(counts, last.categories, last.palette, last.class_rows),
        "frames": frames,
        "outputs": {kind: Path(rel).as_posix() for kind, rel in names.items()},
        "audio": audio,
        "error": None if stop is None else f"{stop}; the outputs hold frames 0..{frames[-1]['index']}",
    }
