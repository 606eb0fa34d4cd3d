"""TrainConfig: every setting of ``seglens train``, checked once, in one frozen value; and the
events, errors and result a training run reports.

A leaf next to torch (no torch import), so the CLI checks flags before anything heavy loads, and
``config.json`` in a run folder round-trips through :meth:`TrainConfig.to_dict` / ``from_dict``.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CLASS_WEIGHTS",
    "OPTIMIZERS",
    "TRAIN_PRECISIONS",
    "TrainConfig",
    "TrainDiverged",
    "TrainError",
    "TrainEvent",
    "TrainInterrupted",
    "TrainResult",
]

CLASS_WEIGHTS = ("none", "inverse", "median")
OPTIMIZERS = ("sgd", "adamw")
TRAIN_PRECISIONS = ("fp32", "bf16", "fp16")
DEFAULT_TRAIN_MODEL = "lraspp_mobilenet_v3_large"
_DEFAULT_LR = {"sgd": 0.02, "adamw": 0.001}


class TrainError(Exception):
    """A training run that cannot start or go on; the message is one line (the file and the fix).

    ``field`` names the setting at fault when there is one (``"crop"``), so a front end can name
    its flag."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class TrainDiverged(TrainError):
    """The loss became NaN or infinite; nothing of the failing epoch was saved (``last.ckpt`` holds
    the last good epoch)."""


class TrainInterrupted(Exception):
    """Ctrl-C or SIGTERM: the run stopped after the step in progress and saved ``checkpoint``."""

    def __init__(self, message: str, checkpoint: str | None) -> None:
        super().__init__(message)
        self.checkpoint = checkpoint


@dataclass(frozen=True)
class TrainEvent:
    """What a training run tells as it goes (``train(on_event=)``); the library prints nothing.

    kind: ``"note"`` (the run folder, the data found, the plan), ``"warning"`` (skipped files,
    label problems that do not stop training), ``"epoch"`` (``row``: the epoch's metrics.csv row).
    """

    kind: str
    message: str = ""
    row: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainResult:
    """The outcome: where the run folder is, the best epoch and its validation scores (percent)."""

    run_dir: str
    best_weights: str | None
    best_epoch: int | None
    best_miou: float | None
    best_pixel_acc: float | None
    epochs: int
    history: tuple[dict[str, Any], ...]
    report: str | None = None


