"""``seglens bench``: seglens configurations against the seed's naive loop, on the same images.

Every run measures, in one process and in this order:

1. a GEMM roofline: fp32 ``torch.mm`` of two square matrices, best of a few, at the thread count
   the configurations use;
2. ``naive``, the seed's way, always first: one image at a time, ``Image.open(path).convert("RGB")``,
   ``weights.transforms()``, eager fp32 contiguous ``model(x)["out"]`` under ``torch.no_grad``,
   bilinear upsampling to the image's size, argmax, a per-class Python colouring loop and
   ``Image.fromarray(rgb).save(png)`` (with the correct 21-colour VOC palette). The network is the
   one seglens builds (same weights, auxiliary head dropped as ``load_model`` does), so naive and
   the configurations differ only in how they run it, not in what they run;
3. each configuration: the model built afresh, then seglens' own pipeline, the one ``seglens
   segment`` runs (:func:`seglens.pipeline.segment` with the ready Segmenter: decoding in
   ``workers`` threads, ``Segmenter.stream``'s batching, indexed mask PNGs encoded in ``workers``
   threads, inline for ``workers=0``; its ``summary.json`` too).

Honesty rules: every entry gets the same ``n`` images in the same order (``images`` cycled); warm-up
(``warmup`` passes over the distinct images, so every input shape is seen before timing) is
written to ``_warmup/`` and excluded; the timed pass writes ``n`` mask files under ``work_dir``
and the agreement with ``naive`` is computed afterwards from the files on disk, pixel by pixel.

Per entry: images/s end to end (decode -> mask file written); model-only latency (the network
call alone -- ``seg.run`` or naive's ``model(x)["out"]`` -- timed per batch in a separate pass after
the warm-up, through ``Segmenter.stream`` so batched as the pipeline batches, divided by the images
in the batch; p50 is the median); effective GFLOP/s (2 x the
weights' ``_ops`` multiply-adds at 520x520, scaled by the model input's h*w/520^2, over the call
time; median over calls) and its share of the roofline; peak RSS of the whole process (sampled by
a background thread) during warm-up and measurement. Entries run one after another in one
process, so RSS includes what the process already holds (libraries, allocator caches).

No printing here: :func:`run_bench` returns rows and meta, :func:`format_table` a string.
"""

from __future__ import annotations

import contextlib
import gc
import os
import platform
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ._bench_configs import BACKENDS, PRESETS, BenchConfig, default_configs, parse_configs
from ._bench_machine import _cpu_name, _load_average, _peak_rss, _sync, _versions, gemm_roofline
from .inference import Segmenter, resolve_device
from .io import InputImage, load_image
from .models import load_model, model_info
from .visualize import voc_palette

__all__ = [
    "BACKENDS",
    "PRESETS",
    "ROW_KEYS",
    "BenchConfig",
    "default_configs",
    "format_table",
    "gemm_roofline",
    "naive_colorize",
    "naive_predict",
    "parse_configs",
    "run_bench",
]

_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "int8": "int8"}
_REFERENCE_PIXELS = 520 * 520  # torchvision's "_ops" meta counts multiply-adds of a 520x520 input
_GEMM_SIZE, _GEMM_REPEATS = 2048, 5  # 17 GFLOP per product: long enough to time, short enough to repeat
ROW_KEYS = (
    "name",
    "images_per_s",
    "speedup_vs_naive",
    "agreement_vs_naive",
    "latency_p50_ms",
    "latency_p95_ms",
    "gflops_per_s",
    "roofline_pct",
    "peak_rss_mb",
    "backend",
    "precision",
    "dtype",
    "batch_size",
    "threads",
    "device",
)


def naive_predict(
    model: torch.nn.Module, transforms: Callable, image: Image.Image, *, device: str | torch.device = "cpu"
) -> np.ndarray:
    """The seed's inference for one RGB image: transforms -> ``model(x)["out"]`` -> bilinear
    upsampling to the image's (H, W) -> argmax. Returns (H, W) int64 class indices."""
    x = transforms(image).unsqueeze(0).to(device)
    with torch.no_grad():
        out = model(x)["out"]
        up = F.interpolate(out, size=(image.height, image.width), mode="bilinear", align_corners=False)
        return up.argmax(1)[0].cpu().numpy()


