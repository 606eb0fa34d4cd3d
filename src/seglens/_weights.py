"""What every model loader of seglens shares: its result, its error, file digests, the offline switch.

A leaf: it imports no other seglens module (nor torch), so every loader can import it without an
import cycle: :mod:`seglens.models` (torchvision's registry, and the dispatcher by model source)
and :mod:`seglens.hf` (Hugging Face checkpoints) both build on it, neither on the other.

Import these names from :mod:`seglens.models`, their public home, which re-exports them.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

__all__ = ["OFFLINE_ENV", "LoadedModel", "WeightsError", "is_offline", "sha256_file"]

# Set (to anything but "" or "0"): nothing is downloaded; weights come from the caches only.
OFFLINE_ENV = "SEGLENS_OFFLINE"


class WeightsError(Exception):
    """Weights that cannot be found, downloaded, verified or loaded. The message is one line."""


@dataclass(frozen=True)
class LoadedModel:
    """A model ready for inference (eval mode, on CPU) and what describes it."""

    name: str
    model: nn.Module
    categories: tuple[str, ...]
    transforms: Callable  # torchvision's SemanticSegmentation preset for these weights
    weights: str  # "official", "random" or the local file's path
    weights_tag: str  # human-readable: weights enum name, or file name, plus sha256 prefix
    sha256: str | None
    meaningful: bool  # False for random weights: the labels mean nothing
    # Optional, for model families beyond torchvision's (seglens.hf):
    palette: Any = None  # (256, 3) uint8 colours, index = label; None: the VOC palette
    normalize: tuple[tuple[float, ...], tuple[float, ...]] | None = (
        None  # (mean, std) on 0..1 RGB; None: from transforms
    )
    scores: str = "logits"  # what the network's "out" holds: "logits" (softmax -> probabilities) or "probs"


def is_offline() -> bool:
    """True when ``$SEGLENS_OFFLINE`` is set to anything but ``""`` or ``"0"``: no downloads."""
    return os.environ.get(OFFLINE_ENV, "") not in ("", "0")


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
