"""Command line: the only place that prints and chooses exit codes.

Exit codes: 0 every input done; 1 some inputs failed; 2 nothing could start (bad flag, unknown
model, weights missing or unreadable, no images found); 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import signal
import sys
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .backends import BACKENDS, BackendError
from .io import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, ImageLoadError, InputImage, atomic_open, bundled_examples, find_images, load_image, save_image, save_mask_png, write_csv, write_json
from .models import DEFAULT_MODEL, WeightsError, is_hf_model, list_models, model_info
from .video import MASK_FORMATS, VIDEO_SUFFIXES, VideoError, is_video
from .web import DEFAULT_SERVE_MAX_PIXELS

# Literal copies would drift; these modules are light next to torch, which models.py loads anyway.
from .datasets import DATASET_KINDS  # noqa: E402
from .evaluate import PROTOCOLS  # noqa: E402

__all__ = ["build_parser", "main"]

OUTPUT_KINDS = ("mask", "overlay", "figure", "confidence")
DEFAULT_OUTPUTS = ("mask", "overlay", "figure")
_SUFFIX = {"mask": ".png", "overlay": "_overlay.jpg", "figure": "_figure.png", "confidence": "_confidence.png"}
EXIT_OK, EXIT_SOME_FAILED, EXIT_CANNOT_START, EXIT_INTERRUPTED = 0, 1, 2, 130


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag on one line (exit 2) instead of usage + message."""

    def error(self, message: str):  # type: ignore[override]
        raise _UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def _outputs(value: str) -> tuple[str, ...]:
    kinds = tuple(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))
    bad = [k for k in kinds if k not in OUTPUT_KINDS]
    if bad or not kinds:
        raise argparse.ArgumentTypeError(f"unknown output {','.join(bad) or value!r}; choose from {','.join(OUTPUT_KINDS)}")
    return kinds


