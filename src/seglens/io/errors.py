"""Types and constants shared by the ``seglens.io`` modules: a leaf that imports nothing from seglens.

:class:`ImageLoadError` lives here so that every other module (decoding, downloading, finding
inputs, writing) can raise it without importing each other.
"""

from __future__ import annotations

import os
from typing import IO, Any, Union

from PIL import features

__all__ = [
    "ALLOWED_FORMATS",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_URL_MAX_BYTES",
    "DEFAULT_URL_TIMEOUT",
    "IMAGE_EXTENSIONS",
    "ImageLoadError",
]

StrPath = Union[str, "os.PathLike[str]"]
ImageSource = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, IO[bytes]]


def _have_avif() -> bool:
    try:
        return features.check_module("avif")
    except ValueError:  # Pillow < 11.2 does not know AVIF at all
        return False


_HAVE_AVIF = _have_avif()
ALLOWED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF") + (("AVIF",) if _HAVE_AVIF else ())
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
    | ({".avif"} if _HAVE_AVIF else set())
)
# 100 megapixels (e.g. 12000 x 8000) is ~300 MB as RGB; the CLI exposes it as --max-pixels.
DEFAULT_MAX_PIXELS = 100_000_000
# 50 MB is several times the largest photos phones and cameras produce; the CLI can raise it.
DEFAULT_URL_MAX_BYTES = 50 * 2**20
# Seconds, for each socket operation and, as a hard deadline, for the whole download.
DEFAULT_URL_TIMEOUT = 30.0


class ImageLoadError(Exception):
    """An input that could not be read as an image.

    Attributes:
        path: the file or URL (or ``"<bytes>"``, ``"<file object>"``, ``"<image>"``).
        reason: one line saying what is wrong and, where useful, how to fix it.
        kind: ``"too_large"`` (pixel limit, decompression bomb, download size limit),
            ``"unsupported"`` (not an image, a format outside the allowlist, a URL scheme other
            than http(s)), ``"bad_shape"`` (refused by :func:`load_image`'s ``check_size``, e.g.
            an aspect ratio the model cannot take; decided from the header, nothing decoded;
            the ``ValueError`` it raised is ``__cause__``, so an ``ImageShapeError``'s ``reason``
            and ``cli_hint`` stay apart) or ``"unreadable"`` (everything else: empty, truncated,
            corrupt, missing, network errors); lets callers such as the web API pick a status.
    """

    def __init__(self, path: str, reason: str, kind: str = "unreadable") -> None:
        self.path = path
        self.reason = " ".join(reason.split())  # always one line
        self.kind = kind
        super().__init__(f"{path}: {self.reason}")

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across worker processes
        return (type(self), (self.path, self.reason, self.kind))
