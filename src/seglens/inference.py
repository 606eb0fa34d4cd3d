"""Segmenter: preprocessing as the weights specify, batching, device, upsampling, argmax.

No printing and no files written here; the CLI and the web server build on this.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .io import DEFAULT_MAX_PIXELS, load_image, to_rgb
from .models import DEFAULT_MODEL, LoadedModel, load_model
from .visualize import ClassStat, class_stats, colorize, figure, overlay, voc_palette

__all__ = ["SegmentationResult", "Segmenter", "resolve_device", "upsample_argmax"]

T = TypeVar("T")

# Upsampled logits are C x H x W float32: 21 classes at 100 MP would be 8.4 GB. Above this many
# bytes, classes are upsampled a few at a time with a running max (same labels, bounded memory).
_UPSAMPLE_BUDGET_BYTES = 1024 * 2**20
# A 1000:1 panorama resized to a 520-pixel short side would be a 520 000-pixel-long tensor.
_MAX_MODEL_PIXELS = 520 * 520 * 64
_AUTOCAST = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}  # torch backend precisions


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA, then Apple MPS, then CPU; other values are checked to exist."""
    name = str(device)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine; use --device cpu or auto")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ValueError("--device mps: Apple MPS is not available on this machine; use --device cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"--device {name}: not a device; use auto, cpu, cuda or mps") from e


