"""Command line: the only place that prints and chooses exit codes.

Exit codes: 0 every input done; 1 some inputs failed; 2 nothing could start (bad flag, unknown
model, weights missing or unreadable, no images found); 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import re
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from ._version import __version__
from .backends import BACKENDS, BackendError
from .io import DEFAULT_MAX_PIXELS, ImageLoadError, bundled_examples, find_images, load_image, write_json
from .models import DEFAULT_MODEL, WeightsError, is_hf_model, list_models, model_info
from .pipeline import OUTPUT_KINDS
from .video import MASK_FORMATS
from .web import DEFAULT_SERVE_MAX_PIXELS

# Literal copies would drift; these modules are light next to torch, which models.py loads anyway.
from .datasets import DATASET_KINDS  # noqa: E402
from .evaltypes import PROTOCOLS, TTA  # noqa: E402

__all__ = ["build_parser", "main"]

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


def _tta(value: str) -> TTA:
    try:
        return TTA.parse(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


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
    ev.add_argument("--tta", type=_tta, help="test-time augmentation: 'flip' or 'scales=0.75,1.0,1.25[,flip]'")
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


# Library words -> this command's flags, in messages from seglens.pipeline ("tile=" -> "--tile").
_API_TERMS = re.compile(
    r"(?<![\w?&=/.'\"-])(out|outputs|max_pixels|tile|scale|overlap|alpha|low_confidence|url_timeout|url_max_mb|vid_stride"
    r"|mask_format|workers|batch_size|device|backend|precision|seed|calibration)="
)


def _flag_words(message: str) -> str:
    return _API_TERMS.sub(lambda m: "--calibrate " if m[1] == "calibration" else "--" + m[1].replace("_", "-"), message)


def _cmd_segment(args: argparse.Namespace, err) -> int:
    """Flags in, one seglens.pipeline.segment call, its events and summary line out."""
    from tqdm import tqdm

    from .pipeline import RunError, RunInterrupted, segment

    def on_event(event) -> None:  # tqdm.write: one line above the progress bars
        if event.kind == "failed":
            tqdm.write(f"error: {event.input}: {_flag_words(event.message)}", file=sys.stderr)
        elif event.kind in ("warning", "note"):
            tqdm.write(f"{event.kind}: {_flag_words(event.message)}", file=sys.stderr)
        elif event.kind == "item_warning" and args.debug:  # decoder chatter, kept in the summary
            tqdm.write(f"warning: {event.input}: {event.message}", file=sys.stderr)

    def line(summary) -> str:
        return f"{summary.segmented} segmented, {summary.skipped} skipped, {len(summary.failures)} failed -> {args.out}/ (summary.json)"

    try:
        summary = segment(
            args.inputs, args.out, model=args.model, weights=args.weights, outputs=args.outputs, skip_existing=args.skip_existing,
            progress=None if args.quiet else functools.partial(tqdm, file=sys.stderr, dynamic_ncols=True), on_event=on_event,
            device=args.device, batch_size=args.batch_size, backend=args.backend, precision=args.precision,
            calibration=args.calibrate, compile=args.compile, seed=args.seed, tile=args.tile, overlap=args.overlap,
            scale=args.scale if args.scale is not None else (1.0 if args.resize == "none" else None),
            alpha=args.alpha, low_confidence=args.low_confidence, max_pixels=args.max_pixels, url_timeout=args.url_timeout,
            url_max_mb=args.url_max_mb, vid_stride=args.vid_stride, mask_format=args.mask_format, workers=args.workers,
            strict=args.debug,
        )  # fmt: skip
    except RunInterrupted as e:
        err(f"interrupted: {line(e.summary)}; run again with --skip-existing to resume")
        return EXIT_INTERRUPTED
    except (RunError, WeightsError, ValueError, BackendError, ImageLoadError) as e:
        err(f"error: {_flag_words(str(e))}")
        return EXIT_CANNOT_START
    err(("done: " if summary.ok else "finished with errors: ") + line(summary))
    return EXIT_OK if summary.ok else EXIT_SOME_FAILED


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


def _eval_flag_words(message: str) -> str:
    """seglens.evaluation's and seglens.datasets' API words -> eval's flags ("ignore_index" -> "--ignore-index")."""
    message = re.sub(r"\bignore_index\b", "--ignore-index", message)
    return _flag_words(message.replace("a classes file", "--classes"))


def _cmd_eval(args: argparse.Namespace, err) -> int:
    """Flags in, one seglens.evaluation.evaluate call (which writes the report), its events and summary line out."""
    from tqdm import tqdm

    from .datasets import DatasetError
    from .evaluation import LabelProblemsError, evaluate
    from .report import summary_line

    def on_event(event) -> None:  # between the progress bars: none is open
        if event.kind == "label_problems":
            for p in event.problems[:20]:
                err(f"label problem: {p.path}: {p.kind}: {p.detail}")
            if len(event.problems) > 20:
                err(f"label problem: ... and {len(event.problems) - 20} more (all listed in the report)")
        else:
            err(f"{event.kind}: {event.message}")

    if args.compare_tta and args.tta is None:
        err("error: --compare-tta needs --tta (e.g. --tta flip)")
        return EXIT_CANNOT_START
    try:
        result = evaluate(
            args.dataset, args.root, model=args.model, weights=args.weights, out=args.out, on_event=on_event,
            progress=None if args.quiet else functools.partial(tqdm, file=sys.stderr, dynamic_ncols=True),
            split=args.split, classes=args.classes, ignore_index=args.ignore_index, limit=args.limit, protocol=args.protocol,
            tta=args.tta, compare_tta=args.compare_tta, boundary_width=args.boundary_width, worst=max(0, args.worst),
            strict=args.strict, device=args.device, backend=args.backend, precision=args.precision, calibration=args.calibrate,
            seed=args.seed,
        )  # fmt: skip
    except LabelProblemsError as e:
        err(f"error: {len(e.problems)} label problems; fix them or run without --strict to score anyway")
        return EXIT_CANNOT_START
    except (DatasetError, WeightsError, ValueError, BackendError, ImageLoadError) as e:
        err(f"error: {_eval_flag_words(str(e))}")
        return EXIT_CANNOT_START
    for s in result.skipped:
        err(f"error: {s.error}")
    print(summary_line(result))
    err(f"report: {args.out / 'report.html'} (report.md, metrics.json)")
    return EXIT_SOME_FAILED if result.skipped else EXIT_OK


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
