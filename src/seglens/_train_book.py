"""Bookkeeping of a :mod:`seglens.train` run: each epoch's numbers (:class:`Meter`), the run
folder's files (:class:`Book`: last.ckpt, best.safetensors, metrics.csv, curves.png) and the
final ``seglens eval`` report of the best weights."""

from __future__ import annotations

import io
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._train_config import TrainConfig, TrainEvent, TrainResult
from ._train_data import Skipped
from ._train_model import save_trained
from ._trained import TrainedMetadata
from ._version import __version__
from .io import atomic_open, write_csv

CHECKPOINT_FORMAT = "seglens.train-checkpoint/1"
MEAN = (0.485, 0.456, 0.406)  # ImageNet statistics, as every torchvision weight uses
STD = (0.229, 0.224, 0.225)
_CSV_FIELDS = ("epoch", "steps", "images", "train_loss", "lr", "images_per_s", "data_wait_pct", "val_miou",
               "val_pixel_acc", "best_miou", "train_s", "epoch_s", "elapsed_s")  # fmt: skip


class Meter:
    """Loss, images and waiting time of one epoch (continued from a saved partial epoch)."""

    def __init__(self, partial: dict[str, float] | None = None) -> None:
        p = partial or {}
        self.loss_sum, self.batches = p.get("loss_sum", 0.0), int(p.get("batches", 0))
        self.images, self.wait = int(p.get("images", 0)), p.get("wait", 0.0)
        self.before = p.get("seconds", 0.0)
        self.t0 = time.perf_counter()

    def waited(self, seconds: float) -> None:
        self.wait += seconds

    def add(self, loss: float, images: int) -> None:
        self.loss_sum += loss
        self.batches += 1
        self.images += images

    def seconds(self) -> float:
        return self.before + time.perf_counter() - self.t0

    def postfix(self, lr: float) -> str:
        loss = self.loss_sum / max(1, self.batches)
        return f"loss {loss:.4f}, lr {lr:.3g}, {self.images / max(1e-9, self.seconds()):.1f} img/s"

    def state(self) -> dict[str, float]:
        return {"loss_sum": self.loss_sum, "batches": self.batches, "images": self.images, "wait": self.wait,
                "seconds": self.seconds()}  # fmt: skip

    def row(self, epoch: int, plan: Any, base_lr: float) -> dict[str, Any]:
        seconds = self.seconds()
        return {
            "epoch": epoch,
            "steps": plan.step,
            "images": self.images,
            "train_loss": round(self.loss_sum / max(1, self.batches), 6),
            "lr": float(f"{plan.lr(base_lr):.6g}"),
            "images_per_s": round(self.images / max(1e-9, seconds), 3),
            "data_wait_pct": round(100 * self.wait / max(1e-9, seconds), 2),
            "train_s": round(seconds, 3),
        }


