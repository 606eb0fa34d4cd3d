"""``seglens compare``: its flags, and the command (entries in, one :func:`seglens.compare.compare`
call, its events on stderr, one line per configuration on stdout, the report in ``--out``)."""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

from ..datasets import DATASET_KINDS, parse_mask_values
from ..evaltypes import PROTOCOLS
from ._argtypes import _positive_int

EXIT_OK, EXIT_CANNOT_START = 0, 2

_ENTRY_HELP = (
    "a configuration, as key=value pairs separated by commas: name (label; default A, B, C ...), model, weights, "
    "backend, precision, tta (flip, scales:0.75:1:1.25 or scales:0.75:1:1.25+flip), refine (small, guided, "
    "guided+small, small=200, guided=8:0.001), scale, calibration (int8 images), device; e.g. "
    "'weights=tuned.pth,backend=openvino,precision=int8,name=int8'. Or a seglens eval output folder holding "
    "per_image_counts.npz (also spelled folder=PATH,name=N). One shell argument per entry (paths in an entry may "
    "not hold ',' or '='). The first entry is the baseline of every delta"
)


def _mask_values(text: str) -> tuple[int, ...]:
    try:
        return parse_mask_values(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _non_negative_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"{text} is not an integer >= 0")
    return n


def add_compare_parser(sub, common: argparse.ArgumentParser) -> None:
    """The ``compare`` subcommand on ``sub`` (the subparsers), with ``common``'s flags (--debug, -q)."""
    c = sub.add_parser(
        "compare",
        parents=[common],
        help="score configurations (or eval folders) on the same images: deltas with bootstrap intervals, speed",
        description=(
            "Run two or more configurations on the same images in one run and report mIoU, pixel accuracy and "
            "per-class IoU (each equal to seglens eval's), their differences from the first entry with a paired "
            "bootstrap interval over images, images/s and model latency measured side by side, and the images "
            "where they disagree most. Writes compare.md, compare.html and compare.json to --out."
        ),
    )
    c.add_argument("entries", nargs="+", metavar="ENTRY", help=_ENTRY_HELP)
    d = c.add_argument_group("dataset (as seglens eval's; not needed when every entry is an eval folder)")
    d.add_argument("--dataset", choices=DATASET_KINDS, help="voc, coco-voc, ade20k or folder")
    d.add_argument("--root", type=Path, help="dataset folder (folder datasets: or --images and --masks)")
    d.add_argument("--images", type=Path, help="folder: the images folder (with --masks, instead of --root)")
    d.add_argument("--masks", type=Path, help="folder: the masks folder, PNGs named as the images")
    d.add_argument("--split", default="val", help="voc, coco-voc, ade20k: the split (default: val)")
    d.add_argument("--classes", type=Path, help="folder: class names, one per line, optionally with colours")
    d.add_argument("--ignore-index", type=int, default=255, help="label value that is not scored (default: 255)")
    d.add_argument("--mask-values", type=_mask_values, metavar="V0,V1,...", help="folder: stored value of each class")
    d.add_argument("--limit", type=_positive_int, help="only the first N images")
    r = c.add_argument_group("run")
    r.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        help="as seglens eval's (default: the dataset's); configurations resolving to different ones all use native",
    )
    r.add_argument("--device", default="auto", help="for entries without device=: auto, cpu, cuda, cuda:N, mps")
    r.add_argument(
        "--bootstrap",
        type=_non_negative_int,
        default=1000,
        metavar="N",
        help="resamples of the paired bootstrap over images (default: 1000; 0: no intervals)",
    )
    r.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default: 0)")
    r.add_argument(
        "--disagree",
        type=_non_negative_int,
        default=6,
        metavar="K",
        help="images where they disagree most (default: 6)",
    )
    r.add_argument(
        "-o", "--out", type=Path, default=Path("seglens_compare"), help="report folder (default: %(default)s)"
    )


def _num(x: float | None, signed: bool = False) -> str:
    return "n/a" if x is None else (f"{x:+.2f}" if signed else f"{x:.2f}")


def _line(config, delta) -> str:
    """``B: mIoU 28.71 (+11.50 [+8.86, +15.17] *), pixel acc 80.39 (...), 6.32 img/s, model 149.6 ms``."""

    def with_delta(value, d) -> str:
        if d is None:
            return _num(value)
        ci = "" if d.ci is None else f" [{d.ci[0]:+.2f}, {d.ci[1]:+.2f}]"
        return f"{_num(value)} ({_num(d.value, signed=True)}{ci}{' *' if d.excludes_zero else ''})"

    text = f"{config.name}: mIoU {with_delta(config.miou, delta and delta.miou)}, "
    text += f"pixel acc {with_delta(config.pixel_acc, delta and delta.pixel_acc)}"
    if config.images_per_s is not None:
        text += f", {config.images_per_s:.2f} img/s, model {config.model_ms_median:.1f} ms"
    return text


def cmd_compare(args: argparse.Namespace, err) -> int:
    """Run ``seglens compare``; returns the exit code (2: bad entry, dataset or model)."""
    from tqdm import tqdm

    from ..backends import BackendError
    from ..compare import CompareConfig, compare, parse_entry
    from ..datasets import DatasetError
    from ..models import WeightsError

    try:
        entries = [parse_entry(e) for e in args.entries]
    except ValueError as e:
        err(f"error: seglens compare: {e} (see seglens compare --help)")
        return EXIT_CANNOT_START
    if len(entries) < 2:
        err("error: seglens compare: give two or more entries (configurations or eval folders)")
        return EXIT_CANNOT_START
    if args.dataset is None and any(isinstance(e, CompareConfig) for e in entries):
        err("error: seglens compare: --dataset (and --root) are needed to run configurations")
        return EXIT_CANNOT_START

    def on_event(event) -> None:
        err(f"{event.kind}: {event.message}")

    options = {k: getattr(args, k) for k in ("split", "images", "masks", "classes", "ignore_index", "mask_values")}
    try:
        result = compare(
            args.dataset,
            args.root,
            entries,
            out=args.out,
            progress=None if args.quiet else functools.partial(tqdm, file=sys.stderr, dynamic_ncols=True),
            on_event=on_event,
            bootstrap=args.bootstrap,
            seed=args.seed,
            disagree=args.disagree,
            protocol=args.protocol,
            device=args.device,
            limit=args.limit,
            **options,
        )
    except (DatasetError, WeightsError, BackendError, ValueError, TypeError) as e:
        err(f"error: {e}")
        return EXIT_CANNOT_START
    deltas = {d.config: d for d in result.deltas}
    for c in result.configs:
        print(_line(c, deltas.get(c.name)))
    for s in result.skipped:
        err(f"skipped: image {s.index}: {s.error}")
    err(f"report: {args.out / 'compare.html'} (compare.md, compare.json); *: the interval excludes 0")
    return EXIT_OK
