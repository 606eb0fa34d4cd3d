"""``seglens serve``: an HTTP API and a web page for segmentation, from one process.

Needs the ``web`` extra (``pip install 'seglens[web]'``: FastAPI, uvicorn, python-multipart).
Importing this package is cheap; FastAPI loads when ``create_app`` or ``serve`` is first used.

Example::

    from seglens import Segmenter
    from seglens.web import create_app, serve

    app = create_app({"lraspp_mobilenet_v3_large": Segmenter("lraspp_mobilenet_v3_large")})
    serve(app, host="127.0.0.1", port=8000)
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

__all__ = ["DEFAULT_SERVE_MAX_PIXELS", "create_app", "serve"]

from ._limits import DEFAULT_SERVE_MAX_PIXELS

_LAZY = ("create_app", "serve")

if TYPE_CHECKING:  # pragma: no cover
    from .app import create_app, serve


def __getattr__(name: str):
    if name in _LAZY:
        try:
            module = import_module(".app", __name__)
        except ModuleNotFoundError as e:
            if e.name in ("fastapi", "starlette", "uvicorn", "multipart", "python_multipart"):
                raise ModuleNotFoundError(
                    f"seglens serve needs {e.name}, which is not installed; "
                    "install the web extra: pip install 'seglens[web]'",
                    name=e.name,
                ) from e
            raise
        return getattr(module, name)
    raise AttributeError(f"module 'seglens.web' has no attribute {name!r}")
