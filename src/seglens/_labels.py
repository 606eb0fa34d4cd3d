"""What a dataset's stored mask values mean: class lists read from a classes file (names, optional
colours), ``mask_values`` (the stored value of each class) and :class:`_LabelRule`, which turns
stored values (or RGB colours) into target values. numpy only; a leaf for :mod:`seglens.datasets`
and :mod:`seglens._survey`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._masks import DatasetError
from .palettes import palette_for

__all__ = ["ClassList", "parse_mask_values", "read_classes"]

# A classes file line's last token is a colour when it looks like one of these; a token that looks
# like R,G,B but is out of range is an error, not part of the name.
_RGB_TOKEN = re.compile(r"^-?\d+,-?\d+,-?\d+$")
_HEX_TOKEN = re.compile(r"^#[0-9a-fA-F]{6}$")


@dataclass(frozen=True)
class ClassList:
    """A classes file: one class per line, line order = class index.

    Attributes:
        names: the class names (a line's text without its colour, inner spaces kept).
        colors: (R, G, B) per class when every line gives one, else None.
        path: the file.
    """

    names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...] | None
    path: str

    def palette(self) -> np.ndarray | None:
        """(256, 3) uint8: the file's colours at their class index, the other rows from
        :func:`seglens.palettes.palette_for` (distinct colours); None without colours."""
        if self.colors is None:
            return None
        palette = palette_for(self.names)
        palette[: len(self.colors)] = np.asarray(self.colors, dtype=np.uint8)
        return palette


def read_classes(path: str | os.PathLike) -> ClassList:
    """Read a classes file: a class name per line, optionally followed by its colour.

    ``road 128,64,128`` or ``road #804080``; names may hold spaces (``traffic light 250,170,30``):
    the colour is recognised only as the last whitespace-separated token, when it is R,G,B
    (integers 0..255) or #RRGGBB. Blank lines and lines starting with ``#`` are skipped. Either
    every class has a colour or none does.

    Raises:
        DatasetError: unreadable file, no names, a name given twice, a colour out of range or
            missing on some lines (naming ``file:line``).
    """
    where = os.fsdecode(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{where}: cannot read the classes file ({e})") from None
    names: list[str] = []
    colors: list[tuple[int, int, int] | None] = []
    lines: list[int] = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, color = _name_and_color(line, f"{where}:{number}")
        if name in names:  # results are keyed by class name
            first = lines[names.index(name)]
            raise DatasetError(f"{where}:{number}: class {name!r} is already on line {first}; names must be distinct")
        names.append(name)
        colors.append(color)
        lines.append(number)
    if not names:
        raise DatasetError(f"{where}: no class names (expected one per line)")
    if all(c is None for c in colors):
        return ClassList(tuple(names), None, where)
    for name, color, number in zip(names, colors, lines):
        if color is None:
            raise DatasetError(
                f"{where}:{number}: class {name!r} has no colour, but other lines give one; "
                "give every class a colour (name R,G,B or name #RRGGBB) or none"
            )
    return ClassList(tuple(names), tuple(c for c in colors if c is not None), where)


def _name_and_color(line: str, where: str) -> tuple[str, tuple[int, int, int] | None]:
    parts = line.rsplit(None, 1)
    token = parts[-1]
    if _HEX_TOKEN.match(token):
        color = (int(token[1:3], 16), int(token[3:5], 16), int(token[5:7], 16))
    elif _RGB_TOKEN.match(token):
        r, g, b = (int(v) for v in token.split(","))
        if not all(0 <= v <= 255 for v in (r, g, b)):
            raise DatasetError(f"{where}: colour {token} is out of range: R,G,B must be integers 0..255")
        color = (r, g, b)
    else:
        return line, None
    if len(parts) == 1:
        raise DatasetError(f"{where}: colour {token} without a class name; write the name first (road 128,64,128)")
    return parts[0], color


def parse_mask_values(text: str) -> tuple[int, ...]:
    """``"0,255"`` -> ``(0, 255)``: the stored mask value of each class, in class order.

    Raises:
        ValueError: not distinct integers 0..255 separated by commas (one line, quoting the text).
    """
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"{text!r}: mask values are integers 0..255 separated by commas, e.g. 0,255") from None
    try:
        return _check_mask_values(values)
    except DatasetError as e:
        raise ValueError(f"{text!r}: {e}") from None


def _check_mask_values(values: Sequence[int] | str) -> tuple[int, ...]:
    """``mask_values`` as open_dataset takes it (text or integers), checked."""
    if isinstance(values, str):
        try:
            return parse_mask_values(values)
        except ValueError as e:
            raise DatasetError(f"mask_values={e}") from None
    values = tuple(values)
    if not values or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in values):
        raise DatasetError(f"mask_values must be integers 0..255, one per class, got {values!r}")
    values = tuple(int(v) for v in values)
    if not all(0 <= v <= 255 for v in values) or len(set(values)) != len(values):
        raise DatasetError(f"mask_values must be distinct integers 0..255, one per class, got {values!r}")
    return values


def _rgb_keys(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) colours -> (...) int64 keys R << 16 | G << 8 | B."""
    rgb = np.asarray(rgb, dtype=np.int64)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def _color_text(key: int) -> str:
    return f"{key >> 16},{(key >> 8) & 255},{key & 255}"


@dataclass(frozen=True)
class _LabelRule:
    """How a dataset's stored mask values become target values (class index, or ``ignore``).

    Index masks (modes P, L, I): ``values`` given: ``values[k]`` becomes class k, every other
    value ``ignore``; ``ade20k``: 0 becomes 255 and v becomes v - 1; else the stored value is the
    target. RGB masks (read only when ``colors`` is given): ``colors[k]`` becomes class k (a colour
    given twice: the first class), every other colour ``ignore``.
    """

    ignore: int = 255
    values: tuple[int, ...] | None = None
    colors: tuple[tuple[int, int, int], ...] | None = None
    ade20k: bool = False

    def classify(self, stored: np.ndarray, *, rgb: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Target value of each stored value (``rgb``: 24-bit colour keys; any shape), and whether
        the rule does not list it (then its target is ``ignore``): int64 and bool, stored's shape."""
        stored = np.asarray(stored, dtype=np.int64)
        listed = self.colors if rgb else self.values
        if listed is not None:
            keys = _rgb_keys(np.asarray(listed)) if rgb else np.asarray(listed, dtype=np.int64)
            order = np.argsort(keys, kind="stable")  # stable: a repeated colour maps to its first class
            pos = np.minimum(np.searchsorted(keys[order], stored), len(keys) - 1)
            hit = keys[order][pos] == stored
            unlisted = ~hit if rgb else ~hit & (stored != self.ignore)
            return np.where(hit, order[pos], self.ignore), unlisted
        none = np.zeros(stored.shape, dtype=bool)
        if self.ade20k:
            return np.where(stored == 0, self.ignore, stored - 1), none
        return stored, none

    @property
    def maps_values(self) -> bool:
        return self.values is not None or self.ade20k

    def target(self, values: np.ndarray, path: Path | None = None) -> np.ndarray:
        """(H, W) uint8 targets of a mask's stored values, (H, W) integers or (H, W, 3) RGB.

        Raises:
            DatasetError: values outside 0..255 that are not mapped (naming ``path``).
        """
        if values.ndim == 2 and self.values is None and (values.min(initial=0) < 0 or values.max(initial=0) > 255):
            raise DatasetError(
                f"{path}: mask values {values.min()}..{values.max()} do not fit class "
                "indices 0..255; save the mask as an 8-bit palette (P) or grayscale (L) PNG"
            )
        if values.ndim == 3:  # searchsorted per pixel: O(HW log K), no sort of the pixels
            return self.classify(_rgb_keys(values), rgb=True)[0].astype(np.uint8)
        if not self.maps_values:
            return values.astype(np.uint8)
        if values.dtype == np.uint8:
            return self.classify(np.arange(256))[0].astype(np.uint8)[values]
        present, inverse = np.unique(values.ravel(), return_inverse=True)
        return self.classify(present)[0][inverse].reshape(values.shape).astype(np.uint8)