def _number(value: str, kind=float):
    """float(value) / int(value), as a one-line flag error (not "invalid _tile value")."""
    try:
        n = kind(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not {'an integer' if kind is int else 'a number'}") from None
    if kind is float and not math.isfinite(n):
        raise argparse.ArgumentTypeError(f"{value!r} is not a finite number")
    return n


def _alpha(value: str) -> float:
    a = _number(value)
    if not 0.0 <= a <= 1.0:
        raise argparse.ArgumentTypeError(f"{value} is not between 0 and 1")
    return a


def _fraction(value: str) -> float:
    a = _number(value)
    if not 0.0 <= a < 1.0:
        raise argparse.ArgumentTypeError(f"{value} is not in [0, 1)")
    return a


def _scale(value: str) -> float:
    a = _number(value)
    if not 0.0 < a <= 16.0:
        raise argparse.ArgumentTypeError(f"{value} is not in (0, 16]")
    return a


def _positive_float(value: str) -> float:
    a = _number(value)
    if not a > 0:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return a


def _non_negative_float(value: str) -> float:
    a = _number(value)
    if not a >= 0:
        raise argparse.ArgumentTypeError(f"{value} is not a number >= 0")
    return a


def _tile(value: str) -> int:
    n = _number(value, int)
    if n < 32:
        raise argparse.ArgumentTypeError(f"{value} is smaller than 32 pixels")
    return n


def _model_name(value: str) -> str:
    """A torchvision builder name or ``hf:<repo-or-folder>``."""
    if value in list_models() or (is_hf_model(value) and len(value) > 3):
        return value
    raise argparse.ArgumentTypeError(f"unknown model {value!r}; choose one of: {', '.join(list_models())}, or hf:<repo-or-folder> (see seglens models)")


def _torchvision_name(value: str) -> str:
    if value in list_models():
        return value
    raise argparse.ArgumentTypeError(f"unknown model {value!r}; choose one of: {', '.join(list_models())} (this command covers torchvision models)")


def _positive_int(value: str) -> int:
    n = _number(value, int)
    if n < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return n


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks")
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bar, only errors and the final line")

    parser = _Parser(prog="seglens", description="Semantic segmentation with pretrained torchvision networks.")
    parser.add_argument("--version", action="version", version=f"seglens {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    seg = sub.add_parser("segment", parents=[common], help="segment images: masks, overlays, figures, summary")
    seg.add_argument("inputs", nargs="+", help="image and video files, folders (searched recursively), glob patterns or http(s) image URLs")
    seg.add_argument("-o", "--out", type=Path, default=Path("seglens_out"), help="output folder (default: %(default)s)")
    seg.add_argument("-m", "--model", default=DEFAULT_MODEL, type=_model_name, metavar="MODEL", help="one of: " + ", ".join(list_models()) + " (default: %(default)s), or hf:<repo-or-folder> for a Hugging Face transformers checkpoint, e.g. hf:nvidia/segformer-b0-finetuned-ade-512-512 (pip install 'seglens[hf]')")
    seg.add_argument("-w", "--weights", default="official", help="'official' (default: downloaded once, SHA-256 checked), 'random' (seeded, meaningless labels) or a .pth/.safetensors state dict")
    seg.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    seg.add_argument("-b", "--batch-size", type=_positive_int, default=1, help="images per forward pass (default: 1)")
    seg.add_argument("--outputs", type=_outputs, help="comma-separated subset of mask,overlay,figure,confidence (default: mask,overlay,figure for images, overlay for videos); confidence: max-softmax heat map PNG (value = probability x 255), low-confidence outline on the overlay, per-class mean confidence in the summary; videos write overlay and mask")
    seg.add_argument("--vid-stride", type=_positive_int, default=1, metavar="N", help="videos: segment every N-th frame (the overlay video then plays at fps/N; default: 1)")
    seg.add_argument("--mask-format", choices=MASK_FORMATS, default="png", help="videos with --outputs mask: png (a folder NAME_mask/ of indexed PNGs named by frame number; default) or video (NAME_mask.mkv, lossless FFV1, pixel value = class index)")
    seg.add_argument("--alpha", type=_alpha, default=0.5, help="overlay opacity of the mask, 0..1 (default: 0.5)")
    seg.add_argument("--resize", choices=("weights", "none"), default="weights", help="weights: the model's own rule (torchvision: short side 520; default); none: full resolution (small objects survive; slower)")
    seg.add_argument("--scale", type=_scale, help="run the network on the image resized by this factor (e.g. 0.5, 2); overrides --resize")
    seg.add_argument("--tile", type=_tile, metavar="SIZE", help="sliding window: run SIZE x SIZE windows of the full-resolution (or --scale'd) image and blend them; for huge images (e.g. --tile 512)")
    seg.add_argument("--overlap", type=_fraction, default=0.25, help="fraction of a --tile window shared with its neighbours, 0..1 (default: 0.25)")
    seg.add_argument("--low-confidence", type=_alpha, default=0.5, metavar="P", help="with --outputs confidence: outline regions whose probability is below P on the overlay (default: 0.5; 0: no outline)")
    seg.add_argument("--max-pixels", type=_positive_int, default=DEFAULT_MAX_PIXELS, help="refuse larger images (default: %(default)s)")
    seg.add_argument("--url-timeout", type=_positive_float, default=30.0, help="seconds allowed for each http(s) input's download (default: %(default)s)")
    seg.add_argument("--url-max-mb", type=_positive_float, default=50.0, help="largest http(s) input downloaded, in MB (default: %(default)s)")
    seg.add_argument("--skip-existing", action="store_true", help="skip images whose requested outputs all exist (resume)")
    seg.add_argument("--backend", default="torch", choices=BACKENDS, help="torch (default), onnxruntime or openvino (exported once, cached; pip install 'seglens[onnx]' / 'seglens[openvino]')")
    seg.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16", "int8"), help="fp32 (exact, default); fp16/bf16: torch autocast (GPUs); int8: OpenVINO + NNCF quantisation (approximate, fast on CPUs)")
    seg.add_argument("--calibrate", type=Path, help="images for --precision int8 calibration (default: the bundled examples); used once, the quantised model is cached")
    seg.add_argument("--compile", action="store_true", help="torch.compile the model (slow first batch)")
    seg.add_argument("--workers", type=int, default=2, help="threads reading images ahead of the model (default: 2; 0: none)")
    seg.add_argument("--seed", type=int, default=0, help="seed for --weights random")

    ev = sub.add_parser("eval", parents=[common], help="score a model on a labelled dataset; write metrics.json, report.md, report.html")
    ev.add_argument("--dataset", required=True, choices=DATASET_KINDS, help="voc (VOCdevkit layout), coco-voc (COCO with the 20 VOC classes), ade20k (ADEChallengeData2016 layout, 150 classes), folder (images/ + masks/)")
    ev.add_argument("--root", required=True, type=Path, help="dataset folder")
    ev.add_argument("--split", default="val", help="voc: ImageSets/Segmentation/SPLIT.txt; coco-voc: SPLIT2017 (default: val)")
    ev.add_argument("--classes", type=Path, help="folder: class names, one per line")
    ev.add_argument("--ignore-index", type=int, default=255, help="label value that is not scored (default: 255)")
    ev.add_argument("-o", "--out", type=Path, default=Path("seglens_eval"), help="report folder (default: %(default)s)")
    ev.add_argument("-m", "--model", default=DEFAULT_MODEL, type=_model_name, metavar="MODEL", help="a torchvision model or hf:<repo-or-folder> (default: %(default)s)")
    ev.add_argument("-w", "--weights", default="official", help="'official', 'random' or a .pth/.safetensors state dict")
    ev.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    ev.add_argument("--protocol", choices=PROTOCOLS, help="torchvision (default for voc, coco-voc: 520-pixel short side, as the published numbers) or native (full resolution; default for folder)")
    ev.add_argument("--tta", help="test-time augmentation: 'flip' or 'scales=0.75,1.0,1.25[,flip]'")
    ev.add_argument("--compare-tta", action="store_true", help="also score plain inference in the same run and report the gain")
    ev.add_argument("--limit", type=_positive_int, help="only the first N images (a quick look)")
    ev.add_argument("--strict", action="store_true", help="stop before scoring if the labels have problems")
    ev.add_argument("--worst", type=int, default=8, help="how many worst images to render (default: 8)")
    ev.add_argument("--boundary-width", type=_positive_int, default=5, help="band around ground-truth boundaries, in pixels (default: 5)")
    ev.add_argument("--backend", default="torch", choices=BACKENDS, help="torch (default), onnxruntime or openvino")
    ev.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16", "int8"), help="score an approximate path, e.g. --backend openvino --precision int8")
    ev.add_argument("--calibrate", type=Path, help="images for int8 calibration (default: the bundled examples)")
    ev.add_argument("--seed", type=int, default=0, help="seed for --weights random")

    be = sub.add_parser("bench", parents=[common], help="time configurations side by side against the seed's naive way")
    be.add_argument("-m", "--model", default=DEFAULT_MODEL, type=_torchvision_name, metavar="MODEL", help="default: %(default)s")
    be.add_argument("-w", "--weights", default="random", help="'random' (default: speed does not depend on the values), 'official' or a state dict")
    be.add_argument("--images", type=Path, help="folder of images (default: the bundled examples)")
    be.add_argument("-n", "--n", type=_positive_int, default=8, help="images per timed pass, cycling the folder (default: 8)")
    be.add_argument("--configs", default="all", help="comma-separated: seglens, eager-fp32, onnxruntime-fp32, openvino-fp32, openvino-int8, torch:batch=4,compile=1 ... or 'all' (default); naive always runs")
    be.add_argument("--device", default="cpu", help="cpu (default), cuda, mps")
    be.add_argument("--warmup", type=int, default=1, help="untimed passes before each timed pass (default: 1)")
    be.add_argument("--calibrate", type=Path, help="images for int8 calibration (default: the benchmark images)")
    be.add_argument("--json", type=Path, help="also write the rows and machine facts as JSON")
    be.add_argument("--work-dir", type=Path, help="where masks are written (default: a temporary folder, removed after)")

    ex = sub.add_parser("export", parents=[common], help="export a model once for --backend onnxruntime/openvino (cached and reused)")
    ex.add_argument("--format", required=True, choices=("onnx", "openvino"), help="onnx (ONNX Runtime) or openvino (OpenVINO IR)")
    ex.add_argument("-m", "--model", default=DEFAULT_MODEL, type=_torchvision_name, metavar="MODEL", help="default: %(default)s")
    ex.add_argument("-w", "--weights", default="official", help="'official', 'random' or a .pth/.safetensors state dict")
    ex.add_argument("--precision", default="fp32", choices=("fp32", "int8"), help="int8: also quantise with NNCF (openvino only)")
    ex.add_argument("--calibrate", type=Path, help="images for int8 calibration (default: the bundled examples)")
    ex.add_argument("-o", "--out", type=Path, help="file to write (default: the cache that --backend reads, printed at the end)")
    ex.add_argument("--seed", type=int, default=0, help="seed for --weights random")

    srv = sub.add_parser("serve", parents=[common], help="HTTP API and web page (needs: pip install 'seglens[web]')")
    srv.add_argument("-m", "--model", action="append", type=_model_name, metavar="MODEL", help=f"model to serve; repeat for several, the first is the default (default: {DEFAULT_MODEL})")
    srv.add_argument("-w", "--weights", default="official", help="'official', 'random' or a .pth/.safetensors file (a file fits one --model)")
    srv.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    srv.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s; 0.0.0.0 for all)")
    srv.add_argument("--port", type=int, default=8000, help="default: %(default)s")
    srv.add_argument("--max-upload-mb", type=float, default=20, help="largest upload accepted (default: %(default)s)")
    srv.add_argument("--max-pixels", type=_positive_int, default=DEFAULT_SERVE_MAX_PIXELS, help="largest image accepted (default: %(default)s)")
    srv.add_argument("--workers", type=_positive_int, default=1, help="inference threads (default: 1)")
    srv.add_argument("--queue-size", type=int, default=4, help="requests waiting for a worker; more get 503 + Retry-After (default: 4)")
    srv.add_argument("--max-queued-pixels", type=_positive_int, metavar="N", help="most decoded pixels in progress (running + queued); more get 503 + Retry-After (default: --max-pixels)")
    srv.add_argument("--header-timeout", type=_positive_float, default=10.0, metavar="S", help="seconds a request's headers may take; slower connections are closed (default: %(default)s)")
    srv.add_argument("--body-timeout", type=_positive_float, default=20.0, metavar="S", help="seconds an upload may take, plus 1 s per --min-upload-rate bytes received (default: %(default)s)")
    srv.add_argument("--min-upload-rate", type=_non_negative_float, default=500.0, metavar="BYTES_PER_S", help="upload speed that extends --body-timeout; slower uploads get 408 (default: %(default)s)")
    srv.add_argument("--allowed-hosts", action="append", default=[], metavar="NAMES", help="comma-separated Host names to answer besides the bound address and localhost, e.g. seg.example.com or '*.example.com'; '*' for any (repeatable)")
    srv.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN", help="another site allowed to call the API from a browser, e.g. https://app.example; '*' for any (repeatable)")
    srv.add_argument("--seed", type=int, default=0, help="seed for --weights random")

    models = sub.add_parser("models", parents=[common], help="list the available models and their published scores")
    models.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


# ---------------------------------------------------------------- models


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(cell.ljust(w) if c == 0 else cell.rjust(w) for c, (cell, w) in enumerate(zip(r, widths))).rstrip())


