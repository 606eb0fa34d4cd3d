"""Image shapes a model cannot take: refused from the size alone (Segmenter.check_size), from the
file's header before anything is decoded (load_image(check_size=...)), per input by `seglens
segment`, with bounded memory."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import pickle
import random
import threading
from collections.abc import Iterator

import numpy as np
import psutil
import pytest
import torch
from PIL import Image

from seglens import Segmenter
from seglens.cli import main
from seglens.inference import ImageShapeError  # re-exported from seglens.shapes
from seglens.io import ImageLoadError, load_image
from seglens.models import LoadedModel
from seglens.shapes import _MAX_MODEL_PIXELS, _MIN_HF_SIDE, _processor_arrays, _short_side_resize
from tests.conftest import photo

SMALL = "lraspp_mobilenet_v3_large"
LIMIT = 520 * 520 * 64  # what the limit is documented as
# The three files of the issue: 1-bit PNGs of about 6 KB that would decode to 49-50 megapixels.
EXTREME = ((49_000_000, 1), (10_000_000, 5), (100_000, 490))
MAX_RSS_GROWTH = 200 * 2**20


@contextlib.contextmanager
def peak_rss() -> Iterator[dict[str, int]]:
    """Sample this process's resident memory every 20 ms in a thread; yields {"peak": bytes}."""
    process = psutil.Process()
    result = {"peak": process.memory_info().rss}
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.02):
            result["peak"] = max(result["peak"], process.memory_info().rss)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield result
    finally:
        stop.set()
        thread.join()
        result["peak"] = max(result["peak"], process.memory_info().rss)


def refused(seg: Segmenter, width: int, height: int) -> ImageShapeError | None:
    try:
        seg.check_size(width, height)
    except ImageShapeError as e:
        return e
    return None


@pytest.fixture(scope="module")
def segs(weights_file) -> dict[str, Segmenter]:
    """The same weights in each mode (loaded once)."""
    from seglens.models import load_model

    loaded = load_model(SMALL, weights=weights_file(SMALL))
    return {
        "default": Segmenter(loaded, device="cpu"),
        "scale1": Segmenter(loaded, device="cpu", scale=1.0),
        "scale2": Segmenter(loaded, device="cpu", scale=2.0),
        "tile512": Segmenter(loaded, device="cpu", tile=512),
        "tile256_half": Segmenter(loaded, device="cpu", tile=256, scale=0.5),
    }


# ---------------------------------------------------------------- the error


def test_image_shape_error_is_a_one_line_value_error_with_a_flag_free_reason():
    e = ImageShapeError((49_000_000, 1), "image is 49000000x1: too long", "use --tile 512 or crop it")
    assert isinstance(e, ValueError)
    assert (e.size, e.reason, e.cli_hint) == (
        (49_000_000, 1),
        "image is 49000000x1: too long",
        "use --tile 512 or crop it",
    )
    assert str(e) == "image is 49000000x1: too long; use --tile 512 or crop it"
    copy = pickle.loads(pickle.dumps(e))
    assert (type(copy), copy.size, copy.reason, copy.cli_hint, str(copy)) == (
        ImageShapeError,
        e.size,
        e.reason,
        e.cli_hint,
        str(e),
    )
    assert LIMIT == _MAX_MODEL_PIXELS == 17_305_600


def test_every_refusal_names_the_image_and_the_limit_and_no_flag_in_its_reason(segs):
    shapes = [*EXTREME, (1, 49_000_000), (33_281, 520), (5000, 4000), (40_000, 600)]
    expected = {  # which shapes each mode refuses (1)
        "default": [1, 1, 1, 1, 1, 0, 1],  # aspect ratio above 64:1
        "scale1": [1, 1, 1, 1, 1, 1, 1],  # all above 17305600 pixels
        "scale2": [1, 1, 1, 1, 1, 1, 1],
        "tile512": [1, 1, 1, 0, 0, 0, 1],  # min(512, height) x width above the limit
        "tile256_half": [1, 0, 0, 0, 0, 0, 0],
    }
    for mode, seg in segs.items():
        errors = [refused(seg, w, h) for w, h in shapes]
        assert [int(e is not None) for e in errors] == expected[mode], mode
        for (w, h), e in zip(shapes, errors):
            if e is not None:
                assert e.size == (w, h)
                assert e.reason.startswith(f"image is {w}x{h}") and str(LIMIT) in e.reason, e.reason
                assert "--" not in e.reason and "\n" not in str(e)
                assert "--" in e.cli_hint


