"""The baseline ``seglens train`` is measured against: torchvision's reference training loop
(``references/segmentation/train.py`` with ``presets.SegmentationPresetTrain``), written out
plainly, and a side-by-side speed comparison of the two on the same model, batch and crop.

The reference loop, as torchvision ships it (defaults of its argparse, the lraspp recipe's lr):
resize the short side to a random size in [0.5, 2.0] x 520, flip with probability 0.5, random
crop ``crop`` (padded with the ignore value), ``PILToTensor`` + ``ToDtype(float, scale)`` +
ImageNet ``Normalize``; ``DataLoader(shuffle=True, drop_last=True)``; cross-entropy with the
ignore index (+ 0.5 x the auxiliary head's); SGD lr 0.02, momentum 0.9, weight decay 1e-4,
``PolynomialLR(total_iters=steps, power=0.9)``, no warm-up; fp32, contiguous tensors, no
validation until the end. Its weights are scored with ``seglens eval`` at the 520-pixel rule it
trained for (a plain state dict: seglens runs it with torchvision's preset).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from .datasets import open_dataset

__all__ = ["reference_train", "reference_transform", "train_speed"]

_MEAN, _STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class _Pairs(Dataset):
    def __init__(self, dataset, transform) -> None:
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        sample = self.dataset[i]
        image = tv_tensors.Image(v2.functional.pil_to_tensor(sample.image))
        return self.transform(image, tv_tensors.Mask(torch.from_numpy(sample.target.copy())))


def reference_transform(*, crop: int, ignore_index: int, base_size: int = 520) -> v2.Compose:
    """``SegmentationPresetTrain(base_size=520, crop_size=crop)`` on transforms v2."""
    return v2.Compose([
        v2.RandomResize(int(0.5 * base_size), int(2.0 * base_size)),
        v2.RandomHorizontalFlip(0.5),
        v2.RandomCrop(crop, pad_if_needed=True, fill={tv_tensors.Image: 0, tv_tensors.Mask: ignore_index}),
        v2.ToDtype({tv_tensors.Image: torch.float32, tv_tensors.Mask: torch.int64, "others": None}, scale=True),
        v2.Normalize(mean=_MEAN, std=_STD),
    ])  # fmt: skip


def reference_train(
    images: str,
    masks: str,
    *,
    model: str,
    num_classes: int,
    ignore_index: int,
    steps: int | None = None,
    minutes: float | None = None,
    batch_size: int = 8,
    crop: int = 480,
    lr: float = 0.02,
    workers: int = 2,
    seed: int = 0,
    save: str | Path | None = None,
) -> dict[str, Any]:
    """Train like torchvision's reference for ``steps`` steps or ``minutes`` (the polynomial
    schedule over the steps that fit, estimated from the first 5, as a user with a time limit
    would set ``--epochs``); optionally ``torch.save`` the state dict to ``save``.

    Returns:
        ``images``, ``steps``, ``seconds``, ``images_per_s``, ``data_wait_pct``, ``losses``.
    """
    from torchvision.models import get_model

    torch.manual_seed(seed)
    aux = not model.startswith("lraspp")
    net = get_model(model, weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=aux or None)
    data = _Pairs(open_dataset("folder", None, images=images, masks=masks, ignore_index=ignore_index),
                  reference_transform(crop=crop, ignore_index=ignore_index))  # fmt: skip
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True,
                        generator=torch.Generator().manual_seed(seed), persistent_workers=workers > 0)  # fmt: skip
    params = [
        {"params": [p for p in net.backbone.parameters() if p.requires_grad]},
        {"params": [p for p in net.classifier.parameters() if p.requires_grad]},
    ]
    if aux:
        params.append({"params": [p for p in net.aux_classifier.parameters()], "lr": lr * 10})
    optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-4)
    criterion = nn.CrossEntropyLoss(ignore_index=ignore_index)
    total = steps if steps is not None else 10**9
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: max(0.0, 1 - s / total) ** 0.9)
    net.train()
    done, images_seen, waited, losses, times = 0, 0, 0.0, [], []
    start = time.perf_counter()
    while done < total:
        t_fetch = time.perf_counter()
        for x, y in loader:
            t_step = time.perf_counter()
            waited += t_step - t_fetch
            out = net(x)
            loss = criterion(out["out"], y)
            if aux:
                loss = loss + 0.5 * criterion(out["aux"], y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(float(loss.detach()))
            done += 1
            images_seen += len(x)
            times.append(time.perf_counter() - t_fetch)
            if minutes is not None and done == 5:  # fit the schedule to the budget, as a user would
                step_s = sorted(times[1:])[len(times[1:]) // 2]
                total = max(done + 1, int(minutes * 60 / step_s))
            if done >= total:
                break
            t_fetch = time.perf_counter()
    seconds = time.perf_counter() - start
    if save is not None:
        torch.save({k: v for k, v in net.state_dict().items()}, save)
    return dict(images=images_seen, steps=done, seconds=round(seconds, 3),
                        images_per_s=round(images_seen / seconds, 3), data_wait_pct=round(100 * waited / seconds, 2),
                        losses=losses)  # fmt: skip


def train_speed(
    images: str,
    masks: str,
    *,
    classes: str,
    ignore_index: int,
    model: str,
    batch_size: int,
    crop: int,
    steps: int,
    workers: int = 2,
    out: str | Path,
) -> list[dict[str, Any]]:
    """Images/s and the share of time waiting for data of the reference loop and of
    ``seglens train`` (same model, batch, crop, workers, number of steps; one run each, in
    this order), as rows for a side-by-side table."""
    from .train import train

    names = [n for n in Path(classes).read_text().splitlines() if n.strip()]
    ref = reference_train(images, masks, model=model, num_classes=len(names), ignore_index=ignore_index,
                          steps=steps, batch_size=batch_size, crop=crop, workers=workers)  # fmt: skip
    n_images = steps * batch_size
    result = train(images=images, masks=masks, classes=classes, ignore_index=ignore_index, model=model,
                   weights="random", epochs=1, batch_size=batch_size, crop=crop, workers=workers,
                   limit=round(n_images / 0.9) + 1, val_fraction=0.1, eval_report=False, out=str(out))  # fmt: skip
    row = result.history[0]
    rows = [
        {"loop": "torchvision reference", "steps": ref["steps"], "images_per_s": ref["images_per_s"],
         "data_wait_pct": ref["data_wait_pct"]},
        {"loop": "seglens train", "steps": row["steps"], "images_per_s": row["images_per_s"],
         "data_wait_pct": row["data_wait_pct"]},
    ]  # fmt: skip
    for r in rows:
        r["vs_reference"] = round(r["images_per_s"] / rows[0]["images_per_s"], 3)
    return rows