def _cmd_models(args: argparse.Namespace) -> int:
    from .hf import hf_model_rows

    infos = [model_info(name) for name in list_models()]
    hf_rows = hf_model_rows()
    if args.json:
        rows = [{"kind": "torchvision", **vars(i)} for i in infos] + [{"kind": "hf", **vars(r)} for r in hf_rows]
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    header = ("model", "classes", "mIoU", "pixAcc", "GFLOPS", "params", "size", "cached")
    rows = [
        (
            i.name + (" (default)" if i.name == DEFAULT_MODEL else ""),
            str(i.num_classes),
            f"{i.miou:.1f}" if i.miou is not None else "-",
            f"{i.pixel_acc:.1f}" if i.pixel_acc is not None else "-",
            f"{i.gflops:.1f}",
            f"{i.num_params / 1e6:.1f}M",
            f"{i.file_size_mb:.1f} MB",
            "yes" if i.cached else "no",
        )
        for i in infos
    ]
    _table(header, rows)
    print("mIoU / pixAcc: COCO val2017 with the 20 VOC classes (torchvision); GFLOPS: multiply-adds per 520x520 image")
    print()
    _table(
        ("Hugging Face checkpoint (--model hf:...)", "family", "classes", "mIoU", "dataset", "cached"),
        [(r.name, r.family, str(r.num_classes), f"{r.miou:.1f}" if r.miou is not None else "-", r.dataset, "yes" if r.cached else "no") for r in hf_rows],
    )
    print("mIoU: published single-scale validation scores (sources: seglens models --json); any other")
    print("AutoModelForSemanticSegmentation / Mask2Former checkpoint or saved folder works too: pip install 'seglens[hf]'")
    return EXIT_OK


