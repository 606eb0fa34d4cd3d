"""The parts of a :mod:`seglens.train` run around the loop: processes, the run folder, the data
check, the LR plan, signals, precision and the loss. The bookkeeping (checkpoints, metrics.csv,
curves.png, best.safetensors, the final report) is :mod:`seglens._train_book`'s; its names are
re-exported here."""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ._train_book import CHECKPOINT_FORMAT, MEAN, STD, Book, Meter, final_report
from ._train_config import TrainConfig, TrainError, TrainEvent
from ._train_data import class_weights, split_indices
from ._version import __version__
from .datasets import DatasetError, SegmentationDataset, open_dataset, survey_labels
from .io import atomic_open

__all__ = ["MEAN", "STD", "Book", "DistContext", "Meter", "Plan", "Stopper", "final_report", "prepare_data"]

_FATAL = frozenset({"out_of_range", "size_mismatch", "binary_mask", "rgb_mask"})
_RESUME_OVERRIDES = ("epochs", "minutes", "device", "workers", "eval_report")
_WARMUP_START = 0.01  # torchvision's --lr-warmup-decay: warm-up starts at 1% of the LR
_POLY_POWER = 0.9  # torchvision's PolynomialLR power in references/segmentation


# --- processes ---------------------------------------------------------------------------------


