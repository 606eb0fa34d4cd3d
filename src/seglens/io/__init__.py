"""Reading images safely and writing outputs atomically.

Every input goes through :func:`load_image`, which opens only a short list of common formats
(``ALLOWED_FORMATS``), refuses images above a pixel limit before decoding them, treats truncated
files as errors and always returns a fully loaded mode-"RGB" image (:func:`image_size` gives
its size from the header alone; ``check_size=`` lets a caller refuse shapes before decoding).
Truncation is detected with Pillow's default ``ImageFile.LOAD_TRUNCATED_IMAGES = False``; if the
host program sets it to True, Pillow silently pads truncated files and we cannot tell. Outputs
are written through :func:`atomic_open`, so an interrupted run never leaves a half-written file
behind.

Inputs may also be http(s) URLs (:func:`is_url`): :func:`fetch_url` downloads them with a size
cap (``DEFAULT_URL_MAX_BYTES``) and a timeout that bounds each socket operation and the whole
download (``DEFAULT_URL_TIMEOUT``), and :func:`load_image` decodes the bytes exactly like a
file's (same allowlist and limits; the server's Content-Type is not trusted). Other schemes
(file:, ftp:, data:) are refused. :func:`find_images` lists URLs without touching the network.

The names above are re-exported from the modules that own them (each imports only those listed
after it, so there are no cycles):

- :mod:`seglens.io.write`: ``atomic_open`` and the mask, image, JSON and CSV writers.
- :mod:`seglens.io.discover`: ``find_images`` and ``InputImage``.
- :mod:`seglens.io.decode`: ``load_image``, ``image_size``, ``to_rgb`` (allowlist, EXIF).
- :mod:`seglens.io.fetch`: ``is_url``, ``fetch_url`` (deadlines, redirects, names from URLs).
- :mod:`seglens.io.errors`: ``ImageLoadError`` and the shared constants; imports nothing from seglens.

To replace a function for a test, patch it in the module that owns it (e.g.
``seglens.io.decode._png_info``): the re-exports here are plain references.
"""

from __future__ import annotations

from .decode import image_size, load_image, to_rgb
from .discover import InputImage, find_images
from .errors import (
    ALLOWED_FORMATS,
    DEFAULT_MAX_PIXELS,
    DEFAULT_URL_MAX_BYTES,
    DEFAULT_URL_TIMEOUT,
    IMAGE_EXTENSIONS,
    ImageLoadError,
)
from .fetch import fetch_url, is_url
from .write import atomic_open, bundled_examples, mask_image, save_image, save_mask_png, write_csv, write_json

__all__ = [
    "mask_image",
    "bundled_examples",
    "ALLOWED_FORMATS",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_URL_MAX_BYTES",
    "DEFAULT_URL_TIMEOUT",
    "IMAGE_EXTENSIONS",
    "ImageLoadError",
    "InputImage",
    "atomic_open",
    "fetch_url",
    "find_images",
    "image_size",
    "is_url",
    "load_image",
    "save_image",
    "save_mask_png",
    "to_rgb",
    "write_csv",
    "write_json",
]
