"""``seglens train``: fine-tune or train a torchvision segmentation network on labelled images.

One call, :func:`train`, does what torchvision's ``references/segmentation/train.py`` does
(its recipe is the default: random resize 0.5-2.0x, crop, flip; cross-entropy with the ignore
index plus 0.5x the auxiliary head's; SGD momentum 0.9, weight decay 1e-4, polynomial LR with
linear warm-up; DistributedDataParallel under ``torchrun``) and adds what a run needs to be used:

- the data checked before the first step (:func:`seglens.datasets.survey_labels`): values that
  are neither classes nor the ignore value, size mismatches, binary 0/255 or RGB masks stop the
  run with one line naming the file; unreadable pairs are skipped and listed;
- ``minutes=``: a wall-clock budget the schedule fits itself to (the polynomial decay reaches
  zero when the budget ends, re-planned after every epoch from measured epoch times);
- class weights from the training masks (median-frequency or ENet's), optional jitter;
- a run folder: ``config.json``, ``last.ckpt`` (everything to resume, written atomically every
  epoch and on Ctrl-C / SIGTERM), ``best.safetensors`` (weights + metadata that every seglens
  command reads: model, class names, colours, normalisation, input-size rule), ``metrics.csv``,
  ``curves.png`` and the ``seglens eval`` report of the best weights on the validation split.

Validation each epoch scores exactly what ``seglens eval --weights best.safetensors`` scores
(the same preprocessing and label upsampling; the native protocol).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from . import _train_run as run
from ._eval_options import _bar_factory
from ._logits import upsample_argmax
from ._train_config import TrainConfig, TrainDiverged, TrainError, TrainEvent, TrainInterrupted, TrainResult
from ._train_data import Augment, EpochSampler, TrainItems, ValItems, collate, ignore_sigint
from ._train_model import build_model, param_groups
from .metrics import ConfusionMatrix, scores

__all__ = ["TrainConfig", "TrainDiverged", "TrainError", "TrainEvent", "TrainInterrupted", "TrainResult", "train"]


def train(
    config: TrainConfig | None = None,
    *,
    resume: str | os.PathLike | None = None,
    progress: bool | Callable[..., Any] | None = None,
    on_event: Callable[[TrainEvent], None] | None = None,
    **options: Any,
) -> TrainResult:
    """Train a segmentation network; see the module docstring and :class:`TrainConfig`.

    Example::

        from seglens.train import train
        r = train(images="camvid/train", masks="camvid/trainannot", classes="camvid/classes.txt",
                  ignore_index=11, val_images="camvid/val", val_masks="camvid/valannot",
                  model="lraspp_mobilenet_v3_large", weights="random", minutes=20, out="runs/camvid")
        r.best_miou, r.best_weights        # then: seglens segment --weights runs/camvid/best.safetensors

    Args:
        config: the settings; or give them as keyword ``options``.
        resume: a run folder to continue from its ``last.ckpt`` with its ``config.json``; then only
            ``epochs``, ``minutes``, ``device``, ``workers``, ``eval_report`` may be given (to extend
            or move a run).
        progress: None/False: no bars; True: tqdm on stderr; or a tqdm-like factory.
        on_event: called with each :class:`TrainEvent` (notes, warnings, one per epoch).

    Raises:
        TrainError: bad data, weights, settings or out folder; NaN loss (the last good checkpoint
            is kept). TrainInterrupted: Ctrl-C / SIGTERM after saving a resumable checkpoint.
    """
    if resume is not None:
        config, state = run.open_resume(Path(resume), config, options)
    else:
        if config is None:
            try:
                config = TrainConfig(**options)
            except TypeError as e:
                raise TypeError(str(e).replace("TrainConfig.__init__()", "train()")) from None
        elif options:
            config = replace(config, **options)
        state = None
    emit = on_event or (lambda event: None)
    bars = _bar_factory(progress)  # the one tqdm-or-factory rule, as evaluate()
    ctx = run.DistContext.start(config.device)
    try:
        return _Trainer(config, state, ctx, emit, bars, resume).fit()
    finally:
        ctx.close()


class _Trainer:
    def __init__(self, config: TrainConfig, state: dict | None, ctx: run.DistContext, emit, bars, resume) -> None:
        self.config, self.state, self.ctx, self.bars = config, state, ctx, bars
        self.emit = emit if ctx.rank == 0 else (lambda event: None)
        self.run_dir = Path(resume) if resume is not None else ctx.share(lambda: run.new_run_dir(config))
        if resume is None and ctx.rank == 0:
            run.write_config(self.run_dir, config)
        self.data = ctx.share(lambda: run.prepare_data(config, self.emit, bars))
        self.emit(TrainEvent("note", f"run folder {self.run_dir}"))
        self.emit(TrainEvent("note", self.data.describe()))

    # --- setup -------------------------------------------------------------------------------

    def _model(self) -> tuple[nn.Module, str]:
        c, n = self.config, len(self.data.categories)
        if self.state is not None:  # resumed: the checkpoint has every weight
            model, _ = build_model(c.model, n, weights="random", weights_backbone="none", seed=c.seed)
            model.load_state_dict(self.state["model"], strict=True)
            return model, f"resumed from {self.run_dir / 'last.ckpt'} (epoch {self.state['epoch']})"
        return build_model(c.model, n, weights=c.weights, weights_backbone=c.weights_backbone, seed=c.seed,
                           progress=self.bars is not None)  # fmt: skip

    def _loaders(self) -> tuple[DataLoader, EpochSampler, DataLoader | None]:
        c, d, ctx = self.config, self.data, self.ctx
        per_rank = math.ceil(len(d.train_indices) / ctx.world)
        if per_rank < 2:
            raise TrainError(f"{len(d.train_indices)} training images: need at least 2 per process (batch norm)")
        self.batch = min(c.batch_size, per_rank)
        augment = Augment(crop=c.crop, ignore_index=d.ignore_index, mean=run.MEAN, std=run.STD, base_size=c.base_size,
                          scale_range=c.scale_range, hflip=c.hflip, jitter=c.jitter)  # fmt: skip
        sampler = EpochSampler(len(d.train_indices), seed=c.seed, rank=ctx.rank, world=ctx.world)
        workers = c.workers
        common = {"num_workers": workers, "collate_fn": collate, "pin_memory": ctx.device.type == "cuda",
                  "worker_init_fn": ignore_sigint if workers else None, "persistent_workers": False,
                  "prefetch_factor": 4 if workers else None}  # fmt: skip
        train_loader = DataLoader(TrainItems(d.train, d.train_indices, augment), batch_size=self.batch,
                                  sampler=sampler, drop_last=True, **common)  # fmt: skip
        val_loader = None
        if ctx.rank == 0 and d.val_indices:
            val_items = ValItems(d.val, d.val_indices, run.preprocess_rule(c.base_size))
            val_loader = DataLoader(
                val_items, batch_size=1, shuffle=False, **{**common, "prefetch_factor": 2 if workers else None}
            )
        return train_loader, sampler, val_loader

    # --- the loop ------------------------------------------------------------------------------

    def fit(self) -> TrainResult:
        c, ctx, d = self.config, self.ctx, self.data
        model, start = self._model()
        self.emit(TrainEvent("note", f"{c.model}, {len(d.categories)} classes; weights: {start}"))
        train_loader, sampler, val_loader = self._loaders()
        device = ctx.device
        memory_format = torch.channels_last if device.type in ("cuda", "cpu") else torch.contiguous_format
        model = model.to(device, memory_format=memory_format)
        groups = param_groups(model, lr=c.lr, head_lr=c.head_lr, freeze_backbone=c.freeze_backbone)
        if c.optimizer == "sgd":
            optimizer = torch.optim.SGD(groups, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)
        else:
            optimizer = torch.optim.AdamW(groups, lr=c.lr, weight_decay=c.weight_decay)
        scaler = torch.amp.GradScaler(device.type, enabled=c.precision == "fp16" and device.type == "cuda")
        net = ctx.wrap(model)
        weight = None if d.weights is None else torch.tensor(d.weights, dtype=torch.float32, device=device)
        criterion = nn.CrossEntropyLoss(weight=weight, ignore_index=d.ignore_index)
        plan = run.Plan(steps_per_epoch=len(train_loader), config=c, n_val=len(d.val_indices))
        book = run.Book(self.run_dir, c, d)
        epoch, offset = 0, 0
        if self.state is not None:
            s = self.state
            optimizer.load_state_dict(s["optimizer"])
            if s.get("scaler"):
                scaler.load_state_dict(s["scaler"])
            plan.load(s["schedule"])
            book.load(s)
            epoch, offset = s["epoch"], s["batch"]
            torch.set_rng_state(s["rng"]["torch"])
        stopper = run.Stopper()
        with stopper:
            while not plan.done(epoch):
                sampler.set_epoch(epoch, offset * self.batch)
                torch.manual_seed(c.seed * 100_003 + epoch)  # augmentation without workers, dropout
                loader_generator = torch.Generator().manual_seed(c.seed + epoch)
                train_loader.generator = loader_generator
                row = self._epoch(net, model, train_loader, optimizer, scaler, criterion, plan, book, stopper,
                                  epoch, offset)  # fmt: skip
                offset = 0
                if row is None:  # interrupted mid-epoch: saved, resumable
                    raise TrainInterrupted(
                        f"interrupted; resume with: seglens train --resume {self.run_dir}",
                        str(self.run_dir / "last.ckpt"),
                    )
                t0 = time.perf_counter()
                if val_loader is not None:
                    row.update(self._validate(model, val_loader))
                ctx.barrier()
                epoch += 1
                book.finish_epoch(row, model, time.perf_counter() - t0, ctx.rank)
                plan.replan(epoch, row["epoch_s"], book.elapsed)
                if ctx.rank == 0:
                    book.save(model, optimizer, scaler, plan, epoch, 0)
                    book.write_files()
                self.emit(TrainEvent("epoch", book.epoch_line(row, plan), row))
                if stopper.requested(ctx):
                    raise TrainInterrupted(
                        f"interrupted after epoch {epoch}; resume with: seglens train --resume {self.run_dir}",
                        str(self.run_dir / "last.ckpt"),
                    )
        report = None
        if ctx.rank == 0 and c.eval_report and book.best_path.is_file() and d.val_indices:
            dataset = run.subset(d.val, d.val_indices)
            report = run.final_report(self.run_dir, book, dataset, c, self.bars, self.emit)
        return book.result(report)

    def _epoch(self, net, model, loader, optimizer, scaler, criterion, plan, book, stopper, epoch, offset):
        c, ctx, device = self.config, self.ctx, self.ctx.device
        net.train()
        if c.freeze_backbone:
            model.backbone.eval()  # frozen: its batch-norm statistics stay as loaded
        steps = len(loader)
        bar = self.bars(total=steps, initial=offset, unit="batch", desc=f"epoch {epoch + 1}/{plan.epochs_text()}",
                        leave=False) if self.bars is not None and ctx.rank == 0 else None  # fmt: skip
        meter = run.Meter(book.partial if offset else None)
        memory_format = torch.channels_last if device.type in ("cuda", "cpu") else torch.contiguous_format
        autocast = run.autocast(c.precision, device)
        step_in_epoch = offset
        try:
            iterator = iter(loader)
            while True:
                t_wait = time.perf_counter()
                try:
                    x, y, skipped = next(iterator)
                except StopIteration:
                    break
                except RuntimeError:
                    if stopper.signum is not None:  # a worker fell to the same Ctrl-C
                        break
                    raise
                meter.waited(time.perf_counter() - t_wait)
                for s in skipped:
                    book.skip(s, self.emit)
                plan.set_lr(optimizer)
                if x is not None:
                    x = x.to(device, non_blocking=True, memory_format=memory_format)
                    y = y.to(device, non_blocking=True)
                    with autocast:
                        out = net(x)
                        loss = run.seg_loss(out, y, criterion, c.aux_weight, self.data.ignore_index)
                    bad = not bool(torch.isfinite(loss))
                else:
                    loss, bad = None, False
                flags = ctx.agree(bad, stopper.signum is not None)
                if flags[0]:
                    value = float(loss.detach()) if loss is not None else math.nan
                    raise TrainDiverged(
                        f"the loss became {value} at epoch {epoch + 1}, step "
                        f"{step_in_epoch + 1} (lr {plan.lr(c.lr):.3g}): lower --lr, or use --precision fp32; "
                        f"the last good checkpoint is kept: {book.last_good()}"
                    )
                if loss is not None:
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                    meter.add(float(loss.detach()), len(x))
                plan.advance(time.perf_counter() - t_wait, book.elapsed)
                step_in_epoch += 1
                if bar is not None:
                    if hasattr(bar, "set_description_str") and step_in_epoch == offset + 1 + 5:  # planned by now
                        bar.set_description_str(f"epoch {epoch + 1}/{plan.epochs_text()}", refresh=False)
                    if hasattr(bar, "set_postfix_str"):
                        bar.set_postfix_str(meter.postfix(plan.lr(c.lr)), refresh=False)
                    bar.update(1)
                if flags[1]:
                    break
        finally:
            if bar is not None:
                bar.close()
        if step_in_epoch < steps:  # stopped early: save where we are
            if ctx.rank == 0:
                book.partial = meter.state()
                book.save(model, optimizer, scaler, plan, epoch, step_in_epoch)
            return None
        return meter.row(epoch + 1, plan, c.lr)

    @torch.inference_mode()
    def _validate(self, model: nn.Module, loader: DataLoader) -> dict[str, Any]:
        device = self.ctx.device
        memory_format = torch.channels_last if device.type in ("cuda", "cpu") else torch.contiguous_format
        model.eval()
        cm = ConfusionMatrix(len(self.data.categories))
        autocast = run.autocast(self.config.precision, device)
        for x, y, _ in loader:
            if x is None:
                continue
            with autocast, run.without_aux(model):
                logits = model(x.to(device, memory_format=memory_format))["out"].float()[0]
            target = y[0].numpy()
            if tuple(logits.shape[-2:]) == target.shape:
                pred = logits.argmax(0)
            else:
                pred = upsample_argmax(logits, target.shape)
            cm.update(target, pred.to(torch.uint8).cpu().numpy())
        s = scores(cm.matrix)
        return {"val_miou": round(100 * s.miou, 4), "val_pixel_acc": round(100 * s.pixel_acc, 4),
                "_val_matrix": cm.matrix}  # fmt: skip
