"""Training data for :mod:`seglens.train`: splits, class weights, augmentation, samplers, loaders.

The datasets are :mod:`seglens.datasets`' (the same code ``seglens eval`` reads them with); this
module turns a split into what a training loop consumes:

- :class:`Augment`: torchvision's reference recipe (``references/segmentation/presets.py``) on
  ``torchvision.transforms.v2``, which moves image and mask together: random resize by 0.5-2.0x
  of the input-size rule, horizontal flip, optional photometric jitter, random crop padded with
  the ignore value (masks: nearest neighbour), then 0..1 and the weights' mean/std.
- :class:`EpochSampler`: one seeded permutation per epoch (the same on every rank, sharded as
  ``DistributedSampler`` does), with an offset to resume mid-epoch.
- an unreadable pair becomes a skipped item (its error travels to the loop) instead of a
  crashed DataLoader worker.
"""

from __future__ import annotations

import math
import signal
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from .datasets import DatasetError, SegmentationDataset

__all__ = ["Augment", "EpochSampler", "TrainItems", "ValItems", "class_weights", "collate", "split_indices"]

CLASS_WEIGHTS = ("none", "inverse", "median")


def split_indices(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, val) indices of a seeded random hold-out of ``round(n * fraction)`` items (at least
    one each); both sorted, so the splits keep the dataset's order."""
    k = min(n - 1, max(1, round(n * fraction)))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(perm[k:]), sorted(perm[:k])


def class_weights(
    mode: str, class_pixels: Sequence[int], images_with_class: Sequence[int], pixels_per_image: float
) -> list[float] | None:
    """Per-class loss weights from the training labels.

    - ``"none"``: None (plain cross-entropy).
    - ``"median"``: median-frequency balancing (Eigen & Fergus 2015, used by SegNet on CamVid):
      ``freq_c`` = pixels of c / pixels of the images where c occurs; ``w_c = median(freq) / freq_c``.
    - ``"inverse"``: ENet's bounded inverse frequency (Paszke et al. 2016): ``w_c = 1 / ln(1.02 + p_c)``
      with ``p_c`` the share of labelled pixels that are class c.

    Classes that never occur get weight 0 (they have no pixels to weigh anyway).
    """
    if mode == "none":
        return None
    pixels = np.asarray(class_pixels, dtype=np.float64)
    present = pixels > 0
    weights = np.zeros_like(pixels)
    if mode == "median":
        freq = pixels[present] / (np.asarray(images_with_class, dtype=np.float64)[present] * pixels_per_image)
        weights[present] = np.median(freq) / freq
    elif mode == "inverse":
        share = pixels[present] / pixels.sum()
        weights[present] = 1.0 / np.log(1.02 + share)
    else:
        raise ValueError(f"class weights {mode!r}: choose one of {', '.join(CLASS_WEIGHTS)}")
    return [round(float(w), 6) for w in weights]


class Augment:
    """Image + mask augmentation of one training pair (see the module docstring).

    Args:
        crop: side of the square crop, in pixels.
        ignore_index: the mask's fill for padding.
        mean, std: normalisation.
        base_size: None: scale relative to the image's own size; N: relative to a short side of N
            (torchvision's reference uses 520), the same rule the trained model is run with.
        scale_range: (low, high) random resize factors.
        hflip: flip left-right with probability 0.5.
        jitter: ColorJitter strength (brightness, contrast, saturation; hue = jitter / 4); 0: off.
    """

    def __init__(
        self,
        *,
        crop: int,
        ignore_index: int,
        mean: Sequence[float],
        std: Sequence[float],
        base_size: int | None = None,
        scale_range: tuple[float, float] = (0.5, 2.0),
        hflip: bool = True,
        jitter: float = 0.0,
    ) -> None:
        self.base_size, self.scale_range = base_size, scale_range
        post: list[Any] = []
        if hflip:
            post.append(v2.RandomHorizontalFlip(0.5))
        if jitter > 0:
            post.append(v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter, hue=min(0.5, jitter / 4)))
        post += [
            v2.RandomCrop(crop, pad_if_needed=True, fill={tv_tensors.Image: 0, tv_tensors.Mask: ignore_index}),
            v2.ToDtype({tv_tensors.Image: torch.float32, tv_tensors.Mask: torch.int64, "others": None}, scale=True),
            v2.Normalize(mean=list(mean), std=list(std)),
        ]
        self.post = v2.Compose(post)

    def __call__(self, image: Image.Image, target: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        img = tv_tensors.Image(F.pil_to_tensor(image))
        mask = tv_tensors.Mask(torch.from_numpy(np.ascontiguousarray(target)))
        h, w = img.shape[-2:]
        low, high = self.scale_range
        factor = low + (high - low) * float(torch.rand(()))
        short = max(1, round(factor * (self.base_size or min(h, w))))
        img = F.resize(img, [short], interpolation=v2.InterpolationMode.BILINEAR, antialias=True)
        mask = F.resize(mask, [short], interpolation=v2.InterpolationMode.NEAREST)
        img, mask = self.post(img, mask)
        return img.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)


