"""seglens.video on small real videos written here with PyAV (libx264), segmented by a small model."""

from __future__ import annotations

import math
import os
import re
from fractions import Fraction

import numpy as np
import pytest
from PIL import Image

from seglens import Segmenter
from seglens.video import (
    VIDEO_SUFFIXES,
    FrameReader,
    VideoError,
    VideoInfo,
    _draw_legend,
    _legend_classes,
    is_video,
    probe,
    segment_video,
)
from seglens.visualize import class_stats, voc_palette
from tests.conftest import photo, varied

av = pytest.importorskip("av")  # the optional dependency: pip install 'seglens[video]'

SMALL = "lraspp_mobilenet_v3_large"
FRAMES = 12


def write_clip(
    path,
    width: int,
    height: int,
    *,
    frames: int = FRAMES,
    pix_fmt: str = "yuv420p",
    options=None,
    container_options=None,
    rotation: int = 0,
):
    """A 24 fps libx264 clip of astronaut crops moving 4 px right and 3 px down per frame."""
    astronaut = np.asarray(photo("astronaut"))
    with av.open(str(path), "w", format="mp4", container_options=container_options or {}) as c:
        stream = c.add_stream("libx264", rate=24, options=options or {})
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if rotation:
            stream.set_display_rotation(rotation)  # degrees counter-clockwise, as phones store portrait clips
        for i in range(frames):
            crop = np.ascontiguousarray(
                astronaut[100 + 3 * i : 100 + 3 * i + height, 150 + 4 * i : 150 + 4 * i + width]
            )
            c.mux(stream.encode(av.VideoFrame.from_ndarray(crop, format="rgb24")))
        c.mux(stream.encode(None))
    return path


def decode(path, fmt: str = "rgb24") -> tuple[list[np.ndarray], object]:
    """Every frame of a video as arrays, and its (closed) stream for the metadata."""
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        return [f.to_ndarray(format=fmt) for f in c.decode(stream)], stream


def listing(folder) -> list[str]:
    return sorted(os.listdir(folder))


@pytest.fixture(scope="module")
def seg(weights_file):
    # Calibrated BatchNorm (see conftest): weights="random" gives one class everywhere, which
    # would make the label comparisons below compare constants.
    return Segmenter(SMALL, weights=weights_file(SMALL), device="cpu")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_clip(tmp_path_factory.mktemp("clips") / "clip.mp4", 96, 64)


@pytest.fixture(scope="module")
def odd_clip(tmp_path_factory):
    # 4:2:0 cannot hold odd sizes; 4:4:4 H.264 can
    return write_clip(tmp_path_factory.mktemp("clips") / "odd.mp4", 97, 63, pix_fmt="yuv444p")


def expected(seg, path, stride: int):
    """(source frame, labels) for the frames segment_video processes, segmented one at a time."""
    return [(f, seg(f.image).labels) for f in FrameReader(path, stride=stride)]


@pytest.mark.parametrize(
    ("name", "answer"),
    [
        ("clip.mp4", True),
        ("a/b/CLIP.MOV", True),
        ("x.webm", True),
        ("x.ts", True),
        ("anim.gif", False),
        ("photo.jpg", False),
        ("mp4", False),
    ],
)
def test_is_video_by_suffix(name, answer):
    assert is_video(name) is answer


def test_video_suffixes_leave_gif_to_images():
    assert VIDEO_SUFFIXES == {
        ".mp4",
        ".mov",
        ".m4v",
        ".mkv",
        ".avi",
        ".webm",
        ".mpg",
        ".mpeg",
        ".wmv",
        ".flv",
        ".ts",
        ".mts",
        ".m2ts",
        ".3gp",
    }


def test_probe(clip, odd_clip):
    # mp4 stores the count; 12 frames at 24 fps last 0.5 s
    assert probe(clip) == VideoInfo(
        width=96, height=64, fps=Fraction(24), frames=12, duration=0.5, codec="h264", rotation=0
    )
    assert probe(odd_clip) == VideoInfo(
        width=97, height=63, fps=Fraction(24), frames=12, duration=0.5, codec="h264", rotation=0
    )


