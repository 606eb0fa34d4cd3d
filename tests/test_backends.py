"""ONNX Runtime and OpenVINO runners against torch eager, on real photographs at small sizes.

One calibrated LR-ASPP model (the fastest) and one export cache per module: the ONNX export,
the OpenVINO export and the int8 quantisation each run once.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from torchvision.transforms._presets import SemanticSegmentation

from seglens.backends import (
    BACKENDS,
    PRECISIONS,
    BackendError,
    export,
    export_dir,
    make_runner,
    quantize_int8,
)
from seglens.models import load_model
from tests.conftest import photo, varied

SMALL = "lraspp_mobilenet_v3_large"


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("seglens_cache")


@pytest.fixture(autouse=True)
def _cache_env(monkeypatch, cache_dir):
    monkeypatch.setenv("SEGLENS_CACHE", str(cache_dir))


@pytest.fixture(scope="module")
def loaded(weights_file):
    return load_model(SMALL, weights=weights_file(SMALL))


def preprocess(
    loaded, name: str, *, short_side: int | None = None, size: tuple[int, int] | None = None
) -> torch.Tensor:
    """The Segmenter's transforms (ImageNet normalisation), at a small short side or an exact (W, H)."""
    image = photo(name)
    if size is not None:
        image = image.resize(size)
    tf = SemanticSegmentation(resize_size=short_side, mean=loaded.transforms.mean, std=loaded.transforms.std)
    return tf(image)


@pytest.fixture(scope="module")
def inputs(loaded) -> list[torch.Tensor]:
    """Two sizes and a batch of two: (1, 3, 160, 240) and (2, 3, 176, 224)."""
    pair = [preprocess(loaded, n, size=(224, 176)) for n in ("astronaut", "coffee")]
    return [preprocess(loaded, "chelsea", short_side=160)[None], torch.stack(pair)]


@pytest.fixture(scope="module")
def reference(loaded, inputs) -> list[torch.Tensor]:
    with torch.no_grad():
        return [loaded.model(x)["out"] for x in inputs]


