"""Writing a video's outputs: the legend drawn on overlay frames, encoders writing into temporary
files, renaming finished outputs into place, and copying the source's audio.

Part of :mod:`seglens.video` (which re-exports what its tests and callers use); PyAV comes in as
the ``av`` argument, so this module imports nothing optional. Temporary outputs are named
``.{final}.{8 hex}.partial`` (an overlay being given its audio: ``...partial.a``) and a replaced
folder is moved aside as ``.{final}.{8 hex}.old`` while the new one takes its name:
:func:`seglens.pipeline.segment` removes such leftovers of its own outputs when a run starts.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import secrets
import shutil
from collections.abc import Iterator, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont, features

from .visualize import ClassStat, background_index

_LEGEND_TEXT = 0.03  # legend text height as a fraction of the frame's short side ...
_LEGEND_MIN_PX = 11  # ... but never below this, so 320x240 stays readable
_LEGEND_DIM = (2, 5)  # the legend box keeps 2/5 of the picture's brightness (60% black)


# --- legend -----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def _font(px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    if features.check("freetype2"):
        return ImageFont.load_default(size=px)
    return ImageFont.load_default()  # Pillow without FreeType: fixed small bitmap font


def _legend_classes(stats: Sequence[ClassStat], categories: Sequence[str]) -> list[ClassStat]:
    """The classes a frame's legend lists: all present, less the background class
    (:func:`seglens.visualize.background_index`, the rule overlays follow too)."""
    skip = background_index(categories)
    return [s for s in stats if s.index != skip]


def _draw_legend(rgb: np.ndarray, stats: Sequence[ClassStat]) -> np.ndarray:
    """Draw a legend (colour swatch + name per class) in the top-left corner on a dark box.

    Text is ``_LEGEND_TEXT`` of the short side tall (at least ``_LEGEND_MIN_PX``); rows that do
    not fit the frame's height end with a "+N more" row.

    Args:
        rgb: (H, W, 3) uint8 frame.
        stats: the classes to list, in order.

    Returns:
        A new (H, W, 3) uint8 array; the input itself if ``stats`` is empty.
    """
    if not stats:
        return rgb
    height, width = rgb.shape[:2]
    px = max(_LEGEND_MIN_PX, round(min(height, width) * _LEGEND_TEXT))
    font = _font(px)
    pad = max(2, px // 3)
    row = px + pad
    fit = (height - 3 * pad) // row
    if fit < 1:
        return rgb
    entries = [(s.name, s.color) for s in stats]
    if len(entries) > fit:
        entries = [*entries[: fit - 1], (f"+{len(stats) - fit + 1} more", None)]
    text_w = max(math.ceil(font.getlength(name)) for name, _ in entries)
    x1 = min(width - pad, 2 * pad + px + pad + text_w + pad)
    y1 = pad + pad + len(entries) * row
    out = rgb.copy()
    box = out[pad:y1, pad:x1]
    box[...] = (box.astype(np.uint16) * _LEGEND_DIM[0] + _LEGEND_DIM[1] // 2) // _LEGEND_DIM[1]
    image = Image.fromarray(out)
    draw = ImageDraw.Draw(image)
    for i, (name, color) in enumerate(entries):
        top = 2 * pad + i * row
        left = 2 * pad
        if color is not None:
            # a light outline keeps black and dark-blue swatches visible on the dark box
            draw.rectangle((left, top, left + px - 1, top + px - 1), fill=tuple(color), outline=(200, 200, 200))
        if isinstance(font, ImageFont.FreeTypeFont):
            draw.text((left + px + pad, top + px / 2), name, fill=(255, 255, 255), font=font, anchor="lm")
        else:  # the bitmap font knows no anchors
            draw.text((left + px + pad, top), name, fill=(255, 255, 255), font=font)
    return np.asarray(image)


# --- outputs ------------------------------------------------------------------------------------


def _temp_path(final: Path) -> Path:
    return final.with_name(f".{final.name}.{secrets.token_hex(4)}.partial")


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def _install(tmp: Path, final: Path) -> None:
    """Move a finished temporary file or folder onto its final name, replacing what is there."""
    if not (final.is_dir() or tmp.is_dir()) or not os.path.lexists(final):
        os.replace(tmp, final)
        return
    old = final.with_name(f".{final.name}.{secrets.token_hex(4)}.old")
    os.rename(final, old)  # a folder cannot be replaced in one step: move the old one aside
    try:
        os.rename(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            os.rename(old, final)
        raise
    _remove(old)


class _VideoFile:
    """An encoder writing into a temporary file; :meth:`install` gives it its final name."""

    def __init__(
        self,
        av,
        final: Path,
        *,
        container_format: str,
        codec: str,
        pix_fmt: str,
        rate: Fraction,
        size: tuple[int, int],
        options: dict[str, str],
        container_options: dict[str, str] | None = None,
        bt709: bool = False,
    ) -> None:
        self.final, self.tmp = final, _temp_path(final)
        self.pix_fmt, self.bt709, self.rate = pix_fmt, bt709, rate
        self.count = 0
        self.pts = -1  # last frame's pts
        self.start: float | None = None  # source time of the first frame written
        self.container = av.open(str(self.tmp), "w", format=container_format, container_options=container_options or {})
        try:
            stream = self.container.add_stream(codec, rate=rate, options=options)
            stream.width, stream.height = size
            stream.pix_fmt = pix_fmt
            cc = stream.codec_context
            cc.time_base = 1 / rate  # one tick per frame: pts = frame number
            if bt709:  # say how RGB became YUV, so players convert back the same way
                cc.colorspace, cc.color_primaries, cc.color_trc, cc.color_range = 1, 1, 1, 1  # BT.709, limited range
            self.stream = stream
        except BaseException:
            self.discard()
            raise

    def write(self, av, array: np.ndarray, source_format: str, time: float | None = None) -> None:
        """Encode one frame. ``time``: its source time in seconds; frames are placed at their own
        times (to the nearest tick of 1 / rate) so variable-frame-rate clips keep their timing; a
        constant-rate source gives pts 0, 1, 2, ... exactly."""
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format=source_format)
        if self.bt709:
            frame = frame.reformat(
                format=self.pix_fmt,
                dst_colorspace="ITU709",
                dst_color_range="MPEG",
                dst_color_trc=1,
                dst_color_primaries=1,
            )
        if time is None:
            pts = self.pts + 1
        else:
            self.start = time if self.start is None else self.start
            pts = max(self.pts + 1, round((time - self.start) * self.rate))  # strictly increasing
        self.pts = pts
        frame.pts, frame.time_base = pts, 1 / self.rate
        self.container.mux(self.stream.encode(frame))
        self.count += 1

    def close(self) -> None:
        self.container.mux(self.stream.encode(None))  # flush frames the encoder holds back
        self.container.close()

    def discard(self) -> None:
        with contextlib.suppress(Exception):
            self.container.close()
        _remove(self.tmp)

    def install(self) -> None:
        _install(self.tmp, self.final)


# Audio codecs the MP4 muxer takes as they are (copied, never re-encoded).
_MP4_AUDIO = frozenset({"aac", "mp3", "ac3", "eac3", "opus", "alac", "flac"})


def _packets(container, stream, shift: float = 0.0, until: float | None = None) -> Iterator[tuple[float, int, Any]]:
    """(time in s after ``shift``, tie-break, packet) of one stream, for merging streams in time order."""
    for n, packet in enumerate(container.demux(stream)):
        if packet.dts is None or packet.pts is None:
            continue  # the demuxer's final flush packet
        t = float(packet.dts * packet.time_base) - shift
        if until is not None and not -1e-6 <= t <= until:  # trimming applies to the audio only
            continue
        if shift:
            offset = round(shift / packet.time_base)
            packet.pts, packet.dts = packet.pts - offset, packet.dts - offset
        yield t, n, packet


def _mux_audio(av, video: Path, source: Path, start: float, end: float) -> str | None:
    """Copy the source's first audio stream into the finished overlay video ``video`` (replaced
    in place), aligned with its frames: source time ``start`` is the overlay's 0, audio after
    ``end`` is left out. Returns None (no audio), "copied (codec)" or "dropped: reason"."""
    import heapq

    with av.open(str(source)) as src:
        if not src.streams.audio:
            return None
        audio = src.streams.audio[0]
        codec = audio.codec_context.name if audio.codec_context else "unknown"
        if codec not in _MP4_AUDIO:
            return f"dropped: {codec} audio does not go into MP4 without re-encoding"
        moved = video.with_name(video.name + ".a")
        try:
            with (
                av.open(str(video)) as vin,
                av.open(str(moved), "w", format="mp4", container_options={"movflags": "+faststart"}) as out,
            ):
                v_in = vin.streams.video[0]
                v_out, a_out = out.add_stream_from_template(v_in), out.add_stream_from_template(audio)
                targets = {v_in.index: v_out}
                video_start = (
                    float(src.streams.video[0].start_time * src.streams.video[0].time_base)
                    if src.streams.video and src.streams.video[0].start_time is not None
                    else 0.0
                )
                streams = heapq.merge(
                    ((t, 0, n, p) for t, n, p in _packets(vin, v_in)),
                    ((t, 1, n, p) for t, n, p in _packets(src, audio, shift=video_start + start, until=end)),
                )
                for _, which, _, packet in streams:
                    packet.stream = targets[v_in.index] if which == 0 else a_out
                    out.mux(packet)
        except BaseException as e:
            _remove(moved)
            if not isinstance(e, Exception):  # Ctrl-C: the caller removes the overlay too
                raise
            return f"dropped: {_ffmpeg_reason(e) if isinstance(e, av.FFmpegError) else e}"  # the overlay stays, silent
        os.replace(moved, video)
    return f"copied ({codec})"


def _ffmpeg_reason(e: Exception) -> str:
    """FFmpeg's message without the errno and file name PyAV wraps around it."""
    text = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return str(text).rstrip(".")