def test_frame_reader_keeps_every_stride_th_frame(clip):
    reader = FrameReader(clip, stride=5)
    frames = list(reader)
    assert [f.index for f in frames] == [0, 5, 10]
    assert [f.time for f in frames] == [0.0, 5 / 24, 10 / 24]
    assert all(f.image.mode == "RGB" and f.image.size == (96, 64) for f in frames)
    assert (reader.decoded, reader.error) == (12, None)
    # the decoded pixels are the clip's (x264 at its default crf is lossy: compare loosely)
    first = np.asarray(frames[0].image).astype(int)
    source = np.asarray(photo("astronaut"))[100:164, 150:246].astype(int)
    assert np.abs(first - source).mean() < 4
    with pytest.raises(ValueError, match="stride must be an integer >= 1, got 0"):
        FrameReader(clip, stride=0)


def test_rotated_video_is_read_and_written_upright(seg, tmp_path):
    path = write_clip(tmp_path / "rot.mp4", 96, 64, frames=3, rotation=90)
    assert probe(path) == VideoInfo(
        width=64, height=96, fps=Fraction(24), frames=3, duration=0.125, codec="h264", rotation=90
    )
    stored, _ = decode(path)  # as coded: 96 wide, 64 high
    frames = list(FrameReader(path))
    assert len(frames) == 3
    for frame, array in zip(frames, stored, strict=True):
        np.testing.assert_array_equal(np.asarray(frame.image), np.rot90(array))  # 90 degrees counter-clockwise
    summary = segment_video(seg, path, tmp_path, "rot")
    assert (summary["width"], summary["height"]) == (64, 96)
    with av.open(str(tmp_path / "rot_overlay.mp4")) as c:
        written = list(c.decode(video=0))
    assert [(f.width, f.height, f.rotation) for f in written] == [(64, 96, 0)] * 3  # upright pixels, no rotation tag


def test_overlay_and_png_masks(seg, clip, tmp_path):
    out = tmp_path / "out"
    (out / "clip_mask").mkdir(parents=True)
    (out / "clip_mask" / "999999.png").write_bytes(b"stale")  # a previous run's folder is replaced
    calls = []
    summary = segment_video(seg, clip, out, "clip", outputs=("overlay", "mask"), stride=3, progress=calls.append)
    want = expected(seg, clip, 3)
    assert any(varied(labels) for _, labels in want)  # the comparisons below are not of constants

    assert listing(out) == ["clip_mask", "clip_overlay.mp4"]  # nothing temporary left
    assert calls == [1, 1, 1, 1]  # ceil(12 / 3) frames
    # masks: named by source frame index, indexed PNGs holding exactly the labels
    assert listing(out / "clip_mask") == ["000000.png", "000003.png", "000006.png", "000009.png"]
    for frame, labels in want:
        with Image.open(out / "clip_mask" / f"{frame.index:06d}.png") as mask:
            assert mask.mode == "P"
            np.testing.assert_array_equal(np.asarray(mask), labels)
    # overlay: same size, one frame per processed frame, 24 / 3 = 8 fps
    frames, stream = decode(out / "clip_overlay.mp4")
    assert len(frames) == 4 and frames[0].shape == (64, 96, 3)
    assert (stream.average_rate, stream.codec_context.pix_fmt, stream.codec_context.name) == (8, "yuv420p", "h264")

    assert {k: v for k, v in summary.items() if k not in ("seconds", "classes", "frames")} == {
        "input": str(clip),
        "kind": "video",
        "width": 96,
        "height": 64,
        "fps": 24.0,
        "stride": 3,
        "frames_total": 12,
        "frames_segmented": 4,
        "outputs": {"overlay": "clip_overlay.mp4", "mask": "clip_mask"},
        "audio": None,
        "error": None,
    }
    for entry, (frame, labels) in zip(summary["frames"], want, strict=True):
        stats = class_stats(labels, seg.categories, seg.palette)
        assert entry == {
            "index": frame.index,
            "time": round(frame.time, 4),
            "classes": {s.name: round(s.fraction, 6) for s in stats},
        }
        assert math.isclose(sum(entry["classes"].values()), 1.0, abs_tol=1e-5)  # 6-digit rounding
    # aggregate: pixels summed over the 4 frames of 96 x 64 = 24576 pixels
    counts = sum(np.bincount(labels.ravel(), minlength=256) for _, labels in want)
    assert [(c["index"], c["pixels"]) for c in summary["classes"]] == sorted(
        ((int(i), int(counts[i])) for i in np.flatnonzero(counts)), key=lambda t: (-t[1], t[0])
    )
    assert sum(c["pixels"] for c in summary["classes"]) == 4 * 96 * 64
    for c in summary["classes"]:
        assert c["fraction"] == round(c["pixels"] / (4 * 96 * 64), 6)
        assert c["color"] == list(seg.palette[c["index"]])


