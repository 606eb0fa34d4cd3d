"""seglens.bench: structure and honesty of the benchmark, never its timings (machines are noisy)."""

import json
import math
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.models import get_model_weights

from seglens import Segmenter
from seglens.bench import (
    PRESETS,
    ROW_KEYS,
    BenchConfig,
    _stream_calls,
    default_configs,
    format_table,
    gemm_roofline,
    naive_colorize,
    naive_predict,
    parse_configs,
    run_bench,
)
from seglens.models import load_model
from seglens.visualize import colorize, voc_palette
from tests.conftest import calibrated_model, varied

SMALL = "lraspp_mobilenet_v3_large"
N = 3  # two distinct images, cycled: astronaut, chelsea, astronaut


def plain_torchvision(model, image):
    """The reference: weights.transforms() -> model -> bilinear upsample to the original size -> argmax."""
    x = get_model_weights(SMALL).DEFAULT.transforms()(image).unsqueeze(0)
    with torch.no_grad():
        out = model(x)["out"]
    up = F.interpolate(out, size=(image.height, image.width), mode="bilinear", align_corners=False)
    return up.argmax(1)[0].numpy()


def labels_of(path, colors):
    """A written mask read back: indexed PNG values, or RGB colours mapped to their class."""
    with Image.open(path) as im:
        if im.mode == "P":
            return np.asarray(im)
        rgb = np.asarray(im.convert("RGB"))
    out = np.full(rgb.shape[:2], 255, dtype=np.uint8)
    for label, color in enumerate(colors):
        out[(rgb == color).all(axis=2)] = label
    assert (out != 255).all(), f"{path} has colours outside the palette"
    return out


@pytest.fixture(scope="module")
def image_files(tmp_path_factory, photos):
    d = tmp_path_factory.mktemp("bench_images")
    paths = [d / "astronaut.jpg", d / "chelsea.png"]
    photos[0].save(paths[0], quality=92)
    photos[1].save(paths[1])
    return paths


@pytest.fixture(scope="module")
def bench(tmp_path_factory, image_files, weights_file):
    """One small run shared by the structure tests: naive + three torch configurations."""
    work = tmp_path_factory.mktemp("bench_work")
    messages = []
    configs = parse_configs("eager-fp32,seglens,torch:batch=2")
    rows, meta = run_bench(
        SMALL,
        weights=str(weights_file(SMALL)),
        images=image_files,
        n=N,
        configs=configs,
        work_dir=work,
        progress=messages.append,
    )
    return rows, meta, work, messages


def test_naive_labels_equal_plain_torchvision(photos, weights_file):
    reference = calibrated_model(SMALL)  # the same weights weights_file() saved
    loaded = load_model(SMALL, weights=weights_file(SMALL))
    for image in photos:
        expected = plain_torchvision(reference, image)
        assert varied(expected)  # the comparison is not between two constant maps
        np.testing.assert_array_equal(naive_predict(loaded.model, loaded.transforms, image), expected)


def test_naive_colouring_loop_equals_colorize(photos, weights_file):
    loaded = load_model(SMALL, weights=weights_file(SMALL))
    preds = naive_predict(loaded.model, loaded.transforms, photos[1])
    every_class = np.arange(21).repeat(3).reshape(7, 9)  # each of the 21 labels three times
    colors = voc_palette(21)
    for labels in (preds, every_class):
        np.testing.assert_array_equal(naive_colorize(labels, colors), colorize(labels, colors))
        np.testing.assert_array_equal(naive_colorize(labels, colors), colorize(labels, voc_palette(256)))


def test_rows_naive_first_with_every_key(bench):
    rows, meta, _, messages = bench
    assert [r["name"] for r in rows] == ["naive", "eager-fp32", "seglens", "torch:batch=2"]
    for r in rows:
        assert set(ROW_KEYS) <= set(r)
        for key in ("images_per_s", "latency_p50_ms", "latency_p95_ms", "gflops_per_s", "roofline_pct", "peak_rss_mb"):
            assert isinstance(r[key], float) and math.isfinite(r[key]) and r[key] > 0, (r["name"], key)
        assert r["latency_p95_ms"] >= r["latency_p50_ms"]
        assert 0.0 <= r["agreement_vs_naive"] <= 1.0
        assert r["threads"] == torch.get_num_threads() and r["device"] == "cpu"
        assert (r["backend"], r["precision"], r["dtype"]) == ("torch", "fp32", "float32")
        assert r["n_images"] == N and 1 <= r["latency_calls"] <= N
    assert [r["batch_size"] for r in rows] == [1, 1, 1, 2]
    assert rows[0]["agreement_vs_naive"] == 1.0 and rows[0]["speedup_vs_naive"] == 1.0
    assert rows[2]["speedup_vs_naive"] == rows[2]["images_per_s"] / rows[0]["images_per_s"]
    for r in rows[1:]:
        assert r["agreement_vs_naive"] >= 0.9999, r["name"]
    assert meta["skipped"] == [] and messages and messages[0].startswith("GEMM roofline")
    json.dumps([rows, meta], allow_nan=False)  # the CLI's --json output


