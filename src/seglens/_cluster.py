"""Ray for ``--engine ray``: connecting, sizing the worker pool, keeping Ray quiet.

A leaf module: Ray is imported only when a function here is called, and nothing of seglens is
imported, so :mod:`seglens.pipeline` (``segment(engine="ray")``) and :mod:`seglens.evaluation`
(``evaluate(engine="ray")``) share it without an import cycle.

Sizing (also in the README): an actor of the pool holds one model. With GPUs, one actor per
``gpus_per_worker`` of a GPU (default 1) and 1 CPU each for reading and encoding. Without, one
actor per 4 CPUs, each asking for all but half a CPU of its share, and torch in the actor runs
that many threads (rounded up): the half CPU left over keeps Ray Data's own tasks from waiting
forever for a CPU the actors hold (what Ray's defaults do on a 2-core machine).
"""

from __future__ import annotations

import math
import os
import re
import signal
import threading
from dataclasses import dataclass
from typing import Any

ENGINES = ("local", "ray")
INSTALL_HINT = "pip install 'seglens[ray]'"


class ClusterError(ValueError):
    """``--engine ray`` cannot run: Ray is not installed, no cluster at the address, bad sizes."""


def require_ray():
    """The ``ray`` module, or :class:`ClusterError` saying how to install it."""
    _quiet_environment()
    try:
        import ray
        import ray.data  # noqa: F401 - the engine needs Ray Data, not only Ray core
    except ImportError as e:
        raise ClusterError(
            f"--engine ray needs Ray Data ({e.name or 'ray'} is not installed): {INSTALL_HINT}"
        ) from None
    return ray


def worker_error(e: BaseException) -> BaseException:
    """What the driver raises for an error out of a Ray job: the worker's own exception (a
    WeightsError, a DatasetError, a ValueError) taken out of Ray's wrapping, else a
    :class:`ClusterError` with Ray's first line (an actor that died more often than retried)."""
    seen, cause = set(), e
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if not type(cause).__module__.startswith("ray.") and cause is not e:
            return cause
        cause = getattr(cause, "cause", None) or cause.__cause__
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(e).splitlines()]
    # Ray's first lines name its own wrappers ("ray::MapWorker(...).submit() (pid=...)"): say the cause
    first = next((line for line in lines if line and not line.startswith(("ray::", "Traceback"))), type(e).__name__)
    return ClusterError(f"the Ray job failed: {first}")


def _quiet_environment() -> None:
    """Environment Ray reads when it is imported (variables the user set win)."""
    # Ray's C++ core logs an error line per actor of a Data pool with restarts on ("constructor
    # arguments in the object store", ray-project/ray#53727): Ray Data's own design, nothing to fix
    # here. seglens reports worker failures itself; RAY_BACKEND_LOG_LEVEL set by the user wins.
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    # Ray's driver would install abseil's failure-signal handler, which turns SIGTERM into an
    # abort (exit 134, a stack dump): seglens' own handler must stay, so that SIGTERM writes
    # the summary of what was done, as Ctrl-C does.
    os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")


def check_engine(engine: str) -> None:
    if engine not in ENGINES:
        raise ValueError(f"engine= must be one of {', '.join(ENGINES)}, got {engine!r}")


def connect(address: str | None = None) -> Any:
    """Connect this process to Ray (once): an already initialised Ray is used as it is.

    ``address``: None (``$RAY_ADDRESS`` if set, else a Ray instance started for this process),
    ``"local"`` (start one on this machine), ``"auto"`` (the cluster ``ray start`` runs on this
    machine), ``"ray://HOST:PORT"`` (Ray Client) or a cluster's ``HOST:PORT``.
    """
    ray = require_ray()
    quiet()
    if ray.is_initialized():
        return ray
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    kwargs: dict[str, Any] = {"log_to_driver": False, "logging_level": "ERROR"}
    if address == "local":
        kwargs["include_dashboard"] = False
    previous = signal.getsignal(signal.SIGTERM)
    try:
        ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ClusterError(
            f"cannot connect to Ray at {address!r} ({first}); start a cluster with `ray start --head`, "
            "give its address with --ray-address, or use --ray-address local"
        ) from None
    if callable(previous) and threading.current_thread() is threading.main_thread():
        # A Ray node started here installs a SIGTERM handler that exits at once; the caller's own
        # (seglens' command line: SIGTERM takes the Ctrl-C path and the summary is written) stays.
        # Ray's processes are still stopped when this one exits (Ray's atexit hook).
        signal.signal(signal.SIGTERM, previous)
    return ray


def quiet() -> None:
    """No Ray Data progress bars or execution logs on the driver: seglens shows its own progress."""
    import logging

    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.enable_operator_progress_bars = False
    for name in ("ray.data", "ray.data._internal.execution.streaming_executor"):
        logging.getLogger(name).setLevel(logging.ERROR)


