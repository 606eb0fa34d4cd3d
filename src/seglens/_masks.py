"""Reading a dataset's files: images (through seglens.io, orientation undone where a
reference needs the stored pixels), masks as class indices with a one-line reason when they are
not, header sizes, files matched by name; :class:`DatasetError`. A leaf for :mod:`seglens.datasets`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .io import ALLOWED_FORMATS, ImageLoadError, load_image

__all__ = ["DatasetError"]

_INDEX_MODES = ("P", "L", "1", "I;16", "I;16B", "I;16L", "I;16N", "I")  # pixel values are indices
_ORIENTATION = 0x0112  # EXIF tag
# Inverse of what ImageOps.exif_transpose (inside load_image) applies for each orientation.
_UNDO_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


@dataclass(frozen=True)
class _Item:
    """One sample's files: the image, and its mask (None where labels live elsewhere: coco-voc)."""

    name: str
    image: Path
    mask: Path | None


class DatasetError(Exception):
    """A dataset that cannot be opened, or an item that cannot be read; the message is one line
    naming the file or folder and what was expected there."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


def _load(path: Path) -> Image.Image:
    try:
        return load_image(path)
    except ImageLoadError as e:
        raise DatasetError(str(e)) from None


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(_ORIENTATION, 1))
    except Exception:  # unreadable EXIF: load_image keeps the stored pixels too
        return 1


def _header_size(path: Path, *, oriented: bool) -> tuple[int, int]:
    """(width, height) from the header, without decoding pixels; after EXIF rotation if ``oriented``."""
    try:
        with Image.open(path, formats=ALLOWED_FORMATS) as im:
            # Pillow's PNG getexif() decodes the whole file to look for a late eXIf chunk; an
            # early one is already in info, and a late one is rare enough to leave to dataset[i].
            header_exif = im.format != "PNG" or "exif" in im.info
            (w, h), turned = im.size, oriented and header_exif and _orientation(im) in (5, 6, 7, 8)
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file (check the path)") from None
    except Image.UnidentifiedImageError:
        raise DatasetError(f"{path}: not an image or not a supported format ({', '.join(ALLOWED_FORMATS)})") from None
    except Exception as e:
        raise DatasetError(f"{path}: cannot read image header ({e})") from None
    return (h, w) if turned else (w, h)


class _MaskProblem(Exception):
    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind, self.detail = kind, detail


_AS_INDICES = "save masks as 8-bit palette (P) or grayscale (L) PNGs of class indices"


_COLOURS_HINT = ", or give the colours in --classes (name R,G,B per line)"  # folder datasets' rgb_mask fix


def _mask_values(path: Path, *, rgb: bool = False, hint: str = "") -> np.ndarray:
    """The mask's pixel values as stored (palette indices are NOT turned into colours): (H, W);
    with ``rgb`` (the classes file gives colours), an RGB(A) mask is read as (H, W, 3) colours.
    ``hint``: appended to the rgb_mask advice for colour masks (e.g. ``_COLOURS_HINT``)."""
    try:
        with Image.open(path, formats=("PNG",)) as im:
            if rgb and im.mode in ("RGB", "RGBA"):
                return np.asarray(im.convert("RGB"))
            if im.mode in ("RGB", "RGBA"):
                pixels = np.asarray(im)[..., :3]
                gray = bool((pixels == pixels[..., :1]).all())
                raise _MaskProblem(
                    "rgb_mask",
                    f"mask is an {im.mode} colour image, not class indices; "
                    + (
                        "its channels are equal, so save it as grayscale (mode L)"
                        if gray
                        else "map each colour to its class index with the dataset's palette "
                        "(e.g. seglens.visualize.voc_palette()) and " + _AS_INDICES + hint
                    ),
                )
            if im.mode not in _INDEX_MODES:
                raise _MaskProblem("unreadable", f"unsupported mask mode {im.mode!r}; {_AS_INDICES}")
            values = np.array(im)
    except FileNotFoundError:
        raise _MaskProblem("missing_mask", "no such file (the image's mask is missing)") from None
    except Image.UnidentifiedImageError:
        raise _MaskProblem("unreadable", f"not a PNG file; {_AS_INDICES}") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise _MaskProblem("unreadable", f"cannot decode the mask ({e}); re-export it") from None
    return values.astype(np.uint8) if values.dtype == bool else values


def _mask_or_error(path: Path | None, name: str, *, rgb: bool = False, hint: str = "") -> np.ndarray:
    if path is None:
        raise DatasetError(f"{name}: no mask")
    try:
        return _mask_values(path, rgb=rgb, hint=hint)
    except _MaskProblem as p:
        raise DatasetError(f"{path}: {p.detail}") from None


def _size_text(image: Path, image_size: tuple[int, int], mask_shape: tuple[int, ...]) -> str:
    return f"mask is {mask_shape[1]}x{mask_shape[0]} but image {image.name} is {image_size[0]}x{image_size[1]} (WxH)"


def _files_by_stem(folder: Path, suffixes: frozenset[str]) -> dict[str, Path]:
    """Files under ``folder`` with these suffixes by relative path without suffix ("a/b"); hidden ones skipped."""
    found: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.suffix.lower() in suffixes and path.is_file() and not any(p.startswith(".") for p in rel.parts):
            stem = rel.with_suffix("").as_posix()
            if stem in found:
                raise DatasetError(
                    f"{path}: same name as {found[stem]}; files are matched by name without "
                    "extension, so rename or remove one"
                )
            found[stem] = path
    return found
