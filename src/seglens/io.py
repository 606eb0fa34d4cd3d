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
"""

from __future__ import annotations

import contextlib
import csv
import functools
import glob
import http.client
import io
import json
import os
import re
import socket
import ssl
import tempfile
import threading
import unicodedata
import urllib.error
import urllib.parse
import urllib.request  # downloads use the standard library only: no new dependency
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Union

import numpy as np
from PIL import ExifTags, Image, ImageOps, PngImagePlugin, features

__all__ = [
    "mask_image",
    "bundled_examples",
    "ALLOWED_FORMATS", "DEFAULT_MAX_PIXELS", "DEFAULT_URL_MAX_BYTES", "DEFAULT_URL_TIMEOUT",
    "IMAGE_EXTENSIONS", "ImageLoadError", "InputImage",
    "atomic_open", "fetch_url", "find_images", "image_size", "is_url", "load_image", "save_image",
    "save_mask_png", "to_rgb", "write_csv", "write_json",
]

StrPath = Union[str, "os.PathLike[str]"]
ImageSource = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, IO[bytes]]


def _have_avif() -> bool:
    try:
        return features.check_module("avif")
    except ValueError:  # Pillow < 11.2 does not know AVIF at all
        return False


_HAVE_AVIF = _have_avif()
ALLOWED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF") + (
    ("AVIF",) if _HAVE_AVIF else ()
)
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

_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")
_TRUNCATED = "truncated or incomplete file (re-download or re-export it)"


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


def load_image(
    source: ImageSource,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    url_timeout: float = DEFAULT_URL_TIMEOUT,
    url_max_bytes: int = DEFAULT_URL_MAX_BYTES,
    check_size: Callable[[int, int], None] | None = None,
) -> Image.Image:
    """Read one image: first frame, EXIF orientation applied, converted with :func:`to_rgb`.

    Args:
        source: a path, an http(s) URL string (downloaded with :func:`fetch_url`, then decoded
            like a file), the encoded bytes, or a binary file object (read from its start).
        max_pixels: refuse images with more pixels than this (checked from the header, before
            decoding); ``None`` for no limit of our own. Pillow's decompression-bomb guard
            (``Image.MAX_IMAGE_PIXELS``) stays on either way.
        url_timeout: seconds, for URLs only: see :func:`fetch_url`.
        url_max_bytes: download size limit, for URLs only: see :func:`fetch_url`.
        check_size: called as ``check_size(width, height)`` with the size from the header, EXIF
            orientation applied (what :func:`image_size` returns), after the pixel limit and
            before anything is decoded; a ``ValueError`` it raises (e.g. the Segmenter's
            :meth:`~seglens.inference.Segmenter.check_size` refusing an aspect ratio) becomes
            an ``ImageLoadError`` of kind ``"bad_shape"`` with the error's text as reason.

    Returns:
        A fully loaded mode-"RGB" image.

    Raises:
        ImageLoadError: for every input that cannot be read (missing, empty, unsupported format,
            truncated, corrupt, too large, refused by ``check_size``, download failed); its
            ``path`` is the file or URL.
    """
    return _read_source(source, max_pixels, url_timeout, url_max_bytes, check_size, decode=True)


def image_size(
    source: ImageSource,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    url_timeout: float = DEFAULT_URL_TIMEOUT,
    url_max_bytes: int = DEFAULT_URL_MAX_BYTES,
) -> tuple[int, int]:
    """The ``(width, height)`` :func:`load_image` would return, read from the header alone.

    EXIF orientation is applied as :func:`load_image` applies it (orientations 5-8 swap width
    and height; for PNG the metadata chunks after the image data count too, without decoding
    it). Same sources, allowlist, limits and errors as :func:`load_image`: empty files,
    non-images, formats outside ``ALLOWED_FORMATS``, images above ``max_pixels`` raise the same
    ``ImageLoadError``. Damage inside the pixel data (a truncated file) shows only when decoding,
    so such a file may have a size here and still fail in :func:`load_image`.
    """
    return _read_source(source, max_pixels, url_timeout, url_max_bytes, None, decode=False)


def _read_source(source: ImageSource, max_pixels: int | None, url_timeout: float, url_max_bytes: int, check_size, *, decode: bool):
    if max_pixels is not None and (type(max_pixels) is not int or max_pixels < 1):
        raise ValueError(f"max_pixels must be a positive int or None, got {max_pixels!r}")
    if isinstance(source, str) and is_url(source):
        _check_url_limits(url_max_bytes, url_timeout, prefix="url_")
        return _load_url(source, max_pixels=max_pixels, timeout=url_timeout, max_bytes=url_max_bytes, check_size=check_size, decode=decode)
    if isinstance(source, (str, os.PathLike)):
        label = os.fsdecode(source)
        try:
            fp = open(source, "rb")
        except FileNotFoundError:
            if _other_scheme(label):
                raise ImageLoadError(label, _OTHER_SCHEME, "unsupported") from None
            raise ImageLoadError(label, _os_reason(FileNotFoundError())) from None
        except OSError as e:
            raise ImageLoadError(label, _os_reason(e)) from None
        with fp:
            return _load(fp, label, max_pixels, check_size, decode=decode)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _load(io.BytesIO(source), "<bytes>", max_pixels, check_size, decode=decode)
    if hasattr(source, "read"):
        name = getattr(source, "name", None)
        return _load(source, name if isinstance(name, str) else "<file object>", max_pixels, check_size, decode=decode)
    kind = type(source).__name__
    what = "load_image" if decode else "image_size"
    raise TypeError(f"{what} expects a path, bytes or a binary file object, got {kind}")


def _os_reason(e: OSError) -> str:
    if isinstance(e, FileNotFoundError):
        return "no such file (check the path)"
    if isinstance(e, IsADirectoryError):
        return "is a folder, not an image file"
    if isinstance(e, PermissionError):
        return "permission denied (check the file's permissions)"
    return f"cannot read file ({e.strerror or e})"


def _load(fp: IO[bytes], label: str, max_pixels: int | None, check_size=None, *, decode: bool = True):
    """The decoded RGB image (``decode``), or its oriented ``(width, height)`` from the header."""
    try:
        fp.seek(0, os.SEEK_END)
        size = fp.tell()
        fp.seek(0)
    except (AttributeError, OSError):  # not seekable: Pillow would read it all anyway
        try:
            fp = io.BytesIO(fp.read())
        except OSError as e:
            raise ImageLoadError(label, _os_reason(e)) from None
        size = len(fp.getvalue())
    if size == 0:
        raise ImageLoadError(label, "empty file (0 bytes)")
    with warnings.catch_warnings():
        # Our own max_pixels limit applies; Pillow's DecompressionBombError stays on.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(fp, formats=ALLOWED_FORMATS) as im:
                im.seek(0)  # multi-frame files: the first frame
                _check_pixels(im.size, max_pixels, label)
                if check_size is not None or not decode:
                    oriented = _oriented_size(im, fp)
                    if not decode:
                        return oriented
                    try:
                        check_size(*oriented)
                    except ValueError as e:  # e.g. seglens.inference.ImageShapeError, kept as __cause__
                        raise ImageLoadError(label, str(e), "bad_shape") from e
                    except Exception as e:  # a failing check_size is not the file's fault
                        raise _CheckSizeFailed from e
                im.load()
                return to_rgb(_exif_transpose(im))
        except _CheckSizeFailed as e:
            raise e.__cause__ from None
        except ImageLoadError as e:
            raise ImageLoadError(label, e.reason, e.kind) from e.__cause__
        except Image.UnidentifiedImageError:
            reason = f"not an image or not a supported format (supported: {', '.join(ALLOWED_FORMATS)})"
            raise ImageLoadError(label, reason, "unsupported") from None
        except Image.DecompressionBombError as e:
            raise ImageLoadError(label, f"decompression bomb refused by Pillow ({e})", "too_large") from None
        except Exception as e:  # anything a corrupt file makes a decoder raise
            raise ImageLoadError(label, _decode_reason(e)) from None


class _CheckSizeFailed(Exception):
    """Carries an exception of a ``check_size`` callback past the decoding errors' handlers."""