class Book:
    """The run folder's files: last.ckpt, best.safetensors, metrics.csv, curves.png."""

    def __init__(self, run_dir: Path, config: TrainConfig, data: Any) -> None:
        self.run_dir, self.config, self.data = run_dir, config, data
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {}
        self.elapsed = 0.0
        self.partial: dict[str, float] | None = None
        self.skipped: dict[int, str] = {}
        self.best_path = run_dir / "best.safetensors"
        self.last_path = run_dir / "last.ckpt"

    def skip(self, s: Skipped, emit) -> None:
        if s.index not in self.skipped:
            self.skipped[s.index] = s.error
            emit(TrainEvent("warning", f"skipped: {s.error}"))

    def finish_epoch(self, row: dict[str, Any], model: nn.Module, val_seconds: float, rank: int) -> None:
        row.pop("_val_matrix", None)
        row["epoch_s"] = round(row["train_s"] + val_seconds, 3)
        self.elapsed += row["epoch_s"]
        row["elapsed_s"] = round(self.elapsed, 3)
        miou = row.get("val_miou")
        improved = not self.best or (miou is not None and not math.isnan(miou)
                                     and miou > (self.best.get("val_miou") or -1.0))  # fmt: skip
        if improved:
            self.best = {"epoch": row["epoch"], "val_miou": miou, "val_pixel_acc": row.get("val_pixel_acc")}
            if rank == 0:
                self._save_best(model)
        row["best_miou"] = self.best.get("val_miou")
        self.history.append(row)
        self.partial = None

    def write_files(self) -> None:
        """metrics.csv and curves.png, after last.ckpt holds the epochs they show."""
        write_csv(self.run_dir / "metrics.csv", self.history, _CSV_FIELDS)
        _plot_curves(self.run_dir / "curves.png", self.history)

    def _save_best(self, model: nn.Module) -> None:
        d, c = self.data, self.config
        meta = TrainedMetadata(model=c.model, categories=d.categories, palette=d.palette, mean=MEAN, std=STD,
                               resize=c.base_size, ignore_index=d.ignore_index)  # fmt: skip
        training = {**d.source, "classes_file": c.classes, "epochs": self.best["epoch"], "crop": c.crop,
                    "class_weights": c.class_weights, "weights": c.weights, "seed": c.seed}  # fmt: skip
        val = {"miou": self.best["val_miou"], "pixel_acc": self.best["val_pixel_acc"], "epoch": self.best["epoch"]}
        save_trained(self.best_path, model, meta, training=training, val=val, seglens_version=__version__)

    def save(self, model: nn.Module, optimizer, scaler, plan: Any, epoch: int, batch: int) -> None:
        state = {
            "format": CHECKPOINT_FORMAT,
            "model": getattr(model, "module", model).state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler.is_enabled() else None,
            "schedule": plan.state(),
            "epoch": epoch,
            "batch": batch,
            "history": self.history,
            "best": self.best,
            "elapsed": self.elapsed + (self.partial or {}).get("seconds", 0.0),
            "partial": self.partial,
            "skipped": self.skipped,
            "rng": {"torch": torch.get_rng_state()},
        }
        buffer = io.BytesIO()
        torch.save(state, buffer)
        with atomic_open(self.last_path, "wb") as f:
            f.write(buffer.getbuffer())

    def load(self, state: dict[str, Any]) -> None:
        self.history = list(state["history"])
        self.best = dict(state["best"])
        self.partial = state.get("partial")
        self.elapsed = state["elapsed"] - (self.partial or {}).get("seconds", 0.0)
        self.skipped = dict(state.get("skipped") or {})

    def last_good(self) -> str:
        if not self.history:
            return f"none yet (no epoch finished); nothing in {self.run_dir} to resume from"
        return f"{self.last_path} (epoch {self.history[-1]['epoch']})"

    def epoch_line(self, row: dict[str, Any], plan: Any) -> str:
        text = f"epoch {row['epoch']}/{plan.epochs_text()}: loss {row['train_loss']:.4f}"
        if row.get("val_miou") is not None:
            text += (f", val mIoU {row['val_miou']:.2f}, pixel acc {row['val_pixel_acc']:.2f} "
                     f"(best {self.best['val_miou']:.2f} at epoch {self.best['epoch']})")  # fmt: skip
        text += f", {row['images_per_s']:.1f} img/s, data wait {row['data_wait_pct']:.0f}%, {row['epoch_s']:.0f} s"
        left = (plan.epochs or 0) - row["epoch"]
        if left > 0:  # the epochs so far say how long the rest takes
            per_epoch = sum(r["epoch_s"] for r in self.history) / len(self.history)
            text += f", ETA {_duration(left * per_epoch)}"
        return text

    def result(self, report: str | None) -> TrainResult:
        return TrainResult(
            run_dir=str(self.run_dir),
            best_weights=str(self.best_path) if self.best_path.is_file() else None,
            best_epoch=self.best.get("epoch"),
            best_miou=self.best.get("val_miou"),
            best_pixel_acc=self.best.get("val_pixel_acc"),
            epochs=len(self.history),
            history=tuple(self.history),
            report=report,
        )


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{round(seconds)} s" if seconds < 90 else (f"{minutes} min" if minutes < 90 else f"{minutes / 60:.1f} h")


def _plot_curves(path: Path, history: list[dict[str, Any]]) -> None:
    """Training loss and validation mIoU / pixel accuracy against the epoch."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    epochs = [r["epoch"] for r in history]
    fig = Figure(figsize=(10, 3.6), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    loss_ax, val_ax = fig.subplots(1, 2)
    loss_ax.plot(epochs, [r["train_loss"] for r in history], marker="o", color="tab:red")
    loss_ax.set(title="training loss", xlabel="epoch", ylabel="cross-entropy")
    miou = [r.get("val_miou") for r in history]
    if any(v is not None for v in miou):
        val_ax.plot(epochs, miou, marker="o", label="val mIoU")
        val_ax.plot(epochs, [r.get("val_pixel_acc") for r in history], marker=".", label="val pixel acc")
        val_ax.legend(loc="lower right")
    val_ax.set(title="validation", xlabel="epoch", ylabel="%", ylim=(0, 100))
    for ax in (loss_ax, val_ax):
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    with atomic_open(path, "wb") as f:
        f.write(buffer.getvalue())


def final_report(run_dir: Path, book: Book, dataset: Any, config: TrainConfig, bars, emit) -> str:
    """``seglens eval`` of best.safetensors on the validation split, into ``run_dir/eval``."""
    from .evaluation import evaluate

    result = evaluate(dataset, model=config.model, weights=str(book.best_path), out=run_dir / "eval",
                      device=config.device, progress=bars, check_labels=False)  # fmt: skip
    report = run_dir / "eval" / "report.html"
    emit(TrainEvent("note", f"best weights (epoch {book.best.get('epoch')}) on the validation split: mIoU "
                            f"{result.miou:.2f}, pixel acc {result.pixel_acc:.2f}; report {report}"))  # fmt: skip
    return str(report)
