"""Other inference engines for the same networks: ONNX Runtime, OpenVINO (fp32 and NNCF int8).

Every backend turns a :class:`~seglens.models.LoadedModel` into a *runner*: a function from an
(N, 3, H, W) float32 batch, preprocessed exactly as the Segmenter does, to the (N, C, H, W)
float32 logits on the CPU, the same tensor as ``loaded.model(x)["out"]``. Batch, height and width
are dynamic: one runner takes any image size.

Exports are cached per model and weights under ``$SEGLENS_CACHE`` (default ``~/.cache/seglens``)
in ``exports/<model>-<key>/``; the key comes from the weights file's SHA-256, or from a hash of
the state dict itself for random weights, so a cache entry can never belong to other weights.
Each export is written to a temporary folder and moved into place, and a JSON sidecar with the
SHA-256 of every file it wrote is written last: an entry without a matching sidecar (interrupted,
truncated, edited) is exported again.

onnxruntime, openvino and nncf are optional and imported only when used.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib
import importlib.util
import io
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from .io import write_json
from .models import LoadedModel, is_hf_model, sha256_file

__all__ = [
    "AUTO_EXPORT_IMAGES", "BACKENDS", "PRECISIONS", "BackendError", "choose_backend", "export", "export_dir",
    "make_runner", "quantize_int8",
]  # fmt: skip

BACKENDS = ("torch", "onnxruntime", "openvino")
PRECISIONS = ("fp32", "int8")  # int8 only with openvino (NNCF post-training quantisation)
FORMATS = ("onnx", "openvino")
_VALID = "torch/fp32, onnxruntime/fp32, openvino/fp32, openvino/int8"

_CACHE_ENV = "SEGLENS_CACHE"
# backend="auto" exports to OpenVINO for a run of at least this many images when no export is
# cached: the export takes 7-18 s here and OpenVINO f32 saves ~15-20% of each image's model time
# (README: Performance), so a few dozen images repay it.
AUTO_EXPORT_IMAGES = 64  # seglens.config keeps a copy (tests/test_config.py checks they agree)
# Opset 18: the dynamo exporter's native opset (it would convert a lower one after the fact).
_OPSET = 18
# Example input for tracing: batch 2 and unequal sides, so no size is specialised to 1 or H == W.
_EXAMPLE_SHAPE = (2, 3, 224, 288)
_EXTRA = {  # module -> the seglens extra that installs it
    "onnx": "onnx",
    "onnxscript": "onnx",
    "onnxruntime": "onnx",
    "openvino": "openvino",
    "nncf": "openvino",
}


class BackendError(Exception):
    """A backend that cannot be used as asked. The message is one line and says how to fix it."""


def _require(module: str) -> ModuleType:
    """Import an optional dependency, or raise a BackendError with the install command."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise BackendError(f"{module} is not installed: pip install 'seglens[{_EXTRA[module]}]'") from e


@contextlib.contextmanager
def _quiet(*loggers: str) -> Iterator[None]:
    """Silence warnings, the named loggers below ERROR and stdout (NNCF draws progress bars there)."""
    saved = [(logging.getLogger(name), logging.getLogger(name).level) for name in loggers]
    for logger, _ in saved:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in saved:
            logger.setLevel(level)


def _cache_root() -> Path:
    env = os.environ.get(_CACHE_ENV, "")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "seglens"