def _check_pixels(size: tuple[int, int], max_pixels: int | None, label: str) -> None:
    pixels = size[0] * size[1]
    if pixels == 0:
        raise ImageLoadError(label, f"image has no pixels ({size[0]}x{size[1]})")
    if max_pixels is not None and pixels > max_pixels:
        reason = f"image is {pixels} pixels, above the limit of {max_pixels} (raise --max-pixels to allow it)"
        raise ImageLoadError(label, reason, "too_large")


def _decode_reason(e: Exception) -> str:
    text = str(e) or type(e).__name__
    if isinstance(e, EOFError) or "truncated" in text.lower():
        return _TRUNCATED
    return f"could not decode image data ({text}); the file may be corrupt (re-download or re-export it)"


def _exif_transpose(im: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(im)  # a transposed copy, or a plain copy
    except Exception:  # unreadable EXIF: keep the pixels as stored, like most viewers
        return im.copy()


_SWAPS_SIDES = (5, 6, 7, 8)  # EXIF orientations that transpose or rotate by 90 degrees


def _oriented_size(im: Image.Image, fp: IO[bytes]) -> tuple[int, int]:
    """The size :func:`load_image` returns for ``im``, from the header alone: nothing decoded."""
    width, height = im.size
    tags = getattr(im, "tag_v2", None)
    if tags is not None:  # TIFF: recent Pillow reports (and loads) it already turned: start from the IFD's size
        width, height = tags.get(256, width), tags.get(257, height)  # ImageWidth, ImageLength
    return (height, width) if _orientation(im, fp) in _SWAPS_SIDES else (width, height)


def _orientation(im: Image.Image, fp: IO[bytes]) -> int:
    """The EXIF orientation (1..8) that loading ``im`` and ``ImageOps.exif_transpose`` apply.

    Pillow's own ``getexif`` reads it, on a 1x1 stand-in holding ``im``'s metadata, so ``im``
    itself is left untouched: a PNG's ``getexif`` would decode the whole image to reach chunks
    after the pixel data, which are read here by walking the chunks instead. TIFF keeps the tag
    in its first IFD (``tag_v2``), where Pillow's ``getexif`` reads it from.
    """
    try:
        tags = getattr(im, "tag_v2", None)
        if tags is not None and ExifTags.Base.Orientation in tags:
            value = tags[ExifTags.Base.Orientation]
        else:
            stand_in = Image.new("1", (1, 1))
            stand_in.info = _png_info(fp) if im.format == "PNG" else dict(im.info)
            value = stand_in.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # unreadable EXIF: load_image keeps the pixels as stored (_exif_transpose)
        return 1
    return value if type(value) is int else 1  # exif_transpose ignores values other than 2..8


def _png_info(fp: IO[bytes]) -> dict:
    """A PNG's ``info`` as Pillow holds it once the first frame is loaded (metadata chunks after
    the pixel data included, as ``PngImageFile.load_end`` reads them), read by Pillow's own
    chunk handlers while skipping the pixel data; ``fp`` is put back where it was."""
    start = fp.tell()
    png = PngImagePlugin.PngStream(fp)
    data_seen = animated = False
    try:
        fp.seek(8)  # after the signature
        while True:
            cid, pos, length = png.read()
            if cid == b"IEND" or (cid == b"fcTL" and data_seen and animated):
                break  # an APNG's next frame: load_end stops there too
            if cid in (b"IDAT", b"fdAT"):
                data_seen = True
                fp.seek(pos + length)
            else:
                try:
                    png.call(cid, pos, length)
                except (AttributeError, EOFError):  # a chunk Pillow does not know: skip it
                    fp.seek(pos + length)
                animated = animated or (cid == b"acTL" and bool(png.im_n_frames and png.im_n_frames > 1))
            fp.read(4)  # CRC
    except Exception:  # damaged or cut-off metadata: what was read counts, decoding reports the rest
        pass
    finally:
        fp.seek(start)
    return png.im_info


# ---------------------------------------------------------------- http(s) URLs

_OTHER_SCHEME = "unsupported URL scheme; use http(s) or a local path"
_OTHER_SCHEME_RE = re.compile(r"^(?:[a-z][a-z0-9+.-]+://|data:)", re.IGNORECASE)
_CHUNK = 64 * 1024
_MAX_NAME = 100  # characters of an output stem taken from a URL


def is_url(text: object) -> bool:
    """Whether ``text`` is a str starting with "http://" or "https://" (scheme in any case).

    Other schemes (file:, ftp:, data:, ...) are not URLs for seglens; nor are ``Path`` objects.
    """
    return isinstance(text, str) and text[:8].lower().startswith(("http://", "https://"))


def _other_scheme(text: str) -> bool:
    """A URL with a scheme we refuse ("ftp://...", "file://...", "data:...")."""
    return not is_url(text) and _OTHER_SCHEME_RE.match(text) is not None


def fetch_url(url: str, *, max_bytes: int = DEFAULT_URL_MAX_BYTES, timeout: float = DEFAULT_URL_TIMEOUT) -> bytes:
    """Download an http(s) URL with a GET request and return the body.

    Sends ``User-Agent: seglens/<version>`` and follows redirects, but only to http(s) URLs.
    Spaces and non-ASCII characters in the path and query are percent-encoded first.

    Args:
        url: an http:// or https:// URL (see :func:`is_url`).
        max_bytes: refuse a response whose Content-Length is above this before reading it, and
            stop reading one that sends more (no or a wrong Content-Length).
        timeout: seconds; limits each socket operation (connect, each read) and, as a hard
            deadline, the whole download, so a server trickling bytes cannot hang the caller.

    Raises:
        ImageLoadError: with ``path=url`` for every failure: HTTP error status, cannot connect,
            TLS error, timeout, connection cut off (kind "unreadable"), too large ("too_large"),
            redirect to another scheme ("unsupported").
        ValueError: ``url`` is not http(s), or bad ``max_bytes`` / ``timeout``.
    """
    if not is_url(url):
        raise ValueError(f"fetch_url expects an http:// or https:// URL, got {url!r}")
    _check_url_limits(max_bytes, timeout)
    return _fetch(url, max_bytes=max_bytes, timeout=timeout)[0]


def _check_url_limits(max_bytes: int, timeout: float, *, prefix: str = "") -> None:
    if type(max_bytes) is not int or max_bytes < 1:
        raise ValueError(f"{prefix}max_bytes must be a positive int, got {max_bytes!r}")
    if type(timeout) not in (int, float) or not 0 < timeout < float("inf"):
        raise ValueError(f"{prefix}timeout must be a positive number of seconds, got {timeout!r}")


def _load_url(url: str, *, max_pixels: int | None, timeout: float, max_bytes: int, check_size=None, decode: bool = True):
    data, content_type = _fetch(url, max_bytes=max_bytes, timeout=timeout)
    if not data:
        raise ImageLoadError(url, "the server sent an empty response (0 bytes); check the URL")
    try:
        return _load(io.BytesIO(data), url, max_pixels, check_size, decode=decode)  # the bytes decide, not the Content-Type
    except ImageLoadError as e:
        if e.kind != "unsupported" or content_type is None or content_type.startswith("image/"):
            raise
        page = " (a web page?)" if content_type in ("text/html", "application/xhtml+xml") else ""
        reason = f"not an image: the server sent {content_type}{page}; link the image file itself"
        raise ImageLoadError(url, reason, "unsupported") from None


def _fetch(url: str, *, max_bytes: int, timeout: float) -> tuple[bytes, str | None]:
    """The body and the Content-Type (lowercase "type/subtype", None if the server sent none)."""
    deadline = _Deadline(timeout)
    opener = urllib.request.build_opener(_HTTPHandler(deadline), _HTTPSHandler(deadline), _RedirectHandler())
    started = False  # whether the response headers arrived
    try:
        request = urllib.request.Request(_request_url(url), headers={"User-Agent": _user_agent()})
        with opener.open(request, timeout=timeout) as response:
            started = True
            length = _content_length(response)
            if length is not None and length > max_bytes:
                raise _too_large(url, max_bytes)
            body = _read_body(response, url, max_bytes)
            if deadline.expired:  # the deadline shut the socket, which reads as the end of the body
                raise ImageLoadError(url, _timeout_reason(timeout, started=True))
            if length is not None and len(body) < length:
                raise ImageLoadError(url, f"connection closed after {len(body)} of {length} bytes; try again")
            headers = response.headers
            return body, headers.get_content_type() if "Content-Type" in headers else None
    except (OSError, http.client.HTTPException, ValueError, _RedirectRefused) as e:
        if isinstance(e, urllib.error.HTTPError):
            e.close()
        if deadline.expired or _is_timeout(e):  # after the deadline, whatever broke is a timeout
            raise ImageLoadError(url, _timeout_reason(timeout, started=started)) from None
        raise ImageLoadError(url, *_network_reason(e)) from None
    finally:
        deadline.cancel()


def _user_agent() -> str:
    # imported here, not at the top, so io.py never depends on the package's import order
    from . import __version__

    return f"seglens/{__version__}"


def _request_url(url: str) -> str:
    """Percent-encode what a browser would (spaces, non-ASCII) in the path and query; drop the fragment."""
    parts = urllib.parse.urlsplit(url)
    safe = "/%:@!$&'()*+,;=~"
    path = urllib.parse.quote(parts.path, safe=safe)
    query = urllib.parse.quote(parts.query, safe=safe + "?")
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, query, ""))


