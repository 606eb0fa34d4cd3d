"""Writing outputs atomically: :func:`atomic_open` and the mask, image, JSON and CSV writers.

Outputs are written through :func:`atomic_open`, so an interrupted run never leaves a
half-written file behind.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import json
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image

from .decode import to_rgb
from .errors import IMAGE_EXTENSIONS, StrPath

__all__ = ["atomic_open", "bundled_examples", "mask_image", "save_image", "save_mask_png", "write_csv", "write_json"]


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
    folder = Path(__file__).resolve().parent.parent / "examples"  # seglens/examples
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