def naive_colorize(preds: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """The seed's colouring: one boolean mask per class. (H, W) labels -> (H, W, 3) uint8."""
    rgb = np.zeros((*preds.shape, 3), dtype=np.uint8)
    for label in range(len(colors)):
        rgb[preds == label] = colors[label]
    return rgb


def run_bench(
    model: str,
    *,
    weights: str = "random",
    images: Sequence[Path],
    n: int,
    configs: Sequence[BenchConfig],
    device: str = "cpu",
    warmup: int = 1,
    work_dir: Path,
    progress: Callable[[str], None] | None = None,
    calibration: Sequence[Path] | None = None,
) -> tuple[list[dict], dict]:
    """Measure ``naive`` and each configuration on the same ``n`` images (``images`` cycled).

    Args:
        model: a torchvision segmentation builder name.
        weights: "random", "official" or a state-dict path; each entry loads its own fresh copy.
        images: image files; the first ``min(n, len(images))`` are the distinct ones used.
        n: images per timed pass.
        configs: what to compare with ``naive`` (which always runs first).
        device: "cpu", "cuda", ... (also the roofline's device).
        warmup: untimed passes over the distinct images before each timed pass.
        work_dir: masks go to ``work_dir/NN_name/`` (warm-up ones to ``.../_warmup/``).
        progress: called with one-line status messages.
        calibration: images for int8 calibration; default the distinct benchmark images.

    Returns:
        ``(rows, meta)``: one dict per entry, naive first, with at least :data:`ROW_KEYS`;
        configurations whose backend cannot be imported, or that fail, are left out of the rows
        and listed in ``meta["skipped"]`` with the reason.
    """
    if n < 1 or warmup < 0 or not images:
        raise ValueError(
            f"need n >= 1, warmup >= 0 and at least one image; got n={n}, warmup={warmup}, {len(images)} images"
        )
    say = progress or (lambda message: None)
    paths = [Path(p) for p in images]
    if str(weights) not in ("official", "random"):  # a trained file names its own architecture
        model = load_model(model, weights=weights, progress=False).name
    plan = _Plan(
        model=model,
        weights=str(weights),
        distinct=tuple(paths[: min(n, len(paths))]),
        sequence=tuple(paths[k % len(paths)] for k in range(n)),
        device=resolve_device(device),
        warmup=warmup,
        gmacs=model_info(model).gflops,
    )
    threads = torch.get_num_threads()
    load_before = _load_average()
    common = {"threads": threads, "device": str(plan.device), "n_images": n}
    say(f"GEMM roofline (fp32 torch.mm, {threads} threads)")
    # Measured again before every entry and the best kept: a busy moment cannot lower the roof.
    rooflines = [gemm_roofline(size=_GEMM_SIZE, repeats=_GEMM_REPEATS, device=str(plan.device))]

    say("naive: the seed's loop")
    naive, naive_files, inputs, colors = _bench_naive(plan, Path(work_dir) / "00_naive")
    rows = [{**naive, **common, "load_avg_1m": _load_average()}]
    int8 = any(c.precision == "int8" for c in configs)
    calib = [load_image(p) for p in (calibration if calibration is not None else plan.distinct)] if int8 else None
    skipped: list[dict] = []
    for i, config in enumerate(configs, start=1):
        gc.collect()  # the previous entry's model and buffers, before this one's RSS is sampled
        rooflines.append(gemm_roofline(size=_GEMM_SIZE, repeats=_GEMM_REPEATS, device=str(plan.device)))
        say(f"{config.name}: {config.backend} {config.precision}, batch {config.batch_size}, {config.workers} workers")
        folder = Path(work_dir) / f"{i:02d}_{re.sub(r'[^A-Za-z0-9._=-]+', '_', config.name)}"
        try:
            row, files = _bench_config(plan, config, folder, calib)
            row["agreement_vs_naive"] = _agreement(naive_files, files, colors)
        except Exception as e:  # noqa: BLE001 - one broken backend must not lose the others' numbers
            why = (
                "unavailable"
                if isinstance(e, ImportError) or type(e).__name__ == "BackendError"
                else f"failed: {type(e).__name__}"
            )
            skipped.append({"name": config.name, "reason": f"{why}: {e}"})
            say(f"{config.name}: skipped ({skipped[-1]['reason']})")
            continue
        rows.append({**common, **row, "load_avg_1m": _load_average()})
    roofline = max(rooflines)
    for row in rows:
        row["speedup_vs_naive"] = row["images_per_s"] / rows[0]["images_per_s"]
        row["roofline_pct"] = 100 * row["gflops_per_s"] / roofline
    meta = _meta(plan, threads, inputs, roofline, configs, skipped, calibration, Path(work_dir))
    meta["load_average"] = {"start": load_before, "end": _load_average()}
    meta["roofline_samples_gflops"] = rooflines
    return [{k: row[k] for k in (*ROW_KEYS, *sorted(set(row) - set(ROW_KEYS)))} for row in rows], meta


@dataclass(frozen=True)
class _Plan:
    """What every entry of one run shares."""

    model: str
    weights: str
    distinct: tuple[Path, ...]  # warm-up passes go over these
    sequence: tuple[Path, ...]  # the n images of a timed pass, in order
    device: torch.device
    warmup: int
    gmacs: float  # torchvision's "_ops": G multiply-adds per 520x520 image


def _bench_naive(plan: _Plan, folder: Path) -> tuple[dict, list[Path], dict[Path, tuple[int, int]], np.ndarray]:
    """The seed's loop, timed; returns (row, mask files, model input (h, w) per image, class colours)."""
    dev, distinct, sequence = plan.device, plan.distinct, plan.sequence
    loaded = load_model(plan.model, weights=plan.weights, progress=False)
    net, transforms = loaded.model.to(dev).eval(), loaded.transforms
    colors = voc_palette(len(loaded.categories))
    files = _fresh_outputs(folder, sequence)

    def one(path: Path, out: Path) -> None:
        with Image.open(path) as im:
            image = im.convert("RGB")
        Image.fromarray(naive_colorize(naive_predict(net, transforms, image, device=dev), colors)).save(out)

    with _peak_rss() as rss:
        for _ in range(plan.warmup):
            for path, out in zip(distinct, _fresh_outputs(folder / "_warmup", distinct)):
                one(path, out)
        t0 = time.perf_counter()
        for path, out in zip(sequence, files):
            one(path, out)
        seconds = time.perf_counter() - t0
        tensors = {}
        for p in distinct:
            with Image.open(p) as im:
                tensors[p] = transforms(im.convert("RGB"))
        timer = _CallTimer(lambda x: net(x.to(dev))["out"], dev)
        with torch.no_grad():
            for p in sequence:  # one image per call, as the seed's loop
                timer(tensors[p][None])
        latency = timer.latency(plan.gmacs)
    inputs = {p: tuple(tensors[p].shape[-2:]) for p in distinct}
    row = {
        "name": "naive",
        "images_per_s": len(sequence) / seconds,
        "agreement_vs_naive": 1.0,
        **latency,
        "peak_rss_mb": rss.mb,
        "backend": "torch",
        "precision": "fp32",
        "dtype": "float32",
        "batch_size": 1,
        "channels_last": False,
        "workers": 0,
        "compile": False,
        "seconds": seconds,
        "setup_s": 0.0,
    }
    return row, files, inputs, colors


def _bench_config(
    plan: _Plan, config: BenchConfig, folder: Path, calib: list[Image.Image] | None
) -> tuple[dict, list[Path]]:
    """One configuration, timed through seglens' pipeline; returns (row, mask files)."""
    distinct, sequence = plan.distinct, plan.sequence
    loaded = load_model(plan.model, weights=plan.weights, progress=False)  # fresh: Segmenter may convert it in place
    with _peak_rss() as setup_rss:
        t0 = time.perf_counter()
        seg = Segmenter(
            loaded,
            device=plan.device,
            batch_size=config.batch_size,
            backend=config.backend,
            precision=config.precision,
            channels_last=config.channels_last,
            compile=config.compile,
            calibration=calib if config.precision == "int8" else None,
            progress=False,
        )
        setup_s = time.perf_counter() - t0
    files = _fresh_outputs(folder, sequence)
    with _peak_rss() as rss:
        for _ in range(plan.warmup):
            _segment_pass(seg, distinct, _fresh_outputs(folder / "_warmup", distinct), config.workers, config.outputs)
        t0 = time.perf_counter()
        _segment_pass(seg, sequence, files, config.workers, config.outputs)
        seconds = time.perf_counter() - t0
        decoded = {p: load_image(p) for p in distinct}
        latency = _stream_calls(seg, [decoded[p] for p in sequence], plan.device).latency(plan.gmacs)
    row = {
        "name": config.name,
        "images_per_s": len(sequence) / seconds,
        **latency,
        "peak_rss_mb": rss.mb,
        "backend": config.backend,
        "precision": config.precision,
        "dtype": _DTYPES[config.precision],
        "batch_size": config.batch_size,
        "channels_last": config.channels_last if config.backend == "torch" else False,
        "workers": config.workers,
        "compile": config.compile,
        "seconds": seconds,
        "setup_s": setup_s,
        "setup_peak_rss_mb": setup_rss.mb,
        "threads": _backend_threads(seg),
        "model_file": str(getattr(getattr(seg, "_runner", None), "model_path", None) or "") or None,
    }
    return row, files


def _backend_threads(seg: Segmenter) -> int:
    """Intra-op threads the model call really uses: torch's, or what the backend's session reports."""
    runner = getattr(seg, "_runner", None)  # Segmenter's backend runner (None for torch)
    with contextlib.suppress(Exception):  # a runner without these properties: torch's count below
        if hasattr(runner, "compiled_model"):  # OpenVINO
            return int(runner.compiled_model.get_property("INFERENCE_NUM_THREADS"))
        if hasattr(runner, "session"):  # ONNX Runtime: 0 means its default, one per physical core
            import psutil

            return runner.session.get_session_options().intra_op_num_threads or psutil.cpu_count(logical=False) or 1
    return torch.get_num_threads()


def _segment_pass(
    seg: Segmenter, sources: Sequence[Path], outputs: Sequence[Path], workers: int, kinds: Sequence[str] = ("mask",)
) -> None:
    """One pass of the pipeline ``seglens segment`` runs (:func:`seglens.pipeline.segment`, with
    ``seg`` as it is): decode -> segment -> indexed mask PNG ``outputs[k]`` for ``sources[k]``
    (all in one folder; with ``kinds``, the overlay and figure next to it), ``workers`` decoding
    and ``workers`` encoding threads."""
    from .pipeline import segment

    items = [InputImage(path=p, name=out.stem) for p, out in zip(sources, outputs, strict=True)]
    summary = segment(
        items, outputs[0].parent, segmenter=seg, outputs=tuple(kinds), workers=workers, writers=workers, strict=True
    )
    if summary.failures:
        raise RuntimeError(f"{summary.failures[0]['input']}: {summary.failures[0]['error']}")


class _CallTimer:
    """Wraps a network call and records each call's time and input shape (device synchronised)."""

    def __init__(self, call: Callable[[torch.Tensor], Any], dev: torch.device) -> None:
        self.call, self.dev = call, dev
        self.calls: list[tuple[float, tuple[int, ...]]] = []  # (seconds, batch shape)

    def __call__(self, batch: torch.Tensor) -> Any:
        _sync(self.dev)
        t0 = time.perf_counter()
        out = self.call(batch)
        _sync(self.dev)
        self.calls.append((time.perf_counter() - t0, tuple(batch.shape)))
        return out

    def latency(self, gmacs: float) -> dict:
        """Per-image latency = call time / images in the call; GFLOP/s of each call."""
        per_image, rates = [], []
        for dt, shape in self.calls:
            n, h, w = shape[0], shape[-2], shape[-1]
            per_image.append(dt / n)
            rates.append(2 * gmacs * 1e9 * n * h * w / _REFERENCE_PIXELS / dt / 1e9)
        return {
            "latency_p50_ms": 1000 * float(np.percentile(per_image, 50)),
            "latency_p95_ms": 1000 * float(np.percentile(per_image, 95)),
            "gflops_per_s": float(np.median(rates)),
            "latency_calls": len(per_image),
        }


def _stream_calls(seg: Segmenter, images: Sequence[Image.Image], dev: torch.device) -> _CallTimer:
    """The network calls of one ``seg.stream`` pass over decoded ``images``, timed: batched
    exactly as the pipeline's stream batches them (consecutive chunks of ``batch_size``, split
    by shape within a chunk). Preprocessing, upsampling and argmax run but are not timed."""
    timer = _CallTimer(seg.run, dev)
    seg.run = timer  # the instance attribute shadows the method for this pass
    try:
        for image, result in seg.stream(images, load=lambda im: im, workers=0):
            if isinstance(result, Exception):
                raise result
    finally:
        del seg.run
    return timer


def _fresh_outputs(folder: Path, sources: Sequence[Path]) -> list[Path]:
    """``folder/KKKK_stem.png`` per source; stale files of those names are removed first, so a
    mask that was not written cannot be read back from an earlier run."""
    folder.mkdir(parents=True, exist_ok=True)
    files = [folder / f"{k:04d}_{p.stem}.png" for k, p in enumerate(sources)]
    for f in files:
        f.unlink(missing_ok=True)
    return files


def _read_labels(path: Path, colors: np.ndarray) -> np.ndarray:
    """Labels from a mask file: an indexed PNG's values, or an RGB PNG mapped back through ``colors``."""
    with Image.open(path) as im:
        if im.mode == "P":
            return np.asarray(im)
        rgb = np.asarray(im.convert("RGB")).astype(np.int32)
    packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    keys = (colors[:, 0].astype(np.int32) << 16) | (colors[:, 1].astype(np.int32) << 8) | colors[:, 2]
    order = np.argsort(keys)
    pos = np.clip(np.searchsorted(keys[order], packed), 0, len(keys) - 1)
    if not np.array_equal(keys[order][pos], packed):
        raise ValueError(f"{path}: colours outside the {len(colors)}-class palette")
    return order[pos].astype(np.uint8)


def _agreement(reference: Sequence[Path], files: Sequence[Path], colors: np.ndarray) -> float:
    """Fraction of equal pixels over all images, read back from the written files. An image whose
    mask has another size than the reference counts as all pixels different."""
    equal = total = 0
    for ref_path, path in zip(reference, files, strict=True):
        if not path.is_file():
            raise RuntimeError(f"{path}: mask was not written")
        ref, labels = _read_labels(ref_path, colors), _read_labels(path, colors)
        total += ref.size
        equal += int((ref == labels).sum()) if ref.shape == labels.shape else 0
    return equal / total


def _meta(
    plan: _Plan,
    threads: int,
    inputs: dict[Path, tuple[int, int]],
    roofline: float,
    configs: Sequence[BenchConfig],
    skipped: list[dict],
    calibration: Sequence[Path] | None,
    work_dir: Path,
) -> dict:
    dev = plan.device
    device_name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else None
    images = []
    for p in plan.distinct:
        with Image.open(p) as im:
            images.append({"path": str(p), "width": im.width, "height": im.height, "model_input_hw": list(inputs[p])})
    return {
        "model": plan.model,
        "weights": plan.weights,
        "gmacs_520": plan.gmacs,
        "n_images": len(plan.sequence),
        "distinct_images": len(plan.distinct),
        "warmup_passes": plan.warmup,
        "device": str(dev),
        "device_name": device_name,
        "threads": threads,
        "machine": {"cpu": _cpu_name(), "cores": os.cpu_count(), "platform": platform.platform()},
        "versions": _versions(configs),
        "images": images,
        "roofline_gflops": roofline,
        "roofline": {
            "op": "torch.mm",
            "dtype": "float32",
            "size": _GEMM_SIZE,
            "repeats": _GEMM_REPEATS,
            "threads": threads,
            "device": str(dev),
            "kept": "best of the samples taken before each entry",
        },
        "calibration": [str(p) for p in calibration] if calibration is not None else "the benchmark images",
        "skipped": skipped,
        "work_dir": str(work_dir),
    }


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_table(rows: list[dict], meta: dict) -> str:
    """A fixed-width text report: context lines, one table row per entry, notes, skipped entries."""
    versions = ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
    sizes = ", ".join(
        f"{Path(i['path']).name} {i['width']}x{i['height']} -> {i['model_input_hw'][1]}x{i['model_input_hw'][0]}"
        for i in meta["images"]
    )
    device = meta["device"] + (f" ({meta['device_name']})" if meta["device_name"] else "")
    lines = [
        (
            f"model {meta['model']} (weights {meta['weights']}), {meta['n_images']} images per pass "
            f"({meta['distinct_images']} distinct), {meta['warmup_passes']} warm-up pass(es) excluded"
        ),
        (
            f"machine: {meta['machine']['cpu']}, {meta['machine']['cores']} cores | device {device} | "
            f"threads {meta['threads']}"
        ),
        f"versions: {versions}",
        f"images (WxH -> model input WxH): {sizes}",
        (
            f"roofline: {meta['roofline_gflops']:.1f} GFLOP/s "
            f"(fp32 torch.mm {meta['roofline']['size']}x{meta['roofline']['size']}, "
            f"best of {meta['roofline']['repeats']} calls x {len(meta.get('roofline_samples_gflops', [0]))} samples, "
            f"{meta['threads']} threads)"
        ),
        "",
    ]
    header = (
        "config",
        "backend",
        "dtype",
        "batch",
        "workers",
        "img/s",
        "speedup",
        "agree%",
        "p50 ms",
        "p95 ms",
        "GFLOP/s",
        "roof%",
        "RSS MB",
        "setup s",
        "load",
    )
    cells = [
        (
            r["name"],
            r["backend"],
            r["dtype"],
            str(r["batch_size"]),
            str(r.get("workers", "-")),
            _fmt(r["images_per_s"], ".3f"),
            _fmt(r["speedup_vs_naive"], ".2f") + "x",
            _fmt(100 * r["agreement_vs_naive"], ".3f"),
            _fmt(r["latency_p50_ms"], ".1f"),
            _fmt(r["latency_p95_ms"], ".1f"),
            _fmt(r["gflops_per_s"], ".1f"),
            _fmt(r["roofline_pct"], ".1f"),
            _fmt(r["peak_rss_mb"], ".0f"),
            _fmt(r.get("setup_s"), ".1f"),
            _fmt(r.get("load_avg_1m"), ".1f"),
        )
        for r in rows
    ]
    widths = [max(len(row[c]) for row in [header, *cells]) for c in range(len(header))]
    for row in [header, *cells]:
        lines.append(
            "  ".join(
                cell.ljust(w) if c < 3 else cell.rjust(w) for c, (cell, w) in enumerate(zip(row, widths))
            ).rstrip()
        )
    lines += [
        "",
        "img/s: end to end (decode -> mask file written). p50/p95: the model call alone per image, after warm-up.",
        f"GFLOP/s: 2 x {meta['gmacs_520']:.1f} G multiply-adds x (h*w / 520^2) / call time (median over calls).",
        (
            "roof%: share of the fp32 GEMM roofline (int8 can exceed 100). "
            "agree%: pixels equal to naive's masks, read back from disk."
        ),
        "RSS: peak of the whole process during warm-up and measurement (entries run in turn, in one process).",
        (
            "setup: building the Segmenter (ONNX / OpenVINO export and int8 quantisation, "
            "reused from the seglens cache when present)."
        ),
    ]
    load = meta.get("load_average") or {}
    if load.get("start") is not None:
        lines.append(
            f"load: 1-minute load average after each entry (at start {load['start']:.2f}, "
            f"{meta['machine']['cores']} cores); "
            "well above the thread count, other processes were competing for the CPU and the numbers are skewed"
        )
    lines += [f"skipped {s['name']}: {s['reason']}" for s in meta.get("skipped", [])]
    return "\n".join(lines)
