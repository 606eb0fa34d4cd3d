import csv
import json
import os

import numpy as np
import pytest
from PIL import Image

from seglens import Segmenter
from seglens.cli import main
from seglens.models import list_models
from seglens.visualize import voc_palette
from tests.conftest import varied

SMALL = "lraspp_mobilenet_v3_large"


def files_under(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


@pytest.fixture
def folder(tmp_path, photos):
    """A folder with two good photos (one in a subfolder), and four bad files among them."""
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    photos[0].save(d / "astronaut.jpg", quality=92)
    photos[1].save(d / "sub" / "chelsea.png")
    (d / "empty.jpg").write_bytes(b"")
    good = (d / "astronaut.jpg").read_bytes()
    (d / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (d / "fake.png").write_text("this is not an image")
    (d / "notes.txt").write_text("not an image extension: ignored in folders")
    return d


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_folder_with_good_and_bad_files(folder, tmp_path, capsys, weights_file):
    out = tmp_path / "out"
    code, _, err = run(capsys, "segment", folder, "--out", out, "--model", SMALL, "--weights", weights_file(SMALL), "-q")
    assert code == 1
    assert files_under(out) == [
        "astronaut.png",
        "astronaut_figure.png",
        "astronaut_overlay.jpg",
        "sub/chelsea.png",
        "sub/chelsea_figure.png",
        "sub/chelsea_overlay.jpg",
        "summary.csv",
        "summary.json",
    ]  # nothing for the bad files, no temp files left behind
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 3
    assert f"error: {folder / 'empty.jpg'}: empty file" in errors[0]
    assert f"error: {folder / 'fake.png'}: not an image" in errors[1]
    assert f"error: {folder / 'truncated.jpg'}: truncated" in errors[2]
    assert "Traceback" not in err
    assert err.splitlines()[-1] == f"finished with errors: 2 segmented, 0 skipped, 3 failed -> {out}/ (summary.json)"

    # The mask is an indexed PNG with the VOC palette whose values are what the Python API gives.
    mask = Image.open(out / "astronaut.png")
    assert mask.mode == "P" and mask.size == (512, 512)
    assert np.array_equal(np.array(mask.getpalette()).reshape(256, 3), voc_palette(256))
    expected = Segmenter(SMALL, weights=weights_file(SMALL), device="cpu")(folder / "astronaut.jpg").labels
    assert varied(expected)
    np.testing.assert_array_equal(np.array(mask), expected)
    assert Image.open(out / "astronaut_overlay.jpg").size == (512, 512)
    assert Image.open(out / "sub" / "chelsea.png").size == (451, 300)

    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == SMALL and summary["weights"] == str(weights_file(SMALL))
    assert [e["input"] for e in summary["images"]] == [str(folder / "astronaut.jpg"), str(folder / "sub" / "chelsea.png")]
    first = summary["images"][0]
    assert (first["width"], first["height"]) == (512, 512)
    counts = np.bincount(expected.ravel(), minlength=21)
    assert {c["index"]: c["pixels"] for c in first["classes"]} == {i: int(n) for i, n in enumerate(counts) if n}
    assert first["outputs"] == {"mask": "astronaut.png", "overlay": "astronaut_overlay.jpg", "figure": "astronaut_figure.png"}
    assert len(summary["failed"]) == 3
    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert len(rows) == len(first["classes"]) + len(summary["images"][1]["classes"])
    assert rows[0]["input"] == str(folder / "astronaut.jpg") and rows[0]["class_name"] == first["classes"][0]["name"]


def test_skip_existing_resumes(folder, tmp_path, capsys, weights_file):
    for bad in ("empty.jpg", "truncated.jpg", "fake.png"):
        (folder / bad).unlink()
    out = tmp_path / "out"
    args = ("segment", folder, "--out", out, "--model", SMALL, "--weights", weights_file(SMALL), "--outputs", "mask,overlay", "-q")
    assert run(capsys, *args)[0] == 0
    assert files_under(out) == ["astronaut.png", "astronaut_overlay.jpg", "sub/chelsea.png", "sub/chelsea_overlay.jpg", "summary.csv", "summary.json"]
    first = json.loads((out / "summary.json").read_text())
    stamp = os.stat(out / "astronaut.png").st_mtime_ns
    (out / "sub" / "chelsea_overlay.jpg").unlink()  # as if interrupted before this file was written
    code, _, err = run(capsys, *args, "--skip-existing")
    assert code == 0
    assert os.stat(out / "astronaut.png").st_mtime_ns == stamp  # not redone
    assert (out / "sub" / "chelsea_overlay.jpg").is_file()  # redone
    assert "1 segmented, 1 skipped, 0 failed" in err
    again = json.loads((out / "summary.json").read_text())
    assert sorted(e["input"] for e in again["images"]) == sorted(e["input"] for e in first["images"])


def test_name_collisions_get_distinct_outputs(tmp_path, capsys, photos, weights_file):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    photos[1].save(a / "cat.jpg")
    photos[1].save(b / "cat.jpg")
    photos[1].save(a / "cat.png")
    out = tmp_path / "out"
    code, _, _ = run(capsys, "segment", a / "cat.jpg", b / "cat.jpg", a / "cat.png", "--out", out, "--model", SMALL, "--weights", weights_file(SMALL), "--outputs", "mask", "-q")
    assert code == 0
    masks = [f for f in files_under(out) if not f.startswith("summary")]
    assert len(masks) == 3


@pytest.mark.parametrize(
    "argv, message",
    [
        (["segment", "{img}", "--model", "nope"], "argument -m/--model: invalid choice: 'nope'"),
        (["segment", "{img}", "--alpha", "2"], "argument --alpha: 2 is not between 0 and 1"),
        (["segment", "{img}", "--outputs", "mask,video"], "unknown output 'video'; choose from mask,overlay,figure"),
        (["segment", "{img}", "--batch-size", "0"], "argument -b/--batch-size: 0 is not a positive integer"),
        (["segment", "{tmp}/missing"], "no images found"),
        (["segment", "{img}", "--weights", "{tmp}/missing.pth"], "no such file; use 'official', 'random' or the path"),
        (["segment", "{img}", "--device", "cuda:7"], "--device cuda:7"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_cannot_start_exits_2_with_one_line(argv, message, tmp_path, capsys, photos):
    img = tmp_path / "x.jpg"
    photos[1].save(img)
    out = tmp_path / "out"
    argv = [a.format(img=img, tmp=tmp_path) for a in argv] + (["--out", str(out)] if argv[0] == "segment" else [])
    code, stdout, err = run(capsys, *argv)
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("error")]
    assert len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err
    assert not out.exists()


def test_offline_official_weights_exit_2_and_write_nothing(tmp_path, capsys, photos):
    img = tmp_path / "x.jpg"
    photos[1].save(img)
    out = tmp_path / "out"
    code, _, err = run(capsys, "segment", img, "--out", out)
    assert code == 2
    assert err.count("\n") == 1
    assert err.startswith("error: deeplabv3_resnet50_coco-cd0a2569.pth is not cached and could not be downloaded from https://download.pytorch.org/models/deeplabv3_resnet50_coco-cd0a2569.pth")
    assert "place it at " in err and "checkpoints/deeplabv3_resnet50_coco-cd0a2569.pth" in err
    assert not out.exists()


def test_random_weights_say_they_are_meaningless(tmp_path, capsys, photos):
    img = tmp_path / "x.jpg"
    photos[1].save(img)
    code, _, err = run(capsys, "segment", img, "--out", tmp_path / "o", "--model", SMALL, "--weights", "random", "--outputs", "mask", "-q")
    assert code == 0
    assert "warning: weights are a random init (seed 0; labels are meaningless)" in err


def test_failed_write_leaves_no_partial_file(folder, tmp_path, capsys, monkeypatch, weights_file):
    from matplotlib.figure import Figure

    for bad in ("empty.jpg", "truncated.jpg", "fake.png"):
        (folder / bad).unlink()

    def disk_full(self, f, **kwargs):
        f.write(b"\x89PNG partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", disk_full)
    out = tmp_path / "out"
    code, _, err = run(capsys, "segment", folder, "--out", out, "--model", SMALL, "--weights", weights_file(SMALL), "-q")
    assert code == 1
    assert "No space left on device" in err and "check free space" in err
    assert not [f for f in files_under(out) if "figure" in f or ".tmp" in f]


def test_models_table(capsys):
    code, out, _ = run(capsys, "models")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["model", "classes", "mIoU", "pixAcc", "GFLOPS", "params", "size", "cached"]
    row = next(line for line in lines if line.startswith("deeplabv3_resnet50"))
    assert row.split() == ["deeplabv3_resnet50", "(default)", "21", "66.4", "92.4", "178.7", "42.0M", "160.5", "MB", "no"]
    assert [line.split()[0] for line in lines[1:7]] == list_models()
    code, out, _ = run(capsys, "models", "--json")
    assert [m["name"] for m in json.loads(out)][2] == "deeplabv3_resnet50"


def test_export_then_segment_with_onnxruntime_and_int8(tmp_path, capsys, monkeypatch, photos, weights_file):
    monkeypatch.setenv("SEGLENS_CACHE", str(tmp_path / "cache"))
    w = weights_file(SMALL)
    code, out, _ = run(capsys, "export", "--format", "onnx", "--model", SMALL, "--weights", w, "-q")
    assert code == 0
    onnx_path = out.strip()
    assert onnx_path.endswith("model.onnx") and os.path.isfile(onnx_path)
    img = tmp_path / "cat.png"
    photos[1].save(img)
    expected = Segmenter(SMALL, weights=w, device="cpu")(img).labels
    code, _, err = run(capsys, "segment", img, "--out", tmp_path / "ort", "--model", SMALL, "--weights", w, "--backend", "onnxruntime", "--outputs", "mask", "-q")
    assert code == 0, err
    assert (np.array(Image.open(tmp_path / "ort" / "cat.png")) == expected).mean() >= 0.9999
    summary = json.loads((tmp_path / "ort" / "summary.json").read_text())
    assert (summary["backend"], summary["precision"]) == ("onnxruntime", "fp32")

    cal = tmp_path / "cal"
    cal.mkdir()
    photos[0].save(cal / "a.png")
    photos[2].save(cal / "b.png")
    code, _, err = run(capsys, "segment", img, "--out", tmp_path / "int8", "--model", SMALL, "--weights", w, "--backend", "openvino", "--precision", "int8", "--calibrate", cal, "--outputs", "mask", "-q")
    assert code == 0, err
    int8 = np.array(Image.open(tmp_path / "int8" / "cat.png"))
    assert int8.shape == expected.shape
    code, _, err = run(capsys, "segment", img, "--out", tmp_path / "x", "--model", SMALL, "--weights", w, "--precision", "int8")
    assert code == 2 and "int8 needs --backend openvino" in err


def test_bench_command_writes_rows_side_by_side(tmp_path, capsys, weights_file):
    out = tmp_path / "bench.json"
    code, stdout, err = run(capsys, "bench", "--model", SMALL, "--weights", weights_file(SMALL), "--n", "2", "--configs", "seglens", "--json", out, "-q")
    assert code == 0, err
    rows = json.loads(out.read_text())
    assert [r["name"] for r in rows] == ["naive", "seglens"]
    assert rows[0]["speedup_vs_naive"] == 1.0 and rows[0]["agreement_vs_naive"] == 1.0
    assert rows[1]["agreement_vs_naive"] >= 0.9999 and rows[1]["images_per_s"] > 0
    assert "threads" in rows[1] and rows[1]["meta"]["versions"]["torch"]
    assert "naive" in stdout and "seglens" in stdout


def test_serve_refuses_to_start_on_bad_weights_with_one_line(tmp_path, capsys, weights_file):
    code, _, err = run(capsys, "serve", "--model", SMALL, "--weights", tmp_path / "missing.pth", "--port", "0")
    assert code == 2 and err.count("\n") == 1 and "no such file" in err
    code, _, err = run(capsys, "serve", "--model", SMALL, "--model", "fcn_resnet50", "--weights", weights_file(SMALL))
    assert code == 2 and "--weights FILE fits one --model" in err