# ---------------------------------------------------------------- the default mode: short side 520


def test_short_side_resize_is_what_torchvision_makes(segs):
    transforms = segs["default"].loaded.transforms
    random.seed(0)
    sizes = [(random.randint(1, 700), random.randint(1, 700)) for _ in range(25)] + [
        (1, 1),
        (520, 520),
        (521, 7),
        (7, 521),
        (64, 1),
        (1, 65),
    ]
    for w, h in sizes:
        shape = transforms(Image.new("RGB", (w, h))).shape
        assert _short_side_resize(w, h, 520) == (shape[2], shape[1]), (w, h)


@pytest.mark.parametrize("short", [1, 5, 100, 333, 490, 520, 521, 2000])
def test_default_mode_boundary_is_the_limit_at_a_520_pixel_short_side(segs, short):
    # Resized to a 520-pixel short side, the long side is int(520 * long / short); it may be at
    # most limit / 520 = 33280, i.e. 520 * long / short < 33281: long < 33281 * short / 520.
    longest = math.ceil(33_281 * short / 520) - 1
    seg = segs["default"]
    for w, h in ((longest, short), (short, longest)):  # wide and tall
        assert refused(seg, w, h) is None
    for w, h in ((longest + 1, short), (short, longest + 1)):
        e = refused(seg, w, h)
        assert e is not None and "aspect ratio at most 64:1" in e.reason
    nw, nh = _short_side_resize(longest, short, 520)
    assert nh == 520 and nw * nh <= LIMIT < _short_side_resize(longest + 1, short, 520)[0] * 520


def test_default_mode_messages_of_the_issue_files(segs):
    seg = segs["default"]
    assert str(refused(seg, 49_000_000, 1)) == (
        "image is 49000000x1: the model's resize to a 520-pixel short side makes it 25480000000x520, "
        "above the limit of 17305600 pixels for one pass (aspect ratio at most 64:1); "
        "crop it (it is too thin for --tile too)"
    )
    assert str(refused(seg, 10_000_000, 5)).endswith(
        "makes it 1040000000x520, above the limit of 17305600 pixels for one pass (aspect ratio at most 64:1); "
        "crop it (it is too thin for --tile too)"
    )
    # one row of 173-pixel windows across 100000 pixels holds 17300000 <= limit; 174 would not
    assert str(refused(seg, 100_000, 490)).endswith(
        "makes it 106122x520, above the limit of 17305600 pixels for one pass (aspect ratio at most 64:1); "
        "use --tile 173 (full resolution, in windows) or crop it"
    )
    assert (
        refused(seg, 40_000, 600).cli_hint == "use --tile 432 (full resolution, in windows) or crop it"
    )  # 432 x 40000 fits
    assert refused(seg, 1, 49_000_000).cli_hint == "use --tile 512 (full resolution, in windows) or crop it"


