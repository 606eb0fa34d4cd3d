"""The ``seglens`` parser class and its argument types: each turns a flag's text into a value or
a one-line flag error (exit 2)."""

from __future__ import annotations

import argparse
import math

# Literal copies would drift; these modules are light next to torch, which models.py loads anyway.
from ..evaltypes import TTA
from ..models import is_hf_model, list_models
from ..pipeline import OUTPUT_KINDS


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag on one line (exit 2) instead of usage + message."""

    def error(self, message: str):  # type: ignore[override]
        raise _UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def _outputs(value: str) -> tuple[str, ...]:
    kinds = tuple(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))
    bad = [k for k in kinds if k not in OUTPUT_KINDS]
    if bad or not kinds:
        raise argparse.ArgumentTypeError(
            f"unknown output {','.join(bad) or value!r}; choose from {','.join(OUTPUT_KINDS)}"
        )
    return kinds


def _number(value: str, kind=float):
    """float(value) / int(value), as a one-line flag error (not "invalid _tile value")."""
    try:
        n = kind(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not {'an integer' if kind is int else 'a number'}") from None
    if kind is float and not math.isfinite(n):
        raise argparse.ArgumentTypeError(f"{value!r} is not a finite number")
    return n


def _alpha(value: str) -> float:
    a = _number(value)
    if not 0.0 <= a <= 1.0:
        raise argparse.ArgumentTypeError(f"{value} is not between 0 and 1")
    return a


def _float(value: str) -> float:
    """A plain number; its range is SegmenterConfig's to check (:func:`_segmenter_configs`)."""
    return _number(value)


def _int(value: str) -> int:
    """A plain integer; its range is SegmenterConfig's to check."""
    return _number(value, int)


def _positive_float(value: str) -> float:
    a = _number(value)
    if not a > 0:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return a


def _non_negative_float(value: str) -> float:
    a = _number(value)
    if not a >= 0:
        raise argparse.ArgumentTypeError(f"{value} is not a number >= 0")
    return a


def _model_name(value: str) -> str:
    """A torchvision builder name or ``hf:<repo-or-folder>``."""
    if value in list_models() or (is_hf_model(value) and len(value) > 3):
        return value
    raise argparse.ArgumentTypeError(
        f"unknown model {value!r}; choose one of: {', '.join(list_models())}, "
        "or hf:<repo-or-folder> (see seglens models)"
    )


def _torchvision_name(value: str) -> str:
    if value in list_models():
        return value
    raise argparse.ArgumentTypeError(
        f"unknown model {value!r}; choose one of: {', '.join(list_models())} (this command covers torchvision models)"
    )


def _positive_int(value: str) -> int:
    n = _number(value, int)
    if n < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return n


def _tta(value: str) -> TTA:
    try:
        return TTA.parse(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