def test_meta_describes_the_machine_and_inputs(bench, image_files):
    _, meta, _, _ = bench
    assert meta["threads"] == torch.get_num_threads() and meta["roofline_gflops"] > 0
    assert meta["n_images"] == N and meta["distinct_images"] == 2 and meta["warmup_passes"] == 1
    assert meta["versions"]["torch"] and meta["versions"]["torchvision"] and meta["machine"]["cpu"]
    # 512x512 -> 520x520; 451x300 -> short side 520, long side int(451 * 520 / 300) = 781
    assert [(i["width"], i["height"], i["model_input_hw"]) for i in meta["images"]] == [
        (512, 512, [520, 520]),
        (451, 300, [520, 781]),
    ]
    assert meta["model"] == SMALL and meta["gmacs_520"] > 0
    assert set(meta["load_average"]) == {"start", "end"}
    assert len(meta["roofline_samples_gflops"]) == 4 and meta["roofline_gflops"] == max(meta["roofline_samples_gflops"])


def test_masks_written_and_compared_honestly(bench, image_files, weights_file):
    _, _, work, _ = bench
    folders = sorted(p for p in work.iterdir() if p.is_dir())
    assert [f.name for f in folders] == ["00_naive", "01_eager-fp32", "02_seglens", "03_torch_batch=2"]
    colors = voc_palette(21)
    loaded = load_model(SMALL, weights=weights_file(SMALL))
    decoded = [Image.open(p).convert("RGB") for p in image_files]  # the files, JPEG losses included
    expected = [naive_predict(loaded.model, loaded.transforms, decoded[k % 2]) for k in range(N)]
    names = ["0000_astronaut.png", "0001_chelsea.png", "0002_astronaut.png"]
    for folder in folders:
        assert sorted(p.name for p in folder.glob("*.png")) == names  # n masks, the sequence cycled
        assert len(list((folder / "_warmup").glob("*.png"))) == 2  # warm-up: one pass, kept apart
        masks = [labels_of(folder / name, colors) for name in names]
        assert [m.shape for m in masks] == [(512, 512), (300, 451), (512, 512)]
        equal = sum(int((m == e).sum()) for m, e in zip(masks, expected))
        assert equal / sum(e.size for e in expected) >= 0.9999, folder.name
        if folder.name == "00_naive":  # the seed's colour PNGs hold exactly its labels
            for m, e in zip(masks, expected):
                np.testing.assert_array_equal(m, e)
        else:
            with Image.open(folder / names[0]) as im:
                assert im.mode == "P"  # seglens writes indexed masks


def test_format_table_names_every_row_and_the_machine(bench):
    rows, meta, _, _ = bench
    table = format_table(rows, meta)
    for r in rows:
        assert r["name"] in table
    assert f"threads {torch.get_num_threads()}" in table
    assert meta["machine"]["cpu"] in table and "roofline" in table and "781x520" in table


def test_unavailable_backend_is_skipped_with_a_note(monkeypatch, tmp_path, image_files, weights_file):
    monkeypatch.setitem(sys.modules, "seglens.backends", None)  # any import of it now fails
    rows, meta = run_bench(
        SMALL,
        weights=str(weights_file(SMALL)),
        images=image_files[:1],
        n=1,
        configs=[PRESETS["onnxruntime-fp32"]],
        work_dir=tmp_path,
        warmup=0,
    )
    assert [r["name"] for r in rows] == ["naive"]
    assert [s["name"] for s in meta["skipped"]] == ["onnxruntime-fp32"]
    assert meta["skipped"][0]["reason"].startswith("unavailable:")
    assert "skipped onnxruntime-fp32: unavailable" in format_table(rows, meta)


def test_int8_rows_contain_int8(monkeypatch, tmp_path, image_files, weights_file):
    assert all("int8" in c.name for c in default_configs() if c.precision == "int8")
    assert all(
        "int8" in c.name for c in parse_configs("openvino:precision=int8,openvino-int8") if c.precision == "int8"
    )
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    pytest.importorskip("seglens.backends")
    monkeypatch.setenv("SEGLENS_CACHE", str(tmp_path / "cache"))  # quantise here, not in ~/.cache
    rows, meta = run_bench(
        SMALL,
        weights=str(weights_file(SMALL)),
        images=image_files,
        n=2,
        configs=[PRESETS["openvino-int8"]],
        work_dir=tmp_path / "work",
        warmup=0,
    )
    assert meta["skipped"] == []
    assert [r["name"] for r in rows] == ["naive", "openvino-int8"]
    assert rows[1]["dtype"] == "int8" and rows[1]["backend"] == "openvino"
    assert rows[1]["model_file"].endswith("model_int8.xml") and rows[1]["setup_s"] > 0
    assert 0.0 < rows[1]["agreement_vs_naive"] <= 1.0


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("seglens", [PRESETS["seglens"]]),
        (" eager-fp32 , naive,seglens", [PRESETS["eager-fp32"], PRESETS["seglens"]]),  # spaces dropped, naive implied
        ("torch:batch=4", [BenchConfig("torch:batch=4", batch_size=4)]),
        (
            "torch:channels_last=off:workers=0",
            [BenchConfig("torch:channels_last=off:workers=0", channels_last=False, workers=0)],
        ),
        ("seglens:compile=1", [BenchConfig("seglens:compile=1", compile=True)]),
        (
            "openvino:precision=int8",
            [BenchConfig("openvino:precision=int8", backend="openvino", precision="int8", channels_last=False)],
        ),
        (
            "openvino-int8:batch=2",
            [
                BenchConfig(
                    "openvino-int8:batch=2", backend="openvino", precision="int8", channels_last=False, batch_size=2
                )
            ],
        ),
        ("all", default_configs()),
    ],
)
def test_parse_configs(spec, expected):
    assert parse_configs(spec) == expected


