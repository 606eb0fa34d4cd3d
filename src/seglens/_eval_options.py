"""The options of :func:`seglens.evaluation.evaluate`: the keywords it takes (as ``seglens eval``'s
flags) with their defaults and checks, and what they make: the :class:`EvalConfig`, the
Segmenter (int8 calibration images included) and the progress bars. Private to evaluation.py.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any

from ._cluster import check_engine
from .evaltypes import TTA, EvalConfig
from .inference import Segmenter
from .io.calibration import calibration_images
from .models import DEFAULT_MODEL

# Options of evaluate(), as seglens eval's flags, with their defaults.
_MODEL_OPTIONS = {"device": "auto", "backend": "torch", "precision": "fp32", "calibration": None, "seed": 0,
                  "scale": None, "refine": None}  # fmt: skip
_DATA_OPTIONS = {"split": "val", "images": None, "masks": None, "classes": None, "ignore_index": 255,
                 "mask_values": None, "limit": None}  # fmt: skip
_CONFIG_OPTIONS = {"protocol": None, "tta": None, "compare_tta": False, "boundary_width": 5, "worst": 8}
_RUN_OPTIONS = {"strict": False, "check_labels": True}
# Where the images are scored: here, or on a Ray cluster (see seglens._cluster; None: its sizing rule).
_ENGINE_OPTIONS = {"engine": "local", "ray_address": None, "ray_workers": None, "cpus_per_worker": None,
                   "gpus_per_worker": None}  # fmt: skip


def _options(
    options: dict[str, Any],
    *,
    model: str,
    weights: Any,
    segmenter: Segmenter | None,
    config: EvalConfig | None,
    root: Any,
    dataset_given: bool,
) -> dict[str, Any]:
    """evaluate()'s ``**options`` checked and completed with the defaults.

    Raises:
        TypeError: an unknown option. ValueError: an option given beside what replaces it
            (``segmenter=``, ``config=``, a dataset object), an unknown engine, Ray options
            without ``engine="ray"``, ``segmenter=`` with it.
    """
    groups = (_DATA_OPTIONS, _CONFIG_OPTIONS, _RUN_OPTIONS, _MODEL_OPTIONS, _ENGINE_OPTIONS)
    unknown = sorted(set(options).difference(*groups))
    if unknown:
        allowed = [k for group in groups for k in group]
        raise TypeError(f"evaluate() got unknown options {', '.join(unknown)}; options: {', '.join(allowed)}")
    model_args = (
        ["model"] * (model != DEFAULT_MODEL)
        + ["weights"] * (weights != "official")
        + [k for k in _MODEL_OPTIONS if k in options]
    )
    _refuse_both("segmenter=", segmenter is not None, model_args)
    _refuse_both("config=", config is not None, [k for k in _CONFIG_OPTIONS if k in options])
    _refuse_both(
        "a dataset object",
        dataset_given,
        [k for k in _DATA_OPTIONS if k in options] + (["root"] if root is not None else []),
    )
    engine = options.get("engine", "local")
    check_engine(engine)
    ray_options = sorted(k for k in _ENGINE_OPTIONS if k != "engine" and k in options)
    if engine != "ray" and ray_options:
        raise ValueError(f"{', '.join(f'{k}=' for k in ray_options)}: for engine='ray' only")
    if engine == "ray" and segmenter is not None:
        raise ValueError("segmenter= runs in this process; engine='ray' builds one per worker from model= and weights=")
    return {**_MODEL_OPTIONS, **_DATA_OPTIONS, **_CONFIG_OPTIONS, **_RUN_OPTIONS, **_ENGINE_OPTIONS, **options}


def _refuse_both(what: str, given: bool, names: list[str]) -> None:
    if given and names:
        raise ValueError(f"{', '.join(f'{k}=' for k in names)}: {what} is used as it is; give one or the other")


def _config(opts: dict) -> EvalConfig:
    tta = opts["tta"]
    if isinstance(tta, str):
        try:
            tta = TTA.parse(tta)
        except ValueError as e:
            raise ValueError(f"tta={e}") from None
    return EvalConfig(
        protocol=opts["protocol"],
        tta=tta,
        compare_tta=opts["compare_tta"],
        boundary_width=opts["boundary_width"],
        worst=opts["worst"],
    )


def _build(model: str, weights: str | os.PathLike, opts: dict, *, download_progress: bool) -> Segmenter:
    calibration = calibration_images(opts["calibration"]) if opts["precision"] == "int8" else None
    return Segmenter(model, weights=weights, device=opts["device"], progress=download_progress, seed=opts["seed"],
                     backend=opts["backend"], precision=opts["precision"], calibration=calibration,
                     scale=opts["scale"], refine=opts["refine"] or ())  # fmt: skip


def _bar_factory(progress: bool | Callable[..., Any] | None) -> Callable[..., Any] | None:
    if progress is True:
        from tqdm import tqdm

        return functools.partial(tqdm, file=sys.stderr, dynamic_ncols=True)
    return progress or None


class _Bar:
    """A progress bar from the factory for one stage (nothing without a factory)."""

    def __init__(self, factory: Callable[..., Any] | None, total: int, desc: str) -> None:
        self._bar = factory(total=total, unit="img", desc=desc) if factory is not None else None

    def update(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def __enter__(self) -> _Bar:
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.close()