def _content_length(response: http.client.HTTPResponse) -> int | None:
    if "chunked" in (response.headers.get("Transfer-Encoding") or "").lower():
        return None  # chunked bodies have no length; a Content-Length beside it is ignored
    value = (response.headers.get("Content-Length") or "").strip()
    return int(value) if value.isascii() and value.isdigit() else None


def _read_body(response: http.client.HTTPResponse, url: str, max_bytes: int) -> bytes:
    body = bytearray()
    while chunk := response.read1(_CHUNK):  # one recv at a time: stops soon after the limit
        body += chunk
        if len(body) > max_bytes:
            raise _too_large(url, max_bytes)
    return bytes(body)


def _too_large(url: str, max_bytes: int) -> ImageLoadError:
    return ImageLoadError(url, f"larger than {_size(max_bytes)}; download it yourself or raise the limit (--url-max-mb)", "too_large")


def _size(n: int) -> str:
    for unit, scale in (("MB", 2**20), ("KB", 2**10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} bytes"


def _is_timeout(e: BaseException) -> bool:
    return isinstance(e, TimeoutError) or (
        isinstance(e, urllib.error.URLError) and isinstance(e.reason, TimeoutError)
    )


def _timeout_reason(timeout: float, *, started: bool) -> str:
    if started:
        return f"download not finished within {timeout:g} s (server too slow); try again or download it yourself"
    return f"no response within {timeout:g} s; check the URL or try again"


def _network_reason(e: BaseException) -> tuple[str, str]:
    """(reason, kind) for an exception raised while downloading, other than a timeout."""
    if isinstance(e, _RedirectRefused):
        return f"redirected to {e.target}, which is not http(s); link the image file itself", "unsupported"
    if isinstance(e, urllib.error.HTTPError):
        return _http_reason(e.code, e.reason), "unreadable"
    if isinstance(e, urllib.error.URLError):
        if not isinstance(e.reason, BaseException):
            return f"cannot download ({e.reason}); check the URL", "unreadable"
        e = e.reason
    if isinstance(e, ssl.SSLCertVerificationError):
        reason = f"TLS certificate not accepted ({e.verify_message}); check the URL or the system's CA certificates"
        return reason, "unreadable"
    if isinstance(e, ssl.SSLError):
        return f"TLS error ({e.reason or e}); check the URL (https:// for a plain http server?)", "unreadable"
    if isinstance(e, socket.gaierror):
        return f"cannot connect: host not found ({e.strerror or e}); check the URL and the network", "unreadable"
    if isinstance(e, ConnectionRefusedError):
        return "cannot connect: connection refused; check the URL (host and port)", "unreadable"
    if isinstance(e, (ConnectionError, http.client.HTTPException)):
        return f"connection lost ({str(e) or type(e).__name__}); try again", "unreadable"
    if isinstance(e, ValueError):
        return f"invalid URL ({e}); check it", "unreadable"
    return f"cannot connect: {getattr(e, 'strerror', None) or e}", "unreadable"


def _http_reason(code: int, phrase: str) -> str:
    if 300 <= code < 400 or not phrase:  # for 3xx urllib puts its own text in the phrase
        with contextlib.suppress(ValueError):
            phrase = http.HTTPStatus(code).phrase
    status = f"HTTP {code} {phrase}".strip()
    if 300 <= code < 400:  # urllib gave up: a redirect loop, or no Location header
        return f"{status}: too many redirects or no target; open the URL in a browser and use the final address"
    if code in (401, 403):
        return f"{status}; the image is not public (download it yourself)"
    if code >= 500:
        return f"{status}; the server failed, try again later"
    return f"{status}; check the URL"


class _RedirectRefused(Exception):
    def __init__(self, target: str) -> None:
        super().__init__(target)
        self.target = target


class _RedirectHandler(urllib.request.HTTPRedirectHandler):
    """urllib's redirects, but only to http(s): urllib itself would also follow ftp://."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        if not is_url(newurl):
            fp.close()
            raise _RedirectRefused(newurl)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class _Deadline:
    """Shuts down every socket of one download once ``seconds`` have passed.

    Socket timeouts bound each operation only; a server sending one byte every few seconds
    would never trip them. Shutting the socket down wakes the reading thread at once.
    """

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            expired = self.expired
        if expired:
            _shutdown(sock)

    def cancel(self) -> None:
        self._timer.cancel()

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shutdown(sock)


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the plain socket's, also for TLS sockets


class _WatchedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, *args: Any, deadline: _Deadline, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline = deadline

    def connect(self) -> None:
        super().connect()
        self._deadline.watch(self.sock)


class _WatchedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, *args: Any, deadline: _Deadline, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline = deadline

    def connect(self) -> None:
        super().connect()
        self._deadline.watch(self.sock)


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self._deadline = deadline

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(functools.partial(_WatchedHTTPConnection, deadline=self._deadline), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self._deadline = deadline

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        connection = functools.partial(_WatchedHTTPSConnection, deadline=self._deadline)
        return self.do_open(connection, req, context=_ssl_context())


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    return ssl.create_default_context()  # verifies certificates and host names; loading CAs takes a while


def _url_key(url: str) -> str:
    """What makes two URLs the same download: scheme and host in any case, fragment ignored."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return url
    return urllib.parse.urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path or "/", parts.query, ""))