def _state_dict_sha256(model: nn.Module) -> str:
    """SHA-256 over every tensor of the state dict (name, dtype, shape and bytes, in key order)."""
    digest = hashlib.sha256()
    for key, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{key}|{t.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _cache_key(loaded: LoadedModel) -> str:
    if loaded.sha256:
        return loaded.sha256[:16]
    # No file behind these weights (random init): hash the tensors themselves.
    prefix = "random" if loaded.weights == "random" else "weights"
    return f"{prefix}-{_state_dict_sha256(loaded.model)[:16]}"


def export_dir(loaded: LoadedModel) -> Path:
    """The cache folder of this model and weights: ``<cache>/exports/<name>-<key>/``.

    ``<cache>`` is ``$SEGLENS_CACHE`` or ``~/.cache/seglens``; ``<key>`` is the first 16 hex
    digits of the weights file's SHA-256, or ``random-<16 hex>`` of a hash of the state dict's
    tensors for random weights. Nothing is created.
    """
    return _cache_root() / "exports" / f"{loaded.name}-{_cache_key(loaded)}"


class _LogitsOnly(nn.Module):
    """The network with a tensor output: ``model(image)["out"]`` (no aux head, no dict)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model(image)["out"]


def _cpu_wrapper(loaded: LoadedModel) -> nn.Module:
    model = loaded.model
    if any(p.device.type != "cpu" for p in model.parameters()):
        model = copy.deepcopy(model).cpu()  # leave the caller's (e.g. CUDA) model where it is
    return _LogitsOnly(model).eval()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _read_sidecar(path: Path, owner: str) -> dict[str, Any] | None:
    """The sidecar of a complete, unmodified export of ``owner`` at ``path``; None otherwise."""
    try:
        meta = json.loads(_sidecar(path).read_text(encoding="utf-8"))
        files = meta["files"]
        if meta.get("owner") != owner or path.name not in files:
            return None
        if all(sha256_file(path.with_name(name)) == digest for name, digest in files.items()):
            return meta
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def _write_atomically(path: Path, write: Callable[[Path], None], meta: dict[str, Any]) -> None:
    """Run ``write(tmp_path)`` in a temporary folder beside ``path``, then move its files into place.

    Every file the writer made (e.g. ``model.bin`` beside ``model.xml``, external ONNX data) is
    moved, ``path`` itself last, and the sidecar recording their SHA-256 after them.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        write(tmp / path.name)
        made = sorted(tmp.iterdir(), key=lambda p: p.name == path.name)
        if not made or made[-1].name != path.name:
            raise BackendError(f"the exporter wrote no {path.name}; delete {path.parent} and try again")
        meta = {**meta, "files": {p.name: sha256_file(p) for p in made}}
        _sidecar(path).unlink(missing_ok=True)  # no valid-looking sidecar while files change
        for p in made:
            os.replace(p, path.with_name(p.name))
        write_json(_sidecar(path), meta)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _export_onnx(wrapper: nn.Module, dst: Path) -> None:
    _require("onnx")
    _require("onnxscript")  # the torch.export-based exporter builds the graph with it
    from torch.export import Dim

    # dynamo=True (torch.export): the TorchScript exporter is deprecated since torch 2.9.
    # Named Dims keep "batch"/"height"/"width" as the ONNX dimension names.
    dims = {0: Dim("batch"), 2: Dim("height"), 3: Dim("width")}
    with _quiet():
        torch.onnx.export(
            wrapper,
            (torch.zeros(_EXAMPLE_SHAPE),),
            str(dst),
            dynamo=True,
            input_names=["image"],
            output_names=["logits"],
            dynamic_shapes={"image": dims},
            opset_version=_OPSET,
            external_data=False,  # one file: every seglens model is far below the 2 GB limit
            verbose=False,
        )


def _export_openvino(wrapper: nn.Module, dst: Path) -> None:
    ov = _require("openvino")
    # Tracing warns about its own deprecation; OpenVINO imports nncf.torch when nncf is installed
    # (-> torch.utils.cpp_extension, which logs "No CUDA runtime is found" on GPU-less machines).
    with _quiet("torch.utils.cpp_extension"):
        model = ov.convert_model(
            wrapper,
            example_input=torch.zeros(_EXAMPLE_SHAPE),
            input=[("image", ov.PartialShape([-1, 3, -1, -1]), ov.Type.f32)],
        )
    model.outputs[0].get_tensor().set_names({"logits"})
    ov.save_model(model, str(dst), compress_to_fp16=False)  # exact fp32 weights


def choose_backend(loaded: LoadedModel, *, device: torch.device, precision: str, images: int) -> tuple[str, str]:
    """``backend="auto"``: the fastest exact path that pays for this run, and why.

    OpenVINO f32 on a CPU when OpenVINO is installed and the model is a torchvision one, and
    either its export of these weights is cached or the run has ``AUTO_EXPORT_IMAGES`` images or
    more to repay making it; torch otherwise (GPUs, Hugging Face models, short runs). int8 is
    OpenVINO's in any case. Labels: OpenVINO f32 agrees with torch to float rounding (100.000%
    of pixels in ``seglens bench``).

    Returns:
        ``(backend, reason)``, the reason a phrase for the run's summary and note.
    """
    if precision == "int8":
        return "openvino", "int8 runs on OpenVINO"
    if precision != "fp32":
        return "torch", f"{precision} is torch autocast"
    if device.type != "cpu":
        return "torch", f"torch on {device.type}"
    if is_hf_model(loaded.name):
        return "torch", "Hugging Face models run on torch"
    if importlib.util.find_spec("openvino") is None:
        return "torch", "OpenVINO is not installed (pip install 'seglens[openvino]' for the faster exact path)"
    cached = export_dir(loaded) / "model.xml"
    if _read_sidecar(cached, f"{export_dir(loaded).name}/openvino") is not None:
        return "openvino", "OpenVINO f32, its export of these weights is cached"
    if images >= AUTO_EXPORT_IMAGES:
        return "openvino", f"OpenVINO f32, {images} images repay its one-time export"
    return "torch", f"{images} image{'s' if images != 1 else ''}: too few to repay an OpenVINO export"


def export(loaded: LoadedModel, fmt: str, *, out: Path | None = None) -> Path:
    """Export the network (logits only) to ONNX or OpenVINO IR, or reuse a cached export.

    The exported graph takes ``image``, (N, 3, H, W) float32 with dynamic N, H and W, and returns
    ``logits``, (N, C, H, W) float32, the same as ``loaded.model(image)["out"]``.

    Args:
        loaded: the model and weights to export.
        fmt: ``"onnx"`` (torch.onnx.export with dynamo=True, opset 18, one file) or
            ``"openvino"`` (openvino.convert_model, fp32 weights: ``model.xml`` + ``model.bin``).
        out: where to write; default ``export_dir(loaded) / "model.onnx"`` or ``"model.xml"``.

    Returns:
        The path of the .onnx or .xml file. An existing export of the same weights whose files
        are intact is returned as is; a missing, partial or modified one is written again.

    Raises:
        BackendError: unknown format, or the exporter's package is not installed.
    """
    if fmt not in FORMATS:
        raise BackendError(f"unknown export format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    folder = export_dir(loaded)
    out = Path(out) if out is not None else folder / ("model.onnx" if fmt == "onnx" else "model.xml")
    owner = f"{folder.name}/{fmt}"  # the sidecar says whose export this is (matters for out=...)
    if _read_sidecar(out, owner) is not None:
        return out
    writer = _export_onnx if fmt == "onnx" else _export_openvino
    wrapper = _cpu_wrapper(loaded)
    meta = {
        "owner": owner,
        "model": loaded.name,
        "weights": loaded.weights_tag,
        "format": fmt,
        "torch": torch.__version__,
    }
    _write_atomically(out, lambda dst: writer(wrapper, dst), meta)
    return out


def _calibration_info(calibration: Sequence[torch.Tensor]) -> dict[str, Any]:
    digest = hashlib.sha256()
    for t in calibration:
        if not isinstance(t, torch.Tensor) or t.ndim != 3 or t.shape[0] != 3 or not t.is_floating_point():
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise BackendError(
                f"calibration images must be (3, H, W) float tensors preprocessed like the Segmenter's, got {shape}"
            )
        t = t.detach().to("cpu", torch.float32).contiguous()
        digest.update(f"{tuple(t.shape)}|".encode())
        digest.update(t.numpy().tobytes())
    return {"count": len(calibration), "shapes": [list(t.shape) for t in calibration], "sha256": digest.hexdigest()}


def quantize_int8(loaded: LoadedModel, calibration: Sequence[torch.Tensor], *, out: Path | None = None) -> Path:
    """NNCF post-training int8 quantisation of the OpenVINO export, cached per model and weights.

    Args:
        loaded: the model and weights.
        calibration: (3, H, W) float tensors preprocessed exactly as the Segmenter does
            (``loaded.transforms(image)``); sizes may differ. All of them are used
            (``subset_size=len(calibration)``); a few hundred make the best ranges, a handful
            already work.
        out: default ``export_dir(loaded) / "model_int8.xml"`` (+ ``.bin``); its JSON sidecar
            records the number, shapes and SHA-256 of the calibration tensors.

    Returns:
        The .xml path. An intact cached model made from the same calibration tensors is reused.

    Raises:
        BackendError: no or malformed calibration tensors, or openvino / nncf not installed.
    """
    if len(calibration) == 0:
        raise BackendError("int8 quantisation needs calibration images: pass a few preprocessed (3, H, W) tensors")
    info = _calibration_info(calibration)
    ov = _require("openvino")
    folder = export_dir(loaded)
    out = Path(out) if out is not None else folder / "model_int8.xml"
    owner = f"{folder.name}/openvino-int8"
    cached = _read_sidecar(out, owner)
    if cached is not None and cached.get("calibration", {}).get("sha256") == info["sha256"]:
        return out
    with _quiet("torch.utils.cpp_extension"):
        nncf = _require("nncf")
    fp32 = ov.Core().read_model(str(export(loaded, "openvino")))
    samples = [t.detach().to("cpu", torch.float32).contiguous() for t in calibration]
    dataset = nncf.Dataset(samples, lambda t: t[None].numpy())
    with _quiet("nncf", "torch.utils.cpp_extension"):
        # MIXED (asymmetric activations): hardswish in the MobileNetV3 models goes negative (labels
        # agree with fp32 on 5-10 points more pixels); on ResNets it costs no speed (DeepLabV3-
        # ResNet50 at 520x520 on a 2-core AVX-512 CPU: 0.227 s vs 0.233 s with the default preset).
        int8 = nncf.quantize(fp32, dataset, subset_size=len(samples), preset=nncf.QuantizationPreset.MIXED)
    meta = {
        "owner": owner,
        "model": loaded.name,
        "weights": loaded.weights_tag,
        "format": "openvino-int8",
        "nncf": getattr(nncf, "__version__", "?"),
        "calibration": info,
    }
    _write_atomically(out, lambda dst: ov.save_model(int8, str(dst), compress_to_fp16=False), meta)
    return out


def _as_numpy(x: torch.Tensor):
    return x.detach().to("cpu", torch.float32).contiguous().numpy()


class _TorchRunner:
    """Eager PyTorch: ``loaded.model(x)["out"]`` on the model's device, logits returned on the CPU."""

    def __init__(self, model: nn.Module, device: torch.device) -> None:
        self.backend, self.precision, self.model_path = "torch", "fp32", None
        self.model = model.to(device).eval()
        self.device = device

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.to(self.device))["out"].float().cpu()


class _OnnxRuntimeRunner:
    """An ONNX Runtime session over the exported model; ``session`` is the InferenceSession."""

    def __init__(self, session: Any, path: Path) -> None:
        self.backend, self.precision, self.model_path = "onnxruntime", "fp32", path
        self.session = session

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(["logits"], {"image": _as_numpy(x)})[0])


