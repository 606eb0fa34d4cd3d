"""The Ray engine of :func:`seglens.segment` (``engine="ray"``): the images of a run on Ray Data.

The driver (:mod:`._run`) finds the inputs, names the outputs, decides what a resumed run
skips, keeps the journal and writes the summary exactly as the local engine does; only the
per-image work moves: the rows ``{index, path, name}`` of the images to do become a Ray
dataset, ``map_batches`` sends them to a pool of actors (:class:`SeglensWorker`), each of which builds
its Segmenter once and runs :class:`._images.ImageWork` (the local engine's own read, segment,
write) over the rows of each batch, and gives back one summary entry or failure per row. The
driver takes the rows as they stream in (progress, journal), so a run stopped at any moment
resumes like a local one.

Why not ``ray.data.read_images`` / ``read_binary_files``: a read task that fails (one corrupt
JPEG for ``read_images``; a file that vanished or cannot be opened for either) fails its block
and, after retries, the whole job. Here each actor reads its own inputs (local/NFS paths with
:func:`seglens.io.load_image`, object-store URIs through :mod:`seglens.io.storage`) in the
local engine's reading threads, so an unreadable input is one failed row with its reason.

Retries: the actors are restarted when they die (killed, out of memory, node lost) and their
batch is run again (Ray Data's defaults for actor pools: restarts and task retries without
limit; an actor whose model cannot be built fails the run instead); outputs are written atomically under fixed
names, so a batch done twice writes the same files, and the driver keeps one row per input.

Outputs to an object store (``out="s3://bucket/prefix"``): each actor writes into a scratch
folder of its own and uploads each finished file (an object store's PUT is whole or nothing),
then deletes it.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .._cluster import connect_pool, worker_error
from ..io import InputImage, load_image
from ._files import SUFFIX
from ._images import ImageWork, Item, resolve_auto, settings_of

__all__ = ["RayImages"]


class RayImages:
    """The images of one run on a Ray cluster (connects on creation).

    Args:
        spec: what an actor needs to build its Segmenter and write like the local engine:
            ``model``, ``weights``, ``model_options`` (Segmenter keywords), ``opts`` (the run's
            options), ``outputs`` (image output kinds), ``out`` (a folder path or a URI).
        address, workers, cpus_per_worker, gpus_per_worker: see :mod:`seglens._cluster`.
    """

    def __init__(self, spec: dict, *, address=None, workers=None, cpus_per_worker=None, gpus_per_worker=None) -> None:
        self.ray, self.pool = connect_pool(
            address, workers=workers, cpus_per_worker=cpus_per_worker, gpus_per_worker=gpus_per_worker
        )
        self.spec = {**spec, "threads": self.pool.threads}

    def describe(self) -> dict:
        """The run's model settings, as a worker builds the model (one Ray task): ``settings``
        (summary.json's model keys), ``meaningful``, ``weights_tag``. Errors building the model
        (bad weights, unknown model) are raised here as they are, before any actor starts."""
        task = self.ray.remote(num_cpus=self.pool.cpus, num_gpus=self.pool.gpus, max_retries=1)(_describe)
        try:
            described = self.ray.get(task.remote(self.spec))
        except self.ray.exceptions.RayTaskError as e:
            raise worker_error(e) from None
        # the actors use the backend the description chose ("auto" decided once, for the whole run)
        self.spec["model_options"] = {**self.spec["model_options"], "backend": described["settings"]["backend"]}
        return described

    def run(
        self,
        todo: Sequence[Item],
        *,
        done: Callable[[Item, dict], None],
        failed: Callable[[Item, str], None],
        step: Callable[[], None],
    ) -> None:
        """Segment ``todo`` on the pool; ``done``/``failed``/``step`` are called on the driver as
        rows arrive (in any order), once per item."""
        if not todo:
            return
        by_index = {item.index: item for item in todo}
        rows = [{"index": item.index, "path": str(item.image.path), "name": item.image.name} for item in todo]
        per_call = max(4, 2 * int(self.spec["model_options"]["batch_size"]))
        ds = self.ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), -(-len(rows) // per_call))))
        ds = ds.map_batches(
            SeglensWorker,
            fn_constructor_kwargs={"spec": self.spec},
            batch_size=per_call,
            batch_format="pandas",
            **self.pool.map_batches_args(),
        )
        seen: set[int] = set()
        try:
            for row in ds.iter_rows():
                index = int(row["index"])
                if index in seen or index not in by_index:  # a retried batch's row delivered again
                    continue
                seen.add(index)
                item = by_index[index]
                item.warnings[:] = json.loads(row["warnings"])
                if row["error"]:
                    failed(item, row["error"])
                else:
                    done(item, json.loads(row["entry"]))
                step()
        except self.ray.exceptions.RayError as e:
            raise worker_error(e) from None


def _segmenter(spec: dict):
    import torch

    from ..inference import Segmenter
    from ..io.calibration import calibration_images

    torch.set_num_threads(spec["threads"])
    model, options, choice = resolve_auto(spec["model"], spec["weights"], dict(spec["model_options"]), spec["images"])
    if options.get("precision") == "int8":
        options["calibration"] = calibration_images(options.get("calibration"))
    else:
        options.pop("calibration", None)
    seg = Segmenter(model, weights=spec["weights"], confidence="confidence" in spec["outputs"], **options)
    seg.backend_choice = choice
    return seg


def _describe(spec: dict) -> dict:
    seg = _segmenter(spec)
    return {"settings": settings_of(seg), "meaningful": seg.loaded.meaningful, "weights_tag": seg.loaded.weights_tag}


def _read(source, **kwargs):
    """load_image for paths and URLs; object-store URIs through seglens.io.storage."""
    from ..io import ImageLoadError
    from ..io.storage import StorageError, is_uri, read_bytes

    if not (isinstance(source, str) and is_uri(source)):
        return load_image(source, **kwargs)
    kwargs.pop("url_timeout", None)
    limit = kwargs.pop("url_max_bytes", None)
    try:
        data = read_bytes(source, max_bytes=limit)
    except StorageError as e:
        raise ImageLoadError(source, e.reason) from None
    try:
        return load_image(data, **kwargs)
    except ImageLoadError as e:
        raise ImageLoadError(source, e.reason, e.kind) from None


class _RemoteWork(ImageWork):
    """ImageWork that uploads each finished output to an object store and deletes its copy."""

    def __init__(self, *args, uri: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.uri = uri

    def write(self, item: Item, result) -> dict:
        from ..io.storage import join, upload_file

        try:
            entry = super().write(item, result)
            for path in item.paths.values():
                upload_file(path, join(self.uri, path.relative_to(self.out).as_posix()))
        finally:
            for path in item.paths.values():
                path.unlink(missing_ok=True)
        return entry


class SeglensWorker:
    """An actor of the pool (its processes are titled ``ray::MapWorker(MapBatches(SeglensWorker))``):
    one Segmenter, then ``__call__`` per batch of rows."""

    def __init__(self, spec: dict) -> None:
        from ..io.storage import is_uri

        self.seg = _segmenter(spec)
        out, kinds, opts = spec["out"], tuple(spec["outputs"]), spec["opts"]
        if is_uri(out):
            self.out = Path(tempfile.mkdtemp(prefix="seglens-worker-"))
            self.work: ImageWork = _RemoteWork(self.seg, self.out, opts, kinds, read=_read, uri=out)
        else:
            self.out = Path(out)
            self.work = ImageWork(self.seg, self.out, opts, kinds, read=_read)

    def __call__(self, batch) -> Any:
        items = [
            Item(int(i), InputImage(_source(p), n), {k: self.out / (n + SUFFIX[k]) for k in self.work.image_outputs})
            for i, p, n in zip(batch["index"], batch["path"], batch["name"])
        ]
        rows: dict[int, dict] = {}

        def done(item: Item, entry: dict) -> None:
            rows[item.index] = {"entry": json.dumps(entry, ensure_ascii=False), "error": ""}

        def failed(item: Item, why: str) -> None:
            rows[item.index] = {"entry": "", "error": why}

        self.work.run(items, done=done, failed=failed)
        import pandas as pd

        return pd.DataFrame(
            {
                "index": [it.index for it in items],
                "entry": [rows[it.index]["entry"] for it in items],
                "error": [rows[it.index]["error"] for it in items],
                "warnings": [json.dumps(it.warnings, ensure_ascii=False) for it in items],
            }
        )

    def __del__(self) -> None:
        if isinstance(self.work, _RemoteWork):
            shutil.rmtree(self.out, ignore_errors=True)


def _source(path: str):
    """A row's input as the local engine holds it: a Path for files, the string for URLs/URIs."""
    return path if "://" in path else Path(path)