# ---------------------------------------------------------------- segment


def _unique_names(images: list[InputImage], kinds: Sequence[str]) -> list[str]:
    """Output stems such that no two images write the same file (e.g. 'a_overlay.jpg' vs 'a.jpg')."""
    taken: set[str] = set()
    names = []
    for img in images:
        name, n = img.name, 1
        while any((name + _SUFFIX[k]).lower() in taken for k in kinds):
            n += 1
            name = f"{img.name}-{n}"
        taken.update((name + _SUFFIX[k]).lower() for k in kinds)
        names.append(name)
    return names


def _reserve_video_names(videos: list[InputImage], image_names: list[str]) -> list[InputImage]:
    """Video output stems whose NAME_mask/ folder holds no image output of the same run (installing
    the folder replaces it whole): "clip" becomes "clip-2" when an image is named "clip_mask/...". """
    taken = {n.lower() for n in image_names}
    out = []
    for video in videos:
        name, n = video.name, 1
        while any(t.startswith(f"{name.lower()}_mask/") for t in taken):
            n += 1
            name = f"{video.name}-{n}"
        out.append(dataclasses.replace(video, name=name))
    return out


def _previous_summary(out: Path) -> dict[str, dict]:
    try:
        data = json.loads((out / "summary.json").read_text(encoding="utf-8"))
        return {entry["input"]: entry for entry in data.get("images", [])}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def _write_outputs(result, paths: dict[str, Path], alpha: float, title: str, low_confidence: float = 0.0) -> None:
    from .visualize import heat_palette, outline_low_confidence

    if "mask" in paths:
        save_mask_png(paths["mask"], result.labels, result.palette)
    if "confidence" in paths:
        save_mask_png(paths["confidence"], result.confidence, heat_palette())
    if "overlay" in paths:
        rgb = result.overlay(alpha)
        if result.confidence is not None and low_confidence > 0:
            rgb = outline_low_confidence(rgb, result.confidence, threshold=low_confidence, width=max(1, round(max(rgb.shape[:2]) / 500)))
        save_image(paths["overlay"], rgb)
    if "figure" in paths:
        fig = result.figure(title=title)
        with atomic_open(paths["figure"]) as f:
            fig.savefig(f, format="png", dpi=100)