@pytest.mark.parametrize(
    "spec, message",
    [
        ("seglens,,eager-fp32", "empty configuration"),
        ("", "empty configuration"),
        ("tensorrt", "unknown configuration 'tensorrt'.*torch:batch=4"),
        ("torch:batch", "write KEY=VALUE"),
        ("torch:size=4", "unknown option 'size'.*batch, channels_last"),
        ("torch:batch=0", "batch must be an integer >= 1"),
        ("torch:workers=-1", "workers must be an integer >= 0"),
        ("torch:channels_last=maybe", "channels_last must be 1/0"),
        ("torch:precision=int8", "precision .int8. with torch: choose fp32, fp16, bf16"),
        ("onnxruntime:precision=int8", "precision .int8. with onnxruntime: choose fp32"),
        ("openvino:compile=1", "compile applies to the torch backend only"),
        ("seglens,seglens", "'seglens' is given twice"),
    ],
)
def test_parse_configs_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_configs(spec)


def test_config_names():
    with pytest.raises(ValueError, match="'naive' is the baseline"):
        BenchConfig("naive")
    with pytest.raises(ValueError, match="must contain 'int8'"):
        BenchConfig("fast", backend="openvino", precision="int8")


def test_batches_follow_the_stream(weights_file):
    # The latency pass times the calls Segmenter.stream makes, as the timed pipeline makes them:
    # chunks of 2 consecutive inputs, split by shape within a chunk: [a b] -> [a] [b]; [a a] -> [a a]; [c]
    seg = Segmenter(SMALL, weights=weights_file(SMALL), device="cpu", batch_size=2)
    images = {"a": Image.new("RGB", (64, 64)), "b": Image.new("RGB", (90, 60)), "c": Image.new("RGB", (60, 69))}
    a, b, c = (520, 520), (520, 780), (598, 520)  # the model inputs: short side 520

    def batches(names):
        calls = _stream_calls(seg, [images[n] for n in names], torch.device("cpu")).calls
        return [(shape[0], shape[-2:]) for _, shape in calls]

    assert batches("abaac") == [(1, a), (1, b), (2, a), (1, c)]  # [[0], [1], [2, 3], [4]]
    seg.batch_size = 1
    assert batches("aba") == [(1, a), (1, b), (1, a)]  # [[0], [1], [2]]
    assert "run" not in vars(seg)  # the timing wrapper is gone after the pass


def test_run_bench_argument_errors(tmp_path, image_files):
    with pytest.raises(ValueError, match="need n >= 1"):
        run_bench(SMALL, images=image_files, n=0, configs=[], work_dir=tmp_path)
    with pytest.raises(ValueError, match="at least one image"):
        run_bench(SMALL, images=[], n=1, configs=[], work_dir=tmp_path)


def test_gemm_roofline_is_positive():
    assert gemm_roofline(size=256, repeats=2) > 0


def test_a_trained_file_is_timed_as_its_own_architecture(tmp_path, image_files):
    """A seglens-trained file names its model: the bench (and its multiply-adds) follow it, not --model."""
    from seglens._train_model import save_trained
    from seglens._trained import TrainedMetadata
    from seglens.models import model_info
    from tests.conftest import calibrated_model

    path = tmp_path / "best.safetensors"
    meta = TrainedMetadata(SMALL, ("a", "b", "c"), ((0, 0, 0), (255, 0, 0), (0, 255, 0)),
                           (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), None, 255)  # fmt: skip
    save_trained(path, calibrated_model(SMALL, num_classes=3), meta)
    rows, meta_out = run_bench(
        "deeplabv3_resnet50", weights=str(path), images=image_files, n=2, configs=parse_configs("seglens"),
        work_dir=tmp_path / "work", warmup=0,
    )  # fmt: skip
    assert meta_out["model"] == SMALL and meta_out["gmacs_520"] == model_info(SMALL).gflops
    assert [r["name"] for r in rows] == ["naive", "seglens"]
