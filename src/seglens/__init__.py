"""seglens: semantic segmentation for everyday use, on top of torchvision's pretrained networks.

Importing is cheap: torch and matplotlib load only when a Segmenter or a figure is first used.
"""

from importlib import import_module
from typing import TYPE_CHECKING

__version__ = "0.1.0"
__all__ = ["Segmenter", "SegmentationResult", "load_image", "load_model", "list_models", "__version__"]

_LAZY = {
    "Segmenter": ".inference",
    "SegmentationResult": ".inference",
    "load_image": ".io",
    "load_model": ".models",
    "list_models": ".models",
}

if TYPE_CHECKING:  # pragma: no cover
    from .inference import SegmentationResult, Segmenter
    from .io import load_image
    from .models import list_models, load_model


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'seglens' has no attribute {name!r}")
