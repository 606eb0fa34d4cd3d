"""The ``seglens`` commands: flags in, one library call, its events and summary line out. Each
returns its exit code; messages go through ``err`` (stderr), results to stdout."""

from __future__ import annotations

import argparse
import functools
import json
import re
import sys
from pathlib import Path

from ..backends import BackendError
from ..io import ImageLoadError, bundled_examples, find_images, write_json
from ..io.calibration import calibration_images
from ..models import DEFAULT_MODEL, WeightsError, list_models, model_info

EXIT_OK, EXIT_SOME_FAILED, EXIT_CANNOT_START, EXIT_INTERRUPTED = 0, 1, 2, 130


# ---------------------------------------------------------------- models


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
    for r in [header, *rows]:
        print(
            "  ".join(cell.ljust(w) if c == 0 else cell.rjust(w) for c, (cell, w) in enumerate(zip(r, widths))).rstrip()
        )


def _cmd_models(args: argparse.Namespace) -> int:
    from ..hf import hf_model_rows

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
        [
            (
                r.name,
                r.family,
                str(r.num_classes),
                f"{r.miou:.1f}" if r.miou is not None else "-",
                r.dataset,
                "yes" if r.cached else "no",
            )
            for r in hf_rows
        ],
    )
    print("mIoU: published single-scale validation scores (sources: seglens models --json); any other")
    print(
        "AutoModelForSemanticSegmentation / Mask2Former checkpoint or saved folder works too: pip install 'seglens[hf]'"
    )
    return EXIT_OK


# ---------------------------------------------------------------- segment


# Library words -> this command's flags, in messages from seglens.pipeline ("tile=" -> "--tile").
_API_TERMS = re.compile(
    r"(?<![\w?&=/.'\"-])(out|outputs|max_pixels|tile|scale|overlap|alpha|low_confidence|url_timeout|url_max_mb|vid_stride"
    r"|mask_format|workers|batch_size|device|backend|precision|seed|calibration|engine|ray_address|ray_workers"
    r"|cpus_per_worker|gpus_per_worker|refine)="
)


def _flag_words(message: str) -> str:
    return _API_TERMS.sub(lambda m: "--calibrate " if m[1] == "calibration" else "--" + m[1].replace("_", "-"), message)


def _cmd_segment(args: argparse.Namespace, err) -> int:
    """Flags in, one seglens.pipeline.segment call, its events and summary line out."""
    from tqdm import tqdm

    from ..pipeline import RunError, RunInterrupted, segment

    def on_event(event) -> None:  # tqdm.write: one line above the progress bars
        if event.kind == "failed":
            tqdm.write(f"error: {event.input}: {_flag_words(event.message)}", file=sys.stderr)
        elif event.kind in ("warning", "note"):
            tqdm.write(f"{event.kind}: {_flag_words(event.message)}", file=sys.stderr)
        elif event.kind == "item_warning" and args.debug:  # decoder chatter, kept in the summary
            tqdm.write(f"warning: {event.input}: {event.message}", file=sys.stderr)

    def line(summary) -> str:
        return (
            f"{summary.segmented} segmented, {summary.skipped} skipped, {len(summary.failures)} failed "
            f"-> {str(args.out).rstrip('/')}/ (summary.json)"
        )

    try:
        summary = segment(
            args.inputs, args.out, model=args.model, weights=args.weights, outputs=args.outputs,
            skip_existing=args.skip_existing,
            progress=None if args.quiet else functools.partial(tqdm, file=sys.stderr, dynamic_ncols=True),
            on_event=on_event,
            device=args.device, batch_size=args.batch_size, backend=args.backend, precision=args.precision,
            calibration=args.calibrate, compile=args.compile, seed=args.seed, tile=args.tile, overlap=args.overlap,
            scale=args.scale if args.scale is not None else (1.0 if args.resize == "none" else None),
            alpha=args.alpha, low_confidence=args.low_confidence, max_pixels=args.max_pixels,
            url_timeout=args.url_timeout, url_max_mb=args.url_max_mb, vid_stride=args.vid_stride,
            mask_format=args.mask_format, workers=args.workers,
            strict=args.debug, refine=args.refine, **args.engine_options,
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

    from ..bench import format_table, parse_configs, run_bench

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
            rows, meta = run_bench(
                args.model,
                weights=args.weights,
                images=images,
                n=args.n,
                configs=configs,
                device=args.device,
                warmup=args.warmup,
                work_dir=args.work_dir or Path(tmp),
                progress=progress,
                calibration=calibration,
            )
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
    from ..backends import export, quantize_int8
    from ..inference import Segmenter
    from ..models import load_model

    try:
        if args.precision == "int8" and args.format != "openvino":
            raise ValueError("--precision int8 needs --format openvino")
        loaded = load_model(args.model, weights=args.weights, progress=not args.quiet, seed=args.seed)
        if args.precision == "int8":
            seg = Segmenter(loaded, device="cpu")
            images = calibration_images(args.calibrate, name="--calibrate ")
            path = quantize_int8(loaded, [seg.preprocess(im) for im in images], out=args.out)
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
        from ..web import create_app, serve
        from ..web.app import LOOPBACK_HOSTS
    except ModuleNotFoundError as e:
        err(f"error: {e}")
        return EXIT_CANNOT_START
    from ..inference import Segmenter

    names = list(dict.fromkeys(args.model or [DEFAULT_MODEL]))
    if len(names) > 1 and args.weights not in ("official", "random"):
        err("error: --weights FILE fits one --model; serve one model per weights file")
        return EXIT_CANNOT_START
    try:
        built = [Segmenter(c) for c in args.segmenter_configs]
        segs = {s.loaded.name: s for s in built}  # a trained file names its own architecture
        hosts = [*LOOPBACK_HOSTS, *(h for value in args.allowed_hosts for h in value.split(",") if h.strip())]
        app = create_app(
            segs,
            max_upload_mb=args.max_upload_mb,
            max_pixels=args.max_pixels,
            workers=args.workers,
            queue_size=args.queue_size,
            max_queued_pixels=args.max_queued_pixels or args.max_pixels,
            body_timeout=args.body_timeout,
            min_upload_rate=args.min_upload_rate,
            allowed_hosts=hosts,
            cors_origins=args.cors_origin,
        )
    except (WeightsError, ValueError) as e:
        err(f"error: {e}")
        return EXIT_CANNOT_START
    for s in segs.values():
        if not s.loaded.meaningful:
            err(f"warning: {s.loaded.name}: {s.loaded.weights_tag}")
    err(f"serving {', '.join(segs)} on http://{args.host}:{args.port}/ (API: /v1/segment, /docs); Ctrl-C stops")
    try:
        serve(
            app,
            host=args.host,
            port=args.port,
            log_level="warning" if args.quiet else "info",
            header_timeout=args.header_timeout,
        )
    except OSError as e:
        err(f"error: {e}")
        return EXIT_CANNOT_START
    return EXIT_OK


# ---------------------------------------------------------------- eval


def _eval_flag_words(message: str) -> str:
    """seglens.evaluation's and seglens.datasets' API words -> eval's flags ("ignore_index" -> "--ignore-index")."""
    message = re.sub(r"\bignore_index\b", "--ignore-index", message)
    message = re.sub(r"(?<![\w/.-])(root|images|masks|mask_values)=", lambda m: "--" + m[1].replace("_", "-"), message)
    message = re.sub(r"(?<![\w-])mask_values\b", "--mask-values", message)
    return _flag_words(message.replace("a classes file", "--classes"))


def _eval_dataset_flags(args: argparse.Namespace) -> str | None:
    """What is wrong with the dataset flags (a usage error), or None: --root for every kind, or
    --images and --masks for folder; --images, --masks, --classes and --mask-values for folder only."""
    prog = "seglens eval"
    explicit = [f for f, v in (("--images", args.images), ("--masks", args.masks)) if v is not None]
    if args.dataset != "folder":
        extra = explicit + [f for f, v in (("--classes", args.classes), ("--mask-values", args.mask_values)) if v]
        if extra:
            return f"{prog}: argument {extra[0]}: applies only to --dataset folder (see {prog} --help)"
        if args.root is None:
            return f"{prog}: argument --root: required for --dataset {args.dataset} (see {prog} --help)"
        return None
    if args.root is not None and explicit:
        return f"{prog}: argument {explicit[0]}: give --root or --images and --masks, not both (see {prog} --help)"
    if args.root is None and len(explicit) < 2:
        missing = "--images" if args.images is None else "--masks"
        return (
            f"{prog}: argument {missing}: --dataset folder needs --root (holding images/ and masks/) "
            f"or --images and --masks (see {prog} --help)"
        )
    return None


def _cmd_eval(args: argparse.Namespace, err) -> int:
    """Flags in, one seglens.evaluation.evaluate call (which writes the report), its events and summary line out."""
    from tqdm import tqdm

    from ..datasets import DatasetError
    from ..evaluation import LabelProblemsError, evaluate
    from ..report import summary_line

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
    usage = _eval_dataset_flags(args)
    if usage is not None:
        err(f"error: {usage}")
        return EXIT_CANNOT_START
    try:
        result = evaluate(
            args.dataset, args.root, model=args.model, weights=args.weights, out=args.out, on_event=on_event,
            progress=None if args.quiet else functools.partial(tqdm, file=sys.stderr, dynamic_ncols=True),
            split=args.split, images=args.images, masks=args.masks, classes=args.classes,
            ignore_index=args.ignore_index, mask_values=args.mask_values, limit=args.limit,
            protocol=args.protocol, tta=args.tta, compare_tta=args.compare_tta, boundary_width=args.boundary_width,
            worst=max(0, args.worst), strict=args.strict, device=args.device, backend=args.backend,
            precision=args.precision, calibration=args.calibrate, seed=args.seed, scale=args.segmenter_configs[0].scale,
            refine=args.refine, **args.engine_options,
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
