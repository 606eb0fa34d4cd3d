import csv
import json
import os
import time

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
    code, _, err = run(
        capsys, "segment", folder, "--out", out, "--model", SMALL, "--weights", weights_file(SMALL), "-q"
    )
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
    assert [e["input"] for e in summary["images"]] == [
        str(folder / "astronaut.jpg"),
        str(folder / "sub" / "chelsea.png"),
    ]
    first = summary["images"][0]
    assert (first["width"], first["height"]) == (512, 512)
    counts = np.bincount(expected.ravel(), minlength=21)
    assert {c["index"]: c["pixels"] for c in first["classes"]} == {i: int(n) for i, n in enumerate(counts) if n}
    assert first["outputs"] == {
        "mask": "astronaut.png",
        "overlay": "astronaut_overlay.jpg",
        "figure": "astronaut_figure.png",
    }
    assert len(summary["failed"]) == 3
    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert len(rows) == len(first["classes"]) + len(summary["images"][1]["classes"])
    assert rows[0]["input"] == str(folder / "astronaut.jpg") and rows[0]["class_name"] == first["classes"][0]["name"]


def test_skip_existing_resumes(folder, tmp_path, capsys, weights_file):
    for bad in ("empty.jpg", "truncated.jpg", "fake.png"):
        (folder / bad).unlink()
    out = tmp_path / "out"
    args = (
        "segment",
        folder,
        "--out",
        out,
        "--model",
        SMALL,
        "--weights",
        weights_file(SMALL),
        "--outputs",
        "mask,overlay",
        "-q",
    )
    assert run(capsys, *args)[0] == 0
    assert files_under(out) == [
        "astronaut.png",
        "astronaut_overlay.jpg",
        "sub/chelsea.png",
        "sub/chelsea_overlay.jpg",
        "summary.csv",
        "summary.json",
    ]
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
    code, _, _ = run(
        capsys,
        "segment",
        a / "cat.jpg",
        b / "cat.jpg",
        a / "cat.png",
        "--out",
        out,
        "--model",
        SMALL,
        "--weights",
        weights_file(SMALL),
        "--outputs",
        "mask",
        "-q",
    )
    assert code == 0
    masks = [f for f in files_under(out) if not f.startswith("summary")]
    assert len(masks) == 3