class _OpenVINORunner:
    """One OpenVINO infer request; ``compiled_model`` is the CompiledModel (read its properties)."""

    def __init__(self, compiled_model: Any, path: Path, precision: str) -> None:
        self.backend, self.precision, self.model_path = "openvino", precision, path
        self.compiled_model = compiled_model
        self._request = compiled_model.create_infer_request()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        result = self._request.infer({0: _as_numpy(x)})  # outputs are copies (share_outputs=False)
        return torch.from_numpy(result[0])


def _onnxruntime_runner(loaded: LoadedModel, device: torch.device, threads: int | None) -> _OnnxRuntimeRunner:
    ort = _require("onnxruntime")
    path = export(loaded, "onnx")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or 0  # 0: ONNX Runtime's default (one per core)
    options.log_severity_level = 3  # errors only: no warnings on stderr
    providers: list[Any] = ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.index or 0}))
    return _OnnxRuntimeRunner(ort.InferenceSession(str(path), sess_options=options, providers=providers), path)


def _openvino_runner(
    loaded: LoadedModel,
    precision: str,
    calibration: Callable[[], Sequence[torch.Tensor]] | None,
    threads: int | None,
) -> _OpenVINORunner:
    ov = _require("openvino")
    import openvino.properties as props
    import openvino.properties.hint as hints

    if precision == "fp32":
        path = export(loaded, "openvino")
    else:
        folder = export_dir(loaded)
        path = folder / "model_int8.xml"
        if _read_sidecar(path, f"{folder.name}/openvino-int8") is None:
            if calibration is None:
                raise BackendError(
                    f"no int8 model of {loaded.name} with these weights is cached yet; pass calibration images "
                    "(a few photos like the ones to segment) to quantise it once"
                )
            path = quantize_int8(loaded, list(calibration()))
    config: dict[Any, Any] = {
        # f32, not the CPU plugin's default bf16 on CPUs with bf16 instructions: exact logits, and
        # without AMX also faster (DeepLabV3-ResNet50, 520x520, 2 AVX-512 cores: 0.93 s vs 1.68 s).
        # In int8 models it applies to the layers NNCF left in float.
        hints.inference_precision: ov.Type.f32,
        hints.performance_mode: hints.PerformanceMode.LATENCY,
    }
    if threads:
        config[props.inference_num_threads] = threads
    compiled = ov.Core().compile_model(str(path), "CPU", config)
    return _OpenVINORunner(compiled, path, precision)


