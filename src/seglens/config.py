"""SegmenterConfig: every setting of a :class:`seglens.Segmenter`, checked once, in one frozen value.

A leaf next to torch: it imports neither torch nor a seglens module that does, so the CLI can
check flags (and a library user a config) before any model loads.

Example::

    from seglens import Segmenter, SegmenterConfig

    config = SegmenterConfig("lraspp_mobilenet_v3_large", device="cpu", tile=512, overlap=0.25)
    seg = Segmenter(config)                # same as Segmenter("lraspp_mobilenet_v3_large", device="cpu", ...)
    seg.config == config                   # True
    dataclasses.replace(config, tile=16)   # ConfigError: tile must be at least 32 pixels, got 16
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass
from typing import TYPE_CHECKING, Any

from ._weights import LoadedModel
from .io.errors import DEFAULT_MAX_PIXELS

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from PIL import Image

__all__ = ["BACKEND_PRECISIONS", "ConfigError", "SegmenterConfig"]

# Copies of seglens.models.DEFAULT_MODEL and seglens.backends.BACKENDS (those modules import
# torch); tests/test_config.py checks that they agree.
DEFAULT_MODEL = "deeplabv3_resnet50"
AUTO_EXPORT_IMAGES = 64  # seglens.backends.AUTO_EXPORT_IMAGES (the CLI's help names it without torch)
# backend -> its precisions: torch autocast; ONNX Runtime fp32; OpenVINO fp32 or NNCF int8.
BACKEND_PRECISIONS: dict[str, tuple[str, ...]] = {
    "torch": ("fp32", "fp16", "bf16"),
    "onnxruntime": ("fp32",),
    "openvino": ("fp32", "int8"),
}


class ConfigError(ValueError):
    """An invalid :class:`SegmenterConfig` value. ``field`` names the setting (``"tile"``), so a
    front end can name its own flag for it (the CLI: ``--tile``); the message is one line."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_hf(name: object) -> bool:
    # seglens.models.is_hf_model, without importing torch.
    return isinstance(name, str) and name.startswith("hf:")