@dataclass(frozen=True)
class Skipped:
    """A pair that could not be read, in place of a training item."""

    index: int
    error: str


class _Items(Dataset):
    """``dataset[indices[i]]`` made into a network's pair by ``convert(image, target)``, or a
    :class:`Skipped` when the pair cannot be read."""

    def __init__(self, dataset: SegmentationDataset, indices: Sequence[int]) -> None:
        self.dataset, self.indices = dataset, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def convert(self, image: Image.Image, target: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def __getitem__(self, i: int):
        index = self.indices[i]
        try:
            sample = self.dataset[index]
        except (DatasetError, OSError, ValueError) as e:
            return Skipped(index, str(e))
        return self.convert(sample.image, sample.target)


class TrainItems(_Items):
    """Augmented training pairs: ``(image (3, crop, crop) float32, target (crop, crop) int64)``."""

    def __init__(self, dataset: SegmentationDataset, indices: Sequence[int], augment: Augment) -> None:
        super().__init__(dataset, indices)
        self.convert = augment


class ValItems(_Items):
    """Validation pairs as ``seglens eval`` (native protocol) feeds them to the network:
    ``(network input (3, h, w), target (H, W) uint8 at the image's size)``."""

    def __init__(self, dataset: SegmentationDataset, indices: Sequence[int], preprocess: Any) -> None:
        super().__init__(dataset, indices)
        self.preprocess = preprocess

    def convert(self, image: Image.Image, target: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return self.preprocess(image), torch.from_numpy(np.ascontiguousarray(target))


def collate(batch: list) -> tuple[torch.Tensor | None, torch.Tensor | None, list[Skipped]]:
    """Stack the readable pairs; return the skipped ones beside them."""
    skipped = [b for b in batch if isinstance(b, Skipped)]
    pairs = [b for b in batch if not isinstance(b, Skipped)]
    if not pairs:
        return None, None, skipped
    return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs]), skipped


def ignore_sigint(worker_id: int) -> None:
    """DataLoader workers leave Ctrl-C to the main process, which stops after the current step
    and saves a checkpoint (a worker killed by the terminal's SIGINT would fail the batch)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class EpochSampler(Sampler[int]):
    """A seeded permutation per epoch, the same on every rank, sharded like ``DistributedSampler``
    (padded by repeating the first indices so every rank gets as many), starting at ``offset``
    items into this rank's share (a resumed epoch skips what was trained)."""

    def __init__(self, n: int, *, seed: int, rank: int = 0, world: int = 1, shuffle: bool = True) -> None:
        self.n, self.seed, self.rank, self.world, self.shuffle = n, seed, rank, world, shuffle
        self.epoch, self.offset = 0, 0
        self.per_rank = math.ceil(n / world)

    def set_epoch(self, epoch: int, offset: int = 0) -> None:
        self.epoch, self.offset = epoch, offset

    def _order(self) -> list[int]:
        if not self.shuffle:
            order = list(range(self.n))
        else:
            order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()
        padded = order + order[: self.per_rank * self.world - self.n]
        return padded[self.rank :: self.world]

    def __iter__(self) -> Iterator[int]:
        return iter(self._order()[self.offset :])

    def __len__(self) -> int:
        return max(0, self.per_rank - self.offset)