@dataclass
class DistContext:
    """This process's place in a ``torchrun`` job (rank 0 of 1 without one)."""

    rank: int
    world: int
    device: torch.device
    owned: bool = False

    @classmethod
    def start(cls, device_spec: str) -> DistContext:
        from .inference import resolve_device

        try:
            device = resolve_device(device_spec)
        except ValueError as e:
            raise TrainError(str(e), "device") from None
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls(0, 1, device)
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        owned = not dist.is_initialized()
        if owned:
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return cls(dist.get_rank(), dist.get_world_size(), device, owned)

    def share(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` on rank 0, its value (or its error) on every rank."""
        if self.world == 1:
            return fn()
        box: list[Any] = [None]
        error: Exception | None = None
        if self.rank == 0:
            try:
                box = [("ok", fn())]
            except (TrainError, DatasetError, OSError, ValueError) as e:
                error, box = e, [("error", str(e))]
        dist.broadcast_object_list(box, src=0)
        if error is not None:
            raise error
        kind, value = box[0]
        if kind == "error":
            raise TrainError(value)
        return value

    def wrap(self, model: nn.Module) -> nn.Module:
        if self.world == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def agree(self, *flags: bool) -> tuple[bool, ...]:
        """Each flag true on any rank -> true on every rank (so all stop at the same step)."""
        if self.world == 1:
            return flags
        t = torch.tensor([float(f) for f in flags], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return tuple(bool(v) for v in t.tolist())

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def close(self) -> None:
        if self.owned and dist.is_initialized():
            dist.destroy_process_group()


# --- the run folder ----------------------------------------------------------------------------


def new_run_dir(config: TrainConfig) -> Path:
    """``out``, or ``out-2``, ``out-3`` ... if it exists: a run folder is never overwritten."""
    base = Path(config.out)
    for i in range(1, 10_000):
        path = base if i == 1 else base.with_name(f"{base.name}-{i}")
        try:
            path.mkdir(parents=True, exist_ok=False)
            return path
        except FileExistsError:
            continue
        except OSError as e:
            raise TrainError(
                f"{path}: cannot create the run folder ({e.strerror}); choose another --out", "out"
            ) from None
    raise TrainError(f"{base}: 10000 run folders of that name exist; choose another --out", "out")


def write_config(run_dir: Path, config: TrainConfig) -> None:
    try:
        with atomic_open(run_dir / "config.json", "w") as f:
            json.dump({"seglens_version": __version__, **config.to_dict()}, f, indent=2)
    except OSError as e:
        raise TrainError(
            f"{run_dir}: cannot write to the run folder ({e.strerror}); choose another --out", "out"
        ) from None


def open_resume(run_dir: Path, config: TrainConfig | None, options: dict[str, Any]) -> tuple[TrainConfig, dict]:
    """The stored config (with the allowed overrides) and last.ckpt of a run folder."""
    if config is not None:
        raise TrainError("resume= continues a run with its own config.json; give no config", "resume")
    extra = sorted(set(options) - set(_RESUME_OVERRIDES))
    if extra:
        allowed = ", ".join(_RESUME_OVERRIDES)
        raise TrainError(f"--resume uses the run's own settings; only {allowed} may change (got {', '.join(extra)})",
                         "resume")  # fmt: skip
    try:
        stored = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TrainError(f"{run_dir}: no config.json (not a seglens train run folder)", "resume") from None
    except (OSError, ValueError) as e:
        raise TrainError(f"{run_dir / 'config.json'}: unreadable ({e})", "resume") from None
    changes = dict(options)
    if "epochs" in changes:
        changes.setdefault("minutes", None)
    if "minutes" in changes:
        changes.setdefault("epochs", None)
    config = TrainConfig.from_dict({**stored, **changes})
    for stale in run_dir.glob(".*.tmp-*"):  # a write that kill -9 cut short (atomic_open's temp files)
        with contextlib.suppress(OSError):
            stale.unlink()
    path = run_dir / "last.ckpt"
    if not path.is_file():
        raise TrainError(f"{run_dir}: no last.ckpt yet (the run stopped before its first checkpoint); start it again",
                         "resume")  # fmt: skip
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a damaged file
        raise TrainError(f"{path}: cannot be read ({type(e).__name__}: {e})", "resume") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise TrainError(f"{path}: not a seglens train checkpoint", "resume")
    return config, state


# --- data --------------------------------------------------------------------------------------


@dataclass
class Data:
    train: SegmentationDataset
    train_indices: list[int]
    val: SegmentationDataset | None
    val_indices: list[int]
    categories: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    ignore_index: int
    weights: list[float] | None
    source: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        val = f"{len(self.val_indices)} validation" if self.val_indices else "no validation"
        text = (f"{len(self.train_indices)} training images, {val}; {len(self.categories)} classes "
                f"({', '.join(self.categories[:6])}{', ...' if len(self.categories) > 6 else ''}); "
                f"ignore index {self.ignore_index}")  # fmt: skip
        if self.weights is not None:
            text += "; class weights " + ", ".join(f"{w:.2f}" for w in self.weights)
        return text


def _open(config: TrainConfig, *, val: bool) -> SegmentationDataset:
    kwargs: dict[str, Any] = {"classes_file": config.classes, "ignore_index": config.ignore_index,
                              "limit": config.limit}  # fmt: skip
    if config.mask_values is not None:
        kwargs["mask_values"] = config.mask_values
    if config.dataset != "folder":
        kwargs = {"limit": config.limit}
    if val:
        if config.val_images is not None:
            return open_dataset("folder", None, images=config.val_images, masks=config.val_masks, **kwargs)
        root = config.val_root if config.val_root is not None else config.root
        return open_dataset(config.dataset, root, split=config.val_split, **kwargs)
    if config.images is not None:
        return open_dataset("folder", None, images=config.images, masks=config.masks, **kwargs)
    return open_dataset(config.dataset, config.root, split=config.split, **kwargs)


def _check(survey, dataset: SegmentationDataset, which: str, config: TrainConfig, emit) -> set[str]:
    """Report the label problems; raise for the ones training cannot survive; return the names
    of unreadable pairs (skipped)."""
    problems = [p for p in survey.problems if not (which == "validation" and p.kind == "class_absent")]
    for p in problems:
        emit(TrainEvent("warning", f"{which} labels: {p.path}: {p.kind}: {p.detail}"))
    fatal = [p for p in problems if p.kind in _FATAL or config.strict]
    if fatal:
        p = fatal[0]
        more = f" (and {len(fatal) - 1} more, listed above)" if len(fatal) > 1 else ""
        hint = "" if p.kind in _FATAL else "; fix it or train without --strict"
        raise TrainError(f"{p.path}: {p.detail}{more}{hint}")
    return {p.name for p in problems if p.kind == "unreadable"}


def prepare_data(config: TrainConfig, emit, bars) -> Data:
    """Open both splits, survey and check every label file, decide the classes and class weights."""
    train = _open(config, val=False)
    if len(train) == 0:
        where = config.masks or config.root
        raise TrainError(f"{where}: no training images with masks (images need a mask of the same name)", "root")
    for name, path in train.unmatched[:20]:
        emit(TrainEvent("warning", f"{path}: no mask, not used"))
    if len(train.unmatched) > 20:
        emit(TrainEvent("warning", f"... and {len(train.unmatched) - 20} more images without masks"))
    categories = train.categories
    n = len(categories) if categories else (len(config.mask_values) if config.mask_values else None)
    if n is None:  # no names: the classes are the label values found
        found = survey_labels(train, 255)
        shape = [p for p in found.problems if p.kind in ("binary_mask", "rgb_mask")]
        if shape:  # say what the values mean before guessing classes from them
            raise TrainError(f"{shape[0].path}: {shape[0].detail}")
        present = [v for v, c in enumerate(found.class_pixels) if c and v != train.ignore_index]
        if not present:
            raise TrainError(f"{config.masks or config.root}: the masks hold no class values besides the ignore index")
        n = max(present) + 1
        emit(TrainEvent("note", f"no --classes file: {n} classes from the label values found (0..{n - 1})"))
    if n < 2:
        raise TrainError(f"{n} class: segmentation needs at least 2 (e.g. background and object)", "classes")
    categories = tuple(categories) if categories else tuple(f"class {i}" for i in range(n))
    survey = _survey(train, n, bars, "check training labels")
    unreadable = _check(survey, train, "training", config, emit)
    names = train.names()
    train_indices = [i for i, name in enumerate(names) if name not in unreadable]
    if len(train_indices) < max(2, len(names) // 2):
        raise TrainError(
            f"only {len(train_indices)} of {len(names)} training pairs are readable (listed above); fix them"
        )
    val, val_indices = None, []
    if config.val_fraction is not None or (config.dataset == "folder" and config.val_root is None
                                           and config.val_images is None):  # fmt: skip
        fraction = config.val_fraction if config.val_fraction is not None else 0.1
        if config.val_fraction is None:
            emit(
                TrainEvent("note", "no validation data given: holding out 10% of the training images (--val-fraction)")
            )
        train_indices, val_pick = split_indices(len(train_indices), fraction, config.seed)
        kept = [i for i, name in enumerate(names) if name not in unreadable]
        train_indices, val_indices = [kept[i] for i in train_indices], [kept[i] for i in val_pick]
        val = train
    else:
        val = _open(config, val=True)
        if val.categories is not None and len(val.categories) != n:
            raise TrainError(f"the validation data has {len(val.categories)} classes, the training data {n}")
        val_unreadable = _check(_survey(val, n, bars, "check validation labels"), val, "validation", config, emit)
        val_indices = [i for i, name in enumerate(val.names()) if name not in val_unreadable]
        if not val_indices:
            raise TrainError("the validation split has no readable images with masks")
    pixels_per_image = survey.total_pixels / max(1, len(names))
    weights = class_weights(config.class_weights, survey.class_pixels, survey.images_with_class, pixels_per_image)
    palette = getattr(train, "palette", None)
    if palette is None:
        from .palettes import palette_for

        palette = palette_for(categories)
    source = {"dataset": config.dataset, "root": config.root, "images": config.images, "masks": config.masks,
              "train_images": len(train_indices), "val_images": len(val_indices)}  # fmt: skip
    return Data(train, train_indices, val, val_indices, categories,
                tuple(tuple(int(v) for v in palette[i]) for i in range(n)), train.ignore_index, weights,
                {k: v for k, v in source.items() if v is not None})  # fmt: skip


def _survey(dataset: SegmentationDataset, n: int, bars, desc: str):
    bar = bars(total=len(dataset), unit="mask", desc=desc, leave=False) if bars is not None else None
    try:
        return survey_labels(dataset, n, progress=bar.update if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()


def preprocess_rule(base_size: int | None):
    """The network input of an image, as the trained weights' metadata will make it run."""
    from torchvision.transforms._presets import SemanticSegmentation

    return SemanticSegmentation(resize_size=base_size, mean=MEAN, std=STD)


def subset(dataset: SegmentationDataset, indices: list[int]) -> SegmentationDataset:
    """The dataset restricted to ``indices`` (for the report on a held-out fraction)."""
    if len(indices) == len(dataset) and indices == list(range(len(dataset))):
        return dataset
    part = copy.copy(dataset)
    part._items = [dataset._items[i] for i in indices]
    part.unmatched = ()
    return part


# --- the schedule ------------------------------------------------------------------------------


class Plan:
    """The LR schedule and when to stop: linear warm-up then polynomial decay to 0 at the planned
    last step; with ``minutes``, the planned epochs are re-estimated from measured times."""

    def __init__(self, *, steps_per_epoch: int, config: TrainConfig, n_val: int) -> None:
        self.per_epoch, self.config, self.n_val = steps_per_epoch, config, n_val
        self.step = 0
        self.epochs = config.epochs  # planned epochs; None until measured (minutes)
        self.warmup = None
        self._times: list[float] = []
        self._set_warmup()

    def _set_warmup(self) -> None:
        if self.epochs is not None and self.warmup is None:
            self.warmup = min(self.per_epoch, round(self.config.warmup * self.epochs * self.per_epoch))

    def factor(self, step: int) -> float:
        warmup = self.warmup if self.warmup is not None else self.per_epoch
        total = (self.epochs or 10_000) * self.per_epoch
        if step < warmup:
            return _WARMUP_START + (1 - _WARMUP_START) * step / warmup
        return max(0.0, 1 - (step - warmup) / max(1, total - warmup)) ** _POLY_POWER

    def lr(self, base: float) -> float:
        return base * self.factor(self.step)

    def set_lr(self, optimizer: torch.optim.Optimizer) -> None:
        f = self.factor(self.step)
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * f

    def advance(self, seconds: float, elapsed_before: float) -> None:
        """One step done in ``seconds``; a ``minutes`` run plans its epochs after a few steps."""
        self.step += 1
        if self.config.minutes is None or self.epochs is not None:
            return
        self._times.append(seconds)
        if len(self._times) >= min(6, self.per_epoch):
            times = sorted(self._times[1:] or self._times)  # the first step pays for warm-up
            step_s = times[len(times) // 2]
            batch = self.config.batch_size
            epoch_s = step_s * self.per_epoch + 0.5 * step_s / batch * self.n_val
            left = self.config.minutes * 60 - elapsed_before
            self.epochs = max(1, math.floor(left / epoch_s))
            self._set_warmup()

    def replan(self, epochs_done: int, epoch_seconds: float, elapsed: float) -> None:
        if self.config.minutes is None:
            self.epochs = self.config.epochs
            return
        left = self.config.minutes * 60 - elapsed
        self.epochs = epochs_done + max(0, math.floor(left / max(epoch_seconds, 1e-6)))

    def done(self, epochs_done: int) -> bool:
        return self.epochs is not None and epochs_done >= self.epochs

    def epochs_text(self) -> str:
        return "?" if self.epochs is None else str(self.epochs)

    def state(self) -> dict[str, Any]:
        return {"step": self.step, "epochs": self.epochs, "warmup": self.warmup}

    def load(self, state: dict[str, Any]) -> None:
        self.step, self.warmup = state["step"], state["warmup"]
        if self.config.minutes is not None:
            self.epochs = state["epochs"]


# --- signals, precision, loss --------------------------------------------------------------------


class Stopper:
    """Ctrl-C / SIGTERM ask the loop to stop after the current step (a second Ctrl-C stops now)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self) -> Stopper:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def requested(self, ctx: DistContext) -> bool:
        return ctx.agree(self.signum is not None)[0]


def autocast(precision: str, device: torch.device):
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def seg_loss(out: dict[str, torch.Tensor], target: torch.Tensor, criterion: nn.Module, aux_weight: float,
             ignore_index: int) -> torch.Tensor:  # fmt: skip
    """Cross-entropy of the main head plus ``aux_weight`` times the auxiliary head's (torchvision's
    ``criterion``); a batch whose crops are all ignore pixels gives a zero loss (not NaN)."""
    if not bool((target != ignore_index).any()):
        return out["out"].sum() * 0.0 + (out["aux"].sum() * 0.0 if "aux" in out else 0.0)
    loss = criterion(out["out"].float(), target)
    if aux_weight and "aux" in out:
        loss = loss + aux_weight * criterion(out["aux"].float(), target)
    return loss


@contextlib.contextmanager
def without_aux(model: nn.Module):
    """Validation runs the main head only (the auxiliary head is a training aid)."""
    aux = getattr(model, "aux_classifier", None)
    if aux is not None:
        model.aux_classifier = None
    try:
        yield
    finally:
        if aux is not None:
            model.aux_classifier = aux
