"""What one worker thread does with one upload: decode, segment, encode the answer.

Everything here runs off the event loop, in the server's bounded worker pool, and works on
bytes in memory only: no paths, no files.
"""

from __future__ import annotations

import base64
import io
import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from ..inference import ImageShapeError, SegmentationResult, Segmenter
from ..io import ImageLoadError, image_size, load_image, mask_image

__all__ = ["FORMATS", "ApiError", "Encoded", "encode_mask_png", "image_error", "probe_upload", "run_job", "shape_error"]

FORMATS = ("json", "png", "overlay")
_OVERLAY_QUALITY = 90  # the CLI's overlay JPEG quality (seglens.io.save_image's default)


class ApiError(Exception):
    """A request the server refuses: HTTP status, one-line message, optional structured detail."""

    def __init__(self, status: int, message: str, detail: Any = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.detail = detail
        self.headers = headers or {}


@dataclass(frozen=True)
class Encoded:
    """A finished answer: the response body, its media type and the time each stage took."""

    content: bytes
    media_type: str
    timing: dict[str, float] = field(default_factory=dict)


def image_error(e: ImageLoadError) -> ApiError:
    """Map a load failure to a status: too many pixels or a decompression bomb 413, not an
    image (or a format that is not allowed) 415, anything else unreadable (empty, truncated,
    corrupt, unconvertible mode) 400. The message is ``ImageLoadError.reason``."""
    reason = e.reason
    if e.kind == "too_large":
        return ApiError(413, f"image too large: {reason}", {"reason": reason})
    if e.kind == "unsupported":
        return ApiError(415, f"unsupported upload: {reason}", {"reason": reason})
    return ApiError(400, f"unreadable image: {reason}", {"reason": reason})


def shape_error(e: ImageShapeError) -> ApiError:
    """422 for an image the model cannot take in one pass, in the API's words (no CLI flags)."""
    width, height = e.size
    message = (
        f"image shape not accepted: {e.reason}; "
        "send a crop or a downscaled copy (this server does not tile large images)"
    )
    return ApiError(422, message, {"width": width, "height": height, "reason": e.reason})


def probe_upload(segmenter: Segmenter, data: bytes, *, max_pixels: int | None) -> tuple[int, int]:
    """The upload's (width, height) from its header, after the checks that need no decoding:
    a readable image of an allowed format (400 / 415), within ``max_pixels`` (413), of a shape
    the model takes (422). Cheap: nothing is decoded."""
    try:
        width, height = image_size(data, max_pixels=None)  # Pillow's bomb guard still applies
        if max_pixels is not None and width * height > max_pixels:
            message = (
                f"image too large: {width}x{height} is {width * height} pixels, "
                f"above this server's limit of {max_pixels}; send a downscaled copy"
            )
            raise ApiError(413, message, {"width": width, "height": height, "max_pixels": max_pixels})
        segmenter.check_size(width, height)
    except ImageLoadError as e:
        raise image_error(e) from None
    except ImageShapeError as e:
        raise shape_error(e) from None
    return width, height


def encode_mask_png(labels: np.ndarray, palette: np.ndarray) -> bytes:
    """(H, W) uint8 labels -> the indexed PNG ``seglens.io.save_mask_png`` writes, as bytes."""
    buf = io.BytesIO()
    mask_image(labels, palette).save(buf, format="PNG")
    return buf.getvalue()


def _overlay_jpeg(result: SegmentationResult, alpha: float) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(result.overlay(alpha=alpha)).save(buf, format="JPEG", quality=_OVERLAY_QUALITY)
    return buf.getvalue()


def _json_body(
    name: str, segmenter: Segmenter, result: SegmentationResult, mask_png: bytes, timing: dict[str, float]
) -> bytes:
    described = result.to_dict(digits=None, hex_colors=True)  # exact fractions, "#rrggbb" colours
    body = {
        "model": name,
        "architecture": segmenter.loaded.name,
        "weights": segmenter.loaded.weights_tag,
        "meaningful": segmenter.loaded.meaningful,
        "width": described["width"],
        "height": described["height"],
        "classes": described["classes"],
        "timing": timing,
        "mask_png": base64.b64encode(mask_png).decode("ascii"),
    }
    return json.dumps(body, allow_nan=False).encode("utf-8")


def run_job(
    name: str, segmenter: Segmenter, data: bytes, *, max_pixels: int | None, fmt: str, alpha: float, submitted: float
) -> Encoded:
    """Decode ``data``, segment it and encode the answer in ``fmt``.

    Args:
        name: the model's name as the client picked it.
        segmenter: the loaded model.
        data: the uploaded file's bytes (already bounded in size).
        max_pixels: largest image accepted (checked from the header, before decoding).
        fmt: ``"json"``, ``"png"`` (indexed mask) or ``"overlay"`` (JPEG).
        alpha: overlay opacity, 0..1.
        submitted: ``time.perf_counter()`` when the job entered the queue.

    Raises:
        ApiError: the upload is not a usable image (400 / 413 / 415).
    """
    t0 = time.perf_counter()
    try:
        image = load_image(data, max_pixels=max_pixels)  # shape already checked by probe_upload
    except ImageLoadError as e:
        raise image_error(e) from None
    t1 = time.perf_counter()
    try:
        result = segmenter(image)
    except ImageShapeError as e:
        raise shape_error(e) from None
    t2 = time.perf_counter()
    timing = {"queue_s": t0 - submitted, "decode_s": t1 - t0, "inference_s": t2 - t1}
    if fmt == "png":
        content, media_type = encode_mask_png(result.labels, result.palette), "image/png"
    elif fmt == "overlay":
        content, media_type = _overlay_jpeg(result, alpha), "image/jpeg"
    else:
        mask_png = encode_mask_png(result.labels, result.palette)
        timing["encode_s"] = time.perf_counter() - t2
        timing["total_s"] = time.perf_counter() - submitted  # queue + decode + inference + encode
        content, media_type = _json_body(name, segmenter, result, mask_png, timing), "application/json"
    timing.setdefault("encode_s", time.perf_counter() - t2)
    return Encoded(content=content, media_type=media_type, timing=timing)