def _summary_entry(img: InputImage, result, paths: dict[str, Path], out: Path) -> dict:
    h, w = result.labels.shape
    return {
        "input": img.label,
        "width": w,
        "height": h,
        "seconds": round(result.seconds, 4),
        "classes": [
            {"index": c.index, "name": c.name, "pixels": c.pixels, "fraction": round(c.fraction, 6), "color": list(c.color)}
            | ({"mean_confidence": round(c.confidence, 4)} if c.confidence is not None else {})
            for c in result.classes
        ],
        "outputs": {k: p.relative_to(out).as_posix() for k, p in paths.items()},
    }


def _write_summary(out: Path, meta: dict, entries: list[dict], failures: list[dict]) -> None:
    write_json(out / "summary.json", {**meta, "images": entries, "failed": failures})
    rows = [
        {"input": e["input"], "width": e["width"], "height": e["height"], "seconds": e["seconds"], "class_index": c["index"], "class_name": c["name"], "fraction": c["fraction"]}
        for e in entries
        for c in e["classes"]
    ]
    write_csv(out / "summary.csv", rows, ["input", "width", "height", "seconds", "class_index", "class_name", "fraction"])


def _calibration_images(folder: Path | None, limit: int = 16) -> list:
    """Up to ``limit`` images for int8 calibration: from ``folder``, or the bundled examples."""
    if folder is None:
        paths = bundled_examples()
    else:
        found, problems = find_images([folder])
        if not found:
            raise ValueError(f"--calibrate {folder}: no images found ({'; '.join(r for _, r in problems)})")
        paths = [f.path for f in found]
    return [load_image(p) for p in paths[:limit]]


def _segmenter(args: argparse.Namespace, **extra):
    """A Segmenter from the flags `segment` and `eval` share (model, weights, device, backend...)."""
    from .inference import Segmenter

    calibration = _calibration_images(args.calibrate) if args.precision == "int8" else None
    return Segmenter(
        args.model,
        weights=args.weights,
        device=args.device,
        progress=not args.quiet,
        seed=args.seed,
        backend=args.backend,
        precision=args.precision,
        calibration=calibration,
        **extra,
    )


