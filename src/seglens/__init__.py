"""seglens: semantic segmentation for everyday use, on top of torchvision's pretrained networks.

Importing is cheap: torch and matplotlib load only when a Segmenter or a figure is first used.
"""

from importlib import import_module
from typing import TYPE_CHECKING

from ._version import __version__

__all__ = [
    "Segmenter",
    "SegmenterConfig",
    "SegmentationResult",
    "load_image",
    "load_model",
    "list_models",
    "segment",
    "RunSummary",
    "evaluate",
    "EvalResult",
    "__version__",
]

_LAZY = {
    "Segmenter": ".inference",
    "SegmenterConfig": ".config",
    "SegmentationResult": ".inference",
    "load_image": ".io",
    "load_model": ".models",
    "list_models": ".models",
    "segment": ".pipeline",
    "RunSummary": ".pipeline",
    "evaluate": ".evaluation",  # a function: the module is seglens.evaluation (no seglens/evaluate.py)
    "EvalResult": ".evaltypes",
}

if TYPE_CHECKING:  # pragma: no cover
    from .config import SegmenterConfig
    from .evaltypes import EvalResult
    from .evaluation import evaluate
    from .inference import SegmentationResult, Segmenter
    from .io import load_image
    from .models import list_models, load_model
    from .pipeline import RunSummary, segment


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'seglens' has no attribute {name!r}")
