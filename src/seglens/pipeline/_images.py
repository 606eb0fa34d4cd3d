"""The per-image work of a run, the same in both engines: read (in reading threads), segment
(through :meth:`Segmenter.stream`, in batches), encode and write the outputs (in writer threads),
and give back a summary entry or a failure per image.

The local engine (:mod:`._run`) runs it over all images in the calling process; the Ray engine
(:mod:`._ray`) runs it inside each actor over the images of one batch of rows.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..io import ImageLoadError, InputImage, load_image
from ._files import image_entry, write_outputs
from ._warnings import capture

__all__ = ["ImageWork", "Item", "reason", "resolve_auto", "settings_of"]


@dataclass
class Item:
    """One image to do: its input index, the input, where each output goes."""

    index: int
    image: InputImage
    paths: dict[str, Path]
    warnings: list[str] = field(default_factory=list)  # filled by the reading thread (capture)


def reason(e: BaseException) -> str:
    """The one-line reason of an error, as the summary's ``failed`` lists it."""
    return getattr(e, "reason", None) or str(e) or type(e).__name__


class ImageWork:
    """Segment images into ``out``: what both engines call per image.

    Args:
        seg: the Segmenter.
        out: the output folder (entries name outputs relative to it).
        opts: the run's options (``segment()``'s ``**options`` with defaults).
        image_outputs: the output kinds.
        read: ``read(source, **load_image options)`` instead of :func:`load_image` (the Ray
            engine reads object-store URIs with it).
    """

    def __init__(self, seg, out: Path, opts: dict, image_outputs: Sequence[str], *, read: Callable | None = None):
        self.seg, self.out, self.opts, self.image_outputs = seg, out, opts, tuple(image_outputs)
        self.read = read or load_image

    def load(self, item: Item):
        """Read one image (in a reading thread), its Python warnings kept with the item."""
        o = self.opts
        with capture(item.warnings):
            # check_size: shapes the model cannot take are refused from the header, before decoding
            return self.read(
                item.image.path, max_pixels=o["max_pixels"], url_timeout=o["url_timeout"],
                url_max_bytes=round(o["url_max_mb"] * 2**20), check_size=self.seg.check_size,
            )  # fmt: skip

    def write(self, item: Item, result) -> dict:
        """Encode and write one image's outputs (in a writer thread); its summary entry."""
        img = item.image
        low = self.opts["low_confidence"] if "confidence" in self.image_outputs else 0.0
        write_outputs(result, item.paths, self.opts["alpha"], img.label if img.is_url else _file_name(img), low)
        return image_entry(img, result, item.paths, self.out, item.warnings)

    def run(
        self,
        todo: Sequence[Item],
        *,
        done: Callable[[Item, dict], None],
        failed: Callable[[Item, str], None],
        step: Callable[[], None] = lambda: None,
    ) -> None:
        """Every item of ``todo``: ``done(item, entry)`` once its outputs are written (in input
        order), ``failed(item, reason)`` when it cannot be read, segmented or written, ``step()``
        after each. Items in flight are finished before this returns, also on Ctrl-C."""
        writers = self.opts["writers"]
        pool = ThreadPoolExecutor(writers, thread_name_prefix="seglens-write") if writers else None
        pending: deque = deque()  # (item, future) being written, in input order

        def collect(item: Item, future) -> None:
            try:
                entry = future.result()
            except OSError as e:
                failed(item, f"cannot write outputs ({e}); check free space and permissions of {self.out}")
            else:
                done(item, entry)
            step()

        try:
            stream = self.seg.stream(
                todo, self.load, workers=self.opts["workers"], prefetch=max(8, 2 * self.seg.batch_size)
            )
            with contextlib.closing(stream):
                for item, result in stream:
                    if isinstance(result, Exception):
                        if self.opts["strict"] and not isinstance(result, (ImageLoadError, ValueError)):
                            raise result
                        failed(item, reason(result))
                        step()
                        continue
                    if pool is None:
                        collect(item, _Now(self.write, item, result))
                        continue
                    pending.append((item, pool.submit(self.write, item, result)))
                    while pending and (pending[0][1].done() or len(pending) > 2 * writers):  # results hold whole images
                        collect(*pending.popleft())
        finally:
            while pending:  # every started write completes (or fails) before the summary
                collect(*pending.popleft())
            if pool is not None:
                pool.shutdown(wait=True)


def settings_of(seg) -> dict:
    """summary.json's model settings of a Segmenter (the same keys for both engines)."""
    from .._version import __version__

    return {
        "seglens_version": __version__, "model": seg.loaded.name,
        "weights": seg.loaded.weights, "weights_tag": seg.loaded.weights_tag, "weights_sha256": seg.loaded.sha256,
        "device": str(seg.device),
        "batch_size": seg.batch_size, "backend": seg.backend, "precision": seg.precision, "scale": seg.scale,
        "tile": seg.tile, "overlap": seg.overlap if seg.tile else None,
        "refine": ",".join(map(str, seg.refine)) or None,
    } | ({"backend_choice": seg.backend_choice} if getattr(seg, "backend_choice", None) else {})  # fmt: skip


def resolve_auto(model, weights, opts: dict, images: int, *, progress: bool = False):
    """``backend="auto"`` made concrete for a run of ``images`` inputs: ``(model, opts, choice)``,
    the model loaded (a LoadedModel) and the options' backend chosen by
    :func:`seglens.backends.choose_backend`, ``choice`` its reason; as given for other backends."""
    if opts["backend"] != "auto":
        return model, opts, None
    from ..backends import choose_backend
    from ..inference import resolve_device
    from ..models import load_model

    device = resolve_device(opts["device"])  # an unusable device is said before any weights load
    loaded = load_model(model, weights=weights, progress=progress, seed=opts["seed"])
    backend, why = choose_backend(loaded, device=device, precision=opts["precision"], images=images)
    return loaded, {**opts, "backend": backend}, f"auto: {why}"


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


class _Bars:
    """Progress bars from the ``progress`` factory (none without one)."""

    def __init__(self, progress) -> None:
        if progress is True:
            from tqdm import tqdm

            progress = functools.partial(tqdm, file=sys.stderr, dynamic_ncols=True)
        self.factory = progress or None
        self._windows = None

    def open(self, **kwargs):
        return self.factory(**kwargs) if self.factory is not None else _NoBar()

    def windows(self, done: int, total: int) -> None:
        """Segmenter's window_progress: a second bar while a huge image is tiled."""
        if self.factory is None or total < 8:
            return
        if self._windows is None:
            self._windows = self.factory(total=total, unit="window", desc="windows", leave=False, position=1)
            self._seen = 0
        self._windows.update(done - self._seen)
        self._seen = done
        if done >= total:
            self._windows.close()
            self._windows = None


def _file_name(img: InputImage) -> str:
    """The figure's title: the file's name (the last part of a path or object-store URI)."""
    return (
        str(img.path).replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
        if "://" in str(img.path)
        else Path(img.path).name
    )


class _Now:
    """A finished 'future' for writing in the calling thread (writers=0)."""

    def __init__(self, fn, *args) -> None:
        try:
            self._value, self._error = fn(*args), None
        except OSError as e:
            self._value, self._error = None, e

    def result(self):
        if self._error is not None:
            raise self._error
        return self._value