def _cmd_segment(args: argparse.Namespace, err) -> int:
    from tqdm import tqdm

    found, problems = find_images(args.inputs, suffixes=IMAGE_EXTENSIONS | VIDEO_SUFFIXES, exclude=[args.out])
    if not found:
        detail = "; ".join(f"{source}: {reason}" for source, reason in problems)
        err(f"error: no images found ({detail}); give image or video files, folders, glob patterns or http(s) URLs")
        return EXIT_CANNOT_START
    for source, reason in problems:
        err(f"error: {source}: {reason}")
    videos = [f for f in found if not f.is_url and is_video(f.path)]
    images = [f for f in found if f.is_url or not is_video(f.path)]
    image_outputs = args.outputs or DEFAULT_OUTPUTS
    video_outputs = tuple(k for k in (args.outputs or ("overlay",)) if k in ("overlay", "mask"))
    if videos and args.outputs and set(args.outputs) - {"overlay", "mask"} and video_outputs:
        err(f"note: videos get {','.join(video_outputs)} only ({','.join(sorted(set(args.outputs) - {'overlay', 'mask'}))}: images only)")
    windows_bar = None

    def window_progress(done: int, total: int) -> None:  # a second bar while a huge image is tiled
        nonlocal windows_bar
        if args.quiet or total < 8:
            return
        if windows_bar is None:
            windows_bar = tqdm(total=total, unit="window", desc="windows", file=sys.stderr, leave=False, position=1, dynamic_ncols=True)
        windows_bar.update(done - windows_bar.n)
        if done >= total:
            windows_bar.close()
            windows_bar = None

    try:
        scale = args.scale if args.scale is not None else (1.0 if args.resize == "none" else None)
        seg = _segmenter(args, batch_size=args.batch_size, max_pixels=args.max_pixels, compile=args.compile, scale=scale, tile=args.tile, overlap=args.overlap, confidence="confidence" in image_outputs, window_progress=window_progress)
    except (WeightsError, ValueError, BackendError, ImageLoadError) as e:
        err(f"error: {e}")
        return EXIT_CANNOT_START
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        err(f"error: cannot create output folder {args.out} ({e.strerror}); choose another --out")
        return EXIT_CANNOT_START
    if not seg.loaded.meaningful:
        err(f"warning: weights are a {seg.loaded.weights_tag}: the masks show the pipeline works, not what is in the images")

    meta = {"seglens_version": __version__, "model": args.model, "weights": seg.loaded.weights, "weights_tag": seg.loaded.weights_tag, "weights_sha256": seg.loaded.sha256, "device": str(seg.device), "batch_size": args.batch_size, "backend": args.backend, "precision": args.precision, "scale": seg.scale, "tile": args.tile, "overlap": args.overlap if args.tile else None}
    names = _unique_names(images, image_outputs)
    videos = _reserve_video_names(videos, names)
    previous = _previous_summary(args.out) if args.skip_existing else {}
    failures: list[dict] = [{"input": s, "error": r} for s, r in problems]
    skipped = segmented = 0

    def fail(source: str, reason: str) -> None:
        failures.append({"input": source, "error": reason})
        bar.write(f"error: {source}: {reason}", file=sys.stderr)

    todo = []  # (index, InputImage, paths) still to segment
    done: dict[int, dict] = {}  # index -> summary entry, so the summary keeps input order
    for i, (img, name) in enumerate(zip(images, names)):
        paths = {k: args.out / (name + _SUFFIX[k]) for k in image_outputs}
        if args.skip_existing and all(p.is_file() for p in paths.values()):
            skipped += 1
            if img.label in previous:
                done[i] = previous[img.label]
        else:
            todo.append((i, img, paths))

    def write(i, img, paths, result):
        _write_outputs(result, paths, args.alpha, img.label if img.is_url else img.path.name, args.low_confidence if "confidence" in image_outputs else 0.0)
        return _summary_entry(img, result, paths, args.out)

    def finish(i, img, future) -> None:
        nonlocal segmented
        try:
            done[i] = future.result()
            segmented += 1
        except OSError as e:
            fail(img.label, f"cannot write outputs ({e}); check free space and permissions of {args.out}")
        bar.update(1)

    bar = tqdm(total=len(images), initial=skipped, unit="img", desc="segment", file=sys.stderr, disable=args.quiet or not images, dynamic_ncols=True)
    # Outputs are encoded in a writer thread while the model works on the next images.
    writer = ThreadPoolExecutor(1, thread_name_prefix="seglens-write")
    pending: deque = deque()
    interrupted = False
    try:
        # check_size: shapes the model cannot take are refused from the header, before decoding
        load = lambda item: load_image(item[1].path, max_pixels=args.max_pixels, url_timeout=args.url_timeout, url_max_bytes=round(args.url_max_mb * 2**20), check_size=seg.check_size)  # noqa: E731
        for (i, img, paths), result in seg.stream(todo, load, workers=args.workers):
            if isinstance(result, Exception):
                if args.debug and not isinstance(result, (ImageLoadError, ValueError)):
                    raise result
                fail(img.label, getattr(result, "reason", None) or str(result) or type(result).__name__)
                bar.update(1)
                continue
            pending.append((i, img, writer.submit(write, i, img, paths, result)))
            while pending and (pending[0][2].done() or len(pending) > 2):  # at most 2 results held
                finish(*pending.popleft())
        while pending:
            finish(*pending.popleft())
        bar.close()
        for j, video in enumerate(videos):
            entry = _segment_one_video(args, seg, video, video_outputs, previous, fail)
            if entry is None:
                continue
            if entry.pop("skipped", False):
                skipped += 1
            else:
                segmented += 1
            done[len(images) + j] = entry
    except KeyboardInterrupt:
        interrupted = True
    finally:
        while pending:  # every started write completes (or fails) before the summary
            finish(*pending.popleft())
        writer.shutdown(wait=True)
        bar.close()
        _write_summary(args.out, meta, [done[i] for i in sorted(done)], failures)

    line = f"{segmented} segmented, {skipped} skipped, {len(failures)} failed -> {args.out}/ (summary.json)"
    if interrupted:
        err(f"interrupted: {line}; run again with --skip-existing to resume")
        return EXIT_INTERRUPTED
    err(("done: " if not failures else "finished with errors: ") + line)
    return EXIT_SOME_FAILED if failures else EXIT_OK


