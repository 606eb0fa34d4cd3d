"""Post-processing of label maps (``--refine``): what the seed's future work calls post-processing.

Two methods, each measured by ``seglens compare`` before anything is on by default (none is):

- ``small`` (small-region removal): a connected region of one class smaller than ``min_size``
  pixels (8-connectivity) takes the label most of its outer border has; regions are handled
  smallest first, each seeing the labels earlier ones took. Removes the specks a network leaves
  in flat areas; also removes real small objects, which is why it is measured, not assumed.
  ``min_size`` below 1 is a fraction of the image's pixels (default 0.0005: 86 pixels at 480x360).
- ``guided`` (guided filter, He, Sun and Tang, TPAMI 2013): each class's probability map is
  filtered with the image's luminance as the guide (``radius`` pixels, regulariser ``eps`` on
  0..1 intensities), then the argmax is taken again: class boundaries move to the image's
  edges. An edge-aware, O(pixels) stand-in for a dense CRF, whose Python bindings
  (``pydensecrf``, 2018) ship no wheels for current Python. Box means come from
  :func:`scipy.ndimage.uniform_filter` (seglens already depends on SciPy); the result matches
  OpenCV-contrib's ``cv2.ximgproc.guidedFilter`` (tests/test_refine.py checks it when OpenCV is
  installed), which seglens does not require for one filter.

Spelling (``--refine``): ``small``, ``small=200``, ``small=0.001``, ``guided``,
``guided=8`` (radius), ``guided=8:0.001`` (radius:eps); both, comma-separated, e.g.
``guided,small``: ``guided`` runs first whatever the order (it takes the labels anew from the
probabilities, which would undo a ``small`` before it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["METHODS", "Refine", "guided_filter", "parse_refine", "refine_labels", "remove_small_regions"]

METHODS = ("small", "guided")
_EIGHT = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class Refine:
    """One refinement step: ``method`` and its parameters (the others' defaults)."""

    method: str
    min_size: float = 0.0005
    radius: int = 8
    eps: float = 1e-3

    def __str__(self) -> str:
        if self.method == "small":
            return f"small={self.min_size:g}"
        return f"guided={self.radius}:{self.eps:g}"

    @property
    def needs_probabilities(self) -> bool:
        return self.method == "guided"


def parse_refine(text: str | Sequence[Refine] | None) -> tuple[Refine, ...]:
    """``"guided,small=200"`` -> the steps; None or "" -> none. ValueError names the bad part."""
    if text is None or text == "" or text == "none":
        return ()
    if not isinstance(text, str):
        return tuple(text)
    steps = []
    for part in (p.strip() for p in text.split(",")):
        name, _, value = part.partition("=")
        try:
            if name == "small":
                steps.append(Refine("small", min_size=float(value)) if value else Refine("small"))
                if steps[-1].min_size <= 0:
                    raise ValueError
            elif name == "guided":
                radius, _, eps = value.partition(":")
                steps.append(Refine("guided", radius=int(radius) if radius else 8, eps=float(eps) if eps else 1e-3))
                if steps[-1].radius < 1 or steps[-1].eps <= 0:
                    raise ValueError
            else:
                raise ValueError
        except ValueError:
            raise ValueError(
                f"refine {part!r}: use small[=MIN_PIXELS or FRACTION] or guided[=RADIUS[:EPS]], comma-separated"
            ) from None
    return tuple(sorted(steps, key=lambda s: s.method != "guided"))


def remove_small_regions(labels: np.ndarray, min_size: float) -> np.ndarray:
    """``labels`` with every 8-connected region under ``min_size`` pixels (a fraction of the
    image below 1) relabelled with the most common label on its outer border (ties: the lower
    label), smallest regions first. A region with no border (the whole image) stays."""
    from scipy import ndimage

    labels = np.asarray(labels)
    limit = min_size * labels.size if min_size < 1 else min_size
    out = labels.copy()
    regions = []  # (size, class, slice, component id, component map) of the small ones
    for c in np.unique(labels):
        comp, n = ndimage.label(labels == c, structure=_EIGHT)
        if n == 0:
            continue
        sizes = np.bincount(comp.ravel())[1:]
        small = np.flatnonzero(sizes < limit) + 1
        if small.size == 0:
            continue
        boxes = ndimage.find_objects(comp)
        for k in small:
            regions.append((int(sizes[k - 1]), int(c), boxes[k - 1], int(k), comp))
    regions.sort(key=lambda r: (r[0], r[1], r[2][0].start, r[2][1].start))
    h, w = labels.shape
    for _, _, box, k, comp in regions:
        rows = slice(max(0, box[0].start - 1), min(h, box[0].stop + 1))
        cols = slice(max(0, box[1].start - 1), min(w, box[1].stop + 1))
        mask = comp[rows, cols] == k
        ring = ndimage.binary_dilation(mask, structure=_EIGHT) & ~mask
        if not ring.any():
            continue
        counts = np.bincount(out[rows, cols][ring].ravel())
        out[rows, cols][mask] = np.argmax(counts)  # argmax: the lowest label among ties
    return out


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """He et al.'s guided filter with a one-channel guide: ``guide`` (H, W) float in 0..1,
    ``src`` (H, W) or (C, H, W) float32, filtered per channel with (2 radius + 1)^2 box means."""
    from scipy import ndimage

    size = 2 * radius + 1

    def box(x: np.ndarray) -> np.ndarray:
        if x.ndim == 3:
            return ndimage.uniform_filter(x, size=(1, size, size), mode="reflect")
        return ndimage.uniform_filter(x, size=size, mode="reflect")

    guide = guide.astype(np.float32)
    src = src.astype(np.float32)
    mean_i = box(guide)
    var_i = box(guide * guide) - mean_i * mean_i
    mean_p = box(src)
    cov_ip = box(guide * src) - mean_i * mean_p
    a = cov_ip / (var_i + np.float32(eps))
    b = mean_p - a * mean_i
    return box(a) * guide + box(b)


def _luminance(image) -> np.ndarray:
    rgb = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image, dtype=np.float32)
    return (rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114) / 255.0


def refine_labels(
    labels: np.ndarray, steps: Sequence[Refine], *, probabilities: np.ndarray | None = None, image=None
) -> np.ndarray:
    """Run ``steps`` in order. ``probabilities``: (C, H, W) float32 at the labels' size (softmax
    of the upsampled logits) and ``image`` (RGB, same size), needed by ``guided``."""
    out = np.asarray(labels)
    for step in steps:
        if step.method == "small":
            out = remove_small_regions(out, step.min_size)
        else:
            if probabilities is None or image is None:
                raise ValueError("refine guided needs the class probabilities and the image")
            filtered = guided_filter(_luminance(image), probabilities, step.radius, step.eps)
            out = filtered.argmax(axis=0).astype(out.dtype)
    return out
