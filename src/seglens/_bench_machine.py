"""Facts about the machine a benchmark runs on: the fp32 GEMM roofline, peak memory sampling,
CPU name, load average and the versions of what was timed (for ``seglens bench``)."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import threading
import time
from collections.abc import Iterator, Sequence

import torch

from ._bench_configs import BenchConfig
from .inference import resolve_device

__all__ = ["gemm_roofline"]


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def gemm_roofline(*, size: int = 2048, repeats: int = 5, device: str = "cpu") -> float:
    """Best fp32 GFLOP/s of ``torch.mm`` on two (size, size) matrices, after one warm-up call.

    Runs at ``torch.get_num_threads()`` threads, the count the model calls use. One product is
    ``2 * size**3`` floating-point operations.
    """
    dev = resolve_device(device)
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(size, size, generator=g).to(dev) for _ in range(2))
    out = torch.mm(a, b)  # warm-up: thread pool start, first-touch of the output
    best = float("inf")
    for _ in range(repeats):
        _sync(dev)
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        _sync(dev)
        best = min(best, time.perf_counter() - t0)
    return 2 * size**3 / best / 1e9


class _Peak:
    """The largest resident set size seen so far, in bytes."""

    def __init__(self, rss: int) -> None:
        self.bytes = rss

    @property
    def mb(self) -> float:
        return self.bytes / 2**20


@contextlib.contextmanager
def _peak_rss(interval: float = 0.005) -> Iterator[_Peak]:
    """The process's peak RSS during the block, sampled every ``interval`` s by a thread."""
    import psutil  # here, not at import time: only benchmarks need it

    process = psutil.Process()
    peak, stop = _Peak(process.memory_info().rss), threading.Event()

    def sample() -> None:
        while not stop.wait(interval):
            peak.bytes = max(peak.bytes, process.memory_info().rss)

    thread = threading.Thread(target=sample, name="seglens-bench-rss", daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        stop.set()
        thread.join()
        peak.bytes = max(peak.bytes, process.memory_info().rss)


def _load_average() -> float | None:
    """1-minute load average (other processes competing for the CPU skew every number)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _versions(configs: Sequence[BenchConfig]) -> dict[str, str]:
    packages = ["torch", "torchvision", "numpy", "pillow"]
    backends = {c.backend for c in configs}
    packages += [p for p in ("onnxruntime", "openvino") if p in backends]
    packages += ["nncf"] if any(c.precision == "int8" for c in configs) else []
    out = {"python": platform.python_version()}
    for p in packages:
        try:
            out[p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            out[p] = "not installed"
    return out