def _int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class TrainConfig:
    """The settings of :func:`seglens.train.train`; see ``seglens train --help`` for each.

    Data: ``dataset`` kind ("folder", "voc", "coco-voc", "ade20k") with ``root`` (or, for folders,
    ``images`` + ``masks``), ``classes`` (a file of names, optional colours), ``ignore_index``,
    ``mask_values``; validation from ``val_root`` / ``val_images`` + ``val_masks``, the kind's
    ``val_split``, or ``val_fraction`` of the training set (seeded).
    Model: ``model``, ``weights`` (None: "official" unless ``weights_backbone`` is given, then
    the rest is random), ``weights_backbone`` ("imagenet", "none" or a file), ``freeze_backbone``,
    ``head_lr`` (learning-rate multiplier of the classifier; the auxiliary head always gets 10x,
    as torchvision's reference does).
    Recipe: ``epochs`` or ``minutes``, ``batch_size``, ``crop``, ``base_size`` (None: augment and
    run at the images' own size), ``scale_range``, ``hflip``, ``jitter``, ``lr`` (None: 0.02 for
    SGD, 0.001 for AdamW), ``optimizer``, ``momentum``, ``weight_decay``, ``warmup`` (fraction of
    the planned steps, at most one epoch), ``class_weights``, ``aux_weight``, ``seed``.
    Run: ``out``, ``device``, ``precision``, ``workers``, ``eval_report``.
    """

    dataset: str = "folder"
    root: str | None = None
    images: str | None = None
    masks: str | None = None
    split: str = "train"
    classes: str | None = None
    ignore_index: int = 255
    mask_values: tuple[int, ...] | None = None
    val_root: str | None = None
    val_images: str | None = None
    val_masks: str | None = None
    val_split: str = "val"
    val_fraction: float | None = None
    limit: int | None = None
    strict: bool = False
    model: str = DEFAULT_TRAIN_MODEL
    weights: str | None = None
    weights_backbone: str = "none"
    freeze_backbone: bool = False
    head_lr: float = 1.0
    epochs: int | None = None
    minutes: float | None = None
    batch_size: int = 8
    crop: int = 480
    base_size: int | None = None
    scale_range: tuple[float, float] = (0.5, 2.0)
    hflip: bool = True
    jitter: float = 0.0
    lr: float | None = None
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup: float = 0.05
    class_weights: str = "none"
    aux_weight: float = 0.5
    seed: int = 0
    out: str = "runs/train"
    device: str = "auto"
    precision: str = "fp32"
    workers: int = 2
    eval_report: bool = True

    def __post_init__(self) -> None:
        def bad(name: str, message: str) -> TrainError:
            return TrainError(message, name)

        for name in ("root", "images", "masks", "classes", "val_root", "val_images", "val_masks", "weights",
                     "weights_backbone", "out"):  # fmt: skip
            value = getattr(self, name)
            if isinstance(value, os.PathLike):
                object.__setattr__(self, name, os.fspath(value))

        if self.dataset not in ("folder", "voc", "coco-voc", "ade20k"):
            raise bad("dataset", f"dataset {self.dataset!r}: choose folder, voc, coco-voc or ade20k")
        explicit = self.images is not None or self.masks is not None
        if self.dataset == "folder":
            if explicit and self.root is not None:
                raise bad("root", "give root or images + masks, not both")
            if explicit and (self.images is None or self.masks is None):
                raise bad("images", "images and masks go together (a folder of images, a folder of masks)")
            if not explicit and self.root is None:
                raise bad("root", "no training data: give root (holding images/ and masks/) or images + masks")
        else:
            if explicit:
                raise bad("images", f"images + masks are for folder datasets; {self.dataset} needs root")
            if self.root is None:
                raise bad("root", f"no training data: give the {self.dataset} dataset's root")
        val_explicit = self.val_images is not None or self.val_masks is not None
        if val_explicit and (self.val_images is None or self.val_masks is None):
            raise bad("val_images", "val_images and val_masks go together")
        given = [n for n, v in (("val_root", self.val_root), ("val_images", self.val_images),
                                ("val_fraction", self.val_fraction)) if v is not None]  # fmt: skip
        if len(given) > 1:
            raise bad(given[1], f"choose one validation source: {' or '.join(given)}")
        if self.val_fraction is not None and not (_real(self.val_fraction) and 0 < self.val_fraction < 1):
            raise bad("val_fraction", f"val_fraction must be in (0, 1), got {self.val_fraction!r}")
        if not (_int(self.ignore_index) and 0 <= self.ignore_index <= 255):
            raise bad("ignore_index", f"ignore_index must be an integer 0..255, got {self.ignore_index!r}")
        if self.mask_values is not None:
            object.__setattr__(self, "mask_values", tuple(self.mask_values))
        if self.epochs is not None and self.minutes is not None:
            raise bad("minutes", "give epochs or minutes, not both")
        if self.epochs is None and self.minutes is None:
            object.__setattr__(self, "epochs", 30)  # torchvision's reference default
        if self.epochs is not None and not (_int(self.epochs) and self.epochs >= 1):
            raise bad("epochs", f"epochs must be a positive integer, got {self.epochs!r}")
        if self.minutes is not None and not (_real(self.minutes) and self.minutes > 0):
            raise bad("minutes", f"minutes must be a positive number, got {self.minutes!r}")
        for name, low in (("batch_size", 1), ("crop", 32), ("workers", 0)):
            value = getattr(self, name)
            if not (_int(value) and value >= low):
                raise bad(name, f"{name} must be an integer >= {low}, got {value!r}")
        if self.limit is not None and not (_int(self.limit) and self.limit >= 1):
            raise bad("limit", f"limit must be a positive integer, got {self.limit!r}")
        if self.base_size is not None and not (_int(self.base_size) and self.base_size >= 32):
            raise bad("base_size", f"base_size must be None or an integer >= 32, got {self.base_size!r}")
        object.__setattr__(self, "scale_range", tuple(self.scale_range))
        low, high = self.scale_range
        if not (_real(low) and _real(high) and 0 < low <= high <= 8):
            raise bad(
                "scale_range", f"scale_range must be (low, high) with 0 < low <= high <= 8, got {self.scale_range}"
            )
        if self.optimizer not in OPTIMIZERS:
            raise bad("optimizer", f"optimizer {self.optimizer!r}: choose {' or '.join(OPTIMIZERS)}")
        if self.lr is None:
            object.__setattr__(self, "lr", _DEFAULT_LR[self.optimizer])
        for name in ("lr", "head_lr"):
            if not (_real(getattr(self, name)) and getattr(self, name) > 0):
                raise bad(name, f"{name} must be a positive number, got {getattr(self, name)!r}")
        for name in ("momentum", "weight_decay", "jitter", "aux_weight"):
            if not (_real(getattr(self, name)) and getattr(self, name) >= 0):
                raise bad(name, f"{name} must be a number >= 0, got {getattr(self, name)!r}")
        if not (_real(self.warmup) and 0 <= self.warmup < 1):
            raise bad("warmup", f"warmup must be a fraction in [0, 1), got {self.warmup!r}")
        if self.class_weights not in CLASS_WEIGHTS:
            raise bad("class_weights", f"class_weights {self.class_weights!r}: choose {', '.join(CLASS_WEIGHTS)}")
        if self.precision not in TRAIN_PRECISIONS:
            raise bad("precision", f"precision {self.precision!r}: choose {', '.join(TRAIN_PRECISIONS)}")
        if not _int(self.seed):
            raise bad("seed", f"seed must be an integer, got {self.seed!r}")
        if self.weights is not None and self.weights_backbone not in ("none", None):
            raise bad("weights_backbone", "weights_backbone starts the backbone only; it goes with weights=None")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["scale_range"] = list(self.scale_range)
        d["mask_values"] = None if self.mask_values is None else list(self.mask_values)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)
