"""The ``seglens`` argument parser: every command's flags and help texts, the model flags they
share, and the SegmenterConfig(s) the flags make (its ConfigError -> the flag's usage error)."""

from __future__ import annotations

import argparse
import dataclasses
import re
from collections.abc import Sequence
from pathlib import Path

from .._cluster import ENGINES
from .._version import __version__
from ..config import AUTO_EXPORT_IMAGES, BACKEND_PRECISIONS, ConfigError, SegmenterConfig

# Literal copies would drift; these modules are light next to torch, which models.py loads anyway.
from ..datasets import DATASET_KINDS, parse_mask_values
from ..evaltypes import PROTOCOLS
from ..io import DEFAULT_MAX_PIXELS
from ..models import DEFAULT_MODEL, list_models
from ..video import MASK_FORMATS
from ..web import DEFAULT_SERVE_MAX_PIXELS
from ._argtypes import (
    _alpha,
    _float,
    _int,
    _model_name,
    _non_negative_float,
    _outputs,
    _Parser,
    _positive_float,
    _positive_int,
    _torchvision_name,
    _tta,
    _UsageError,
)
from ._compare import add_compare_parser
from ._train import add_bench_train_flags, add_train_parser

_MODEL_FLAGS = ("model", "weights", "device", "backend", "precision", "calibrate", "seed")


def _add_model_flags(p: argparse.ArgumentParser, flags: Sequence[str] = _MODEL_FLAGS, **changes: dict) -> None:
    """-m/-w/--device/--backend/--precision/--calibrate/--seed, defined once for every command that
    loads a model: the flags a SegmenterConfig is made of. ``flags``: the ones this command has;
    ``changes``: per flag, add_argument keywords that differ here (``weights={"default": "random"}``)."""
    models = ", ".join(list_models())
    spec = {
        "model": (("-m", "--model"), {
            "default": DEFAULT_MODEL, "type": _model_name, "metavar": "MODEL",
            "help": f"one of: {models} (default: %(default)s), or hf:<repo-or-folder>"}),
        "weights": (("-w", "--weights"), {
            "default": "official", "help": "'official', 'random' or a .pth/.safetensors state dict"}),
        "device": (("--device",), {"default": "auto", "help": "auto, cpu, cuda, cuda:N or mps (default: %(default)s)"}),
        "backend": (("--backend",), {
            "default": "torch", "choices": tuple(BACKEND_PRECISIONS),
            "help": "torch (default), onnxruntime or openvino"}),
        "precision": (("--precision",), {
            "default": "fp32", "choices": tuple(dict.fromkeys(x for ps in BACKEND_PRECISIONS.values() for x in ps)),
            "help": "fp32 (exact, default), fp16, bf16 or int8"}),
        "calibrate": (("--calibrate",), {
            "type": Path, "help": "images for int8 calibration (default: the bundled examples)"}),
        "seed": (("--seed",), {"type": int, "default": 0, "help": "seed for --weights random"}),
    }  # fmt: skip
    for flag in flags:
        names, kwargs = spec[flag]
        p.add_argument(*names, **{**kwargs, **changes.get(flag, {})})


_REFINE_HELP = (
    "post-process the label maps: small[=PIXELS|FRACTION] (small regions take their surroundings' label), "
    "guided[=RADIUS[:EPS]] (class boundaries moved to the image's edges), or both comma-separated; "
    "off by default (README: Refinement, with what each gained on CamVid)"
)


def _add_engine_flags(p: argparse.ArgumentParser) -> None:
    """--engine and the Ray pool's flags (seglens._cluster has the sizing rule)."""
    g = p.add_argument_group("engine", "run on a Ray cluster (pip install 'seglens[ray]'; README: Cluster scale)")
    g.add_argument(
        "--engine", choices=ENGINES, default="local",
        help="local: this process (default); ray: a pool of Ray Data actors, each holding the model",
    )  # fmt: skip
    g.add_argument(
        "--ray-address",
        help="local (start Ray on this machine), auto (the cluster `ray start` runs here), ray://HOST:PORT or "
        "HOST:PORT (default: $RAY_ADDRESS, else local)",
    )
    g.add_argument(
        "--ray-workers", metavar="MIN:MAX",
        help="actors in the pool, N or MIN:MAX (default: 1 to one per GPU, or one per 4 CPUs)",
    )  # fmt: skip
    g.add_argument("--cpus-per-worker", type=float, help="CPUs each actor asks for (default: see README)")
    g.add_argument("--gpus-per-worker", type=float, help="GPUs each actor asks for, e.g. 0.5 (default: 0)")