@dataclass(frozen=True)
class Pool:
    """The actor pool of a run: between ``min_workers`` and ``max_workers`` actors, each asking
    Ray for ``cpus`` CPUs and ``gpus`` GPUs; ``threads``: torch's intra-op threads in each."""

    min_workers: int
    max_workers: int
    cpus: float
    gpus: float
    threads: int

    def map_batches_args(self) -> dict[str, Any]:
        """Keyword arguments of ``Dataset.map_batches`` for this pool. Restarts and retries are Ray
        Data's defaults for actor pools: a dead actor is restarted and its batch retried."""
        from ray.data import ActorPoolStrategy

        return {
            "compute": ActorPoolStrategy(min_size=self.min_workers, max_size=self.max_workers),
            "num_cpus": self.cpus,
            "num_gpus": self.gpus,
        }

    def describe(self) -> str:
        sizes = (
            f"{self.min_workers}" if self.min_workers == self.max_workers else f"{self.min_workers}-{self.max_workers}"
        )
        gpu = f", {self.gpus:g} GPU" if self.gpus else ""
        return (
            f"{sizes} worker{'s' if self.max_workers > 1 else ''} ({self.cpus:g} CPU{gpu}, {self.threads} threads each)"
        )


def connect_pool(
    address: str | None = None, *, workers=None, cpus_per_worker=None, gpus_per_worker=None
) -> tuple[Any, Pool]:
    """:func:`connect`, then :func:`plan_pool` for the cluster's resources: ``(ray, pool)``."""
    ray = connect(address)
    pool = plan_pool(
        ray.cluster_resources(), workers=workers, cpus_per_worker=cpus_per_worker, gpus_per_worker=gpus_per_worker
    )
    return ray, pool


def parse_workers(text: str | int | tuple[int, int] | None) -> tuple[int, int] | None:
    """``"2"`` -> (2, 2), ``"1:4"`` -> (1, 4), an int or a pair as they are; None: the default."""
    if text is None:
        return None
    if isinstance(text, int) and not isinstance(text, bool):
        pair = (text, text)
    elif isinstance(text, tuple) and len(text) == 2:
        pair = (int(text[0]), int(text[1]))
    elif isinstance(text, str):
        parts = text.split(":")
        try:
            numbers = [int(p) for p in parts]
        except ValueError:
            numbers = []
        if len(numbers) not in (1, 2):
            raise ClusterError(f"workers {text!r}: give a number of workers N or a range MIN:MAX, e.g. 1:4")
        pair = (numbers[0], numbers[-1])
    else:
        raise ClusterError(f"workers {text!r}: give a number of workers N or a range MIN:MAX, e.g. 1:4")
    if pair[0] < 1 or pair[1] < pair[0]:
        raise ClusterError(f"workers {text!r}: need 1 <= MIN <= MAX")
    return pair


def plan_pool(
    resources: dict[str, float],
    *,
    workers: str | int | tuple[int, int] | None = None,
    cpus_per_worker: float | None = None,
    gpus_per_worker: float | None = None,
) -> Pool:
    """The pool for a cluster with ``resources`` (``ray.cluster_resources()``): the module's sizing
    rule for what is not given. :class:`ClusterError` when the cluster cannot hold one worker."""
    total_cpus = float(resources.get("CPU", 0.0))
    total_gpus = float(resources.get("GPU", 0.0))
    gpus = float(gpus_per_worker) if gpus_per_worker is not None else 0.0
    if gpus < 0 or (cpus_per_worker is not None and cpus_per_worker <= 0):
        raise ClusterError("--cpus-per-worker must be > 0 and --gpus-per-worker >= 0")
    if gpus > 0:
        if gpus > total_gpus:
            raise ClusterError(f"--gpus-per-worker {gpus:g}: the cluster has {total_gpus:g} GPUs")
        fit = max(1, int(total_gpus // gpus))
        cpus = float(cpus_per_worker) if cpus_per_worker is not None else 1.0
    else:
        fit = max(1, int(total_cpus // 4))
        cpus = float(cpus_per_worker) if cpus_per_worker is not None else max(0.5, min(4.0, total_cpus / fit) - 0.5)
        fit = max(1, min(fit, int(total_cpus // cpus))) if cpus <= total_cpus else 1
    if cpus > total_cpus:
        raise ClusterError(f"--cpus-per-worker {cpus:g}: the cluster has {total_cpus:g} CPUs")
    pair = parse_workers(workers) or (1, fit)
    return Pool(pair[0], pair[1], cpus, gpus, max(1, math.ceil(cpus)))