def test_preprocess_checks_before_resizing(segs, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("resized before the size was checked")

    seg = segs["default"]
    monkeypatch.setattr(type(seg.loaded.transforms), "forward", boom)
    monkeypatch.setattr(Image.Image, "resize", boom)
    thin = Image.new("1", (10_000_000, 5))  # 6 MB as stored; 150 MB as RGB, 1 GB+ resized
    with pytest.raises(ImageShapeError, match=r"^image is 10000000x5: "):
        seg.preprocess(thin)
    with pytest.raises(
        ImageShapeError,
        match=r"^image is 10000000x5: 50000000 pixels, above the limit of 17305600 pixels for one pass; "
        r"use a smaller --scale or crop it$",
    ):
        segs["scale1"].preprocess(thin)
    with pytest.raises(ImageShapeError, match=r"^image is 20000x100: "):
        seg(np.zeros((100, 20000), np.uint8))  # arrays and PIL images go through preprocess too


# ---------------------------------------------------------------- scale and tile


def test_scale_mode_boundary_is_the_scaled_pixel_count(segs):
    one, two = segs["scale1"], segs["scale2"]
    assert refused(one, LIMIT, 1) is None and refused(one, 33_280, 520) is None and refused(one, 4160, 4160) is None
    for w, h in ((LIMIT + 1, 1), (33_281, 520), (4161, 4160)):
        assert (
            refused(one, w, h).reason
            == f"image is {w}x{h}: {w * h} pixels, above the limit of {LIMIT} pixels for one pass"
        )
    # scale 2: max(1, round(side * 2)) per side
    assert refused(two, 16_640, 260) is None and refused(two, LIMIT // 4, 1) is None  # 33280x520, 8652800x2
    assert refused(two, LIMIT // 4 + 1, 1) is not None
    e = refused(two, 16_641, 260)
    assert e.reason == (
        f"image is 16641x260 (at scale 2, 33282x520): {33_282 * 520} pixels, "
        f"above the limit of {LIMIT} pixels for one pass"
    )
    assert e.cli_hint == "add --tile 512 (in windows) or use a smaller --scale"
    assert refused(one, 49_000_000, 1).cli_hint == "use a smaller --scale or crop it"
    assert refused(one, 100_000, 490).cli_hint == "add --tile 173 (in windows) or use a smaller --scale"


def test_tile_mode_boundary_is_one_row_of_windows(segs):
    # The tiled path holds classes x min(tile, height) x width float32 at once (see _tiled).
    seg = segs["tile512"]
    widest = LIMIT // 512  # 33800
    assert refused(seg, widest, 5000) is None and refused(seg, widest, 512) is None
    assert refused(seg, LIMIT, 1) is None and refused(seg, LIMIT // 490, 490) is None
    assert refused(seg, 1, 49_000_000) is None  # tall: a row of windows is 512 x 1 pixels
    assert refused(seg, 10_000, 10_000) is None
    e = refused(seg, widest + 1, 5000)
    assert e.reason == (
        f"image is 33801x5000: one row of 512-pixel windows across it holds 512x33801 = {512 * 33_801} pixels "
        f"of logits, above the limit of {LIMIT}"
    )
    assert e.cli_hint == "use --tile 511 or smaller, or crop it"
    assert (
        refused(seg, LIMIT + 1, 1).cli_hint
        == "crop it or use a smaller --scale (no --tile size helps an image this thin)"
    )
    assert str(refused(seg, 49_000_000, 1)) == (
        "image is 49000000x1: one row of 512-pixel windows across it holds 1x49000000 = 49000000 pixels of logits, "
        "above the limit of 17305600; crop it or use a smaller --scale (no --tile size helps an image this thin)"
    )
    assert refused(seg, 100_000, 490).cli_hint == "use --tile 173 or smaller, or crop it"
    assert refused(seg, 10_000_000, 5) is not None
    # with --scale 0.5 the windows run over the scaled image: max(1, round(side / 2)) per side
    half = segs["tile256_half"]
    assert refused(half, 2 * (LIMIT // 256), 1000) is None
    e = refused(half, 2 * (LIMIT // 256) + 2, 1000)
    assert e.reason.startswith(
        "image is 135202x1000 (at scale 0.5, 67601x500): one row of 256-pixel windows across it holds 256x67601"
    )


def test_tiny_inputs_run_on_torchvision_models(segs):
    # No minimum side for torchvision's networks: they run on 1-pixel inputs and windows.
    for seg in (segs["scale1"], segs["tile512"]):
        for w, h in ((1, 1), (300, 1), (1, 300), (2, 3)):
            assert refused(seg, w, h) is None
            assert seg(Image.new("RGB", (w, h), (120, 80, 40))).labels.shape == (h, w)


def test_no_pixels_is_refused(segs):
    assert refused(segs["default"], 0, 10).reason == "image is 0x10: it has no pixels"


# ---------------------------------------------------------------- Hugging Face preprocessing

transformers_missing = pytest.mark.skipif(
    importlib.util.find_spec("transformers") is None, reason="needs transformers (pip install 'seglens[hf]')"
)


def _processors(backend: str = "") -> dict:
    import transformers as T

    def make(name, **kwargs):
        return getattr(T, f"{name}ImageProcessor{backend}")(**kwargs)

    return {
        "segformer": make("Segformer", size={"height": 96, "width": 128}),
        "beit_crop": make(
            "Beit", size={"height": 80, "width": 80}, do_center_crop=True, crop_size={"height": 64, "width": 48}
        ),
        "dpt": make("DPT", size={"height": 64, "width": 96}),
        "dpt_keep_aspect": make("DPT", size={"height": 64, "width": 64}, keep_aspect_ratio=True, ensure_multiple_of=32),
        "dpt_pad": make(
            "DPT",
            size={"height": 64, "width": 64},
            keep_aspect_ratio=True,
            ensure_multiple_of=14,
            do_pad=True,
            size_divisor=32,
        ),
        "mobilevit": make("MobileViT", size={"shortest_edge": 80}, crop_size={"height": 64, "width": 64}),
        "mobilenet_v2": make("MobileNetV2", size={"shortest_edge": 72}, crop_size={"height": 64, "width": 64}),
        "mask2former": make("Mask2Former", size={"shortest_edge": 96, "longest_edge": 160}),
        "maskformer": make("MaskFormer", size={"shortest_edge": 64, "longest_edge": 100}, size_divisor=16),
        "oneformer": make(
            "OneFormer", size={"shortest_edge": 64, "longest_edge": 200}, class_info_file=None, num_text=1
        ),
        "max_height_width": make("Segformer", size={"max_height": 100, "max_width": 70}),
        "no_resize": make("Segformer", do_resize=False),
    }


@transformers_missing
@pytest.mark.parametrize("backend", ["", "Pil"])
def test_processor_arrays_are_what_the_processors_make(backend):
    random.seed(1)
    sizes = [(random.randint(1, 400), random.randint(1, 400)) for _ in range(30)] + [
        (300, 3),
        (3, 300),
        (1000, 7),
        (64, 64),
        (1, 1),
    ]
    for name, processor in _processors(backend).items():
        for w, h in sizes:
            arrays = _processor_arrays(processor, w, h)
            kwargs = {"task_inputs": ["semantic"]} if name == "oneformer" else {}
            if min(arrays[-1]) < 1:  # a zero side: the processor itself fails, check_size refuses
                with pytest.raises(Exception):
                    processor(images=Image.new("RGB", (w, h)), return_tensors="pt", **kwargs)
                continue
            shape = processor(images=Image.new("RGB", (w, h)), return_tensors="pt", **kwargs)["pixel_values"].shape
            assert arrays[-1] == (shape[-1], shape[-2]), (name, w, h)


def _hf_segmenter(processor, **kwargs) -> Segmenter:
    """A Segmenter whose preprocessing is ``processor`` (the network is never run here)."""
    from seglens.hf import _ProcessorTransform

    loaded = LoadedModel(
        name="hf:test", model=torch.nn.Identity(), categories=("a", "b"), transforms=_ProcessorTransform(processor),
        weights="official", weights_tag="test", sha256=None, meaningful=True, normalize=((0.5,) * 3, (0.5,) * 3),
    )  # fmt: skip
    return Segmenter(loaded, device="cpu", **kwargs)


@transformers_missing
def test_hugging_face_default_mode_limits():
    import transformers as T

    fixed = _hf_segmenter(T.SegformerImageProcessor(size={"height": 512, "width": 512}))
    assert refused(fixed, 49_000_000, 1) is None  # shrinking the width first: 512x1, then 512x512
    # A tall image's width is resized first: a (512 x height) array, at most the limit or the image.
    assert refused(fixed, 1, LIMIT // 512) is None and refused(fixed, 2000, 40_000) is None
    e = refused(fixed, 1, LIMIT // 512 + 1)
    assert e.reason == (
        f"image is 1x33801: the model's image processor would pass it through a 512x33801 array, "
        f"{512 * 33_801} pixels, above the limit of {LIMIT}"
    )
    assert e.cli_hint == "crop it (it is too thin for --tile too)"  # its network needs 32 pixels per side
    assert refused(fixed, 32, 33_801).cli_hint == "use --tile 512 (full resolution, in windows) or crop it"
    assert refused(fixed, 1, 49_000_000) is not None  # a 25-gigapixel array (measured: fails allocating 100 GB)
    # arrays on the way may be as large as the image itself when that is above the limit
    assert refused(fixed, 600, 40_000) is None  # 512x40000 < 600x40000
    assert refused(fixed, 400, 50_000).reason.endswith(
        f"512x50000 array, 25600000 pixels, above the limit of {LIMIT} and the image's own 20000000"
    )

    mask2former = _hf_segmenter(T.Mask2FormerImageProcessor(size={"shortest_edge": 384, "longest_edge": 1536}))
    e = refused(mask2former, 4_900_000, 1)  # the processor's own resize would be 1536x0 and fail
    assert e.reason == (
        "image is 4900000x1: the model's image processor would make a 1536x0 network input of it, "
        "with no pixels on one side"
    )
    assert refused(mask2former, 100_000, 49) is None  # 1536x32: rounded up to a multiple of 32

    mobilevit = _hf_segmenter(
        T.MobileViTImageProcessor(size={"shortest_edge": 512}, crop_size={"height": 512, "width": 512})
    )
    e = refused(mobilevit, 100_000, 49)  # measured: 3.8 GB and 13 s before the centre crop
    assert e.reason == (
        f"image is 100000x49: the model's image processor would pass it through a 1044897x49 array, "
        f"{1_044_897 * 49} pixels, above the limit of {LIMIT}"
    )
    assert refused(mobilevit, 8000, 6000) is None and refused(mobilevit, 33_280, 520) is None


@transformers_missing
def test_hugging_face_networks_need_32_pixels_per_side_with_scale_or_tile():
    import transformers as T

    processor = T.SegformerImageProcessor(size={"height": 512, "width": 512})
    for seg in (_hf_segmenter(processor, scale=1.0), _hf_segmenter(processor, tile=64)):
        assert refused(seg, _MIN_HF_SIDE, _MIN_HF_SIDE) is None and refused(seg, 5000, 32) is None
        for w, h in ((31, 500), (500, 31)):
            e = refused(seg, w, h)
            assert e.reason == f"image is {w}x{h}: under the 32 pixels per side this model's network needs"
            assert e.cli_hint == "use a larger --scale, or neither --scale nor --tile (the model's own resize)"
    assert refused(_hf_segmenter(processor), 500, 31) is None  # its own resize makes 512x512
    assert refused(_hf_segmenter(processor, scale=0.5), 64, 100) is None
    assert (
        refused(_hf_segmenter(processor, scale=0.5), 62, 100).reason
        == "image is 62x100 (at scale 0.5, 31x50): under the 32 pixels per side this model's network needs"
    )


# ---------------------------------------------------------------- from the header, through the CLI


@pytest.fixture(scope="module")
def extreme_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shapes")
    paths = []
    for w, h in EXTREME:
        path = folder / f"{w}x{h}.png"
        Image.new("1", (w, h)).save(path)
        assert path.stat().st_size < 10_000
        paths.append(path)
    good = folder / "astronaut.jpg"
    photo("astronaut").save(good, quality=90)
    return paths, good


def test_load_image_refuses_the_issue_files_from_the_header(segs, extreme_files):
    paths, good = extreme_files
    seg = segs["default"]
    with peak_rss() as rss:
        before = psutil.Process().memory_info().rss
        for path in paths:
            with pytest.raises(ImageLoadError) as info:
                load_image(path, check_size=seg.check_size)
            assert info.value.kind == "bad_shape"
            assert isinstance(info.value.__cause__, ImageShapeError)
            assert info.value.reason == str(info.value.__cause__)
            with pytest.raises(ImageLoadError) as info:  # the Segmenter's own readers pass it too
                seg(path)
            assert info.value.kind == "bad_shape"
    assert rss["peak"] - before < 50 * 2**20
    assert load_image(good, check_size=seg.check_size).size == (512, 512)


@pytest.mark.parametrize("tile", [None, 512])
def test_segment_refuses_the_issue_files_one_line_each(extreme_files, tmp_path, capsys, weights_file, tile):
    paths, good = extreme_files
    out = tmp_path / "out"
    options = ["--model", SMALL, "--weights", weights_file(SMALL), "-q", *(["--tile", tile] if tile else [])]
    # warm up: imports, the model, matplotlib's first figure (not what is measured)
    assert main([str(a) for a in ["segment", good, "--out", tmp_path / "warm", *options]]) == 0
    capsys.readouterr()
    before = psutil.Process().memory_info().rss
    with peak_rss() as rss:  # the PNGs were made before: only reading them counts
        code = main([str(a) for a in ["segment", *paths, good, "--out", out, *options]])
    growth = rss["peak"] - before
    _, err = capsys.readouterr()
    assert code == 1
    assert growth < MAX_RSS_GROWTH, f"RSS grew by {growth / 2**20:.0f} MiB"
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 3, err
    for (w, h), path in zip(EXTREME, paths):
        line = next(line for line in errors if line.startswith(f"error: {path}: "))
        assert line.startswith(f"error: {path}: image is {w}x{h}")
        assert "17305600" in line and "--tile" in line
    expected = {
        None: {
            "49000000x1": "crop it (it is too thin for --tile too)",
            "10000000x5": "crop it (it is too thin for --tile too)",
            "100000x490": "use --tile 173 (full resolution, in windows) or crop it",
        },
        512: {
            "49000000x1": "crop it or use a smaller --scale (no --tile size helps an image this thin)",
            "10000000x5": "crop it or use a smaller --scale (no --tile size helps an image this thin)",
            "100000x490": "use --tile 173 or smaller, or crop it",
        },
    }[tile]
    for line in errors:
        stem = next(s for s in expected if f"{s}.png: " in line)
        assert line.endswith("; " + expected[stem])
    assert err.splitlines()[-1] == f"finished with errors: 1 segmented, 0 skipped, 3 failed -> {out}/ (summary.json)"
    assert sorted(p.name for p in out.iterdir()) == [
        "astronaut.png",
        "astronaut_figure.png",
        "astronaut_overlay.jpg",
        "summary.csv",
        "summary.json",
    ]
    summary = json.loads((out / "summary.json").read_text())
    assert [e["input"] for e in summary["images"]] == [str(good)]
    assert sorted(f["input"] for f in summary["failed"]) == sorted(str(p) for p in paths)
    assert all(f["error"].startswith("image is ") for f in summary["failed"])


# ---------------------------------------------------------------- videos


def test_video_frame_size_is_checked_before_frames_are_decoded(segs, tmp_path, monkeypatch):
    av = pytest.importorskip("av")
    from seglens import video

    path = tmp_path / "strip.mp4"
    with av.open(str(path), "w", format="mp4") as c:  # 2000x30: 66.7:1, more than 64:1
        stream = c.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 2000, 30, "yuv420p"
        for _ in range(3):
            c.mux(stream.encode(av.VideoFrame.from_ndarray(np.zeros((30, 2000, 3), np.uint8), format="rgb24")))
        c.mux(stream.encode(None))

    def no_decoding(self):
        raise AssertionError("frames decoded before the size was checked")

    monkeypatch.setattr(video.FrameReader, "__iter__", no_decoding)
    with pytest.raises(video.VideoError) as info:
        video.segment_video(segs["default"], path, tmp_path / "out", "strip", outputs=("overlay", "mask"))
    assert info.value.reason == str(refused(segs["default"], 2000, 30))
    assert info.value.reason.startswith(
        "image is 2000x30: the model's resize to a 520-pixel short side makes it 34666x520"
    )
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
