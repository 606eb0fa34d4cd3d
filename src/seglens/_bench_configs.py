"""``seglens bench``'s configurations: what each entry runs, and the ``--configs`` grammar.

Part of :mod:`seglens.bench`, which re-exports these names; nothing here imports torch.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, replace
from typing import Any

__all__ = ["BACKENDS", "PRESETS", "BenchConfig", "default_configs", "parse_configs"]

BACKENDS = ("torch", "onnxruntime", "openvino")
# What Segmenter (torch autocast) and seglens.backends accept today; checked when parsing, not after a model is built.
_PRECISIONS = {"torch": ("fp32", "fp16", "bf16"), "onnxruntime": ("fp32",), "openvino": ("fp32", "int8")}


@dataclass(frozen=True)
class BenchConfig:
    """One way of running seglens that the benchmark measures against ``naive``.

    Attributes:
        name: row name; int8 configurations contain "int8"; "naive" is reserved.
        backend: "torch", "onnxruntime" or "openvino".
        precision: torch: "fp32", "fp16", "bf16"; onnxruntime: "fp32"; openvino: "fp32", "int8".
        channels_last: torch only: NHWC weights and inputs.
        batch_size: images per model call (only equal shapes share a call, as in ``Segmenter``).
        compile: torch only: ``torch.compile`` the model.
        workers: decode threads ahead of the model and mask-encoding threads (0: all inline).
        outputs: what each image writes: ``("mask",)``, or ``DEFAULT_OUTPUTS`` (mask, overlay
            and figure: what ``seglens segment`` writes unless told otherwise).
    """

    name: str
    backend: str = "torch"
    precision: str = "fp32"
    channels_last: bool = True
    batch_size: int = 1
    compile: bool = False
    workers: int = 2
    outputs: tuple[str, ...] = ("mask",)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"{self.name}: backend {self.backend!r} is not one of {', '.join(BACKENDS)}")
        if self.precision not in _PRECISIONS[self.backend]:
            raise ValueError(
                f"{self.name}: precision {self.precision!r} with {self.backend}: "
                f"choose {', '.join(_PRECISIONS[self.backend])}"
            )
        if self.precision == "int8" and "int8" not in self.name:
            raise ValueError(f"{self.name}: int8 configuration names must contain 'int8'")
        if self.name == "naive":
            raise ValueError("'naive' is the baseline every run includes; name the configuration otherwise")
        if self.batch_size < 1 or self.workers < 0:
            raise ValueError(
                f"{self.name}: batch_size must be >= 1 and workers >= 0, got {self.batch_size} and {self.workers}"
            )
        if self.compile and self.backend != "torch":
            raise ValueError(f"{self.name}: compile applies to the torch backend only")


DEFAULT_OUTPUTS = ("mask", "overlay", "figure")  # seglens.pipeline.DEFAULT_OUTPUTS (tests check they agree)
PRESETS: dict[str, BenchConfig] = {
    # The Segmenter path without its speed-ups: isolates what channels_last and the pipeline add.
    "eager-fp32": BenchConfig("eager-fp32", channels_last=False, workers=0),
    "seglens": BenchConfig("seglens"),  # the default fast torch path: channels_last + pipeline
    # ... writing what `seglens segment` writes by default: the cost of the overlay and figure
    "seglens-outputs": BenchConfig("seglens-outputs", outputs=DEFAULT_OUTPUTS),
    "onnxruntime-fp32": BenchConfig("onnxruntime-fp32", backend="onnxruntime", channels_last=False),
    "openvino-fp32": BenchConfig("openvino-fp32", backend="openvino", channels_last=False),
    "openvino-int8": BenchConfig("openvino-int8", backend="openvino", precision="int8", channels_last=False),
}
_NEEDS = {"onnxruntime-fp32": ("onnxruntime",), "openvino-fp32": ("openvino",), "openvino-int8": ("openvino", "nncf")}
_OPTIONS = ("batch", "channels_last", "compile", "precision", "workers", "outputs")
_BOOLS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


def default_configs(*, include_optional: bool = True) -> list[BenchConfig]:
    """The presets: "eager-fp32", "seglens", "seglens-outputs", then (``include_optional`` and their packages
    importable) "onnxruntime-fp32", "openvino-fp32", "openvino-int8"."""
    names = ["eager-fp32", "seglens", "seglens-outputs"]
    if include_optional:
        names += [n for n, mods in _NEEDS.items() if all(importlib.util.find_spec(m) is not None for m in mods)]
    return [PRESETS[n] for n in names]


def parse_configs(spec: str) -> list[BenchConfig]:
    """Configurations from a comma-separated list.

    Grammar: ``ITEM[,ITEM...]``, each ``BASE[:KEY=VALUE...]``.

    - BASE: a preset (``eager-fp32``, ``seglens``, ``onnxruntime-fp32``, ``openvino-fp32``,
      ``openvino-int8``), a backend (``torch``, ``onnxruntime``, ``openvino``: fp32, batch 1,
      2 workers, channels_last for torch), ``all`` (the importable presets, see
      :func:`default_configs`) or ``naive`` (accepted and ignored: always included).
    - KEY: ``batch`` (int >= 1), ``precision`` (torch: fp32, fp16, bf16; onnxruntime: fp32;
      openvino: fp32, int8), ``channels_last`` and
      ``compile`` (1/0, true/false, yes/no, on/off), ``workers`` (int >= 0).
    - The row name is the item as written, without spaces: ``"torch:batch=4"``.

    Example: ``"seglens,openvino-int8,torch:batch=4:channels_last=0"``.

    Raises:
        ValueError: empty items, unknown bases or keys, bad values, names given twice.
    """
    configs: list[BenchConfig] = []
    for raw in spec.split(","):
        item = "".join(raw.split())
        if not item:
            raise ValueError(
                f"empty configuration in {spec!r}; separate names with single commas, e.g. 'seglens,torch:batch=4'"
            )
        if item == "naive":
            continue
        if item == "all":
            configs += default_configs()
            continue
        configs.append(_parse_item(item))
    seen: set[str] = set()
    for c in configs:
        if c.name in seen:
            raise ValueError(f"configuration {c.name!r} is given twice in {spec!r}")
        seen.add(c.name)
    return configs


def _parse_item(item: str) -> BenchConfig:
    base, *options = item.split(":")
    if base in PRESETS:
        config = PRESETS[base]
    elif base in BACKENDS:
        config = BenchConfig(base, backend=base, channels_last=base == "torch")
    else:
        raise ValueError(
            f"unknown configuration {base!r} in {item!r}; choose a preset ({', '.join(PRESETS)}), "
            f"a backend ({', '.join(BACKENDS)}) with options like 'torch:batch=4', or 'all'"
        )
    changes: dict[str, Any] = {}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or not key or not value:
            raise ValueError(f"option {option!r} in {item!r}: write KEY=VALUE, e.g. batch=4")
        if key not in _OPTIONS:
            raise ValueError(f"unknown option {key!r} in {item!r}; options: {', '.join(_OPTIONS)}")
        if key in ("batch", "workers"):
            if not value.isdigit() or (key == "batch" and int(value) < 1):
                raise ValueError(f"{key} must be an integer >= {1 if key == 'batch' else 0}, got {value!r} in {item!r}")
            changes["batch_size" if key == "batch" else key] = int(value)
        elif key == "outputs":
            if value not in ("mask", "default"):
                raise ValueError(f"outputs must be mask or default (mask,overlay,figure), got {value!r} in {item!r}")
            changes["outputs"] = ("mask",) if value == "mask" else DEFAULT_OUTPUTS
        elif key in ("channels_last", "compile"):
            if value.lower() not in _BOOLS:
                raise ValueError(f"{key} must be 1/0, true/false, yes/no or on/off, got {value!r} in {item!r}")
            changes[key] = _BOOLS[value.lower()]
        else:
            changes["precision"] = value
    return replace(config, name=item, **changes)  # __post_init__ checks the combination