def engine_options(args: argparse.Namespace) -> dict:
    """segment()/evaluate() keywords of the engine flags (none for the local engine)."""
    if args.engine == "local":
        given = [f for f in ("ray_address", "ray_workers", "cpus_per_worker", "gpus_per_worker") if getattr(args, f)]
        if given:
            raise _UsageError(f"--{given[0].replace('_', '-')} needs --engine ray")
        return {}
    return {
        "engine": "ray", "ray_address": args.ray_address, "ray_workers": args.ray_workers,
        "cpus_per_worker": args.cpus_per_worker, "gpus_per_worker": args.gpus_per_worker,
    }  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks")
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bar, only errors and the final line")

    parser = _Parser(prog="seglens", description="Semantic segmentation with pretrained torchvision networks.")
    parser.add_argument("--version", action="version", version=f"seglens {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    seg = sub.add_parser("segment", parents=[common], help="segment images: masks, overlays, figures, summary")
    seg.add_argument(
        "inputs",
        nargs="+",
        help="image and video files, folders (searched recursively), glob patterns or http(s) image URLs",
    )
    seg.add_argument(
        "-o", "--out", default="seglens_out",
        help="output folder, or an object-store URI with --engine ray, e.g. s3://bucket/prefix (default: %(default)s)",
    )  # fmt: skip
    _add_model_flags(
        seg,
        model={"help": "one of: " + ", ".join(list_models()) + " (default: %(default)s), or hf:<repo-or-folder> "
                       "for a Hugging Face transformers checkpoint, e.g. hf:nvidia/segformer-b0-finetuned-ade-512-512 "
                       "(pip install 'seglens[hf]')"},
        weights={"help": "'official' (default: downloaded once, SHA-256 checked), "
                         "'random' (seeded, meaningless labels) or a .pth/.safetensors state dict"},
        backend={"default": "auto", "choices": ("auto", *BACKEND_PRECISIONS),
                 "help": "auto (default: OpenVINO f32 on CPUs when its export is cached or the run has "
                         f"{AUTO_EXPORT_IMAGES}+ images to repay it, else torch; the summary says which and why), "
                         "torch, onnxruntime or openvino "
                         "(exported once, cached; pip install 'seglens[onnx]' / 'seglens[openvino]')"},
        precision={"help": "fp32 (exact, default); fp16/bf16: torch autocast (GPUs); "
                           "int8: OpenVINO + NNCF quantisation (approximate, fast on CPUs)"},
        calibrate={"help": "images for --precision int8 calibration (default: the bundled examples); "
                           "used once, the quantised model is cached"},
    )  # fmt: skip
    seg.add_argument("-b", "--batch-size", type=_positive_int, default=1, help="images per forward pass (default: 1)")
    seg.add_argument(
        "--outputs",
        type=_outputs,
        help=(
            "comma-separated subset of mask,overlay,figure,confidence (default: mask,overlay,figure for images, "
            "overlay for videos); confidence: max-softmax heat map PNG (value = probability x 255), low-confidence "
            "outline on the overlay, per-class mean confidence in the summary; videos write overlay and mask"
        ),
    )
    seg.add_argument(
        "--vid-stride",
        type=_positive_int,
        default=1,
        metavar="N",
        help="videos: segment every N-th frame (the overlay video then plays at fps/N; default: 1)",
    )
    seg.add_argument(
        "--mask-format",
        choices=MASK_FORMATS,
        default="png",
        help=(
            "videos with --outputs mask: png (a folder NAME_mask/ of indexed PNGs named by frame number; default) or "
            "video (NAME_mask.mkv, lossless FFV1, pixel value = class index)"
        ),
    )
    seg.add_argument("--alpha", type=_alpha, default=0.5, help="overlay opacity of the mask, 0..1 (default: 0.5)")
    seg.add_argument(
        "--resize",
        choices=("weights", "none"),
        default="weights",
        help=(
            "weights: the model's own rule (torchvision: short side 520; default); "
            "none: full resolution (small objects survive; slower)"
        ),
    )
    seg.add_argument(
        "--scale",
        type=_float,
        help="run the network on the image resized by this factor (e.g. 0.5, 2); overrides --resize",
    )
    seg.add_argument(
        "--tile",
        type=_int,
        metavar="SIZE",
        help=(
            "sliding window: run SIZE x SIZE windows of the full-resolution (or --scale'd) image and blend them; "
            "for huge images (e.g. --tile 512)"
        ),
    )
    seg.add_argument(
        "--overlap",
        type=_float,
        default=0.25,
        help="fraction of a --tile window shared with its neighbours, 0..1 (default: 0.25)",
    )
    seg.add_argument(
        "--low-confidence",
        type=_alpha,
        default=0.5,
        metavar="P",
        help=(
            "with --outputs confidence: outline regions whose probability is below P on the overlay "
            "(default: 0.5; 0: no outline)"
        ),
    )
    seg.add_argument(
        "--max-pixels",
        type=_positive_int,
        default=DEFAULT_MAX_PIXELS,
        help="refuse larger images (default: %(default)s)",
    )
    seg.add_argument(
        "--url-timeout",
        type=_positive_float,
        default=30.0,
        help="seconds allowed for each http(s) input's download (default: %(default)s)",
    )
    seg.add_argument(
        "--url-max-mb",
        type=_positive_float,
        default=50.0,
        help="largest http(s) input downloaded, in MB (default: %(default)s)",
    )
    seg.add_argument(
        "--skip-existing", action="store_true", help="skip images whose requested outputs all exist (resume)"
    )
    seg.add_argument("--compile", action="store_true", help="torch.compile the model (slow first batch)")
    seg.add_argument("--refine", type=_refine, help=_REFINE_HELP)
    seg.add_argument(
        "--workers", type=int, default=2, help="threads reading images ahead of the model (default: 2; 0: none)"
    )
    _add_engine_flags(seg)

    ev = sub.add_parser(
        "eval", parents=[common], help="score a model on a labelled dataset; write metrics.json, report.md, report.html"
    )
    ev.add_argument(
        "--dataset",
        required=True,
        choices=DATASET_KINDS,
        help=(
            "voc (VOCdevkit layout), coco-voc (COCO with the 20 VOC classes), "
            "ade20k (ADEChallengeData2016 layout, 150 classes), folder (images/ + masks/, or --images and --masks)"
        ),
    )
    ev.add_argument("--root", type=Path, help="dataset folder (folder datasets: or --images and --masks)")
    ev.add_argument("--images", type=Path, help="folder: the images folder (with --masks, instead of --root)")
    ev.add_argument(
        "--masks", type=Path, help="folder: the masks folder: PNGs named as the images, matched by relative path"
    )
    ev.add_argument(
        "--split", default="val", help="voc: ImageSets/Segmentation/SPLIT.txt; coco-voc: SPLIT2017 (default: val)"
    )
    ev.add_argument(
        "--classes",
        type=Path,
        help="folder: class names, one per line, each optionally with its colour (road 128,64,128 or road #804080); "
        "the report uses these names, and colours map RGB masks to classes",
    )
    ev.add_argument("--ignore-index", type=int, default=255, help="label value that is not scored (default: 255)")
    ev.add_argument(
        "--mask-values",
        type=_mask_values,
        metavar="V0,V1,...",
        help="folder: the stored mask value of each class, in order; other values are ignored "
        "(binary masks saved as 0/255: --mask-values 0,255)",
    )
    ev.add_argument("-o", "--out", type=Path, default=Path("seglens_eval"), help="report folder (default: %(default)s)")
    _add_model_flags(
        ev,
        model={"help": "a torchvision model or hf:<repo-or-folder> (default: %(default)s)"},
        precision={"help": "score an approximate path, e.g. --backend openvino --precision int8"},
    )
    ev.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        help=(
            "torchvision (default for voc, coco-voc: 520-pixel short side, as the published numbers) or native (full "
            "resolution; default for folder)"
        ),
    )
    ev.add_argument(
        "--resize",
        choices=("weights", "none"),
        default="weights",
        help=(
            "weights: the input-size rule of the weights (torchvision's: short side 520; a seglens train file's own; "
            "default); none: each image at full resolution (native protocol)"
        ),
    )
    ev.add_argument(
        "--scale", type=_float, help="run the network on each image resized by this factor (native protocol)"
    )
    ev.add_argument("--tta", type=_tta, help="test-time augmentation: 'flip' or 'scales=0.75,1.0,1.25[,flip]'")
    ev.add_argument("--refine", type=_refine, help=_REFINE_HELP)
    ev.add_argument(
        "--compare-tta", action="store_true", help="also score plain inference in the same run and report the gain"
    )
    ev.add_argument("--limit", type=_positive_int, help="only the first N images (a quick look)")
    ev.add_argument("--strict", action="store_true", help="stop before scoring if the labels have problems")
    ev.add_argument("--worst", type=int, default=8, help="how many worst images to render (default: 8)")
    ev.add_argument(
        "--boundary-width",
        type=_positive_int,
        default=5,
        help="band around ground-truth boundaries, in pixels (default: 5)",
    )
    _add_engine_flags(ev)
    add_compare_parser(sub, common)

    be = sub.add_parser("bench", parents=[common], help="time configurations side by side against the seed's naive way")
    _add_model_flags(
        be, ("model", "weights", "device", "calibrate"),
        model={"type": _torchvision_name, "help": "default: %(default)s"},
        weights={"default": "random",
                 "help": "'random' (default: speed does not depend on the values), 'official' or a state dict"},
        device={"default": "cpu", "help": "cpu (default), cuda, mps"},
        calibrate={"help": "images for int8 calibration (default: the benchmark images)"},
    )  # fmt: skip
    be.add_argument("--images", type=Path, help="folder of images (default: the bundled examples)")
    be.add_argument(
        "-n", "--n", type=_positive_int, default=8, help="images per timed pass, cycling the folder (default: 8)"
    )
    be.add_argument(
        "--configs",
        default="all",
        help=(
            "comma-separated: seglens, eager-fp32, onnxruntime-fp32, openvino-fp32, openvino-int8, "
            "torch:batch=4,compile=1 ... or 'all' (default); naive always runs"
        ),
    )
    be.add_argument("--warmup", type=int, default=1, help="untimed passes before each timed pass (default: 1)")
    be.add_argument("--json", type=Path, help="also write the rows and machine facts as JSON")
    be.add_argument(
        "--work-dir", type=Path, help="where masks are written (default: a temporary folder, removed after)"
    )
    add_bench_train_flags(be)

    ex = sub.add_parser(
        "export", parents=[common], help="export a model once for --backend onnxruntime/openvino (cached and reused)"
    )
    ex.add_argument(
        "--format", required=True, choices=("onnx", "openvino"), help="onnx (ONNX Runtime) or openvino (OpenVINO IR)"
    )
    _add_model_flags(
        ex, ("model", "weights", "precision", "calibrate", "seed"),
        model={"type": _torchvision_name, "help": "default: %(default)s"},
        precision={"choices": ("fp32", "int8"), "help": "int8: also quantise with NNCF (openvino only)"},
    )  # fmt: skip
    ex.add_argument(
        "-o", "--out", type=Path, help="file to write (default: the cache that --backend reads, printed at the end)"
    )

    srv = sub.add_parser("serve", parents=[common], help="HTTP API and web page (needs: pip install 'seglens[web]')")
    _add_model_flags(
        srv, ("model", "weights", "device", "seed"),
        model={"action": "append", "default": None,
               "help": f"model to serve; repeat for several, the first is the default (default: {DEFAULT_MODEL})"},
        weights={"help": "'official', 'random' or a .pth/.safetensors file (a file fits one --model)"},
    )  # fmt: skip
    srv.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s; 0.0.0.0 for all)")
    srv.add_argument("--port", type=int, default=8000, help="default: %(default)s")
    srv.add_argument("--max-upload-mb", type=float, default=20, help="largest upload accepted (default: %(default)s)")
    srv.add_argument(
        "--max-pixels",
        type=_positive_int,
        default=DEFAULT_SERVE_MAX_PIXELS,
        help="largest image accepted (default: %(default)s)",
    )
    srv.add_argument("--workers", type=_positive_int, default=1, help="inference threads (default: 1)")
    srv.add_argument(
        "--queue-size",
        type=int,
        default=4,
        help="requests waiting for a worker; more get 503 + Retry-After (default: 4)",
    )
    srv.add_argument(
        "--max-queued-pixels",
        type=_positive_int,
        metavar="N",
        help="most decoded pixels in progress (running + queued); more get 503 + Retry-After (default: --max-pixels)",
    )
    srv.add_argument(
        "--header-timeout",
        type=_positive_float,
        default=10.0,
        metavar="S",
        help="seconds a request's headers may take; slower connections are closed (default: %(default)s)",
    )
    srv.add_argument(
        "--body-timeout",
        type=_positive_float,
        default=20.0,
        metavar="S",
        help="seconds an upload may take, plus 1 s per --min-upload-rate bytes received (default: %(default)s)",
    )
    srv.add_argument(
        "--min-upload-rate",
        type=_non_negative_float,
        default=500.0,
        metavar="BYTES_PER_S",
        help="upload speed that extends --body-timeout; slower uploads get 408 (default: %(default)s)",
    )
    srv.add_argument(
        "--allowed-hosts",
        action="append",
        default=[],
        metavar="NAMES",
        help=(
            "comma-separated Host names to answer besides the bound address and localhost, e.g. seg.example.com or "
            "'*.example.com'; '*' for any (repeatable)"
        ),
    )
    srv.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="another site allowed to call the API from a browser, e.g. https://app.example; '*' for any (repeatable)",
    )

    add_train_parser(sub, common)

    models = sub.add_parser("models", parents=[common], help="list the available models and their published scores")
    models.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def _refine(value: str) -> str:
    from ..refine import parse_refine

    try:
        parse_refine(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return value


def _mask_values(value: str) -> tuple[int, ...]:
    """--mask-values V0,V1,...: distinct integers 0..255 (eval and train)."""
    try:
        return parse_mask_values(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


# ---------------------------------------------------------------- SegmenterConfig from flags

# SegmenterConfig fields -> the flags that set them, as argparse names them in its errors.
_CONFIG_FLAGS = {
    "model": "-m/--model",
    "weights": "-w/--weights",
    "batch_size": "-b/--batch-size",
    "calibration": "--calibrate",
}
# "backend=openvino" in SegmenterConfig's messages -> "--backend openvino".
_CONFIG_TERMS = re.compile(r"(?<![\w-])(" + "|".join(f.name for f in dataclasses.fields(SegmenterConfig)) + r")=")


def _checked_backend(args: argparse.Namespace) -> str:
    """The backend SegmenterConfig checks the other flags with: "auto" is decided later, once the
    run knows its images (int8 then means OpenVINO)."""
    if args.backend != "auto":
        return args.backend
    return "openvino" if args.precision == "int8" else "torch"


def _segmenter_configs(args: argparse.Namespace) -> list[SegmenterConfig]:
    """The SegmenterConfig(s) this command's flags make ([] for commands that make none), checked
    here, before anything loads: SegmenterConfig is the one place that checks --tile, --scale,
    --overlap, --backend/--precision ...; its ConfigError becomes the flag's usage error (exit 2)."""
    try:
        if args.command == "segment":
            scale = args.scale if args.scale is not None else (1.0 if args.resize == "none" else None)
            return [SegmenterConfig(
                args.model, weights=args.weights, device=args.device, batch_size=args.batch_size,
                max_pixels=args.max_pixels, progress=not args.quiet, seed=args.seed, backend=_checked_backend(args),
                precision=args.precision, compile=args.compile, scale=scale, tile=args.tile, overlap=args.overlap,
                refine=args.refine or (),
            )]  # fmt: skip
        if args.command == "eval":
            scale = args.scale if args.scale is not None else (1.0 if args.resize == "none" else None)
            return [SegmenterConfig(args.model, weights=args.weights, device=args.device, progress=not args.quiet,
                                    seed=args.seed, backend=args.backend, precision=args.precision,
                                    scale=scale)]  # fmt: skip
        if args.command == "serve":
            return [SegmenterConfig(n, weights=args.weights, device=args.device, max_pixels=args.max_pixels,
                                    progress=not args.quiet, seed=args.seed)
                    for n in dict.fromkeys(args.model or [DEFAULT_MODEL])]  # fmt: skip
    except ConfigError as e:
        flag = _CONFIG_FLAGS.get(e.field, "--" + e.field.replace("_", "-"))
        prog = f"seglens {args.command}"
        message = _CONFIG_TERMS.sub(
            lambda m: _CONFIG_FLAGS.get(m[1], "--" + m[1].replace("_", "-")).split("/")[-1] + " ", str(e)
        )
        raise _UsageError(f"{prog}: argument {flag}: {message} (see {prog} --help)") from None
    return []