@pytest.mark.parametrize(
    "argv, message",
    [
        (["segment", "{img}", "--model", "nope"], "argument -m/--model: unknown model 'nope'"),
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
    assert err.startswith(
        "error: deeplabv3_resnet50_coco-cd0a2569.pth is not cached and could not be downloaded from https://download.pytorch.org/models/deeplabv3_resnet50_coco-cd0a2569.pth"
    )
    assert "place it at " in err and "checkpoints/deeplabv3_resnet50_coco-cd0a2569.pth" in err
    assert not out.exists()


def test_random_weights_say_they_are_meaningless(tmp_path, capsys, photos):
    img = tmp_path / "x.jpg"
    photos[1].save(img)
    code, _, err = run(
        capsys,
        "segment",
        img,
        "--out",
        tmp_path / "o",
        "--model",
        SMALL,
        "--weights",
        "random",
        "--outputs",
        "mask",
        "-q",
    )
    assert code == 0
    assert "warning: weights are a random init (seed 0; labels are meaningless)" in err


def test_failed_write_leaves_no_partial_file(folder, tmp_path, capsys, monkeypatch, weights_file):
    import seglens._figure

    for bad in ("empty.jpg", "truncated.jpg", "fake.png"):
        (folder / bad).unlink()

    class DiskFull:  # the figure's PNG: half written, then the disk is full
        def save(self, f, **kwargs):
            f.write(b"\x89PNG partial")
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(seglens._figure, "figure_image", lambda *a, **k: DiskFull())
    out = tmp_path / "out"
    code, _, err = run(
        capsys, "segment", folder, "--out", out, "--model", SMALL, "--weights", weights_file(SMALL), "-q"
    )
    assert code == 1
    assert "No space left on device" in err and "check free space" in err
    assert not [f for f in files_under(out) if "figure" in f or ".tmp" in f]


def test_models_table(capsys):
    code, out, _ = run(capsys, "models")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["model", "classes", "mIoU", "pixAcc", "GFLOPS", "params", "size", "cached"]
    row = next(line for line in lines if line.startswith("deeplabv3_resnet50"))
    assert row.split() == [
        "deeplabv3_resnet50",
        "(default)",
        "21",
        "66.4",
        "92.4",
        "178.7",
        "42.0M",
        "160.5",
        "MB",
        "no",
    ]
    assert [line.split()[0] for line in lines[1:7]] == list_models()
    hf_header = next(i for i, line in enumerate(lines) if line.startswith("Hugging Face checkpoint"))
    hf_rows = [line.split() for line in lines[hf_header + 1 :] if line.startswith("hf:")]
    assert ["hf:nvidia/segformer-b0-finetuned-ade-512-512", "SegFormer", "150", "37.4", "ADE20K", "no"] in hf_rows
    code, out, _ = run(capsys, "models", "--json")
    rows = json.loads(out)
    assert [m["name"] for m in rows][2] == "deeplabv3_resnet50"
    assert [m["kind"] for m in rows] == ["torchvision"] * 6 + ["hf"] * len(hf_rows)
    assert all(m["source"] for m in rows if m["kind"] == "hf")  # each published score says where it is from


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
    code, _, err = run(
        capsys,
        "segment",
        img,
        "--out",
        tmp_path / "ort",
        "--model",
        SMALL,
        "--weights",
        w,
        "--backend",
        "onnxruntime",
        "--outputs",
        "mask",
        "-q",
    )
    assert code == 0, err
    assert (np.array(Image.open(tmp_path / "ort" / "cat.png")) == expected).mean() >= 0.9999
    summary = json.loads((tmp_path / "ort" / "summary.json").read_text())
    assert (summary["backend"], summary["precision"]) == ("onnxruntime", "fp32")

    cal = tmp_path / "cal"
    cal.mkdir()
    photos[0].save(cal / "a.png")
    photos[2].save(cal / "b.png")
    code, _, err = run(
        capsys,
        "segment",
        img,
        "--out",
        tmp_path / "int8",
        "--model",
        SMALL,
        "--weights",
        w,
        "--backend",
        "openvino",
        "--precision",
        "int8",
        "--calibrate",
        cal,
        "--outputs",
        "mask",
        "-q",
    )
    assert code == 0, err
    int8 = np.array(Image.open(tmp_path / "int8" / "cat.png"))
    assert int8.shape == expected.shape
    code, _, err = run(  # the default backend (auto) takes int8 to OpenVINO: the int8 model made above
        capsys, "segment", img, "--out", tmp_path / "x", "--model", SMALL, "--weights", w, "--precision", "int8"
    )
    assert code == 0, err
    summary = json.loads((tmp_path / "x" / "summary.json").read_text())
    assert (summary["backend"], summary["backend_choice"]) == ("openvino", "auto: int8 runs on OpenVINO")
    assert np.array_equal(np.array(Image.open(tmp_path / "x" / "cat.png")), int8)
    code, _, err = run(
        capsys, "segment", img, "--out", tmp_path / "y", "--model", SMALL, "--weights", w, "--precision", "int8",
        "--backend", "torch",
    )  # fmt: skip
    assert code == 2 and "int8 needs --backend openvino" in err


def test_bench_command_writes_rows_side_by_side(tmp_path, capsys, weights_file):
    out = tmp_path / "bench.json"
    code, stdout, err = run(
        capsys,
        "bench",
        "--model",
        SMALL,
        "--weights",
        weights_file(SMALL),
        "--n",
        "2",
        "--configs",
        "seglens",
        "--json",
        out,
        "-q",
    )
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


def test_confidence_outputs_heat_map_outline_and_class_means(tmp_path, photos, capsys, weights_file):
    src = tmp_path / "astronaut.png"
    photos[0].save(src)
    out = tmp_path / "out"
    code, _, _ = run(
        capsys,
        "segment",
        src,
        "--out",
        out,
        "--model",
        SMALL,
        "--weights",
        weights_file(SMALL),
        "--outputs",
        "mask,overlay,confidence",
        "--low-confidence",
        "0.6",
        "-q",
    )
    assert code == 0
    assert files_under(out) == [
        "astronaut.png",
        "astronaut_confidence.png",
        "astronaut_overlay.jpg",
        "summary.csv",
        "summary.json",
    ]
    expected = Segmenter(SMALL, weights=weights_file(SMALL), device="cpu", confidence=True)(photos[0])
    heat = Image.open(out / "astronaut_confidence.png")
    assert heat.mode == "P" and heat.size == (512, 512)
    np.testing.assert_array_equal(np.asarray(heat), expected.confidence)  # value = probability x 255
    entry = json.loads((out / "summary.json").read_text())["images"][0]
    for c in entry["classes"]:
        pixels = expected.labels == c["index"]
        assert c["mean_confidence"] == pytest.approx(expected.confidence[pixels].mean() / 255, abs=1e-4)
    # The outline (yellow, 255,255,0) is drawn where low-confidence regions end; JPEG blurs it a little.
    overlay = np.asarray(Image.open(out / "astronaut_overlay.jpg")).astype(int)
    low = expected.confidence < 0.6 * 255
    assert 0 < low.mean() < 1  # there is an edge to draw
    yellow = (overlay[..., 0] > 200) & (overlay[..., 1] > 200) & (overlay[..., 2] < 90)
    assert yellow.sum() > 100


def test_tile_and_resize_flags_reach_the_segmenter(tmp_path, photos, capsys, weights_file):
    src = tmp_path / "coffee.png"
    photos[2].save(src)
    out = tmp_path / "out"
    code, _, _ = run(
        capsys,
        "segment",
        src,
        "--out",
        out,
        "--model",
        SMALL,
        "--weights",
        weights_file(SMALL),
        "--tile",
        "256",
        "--overlap",
        "0.5",
        "--outputs",
        "mask",
        "-q",
    )
    assert code == 0
    expected = Segmenter(SMALL, weights=weights_file(SMALL), device="cpu", tile=256, overlap=0.5)(photos[2]).labels
    np.testing.assert_array_equal(np.asarray(Image.open(out / "coffee.png")), expected)
    meta = json.loads((out / "summary.json").read_text())
    assert (meta["scale"], meta["tile"], meta["overlap"]) == (1.0, 256, 0.5)
    code, _, _ = run(
        capsys,
        "segment",
        src,
        "--out",
        out,
        "--model",
        SMALL,
        "--weights",
        weights_file(SMALL),
        "--resize",
        "none",
        "--outputs",
        "mask",
        "-q",
    )
    full = Segmenter(SMALL, weights=weights_file(SMALL), device="cpu", scale=1.0)(photos[2]).labels
    assert code == 0
    np.testing.assert_array_equal(np.asarray(Image.open(out / "coffee.png")), full)


@pytest.mark.parametrize(
    "flag",
    [
        ["--overlap", "1"],
        ["--tile", "8"],
        ["--tile", "abc"],
        ["--scale", "0"],
        ["--outputs", "heat"],
        ["--url-max-mb", "0"],
        ["--url-timeout", "nan"],
    ],
)
def test_bad_tile_scale_flags_are_one_line_errors(flag, tmp_path, capsys):
    code, out, err = run(capsys, "segment", tmp_path, *flag)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and flag[0] in err


def test_urls_are_inputs_next_to_files_and_failures_are_per_input(tmp_path, photos, capsys, weights_file):
    import http.server
    import io as _io
    import threading

    jpeg = _io.BytesIO()
    photos[1].save(jpeg, format="JPEG", quality=92)
    body = jpeg.getvalue()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path.startswith("/pics/chelsea.jpg"):
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            else:
                self.send_error(404)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        src = tmp_path / "astronaut.png"
        photos[0].save(src)
        out = tmp_path / "out"
        code, _, err = run(
            capsys,
            "segment",
            src,
            f"{base}/pics/chelsea.jpg?size=large",
            f"{base}/missing.png",
            "--out",
            out,
            "--model",
            SMALL,
            "--weights",
            weights_file(SMALL),
            "--outputs",
            "mask",
            "-q",
        )
    finally:
        server.shutdown()
        server.server_close()
    assert code == 1
    assert files_under(out) == ["astronaut.png", "chelsea.png", "summary.csv", "summary.json"]
    assert f"error: {base}/missing.png: HTTP 404" in err
    summary = json.loads((out / "summary.json").read_text())
    assert [e["input"] for e in summary["images"]] == [str(src), f"{base}/pics/chelsea.jpg?size=large"]
    assert summary["failed"][0]["input"] == f"{base}/missing.png"
    from seglens.io import load_image

    expected = Segmenter(SMALL, weights=weights_file(SMALL), device="cpu")(load_image(_io.BytesIO(body))).labels
    np.testing.assert_array_equal(np.asarray(Image.open(out / "chelsea.png")), expected)


def _clip(path, frames=6, size=(96, 64)):
    import av
    import skimage.data

    pixels = skimage.data.astronaut()
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=12)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for i in range(frames):
            crop = np.ascontiguousarray(
                pixels[100 + 4 * i : 100 + 4 * i + size[1], 150 + 3 * i : 150 + 3 * i + size[0]]
            )
            for packet in stream.encode(av.VideoFrame.from_ndarray(crop, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def test_videos_next_to_images_overlay_masks_stride_and_summary(tmp_path, photos, capsys, weights_file):
    import av

    from seglens.video import FrameReader

    folder = tmp_path / "in"
    folder.mkdir()
    clip = _clip(folder / "clip.mp4")
    photos[1].save(folder / "cat.jpg")
    out = tmp_path / "out"
    code, _, _ = run(
        capsys,
        "segment",
        folder,
        "--out",
        out,
        "--model",
        SMALL,
        "--weights",
        weights_file(SMALL),
        "--outputs",
        "overlay,mask",
        "--vid-stride",
        "2",
        "-q",
    )
    assert code == 0
    assert files_under(out) == [
        "cat.png",
        "cat_overlay.jpg",
        "clip_mask/000000.png",
        "clip_mask/000002.png",
        "clip_mask/000004.png",
        "clip_overlay.mp4",
        "summary.csv",
        "summary.json",
    ]
    seg = Segmenter(SMALL, weights=weights_file(SMALL), device="cpu")
    frames = list(FrameReader(clip, stride=2))
    for frame in frames:
        np.testing.assert_array_equal(
            np.asarray(Image.open(out / f"clip_mask/{frame.index:06d}.png")), seg(frame.image).labels
        )
    with av.open(str(out / "clip_overlay.mp4")) as container:
        stream = container.streams.video[0]
        assert (stream.width, stream.height, stream.average_rate) == (96, 64, 6)
        assert sum(1 for _ in container.decode(stream)) == 3
    video = json.loads((out / "summary.json").read_text())["images"][1]
    assert (video["kind"], video["frames_segmented"], video["stride"], video["error"]) == ("video", 3, 2, None)
    assert [f["index"] for f in video["frames"]] == [0, 2, 4]


def test_default_video_output_is_the_overlay_and_broken_videos_are_per_input_errors(tmp_path, capsys, weights_file):
    clip = _clip(tmp_path / "clip.mp4")
    fake = tmp_path / "fake.mp4"
    fake.write_text("not a video")
    out = tmp_path / "out"
    code, _, err = run(
        capsys, "segment", clip, fake, "--out", out, "--model", SMALL, "--weights", weights_file(SMALL), "-q"
    )
    assert code == 1
    assert files_under(out) == ["clip_overlay.mp4", "summary.csv", "summary.json"]
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        f"error: {fake}: " + json.loads((out / "summary.json").read_text())["failed"][0]["error"]
    ]
    code, _, err = run(
        capsys,
        "segment",
        clip,
        "--out",
        tmp_path / "o2",
        "--model",
        SMALL,
        "--weights",
        weights_file(SMALL),
        "--outputs",
        "figure",
        "-q",
    )
    assert code == 1 and "add overlay and/or mask to --outputs" in err


def test_hugging_face_models_segment_and_eval_from_the_command_line(tmp_path, tmp_path_factory, photos, capsys):
    pytest.importorskip("transformers")
    from seglens.io import load_image
    from seglens.visualize import ADE20K_CATEGORIES, ade20k_palette
    from tests.test_hf import _save, _segformer

    folder = _save(tmp_path_factory, "ade", *_segformer(names=ADE20K_CATEGORIES))  # 150 classes, tiny
    model = f"hf:{folder}"
    src = tmp_path / "astronaut.png"
    photos[0].save(src)
    out = tmp_path / "out"
    code, _, err = run(capsys, "segment", src, "--out", out, "--model", model, "--outputs", "mask,figure", "-q")
    assert code == 0, err
    seg = Segmenter(model, device="cpu")
    expected = seg(photos[0])
    mask = Image.open(out / "astronaut.png")
    np.testing.assert_array_equal(np.asarray(mask), expected.labels)
    np.testing.assert_array_equal(np.asarray(mask.getpalette()[: 150 * 3]).reshape(150, 3), ade20k_palette()[:150])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == model
    assert [c["name"] for c in summary["images"][0]["classes"]] == [c.name for c in expected.classes]
    assert all(c["name"] in ADE20K_CATEGORIES for c in summary["images"][0]["classes"])

    # eval on the ADE20K layout: annotations = the model's own labels + 1, so mIoU is exactly 100
    images = tmp_path / "ADEChallengeData2016" / "images" / "validation"
    annotations = tmp_path / "ADEChallengeData2016" / "annotations" / "validation"
    images.mkdir(parents=True)
    annotations.mkdir(parents=True)
    for i, image in enumerate(photos[1:]):
        path = images / f"ADE_val_{i:08d}.jpg"
        image.save(path, quality=90)
        Image.fromarray(seg(load_image(path)).labels + 1).save(annotations / f"{path.stem}.png")
    code, stdout, err = run(
        capsys,
        "eval",
        "--dataset",
        "ade20k",
        "--root",
        tmp_path / "ADEChallengeData2016",
        "--model",
        model,
        "--out",
        tmp_path / "ev",
        "-q",
    )
    assert code == 0, err
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["miou"] == 100.0 and metrics["protocol"] == "native"


@pytest.mark.parametrize(
    "argv,match",
    [
        (["--model", "hf:"], "unknown model"),
        (["--model", "nonsense"], "hf:<repo-or-folder>"),
        (["--model", "hf:/no/such/folder"], "hf:/no/such/folder"),
        (["--model", "hf:/no/such/folder", "--backend", "openvino"], "--backend torch"),
    ],
)
def test_bad_hugging_face_model_specs_are_one_line_errors(argv, match, tmp_path, photos, capsys):
    src = tmp_path / "a.png"
    photos[0].save(src)
    code, out, err = run(capsys, "segment", src, "--out", tmp_path / "out", *argv, "-q")
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and match in err
    assert not (tmp_path / "out").exists()


def test_a_second_run_over_a_folder_skips_its_own_output_folder(tmp_path, photos, capsys, weights_file, monkeypatch):
    photos[1].save(tmp_path / "cat.png")
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        code, _, _ = run(
            capsys, "segment", ".", "--model", SMALL, "--weights", weights_file(SMALL), "--outputs", "mask", "-q"
        )
        assert code == 0
    assert files_under(tmp_path) == [
        "cat.png",
        "seglens_out/cat.png",
        "seglens_out/summary.csv",
        "seglens_out/summary.json",
    ]
    assert len(json.loads((tmp_path / "seglens_out" / "summary.json").read_text())["images"]) == 1


def test_a_video_mask_folder_never_replaces_image_outputs_of_the_same_run(tmp_path, photos, capsys, weights_file):
    folder = tmp_path / "in"
    (folder / "clip_mask").mkdir(parents=True)
    _clip(folder / "clip.mp4", frames=2)
    photos[1].save(folder / "clip_mask" / "cat.jpg")
    out = tmp_path / "out"
    code, _, _ = run(
        capsys,
        "segment",
        folder,
        "--out",
        out,
        "--model",
        SMALL,
        "--weights",
        weights_file(SMALL),
        "--outputs",
        "mask,overlay",
        "-q",
    )
    assert code == 0
    assert files_under(out) == [
        "clip-2_mask/000000.png",
        "clip-2_mask/000001.png",
        "clip-2_overlay.mp4",
        "clip_mask/cat.png",
        "clip_mask/cat_overlay.jpg",
        "summary.csv",
        "summary.json",
    ]


def test_skip_existing_retries_a_video_that_broke_part_way(tmp_path, capsys, weights_file):
    clip = _clip(tmp_path / "clip.mp4", frames=2)
    out = tmp_path / "out"
    args = ["segment", clip, "--out", out, "--model", SMALL, "--weights", weights_file(SMALL), "-q"]
    assert run(capsys, *args)[0] == 0
    summary = json.loads((out / "summary.json").read_text())
    summary["images"][0]["error"] = "decoding stopped after 1 frames: ..."  # as a broken download leaves it
    (out / "summary.json").write_text(json.dumps(summary))
    code, _, err = run(capsys, *args, "--skip-existing")
    assert code == 0 and "1 segmented, 0 skipped" in err  # tried again, not taken as done
    assert run(capsys, *args, "--skip-existing")[2].count("0 segmented, 1 skipped") == 1


def test_sigterm_takes_the_interrupt_path():
    import signal

    from seglens.cli import _sigterm_as_interrupt

    with pytest.raises(KeyboardInterrupt):
        with _sigterm_as_interrupt():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises before this ends
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored
