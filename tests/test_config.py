"""SegmenterConfig: each check at its boundary, frozen, and the two ways to make a Segmenter."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys

import pytest

from seglens import Segmenter, SegmenterConfig
from seglens.config import BACKEND_PRECISIONS, DEFAULT_MODEL, ConfigError

SMALL = "lraspp_mobilenet_v3_large"


def test_fields_are_segmenters_keywords_with_the_same_defaults():
    from seglens.io import DEFAULT_MAX_PIXELS

    names = [f.name for f in dataclasses.fields(SegmenterConfig)]
    assert names == [
        "model", "weights", "device", "batch_size", "max_pixels", "progress", "seed", "backend", "precision",
        "channels_last", "compile", "calibration", "scale", "tile", "overlap", "confidence", "refine",
        "window_progress",
    ]  # fmt: skip
    c = SegmenterConfig()
    assert (c.model, c.weights, c.device, c.batch_size, c.max_pixels, c.progress, c.seed) == (
        DEFAULT_MODEL,
        "official",
        "auto",
        1,
        DEFAULT_MAX_PIXELS,
        True,
        0,
    )
    assert (c.backend, c.precision, c.channels_last, c.compile, c.calibration) == ("torch", "fp32", None, False, None)
    assert (c.scale, c.tile, c.overlap, c.confidence, c.refine, c.window_progress) == (
        None,
        None,
        0.25,
        False,
        (),
        None,
    )


def test_copies_agree_with_the_torch_modules():
    from seglens import config
    from seglens.backends import AUTO_EXPORT_IMAGES, BACKENDS
    from seglens.models import DEFAULT_MODEL as MODELS_DEFAULT

    assert DEFAULT_MODEL == MODELS_DEFAULT
    assert tuple(BACKEND_PRECISIONS) == BACKENDS
    assert config.AUTO_EXPORT_IMAGES == AUTO_EXPORT_IMAGES


def test_importing_the_config_loads_no_torch():
    code = "import sys; from seglens import SegmenterConfig; SegmenterConfig(tile=64); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_only_model_is_positional():
    assert SegmenterConfig(SMALL).model == SMALL
    with pytest.raises(TypeError):
        SegmenterConfig(SMALL, "official")  # type: ignore[misc]


def test_frozen_and_replace_checks_again():
    c = SegmenterConfig(SMALL, tile=64)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.tile = 16  # type: ignore[misc]
    assert c.replace(tile=32).tile == 32 and c.tile == 64
    with pytest.raises(ConfigError, match="tile must be at least 32 pixels, got 31"):
        c.replace(tile=31)
    with pytest.raises(ConfigError, match="tile must be at least 32 pixels, got 16"):
        dataclasses.replace(c, tile=16)
    assert c == SegmenterConfig(SMALL, tile=64) and c != SegmenterConfig(SMALL, tile=65)
    assert hash(c) == hash(SegmenterConfig(SMALL, tile=64))


@pytest.mark.parametrize(
    "field, good, bad, message",
    [
        ("batch_size", 1, 0, "batch_size must be >= 1, got 0"),
        ("max_pixels", 1, 0, "max_pixels must be a positive integer or None, got 0"),
        ("max_pixels", None, -5, "max_pixels must be a positive integer or None, got -5"),
        ("scale", 16, 16.000001, r"scale must be in \(0, 16\], got 16.000001"),
        ("scale", 1e-9, 0, r"scale must be in \(0, 16\], got 0"),
        ("scale", None, -1.0, r"scale must be in \(0, 16\], got -1.0"),
        ("scale", 2.0, math.nan, r"scale must be in \(0, 16\], got nan"),
        ("tile", 32, 31, "tile must be at least 32 pixels, got 31"),
        ("tile", None, 16, "tile must be at least 32 pixels, got 16"),
        ("overlap", 0, 1, r"overlap must be in \[0, 1\), got 1"),
        ("overlap", 0.999, -0.001, r"overlap must be in \[0, 1\), got -0.001"),
        ("overlap", 0.5, math.nan, r"overlap must be in \[0, 1\), got nan"),
        ("backend", "openvino", "tensorrt", "unknown backend 'tensorrt'; choose torch, onnxruntime, openvino"),
    ],
)
def test_each_range_check_at_its_boundary(field, good, bad, message):
    assert getattr(SegmenterConfig(**{field: good}), field) == good
    with pytest.raises(ConfigError, match=message) as info:
        SegmenterConfig(**{field: bad})
    assert info.value.field == field
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("backend, precisions", list(BACKEND_PRECISIONS.items()))
def test_precision_must_fit_the_backend(backend, precisions):
    for precision in ("fp32", "fp16", "bf16", "int8", "fp8"):
        if precision in precisions:
            assert SegmenterConfig(backend=backend, precision=precision).precision == precision
            continue
        with pytest.raises(ConfigError, match=f"precision '{precision}' with backend={backend}: choose") as info:
            SegmenterConfig(backend=backend, precision=precision)
        assert info.value.field == "precision"
        assert ("int8 needs backend=openvino" in str(info.value)) == (precision == "int8")


def test_hugging_face_models_only_with_torch():
    assert SegmenterConfig("hf:org/repo").backend == "torch"
    for backend in ("onnxruntime", "openvino"):
        with pytest.raises(ConfigError, match="hf:org/repo: Hugging Face models run with backend=torch only") as info:
            SegmenterConfig("hf:org/repo", backend=backend)
        assert info.value.field == "backend"
    assert (
        SegmenterConfig("not-hf:org/repo", backend="openvino").backend == "openvino"
    )  # a name for load_model to refuse


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"model": ""}, "model must be a model name or a LoadedModel"),
        ({"model": 3}, "model must be a model name or a LoadedModel"),
        ({"batch_size": 2.0}, "batch_size must be an integer"),
        ({"batch_size": True}, "batch_size must be an integer"),
        ({"max_pixels": 1.5}, "max_pixels must be a positive integer or None"),
        ({"seed": "1"}, "seed must be an integer"),
        ({"scale": "2"}, "scale must be a number or None"),
        ({"tile": 64.0}, "tile must be an integer number of pixels or None"),
        ({"overlap": None}, "overlap must be a number"),
        ({"window_progress": 3}, "window_progress must be callable or None"),
    ],
)
def test_wrong_kinds_are_type_errors(changes, match):
    with pytest.raises(TypeError, match=match):
        SegmenterConfig(**changes)


def test_calibration_is_kept_as_a_tuple():
    from PIL import Image

    images = [Image.new("RGB", (8, 8)), Image.new("RGB", (9, 9))]
    c = SegmenterConfig(backend="openvino", precision="int8", calibration=images)
    assert isinstance(c.calibration, tuple) and list(c.calibration) == images


def test_segmenter_from_a_config_equals_segmenter_from_keywords(weights_file):
    kw = {
        "weights": weights_file(SMALL),
        "device": "cpu",
        "batch_size": 2,
        "tile": 64,
        "overlap": 0.5,
        "confidence": True,
    }
    config = SegmenterConfig(SMALL, **kw)
    a, b = Segmenter(config), Segmenter(SMALL, **kw)
    assert a.config is config
    assert a.config == b.config == config
    assert (a.tile, a.overlap, a.scale, a.batch_size, a.confidence) == (
        b.tile,
        b.overlap,
        b.scale,
        b.batch_size,
        b.confidence,
    )
    assert a.scale == 1.0 and config.scale is None  # tile implies full resolution; the config keeps what was asked
    assert Segmenter(model=SMALL, **kw).config == config  # the old keyword name still works


def test_keyword_and_config_forms_refuse_mixing(weights_file):
    config = SegmenterConfig(SMALL, weights=weights_file(SMALL), device="cpu")
    with pytest.raises(TypeError, match=r"Segmenter\(config\) takes no keywords \(got batch_size, tile\)"):
        Segmenter(config, tile=64, batch_size=2)
    with pytest.raises(TypeError, match="got the model twice"):
        Segmenter(SMALL, model="fcn_resnet50")
    with pytest.raises(TypeError, match=r"Segmenter\(\) got an unexpected keyword argument 'tiles'"):
        Segmenter(SMALL, tiles=64)


def test_segmenter_checks_through_the_config_before_loading_anything():
    # weights that do not exist: the config's check comes first, nothing is read
    with pytest.raises(ConfigError, match="tile must be at least 32 pixels, got 16"):
        Segmenter(SMALL, weights="/no/such/file.pth", tile=16)
    with pytest.raises(ValueError, match="int8 needs backend=openvino"):
        Segmenter(SMALL, weights="/no/such/file.pth", precision="int8")