def _segment_one_video(args: argparse.Namespace, seg, video: InputImage, outputs: tuple[str, ...], previous: dict, fail) -> dict | None:
    """One video through video.segment_video with a progress bar in frames; None if it failed
    (``fail(input, reason)`` told). A partial video (decoding stopped part-way) returns its entry
    with "error" set, and is reported too."""
    from tqdm import tqdm

    from .video import probe, segment_video

    label = video.label
    if not outputs:
        fail(label, "nothing to write for a video; add overlay and/or mask to --outputs")
        return None
    mask_name = video.name + ("_mask" if args.mask_format == "png" else "_mask.mkv")
    finals = {"overlay": args.out / f"{video.name}_overlay.mp4", "mask": args.out / mask_name}
    if args.skip_existing and all(finals[k].exists() for k in outputs) and label in previous and not previous[label].get("error"):
        return {**previous[label], "skipped": True}
    try:
        info = probe(video.path)
    except VideoError as e:
        fail(label, e.reason)
        return None
    total = -(-info.frames // args.vid_stride) if info.frames else None
    bar = tqdm(total=total, unit="frame", desc=video.path.name, file=sys.stderr, disable=args.quiet, dynamic_ncols=True)
    try:
        entry = segment_video(seg, video.path, args.out, video.name, outputs=outputs, stride=args.vid_stride, alpha=args.alpha, mask_format=args.mask_format, progress=bar.update, workers=args.workers)
    except VideoError as e:
        fail(label, e.reason)
        return None
    except OSError as e:
        fail(label, f"cannot write outputs ({e}); check free space and permissions of {args.out}")
        return None
    finally:
        bar.close()
    if entry.get("error"):
        fail(label, entry["error"])
    return entry


# ---------------------------------------------------------------- bench


def _cmd_bench(args: argparse.Namespace, err) -> int:
    import tempfile

    from .bench import format_table, parse_configs, run_bench

    try:
        configs = parse_configs(args.configs)
        if args.images:
            found, problems = find_images([args.images])
            if not found:
                raise ValueError(f"--images {args.images}: no images found ({'; '.join(r for _, r in problems)})")
            images = [f.path for f in found]
        else:
            images = bundled_examples()
        calibration = [f.path for f in find_images([args.calibrate])[0]] if args.calibrate else None
    except ValueError as e:
        err(f"error: {e}")
        return EXIT_CANNOT_START
    progress = None if args.quiet else (lambda message: err(message))
    with tempfile.TemporaryDirectory(prefix="seglens-bench-") as tmp:
        try:
            rows, meta = run_bench(args.model, weights=args.weights, images=images, n=args.n, configs=configs, device=args.device, warmup=args.warmup, work_dir=args.work_dir or Path(tmp), progress=progress, calibration=calibration)
        except (WeightsError, ValueError) as e:
            err(f"error: {e}")
            return EXIT_CANNOT_START
    print(format_table(rows, meta))
    if args.json:
        # A list of rows (as the issue asks); each carries the run's machine facts for context.
        write_json(args.json, [{**row, "meta": meta} for row in rows])
    return EXIT_OK


# ---------------------------------------------------------------- export


def _cmd_export(args: argparse.Namespace, err) -> int:
    from .backends import export, quantize_int8
    from .inference import Segmenter
    from .models import load_model

    try:
        if args.precision == "int8" and args.format != "openvino":
            raise ValueError("--precision int8 needs --format openvino")
        loaded = load_model(args.model, weights=args.weights, progress=not args.quiet, seed=args.seed)
        if args.precision == "int8":
            seg = Segmenter(loaded, device="cpu")
            path = quantize_int8(loaded, [seg.preprocess(im) for im in _calibration_images(args.calibrate)], out=args.out)
        else:
            path = export(loaded, args.format, out=args.out)
    except (WeightsError, BackendError, ValueError, ImageLoadError) as e:
        err(f"error: {e}")
        return EXIT_CANNOT_START
    print(path)
    return EXIT_OK


# ---------------------------------------------------------------- serve


def _cmd_serve(args: argparse.Namespace, err) -> int:
    try:
        from .web import create_app, serve
        from .web.app import LOOPBACK_HOSTS
    except ModuleNotFoundError as e:
        err(f"error: {e}")
        return EXIT_CANNOT_START
    from .inference import Segmenter

    names = list(dict.fromkeys(args.model or [DEFAULT_MODEL]))
    if len(names) > 1 and args.weights not in ("official", "random"):
        err("error: --weights FILE fits one --model; serve one model per weights file")
        return EXIT_CANNOT_START
    try:
        segs = {n: Segmenter(n, weights=args.weights, device=args.device, max_pixels=args.max_pixels, progress=not args.quiet, seed=args.seed) for n in names}
        hosts = [*LOOPBACK_HOSTS, *(h for value in args.allowed_hosts for h in value.split(",") if h.strip())]
        app = create_app(
            segs, max_upload_mb=args.max_upload_mb, max_pixels=args.max_pixels, workers=args.workers, queue_size=args.queue_size,
            max_queued_pixels=args.max_queued_pixels or args.max_pixels, body_timeout=args.body_timeout,
            min_upload_rate=args.min_upload_rate, allowed_hosts=hosts, cors_origins=args.cors_origin,
        )
    except (WeightsError, ValueError) as e:
        err(f"error: {e}")
        return EXIT_CANNOT_START
    for s in segs.values():
        if not s.loaded.meaningful:
            err(f"warning: {s.loaded.name}: {s.loaded.weights_tag}")
    err(f"serving {', '.join(segs)} on http://{args.host}:{args.port}/ (API: /v1/segment, /docs); Ctrl-C stops")
    try:
        serve(app, host=args.host, port=args.port, log_level="warning" if args.quiet else "info", header_timeout=args.header_timeout)
    except OSError as e:
        err(f"error: {e}")
        return EXIT_CANNOT_START
    return EXIT_OK


# ---------------------------------------------------------------- eval


def _cmd_eval(args: argparse.Namespace, err) -> int:
    from tqdm import tqdm

    from .datasets import DatasetError, open_dataset, validate_labels
    from .evaluate import TTA, EvalConfig, evaluate, write_worst
    from .report import summary_line, write_report

    try:
        tta = TTA.parse(args.tta) if args.tta else None
        if args.compare_tta and tta is None:
            raise ValueError("--compare-tta needs --tta (e.g. --tta flip)")
        dataset = open_dataset(args.dataset, args.root, split=args.split, classes_file=args.classes, ignore_index=args.ignore_index, limit=args.limit)
        if len(dataset) == 0:
            raise DatasetError(f"{args.root}: the dataset has no images with masks")
        seg = _segmenter(args)
        n = len(seg.categories)
        if dataset.categories is not None and len(dataset.categories) != n:
            raise DatasetError(f"{args.classes or args.root}: the dataset has {len(dataset.categories)} classes, the model {n}; pass weights with {len(dataset.categories)} classes or fix the class list")
    except (DatasetError, WeightsError, ValueError, BackendError, ImageLoadError) as e:
        err(f"error: {e}")
        return EXIT_CANNOT_START
    if not seg.loaded.meaningful:
        err(f"warning: weights are a {seg.loaded.weights_tag}: the scores measure nothing but the pipeline")

    with tqdm(total=len(dataset), unit="img", desc="check labels", file=sys.stderr, disable=args.quiet, dynamic_ncols=True) as bar:
        problems = validate_labels(dataset, n, progress=bar.update)
    for p in problems[:20]:
        err(f"label problem: {p.path}: {p.kind}: {p.detail}")
    if len(problems) > 20:
        err(f"label problem: ... and {len(problems) - 20} more (all listed in the report)")
    if problems and args.strict:
        err(f"error: {len(problems)} label problems; fix them or run without --strict to score anyway")
        return EXIT_CANNOT_START

    protocol = args.protocol or ("native" if args.dataset in ("folder", "ade20k") else "torchvision")
    if is_hf_model(args.model) and protocol == "torchvision":
        err("note: Hugging Face models are scored with --protocol native (their own image processor; the torchvision protocol is torchvision's 520-pixel preset)")
    config = EvalConfig(protocol=protocol, tta=tta, compare_tta=args.compare_tta, boundary_width=args.boundary_width, worst=max(0, args.worst))
    with tqdm(total=len(dataset), unit="img", desc="eval", file=sys.stderr, disable=args.quiet, dynamic_ncols=True) as bar:
        result = evaluate(seg, dataset, config, progress=bar.update)
    for s in result.metrics["skipped"]:
        err(f"error: {s['error']}")
    result.metrics["label_problems"] = [dataclasses.asdict(p) for p in problems]
    result.metrics["worst"] = write_worst(result, args.out, seg, ignore_index=dataset.ignore_index)
    paths = write_report(result.metrics, args.out)
    print(summary_line(result.metrics))
    err(f"report: {paths['html']} ({paths['md'].name}, {paths['metrics'].name})")
    return EXIT_SOME_FAILED if result.metrics["skipped"] else EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``seglens`` command; returns the exit code."""

    def err(message: str) -> None:
        print(message, file=sys.stderr)

    try:
        args = build_parser().parse_args(argv)
    except _UsageError as e:
        err(f"error: {e}")
        return EXIT_CANNOT_START
    try:
        with _sigterm_as_interrupt():
            return _dispatch(args, err)
    except KeyboardInterrupt:
        err("interrupted")
        return EXIT_INTERRUPTED
    except Exception as e:  # noqa: BLE001 - the one place that turns crashes into a clean line
        if args.debug:
            raise
        err(f"error: {type(e).__name__}: {e} (run again with --debug for a traceback)")
        return EXIT_CANNOT_START


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM (docker stop, a CI cancel, kill) takes the Ctrl-C path: temporary files removed,
    the summary of what was done written, exit 130. Only the main thread can set handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _dispatch(args: argparse.Namespace, err) -> int:
    if args.command == "models":
        return _cmd_models(args)
    if args.command == "serve":
        return _cmd_serve(args, err)
    if args.command == "bench":
        return _cmd_bench(args, err)
    if args.command == "export":
        return _cmd_export(args, err)
    if args.command == "eval":
        return _cmd_eval(args, err)
    return _cmd_segment(args, err)


if __name__ == "__main__":
    sys.exit(main())