def test_odd_size_overlay_and_lossless_mask_video(seg, odd_clip, tmp_path):
    summary = segment_video(seg, odd_clip, tmp_path, "odd", outputs=("overlay", "mask"), stride=2, mask_format="video")
    want = expected(seg, odd_clip, 2)
    assert listing(tmp_path) == ["odd_mask.mkv", "odd_overlay.mp4"]
    assert summary["outputs"] == {"overlay": "odd_overlay.mp4", "mask": "odd_mask.mkv"}
    assert (summary["width"], summary["height"], summary["frames_segmented"], summary["error"]) == (97, 63, 6, None)

    frames, stream = decode(tmp_path / "odd_overlay.mp4")
    assert len(frames) == 6 and frames[0].shape == (63, 97, 3)  # exact odd size, no padding or crop
    assert (stream.average_rate, stream.codec_context.pix_fmt) == (12, "yuv444p")

    masks, stream = decode(tmp_path / "odd_mask.mkv", fmt="gray")
    assert stream.codec_context.name == "ffv1"
    assert len(masks) == len(want) == 6
    for mask, (_, labels) in zip(masks, want, strict=True):
        np.testing.assert_array_equal(mask, labels)  # lossless: pixel value = class index


def test_truncated_video_keeps_the_frames_that_decode(seg, tmp_path):
    # Intra-only frames of similar size, index (moov) first: the first ~60% of the bytes hold a
    # readable header and the first few frames, then a frame cut in half.
    good = write_clip(tmp_path / "good.mp4", 96, 64, options={"g": "1"}, container_options={"movflags": "faststart"})
    cut = tmp_path / "cut.mp4"
    data = good.read_bytes()
    cut.write_bytes(data[: len(data) * 6 // 10])
    reader = FrameReader(cut)
    decodable = [f.index for f in reader]
    assert 2 <= len(decodable) < FRAMES and decodable == list(range(len(decodable)))
    assert reader.error == "Invalid data found when processing input (the file may be truncated or corrupt)"

    out = tmp_path / "out"
    summary = segment_video(seg, cut, out, "cut", outputs=("overlay", "mask"))
    n = len(decodable)
    assert listing(out) == ["cut_mask", "cut_overlay.mp4"]  # finalised, no .partial left
    assert listing(out / "cut_mask") == [f"{i:06d}.png" for i in range(n)]
    assert len(decode(out / "cut_overlay.mp4")[0]) == n
    assert (summary["frames_total"], summary["frames_segmented"]) == (12, n)
    assert summary["error"] == (
        f"decoding stopped after {n} frames: Invalid data found when processing input "
        f"(the file may be truncated or corrupt); the outputs hold frames 0..{n - 1}"
    )


def test_segmentation_error_stops_and_finalises(seg, clip, tmp_path):
    class FailsOnThirdFrame:
        """A Segmenter whose stream reports an exception for the third frame."""

        def stream(self, sources, load, *, workers):
            for i, (src, result) in enumerate(seg.stream(sources, load, workers=workers)):
                yield src, (ValueError("aspect ratio\ntoo extreme") if i == 2 else result)

    summary = segment_video(FailsOnThirdFrame(), clip, tmp_path, "clip", outputs=("overlay",), stride=2)
    assert listing(tmp_path) == ["clip_overlay.mp4"]
    assert len(decode(tmp_path / "clip_overlay.mp4")[0]) == 2  # frames 0 and 2
    assert summary["error"] == "frame 4 could not be segmented (aspect ratio too extreme); the outputs hold frames 0..2"


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (
            b"this is a text file, not a video\n" * 20,
            r"clip\.mp4: cannot open as a video \(Invalid data found when processing input\)",
        ),
        (None, r"clip\.mp4: no such file \(check the path\)"),
        (b"", r"clip\.mp4: empty file \(0 bytes\); re-download or re-export it"),
    ],
)
def test_unreadable_input_raises_and_writes_nothing(seg, tmp_path, content, match):
    path = tmp_path / "clip.mp4"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(VideoError, match=match):
        probe(path)
    with pytest.raises(VideoError, match=match):
        segment_video(seg, path, tmp_path / "out", "clip", outputs=("overlay", "mask"))
    assert not (tmp_path / "out").exists()


