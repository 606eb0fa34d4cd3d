"""Hugging Face transformers checkpoints as seglens models: ``--model hf:<repo-or-folder>``.

``load_hf_model("nvidia/segformer-b0-finetuned-ade-512-512")`` (or a folder written by
``save_pretrained``) returns a :class:`~seglens.models.LoadedModel` that the Segmenter, the
evaluator and the figures use like a torchvision one:

- the network: ``AutoModelForSemanticSegmentation`` (SegFormer, UperNet, DPT, BEiT, MobileViT,
  ...) or, for the mask-classification families Mask2Former / MaskFormer / OneFormer,
  ``AutoModelForUniversalSegmentation`` read through their semantic post-processing;
- the preprocessing: the checkpoint's own image processor;
- the class names: ``config.id2label`` in id order; the palette from those names
  (:func:`seglens.visualize.palette_for`: ADE20K, Cityscapes, VOC, or distinct colours).

Labels equal Hugging Face's own pipeline, ``processor(images) -> model ->
processor.post_process_semantic_segmentation(outputs, target_sizes=[(H, W)])``: those
post-processors upsample the per-class map bilinearly (align_corners=False) to (H, W) and take
the argmax, which is what :func:`seglens.inference.upsample_argmax` does with ``out``. Quirks
kept for that equality: processors that centre-crop (MobileViT) or pad map the processed frame
onto the whole image, and Mask2Former resizes its mask logits to 384 x 384 first. One exception:
OneFormer's default (torchvision-backend) OneFormerImageProcessor resizes with torchvision's
antialiased bilinear kernel (``tvF.resize``, antialias on; checked in transformers 5.24), equal to
bilinear in exact arithmetic but not bit for bit (~1e-6 relative), so a pixel where two classes
tie within that rounding may get the other class (about 1 pixel in 10^5 in the tests).

Safety: ``trust_remote_code`` is never enabled (checkpoints that need their own Python code are
refused); weights load from ``model.safetensors`` when the checkpoint has one (transformers
prefers it) and otherwise from ``pytorch_model.bin`` through ``torch.load(weights_only=True)``
(transformers' ``load_state_dict`` default, checked in 5.24, which also refuses torch < 2.6).
With ``SEGLENS_OFFLINE=1`` nothing is downloaded (``local_files_only=True``).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._weights import OFFLINE_ENV, LoadedModel, WeightsError, is_offline, sha256_file  # the leaf, never .models
from .visualize import palette_for

__all__ = ["HF_MODELS", "HF_PREFIX", "HFModel", "HFModelRow", "hf_model_rows", "load_hf_model"]

HF_PREFIX = "hf:"
_INSTALL = "pip install 'seglens[hf]'"
# Files transformers loads weights from, in its order of preference (use_safetensors=None).
_WEIGHTS_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
# Mask-classification families and the size their post_process_semantic_segmentation resizes the
# mask logits to before the sigmoid (None: kept at the model's resolution).
_MASK_FAMILIES: dict[str, tuple[int, int] | None] = {
    "mask2former": (384, 384),  # Mask2FormerImageProcessor: "(384, 384) for all models"
    "maskformer": None,
    "oneformer": None,
}
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class HFModel:
    """A well-known checkpoint that ``seglens models`` lists, with its published score.

    Attributes:
        repo: Hugging Face repo id; run it as ``--model hf:<repo>``.
        family: architecture, e.g. "SegFormer".
        dataset: what it was trained and scored on.
        num_classes: len(config.id2label).
        miou: published single-scale mIoU (percent) on the dataset's validation set, or None
            where no number could be confirmed.
        source: where ``miou`` comes from.
    """

    repo: str
    family: str
    dataset: str
    num_classes: int
    miou: float | None
    source: str


# Scores are single-scale validation mIoU as published for the weights these repos were
# converted from; each source was read when this list was written.
HF_MODELS: tuple[HFModel, ...] = (
    HFModel("nvidia/segformer-b0-finetuned-ade-512-512", "SegFormer", "ADE20K", 150, 37.4,
            "SegFormer paper (arXiv 2105.15203), MiT-B0 on ADE20K, single-scale; as listed by Papers with Code"),
    HFModel("nvidia/segformer-b5-finetuned-ade-640-640", "SegFormer", "ADE20K", 150, 51.0,
            "SegFormer paper (arXiv 2105.15203), Fig. 1: B5 on ADE20K, single model and scale (51.8 multi-scale)"),
    HFModel("nvidia/segformer-b2-finetuned-cityscapes-1024-1024", "SegFormer", "Cityscapes", 19, 81.0,
            "SegFormer paper (arXiv 2105.15203) Table 2, MiT-B2 Cityscapes 1024x1024 single-scale, "
            "as transcribed in a public survey table (not read from the paper itself)"),
    HFModel("openmmlab/upernet-convnext-small", "UperNet", "ADE20K", 150, 48.56,
            "MMSegmentation configs/convnext/README.md, UperNet ConvNeXt-S 512x512 (the checkpoint "
            "transformers' convert_convnext_upernet_to_pytorch.py converts), single-scale"),
    HFModel("Intel/dpt-large-ade", "DPT", "ADE20K", 150, None,
            "not confirmed: the DPT paper's headline 49.02 is DPT-Hybrid; no DPT-Large figure was found"),
    HFModel("apple/deeplabv3-mobilevit-small", "MobileViT + DeepLabV3", "PASCAL VOC 2012", 21, 79.1,
            "apple/deeplabv3-mobilevit-small model card (MobileViT paper, arXiv 2110.02178)"),
    HFModel("facebook/mask2former-swin-large-ade-semantic", "Mask2Former", "ADE20K", 150, 56.1,
            "facebookresearch/Mask2Former MODEL_ZOO.md, Swin-L (IN21k) ADE20K semantic, single-scale "
            "(57.3 with multi-scale + flip)"),
)  # fmt: skip


@dataclass(frozen=True)
class HFModelRow:
    """One line of ``seglens models`` for a curated checkpoint: an :class:`HFModel` plus
    ``name`` ("hf:<repo>") and whether its config and weights are in the local cache."""

    name: str
    family: str
    dataset: str
    num_classes: int
    miou: float | None
    source: str
    cached: bool


def hf_model_rows(*, cache_dir: str | os.PathLike | None = None) -> list[HFModelRow]:
    """The curated checkpoints of :data:`HF_MODELS` for ``seglens models``.

    ``cached`` comes from the Hugging Face cache on disk (``try_to_load_from_cache``; no network
    access); it is False for all of them when the ``hf`` extra is not installed.

    Args:
        cache_dir: the hub cache to look in; default ``$HF_HUB_CACHE`` (~/.cache/huggingface/hub).
    """
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        try_to_load_from_cache = None

    def cached(repo: str) -> bool:
        if try_to_load_from_cache is None:
            return False

        def found(name: str) -> bool:  # a path string; None or a "known missing" marker otherwise
            return isinstance(try_to_load_from_cache(repo, name, cache_dir=cache_dir), str)

        return found("config.json") and any(found(name) for name in _WEIGHTS_FILES)

    return [
        HFModelRow(HF_PREFIX + m.repo, m.family, m.dataset, m.num_classes, m.miou, m.source, cached(m.repo))
        for m in HF_MODELS
    ]


class _SemanticNet(nn.Module):
    """An ``...ForSemanticSegmentation`` model as seglens runs networks: (N, 3, h, w) float32
    RGB ``pixel_values`` -> ``{"out": (N, C, h', w') float32 logits}`` at the model's own output
    resolution (e.g. 1/4 for SegFormer). ``bgr``: the checkpoint takes BGR (MobileViT), so the
    channels are flipped here, where its processor would have flipped them."""

    def __init__(self, net: nn.Module, *, bgr: bool = False) -> None:
        super().__init__()
        self.net, self.bgr = net, bgr

    def forward(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        x = pixel_values.flip(1) if self.bgr else pixel_values
        return {"out": self.net(pixel_values=x).logits.float()}


class _MaskClassificationNet(nn.Module):
    """A Mask2Former / MaskFormer / OneFormer model read as a semantic segmenter.

    ``out`` is what their ``post_process_semantic_segmentation`` computes before its final
    resize: ``einsum("bqc,bqhw->bchw", softmax(class_queries_logits)[..., :-1],
    sigmoid(masks_queries_logits))`` (the last class is "no object"), mask logits first resized
    to ``score_size`` where the post-processor does so. These are per-class scores >= 0, not
    logits; seglens upsamples and takes the argmax exactly as the post-processor does.
    """

    def __init__(
        self,
        net: nn.Module,
        *,
        score_size: tuple[int, int] | None,
        task_inputs: torch.Tensor | None = None,
        bgr: bool = False,
    ) -> None:
        super().__init__()
        self.net, self.score_size, self.bgr = net, score_size, bgr
        # OneFormer's task prompt ("the task is semantic") as token ids, (1, L) int64.
        self.register_buffer("task_inputs", task_inputs, persistent=False)

    def forward(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        extra = {} if self.task_inputs is None else {"task_inputs": self.task_inputs.expand(pixel_values.shape[0], -1)}
        outputs = self.net(pixel_values=pixel_values.flip(1) if self.bgr else pixel_values, **extra)
        masks = outputs.masks_queries_logits
        if self.score_size is not None:
            masks = F.interpolate(masks, size=self.score_size, mode="bilinear", align_corners=False)
        classes = outputs.class_queries_logits.softmax(dim=-1)[..., :-1]
        return {"out": torch.einsum("bqc, bqhw -> bchw", classes, masks.sigmoid()).float()}


class _ProcessorTransform:
    """PIL RGB image -> (3, h, w) float32 tensor, exactly as the checkpoint's image processor
    makes it: ``processor(images=image, return_tensors="pt")["pixel_values"][0]``, in RGB order
    (a BGR processor's output is flipped back; the network wrapper flips it again, exactly)."""

    def __init__(self, processor: Any) -> None:
        self.processor = processor
        self.bgr = _takes_bgr(processor)

    def __call__(self, image) -> torch.Tensor:
        x = self.processor(images=image, return_tensors="pt")["pixel_values"][0].float()
        return x.flip(0) if self.bgr else x

    def __repr__(self) -> str:
        return f"{type(self).__name__}({type(self.processor).__name__})"


def _reason(e: BaseException) -> str:
    text = " ".join(str(e).split())
    first = text.split(". ")[0]  # hub errors run to several sentences and URLs: keep the first
    if len(first) > 200:
        first = first[:200].rsplit(" ", 1)[0] + " ..."
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


@contextlib.contextmanager
def _progress_bars(enabled: bool) -> Iterator[None]:
    """Hide transformers' and huggingface_hub's progress bars for the duration (progress=False),
    then restore whatever state they had."""
    if enabled:
        yield
        return
    import huggingface_hub.utils as hub_utils
    from transformers.utils import logging as hf_logging

    was_on, hub_was_off = hf_logging.is_progress_bar_enabled(), hub_utils.are_progress_bars_disabled()
    hf_logging.disable_progress_bar()
    hub_utils.disable_progress_bars()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()
        if not hub_was_off:
            hub_utils.enable_progress_bars()


def _resolve(spec: str) -> tuple[str, str | None, bool]:
    """``spec`` -> (what from_pretrained takes, revision, is a local folder)."""
    folder = Path(spec).expanduser()
    if folder.is_dir():
        return str(folder), None, True
    repo, at, revision = spec.partition("@")
    if spec.startswith((".", "/", "~", "\\")) or not _REPO_ID.fullmatch(repo) or (at and not revision):
        raise WeightsError(
            f"hf:{spec}: no such folder and not a Hugging Face repo id; pass a folder written by "
            f"save_pretrained or a repo id such as hf:{HF_MODELS[0].repo} (optionally @revision)"
        )
    return repo, revision or None, False


def _categories(config: Any, where: str) -> tuple[str, ...]:
    """``config.id2label`` in id order; ids must be exactly 0..n-1."""
    try:
        id2label = {int(k): str(v).strip() for k, v in dict(config.id2label or {}).items()}
    except (TypeError, ValueError) as e:
        raise WeightsError(f"{where}: config.json's id2label is not a map of class ids to names ({_reason(e)})") from e
    n = len(id2label)
    missing = sorted(set(range(n)) - set(id2label))
    if not n or missing:
        raise WeightsError(
            f"{where}: config.json's id2label must name every class id 0..{max(n - 1, 0)} "
            f"(missing: {missing[:5] or 'all'}); fix id2label in the checkpoint's config.json"
        )
    return tuple(id2label[i] or f"class {i}" for i in range(n))


def _takes_bgr(processor: Any) -> bool:
    return bool(getattr(processor, "do_flip_channel_order", False))  # MobileViT's processors


def _normalize(processor: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The processor's pixel values as (mean, std) on 0..1 RGB, i.e. ``(u - mean) / std`` for
    u = pixel / 255.

    A processor computes ``(p * r - m) / s`` from 0..255 pixels p, with r = rescale_factor
    (1 without do_rescale) and m, s = image_mean, image_std (0, 1 without do_normalize); that is
    ``(u - m / (255 r)) / (s / (255 r))``. With the usual r = 1/255, mean and std are the
    processor's own. Channel order is RGB (see :class:`_ProcessorTransform` for BGR models).
    """
    k = 255.0 * float(processor.rescale_factor) if getattr(processor, "do_rescale", False) else 255.0
    k = 1.0 if abs(k - 1.0) < 1e-9 else k  # a factor saved with fewer digits (0.0039215686) is 1/255 too
    if getattr(processor, "do_normalize", False):
        mean, std = processor.image_mean, processor.image_std
    else:
        mean, std = 0.0, 1.0
    mean = [mean] * 3 if isinstance(mean, (int, float)) else list(mean)
    std = [std] * 3 if isinstance(std, (int, float)) else list(std)
    return tuple(float(m) / k for m in mean), tuple(float(v) / k for v in std)


def _weights_fingerprint(source: str, revision: str | None, local: bool) -> tuple[str, str | None]:
    """(weights_tag, sha256 of the main weights file) without touching the network.

    Folders: the first of ``_WEIGHTS_FILES`` present (the file transformers loads; for a
    sharded checkpoint, its index), hashed. Hub checkpoints: the cached snapshot's commit, and
    the file's SHA-256 from its blob name when the cache stores it under its LFS SHA-256
    (cheap), else hashed.
    """
    if local:
        folder = Path(source)
        path = next((folder / n for n in _WEIGHTS_FILES if (folder / n).is_file()), None)
        if path is None:
            return folder.name, None
        digest = sha256_file(path)
        return f"{folder.resolve().name} ({path.name}, sha256 {digest[:12]})", digest
    from huggingface_hub import try_to_load_from_cache

    found = (try_to_load_from_cache(source, n, revision=revision) for n in _WEIGHTS_FILES)
    path = next((Path(p) for p in found if isinstance(p, str)), None)
    if path is None:
        return source, None
    blob = Path(os.path.realpath(path)).name
    digest = blob if _SHA256.fullmatch(blob) else sha256_file(path)
    commit = path.parent.name if path.parent.parent.name == "snapshots" else revision
    where = f"commit {commit[:12]}, " if commit else ""
    return f"{source} ({where}sha256 {digest[:12]})", digest


def load_hf_model(spec: str, *, progress: bool = True) -> LoadedModel:
    """Load a Hugging Face semantic-segmentation checkpoint, ready for the Segmenter.

    Args:
        spec: a hub repo id ("nvidia/segformer-b0-finetuned-ade-512-512", optionally
            "@revision") or a local folder holding config.json, the weights and
            preprocessor_config.json (as ``model.save_pretrained(dir)`` and
            ``processor.save_pretrained(dir)`` write them).
        progress: show download / loading progress bars.

    Returns:
        LoadedModel named ``"hf:" + spec``: ``model`` (eval mode, CPU) maps (N, 3, h, w) float32
        ``pixel_values`` to ``{"out": (N, C, h', w') float32}`` (logits, or mask-classification
        scores with ``scores="probs"``); ``transforms`` is the checkpoint's image processor;
        ``categories`` its id2label; ``palette`` from those names; ``normalize`` the processor's
        pixel mapping as (mean, std) on 0..1 RGB (what the Segmenter's scale / tile modes use).
        ``transforms`` and ``model`` take RGB; for BGR checkpoints (MobileViT) the wrapper
        flips the channels, so labels stay exactly Hugging Face's.

    Raises:
        WeightsError: transformers missing, checkpoint not found (offline: not cached),
            unsupported architecture, custom code required, incomplete weights, bad id2label;
            the message is one line.
    """
    name = HF_PREFIX + spec
    try:
        import transformers
    except ImportError as e:
        raise WeightsError(f"{name}: needs Hugging Face transformers: {_INSTALL}") from e
    source, revision, local = _resolve(spec)
    offline = is_offline()
    # trust_remote_code=False: seglens never runs Python code shipped with a checkpoint.
    kwargs: dict[str, Any] = {"local_files_only": local or offline, "trust_remote_code": False}
    if revision:
        kwargs["revision"] = revision

    def unavailable(e: BaseException) -> WeightsError:
        if local:
            return WeightsError(
                f"{name}: not a Hugging Face model folder ({_reason(e)}); it needs config.json, "
                "the weights and preprocessor_config.json as save_pretrained writes them"
            )
        from huggingface_hub import constants

        why = f"{OFFLINE_ENV} is set, so nothing is downloaded" if offline else f"download failed: {_reason(e)}"
        return WeightsError(
            f"{name}: {source} is not in the Hugging Face cache {constants.HF_HUB_CACHE} ({why}); "
            f"fetch it once online (`hf download {source}`{f', or run without {OFFLINE_ENV}' if offline else ''}), "
            "or pass a folder: --model hf:/path/to/saved_model"
        )

    with _progress_bars(progress):
        try:
            config = transformers.AutoConfig.from_pretrained(source, **kwargs)
        except OSError as e:
            raise unavailable(e) from e
        except ValueError as e:  # unknown model_type, or a config that needs remote code
            if local and not (Path(source) / "config.json").is_file():
                raise unavailable(e) from e
            raise WeightsError(
                f"{name}: transformers cannot build this checkpoint without running its own code "
                f"or a newer transformers ({_reason(e)}); seglens never sets trust_remote_code"
            ) from e
        model_type = getattr(config, "model_type", "")
        from transformers.models.auto.modeling_auto import MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES as semantic

        if model_type in semantic:
            auto_class = transformers.AutoModelForSemanticSegmentation
        elif model_type in _MASK_FAMILIES:
            auto_class = transformers.AutoModelForUniversalSegmentation
        else:
            supported = ", ".join(sorted([*semantic, *_MASK_FAMILIES]))
            raise WeightsError(
                f"{name}: a {model_type or 'unknown'} checkpoint is not a semantic-segmentation model "
                f"seglens can run (supported model types: {supported})"
            )
        categories = _categories(config, name)
        try:
            # dtype float32: the Segmenter feeds float32 and autocasts itself; a checkpoint
            # stored in fp16 would otherwise load as fp16 (dtype="auto" in transformers 5).
            net, info = auto_class.from_pretrained(source, dtype=torch.float32, output_loading_info=True, **kwargs)
        except OSError as e:
            raise unavailable(e) from e
        except (ValueError, RuntimeError) as e:
            raise WeightsError(f"{name}: the weights cannot be loaded ({_reason(e)})") from e
        missing, mismatched = sorted(info.get("missing_keys") or ()), list(info.get("mismatched_keys") or ())
        if missing or mismatched:
            detail = (
                f"{len(missing)} missing (e.g. {missing[:2]})" if missing else f"{len(mismatched)} of the wrong shape"
            )
            raise WeightsError(
                f"{name}: the checkpoint lacks weights of {type(net).__name__}: {detail}; "
                "is it a backbone-only or classification checkpoint?"
            )
        try:
            processor = transformers.AutoImageProcessor.from_pretrained(
                source, **kwargs, **({"class_info_file": None} if model_type == "oneformer" else {})
            )  # OneFormer: its class_info_file (panoptic metadata) would be downloaded and is not needed
            task_inputs = _oneformer_task(transformers, source, config, kwargs) if model_type == "oneformer" else None
        except OSError as e:
            raise WeightsError(
                f"{name}: no usable image processor ({_reason(e)}); the checkpoint needs "
                "preprocessor_config.json (processor.save_pretrained(dir) writes it)"
            ) from e
    net.eval()
    bgr = _takes_bgr(processor)
    if model_type in _MASK_FAMILIES:
        model: nn.Module = _MaskClassificationNet(
            net, score_size=_MASK_FAMILIES[model_type], task_inputs=task_inputs, bgr=bgr
        )
        scores = "probs"
    else:
        model, scores = _SemanticNet(net, bgr=bgr), "logits"
    tag, digest = _weights_fingerprint(source, revision, local)
    return LoadedModel(
        name=name,
        model=model.eval(),
        categories=categories,
        transforms=_ProcessorTransform(processor),
        weights="official",
        weights_tag=tag,
        sha256=digest,
        meaningful=True,
        palette=palette_for(categories),
        normalize=_normalize(processor),
        scores=scores,
    )


def _oneformer_task(transformers: Any, source: str, config: Any, kwargs: dict[str, Any]) -> torch.Tensor:
    """OneFormer's semantic task prompt as OneFormerProcessor encodes it: the token ids of
    "the task is semantic", padded to ``task_seq_len``, times the attention mask; (1, L) int64."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(source, **kwargs)
    length = int(getattr(config, "task_seq_len", 77))
    tokens = tokenizer(["the task is semantic"], padding="max_length", max_length=length, truncation=True)
    return torch.tensor(tokens["attention_mask"]) * torch.tensor(tokens["input_ids"])
