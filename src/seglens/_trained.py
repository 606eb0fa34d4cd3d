"""The metadata ``seglens train`` stores in ``best.safetensors``, and reading it back.

A leaf (no torch, no other seglens module): :mod:`seglens.models` reads the metadata to build the
right architecture with the right class names, colours, normalisation and input-size rule, and
:mod:`seglens.train` writes it. safetensors metadata is a flat ``str -> str`` map; seglens keeps
one JSON document under the key ``"seglens"``::

    {"format": "seglens.trained/1", "model": "lraspp_mobilenet_v3_large",
     "categories": ["sky", "building", ...], "palette": [[128, 128, 128], ...],
     "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
     "resize": null,              # the input-size rule: null = the image as it is, N = short side N
     "ignore_index": 11, "training": {...}, "val": {"miou": 61.2, ...}, "seglens_version": "0.1.0"}

Files without the key (any other safetensors or ``.pth`` state dict) load as before.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["FORMAT", "METADATA_KEY", "TrainedMetadata", "read_metadata"]

METADATA_KEY = "seglens"
FORMAT = "seglens.trained/1"


class MetadataError(ValueError):
    """seglens metadata that is present but unusable; the message is one line."""


@dataclass(frozen=True)
class TrainedMetadata:
    """What a seglens-trained weights file says about itself.

    Attributes:
        model: the torchvision builder it was trained as.
        categories: class names by label value.
        palette: one (R, G, B) per class.
        mean, std: normalisation of 0..1 RGB inputs.
        resize: the input-size rule: None = the image at its own size, N = short side resized to N.
        ignore_index: the label value that was not trained on.
        extra: everything else stored (training data, val scores, version).
    """

    model: str
    categories: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize: int | None
    ignore_index: int
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_json(self, **extra: Any) -> str:
        doc = {
            "format": FORMAT,
            "model": self.model,
            "categories": list(self.categories),
            "palette": [list(c) for c in self.palette],
            "mean": list(self.mean),
            "std": list(self.std),
            "resize": self.resize,
            "ignore_index": self.ignore_index,
            **self.extra,
            **extra,
        }
        return json.dumps(doc, sort_keys=False)


def _colour(value: Any) -> tuple[int, int, int]:
    if not (isinstance(value, list) and len(value) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in value)):
        raise MetadataError(f"palette entry {value!r} is not [R, G, B] with 0..255 integers")
    return tuple(value)  # type: ignore[return-value]


def parse_metadata(text: str, source: object) -> TrainedMetadata:
    """The :class:`TrainedMetadata` in ``text`` (the JSON under ``"seglens"``)."""
    try:
        doc = json.loads(text)
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise MetadataError(f"format {doc.get('format') if isinstance(doc, dict) else doc!r} is not {FORMAT}")
        categories = tuple(str(c) for c in doc["categories"])
        palette = tuple(_colour(c) for c in doc["palette"])
        if len(palette) != len(categories):
            raise MetadataError(f"{len(palette)} colours for {len(categories)} classes")
        resize = doc["resize"]
        if resize is not None and not (isinstance(resize, int) and resize > 0):
            raise MetadataError(f"resize {resize!r} is neither null nor a positive integer")
        mean = tuple(float(v) for v in doc["mean"])
        std = tuple(float(v) for v in doc["std"])
        if len(mean) != 3 or len(std) != 3:
            raise MetadataError("mean and std need 3 values each")
        known = {"format", "model", "categories", "palette", "mean", "std", "resize", "ignore_index"}
        return TrainedMetadata(
            model=str(doc["model"]),
            categories=categories,
            palette=palette,
            mean=mean,  # type: ignore[arg-type]
            std=std,  # type: ignore[arg-type]
            resize=resize,
            ignore_index=int(doc["ignore_index"]),
            extra={k: v for k, v in doc.items() if k not in known},
        )
    except MetadataError as e:
        raise MetadataError(f"{source}: seglens metadata is unusable ({e})") from None
    except (ValueError, KeyError, TypeError) as e:
        raise MetadataError(f"{source}: seglens metadata is unusable ({type(e).__name__}: {e})") from None


def read_metadata(path: str | os.PathLike) -> TrainedMetadata | None:
    """The seglens metadata of a ``.safetensors`` file, or None (another format, or no metadata).

    Reads the file's header only (safetensors' ``safe_open``), never the tensors.

    Raises:
        MetadataError: the ``"seglens"`` key is present but malformed.
    """
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
    except Exception:  # noqa: BLE001 - an unreadable file is the loader's to report, with its message
        return None
    text = meta.get(METADATA_KEY)
    return None if text is None else parse_metadata(text, path)