def test_mp4_cut_before_its_index_is_a_video_error(seg, clip, tmp_path):
    # ffmpeg, like most cameras, writes the MP4 index (moov) last: a cut-off file has none
    data = clip.read_bytes()
    path = tmp_path / "clip.mp4"
    path.write_bytes(data[: len(data) * 6 // 10])
    with pytest.raises(VideoError, match="lost its index: re-download or re-export it"):
        probe(path)
    # Only the index's tail cut: it opens and lists 12 frames, but none of them decodes.
    path.write_bytes(data[:-200])
    assert probe(path).frames == 12
    reason = "decoding stopped after 0 frames: the file holds 0 of the 12 frames its header lists (truncated?)"
    with pytest.raises(
        VideoError, match=re.escape(f"clip.mp4: no frame could be segmented: {reason}; check that the file plays")
    ):
        segment_video(seg, path, tmp_path / "out", "clip", outputs=("overlay", "mask"))
    assert not (tmp_path / "out").exists()


def test_interrupt_leaves_no_outputs_and_keeps_old_ones(seg, clip, tmp_path):
    (tmp_path / "clip_overlay.mp4").write_bytes(b"previous run")
    calls = []

    def progress(n):
        calls.append(n)
        if len(calls) == 2:
            raise KeyboardInterrupt

    for mask_format in ("png", "video"):
        calls.clear()
        with pytest.raises(KeyboardInterrupt):
            segment_video(
                seg, clip, tmp_path, "clip", outputs=("overlay", "mask"), mask_format=mask_format, progress=progress
            )
        assert listing(tmp_path) == ["clip_overlay.mp4"]  # no temporaries, no new outputs
        assert (tmp_path / "clip_overlay.mp4").read_bytes() == b"previous run"


def test_disk_full_leaves_no_outputs(seg, clip, tmp_path, monkeypatch):
    import seglens.video

    written = []

    def save_mask_png(path, labels, palette):
        if written:
            raise OSError(28, "No space left on device")
        written.append(path)
        path.write_bytes(b"png")

    monkeypatch.setattr(seglens.video, "save_mask_png", save_mask_png)
    with pytest.raises(OSError, match="No space left on device"):
        segment_video(seg, clip, tmp_path / "out", "a/clip", outputs=("overlay", "mask"), stride=4)
    assert written[0].parent.name.startswith(".clip_mask.") and written[0].parent.name.endswith(".partial")
    assert listing(tmp_path / "out" / "a") == []  # the partial folder and overlay are gone


def test_missing_pyav_says_how_to_install(clip, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "av", None)  # import av -> ImportError
    with pytest.raises(VideoError, match=r"clip\.mp4: reading videos needs PyAV: pip install 'seglens\[video\]'"):
        probe(clip)


def test_bad_arguments_are_refused_before_reading(seg, clip, tmp_path):
    with pytest.raises(ValueError, match="unknown video output 'figure'; choose from overlay, mask"):
        segment_video(seg, clip, tmp_path, "clip", outputs=("figure",))
    with pytest.raises(ValueError, match="mask_format must be one of png, video, got 'gif'"):
        segment_video(seg, clip, tmp_path, "clip", outputs=("mask",), mask_format="gif")
    assert listing(tmp_path) == []


CATEGORIES = ("__background__", "aeroplane", "bicycle", "bird", "boat", "bottle")


def legend_labels(height: int, width: int) -> np.ndarray:
    """Background on the left half; classes 1..5 in vertical bands on the right half."""
    labels = np.zeros((height, width), dtype=np.uint8)
    band = (width - width // 2) // 5
    for k in range(5):
        labels[:, width // 2 + k * band : width // 2 + (k + 1) * band] = k + 1
    return labels


def legend_box(drawn: np.ndarray, plain: np.ndarray) -> tuple[slice, slice]:
    changed = np.argwhere((drawn != plain).any(axis=2))
    (y0, x0), (y1, x1) = changed.min(axis=0), changed.max(axis=0)
    return slice(y0, y1 + 1), slice(x0, x1 + 1)


@pytest.mark.parametrize(("height", "width"), [(240, 320), (1080, 1920)])
def test_legend_shows_each_class_colour_in_a_dark_box(height, width):
    palette = voc_palette()
    labels = legend_labels(height, width)
    stats = _legend_classes(class_stats(labels, CATEGORIES, palette), CATEGORIES)
    assert [s.index for s in stats] == [1, 2, 3, 4, 5]  # background (the largest) left out
    plain = np.full((height, width, 3), 200, dtype=np.uint8)
    drawn = _draw_legend(plain, stats)
    rows, cols = legend_box(drawn, plain)
    box = drawn[rows, cols]
    # text is 3% of the short side (at least 11 px): 11 px at 240, 32 px at 1080; 5 rows of it
    px = max(11, round(min(height, width) * 0.03))
    assert 5 * px < box.shape[0] < 8 * px and box.shape[1] < width // 2
    assert rows.start == cols.start == max(2, px // 3)  # top-left corner, one margin in
    assert (box[0, 0] == 80).all()  # 200 * 2/5: a 60% black box
    for s in stats:  # each swatch holds its class's exact colour over a block of pixels
        assert ((box == s.color).all(axis=2)).sum() >= (px - 2) ** 2
    assert ((box == palette[0]).all(axis=2)).sum() == 0  # no background (black) swatch
    outside = drawn.copy()
    outside[rows, cols] = 200
    assert (outside == 200).all()  # nothing drawn outside the box


def test_legend_rows_that_do_not_fit_become_a_count():
    # 96 x 64: 11 px text, 3 px padding, 14 px rows: (64 - 9) // 14 = 3 rows fit
    labels = legend_labels(64, 96)
    stats = _legend_classes(class_stats(labels, CATEGORIES, voc_palette()), CATEGORIES)
    plain = np.full((64, 96, 3), 200, dtype=np.uint8)
    drawn = _draw_legend(plain, stats)
    present = [s.index for s in stats if (drawn == s.color).all(axis=2).any()]
    assert present == [s.index for s in stats[:2]]  # two swatches, then "+3 more"
    assert _draw_legend(plain, []) is plain  # nothing to list: the frame as it was


def test_truncated_matroska_is_reported_by_its_stated_duration(tmp_path):
    # Matroska stores no frame count, but its header states the duration (3 s here): a file
    # whose frames end at ~1 s was cut short, a complete one is not flagged.
    astronaut = np.asarray(photo("astronaut"))
    good = tmp_path / "good.mkv"
    with av.open(str(good), "w") as c:
        stream = c.add_stream("libx264", rate=24, options={"g": "1"})
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(72):
            crop = np.ascontiguousarray(astronaut[2 * i : 2 * i + 48, 3 * i : 3 * i + 64])
            c.mux(stream.encode(av.VideoFrame.from_ndarray(crop, format="rgb24")))
        c.mux(stream.encode(None))
    complete = FrameReader(good)
    assert sum(1 for _ in complete) == 72 and complete.error is None
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size * 4 // 10])
    reader = FrameReader(cut)
    n = sum(1 for _ in reader)
    assert 10 < n < 50
    assert (
        reader.error is not None
        and reader.error.startswith("the frames end at ")
        and "of the 3.0 s the file states (truncated?)" in reader.error
    )


def test_variable_frame_rate_keeps_frame_times(seg, tmp_path):
    # Frames at 0, 80, 100, 180, 200, ... ms (two per 100 ms, unevenly): the overlay places each
    # frame at its own time, to the nearest tick of the output rate (1/25 s here).
    astronaut = np.asarray(photo("astronaut"))
    vfr = tmp_path / "vfr.mkv"
    times_ms = [100 * (i // 2) + (80 if i % 2 else 0) for i in range(20)]
    with av.open(str(vfr), "w") as c:
        stream = c.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for i, t in enumerate(times_ms):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(astronaut[i : i + 48, i : i + 64]), format="rgb24")
            frame.pts, frame.time_base = t, Fraction(1, 1000)
            c.mux(stream.encode(frame))
        c.mux(stream.encode(None))
    source = [f.time for f in FrameReader(vfr)]
    assert [round(t * 1000) for t in source] == times_ms
    segment_video(seg, vfr, tmp_path / "out", "vfr")
    with av.open(str(tmp_path / "out" / "vfr_overlay.mp4")) as c:
        written = [float(f.time) for f in c.decode(video=0)]
    assert len(written) == 20
    assert max(abs(a - b) for a, b in zip(written, source)) <= 0.04 + 1e-6  # within one 1/25 s tick
    assert written[-1] > 0.9  # not squeezed to 20 frames at 25 fps (0.76 s)


def _clip_with_audio(path, codec: str, container_format: str | None = None, frames: int = 12):
    """24 fps H.264 frames (as write_clip) and 0.5 s of a 440 Hz tone in ``codec``."""
    astronaut = np.asarray(photo("astronaut"))
    with av.open(str(path), "w", format=container_format) as c:
        video = c.add_stream("libx264", rate=24)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = c.add_stream(codec, rate=16000)
        audio.layout = "mono"
        for i in range(frames):
            c.mux(
                video.encode(
                    av.VideoFrame.from_ndarray(np.ascontiguousarray(astronaut[i : i + 48, i : i + 64]), format="rgb24")
                )
            )
        fmt = "fltp" if codec == "aac" else "s16"
        tone = np.sin(2 * np.pi * 440 * np.arange(8000) / 16000)
        samples = (tone.astype(np.float32) if fmt == "fltp" else (tone * 20000).astype(np.int16))[None]
        for start in range(0, 8000, 1024):
            chunk = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(samples[:, start : start + 1024]), format=fmt, layout="mono"
            )
            chunk.sample_rate, chunk.pts = 16000, start
            c.mux(audio.encode(chunk))
        c.mux(video.encode(None))
        c.mux(audio.encode(None))
    return path


def test_overlay_keeps_the_source_audio(seg, tmp_path):
    clip = _clip_with_audio(tmp_path / "talk.mp4", "aac")
    summary = segment_video(seg, clip, tmp_path / "out", "talk")
    assert summary["audio"] == "copied (aac)"
    with av.open(str(tmp_path / "out" / "talk_overlay.mp4")) as c:
        assert [s.type for s in c.streams] == ["video", "audio"]
        audio = c.streams.audio[0]
        assert abs(float(audio.duration * audio.time_base) - 0.5) < 0.1  # the whole tone, aligned at 0
        assert sum(1 for _ in c.decode(video=0)) == 12  # every frame still there
    assert listing(tmp_path / "out") == ["talk_overlay.mp4"]  # no temporary left


def test_audio_that_mp4_cannot_hold_is_dropped_and_said(seg, tmp_path):
    clip = _clip_with_audio(tmp_path / "talk.mkv", "pcm_s16le")
    summary = segment_video(seg, clip, tmp_path / "out", "talk")
    assert summary["audio"] == "dropped: pcm_s16le audio does not go into MP4 without re-encoding"
    with av.open(str(tmp_path / "out" / "talk_overlay.mp4")) as c:
        assert [s.type for s in c.streams] == ["video"]
        assert sum(1 for _ in c.decode(video=0)) == 12
    assert segment_video(seg, write_clip(tmp_path / "silent.mp4", 64, 48), tmp_path / "out", "silent")["audio"] is None
