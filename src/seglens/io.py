"""Reading images safely and writing outputs atomically.

Every input goes through :func:`load_image`, which opens only a short list of common formats
(``ALLOWED_FORMATS``), refuses images above a pixel limit before decoding them, treats truncated
files as errors and always returns a fully loaded mode-"RGB" image. Truncation is detected with
Pillow's default ``ImageFile.LOAD_TRUNCATED_IMAGES = False``; if the host program sets it to
True, Pillow silently pads truncated files and we cannot tell. Outputs are written through
:func:`atomic_open`, so an interrupted run never leaves a half-written file behind.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import glob
import io
import json
import os
import tempfile
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Union

import numpy as np
from PIL import Image, ImageOps, features

__all__ = [
    "mask_image",
    "bundled_examples",
    "ALLOWED_FORMATS", "DEFAULT_MAX_PIXELS", "IMAGE_EXTENSIONS", "ImageLoadError", "InputImage",
    "atomic_open", "find_images", "load_image", "save_image", "save_mask_png", "to_rgb",
    "write_csv", "write_json",
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

_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")
_TRUNCATED = "truncated or incomplete file (re-download or re-export it)"


class ImageLoadError(Exception):
    """An input that could not be read as an image.

    Attributes:
        path: the file (or ``"<bytes>"``, ``"<file object>"``, ``"<image>"``).
        reason: one line saying what is wrong and, where useful, how to fix it.
        kind: ``"too_large"`` (pixel limit, decompression bomb), ``"unsupported"`` (not an
            image, or a format outside the allowlist) or ``"unreadable"`` (everything else:
            empty, truncated, corrupt, missing); lets callers such as the web API pick a status.
    """

    def __init__(self, path: str, reason: str, kind: str = "unreadable") -> None:
        self.path = path
        self.reason = " ".join(reason.split())  # always one line
        self.kind = kind
        super().__init__(f"{path}: {self.reason}")

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across worker processes
        return (type(self), (self.path, self.reason, self.kind))


def load_image(source: ImageSource, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Read one image: first frame, EXIF orientation applied, converted with :func:`to_rgb`.

    Args:
        source: a path, the encoded bytes, or a binary file object (read from its start).
        max_pixels: refuse images with more pixels than this (checked from the header, before
            decoding); ``None`` for no limit of our own. Pillow's decompression-bomb guard
            (``Image.MAX_IMAGE_PIXELS``) stays on either way.

    Returns:
        A fully loaded mode-"RGB" image.

    Raises:
        ImageLoadError: for every file that cannot be read (missing, empty, unsupported format,
            truncated, corrupt, too large).
    """
    if max_pixels is not None and (type(max_pixels) is not int or max_pixels < 1):
        raise ValueError(f"max_pixels must be a positive int or None, got {max_pixels!r}")
    if isinstance(source, (str, os.PathLike)):
        label = os.fsdecode(source)
        try:
            fp = open(source, "rb")
        except OSError as e:
            raise ImageLoadError(label, _os_reason(e)) from None
        with fp:
            return _load(fp, label, max_pixels)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _load(io.BytesIO(source), "<bytes>", max_pixels)
    if hasattr(source, "read"):
        name = getattr(source, "name", None)
        return _load(source, name if isinstance(name, str) else "<file object>", max_pixels)
    kind = type(source).__name__
    raise TypeError(f"load_image expects a path, bytes or a binary file object, got {kind}")


def _os_reason(e: OSError) -> str:
    if isinstance(e, FileNotFoundError):
        return "no such file (check the path)"
    if isinstance(e, IsADirectoryError):
        return "is a folder, not an image file"
    if isinstance(e, PermissionError):
        return "permission denied (check the file's permissions)"
    return f"cannot read file ({e.strerror or e})"


def _load(fp: IO[bytes], label: str, max_pixels: int | None) -> Image.Image:
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
                im.load()
                return to_rgb(_exif_transpose(im))
        except ImageLoadError as e:
            raise ImageLoadError(label, e.reason, e.kind) from None
        except Image.UnidentifiedImageError:
            reason = f"not an image or not a supported format (supported: {', '.join(ALLOWED_FORMATS)})"
            raise ImageLoadError(label, reason, "unsupported") from None
        except Image.DecompressionBombError as e:
            raise ImageLoadError(label, f"decompression bomb refused by Pillow ({e})", "too_large") from None
        except Exception as e:  # anything a corrupt file makes a decoder raise
            raise ImageLoadError(label, _decode_reason(e)) from None


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
        path: the file.
        name: output stem, a POSIX relative path without extension (e.g. "a/b"), unique
            (case-insensitively) within one :func:`find_images` call.
    """

    path: Path
    name: str


def find_images(inputs: Sequence[StrPath]) -> tuple[list[InputImage], list[tuple[str, str]]]:
    """Expand files, folders and glob patterns into a sorted, de-duplicated list of images.

    Folders are searched recursively for files with an ``IMAGE_EXTENSIONS`` suffix (any case),
    skipping names that start with "."; a folder file is named by its path relative to the
    folder ("photos/a/b.JPG" -> "a/b"). A file given directly is accepted whatever its
    extension and named by its stem, as are image files matched by a glob pattern (a string
    with ``*?[`` that is not an existing path; ``**`` recurses). Names that collide
    (case-insensitively) get their lowercase extension appended ("cat_jpg", "cat_png"); any
    still colliding get "-2", "-3", ... in sorted-path order.

    Args:
        inputs: file paths, folder paths and glob patterns.

    Returns:
        ``(images, problems)``: images sorted by path, each file once; problems are
        ``(input, reason)`` for inputs that are missing, match nothing or hold no images.
    """
    found: list[tuple[Path, str]] = []
    problems: list[tuple[str, str]] = []
    for item in inputs:
        text = os.fsdecode(item)
        path = Path(text)
        if path.is_dir():
            files = _walk_images(path, problems)
            found += [(f, f.relative_to(path).with_suffix("").as_posix()) for f in files]
            if not files:
                problems.append((text, f"folder contains no images ({', '.join(sorted(IMAGE_EXTENSIONS))})"))
        elif path.is_file():
            found.append((path, path.stem))
        elif path.exists():
            problems.append((text, "not a regular file or folder"))
        elif any(c in text for c in "*?["):
            files = [Path(m) for m in sorted(glob.glob(text, recursive=True))]
            files = [f for f in files if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file()]
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
    names = _unique_names(unique)
    return [InputImage(path=p, name=n) for (p, _), n in zip(unique, names)], problems


def _walk_images(root: Path, problems: list[tuple[str, str]]) -> list[Path]:
    def on_error(e: OSError) -> None:
        problems.append((os.fsdecode(e.filename or root), f"cannot read folder ({e.strerror or e})"))

    files = []
    for folder, dirs, names in os.walk(root, onerror=on_error):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            path = Path(folder, name)
            if not name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file():
                files.append(path)
    return files


def _unique_names(items: list[tuple[Path, str]]) -> list[str]:
    safe = ["/".join(p if p not in ("", ".", "..") else "_" for p in n.split("/")) for _, n in items]
    counts = Counter(name.casefold() for name in safe)
    names = [
        f"{name}_{path.suffix.lower()[1:]}" if counts[name.casefold()] > 1 and path.suffix else name
        for (path, _), name in zip(items, safe)
    ]
    taken: set[str] = set()
    result = []
    for name in names:  # items are in sorted-path order
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
