"""Decoding images: :func:`load_image`, :func:`image_size` and :func:`to_rgb`.

Every input goes through :func:`load_image`, which opens only a short list of common formats
(``ALLOWED_FORMATS``), refuses images above a pixel limit before decoding them, treats truncated
files as errors and always returns a fully loaded mode-"RGB" image (:func:`image_size` gives
its size from the header alone; ``check_size=`` lets a caller refuse shapes before decoding).
Truncation is detected with Pillow's default ``ImageFile.LOAD_TRUNCATED_IMAGES = False``; if the
host program sets it to True, Pillow silently pads truncated files and we cannot tell.

A URL source is downloaded with :mod:`seglens.io.fetch` and its bytes decoded exactly like a
file's (same allowlist and limits; the server's Content-Type is not trusted).
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from collections.abc import Callable
from typing import IO

import numpy as np
from PIL import ExifTags, Image, ImageOps, PngImagePlugin

from .errors import (
    ALLOWED_FORMATS,
    DEFAULT_MAX_PIXELS,
    DEFAULT_URL_MAX_BYTES,
    DEFAULT_URL_TIMEOUT,
    ImageLoadError,
    ImageSource,
)
from .fetch import _OTHER_SCHEME, _check_url_limits, _fetch, _other_scheme, is_url

__all__ = ["image_size", "load_image", "to_rgb"]

_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")
_TRUNCATED = "truncated or incomplete file (re-download or re-export it)"


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


def _read_source(
    source: ImageSource, max_pixels: int | None, url_timeout: float, url_max_bytes: int, check_size, *, decode: bool
):
    if max_pixels is not None and (type(max_pixels) is not int or max_pixels < 1):
        raise ValueError(f"max_pixels must be a positive int or None, got {max_pixels!r}")
    if isinstance(source, str) and is_url(source):
        _check_url_limits(url_max_bytes, url_timeout, prefix="url_")
        return _load_url(
            source,
            max_pixels=max_pixels,
            timeout=url_timeout,
            max_bytes=url_max_bytes,
            check_size=check_size,
            decode=decode,
        )
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


def _load_url(
    url: str, *, max_pixels: int | None, timeout: float, max_bytes: int, check_size=None, decode: bool = True
):
    data, content_type = _fetch(url, max_bytes=max_bytes, timeout=timeout)
    if not data:
        raise ImageLoadError(url, "the server sent an empty response (0 bytes); check the URL")
    try:
        return _load(
            io.BytesIO(data), url, max_pixels, check_size, decode=decode
        )  # the bytes decide, not the Content-Type
    except ImageLoadError as e:
        if e.kind != "unsupported" or content_type is None or content_type.startswith("image/"):
            raise
        page = " (a web page?)" if content_type in ("text/html", "application/xhtml+xml") else ""
        reason = f"not an image: the server sent {content_type}{page}; link the image file itself"
        raise ImageLoadError(url, reason, "unsupported") from None


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