def _url_name(url: str) -> tuple[str, str]:
    """``(stem, suffix)`` for a URL: its last path segment, percent-decoded, else its host.

    "https://example.com/img/cat.jpg?x=1" -> ("cat", ".jpg"); "https://example.com/" ->
    ("example.com", "").
    """
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        parts = None
    segment = urllib.parse.unquote(parts.path.rsplit("/", 1)[-1]) if parts else ""
    stem, dot, extension = segment.rpartition(".")
    if dot and stem and re.fullmatch(r"[A-Za-z0-9]{1,8}", extension):
        name, suffix = _safe_name(stem), "." + extension.lower()
    else:
        name, suffix = _safe_name(segment), ""
    if not name:
        name, suffix = _safe_name(parts.hostname or "") if parts else "", ""
    return name or "url", suffix


def _safe_name(text: str) -> str:
    """A file-name stem: no path separators, control or Windows-reserved characters, no "..", <= 100 characters."""
    text = "".join("_" if c in '/\\:*?"<>|' or unicodedata.category(c)[0] == "C" else c for c in text)
    text = re.sub(r"\.{2,}", ".", text).strip(" .")
    return text[:_MAX_NAME].rstrip(" .")


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to a loaded mode-"RGB" image, deliberately per mode.

    - "RGB": returned as is. "1", "L", "P", "YCbCr", "LAB", "HSV", ...: Pillow's ``convert``.
    - Alpha ("LA", "RGBA", "PA", "La", "RGBa") or a ``transparency`` entry in ``info``
      (P, L, RGB, 1): alpha-composited over a white background, rounded to nearest.
    - "CMYK": through the embedded ICC profile when there is one and LittleCMS accepts it,
      otherwise Pillow's plain formula.
    - 16-bit ("I;16", "I;16B", "I;16L", "I;16N"): value / 257, rounded, as gray.
    - "I" (32-bit int) and "F" (float): the actual min..max stretched to 0..255 as gray (a
      constant image gives 0; NaN and inf count as 0). For these and the 16-bit modes a
      ``transparency`` entry is ignored.

    Args:
        image: any Pillow image.

    Raises:
        ImageLoadError: if Pillow cannot convert this mode to RGB.
    """
    image.load()
    mode = image.mode
    if mode in _SIXTEEN_BIT:
        values = np.asarray(image).astype(np.uint32)
        return _gray((values + 128) // 257)  # round(v / 257); 257 is odd, so no ties
    if mode in ("I", "F"):
        values = np.asarray(image).astype(np.float64)
        values[~np.isfinite(values)] = 0
        lo, hi = (values.min(), values.max()) if values.size else (0.0, 0.0)
        scaled = np.rint((values - lo) / (hi - lo) * 255) if hi > lo else np.zeros_like(values)
        return _gray(scaled)
    if mode in ("La", "RGBa"):  # premultiplied: over white is colour + (255 - alpha)
        values = np.asarray(image).astype(np.int32)
        out = np.clip(values[..., :-1] + 255 - values[..., -1:], 0, 255)
        return Image.fromarray(np.broadcast_to(out, (*out.shape[:2], 3)).astype(np.uint8))
    if image.has_transparency_data:
        with contextlib.suppress(ValueError):
            return _over_white(image.convert("RGBA"))
    if mode == "RGB":
        return image
    if mode == "CMYK":
        return _cmyk_to_rgb(image)
    try:
        return image.convert("RGB")
    except (ValueError, OSError) as e:
        name = str(getattr(image, "filename", "") or "<image>")
        reason = f"cannot convert image mode {mode!r} to RGB ({e}); save it as 8-bit RGB"
        raise ImageLoadError(name, reason) from None


def _gray(values: np.ndarray) -> Image.Image:
    gray = values.astype(np.uint8)
    return Image.fromarray(np.stack([gray, gray, gray], axis=-1))


def _over_white(rgba: Image.Image) -> Image.Image:
    values = np.asarray(rgba).astype(np.uint32)
    color, alpha = values[..., :3], values[..., 3:]
    out = (color * alpha + 255 * (255 - alpha) + 127) // 255  # round(c*a/255 + 255*(1-a/255))
    return Image.fromarray(out.astype(np.uint8))


def _cmyk_to_rgb(image: Image.Image) -> Image.Image:
    icc = image.info.get("icc_profile")
    if icc:
        try:
            from PIL import ImageCms

            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            out = ImageCms.profileToProfile(image, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
            if out is not None and out.mode == "RGB":
                return out
        except Exception:  # no LittleCMS, or a broken / non-CMYK profile: plain formula below
            pass
    return image.convert("RGB")


@dataclass(frozen=True)
class InputImage:
    """One image found by :func:`find_images`.

    Attributes:
        path: the file, or an http(s) URL string (as given); pass it to :func:`load_image`.
        name: output stem, a POSIX relative path without extension (e.g. "a/b"), unique
            (case-insensitively) within one :func:`find_images` call.
    """

    path: Path | str
    name: str

    @property
    def is_url(self) -> bool:
        """Whether ``path`` is an http(s) URL rather than a file."""
        return is_url(self.path)

    @property
    def label(self) -> str:
        """The input as shown in messages and summaries: the URL, or ``str(path)``."""
        return str(self.path)


def find_images(
    inputs: Sequence[StrPath], *, suffixes: frozenset[str] = IMAGE_EXTENSIONS, exclude: Sequence[StrPath] = ()
) -> tuple[list[InputImage], list[tuple[str, str]]]:
    """Expand files, folders, glob patterns and URLs into a sorted, de-duplicated list of images.

    Folders are searched recursively for files with an ``IMAGE_EXTENSIONS`` suffix (any case),
    skipping names that start with "."; a folder file is named by its path relative to the
    folder ("photos/a/b.JPG" -> "a/b"). A file given directly is accepted whatever its
    extension and named by its stem, as are image files matched by a glob pattern (a string
    with ``*?[`` that is not an existing path; ``**`` recurses). Names that collide
    (case-insensitively) get their lowercase extension appended ("cat_jpg", "cat_png"); any
    still colliding get "-2", "-3", ... in sorted-path order.

    A str starting with http:// or https:// (:func:`is_url`) is an image URL: it is not
    checked here (no network access), its ``path`` is the URL string, and it is named by the
    last segment of its path, percent-decoded, without query and extension, made safe for file
    names and cut to 100 characters, else by its host ("https://example.com/img/cat.jpg?x=1" ->
    "cat", "https://example.com/" -> "example.com"). The same URL given twice (scheme and host
    in any case, fragment ignored) is listed once, as first spelled. Other schemes ("ftp://...",
    "file://...", "data:...") are problems, unless a file of that name exists.

    Args:
        inputs: file paths, folder paths, glob patterns and http(s) URLs.
        suffixes: what folders and glob patterns pick up (default ``IMAGE_EXTENSIONS``; the
            CLI adds video suffixes).
        exclude: folders that folder walks and glob patterns skip (the CLI's output folder, so a
            second run over "." does not segment the first run's outputs).

    Returns:
        ``(images, problems)``: the files sorted by path, each file once, then the URLs in the
        order given; names are made unique over both together. Problems are ``(input,
        reason)`` for inputs that are missing, match nothing, hold no images or have another
        URL scheme.
    """
    skip = {Path(e).resolve() for e in exclude}
    found: list[tuple[Path, str]] = []
    urls: dict[str, str] = {}  # _url_key -> the URL as first given; dicts keep input order
    problems: list[tuple[str, str]] = []
    for item in inputs:
        text = os.fsdecode(item)
        if is_url(text):
            urls.setdefault(_url_key(text), text)
            continue
        path = Path(text)
        if path.is_dir():
            files = _walk_images(path, problems, suffixes, skip)
            found += [(f, f.relative_to(path).with_suffix("").as_posix()) for f in files]
            if not files:
                problems.append((text, f"folder contains no images ({', '.join(sorted(suffixes))})"))
        elif path.is_file():
            found.append((path, path.stem))
        elif path.exists():
            problems.append((text, "not a regular file or folder"))
        elif _other_scheme(text):
            problems.append((text, _OTHER_SCHEME))
        elif any(c in text for c in "*?["):
            files = [Path(m) for m in sorted(glob.glob(text, recursive=True))]
            files = [f for f in files if f.suffix.lower() in suffixes and f.is_file() and not _under(f, skip)]
            found += [(f, f.stem) for f in files]
            if not files:
                problems.append((text, "pattern matched no image files"))
        else:
            problems.append((text, "no such file or folder"))
    seen: set[Path] = set()
    unique = []
    for path, name in found:  # the first mention of a file wins
        if (key := path.resolve()) not in seen:
            seen.add(key)
            unique.append((path, name))
    unique.sort(key=lambda item: item[0].as_posix())
    url_names = [_url_name(url) for url in urls.values()]
    names = _unique_names([(n, p.suffix) for p, n in unique] + url_names)
    sources: list[Path | str] = [p for p, _ in unique] + list(urls.values())
    return [InputImage(path=p, name=n) for p, n in zip(sources, names)], problems


def _under(path: Path, folders: set[Path]) -> bool:
    return bool(folders) and any(p in folders for p in path.resolve().parents)


def _walk_images(root: Path, problems: list[tuple[str, str]], suffixes: frozenset[str] = IMAGE_EXTENSIONS, skip: set[Path] = frozenset()) -> list[Path]:
    def on_error(e: OSError) -> None:
        problems.append((os.fsdecode(e.filename or root), f"cannot read folder ({e.strerror or e})"))

    files = []
    for folder, dirs, names in os.walk(root, onerror=on_error):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not (skip and Path(folder, d).resolve() in skip))
        for name in sorted(names):
            path = Path(folder, name)
            if not name.startswith(".") and path.suffix.lower() in suffixes and path.is_file():
                files.append(path)
    return files


def _unique_names(items: list[tuple[str, str]]) -> list[str]:
    """Unique names for ``(name, suffix)`` items: see :func:`find_images`."""
    safe = ["/".join(p if p not in ("", ".", "..") else "_" for p in n.split("/")) for n, _ in items]
    counts = Counter(name.casefold() for name in safe)
    names = [
        f"{name}_{suffix.lower()[1:]}" if counts[name.casefold()] > 1 and suffix else name
        for (_, suffix), name in zip(items, safe)
    ]
    taken: set[str] = set()
    result = []
    for name in names:  # items are in output order: sorted files, then URLs
        unique, k = name, 2
        while unique.casefold() in taken:
            unique, k = f"{name}-{k}", k + 1
        taken.add(unique.casefold())
        result.append(unique)
    return result


@functools.cache
def _new_file_mode() -> int:
    umask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_open(path: StrPath, mode: str = "wb", *, newline: str | None = None) -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path`` and move it onto ``path`` only on success.

    The temporary file (".{name}.tmp-XXXX" in the same folder) is removed if the block raises,
    leaving any previous ``path`` untouched. Parent folders are created. Text mode is UTF-8.

    Args:
        path: the file to write.
        mode: "wb" (default), "w" or "wt".
        newline: passed to ``open`` in text mode (use "" for the csv module).
    """
    if mode not in ("wb", "w", "wt"):
        raise ValueError(f"atomic_open only writes whole files: mode must be 'wb', 'w' or 'wt', got {mode!r}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8", newline=newline) as f:
            yield f
        os.chmod(tmp, _new_file_mode())  # mkstemp makes 0600 files
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _as_uint8(values: Any, what: str, shape: str) -> np.ndarray:
    array = np.asarray(values)
    if array.dtype == np.uint8:
        return array
    if array.dtype.kind not in "iu" or (array.size and (array.min() < 0 or array.max() > 255)):
        found = f"{array.min()}..{array.max()}" if array.size and array.dtype.kind in "iuf" else "-"
        raise ValueError(f"{what} must be a {shape} uint8 array (0..255), got {array.dtype} values {found}")
    return array.astype(np.uint8)


def mask_image(labels: np.ndarray, palette: np.ndarray) -> Image.Image:
    """Class indices as an indexed (mode "P") image carrying the palette.

    Args:
        labels: (H, W) uint8 class indices; they are the pixel values.
        palette: (N, 3) uint8 colours with N <= 256, padded with black to 256 entries.
    """
    labels = _as_uint8(labels, "labels", "(H, W)")
    palette = _as_uint8(palette, "palette", "(N<=256, 3)")
    if labels.ndim != 2:
        raise ValueError(f"labels must be a (H, W) array of class indices, got shape {labels.shape}")
    if palette.ndim != 2 or palette.shape[1] != 3 or palette.shape[0] > 256:
        raise ValueError(f"palette must be a (N<=256, 3) array of RGB colours, got shape {palette.shape}")
    full = np.zeros((256, 3), dtype=np.uint8)
    full[: len(palette)] = palette
    height, width = labels.shape
    mask = Image.frombytes("P", (width, height), np.ascontiguousarray(labels).tobytes())
    mask.putpalette(full.tobytes(), "RGB")
    return mask


def save_mask_png(path: StrPath, labels: np.ndarray, palette: np.ndarray) -> None:
    """Write class indices as an indexed (mode "P") PNG with the palette (:func:`mask_image`), atomically."""
    mask = mask_image(labels, palette)
    with atomic_open(path) as f:
        mask.save(f, format="PNG")


_SAVE_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP"}
_SAVE_MODES = {  # modes each format stores as they are; anything else goes through to_rgb
    "JPEG": ("L", "RGB"),
    "PNG": ("1", "L", "LA", "P", "RGB", "RGBA", "I;16"),
    "WEBP": ("RGB", "RGBA"),
}


def save_image(path: StrPath, image: Image.Image | np.ndarray, *, quality: int = 90) -> None:
    """Write an image atomically, in the format named by the suffix.

    Args:
        path: ".jpg"/".jpeg" (JPEG), ".png" or ".webp".
        image: a PIL image (modes the format cannot hold go through :func:`to_rgb`) or an
            (H, W, 3) uint8 array.
        quality: JPEG/WebP quality, 1..100; ignored for PNG.
    """
    fmt = _SAVE_FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        choices = ".jpg, .jpeg, .png or .webp"
        raise ValueError(f"cannot save {os.fsdecode(path)}: unsupported extension (use {choices})")
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be between 1 and 100, got {quality}")
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            found = f"shape {image.shape} dtype {image.dtype}"
            raise ValueError(f"image array must be (H, W, 3) uint8, got {found}")
        image = Image.fromarray(image)
    elif not isinstance(image, Image.Image):
        raise TypeError(f"image must be a PIL image or a numpy array, got {type(image).__name__}")
    if image.mode not in _SAVE_MODES[fmt]:
        image = to_rgb(image)
    options = {} if fmt == "PNG" else {"quality": quality}
    with atomic_open(path) as f:
        image.save(f, format=fmt, **options)


def write_json(path: StrPath, obj: Any) -> None:
    """Write ``obj`` as UTF-8 JSON (indent 2, trailing newline) atomically; NaN/inf are refused."""
    try:
        text = json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    except ValueError as e:
        raise ValueError(f"cannot write {os.fsdecode(path)}: {e} (use None instead of NaN/inf)") from None
    with atomic_open(path, "w") as f:
        f.write(text)


def write_csv(path: StrPath, rows: Sequence[Mapping[str, Any]], fieldnames: Sequence[str]) -> None:
    """Write ``rows`` as UTF-8 CSV with a header row, atomically.

    Args:
        path: the .csv file.
        rows: one mapping per row; missing keys are written empty, unknown keys raise ValueError.
        fieldnames: the columns, in order.
    """
    with atomic_open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(fieldnames))
        writer.writeheader()
        writer.writerows(rows)


def bundled_examples() -> list[Path]:
    """The example photographs shipped inside the package (public domain / CC0), sorted."""
    folder = Path(__file__).resolve().parent / "examples"
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
