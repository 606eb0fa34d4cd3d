"""From logits to labels: bilinear upsampling with a bounded-memory argmax, confidence maps,
and the tiled path's window positions and blending weights (torch only, no seglens imports)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["upsample_argmax"]

# Upsampled logits are C x H x W float32: 21 classes at 100 MP would be 8.4 GB. Above this many
# bytes, classes are upsampled a few at a time with a running max (same labels, bounded memory).
_UPSAMPLE_BUDGET_BYTES = 1024 * 2**20


def upsample_argmax(
    logits: torch.Tensor,
    size: tuple[int, int],
    *,
    budget_bytes: int = _UPSAMPLE_BUDGET_BYTES,
    confidence: bool = False,
    scores: str = "logits",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Bilinear upsampling (align_corners=False) of one image's logits, then argmax over classes.

    Args:
        logits: (C, h, w) float tensor.
        size: output (H, W).
        budget_bytes: largest float32 block of upsampled logits held at once.
        confidence: also return the per-pixel confidence of the winning class.
        scores: ``"logits"`` (confidence = max softmax probability) or ``"probs"`` (scores that
            are already probability-like, e.g. Mask2Former's: confidence = max / sum).

    Returns:
        (H, W) int64 tensor of class indices, equal to
        ``F.interpolate(logits[None], size, mode="bilinear", align_corners=False)[0].argmax(0)``;
        ties go to the lowest class index, as in ``argmax``. (Exact for logits as the models
        make them, h and w >= 65; PyTorch vectorises inputs under ~40 pixels across channels,
        where a channel slice may differ in the last bit.) With ``confidence``: ``(labels,
        conf)``, conf (H, W) float32 in (0, 1], computed on the upsampled scores.
    """
    num_classes = logits.shape[0]
    chunk = max(1, budget_bytes // (size[0] * size[1] * 4 * (2 if confidence else 1)))
    if chunk >= num_classes:
        up = F.interpolate(logits[None], size=size, mode="bilinear", align_corners=False)[0]
        labels = up.argmax(0)
        return (labels, _confidence(up, scores)) if confidence else labels
    # Running max over classes, a few at a time. The index map is kept as uint8 (int16 beyond 256
    # classes) and widened once at the end: int64 maps of a 100 MP image are 800 MB each.
    best_val = best_idx = None
    for start in range(0, num_classes, chunk):
        up = F.interpolate(logits[None, start : start + chunk], size=size, mode="bilinear", align_corners=False)[0]
        for k in range(up.shape[0]):
            if best_val is None:
                best_val = up[0].clone()
                best_idx = torch.zeros(size, dtype=torch.uint8 if num_classes <= 256 else torch.int16, device=up.device)
                continue
            better = up[k] > best_val  # strict: earlier classes win ties, as argmax does
            torch.maximum(best_val, up[k], out=best_val)
            best_idx.masked_fill_(better, start + k)
            del better
        del up
    if not confidence:
        return best_idx.long()
    total = torch.zeros_like(best_val)  # second pass: the softmax denominator, chunk by chunk
    for start in range(0, num_classes, chunk):
        up = F.interpolate(logits[None, start : start + chunk], size=size, mode="bilinear", align_corners=False)[0]
        total += (up.sub_(best_val).exp_() if scores == "logits" else up).sum(0)
        del up
    conf = total.reciprocal_() if scores == "logits" else best_val / total
    return best_idx.long(), conf


def _confidence(scores_map: torch.Tensor, kind: str) -> torch.Tensor:
    """(C, H, W) scores -> (H, W) float32 confidence of the top class (overwrites nothing)."""
    top = scores_map.max(0).values
    if kind == "logits":  # max softmax = 1 / sum(exp(l - max)); numerically safe
        return (scores_map - top).exp_().sum(0).reciprocal_()
    return top / scores_map.sum(0).clamp_min(torch.finfo(scores_map.dtype).tiny)


def _quantize(conf: torch.Tensor) -> np.ndarray:
    """Confidence in [0, 1] -> uint8 0..255 (round half to even), as stored in results and PNGs."""
    return conf.mul(255).round_().clamp_(0, 255).to(torch.uint8).cpu().numpy()


def _tile_starts(n: int, tile: int, stride: int) -> list[int]:
    """Window offsets covering 0..n with windows of ``tile`` (<= n) every ``stride``; the last ends at n."""
    if n <= tile:
        return [0]
    starts = list(range(0, n - tile, stride))
    return starts + [n - tile]


def _ramp(length: int, ramp: int, rise: bool, fall: bool) -> torch.Tensor:
    """1-D blending weights: 1 inside, falling linearly to ~0 over ``ramp`` pixels at an edge
    that overlaps a neighbouring window (``rise``: start edge, ``fall``: end edge). Edges on the
    image border stay 1, so one window covering the image weighs every pixel exactly 1."""
    w = torch.ones(length)
    ramp = min(ramp, length // 2)
    if ramp > 0:
        r = (torch.arange(ramp, dtype=torch.float32) + 0.5) / ramp
        if rise:
            w[:ramp] = r
        if fall:
            w[length - ramp :] = r.flip(0)
    return w
