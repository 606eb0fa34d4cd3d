"""Images for int8 calibration: a folder's, the bundled examples', or the images given."""

from __future__ import annotations

import os

from .decode import load_image
from .discover import find_images
from .write import bundled_examples

__all__ = ["calibration_images"]


def calibration_images(calibration=None, limit: int = 16, *, name: str = "calibration=") -> list:
    """Up to ``limit`` decoded images: from a folder (or file / glob) path, the bundled examples
    (None), or ``calibration`` itself when it is already a sequence of images.

    Raises:
        ValueError: the path holds no images; the message starts with ``name`` and the path
            (the CLI passes ``"--calibrate "``).
    """
    if calibration is not None and not isinstance(calibration, (str, os.PathLike)):
        return list(calibration)
    if calibration is None:
        paths = bundled_examples()
    else:
        found, problems = find_images([calibration])
        if not found:
            reasons = "; ".join(r for _, r in problems)
            raise ValueError(f"{name}{os.fsdecode(calibration)}: no images found ({reasons})")
        paths = [f.path for f in found]
    return [load_image(p) for p in paths[:limit]]