def agreement(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """Fraction of pixels, over all inputs, where the argmax labels of two logit lists agree."""
    same = sum(int((x.argmax(1) == y.argmax(1)).sum()) for x, y in zip(a, b))
    return same / sum(x[:, 0].numel() for x in a)


def check_close_to_torch(runner, inputs, reference) -> None:
    outs = [runner(x) for x in inputs]
    for x, out, ref in zip(inputs, outs, reference):
        assert out.dtype == torch.float32 and out.device.type == "cpu"
        assert out.shape == (x.shape[0], 21, x.shape[2], x.shape[3])
        assert varied(ref.argmax(1).numpy().astype(np.uint8))  # labels worth comparing
        diff = float((out - ref).abs().max())
        span = float(ref.max() - ref.min())
        assert diff < 1e-3 * span, f"max |logit diff| {diff:.3g} vs logit range {span:.3g}"
    agree = agreement(outs, reference)
    assert agree >= 0.9999, f"labels agree with torch eager on {agree:.6%} of pixels"


def test_torch_runner_is_eager_model(loaded, inputs, reference):
    runner = make_runner(loaded, backend="torch")
    assert torch.equal(runner(inputs[0]), reference[0])


def test_onnxruntime_matches_torch_at_two_sizes_and_batch_2(loaded, inputs, reference, capfd):
    runner = make_runner(loaded, backend="onnxruntime", threads=2)
    assert runner.model_path == export_dir(loaded) / "model.onnx"
    assert [i.shape for i in runner.session.get_inputs()] == [["batch", 3, "height", "width"]]
    assert [o.name for o in runner.session.get_outputs()] == ["logits"]
    check_close_to_torch(runner, inputs, reference)
    import onnx

    opset = {o.domain: o.version for o in onnx.load(str(runner.model_path), load_external_data=False).opset_import}
    assert opset[""] >= 17
    assert capfd.readouterr() == ("", "")  # exporting and running print nothing


def test_openvino_fp32_matches_torch_in_f32_not_bf16(loaded, inputs, reference):
    import openvino as ov
    import openvino.properties.hint as hints

    runner = make_runner(loaded, backend="openvino", threads=2)
    # This CPU would pick bf16 by default: the runner must ask for f32.
    assert runner.compiled_model.get_property(hints.inference_precision) == ov.Type.f32
    assert str(runner.compiled_model.get_property(hints.performance_mode)) == "LATENCY"
    check_close_to_torch(runner, inputs, reference)


def test_int8_agrees_with_fp32_and_is_cached(loaded, inputs, monkeypatch, capfd):
    calls = []

    def calibration():
        calls.append(1)
        return [preprocess(loaded, n, short_side=192) for n in ("astronaut", "chelsea", "coffee", "rocket")]

    int8 = make_runner(loaded, backend="openvino", precision="int8", calibration=calibration)
    fp32 = make_runner(loaded, backend="openvino")
    assert calls == [1]
    assert capfd.readouterr() == ("", "")  # NNCF's log lines and progress bars are silenced
    path = int8.model_path
    assert path == export_dir(loaded) / "model_int8.xml"
    # int8 weights: the .bin is about a quarter of the fp32 one
    assert path.with_suffix(".bin").stat().st_size < 0.4 * fp32.model_path.with_suffix(".bin").stat().st_size
    meta = json.loads(path.with_name("model_int8.xml.json").read_text())
    assert meta["calibration"]["count"] == 4 and len(meta["calibration"]["sha256"]) == 64

    # Random-weight models have small margins between classes (median top-2 gap ~0.15 for a logit
    # std ~0.45; bf16 alone flips labels), so int8 flips far more labels than with trained weights:
    # ~58% agreement at these small sizes, ~69% at 520 pixels. The bar is "clearly better than
    # chance": twice the share of the most common class (~22%), what a constant map would score.
    fp, q = [fp32(x) for x in inputs], [int8(x) for x in inputs]
    agree = agreement(q, fp)
    counts = np.bincount(torch.cat([f.argmax(1).ravel() for f in fp]).numpy())
    majority = counts.max() / counts.sum()
    assert agree > 2 * majority, (
        f"int8 labels agree with fp32 on {agree:.2%} of pixels (most common class {majority:.2%})"
    )

    # Second runner: the cached int8 model is reused, no calibration, no quantisation.
    import nncf

    def no_quantize(*args, **kwargs):
        raise AssertionError("quantised again instead of using the cache")

    monkeypatch.setattr(nncf, "quantize", no_quantize)
    mtime = path.stat().st_mtime_ns
    again = make_runner(loaded, backend="openvino", precision="int8", calibration=calibration)
    assert calls == [1] and path.stat().st_mtime_ns == mtime
    assert torch.equal(again(inputs[0]), q[0])
    # quantize_int8 itself reuses the model made from the same calibration tensors
    assert quantize_int8(loaded, calibration()) == path and path.stat().st_mtime_ns == mtime


def test_int8_without_calibration_or_cache_says_what_to_pass(loaded, monkeypatch, tmp_path):
    monkeypatch.setenv("SEGLENS_CACHE", str(tmp_path))
    with pytest.raises(BackendError, match="pass calibration images"):
        make_runner(loaded, backend="openvino", precision="int8")
    with pytest.raises(BackendError, match=r"\(3, H, W\) float tensors"):
        quantize_int8(loaded, [torch.zeros(1, 3, 8, 8)])
    with pytest.raises(BackendError, match="needs calibration images"):
        quantize_int8(loaded, [])


def test_export_cache_is_reused_repaired_and_keyed_by_weights(loaded, cache_dir, monkeypatch, capfd):
    import openvino as ov

    first = export(loaded, "openvino")
    assert first == cache_dir / "exports" / f"{SMALL}-{loaded.sha256[:16]}" / "model.xml"
    mtimes = [p.stat().st_mtime_ns for p in (first, first.with_suffix(".bin"))]
    convert = ov.convert_model

    def no_convert(*args, **kwargs):
        raise AssertionError("exported again instead of using the cache")

    monkeypatch.setattr(ov, "convert_model", no_convert)
    assert export(loaded, "openvino") == first
    assert [p.stat().st_mtime_ns for p in (first, first.with_suffix(".bin"))] == mtimes

    # A truncated weights file (an interrupted copy, a full disk) is noticed and exported again.
    monkeypatch.setattr(ov, "convert_model", convert)
    size = first.with_suffix(".bin").stat().st_size
    with open(first.with_suffix(".bin"), "r+b") as f:
        f.truncate(size // 2)
    assert export(loaded, "openvino") == first
    assert first.with_suffix(".bin").stat().st_size == size
    assert not [p for p in first.parent.iterdir() if p.name.startswith(".")]  # no temporary folders left
    assert capfd.readouterr() == ("", "")

    # Other weights, other folder; the same random init, the same folder.
    r0, r0_again, r1 = (load_model(SMALL, weights="random", seed=s) for s in (0, 0, 1))
    assert export_dir(r0) == export_dir(r0_again)
    assert len({export_dir(loaded), export_dir(r0), export_dir(r1)}) == 3
    assert export_dir(r0).name.startswith(f"{SMALL}-random-")


@pytest.mark.parametrize(
    ("backend", "module", "extra"),
    [("onnxruntime", "onnxruntime", "onnx"), ("openvino", "openvino", "openvino")],
)
def test_missing_package_gives_install_hint(loaded, monkeypatch, backend, module, extra):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    with pytest.raises(BackendError, match=rf"^{module} is not installed: pip install 'seglens\[{extra}\]'$"):
        make_runner(loaded, backend=backend)


def test_missing_onnx_exporter_gives_install_hint(loaded, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    with pytest.raises(BackendError, match=r"onnxscript is not installed: pip install 'seglens\[onnx\]'"):
        export(loaded, "onnx", out=tmp_path / "m.onnx")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"backend": "torch", "precision": "int8"}, "int8 needs the openvino backend.*openvino/int8"),
        ({"backend": "onnxruntime", "precision": "int8"}, "int8 needs the openvino backend.*openvino/int8"),
        ({"backend": "tensorrt"}, "unknown backend 'tensorrt'; choose one of: torch, onnxruntime, openvino"),
        ({"backend": "openvino", "precision": "fp16"}, "unknown precision 'fp16'.*openvino/fp32"),
        ({"backend": "openvino", "device": "cuda"}, "runs on the CPU"),
        ({"backend": "onnxruntime", "threads": 0}, "threads must be a positive integer"),
    ],
)
def test_invalid_combinations_list_the_valid_ones(loaded, kwargs, message):
    with pytest.raises(BackendError, match=message):
        make_runner(loaded, **kwargs)


def test_unknown_export_format(loaded):
    with pytest.raises(BackendError, match="unknown export format 'tflite'; choose one of: onnx, openvino"):
        export(loaded, "tflite")


def test_public_constants():
    assert BACKENDS == ("torch", "onnxruntime", "openvino")
    assert PRECISIONS == ("fp32", "int8")
