"""The Ray engine of :func:`seglens.evaluation.evaluate` (``engine="ray"``): the scoring on Ray Data.

The driver opens the dataset, builds its Segmenter (class check, label check, settings, the
worst images' panels) and checks the labels exactly as the local engine does; only the scoring
moves. The dataset's indices, in chunks of ``_CHUNK``, become a Ray dataset; ``map_batches`` sends
them to a pool of actors (:class:`_Worker`), each of which builds its Segmenter and gets the
dataset once, scores the samples of each chunk with the local engine's :class:`Scorer` into a
fresh :class:`Tally` and gives it back, pickled. The driver merges the tallies as they stream in
(progress: images done, rate, ETA) and builds the result from the merged one; a tally is keyed
by sample index, so any order of arrival gives the local engine's result (see
:class:`seglens._eval_tally.Tally`).

Retries: an actor that dies (killed, out of memory, node lost) is restarted and its chunks run
again (Ray Data's actor-pool defaults, :meth:`seglens._cluster.Pool.map_batches_args`); a chunk
delivered twice is merged once. An exception of the worker's own is not retried: it ends the run,
raised as it is on the driver (see :class:`_Worker`). The worst images travel with their
prediction only; the driver reads their image and ground truth again for the panels.

Exactly the local result, given the same arithmetic: torch on a CPU adds a convolution's terms
in an order that depends on its thread count (``Pool.threads`` in an actor), and a GPU differs
from a CPU, either of which can flip a pixel whose two best classes tie to rounding.
"""

from __future__ import annotations

import os
import pickle
import time
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ._cluster import ClusterError, connect_pool, worker_error
from ._eval_options import _MODEL_OPTIONS, _build
from ._eval_tally import Scorer, Tally, build_result, resolve_protocol
from .datasets import DatasetError, SegmentationDataset
from .evaltypes import EvalConfig, EvalResult, LabelProblem
from .inference import Segmenter

__all__ = ["RayEval"]

_CHUNK = 4  # samples an actor scores per call: the unit of progress, of retry and of a tally sent back


class RayEval:
    """Scoring on a Ray cluster (connects and sizes the actor pool on creation).

    Args:
        model, weights, opts: as :func:`seglens.evaluation.evaluate` got them (its checked
            options): each actor builds its Segmenter from these.
        address, workers, cpus_per_worker, gpus_per_worker: see :mod:`seglens._cluster`.
    """

    def __init__(self, model: str, weights: str | os.PathLike, opts: dict, *, address=None, workers=None,
                 cpus_per_worker=None, gpus_per_worker=None) -> None:  # fmt: skip
        self.ray, self.pool = connect_pool(
            address, workers=workers, cpus_per_worker=cpus_per_worker, gpus_per_worker=gpus_per_worker
        )
        model_options = {k: opts[k] for k in _MODEL_OPTIONS}
        if isinstance(model_options["calibration"], os.PathLike):
            model_options["calibration"] = os.fspath(model_options["calibration"])
        self.spec = {"model": model, "weights": os.fspath(weights), "model_options": model_options,
                     "threads": self.pool.threads}  # fmt: skip

    def score(
        self,
        seg: Segmenter,
        dataset: SegmentationDataset,
        config: EvalConfig,
        *,
        progress: Callable[[int], None] | None = None,
        label_problems: Sequence[LabelProblem] = (),
    ) -> EvalResult:
        """:func:`seglens.evaluation.score_dataset` on the pool: the same result (``seg`` is the
        driver's, for the settings and the panels; the actors score with their own)."""
        protocol = resolve_protocol(seg, dataset, config)
        scorer = Scorer(seg, protocol, config)
        total = scorer.tally(dataset)
        n = len(dataset)
        spec = {**self.spec, "dataset": dataset, "protocol": protocol, "config": config}
        chunks = [{"start": s, "stop": min(s + _CHUNK, n)} for s in range(0, n, _CHUNK)]
        ds = self.ray.data.from_items(chunks, override_num_blocks=len(chunks))
        ds = ds.map_batches(
            _Worker, fn_constructor_kwargs={"spec": spec}, batch_size=1, batch_format="numpy",
            **self.pool.map_batches_args(),
        )  # fmt: skip
        merged: set[int] = set()
        devices: set[str] = set()
        start = time.perf_counter()
        try:
            for row in ds.iter_rows():
                if row["error"]:
                    raise pickle.loads(row["error"])
                first = int(row["start"])
                if first in merged:  # a retried chunk delivered again
                    continue
                merged.add(first)
                part: Tally = pickle.loads(zlib.decompress(row["tally"]))
                total.merge(part)
                devices.add(str(row["device"]))
                if progress:
                    progress(part.count)
        except self.ray.exceptions.RayError as e:
            raise worker_error(e) from None
        seconds = time.perf_counter() - start
        if total.count != n:
            raise ClusterError(f"the Ray job scored {total.count} of {n} samples")
        total.fill_pixels(lambda i: _view(scorer, dataset, i))
        return build_result(total, seg, dataset, protocol, config, seconds=seconds, label_problems=label_problems,
                            device=",".join(sorted(devices)), engine="ray")  # fmt: skip


def _view(scorer: Scorer, dataset: SegmentationDataset, i: int) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        return scorer.view(dataset[i])
    except DatasetError:  # readable on the worker, not here: the worst image keeps no panel
        return None


class _Worker:
    """An actor of the pool: one Segmenter and the dataset, then ``__call__`` per batch of chunks.

    An exception of its own (building the model, scoring) is sent back pickled in the ``error``
    column and raised as it is on the driver: Ray Data would wrap it in a UserCodeException that
    arrives without it. Ray retries a dead actor's work, not a chunk that raised: that would fail again.
    """

    def __init__(self, spec: dict) -> None:
        self.error: Exception | None = None
        try:
            import torch

            torch.set_num_threads(spec["threads"])
            seg = _build(spec["model"], spec["weights"], spec["model_options"], download_progress=False)
            self.dataset: SegmentationDataset = spec["dataset"]
            self.scorer = Scorer(seg, spec["protocol"], spec["config"])
            self.device = str(seg.device)
        except Exception as e:  # e.g. the weights file missing on this node: said by the first chunk
            self.error, self.device = e, ""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        k = len(batch["start"])
        tallies, error = [b""] * k, b""
        try:
            if self.error is not None:
                raise self.error
            for j, (first, stop) in enumerate(zip(batch["start"], batch["stop"])):
                tally = self.scorer.tally(self.dataset)
                self.scorer.run(self.dataset, range(int(first), int(stop)), tally)
                tally.strip_pixels()
                tallies[j] = zlib.compress(pickle.dumps(tally, protocol=pickle.HIGHEST_PROTOCOL), 1)
        except Exception as e:
            error = _pickled(e)
        return {
            "start": np.asarray(batch["start"], dtype=np.int64),
            "tally": np.array(tallies, dtype=object),
            "device": np.array([self.device] * k, dtype=object),
            "error": np.array([error] * k, dtype=object),
        }


def _pickled(e: Exception) -> bytes:
    """``e`` pickled, or a ClusterError naming it when it does not pickle back."""
    try:
        data = pickle.dumps(e)
        pickle.loads(data)
        return data
    except Exception:
        return pickle.dumps(ClusterError(f"a Ray worker failed: {type(e).__name__}: {e}"))