def upsample_argmax(logits: torch.Tensor, size: tuple[int, int], *, budget_bytes: int = _UPSAMPLE_BUDGET_BYTES) -> torch.Tensor:
    """Bilinear upsampling (align_corners=False) of one image's logits, then argmax over classes.

    Args:
        logits: (C, h, w) float tensor.
        size: output (H, W).
        budget_bytes: largest float32 block of upsampled logits held at once.

    Returns:
        (H, W) int64 tensor of class indices, equal to
        ``F.interpolate(logits[None], size, mode="bilinear", align_corners=False)[0].argmax(0)``;
        ties go to the lowest class index, as in ``argmax``. (Exact for logits as the models
        make them, h and w >= 65; PyTorch vectorises inputs under ~40 pixels across channels,
        where a channel slice may differ in the last bit.)
    """
    num_classes = logits.shape[0]
    chunk = max(1, budget_bytes // (size[0] * size[1] * 4))
    if chunk >= num_classes:
        return F.interpolate(logits[None], size=size, mode="bilinear", align_corners=False)[0].argmax(0)
    best_val = best_idx = None
    for start in range(0, num_classes, chunk):
        up = F.interpolate(logits[None, start : start + chunk], size=size, mode="bilinear", align_corners=False)[0]
        val, idx = up.max(0)
        del up
        if best_val is None:
            best_val, best_idx = val, idx
            continue
        better = val > best_val  # strict: earlier classes win ties, as argmax does
        torch.maximum(best_val, val, out=best_val)
        best_idx.masked_scatter_(better, idx[better] + start)
    return best_idx


class _Done:
    """A finished 'future' for reading in the caller's thread (workers=0)."""

    def __init__(self, value):
        self._value = value

    def result(self):
        return self._value


@dataclass(frozen=True, eq=False)
class SegmentationResult:
    """One image's segmentation.

    Attributes:
        labels: (H, W) uint8 class indices, H and W of the input image.
        image: the RGB input as segmented (PIL, EXIF orientation applied).
        categories: class names, index = label value.
        palette: (256, 3) uint8 colours, index = label value.
        seconds: wall time spent on this image (its share of a batch).
    """

    labels: np.ndarray
    image: Image.Image
    categories: tuple[str, ...]
    palette: np.ndarray = field(repr=False)
    seconds: float = 0.0

    @property
    def classes(self) -> list[ClassStat]:
        """Classes present, largest first, with pixel counts, fractions and colours."""
        return class_stats(self.labels, self.categories, self.palette)

    def colorize(self) -> np.ndarray:
        """(H, W, 3) uint8 colour mask."""
        return colorize(self.labels, self.palette)

    def overlay(self, alpha: float = 0.5) -> np.ndarray:
        """(H, W, 3) uint8 image with the colour mask blended in (background left as is)."""
        return overlay(self.image, self.labels, self.palette, alpha=alpha)

    def figure(self, *, title: str | None = None):
        """Matplotlib figure: image | colour mask, with a legend of the classes present."""
        return figure(self.image, self.labels, self.categories, self.palette, title=title)


class Segmenter:
    """Runs a torchvision segmentation network on images.

    Example::

        seg = Segmenter("deeplabv3_resnet50", weights="official", device="auto")
        result = seg("photo.jpg")
        result.labels            # (H, W) uint8
        result.classes           # [ClassStat(index=15, name='person', ...), ...]

    Args:
        model: a torchvision segmentation builder name, or an already loaded ``LoadedModel``.
        weights: ``"official"``, ``"random"`` or a local ``.pth`` / ``.safetensors`` path.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``.
        batch_size: images per forward pass; only images whose preprocessed sizes are equal
            share a batch (padding would change the labels near the borders).
        max_pixels: largest image accepted when reading paths.
        progress: show the weights download progress bar.
        seed: seed of the random init for ``weights="random"``.
        backend: ``"torch"``, or ``"onnxruntime"`` / ``"openvino"`` (exported once, cached).
        precision: torch: ``"fp32"`` (exact), ``"fp16"`` / ``"bf16"`` (autocast, for GPUs; slower
            on CPUs without AMX); openvino: ``"fp32"`` or ``"int8"`` (NNCF post-training quantised).
        channels_last: NHWC memory layout for the torch backend; default on for CPU and CUDA.
            Labels agree with the contiguous layout on >= 99.99% of pixels, not bit for bit.
        compile: ``torch.compile`` the model (first batches slow while it compiles).
        calibration: images for int8 quantisation (used once; the quantised model is cached).
    """

    def __init__(
        self,
        model: str | LoadedModel = DEFAULT_MODEL,
        *,
        weights: str | os.PathLike | None = "official",
        device: str | torch.device = "auto",
        batch_size: int = 1,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        progress: bool = True,
        seed: int = 0,
        backend: str = "torch",
        precision: str = "fp32",
        channels_last: bool | None = None,
        compile: bool = False,
        calibration: Sequence[Image.Image] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if backend == "openvino" and str(device) == "auto":
            device = "cpu"  # OpenVINO runs on the CPU here; "auto" must not pick a GPU for it
        self.device = resolve_device(device)
        self.loaded = model if isinstance(model, LoadedModel) else load_model(model, weights=weights, progress=progress, seed=seed)
        self.batch_size = batch_size
        self.max_pixels = max_pixels
        self.categories = self.loaded.categories
        if len(self.categories) > 256:
            raise ValueError(f"{len(self.categories)} classes do not fit uint8 label maps (at most 256)")
        self.palette = voc_palette(256)
        self.backend, self.precision = backend, precision
        self._runner = None
        if backend == "torch":
            if precision not in _AUTOCAST:
                raise ValueError(f"precision {precision!r} with the torch backend: choose {', '.join(_AUTOCAST)} (int8 needs --backend openvino)")
            # channels_last: about 1.25x faster convolutions on CPU (oneDNN) and on CUDA tensor cores.
            use_cl = self.device.type in ("cpu", "cuda") if channels_last is None else channels_last
            self.memory_format = torch.channels_last if use_cl else torch.contiguous_format
            self.model = self.loaded.model.to(self.device, memory_format=self.memory_format).eval()
            if compile:
                import torch._inductor.config as inductor_config

                # Freezing folds the (inference-only) weights and BatchNorm into the graph: about
                # 1.5x eager fp32 on CPU, measured. It is inductor's process-wide switch.
                inductor_config.freezing = True
                self.model = torch.compile(self.model)
        else:
            from .backends import make_runner

            self.memory_format = torch.contiguous_format
            self.model = self.loaded.model.eval()
            calib = (lambda: [self.preprocess(im) for im in calibration]) if calibration else None
            # Same thread count as torch, so backends are compared (and run) on equal terms.
            self._runner = make_runner(self.loaded, backend=backend, precision=precision, device=self.device, calibration=calib, threads=torch.get_num_threads())

    @torch.inference_mode()
    def run(self, batch: torch.Tensor) -> torch.Tensor:
        """The network alone: (N, 3, h, w) preprocessed batch -> (N, C, h, w) float32 logits."""
        if self._runner is not None:
            return self._runner(batch)
        x = batch.to(self.device, memory_format=self.memory_format)
        if self.precision == "fp32":
            return self.model(x)["out"].float()
        with torch.autocast(self.device.type, dtype=_AUTOCAST[self.precision]):
            return self.model(x)["out"].float()

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """(3, h, w) float32 tensor exactly as ``weights.transforms()`` makes it (short side 520)."""
        tensor = self.loaded.transforms(image)
        if tensor.shape[-2] * tensor.shape[-1] > _MAX_MODEL_PIXELS:
            w, h = image.size
            raise ValueError(f"aspect ratio {w}x{h} is too extreme for the model's 520-pixel short side; crop it first")
        return tensor

    def predict(self, images: Sequence[Image.Image]) -> list[tuple[np.ndarray, float]]:
        """Label maps for RGB PIL images of any sizes, in input order.

        Returns:
            One ``(labels, seconds)`` per image: labels (H, W) uint8 at the image's own size,
            seconds its share of the wall time.
        """
        return self.predict_tensors([self.preprocess(im) for im in images], [(im.height, im.width) for im in images])

    @torch.inference_mode()
    def predict_tensors(self, tensors: Sequence[torch.Tensor], sizes: Sequence[tuple[int, int]]) -> list[tuple[np.ndarray, float]]:
        """Like :meth:`predict`, for tensors from :meth:`preprocess` and the (H, W) to upsample to.

        Tensors of equal shape are batched together, ``batch_size`` at a time.
        """
        groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i, t in enumerate(tensors):
            groups[tuple(t.shape)].append(i)
        out: list[tuple[np.ndarray, float] | None] = [None] * len(tensors)
        for indices in groups.values():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                t0 = time.perf_counter()
                # contiguous: the upsampling below then takes the same kernel whatever the backend
                logits = self.run(torch.stack([tensors[i] for i in chunk])).contiguous()
                share = (time.perf_counter() - t0) / len(chunk)
                for j, i in enumerate(chunk):
                    t1 = time.perf_counter()
                    labels = upsample_argmax(logits[j], tuple(sizes[i])).to(torch.uint8).cpu().numpy()
                    out[i] = (labels, share + time.perf_counter() - t1)
        return out  # type: ignore[return-value]

    def stream(
        self,
        sources: Iterable[T],
        load: Callable[[T], Image.Image] | None = None,
        *,
        workers: int = 2,
        prefetch: int = 8,
    ) -> Iterator[tuple[T, SegmentationResult | Exception]]:
        """Segment many inputs with decoding overlapped with the model.

        ``workers`` threads read and preprocess up to ``prefetch`` inputs ahead (Pillow and torch
        release the GIL); the model runs ``batch_size`` inputs at a time in this thread.

        Args:
            sources: paths (or anything ``load`` accepts).
            load: source -> RGB PIL image; default :func:`seglens.io.load_image` with ``max_pixels``.
            workers: reading threads; 0 reads in this thread.
            prefetch: most inputs read ahead of the model (bounds memory).

        Yields:
            ``(source, result)`` in input order, or ``(source, exception)`` for an input that
            could not be read or preprocessed (the others go on).
        """
        load = load or (lambda src: load_image(src, max_pixels=self.max_pixels))

        def prepare(src):
            try:
                image = load(src)
                return src, image, self.preprocess(image)
            except Exception as e:  # noqa: BLE001 - reported per input by the caller
                return src, e, None

        pool = ThreadPoolExecutor(workers, thread_name_prefix="seglens-read") if workers > 0 else None
        try:
            ahead: deque = deque()
            it = iter(sources)
            exhausted = False
            while True:
                while not exhausted and len(ahead) < max(prefetch, self.batch_size):
                    try:
                        src = next(it)
                    except StopIteration:
                        exhausted = True
                        break
                    ahead.append(pool.submit(prepare, src) if pool else _Done(prepare(src)))
                if not ahead:
                    return
                chunk = [ahead.popleft().result() for _ in range(min(self.batch_size, len(ahead)))]
                good = [c for c in chunk if c[2] is not None]
                predictions = iter(self.predict_tensors([c[2] for c in good], [(c[1].height, c[1].width) for c in good]))
                for src, image, tensor in chunk:
                    if tensor is None:
                        yield src, image
                    else:
                        labels, seconds = next(predictions)
                        yield src, SegmentationResult(labels=labels, image=image, categories=self.categories, palette=self.palette, seconds=seconds)
        finally:
            if pool:
                pool.shutdown(wait=True, cancel_futures=True)

    def _as_image(self, item) -> Image.Image:
        if isinstance(item, Image.Image):
            return to_rgb(item)
        if isinstance(item, np.ndarray):
            if item.dtype != np.uint8 or item.ndim not in (2, 3):
                raise TypeError(f"arrays must be (H, W) or (H, W, 3) uint8, got {item.shape} {item.dtype}")
            return to_rgb(Image.fromarray(item))
        if isinstance(item, (str, os.PathLike, bytes)):
            return load_image(item, max_pixels=self.max_pixels)
        raise TypeError(f"cannot segment a {type(item).__name__}; pass a PIL image, a uint8 array or a path")

    def __call__(self, images):
        """Segment one image (PIL, (H, W[, 3]) uint8 array, or path) or a list of them.

        Returns a :class:`SegmentationResult`, or a list of them for a list input.
        """
        single = not isinstance(images, (list, tuple))
        pil = [self._as_image(x) for x in ([images] if single else images)]
        results = [
            SegmentationResult(labels=labels, image=im, categories=self.categories, palette=self.palette, seconds=sec)
            for im, (labels, sec) in zip(pil, self.predict(pil))
        ]
        return results[0] if single else results
