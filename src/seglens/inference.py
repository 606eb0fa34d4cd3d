"""Segmenter: preprocessing as the weights specify, batching, device, upsampling, argmax.

No printing and no files written here; the CLI and the web server build on this.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from PIL import Image

from ._logits import _confidence, _quantize, _ramp, _tile_starts, upsample_argmax
from .config import SegmenterConfig
from .io import load_image, to_rgb
from .models import DEFAULT_MODEL, LoadedModel, is_hf_model, load_model
from .refine import refine_labels
from .results import Prediction, SegmentationResult
from .shapes import _MAX_MODEL_PIXELS, ImageShapeError
from .shapes import check_size as _check_size
from .visualize import voc_palette

__all__ = [
    "ImageShapeError",
    "Prediction",
    "SegmentationResult",
    "Segmenter",
    "TTALogits",
    "resolve_device",
    "upsample_argmax",
]

T = TypeVar("T")

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


class _Done:
    """A finished 'future' for reading in the caller's thread (workers=0)."""

    def __init__(self, value):
        self._value = value

    def result(self):
        return self._value


class TTALogits(NamedTuple):
    """:meth:`Segmenter.logits`: the logits averaged over the augmentations, and the plain
    member's (scale 1, not mirrored) when it is among them, else None; (N, C, h, w) float32."""

    logits: torch.Tensor
    plain: torch.Tensor | None