def make_runner(
    loaded: LoadedModel,
    *,
    backend: str = "torch",
    precision: str = "fp32",
    device: torch.device | str = "cpu",
    calibration: Callable[[], Sequence[torch.Tensor]] | None = None,
    threads: int | None = None,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function from an (N, 3, H, W) float32 batch to its (N, C, H, W) float32 logits on the CPU.

    The result equals ``loaded.model(x)["out"]`` up to float rounding for fp32 (labels agree on
    all but a few pixels), and approximately for int8. N, H and W may change from call to call.
    A runner holds one inference request: use one runner per thread.

    Args:
        loaded: the model and weights.
        backend: ``"torch"`` (eager, on ``device``; moves ``loaded.model`` there), ``"onnxruntime"``
            (ONNX export, CUDA execution provider first when ``device`` is CUDA and the installed
            onnxruntime has it, else CPU) or ``"openvino"`` (OpenVINO IR on the CPU, f32
            inference precision, latency mode).
        precision: ``"fp32"``, or ``"int8"`` with openvino (NNCF post-training quantisation).
        device: where torch / onnxruntime run; openvino runs on the CPU only.
        calibration: for openvino int8, returns the calibration tensors (see :func:`quantize_int8`);
            called only when no int8 model of these weights is cached.
        threads: intra-op threads for onnxruntime / openvino (default: their own choice).

    Returns:
        The runner. Its ``backend``, ``precision`` and ``model_path`` attributes describe it; the
        onnxruntime runner has ``session``, the openvino one ``compiled_model``.

    Raises:
        BackendError: an invalid backend / precision / device combination, a missing package,
            or int8 without calibration images or a cached int8 model.
    """
    if backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise BackendError(f"unknown precision {precision!r}; valid backend/precision pairs: {_VALID}")
    if precision == "int8" and backend != "openvino":
        raise BackendError(
            f"int8 needs the openvino backend (NNCF quantisation); valid backend/precision pairs: {_VALID}"
        )
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise BackendError(f"threads must be a positive integer, got {threads!r}")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise BackendError(f"device {device!r}: not a device; use cpu or cuda") from e
    if backend == "torch":
        return _TorchRunner(loaded.model, dev)
    if backend == "onnxruntime":
        return _onnxruntime_runner(loaded, dev, threads)
    if dev.type != "cpu":
        raise BackendError(
            f"the openvino backend runs on the CPU, not {dev}; use device cpu, or the torch or onnxruntime backend"
        )
    return _openvino_runner(loaded, precision, calibration, threads)
