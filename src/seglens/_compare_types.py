"""The entries and the result of ``seglens compare`` (:mod:`seglens.compare`, which re-exports
them): how a configuration is spelled and checked, and what a comparison measured, with its
``compare.json`` dict. No torch here: the CLI parses entries before anything loads.

Entry spelling (one string per configuration, ``key=value`` pairs separated by commas):
``model=lraspp_mobilenet_v3_large,weights=tuned.pth,backend=openvino,precision=int8,tta=flip,
refine=guided+small,name=int8``. Inside a value ``+`` joins items and ``:`` separates numbers,
since ``,`` separates the pairs: ``tta=scales:0.75:1:1.25+flip`` is evaluate's
``tta="scales=0.75,1,1.25,flip"``, ``refine=guided=8:0.001+small=200`` its
``refine="guided=8:0.001,small=200"``. A bare path (or ``folder=PATH``) is an eval folder.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._compare_stats import ImageCounts
from ._version import __version__
from .config import BACKEND_PRECISIONS, DEFAULT_MODEL
from .evaltypes import TTA, DatasetInfo, SkippedImage
from .metrics import ABSENT_RULE

KEYS = ("name", "model", "weights", "backend", "precision", "tta", "refine", "scale", "calibration", "device")


# --- entries ---------------------------------------------------------------------------------


def _parse_tta(value: Any) -> TTA | None:
    """``flip``, ``scales:0.75:1:1.25``, ``scales:0.75:1:1.25+flip`` (or evaluate's text, or a TTA)."""
    if value is None or isinstance(value, TTA):
        return value
    text = str(value).strip()
    if text in ("", "none"):
        return None
    parts = [p.strip() for p in text.replace("+", ",").split(",") if p.strip()]
    numbers = [p for p in parts if p != "flip"]
    if numbers and numbers[0].startswith("scales"):
        numbers = [numbers[0].removeprefix("scales").lstrip("=:"), *numbers[1:]]
        numbers = [n for p in numbers for n in p.split(":") if n]
        text = "scales=" + ",".join(numbers) + (",flip" if "flip" in parts else "")
    return TTA.parse(text)


@dataclass(frozen=True)
class CompareConfig:
    """One configuration to run; its fields are the entry's keys (see the module docstring).

    ``refine`` is kept in :mod:`seglens.refine`'s spelling (``"guided=8:0.001,small=0.0005"``),
    ``tta`` as a :class:`~seglens.evaltypes.TTA`; ``device`` None: compare()'s. ValueError names
    a bad value's key.
    """

    name: str | None = None
    model: str = DEFAULT_MODEL
    weights: str = "official"
    backend: str = "torch"
    precision: str = "fp32"
    tta: TTA | None = None
    refine: str | None = None
    scale: float | None = None
    calibration: str | None = None
    device: str | None = None

    def __post_init__(self) -> None:
        def bad(key: str, why: str) -> ValueError:
            return ValueError(f"{key}: {why}")

        try:
            object.__setattr__(self, "tta", _parse_tta(self.tta))
        except ValueError as e:
            raise bad("tta", f"{e}; in an entry write tta=flip or tta=scales:0.75:1:1.25+flip") from None
        if self.refine is not None and not isinstance(self.refine, str):
            object.__setattr__(self, "refine", ",".join(map(str, self.refine)))
        if self.refine not in (None, "", "none"):
            from .refine import parse_refine

            try:
                steps = parse_refine(self.refine.replace("+", ","))
            except ValueError as e:
                raise ValueError(f"{e} (in an entry joined by +, e.g. refine=guided+small)") from None
            object.__setattr__(self, "refine", ",".join(map(str, steps)))
        else:
            object.__setattr__(self, "refine", None)
        if isinstance(self.scale, str):
            try:
                object.__setattr__(self, "scale", None if self.scale == "none" else float(self.scale))
            except ValueError:
                raise bad("scale", f"{self.scale!r} is not a number") from None
        if self.backend not in BACKEND_PRECISIONS:
            raise bad("backend", f"{self.backend!r}: choose one of {', '.join(BACKEND_PRECISIONS)}")
        if self.precision not in BACKEND_PRECISIONS[self.backend]:
            raise bad("precision", f"{self.precision!r} with backend {self.backend}: choose one of "
                                   f"{', '.join(BACKEND_PRECISIONS[self.backend])}")  # fmt: skip
        if self.calibration is not None and self.precision != "int8":
            raise bad("calibration", "images for int8 only: give precision=int8 (with backend=openvino)")
        for key in ("model", "weights", "calibration", "device"):
            value = getattr(self, key)
            if value is not None:
                object.__setattr__(self, key, os.fspath(value))

    @property
    def spec(self) -> str:
        """The entry's spelling: its keys that differ from the defaults (name left out)."""
        parts = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "name" or value == f.default:
                continue
            if f.name == "tta":
                value = str(value).replace("scales=", "scales:").replace(",flip", "+flip").replace(",", ":")
            elif f.name == "refine":
                value = value.replace(",", "+")
            parts.append(f"{f.name}={value:g}" if isinstance(value, float) else f"{f.name}={value}")
        return ",".join(parts) or f"model={self.model}"


@dataclass(frozen=True)
class EvalFolder:
    """A ``seglens eval`` output folder as an entry: its metrics.json and per_image_counts.npz."""

    path: Path
    name: str | None = None


def parse_entry(
    entry: str | os.PathLike | Mapping[str, Any] | CompareConfig | EvalFolder,
) -> CompareConfig | EvalFolder:
    """One entry as :func:`compare` takes it: ``"key=value,..."``, a mapping of the keys, an eval
    folder's path, or a CompareConfig / EvalFolder as it is.

    Raises:
        ValueError: one line naming the entry and the bad key (unknown, repeated, no value)."""
    if isinstance(entry, (CompareConfig, EvalFolder)):
        return entry
    if isinstance(entry, os.PathLike):
        return EvalFolder(Path(entry))
    if isinstance(entry, Mapping):
        fields, text = dict(entry), repr(dict(entry))
    else:
        text = str(entry).strip()
        if "=" not in text:
            if Path(text).is_dir():
                return EvalFolder(Path(text))
            raise ValueError(f"compare entry {text!r}: neither key=value pairs ({', '.join(KEYS)}) "
                             "nor an existing seglens eval folder")  # fmt: skip
        fields = {}
        for part in text.split(","):
            key, sep, value = (s.strip() for s in part.partition("="))
            if not sep or not value:
                raise ValueError(f"compare entry {text!r}: {part.strip()!r} is not key=value")
            if key in fields:
                raise ValueError(f"compare entry {text!r}: key {key!r} given twice")
            fields[key] = value
    unknown = [k for k in fields if k not in (*KEYS, "folder")]
    if unknown:
        close = difflib.get_close_matches(unknown[0], KEYS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ValueError(
            f"compare entry {text!r}: unknown key {unknown[0]!r}; {hint}keys: {', '.join(KEYS)} (or folder)"
        )
    if "folder" in fields:
        if set(fields) - {"folder", "name"}:
            raise ValueError(f"compare entry {text!r}: folder= takes name= only (the folder says how it was run)")
        return EvalFolder(Path(fields["folder"]), fields.get("name"))
    try:
        return CompareConfig(**fields)
    except ValueError as e:
        raise ValueError(f"compare entry {text!r}: {e}") from None


def _names(entries: Sequence[CompareConfig | EvalFolder]) -> list[str]:
    """Each entry's name: its own, else A, B, C ... by position (AA, AB ... past Z)."""
    names = []
    for k, e in enumerate(entries):
        auto = chr(65 + k) if k < 26 else chr(64 + k // 26) + chr(65 + k % 26)
        names.append(e.name or auto)
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"compare: configuration name {twice[0]!r} given twice; names must differ")
    return names


# --- the result ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfigResult:
    """One configuration's scores (%, as ``seglens eval`` reports them) and timing.

    ``source``: ``"run"`` (run here) or ``"folder"`` (read from an eval folder: no timing);
    ``iou``: per class, None where absent (see ``ABSENT_RULE``); timings: images/s end to end
    (network input, model, labels and refinement; the dataset read excluded), the model's
    (``Segmenter.logits``) median and mean latency and the end-to-end median, in ms.
    """

    name: str
    source: str
    spec: str
    model: str
    weights: str
    backend: str | None
    precision: str | None
    tta: str | None
    refine: str | None
    scale: float | None
    miou: float | None
    pixel_acc: float | None
    iou: tuple[float | None, ...]
    weights_meaningful: bool | None = None
    images_per_s: float | None = None
    model_ms_median: float | None = None
    model_ms_mean: float | None = None
    end_to_end_ms_median: float | None = None


@dataclass(frozen=True)
class Delta:
    """A difference in percentage points and its bootstrap interval ``ci`` = (lo, hi) (None:
    undefined, e.g. a class absent from one of the two, or no bootstrap)."""

    value: float | None
    ci: tuple[float, float] | None = None

    @property
    def excludes_zero(self) -> bool:
        """The interval lies wholly above or below 0: the difference is unlikely to be chance."""
        return self.ci is not None and (self.ci[0] > 0 or self.ci[1] < 0)

    def to_dict(self) -> dict[str, Any]:
        ci = None if self.ci is None else list(self.ci)
        return {"delta": self.value, "ci": ci, "excludes_zero": self.excludes_zero}


@dataclass(frozen=True)
class ConfigDelta:
    """``config`` minus ``versus`` (the first entry): mIoU, pixel accuracy, per-class IoU."""

    config: str
    versus: str
    miou: Delta
    pixel_acc: Delta
    iou: tuple[Delta, ...]


@dataclass(frozen=True, eq=False)  # eq=False: arrays
class Disagreement:
    """An image where the run configurations disagree: ``fraction`` of its valid pixels where
    any differs from the first, ``fractions`` per other configuration; the pixels as scored
    (``image`` (H, W, 3), ``target``, ``preds`` by name) and the panel ``file`` once written."""

    index: int
    name: str
    fraction: float
    fractions: dict[str, float]
    image: np.ndarray | None = dataclasses.field(default=None, repr=False)
    target: np.ndarray | None = dataclasses.field(default=None, repr=False)
    preds: dict[str, np.ndarray] = dataclasses.field(default_factory=dict, repr=False)
    file: str | None = None


@dataclass(frozen=True, eq=False)
class CompareResult:
    """Everything a comparison measured: what ``compare.json`` holds, plus the per-image counts
    (``counts`` by configuration name) and the disagreement panels' pixels."""

    dataset: DatasetInfo | None
    protocol: str | None
    class_names: tuple[str, ...]
    configs: tuple[ConfigResult, ...]
    deltas: tuple[ConfigDelta, ...]
    disagreements: tuple[Disagreement, ...]
    skipped: tuple[SkippedImage, ...]
    bootstrap: int
    seed: int
    level: float
    notes: tuple[str, ...]
    seconds: float
    counts: dict[str, ImageCounts] = dataclasses.field(default_factory=dict, repr=False)

    def config(self, name: str) -> ConfigResult:
        return next(c for c in self.configs if c.name == name)

    def delta(self, name: str) -> ConfigDelta:
        return next(d for d in self.deltas if d.config == name)

    def to_dict(self) -> dict[str, Any]:
        """The ``compare.json`` dict (JSON types only)."""
        classes = self.class_names
        configs = []
        for c in self.configs:
            d = {k: v for k, v in dataclasses.asdict(c).items() if k != "iou"}
            d["per_class_iou"] = dict(zip(classes, c.iou))
            configs.append(d)
        deltas = [{"config": d.config, "versus": d.versus, "miou": d.miou.to_dict(),
                   "pixel_acc": d.pixel_acc.to_dict(),
                   "per_class_iou": {n: x.to_dict() for n, x in zip(classes, d.iou)}} for d in self.deltas]  # fmt: skip
        return {
            "seglens_version": __version__,
            "dataset": None if self.dataset is None else dataclasses.asdict(self.dataset),
            "protocol": self.protocol,
            "absent_rule": ABSENT_RULE,
            "bootstrap": {"resamples": self.bootstrap, "seed": self.seed, "level": self.level, "unit": "images"},
            "class_names": list(classes),
            "configs": configs,
            "deltas": deltas,
            "disagreements": [
                {
                    "rank": k,
                    "index": g.index,
                    "name": g.name,
                    "fraction": g.fraction,
                    "fractions": g.fractions,
                    "file": g.file,
                }
                for k, g in enumerate(self.disagreements, 1)
            ],  # fmt: skip
            "skipped": [dataclasses.asdict(s) for s in self.skipped],
            "notes": list(self.notes),
            "seconds": self.seconds,
        }