class Segmenter:
    """Runs a segmentation network (torchvision's, or a Hugging Face checkpoint) on images.

    Example::

        seg = Segmenter("deeplabv3_resnet50", weights="official", device="auto")
        result = seg("photo.jpg")
        result.labels            # (H, W) uint8
        result.classes           # [ClassStat(index=15, name='person', ...), ...]

    Takes a :class:`seglens.SegmenterConfig` (``Segmenter(SegmenterConfig(...))``, no keywords
    then), or a model and the config's fields as keywords, which make one: both forms are checked
    by ``SegmenterConfig`` and leave it in :attr:`config`.

    Args:
        model_or_config: a :class:`~seglens.config.SegmenterConfig`; or the model: a torchvision
            segmentation builder name, ``"hf:<repo-or-folder>"`` (a Hugging Face transformers
            checkpoint, :mod:`seglens.hf`), or an already loaded ``LoadedModel``.
        weights: ``"official"``, ``"random"`` or a local ``.pth`` / ``.safetensors`` path.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``.
        batch_size: images per forward pass; only images whose preprocessed sizes are equal
            share a batch (padding would change the labels near the borders).
        max_pixels: largest image accepted when reading paths (shapes the model cannot take
            are refused from the header too: :meth:`check_size`).
        progress: show the weights download progress bar.
        seed: seed of the random init for ``weights="random"``.
        backend: ``"torch"``, or ``"onnxruntime"`` / ``"openvino"`` (exported once, cached).
        precision: torch: ``"fp32"`` (exact), ``"fp16"`` / ``"bf16"`` (autocast, for GPUs; slower
            on CPUs without AMX); openvino: ``"fp32"`` or ``"int8"`` (NNCF post-training quantised).
        channels_last: NHWC memory layout for the torch backend; default on for CPU and CUDA.
            Labels agree with the contiguous layout on >= 99.99% of pixels, not bit for bit.
        compile: ``torch.compile`` the model (first batches slow while it compiles).
        calibration: images for int8 quantisation (used once; the quantised model is cached).
        scale: ``None`` (default) resizes as the weights specify (torchvision: short side 520;
            Hugging Face: the model's image processor); a number runs the network on the image
            resized by that factor (1.0: full resolution), labels still at the input's size.
        tile: run the network window by window, ``tile`` x ``tile`` pixels of the (scaled) image,
            blending overlapping logits with weights that fall off toward window edges; memory
            is bounded by one row of windows (images whose row of windows would hold more than
            ``_MAX_MODEL_PIXELS`` pixels are refused, see :meth:`check_size`). Implies
            ``scale=1.0`` unless a scale is given.
        overlap: fraction of a window shared with its neighbour, 0 <= overlap < 1.
        confidence: also compute each pixel's max-softmax probability (results' ``confidence``).
        window_progress: called as ``window_progress(done, total)`` after each batch of windows
            of a tiled image (for a progress bar on huge images); None: not called.
    """

    def __init__(self, model_or_config: str | LoadedModel | SegmenterConfig = DEFAULT_MODEL, **kwargs: Any) -> None:
        if isinstance(model_or_config, SegmenterConfig):
            if kwargs:
                names = ", ".join(sorted(kwargs))
                raise TypeError(f"Segmenter(config) takes no keywords (got {names}); use config.replace(...)")
            config = model_or_config
        else:
            if "model" in kwargs:  # the old keyword name: Segmenter(model="fcn_resnet50")
                if model_or_config != DEFAULT_MODEL:
                    raise TypeError("Segmenter() got the model twice: positionally and as model=")
                model_or_config = kwargs.pop("model")
            try:
                config = SegmenterConfig(model_or_config, **kwargs)
            except TypeError as e:  # an unknown keyword: say Segmenter(), not SegmenterConfig.__init__()
                raise TypeError(str(e).replace("SegmenterConfig.__init__()", "Segmenter()")) from None
        self.config = config
        model, device, tile, scale = config.model, config.device, config.tile, config.scale
        backend, precision, calibration = config.backend, config.precision, config.calibration
        self.scale = 1.0 if (tile is not None and scale is None) else scale
        self.tile, self.overlap, self.confidence = tile, config.overlap, config.confidence
        self.refine = config.refine
        self.window_progress = config.window_progress
        if backend == "openvino" and str(device) == "auto":
            device = "cpu"  # OpenVINO runs on the CPU here; "auto" must not pick a GPU for it
        self.device = resolve_device(device)
        if isinstance(model, LoadedModel):
            self.loaded = model
        else:
            self.loaded = load_model(model, weights=config.weights, progress=config.progress, seed=config.seed)
        self.batch_size = config.batch_size
        self.max_pixels = config.max_pixels
        self.categories = self.loaded.categories
        if len(self.categories) > 256:
            raise ValueError(f"{len(self.categories)} classes do not fit uint8 label maps (at most 256)")
        self.palette = voc_palette(256) if self.loaded.palette is None else self.loaded.palette
        tf = self.loaded.transforms
        self._mean, self._std = self.loaded.normalize or (tuple(tf.mean), tuple(tf.std))
        self.backend, self.precision = backend, precision
        self._runner = None
        if backend == "torch":
            # channels_last: about 1.25x faster convolutions on CPU (oneDNN) and on CUDA tensor cores.
            use_cl = self.device.type in ("cpu", "cuda") if config.channels_last is None else config.channels_last
            self.memory_format = torch.channels_last if use_cl else torch.contiguous_format
            self.model = self.loaded.model.to(self.device, memory_format=self.memory_format).eval()
            if config.compile:
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
            self._runner = make_runner(
                self.loaded,
                backend=backend,
                precision=precision,
                device=self.device,
                calibration=calib,
                threads=torch.get_num_threads(),
            )

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

    def check_size(self, width: int, height: int) -> None:
        """Refuse, from its size alone, an image this Segmenter cannot process:
        :func:`seglens.shapes.check_size` with this Segmenter's ``scale``, ``tile`` and the
        weights' preprocessing. Nothing is decoded or resized: :func:`seglens.io.load_image`
        calls this with the size from the file's header (``check_size=``), :meth:`preprocess`
        before any resizing.

        Raises:
            ImageShapeError: with a one-line ``reason`` and a ``cli_hint`` that works.
        """
        _check_size(
            width,
            height,
            scale=self.scale,
            tile=self.tile,
            transforms=self.loaded.transforms,
            is_hf=is_hf_model(self.loaded.name),
        )

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """The network's input for one RGB image.

        Default: (3, h, w) float32 exactly as ``weights.transforms()`` makes it (short side 520).
        With ``scale``: the image resized by that factor (PIL bilinear, as torchvision's
        transforms resize), then scaled to 0..1 and normalised with the weights' mean and std.
        With ``tile``: (3, h, w) uint8 of the scaled image; windows are normalised one by one.

        Raises:
            ImageShapeError: from :meth:`check_size`, before any resizing.
        """
        w, h = image.size
        self.check_size(w, h)
        if self.scale is None:
            tensor = self.loaded.transforms(image)
            if tensor.shape[-2] * tensor.shape[-1] > _MAX_MODEL_PIXELS:  # a preprocessing check_size cannot compute
                reason = (
                    f"image is {w}x{h}: the model's preprocessing made {tensor.shape[-1]}x{tensor.shape[-2]} of it, "
                    f"above the limit of {_MAX_MODEL_PIXELS} pixels for one pass"
                )
                raise ImageShapeError((w, h), reason, "use --tile 512 (full resolution, in windows) or crop it")
            return tensor
        size = (max(1, round(w * self.scale)), max(1, round(h * self.scale)))
        scaled = image if size == (w, h) else image.resize(size, Image.Resampling.BILINEAR)
        pixels = TF.pil_to_tensor(scaled)
        return pixels if self.tile is not None else self._normalize(pixels)

    def _normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 (..., 3, h, w) -> float32 normalised, as torchvision's SemanticSegmentation does."""
        return TF.normalize(TF.convert_image_dtype(pixels, torch.float), mean=self._mean, std=self._std)

    # --- for evaluation (seglens.evaluation): the protocols' inputs, test-time augmentation ---

    @property
    def reference_short_side(self) -> int | None:
        """The short side torchvision's reference evaluation (``SegmentationPresetEval``) resizes
        images and targets to: the weights' preset ``resize_size`` (520 for torchvision's
        weights); None for models without torchvision's preset (Hugging Face checkpoints)."""
        tf = self.loaded.transforms
        if not all(hasattr(tf, a) for a in ("resize_size", "mean", "std")) or not tf.resize_size:
            return None
        return int(tf.resize_size[0])

    def network_input(self, image: Image.Image, *, resize: bool = True) -> torch.Tensor:
        """(3, h, w) float32 network input of one RGB image, for :meth:`logits`.

        Args:
            image: an RGB image.
            resize: True: as :meth:`preprocess` makes it (the weights' resize, or ``scale``);
                False: the image at its own size, scaled to 0..1 and normalised with the
                weights' mean and std (what torchvision's preset does after its resize).

        Raises:
            ValueError: for a tiled Segmenter (``tile``): its input is windows, not one tensor.
            ImageShapeError: as :meth:`preprocess` (with ``resize``).
        """
        if self.tile is not None:
            raise ValueError("a tiled Segmenter (tile=...) runs windows, not one network input; use one without tile")
        return self.preprocess(image) if resize else self._normalize(TF.pil_to_tensor(image))

    @torch.inference_mode()
    def logits(self, batch: torch.Tensor, *, scales: Sequence[float] = (1.0,), flip: bool = False) -> TTALogits:
        """Logits of a batch of network inputs, averaged over test-time augmentations.

        For each scale the batch is resized (bilinear, antialiased when shrinking) and run, also
        mirrored with ``flip`` (its logits mirrored back), and the logits resized back to the
        input's size; the mean of all of them is returned. ``scales=(1.0,)`` without flip: the
        network's logits as they are.

        Args:
            batch: (N, 3, h, w) inputs from :meth:`network_input`, stacked.
            scales: factors of the input's size.
            flip: also run each scale mirrored left-right.

        Returns:
            TTALogits ``(logits, plain)``: (N, C, h, w) float32 on the model's device.
        """
        if not scales:
            raise ValueError("scales: give at least one scale, e.g. (1.0,)")
        h, w = batch.shape[-2:]
        total, count, plain = None, 0, None
        for s in scales:
            xs = batch
            if s != 1.0:
                size = (max(1, round(h * s)), max(1, round(w * s)))
                xs = F.interpolate(batch, size=size, mode="bilinear", align_corners=False, antialias=s < 1)
            for mirrored in (False, True) if flip else (False,):
                out = self.run(xs.flip(-1) if mirrored else xs).float().contiguous()
                if mirrored:
                    out = out.flip(-1)
                if s != 1.0:
                    out = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False)
                if s == 1.0 and not mirrored:
                    plain = out
                total = out.clone() if total is None else total.add_(out)
                count += 1
        return TTALogits(total / count, plain)

    def predict(self, images: Sequence[Image.Image]) -> list[Prediction]:
        """Label maps for RGB PIL images of any sizes, in input order.

        Returns:
            One :class:`Prediction` per image: ``labels`` (H, W) uint8 at the image's own size,
            ``seconds`` its share of the wall time, ``confidence`` when the Segmenter computes it.
        """
        return self.predict_tensors(
            [self.preprocess(im) for im in images], [(im.height, im.width) for im in images], images=images
        )

    @torch.inference_mode()
    def predict_tensors(
        self,
        tensors: Sequence[torch.Tensor],
        sizes: Sequence[tuple[int, int]],
        *,
        images: Sequence[Image.Image] | None = None,
    ) -> list[Prediction]:
        """Like :meth:`predict`, for tensors from :meth:`preprocess` and the (H, W) to upsample to.

        Tensors of equal shape are batched together, ``batch_size`` at a time. ``images``: the
        RGB images at ``sizes``, which ``refine`` with ``guided`` needs as its guide.
        Returns one :class:`Prediction` per tensor, in order.
        """
        if self.refine and any(s.needs_probabilities for s in self.refine) and images is None:
            raise ValueError("refine guided needs the images: pass images= to predict_tensors")
        out: list[Prediction | None] = [None] * len(tensors)
        if self.tile is not None:
            for i, t in enumerate(tensors):
                t0 = time.perf_counter()
                labels, conf = self._tiled(t, tuple(sizes[i]))  # conf: None without self.confidence
                if self.refine:  # small only (guided is refused with tile)
                    labels = refine_labels(labels, self.refine)
                out[i] = Prediction(labels, time.perf_counter() - t0, conf)
            return out  # type: ignore[return-value]
        groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i, t in enumerate(tensors):
            groups[tuple(t.shape)].append(i)
        for indices in groups.values():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                t0 = time.perf_counter()
                # contiguous: the upsampling below then takes the same kernel whatever the backend
                logits = self.run(torch.stack([tensors[i] for i in chunk])).contiguous()
                share = (time.perf_counter() - t0) / len(chunk)
                for j, i in enumerate(chunk):
                    t1 = time.perf_counter()
                    conf = None
                    if self.confidence:
                        labels, raw = upsample_argmax(
                            logits[j], tuple(sizes[i]), confidence=True, scores=self.loaded.scores
                        )
                        conf = _quantize(raw)
                    else:
                        labels = upsample_argmax(logits[j], tuple(sizes[i]))
                    labels = labels.to(torch.uint8).cpu().numpy()
                    if self.refine:
                        labels = self._refined(labels, logits[j], tuple(sizes[i]), images[i] if images else None)
                    out[i] = Prediction(labels, share + time.perf_counter() - t1, conf)
        return out  # type: ignore[return-value]

    def labels_from_logits(
        self, logits: torch.Tensor, size: tuple[int, int], image: Image.Image | None = None
    ) -> np.ndarray:
        """(H, W) uint8 labels of one image's (C, h, w) logits at ``size``: bilinear upsampling and
        argmax (:func:`upsample_argmax`), then ``refine`` (``image``: the RGB image at ``size``,
        the guide ``guided`` needs)."""
        same = tuple(logits.shape[-2:]) == tuple(size)
        labels = (logits.argmax(0) if same else upsample_argmax(logits, tuple(size))).to(torch.uint8).cpu().numpy()
        return self._refined(labels, logits, tuple(size), image) if self.refine else labels

    def _refined(self, labels: np.ndarray, logits: torch.Tensor, size: tuple[int, int], image) -> np.ndarray:
        probabilities = None
        if any(s.needs_probabilities for s in self.refine):
            up = F.interpolate(logits[None].float(), size=size, mode="bilinear", align_corners=False)[0]
            if self.loaded.scores == "logits":
                probabilities = torch.softmax(up, 0).cpu().numpy()
            else:  # probability-like scores (Mask2Former's): normalised as they are
                up = up.clamp_min(0)
                probabilities = (up / up.sum(0).clamp_min(1e-12)).cpu().numpy()
        return refine_labels(labels, self.refine, probabilities=probabilities, image=image)

    def _tiled(self, pixels: torch.Tensor, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None]:
        """Sliding-window inference on one (3, h, w) uint8 image; labels (and confidence) at ``size``.

        Windows of one row are batched (``batch_size`` at a time); the blended logits are held for
        one row of windows only: rows no later window touches are finished (argmax, confidence)
        and dropped, so memory is ~ classes x tile x width floats, not classes x height x width.
        """
        _, h, w = pixels.shape
        th, tw = min(self.tile, h), min(self.tile, w)
        stride = max(1, round(self.tile * (1 - self.overlap)))
        ramp = self.tile - stride
        ys, xs = _tile_starts(h, th, stride), _tile_starts(w, tw, stride)
        labels = np.empty((h, w), np.uint8)
        conf = np.empty((h, w), np.uint8) if self.confidence else None
        acc = wsum = None
        base = 0  # image row of acc's first row
        done, total = 0, len(ys) * len(xs)

        def finish(rows: int) -> None:  # rows base .. base+rows are final: argmax, confidence
            for r0 in range(0, rows, 64):  # a few rows at a time: temporaries stay small
                r1 = min(rows, r0 + 64)
                block = acc[:, r0:r1] / wsum[r0:r1]
                labels[base + r0 : base + r1] = block.argmax(0).to(torch.uint8).numpy()
                if conf is not None:
                    conf[base + r0 : base + r1] = _quantize(_confidence(block, self.loaded.scores))

        for r, y in enumerate(ys):
            if r == 0:
                wsum = torch.zeros(th, w)  # acc is made when the first logits tell the class count
            else:  # rows above y are done; shift the band down to start at y
                finish(y - base)
                keep = base + acc.shape[1] - y
                new_acc, new_w = torch.zeros(acc.shape[0], th, w), torch.zeros(th, w)
                new_acc[:, :keep], new_w[:keep] = acc[:, y - base :], wsum[y - base :]
                acc, wsum = new_acc, new_w
            base = y
            wy = _ramp(th, ramp, rise=r > 0, fall=r < len(ys) - 1)
            for start in range(0, len(xs), self.batch_size):
                cols = list(enumerate(xs))[start : start + self.batch_size]
                batch = self._normalize(torch.stack([pixels[:, y : y + th, x : x + tw] for _, x in cols]))
                logits = self.run(batch).float()
                if logits.shape[-2:] != (th, tw):  # e.g. SegFormer's 1/4-resolution logits
                    logits = F.interpolate(logits, size=(th, tw), mode="bilinear", align_corners=False)
                logits = logits.cpu()
                if acc is None:
                    acc = torch.zeros(logits.shape[1], th, w)
                for j, (c, x) in enumerate(cols):
                    weight = wy[:, None] * _ramp(tw, ramp, rise=c > 0, fall=c < len(xs) - 1)[None, :]
                    acc[:, :, x : x + tw].addcmul_(logits[j], weight)
                    wsum[:, x : x + tw] += weight
                done += len(cols)
                if self.window_progress is not None:
                    self.window_progress(done, total)
        finish(h - base)
        if (h, w) != tuple(size):  # scaled input: labels (nearest) and confidence back to the image's size
            out_size = (size[1], size[0])
            labels = np.asarray(Image.fromarray(labels).resize(out_size, Image.Resampling.NEAREST))
            if conf is not None:
                conf = np.asarray(Image.fromarray(conf).resize(out_size, Image.Resampling.BILINEAR))
        return labels, conf

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
            load: source -> RGB PIL image; default :func:`seglens.io.load_image` with ``max_pixels``
                and ``check_size=self.check_size`` (shapes refused from the header, undecoded).
            workers: reading threads; 0 reads in this thread.
            prefetch: most inputs read ahead of the model (bounds memory).

        Yields:
            ``(source, result)`` in input order, or ``(source, exception)`` for an input that
            could not be read or preprocessed (the others go on).
        """
        load = load or (lambda src: load_image(src, max_pixels=self.max_pixels, check_size=self.check_size))

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
                predictions = iter(
                    self.predict_tensors(
                        [c[2] for c in good], [(c[1].height, c[1].width) for c in good], images=[c[1] for c in good]
                    )
                )
                for src, image, tensor in chunk:
                    if tensor is None:
                        yield src, image
                    else:
                        p = next(predictions)
                        yield (
                            src,
                            SegmentationResult(
                                labels=p.labels,
                                image=image,
                                categories=self.categories,
                                palette=self.palette,
                                seconds=p.seconds,
                                confidence=p.confidence,
                            ),
                        )
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
            return load_image(item, max_pixels=self.max_pixels, check_size=self.check_size)
        raise TypeError(f"cannot segment a {type(item).__name__}; pass a PIL image, a uint8 array or a path")

    def __call__(self, images):
        """Segment one image (PIL, (H, W[, 3]) uint8 array, or path) or a list of them.

        Returns a :class:`SegmentationResult`, or a list of them for a list input.
        """
        single = not isinstance(images, (list, tuple))
        pil = [self._as_image(x) for x in ([images] if single else images)]
        results = [
            SegmentationResult(
                labels=p.labels,
                image=im,
                categories=self.categories,
                palette=self.palette,
                seconds=p.seconds,
                confidence=p.confidence,
            )
            for im, p in zip(pil, self.predict(pil))
        ]
        return results[0] if single else results
