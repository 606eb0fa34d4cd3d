"""``seglens train``: its flags, and the command (flags in, one :func:`seglens.train.train` call,
its events on stderr, the result line on stdout)."""

from __future__ import annotations

import argparse
import functools
import os
import sys
from pathlib import Path

from .._train_config import CLASS_WEIGHTS, DEFAULT_TRAIN_MODEL, OPTIMIZERS, TRAIN_PRECISIONS, TrainConfig, TrainError
from ..datasets import DATASET_KINDS
from ..models import list_models
from ._argtypes import _positive_float, _positive_int, _UsageError

EXIT_OK, EXIT_FAILED, EXIT_CANNOT_START, EXIT_INTERRUPTED = 0, 1, 2, 130

# TrainConfig fields whose flag is not "--" + the field with dashes.
_FLAGS = {"dataset": "--dataset", "classes": "--classes", "eval_report": "--no-report", "hflip": "--no-flip"}


def _values(text: str) -> tuple[int, ...]:
    from ..datasets import parse_mask_values

    try:
        return parse_mask_values(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _range(text: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH like 0.5,2.0, got {text!r}") from None
    return low, high


def _size(text: str) -> int | None:
    if text in ("none", "native"):
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of pixels or 'none', got {text!r}") from None


def add_train_parser(sub, common: argparse.ArgumentParser) -> None:
    t = sub.add_parser(
        "train",
        parents=[common],
        help="train or fine-tune a network on your labelled images; writes a run folder with best.safetensors",
        description=(
            "Train a segmentation network on your own classes. Every other command takes the result as it is: "
            "seglens segment --weights RUN/best.safetensors (architecture, class names, colours and input size come "
            "from the file). Under torchrun --nproc-per-node N it trains with DistributedDataParallel."
        ),
    )
    d = t.add_argument_group("data")
    d.add_argument("--dataset", default="folder", choices=DATASET_KINDS, help="dataset kind (default: folder)")
    d.add_argument("--root", type=Path, help="dataset folder (folder kind: holding images/ and masks/)")
    d.add_argument("--images", type=Path, help="folder of training images (with --masks; matched by file name)")
    d.add_argument("--masks", type=Path, help="folder of training masks: PNGs of class indices")
    d.add_argument("--classes", type=Path, help="class names, one per line, optionally 'name R,G,B' for its colour")
    d.add_argument("--ignore-index", type=int, default=255, help="label value not trained on (default: 255)")
    d.add_argument("--mask-values", type=_values, metavar="V0,V1,...",
                   help="stored mask value of each class, e.g. 0,255 for binary masks (others: ignored)")  # fmt: skip
    d.add_argument("--split", default="train", help="voc/coco-voc/ade20k: training split (default: train)")
    d.add_argument("--val-root", type=Path, help="validation dataset folder (same kind)")
    d.add_argument("--val-images", type=Path, help="folder of validation images (with --val-masks)")
    d.add_argument("--val-masks", type=Path, help="folder of validation masks")
    d.add_argument("--val-split", default="val", help="voc/coco-voc/ade20k: validation split (default: val)")
    d.add_argument("--val-fraction", type=float, metavar="F",
                   help="hold out this fraction of the training images (seeded; folders default to 0.1)")  # fmt: skip
    d.add_argument("--limit", type=_positive_int, help="only the first N images of each split (a quick try)")
    d.add_argument("--strict", action="store_true", help="stop on any label problem, warnings included")
    m = t.add_argument_group("model")
    m.add_argument("-m", "--model", default=DEFAULT_TRAIN_MODEL, choices=list_models(), metavar="MODEL",
                   help=f"one of: {', '.join(list_models())} (default: %(default)s)")  # fmt: skip
    m.add_argument("-w", "--weights",
                   help="start: official (COCO-VOC weights, new classifier; the default unless --weights-backbone), "
                        "random, or a .pth/.safetensors file with the same classes")  # fmt: skip
    m.add_argument("--weights-backbone", default="none",
                   help="imagenet (the builder's ImageNet backbone), none (default) or a file")  # fmt: skip
    m.add_argument("--freeze-backbone", action="store_true", help="train the heads only")
    m.add_argument("--head-lr", type=_positive_float, default=1.0, metavar="X",
                   help="learning-rate multiplier of the classifier, e.g. 10 (default: 1)")  # fmt: skip
    r = t.add_argument_group("recipe")
    length = r.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=_positive_int, help="epochs to train (default: 30)")
    length.add_argument("--minutes", type=_positive_float, help="wall-clock budget; the schedule fits itself to it")
    r.add_argument("-b", "--batch-size", type=_positive_int, default=8, help="images per step and process (default: 8)")
    r.add_argument("--crop", type=int, default=480, help="side of the random training crop (default: 480)")
    r.add_argument("--base-size", type=_size, default=None, metavar="N|none",
                   help="input-size rule: none (default) trains and runs at the images' own size; N resizes the short "
                        "side to N (torchvision's reference: 520)")  # fmt: skip
    r.add_argument("--scale-range", type=_range, default=(0.5, 2.0), metavar="LOW,HIGH",
                   help="random resize factors (default: 0.5,2.0)")  # fmt: skip
    r.add_argument("--no-flip", dest="hflip", action="store_false", help="no random horizontal flip")
    r.add_argument("--jitter", type=float, default=0.0, help="photometric jitter strength, e.g. 0.3 (default: 0, off)")
    r.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd", help="sgd (default; momentum 0.9) or adamw")
    r.add_argument("--lr", type=_positive_float, help="learning rate (default: 0.02 for sgd, 0.001 for adamw)")
    r.add_argument("--weight-decay", type=float, default=1e-4, help="default: %(default)s")
    r.add_argument("--warmup", type=float, default=0.05, help="linear warm-up, fraction of the steps (max one epoch)")
    r.add_argument("--class-weights", choices=CLASS_WEIGHTS, default="none",
                   help="loss weights from the training masks: none (default), median (median-frequency "
                        "balancing) or inverse (ENet's)")  # fmt: skip
    r.add_argument("--aux-weight", type=float, default=0.5, help="auxiliary head's loss weight (default: 0.5)")
    r.add_argument("--seed", type=int, default=0, help="seed of the init, the split and the augmentation")
    o = t.add_argument_group("run")
    o.add_argument("-o", "--out", type=Path, default=Path("runs/train"),
                   help="run folder (default: %(default)s; NAME-2, NAME-3 ... if it exists)")  # fmt: skip
    o.add_argument("--resume", type=Path, metavar="RUN_DIR",
                   help="continue a run from its last.ckpt (--epochs/--minutes may extend it)")  # fmt: skip
    o.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    o.add_argument("--precision", choices=TRAIN_PRECISIONS, default="fp32",
                   help="fp32 (default), bf16 or fp16 (mixed precision, for GPUs)")  # fmt: skip
    o.add_argument("--workers", type=int, default=2, help="processes decoding and augmenting ahead (default: 2)")
    o.add_argument("--no-report", dest="eval_report", action="store_false",
                   help="skip the seglens eval report of the best weights at the end")  # fmt: skip


def _config(args: argparse.Namespace) -> tuple[TrainConfig | None, dict]:
    """The TrainConfig of the flags (or, with --resume, the overrides allowed); a TrainError
    becomes the flag's usage error (exit 2)."""
    if args.resume is not None:
        overrides = {k: getattr(args, k) for k in ("epochs", "minutes") if getattr(args, k) is not None}
        for k in ("device", "workers", "eval_report"):
            overrides[k] = getattr(args, k)
        return None, overrides
    names = ("dataset", "root", "images", "masks", "split", "classes", "ignore_index", "mask_values", "val_root",
             "val_images", "val_masks", "val_split", "val_fraction", "limit", "strict", "model", "weights",
             "weights_backbone", "freeze_backbone", "head_lr", "epochs", "minutes", "batch_size", "crop", "base_size",
             "scale_range", "hflip", "jitter", "lr", "optimizer", "weight_decay", "warmup", "class_weights",
             "aux_weight", "seed", "out", "device", "precision", "workers", "eval_report")  # fmt: skip
    values = {k: getattr(args, k) for k in names}
    values = {k: (str(v) if isinstance(v, Path) else v) for k, v in values.items()}
    try:
        return TrainConfig(**values), {}
    except TrainError as e:
        flag = _FLAGS.get(e.field or "", "--" + (e.field or "").replace("_", "-"))
        message = str(e)
        for field in sorted(names, key=len, reverse=True):
            message = message.replace(f"{field} ", f"--{field.replace('_', '-')} ").replace(
                f" {field}", f" --{field.replace('_', '-')}"
            )
        raise _UsageError(f"seglens train: argument {flag}: {message} (see seglens train --help)") from None


def cmd_train(args: argparse.Namespace, err) -> int:
    from tqdm import tqdm

    from ..datasets import DatasetError
    from ..models import WeightsError
    from ..train import TrainDiverged, TrainInterrupted, train

    try:
        config, overrides = _config(args)
    except _UsageError as e:
        err(f"error: {e}")
        return EXIT_CANNOT_START

    def on_event(event) -> None:
        if event.kind == "epoch":
            err(event.message)
        else:
            err(f"{event.kind}: {event.message}")

    progress = None if args.quiet else functools.partial(tqdm, file=sys.stderr, dynamic_ncols=True)
    try:
        result = train(config, resume=args.resume, progress=progress, on_event=on_event, **overrides)
    except TrainInterrupted as e:
        err(str(e))
        return EXIT_INTERRUPTED
    except TrainDiverged as e:
        err(f"error: {e}")
        return EXIT_FAILED
    except (TrainError, DatasetError, WeightsError) as e:
        err(f"error: {e}")
        return EXIT_CANNOT_START
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 reports for the job
        return EXIT_OK
    if result.best_weights is None:
        print(f"trained {result.epochs} epochs; no weights saved -> {result.run_dir}")
        return EXIT_FAILED
    scores = ""
    if result.best_miou is not None:
        scores = f": val mIoU {result.best_miou:.2f}, pixel acc {result.best_pixel_acc:.2f}"
    print(f"best epoch {result.best_epoch} of {result.epochs}{scores} -> {result.best_weights}")
    return EXIT_OK


# ---------------------------------------------------------------- seglens bench --train


def add_bench_train_flags(be: argparse.ArgumentParser) -> None:
    g = be.add_argument_group("training speed (--train)")
    g.add_argument("--train", action="store_true",
                   help="time training instead of inference: torchvision's reference loop vs seglens train, "
                        "same model, batch, crop and steps (--images = training images)")  # fmt: skip
    g.add_argument("--masks", type=Path, help="--train: the training masks (matched to --images by file name)")
    g.add_argument("--classes", type=Path, help="--train: class names, one per line")
    g.add_argument("--ignore-index", type=int, default=255, help="--train: the void label (default: 255)")
    g.add_argument("--steps", type=_positive_int, default=20, help="--train: optimiser steps per loop (default: 20)")
    g.add_argument("--crop", type=_positive_int, default=480, help="--train: crop side (default: 480)")
    g.add_argument("-b", "--batch-size", type=_positive_int, default=8, help="--train: batch (default: 8)")
    g.add_argument("--train-workers", type=int, default=2, help="--train: DataLoader workers (default: 2)")


def cmd_bench_train(args: argparse.Namespace, err) -> int:
    import tempfile

    from .._bench_train import train_speed
    from ..datasets import DatasetError

    if args.images is None or args.masks is None or args.classes is None:
        err("error: seglens bench --train needs --images DIR --masks DIR --classes FILE")
        return EXIT_CANNOT_START
    model = args.model
    with tempfile.TemporaryDirectory(prefix="seglens-bench-train-") as tmp:
        try:
            rows = train_speed(str(args.images), str(args.masks), classes=str(args.classes),
                               ignore_index=args.ignore_index, model=model, batch_size=args.batch_size,
                               crop=args.crop, steps=args.steps, workers=args.train_workers,
                               out=Path(tmp) / "run")  # fmt: skip
        except (TrainError, DatasetError, ValueError) as e:
            err(f"error: {e}")
            return EXIT_CANNOT_START
    print(f"training speed: {model}, batch {args.batch_size}, crop {args.crop}, {args.steps} steps each")
    print(f"{'loop':<24}{'steps':>6}{'img/s':>9}{'data wait':>11}{'vs reference':>14}")
    for r in rows:
        print(f"{r['loop']:<24}{r['steps']:>6}{r['images_per_s']:>9.2f}{r['data_wait_pct']:>10.1f}%"
              f"{r['vs_reference']:>13.2f}x")  # fmt: skip
    if args.json:
        from ..io import write_json

        write_json(args.json, rows)
    return EXIT_OK