@dataclass(frozen=True)
class SegmenterConfig:
    """The settings of a :class:`seglens.Segmenter`; see its docstring for what each one does.

    Every value is checked when the config is made (``ConfigError``, a ``ValueError``, or
    ``TypeError`` for a value of the wrong kind); nothing is loaded. Only ``model`` is
    positional. Change a field with ``dataclasses.replace(config, tile=512)`` (checked again).

    Attributes:
        model: a torchvision builder name, ``"hf:<repo-or-folder>"``, or a loaded ``LoadedModel``.
        weights: ``"official"``, ``"random"`` or a local ``.pth`` / ``.safetensors`` path.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` (checked when the
            Segmenter resolves it: that needs torch).
        batch_size: images per forward pass, >= 1.
        max_pixels: largest image accepted when reading paths, a positive int; None: no limit.
        progress: show the weights download progress bar.
        seed: seed of the random init for ``weights="random"``.
        backend: ``"torch"``, ``"onnxruntime"`` or ``"openvino"``.
        precision: torch: ``"fp32"``, ``"fp16"``, ``"bf16"``; onnxruntime: ``"fp32"``;
            openvino: ``"fp32"`` or ``"int8"``.
        channels_last: NHWC memory layout for the torch backend; None: on for CPU and CUDA.
        compile: ``torch.compile`` the model.
        calibration: images for int8 quantisation (kept as a tuple).
        scale: None (the weights' own resize) or a factor in (0, 16].
        tile: None or a window side of at least 32 pixels.
        overlap: fraction of a window shared with its neighbour, in [0, 1).
        confidence: also compute each pixel's max-softmax probability.
        refine: post-processing of the label maps (:mod:`seglens.refine`): a spelling such as
            ``"guided,small=200"`` or steps; kept as a tuple of :class:`seglens.refine.Refine`.
        window_progress: ``window_progress(done, total)`` after each batch of windows, or None.
    """

    model: str | LoadedModel = DEFAULT_MODEL
    _: KW_ONLY
    weights: str | os.PathLike | None = "official"
    device: str | torch.device = "auto"
    batch_size: int = 1
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    progress: bool = True
    seed: int = 0
    backend: str = "torch"
    precision: str = "fp32"
    channels_last: bool | None = None
    compile: bool = False
    calibration: Sequence[Image.Image] | None = None
    scale: float | None = None
    tile: int | None = None
    overlap: float = 0.25
    confidence: bool = False
    refine: Any = ()
    window_progress: Callable[[int, int], None] | None = None

    def __post_init__(self) -> None:
        model = self.model
        if not isinstance(model, LoadedModel) and not (isinstance(model, str) and model):
            raise TypeError(f"model must be a model name or a LoadedModel, got {model!r}")
        if not _is_int(self.batch_size):
            raise TypeError(f"batch_size must be an integer, got {self.batch_size!r}")
        if self.batch_size < 1:
            raise ConfigError("batch_size", f"batch_size must be >= 1, got {self.batch_size}")
        if self.max_pixels is not None:
            if not _is_int(self.max_pixels):
                raise TypeError(f"max_pixels must be a positive integer or None, got {self.max_pixels!r}")
            if self.max_pixels < 1:
                raise ConfigError("max_pixels", f"max_pixels must be a positive integer or None, got {self.max_pixels}")
        if not _is_int(self.seed):
            raise TypeError(f"seed must be an integer, got {self.seed!r}")
        if self.backend not in BACKEND_PRECISIONS:
            raise ConfigError("backend", f"unknown backend {self.backend!r}; choose {', '.join(BACKEND_PRECISIONS)}")
        allowed = BACKEND_PRECISIONS[self.backend]
        if self.precision not in allowed:
            hint = " (int8 needs backend=openvino)" if self.precision == "int8" else ""
            choose = ", ".join(allowed)
            raise ConfigError(
                "precision", f"precision {self.precision!r} with backend={self.backend}: choose {choose}{hint}"
            )
        name = model.name if isinstance(model, LoadedModel) else model
        if self.backend != "torch" and _is_hf(name):
            raise ConfigError(
                "backend",
                f"{name}: Hugging Face models run with backend=torch only (ONNX / OpenVINO export covers"
                f" torchvision models), got backend={self.backend}",
            )
        if self.scale is not None:
            if not _is_real(self.scale):
                raise TypeError(f"scale must be a number or None, got {self.scale!r}")
            if not 0 < self.scale <= 16:  # NaN fails too
                raise ConfigError("scale", f"scale must be in (0, 16], got {self.scale}")
        if self.tile is not None:
            if not _is_int(self.tile):
                raise TypeError(f"tile must be an integer number of pixels or None, got {self.tile!r}")
            if self.tile < 32:
                raise ConfigError("tile", f"tile must be at least 32 pixels, got {self.tile}")
        if not _is_real(self.overlap):
            raise TypeError(f"overlap must be a number, got {self.overlap!r}")
        if not (math.isfinite(self.overlap) and 0 <= self.overlap < 1):
            raise ConfigError("overlap", f"overlap must be in [0, 1), got {self.overlap}")
        if self.window_progress is not None and not callable(self.window_progress):
            raise TypeError(f"window_progress must be callable or None, got {self.window_progress!r}")
        if self.calibration is not None and not isinstance(self.calibration, tuple):
            object.__setattr__(self, "calibration", tuple(self.calibration))
        from .refine import parse_refine

        try:
            steps = parse_refine(self.refine)
        except ValueError as e:
            raise ConfigError("refine", str(e)) from None
        object.__setattr__(self, "refine", steps)
        if self.tile is not None and any(s.needs_probabilities for s in steps):
            raise ConfigError(
                "refine",
                "refine guided needs a whole image's probabilities, which tiling (tile=N) does not keep: use small",
            )

    def replace(self, **changes: Any) -> SegmenterConfig:
        """A copy with ``changes`` applied (and checked): ``dataclasses.replace``."""
        import dataclasses

        return dataclasses.replace(self, **changes)
