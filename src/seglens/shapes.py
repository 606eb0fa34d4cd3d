"""Image shapes a model cannot take, known from the size alone: pure functions over sizes.

Nothing here decodes, resizes or runs anything: :func:`check_size` computes, from an image's
width and height and how a Segmenter would process it (``scale``, ``tile``, the weights'
preprocessing), whether what one pass holds stays within ``_MAX_MODEL_PIXELS``, and raises
:class:`ImageShapeError` with a one-line reason and a hint otherwise.
:meth:`seglens.inference.Segmenter.check_size` is this for a Segmenter's own settings;
``seglens.inference`` re-exports :class:`ImageShapeError`.

A leaf: it imports no other seglens module (nor torch).
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["ImageShapeError", "check_size"]

# The most pixels the network takes in one pass, and the most pixels of blended logits the tiled
# path holds (one row of windows across the image): logits are classes x pixels float32, 1.45 GB
# for 21 classes. A 64:1 panorama resized to torchvision's 520-pixel short side, 33280x520, is
# exactly this; a 1000:1 one would be a 520 000-pixel-long tensor.
_MAX_MODEL_PIXELS = 520 * 520 * 64
# Hugging Face networks fed the image itself (scale and tile modes) need this many pixels per
# side. Measured (transformers 5.24, eval mode): SegFormer-B0 fails below 29, UperNet-ConvNeXt and
# BEiT below 32; MobileViT and Mask2Former-Swin run at 1. torchvision's fcn, deeplabv3 and lraspp
# run on inputs down to 1x1 (and 1x512, 512x1, both memory layouts), so they get no minimum.
_MIN_HF_SIDE = 32
_HINT_TILE = 512  # the window size the hints suggest (README: --tile 512)


class ImageShapeError(ValueError):
    """An image a Segmenter cannot process because of its shape, known from its size alone
    (:func:`check_size`, :meth:`seglens.inference.Segmenter.check_size`): too elongated for the
    model's resize, too many pixels for one pass or for one row of windows, or too small for the
    network.

    Attributes:
        size: the image's ``(width, height)``.
        reason: one line: what the image is and which limit it breaks; names no command-line
            flag (the web API shows it as is).
        cli_hint: one line: how to get past it with ``seglens segment``'s flags.

    ``str(e)`` is ``f"{reason}; {cli_hint}"``.
    """

    def __init__(self, size: tuple[int, int], reason: str, cli_hint: str) -> None:
        self.size = (int(size[0]), int(size[1]))
        self.reason, self.cli_hint = reason, cli_hint
        super().__init__(f"{reason}; {cli_hint}")

    def __reduce__(self):  # picklable across worker processes
        return (type(self), (self.size, self.reason, self.cli_hint))


def _short_side_resize(width: int, height: int, short: int) -> tuple[int, int]:
    """(width, height) after resizing the short side to ``short``: torchvision's
    ``_compute_resized_output_size`` (``F.resize(img, [short])``), which transformers copies."""
    lo, hi = min(width, height), max(width, height)
    long = int(short * hi / lo)
    return (short, long) if width <= height else (long, short)


def _processor_arrays(processor, width: int, height: int) -> list[tuple[int, int]] | None:
    """(width, height) of each array a Hugging Face image processor (transformers 5) makes from
    a ``width`` x ``height`` image, in order, the network input last; None for a resize rule
    not known here.

    As transformers computes them: ``size`` {height, width}: that size (DPT: scaled as little as
    possible with ``keep_aspect_ratio``, sides rounded to multiples of ``ensure_multiple_of``);
    {shortest_edge}: torchvision's rule; {shortest_edge, longest_edge}: ``get_size_with_aspect_ratio``
    (MaskFormer / Mask2Former then round sides up to multiples of ``size_divisor``);
    {max_height, max_width}: fitted inside. Then the centre crop to ``crop_size`` (padding what is
    smaller) and DPT's padding to multiples of ``size_divisor``. A resize is separable, width
    first (torch's antialiased resize and Pillow's alike), so it also makes an array of the new
    width and the old height.
    """
    steps: list[tuple[int, int]] = []
    w, h = width, height
    if getattr(processor, "do_resize", False):
        size = processor.size

        def get(key: str):
            return size.get(key) if isinstance(size, dict) else getattr(size, key, None)

        multiple = getattr(processor, "ensure_multiple_of", None)  # DPT's processors only
        if multiple is not None and get("height") and get("width"):
            sh, sw = get("height") / h, get("width") / w
            if getattr(processor, "keep_aspect_ratio", False):
                if abs(1 - sw) < abs(1 - sh):
                    sh = sw
                else:
                    sw = sh
            nh, nw = round(sh * h / multiple) * multiple, round(sw * w / multiple) * multiple
        elif get("shortest_edge") and get("longest_edge"):
            nh, nw = _size_with_aspect_ratio(h, w, get("shortest_edge"), get("longest_edge"))
            divisor = getattr(processor, "size_divisor", None)
            if divisor and type(processor).__name__.startswith(("MaskFormer", "Mask2Former")):
                nh, nw = math.ceil(nh / divisor) * divisor, math.ceil(nw / divisor) * divisor
        elif get("shortest_edge"):
            nw, nh = _short_side_resize(w, h, get("shortest_edge"))
        elif get("max_height") and get("max_width"):
            scale = min(get("max_height") / h, get("max_width") / w)
            nh, nw = int(h * scale), int(w * scale)
        elif get("height") and get("width"):
            nh, nw = get("height"), get("width")
        else:
            return None
        steps += [(nw, h), (nw, nh)]
        w, h = nw, nh
    crop = getattr(processor, "crop_size", None)
    if getattr(processor, "do_center_crop", False) and crop is not None:
        w, h = (crop.get("width"), crop.get("height")) if isinstance(crop, dict) else (crop.width, crop.height)
        steps.append((w, h))
    divisor = getattr(processor, "size_divisor", None)
    if getattr(processor, "ensure_multiple_of", None) is not None and getattr(processor, "do_pad", False) and divisor:
        w, h = math.ceil(w / divisor) * divisor, math.ceil(h / divisor) * divisor
        steps.append((w, h))
    return steps or [(width, height)]


def _size_with_aspect_ratio(height: int, width: int, size: int, max_size: int) -> tuple[int, int]:
    """transformers' ``get_size_with_aspect_ratio``: (height, width) with the short side ``size``,
    unless the long side would pass ``max_size``, then the long side ``max_size``."""
    raw = None
    lo, hi = float(min(height, width)), float(max(height, width))
    if hi / lo * size > max_size:
        raw = max_size * lo / hi
        size = int(round(raw))
    if (height <= width and height == size) or (width <= height and width == size):
        return height, width
    if width < height:
        return (int(raw * height / width) if raw is not None else int(size * height / width)), size
    return size, (int(raw * width / height) if raw is not None else int(size * width / height))


def check_size(
    width: int,
    height: int,
    *,
    scale: float | None = None,
    tile: int | None = None,
    transforms: Any = None,
    is_hf: bool = False,
) -> None:
    """Refuse, from its size alone, an image a Segmenter with these settings cannot process.

    Nothing is decoded or resized: :func:`seglens.io.load_image` calls
    :meth:`~seglens.inference.Segmenter.check_size` with the size from the file's header
    (``check_size=``), :meth:`~seglens.inference.Segmenter.preprocess` before any resizing. The
    limit is ``_MAX_MODEL_PIXELS`` (520 x 520 x 64 = 17 305 600 pixels) on what one pass
    holds, checked for the mode in use:

    - default (``scale=None``): the network input as the weights' preprocessing makes it,
      computed: torchvision resizes the short side to 520 (so at most 64:1 passes);
      a Hugging Face image processor as :func:`_processor_arrays` computes it (no side may
      come out 0, which crashes the processor, and no array of the resize may exceed the
      larger of the limit and the image itself);
    - ``scale``: the scaled image, ``max(1, round(side * scale))`` per side;
    - ``tile``: one row of windows across the scaled image, ``min(tile, height) x width``
      pixels, whose blended logits the tiled path holds at once;
    - Hugging Face networks with ``scale`` or ``tile``: at least 32 pixels per scaled side.

    The pixel count of the input itself is :func:`seglens.io.load_image`'s ``max_pixels``.

    Args:
        width, height: the image's size in pixels.
        scale: the Segmenter's ``scale``; None: the weights' own preprocessing (``transforms``).
            With ``tile`` and no scale, 1.0 (as the Segmenter does).
        tile: the Segmenter's window size, or None (no tiling).
        transforms: the weights' preprocessing (``LoadedModel.transforms``): torchvision's
            SemanticSegmentation preset (``resize_size``) or an object holding a Hugging Face
            image processor (``processor``); other preprocessings are not checked here.
        is_hf: the network is a Hugging Face one (``seglens.models.is_hf_model``).

    Raises:
        ImageShapeError: with a one-line ``reason`` and a ``cli_hint`` that works.
    """
    w, h = int(width), int(height)
    if w < 1 or h < 1:
        raise ImageShapeError((w, h), f"image is {w}x{h}: it has no pixels", "give an image with pixels")
    limit = _MAX_MODEL_PIXELS
    if scale is None and tile is not None:
        scale = 1.0
    if scale is None:
        _check_default_size(w, h, transforms=transforms, is_hf=is_hf)
        return
    sw, sh = max(1, round(w * scale)), max(1, round(h * scale))
    at = "" if scale == 1 else f" (at scale {scale:g}, {sw}x{sh})"
    if is_hf and min(sw, sh) < _MIN_HF_SIDE:
        reason = f"image is {w}x{h}{at}: under the {_MIN_HF_SIDE} pixels per side this model's network needs"
        raise ImageShapeError(
            (w, h), reason, "use a larger --scale, or neither --scale nor --tile (the model's own resize)"
        )
    if tile is None:
        if sw * sh > limit:
            reason = f"image is {w}x{h}{at}: {sw * sh} pixels, above the limit of {limit} pixels for one pass"
            fit = _fitting_tile(sw, sh, is_hf=is_hf)
            hint = (
                f"add --tile {fit} (in windows) or use a smaller --scale" if fit else "use a smaller --scale or crop it"
            )
            raise ImageShapeError((w, h), reason, hint)
        return
    band = min(tile, sh) * sw
    if band > limit:
        reason = (
            f"image is {w}x{h}{at}: one row of {tile}-pixel windows across it holds {min(tile, sh)}x{sw} = {band} "
            f"pixels of logits, above the limit of {limit}"
        )
        fit = limit // sw
        hint = (
            f"use --tile {fit} or smaller, or crop it"
            if fit >= 32
            else "crop it or use a smaller --scale (no --tile size helps an image this thin)"
        )
        raise ImageShapeError((w, h), reason, hint)


def _check_default_size(w: int, h: int, *, transforms: Any, is_hf: bool) -> None:
    """check_size for the weights' own preprocessing (``scale=None``)."""
    limit = _MAX_MODEL_PIXELS
    tile = _fitting_tile(w, h, is_hf=is_hf)
    hint = (
        f"use --tile {tile} (full resolution, in windows) or crop it"
        if tile
        else "crop it (it is too thin for --tile too)"
    )
    tf = transforms
    if hasattr(tf, "resize_size"):  # torchvision's SemanticSegmentation preset
        if tf.resize_size is None:  # no resize: the network takes the image as it is
            if w * h > limit:
                raise ImageShapeError(
                    (w, h), f"image is {w}x{h}: {w * h} pixels, above the limit of {limit} pixels for one pass", hint
                )
            return
        short = tf.resize_size[0]
        nw, nh = _short_side_resize(w, h, short)
        if nw * nh > limit:
            reason = (
                f"image is {w}x{h}: the model's resize to a {short}-pixel short side makes it {nw}x{nh}, above the "
                f"limit of {limit} pixels for one pass (aspect ratio at most {limit / short / short:g}:1)"
            )
            raise ImageShapeError((w, h), reason, hint)
        return
    processor = getattr(tf, "processor", None)  # a Hugging Face image processor (seglens.hf)
    arrays = _processor_arrays(processor, w, h) if processor is not None else None
    for i, (aw, ah) in enumerate(arrays or ()):
        last = i == len(arrays) - 1
        # The network input is held to the limit; the processor's arrays on the way may be as
        # large as the image itself (that is max_pixels' business), not larger.
        cap = limit if last else max(limit, w * h)
        if aw < 1 or ah < 1:
            what = "with no pixels on one side"
        elif aw * ah > cap:
            what = f"{aw * ah} pixels, above the limit of {limit}" + (
                "" if cap == limit else f" and the image's own {w * h}"
            )
        else:
            continue
        made = f"make a {aw}x{ah} network input of it" if last else f"pass it through a {aw}x{ah} array"
        raise ImageShapeError((w, h), f"image is {w}x{h}: the model's image processor would {made}, {what}", hint)
    # arrays is None: a preprocessing whose sizes are not known here; preprocess checks its output


def _fitting_tile(sw: int, sh: int, *, is_hf: bool) -> int | None:
    """The window size a hint can suggest for a tiled run over a ``sw`` x ``sh`` (scaled)
    image: 512, or the largest smaller one whose row of windows fits; None if none >= 32 does."""
    if is_hf and min(sw, sh) < _MIN_HF_SIDE:
        return None
    if min(_HINT_TILE, sh) * sw <= _MAX_MODEL_PIXELS:
        return _HINT_TILE
    tile = _MAX_MODEL_PIXELS // sw
    return tile if tile >= 32 else None
