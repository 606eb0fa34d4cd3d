"""Model registry and safe weights loading, on top of torchvision's own registry.

One lookup path: model names, builders, URLs, preprocessing and class names all come from
``torchvision.models.get_model_weights(name).DEFAULT``; seglens adds only what torchvision lacks:
the full SHA-256 of each official file, checked on every load, and weights-only unpickling.

torchvision's builders load official weights with ``load_state_dict_from_url(..., weights_only=False)``
(a full pickle) and check only an 8-hex-digit hash prefix, only at download time. seglens builds every
model with ``weights=None`` and loads the state dict itself:

1. official file missing from the cache -> ``torch.hub.download_url_to_file`` into
   ``$TORCH_HOME/hub/checkpoints`` (temp file + rename, progress bar, hash-prefix check);
2. full SHA-256 of the cached file compared with the pinned digest, before unpickling, every time;
3. ``torch.load(path, weights_only=True)``.

:func:`load_model` dispatches by the name's source, as timm's ``create_model`` reads ``hf-hub:``
names: ``"hf:<repo-or-folder>"`` goes to :func:`seglens.hf.load_hf_model` (imported only then),
any other name to torchvision's registry here. What both loaders share (:class:`LoadedModel`,
:class:`WeightsError`, :func:`sha256_file`, the ``SEGLENS_OFFLINE`` switch) lives in the leaf
module ``seglens._weights`` and is re-exported here, so ``seglens.hf`` never imports this module.
"""

from __future__ import annotations

import os
import urllib.error
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn
from torchvision.models import get_model, get_model_weights

from ._trained import MetadataError, TrainedMetadata, read_metadata
from ._weights import OFFLINE_ENV, LoadedModel, WeightsError, is_offline, sha256_file

__all__ = [
    "DEFAULT_MODEL",
    "OFFICIAL_SHA256",
    "LoadedModel",
    "ModelInfo",
    "WeightsError",
    "cached_weights_path",
    "is_hf_model",
    "list_models",
    "load_model",
    "load_state_dict_file",
    "model_info",
    "sha256_file",
    "trained_metadata",
]

DEFAULT_MODEL = "deeplabv3_resnet50"

# Full SHA-256 of each official file (torchvision publishes only the 8-digit prefix in the name).
# Cross-checked in several independent public manifests; each starts with the file's own prefix.
OFFICIAL_SHA256: Mapping[str, str] = {
    "fcn_resnet50_coco-1167a1af.pth": "1167a1affa42e1e62858f8d3fac12d109e0108327ffc91c5855a324b11683c36",
    "fcn_resnet101_coco-7ecb50ca.pth": "7ecb50ca17844860a70d5ed0c748d997cf8adb62932abaa0233430c68594d749",
    "deeplabv3_resnet50_coco-cd0a2569.pth": "cd0a25694c4a0f7106b38f4938bf90a874f2f241cc410b8f63c7024399538f06",
    "deeplabv3_resnet101_coco-586e9e4e.pth": "586e9e4e203fcbf17e1ad45533d8d33ab133fc762bf03101c5dd743995c08c0d",
    "deeplabv3_mobilenet_v3_large-fc3c493d.pth": "fc3c493d68e89cc31ef488c803d5d7dd2f3190fb570598faa49fef69be8e5e70",
    "lraspp_mobilenet_v3_large-d234d4ea.pth": "d234d4eae9d55d5f76de18b77cf0dc62c66fe5c5482758209d00f950c92bb280",
}

# The layer whose output channels are the classes, per family (used to read num_classes off a
# user's state dict, so fine-tuned checkpoints with other class counts load too).
_HEAD_KEYS = ("classifier.4.weight", "classifier.high_classifier.weight")
# Model sources, by name prefix ("<source>:<name>"); a name without one is torchvision's.
_TORCHVISION = "torchvision"
_HF = "hf"


@dataclass(frozen=True)
class ModelInfo:
    """What ``seglens models`` shows for one model, from torchvision's weights metadata."""

    name: str
    weights: str  # e.g. "COCO_WITH_VOC_LABELS_V1"
    num_classes: int
    miou: float | None  # percent, on COCO val2017 with VOC labels
    pixel_acc: float | None  # percent, same protocol
    gflops: float  # torchvision's "GFLOPS" meta: multiply-adds per 520x520 image, in billions
    num_params: int  # includes the auxiliary head, which seglens does not run
    file_size_mb: float
    url: str
    filename: str
    cached: bool


def list_models() -> list[str]:
    """Names of torchvision's semantic-segmentation builders, sorted."""
    return sorted(torchvision.models.list_models(module=torchvision.models.segmentation))


def _split_source(name: object) -> tuple[str, object]:
    """``name`` -> (its source, the name within that source), as timm's ``parse_model_name``:
    ``"hf:org/repo"`` -> ``("hf", "org/repo")``; ``"fcn_resnet50"`` -> ``("torchvision", "fcn_resnet50")``
    (anything not an ``"hf:"`` string is torchvision's, whose registry refuses what it lacks)."""
    if isinstance(name, str) and name.startswith(_HF + ":"):
        return _HF, name[len(_HF) + 1 :]
    return _TORCHVISION, name


def is_hf_model(name: object) -> bool:
    """True for ``"hf:<repo-or-folder>"``: a Hugging Face checkpoint, loaded by :mod:`seglens.hf`."""
    return _split_source(name)[0] == _HF


def _default_weights(name: str):
    if name not in list_models():
        raise WeightsError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}")
    return get_model_weights(name).DEFAULT


def _filename(url: str) -> str:
    return os.path.basename(urlparse(url).path)


def cached_weights_path(name: str) -> Path:
    """Where the official weights of ``name`` live (or will live) in the torch hub cache."""
    url = _default_weights(name).url
    return Path(torch.hub.get_dir()) / "checkpoints" / _filename(url)


def model_info(name: str) -> ModelInfo:
    """Metadata of ``name``'s default (COCO_WITH_VOC_LABELS_V1) weights, without loading them."""
    w = _default_weights(name)
    metrics = next(iter(w.meta.get("_metrics", {}).values()), {})
    return ModelInfo(
        name=name,
        weights=w.name,
        num_classes=len(w.meta["categories"]),
        miou=metrics.get("miou"),
        pixel_acc=metrics.get("pixel_acc"),
        gflops=float(w.meta["_ops"]),
        num_params=int(w.meta["num_params"]),
        file_size_mb=float(w.meta["_file_size"]),
        url=w.url,
        filename=_filename(w.url),
        cached=cached_weights_path(name).is_file(),
    )


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """A plain state dict from what a checkpoint holds: {"model": sd} / {"state_dict": sd} / sd."""
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: not a state dict of tensors (save one with torch.save(model.state_dict(), path))")
    # DataParallel / DDP checkpoints prefix every key with "module.".
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a local ``.safetensors`` or ``.pth``/``.pt`` state dict without executing code.

    ``.pth`` files go through ``torch.load(weights_only=True)``, which refuses any pickle that
    would build objects other than tensors and plain containers.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found (check the --weights path)")
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure to parse is the file's fault
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsError(
            f"{path}: cannot be loaded safely ({type(e).__name__}: {reason[:200]}); "
            "seglens loads only tensor state dicts (.pth with weights_only=True, or .safetensors)"
        ) from e
    return _unwrap(obj, path)


def _download(url: str, dst: Path, *, progress: bool) -> None:
    """Download the official file into the cache (temp file + rename, hash-prefix check)."""
    if is_offline():
        raise OSError(f"{OFFLINE_ENV} is set")
    dst.parent.mkdir(parents=True, exist_ok=True)
    prefix = dst.stem.rsplit("-", 1)[-1]
    torch.hub.download_url_to_file(url, str(dst), hash_prefix=prefix, progress=progress)


def _official_state_dict(name: str, *, progress: bool) -> tuple[dict[str, torch.Tensor], str]:
    w = _default_weights(name)
    path = cached_weights_path(name)
    expected = OFFICIAL_SHA256[path.name]
    if not path.is_file():
        try:
            _download(w.url, path, progress=progress)
        except (OSError, urllib.error.URLError, RuntimeError) as e:
            reason = getattr(e, "reason", None) or e
            raise WeightsError(
                f"{path.name} is not cached and could not be downloaded from {w.url} ({reason}); "
                f"download it elsewhere and place it at {path}, or pass --weights FILE"
            ) from e
    actual = sha256_file(path)
    if actual != expected:
        raise WeightsError(
            f"{path}: SHA-256 {actual[:16]}... does not match the official {expected[:16]}... "
            "(corrupted or tampered file); delete it and run again to download a fresh copy"
        )
    return load_state_dict_file(path), expected


def _num_classes(state_dict: Mapping[str, torch.Tensor], path: object) -> int:
    for key in _HEAD_KEYS:
        if key in state_dict:
            return int(state_dict[key].shape[0])
    raise WeightsError(f"{path}: no segmentation head found (expected a key like {_HEAD_KEYS[0]!r})")


def _build(name: str, num_classes: int) -> nn.Module:
    # weights=None everywhere: no download from the builder, no full-pickle loading.
    # aux_loss=False: the auxiliary head is a training aid and would only cost time here.
    return get_model(name, weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False)


def _load_into(model: nn.Module, state_dict: dict[str, torch.Tensor], name: str, source: object) -> None:
    state_dict = {k: v for k, v in state_dict.items() if not k.startswith("aux_classifier.")}
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as e:
        missing = sorted(set(model.state_dict()) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(model.state_dict()))
        detail = (
            f"{len(missing)} missing keys (e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})"
        )
        if not missing and not unexpected:
            detail = str(e).strip().splitlines()[-1].strip()[:200]
        raise WeightsError(f"{source}: does not fit {name} ({detail}); is it a state dict for another --model?") from e


def load_model(
    name: str = DEFAULT_MODEL,
    *,
    weights: str | os.PathLike | None = "official",
    progress: bool = True,
    seed: int = 0,
) -> LoadedModel:
    """Build ``name`` and load its weights safely.

    Args:
        name: a torchvision segmentation builder, see :func:`list_models`; or
            ``"hf:<repo-or-folder>"`` for a Hugging Face checkpoint (:func:`seglens.hf.load_hf_model`,
            which needs the ``hf`` extra; such checkpoints carry their own weights).
        weights: ``"official"`` (default; ``None`` means the same) for the pinned
            COCO_WITH_VOC_LABELS_V1 file, downloaded once into the torch hub cache;
            ``"random"`` for a seeded random init (smoke tests only: labels are meaningless);
            or a path to a local ``.pth`` state dict or ``.safetensors`` file.
        progress: show a download progress bar on stderr.
        seed: seed of the random init (``weights="random"`` only).

    Raises:
        WeightsError: unknown model, weights missing, unverifiable or unfit; one-line message.
    """
    source, spec = _split_source(name)
    if source == _HF:
        if weights not in (None, "official"):
            raise WeightsError(
                f"{name}: Hugging Face checkpoints carry their own weights; --weights {weights!s} does not apply "
                "(leave it at 'official', or save your weights with save_pretrained and pass hf:FOLDER)"
            )
        from .hf import load_hf_model  # lazy: transformers is an optional extra; hf never imports models

        return load_hf_model(spec, progress=progress)
    return _load_torchvision(spec, weights=weights, progress=progress, seed=seed)


def trained_metadata(weights: object) -> TrainedMetadata | None:
    """The ``seglens train`` metadata of a weights file (None for 'official', 'random', files
    without it). Raises WeightsError for metadata that is present but malformed."""
    if not isinstance(weights, (str, os.PathLike)) or weights in ("official", "random", "default", "DEFAULT"):
        return None
    try:
        return read_metadata(weights) if Path(weights).is_file() else None
    except MetadataError as e:
        raise WeightsError(str(e)) from None


def _load_torchvision(name: str, *, weights: str | os.PathLike | None, progress: bool, seed: int) -> LoadedModel:
    """:func:`load_model` for a torchvision builder name."""
    meta = trained_metadata(weights)
    if meta is not None and meta.model != name:
        if name != DEFAULT_MODEL:
            raise WeightsError(
                f"{weights}: trained as {meta.model}, not {name}; leave out --model (the file says which) "
                f"or pass --model {meta.model}"
            )
        name = meta.model  # the default name was not a choice: the file knows its architecture
    w = _default_weights(name)
    categories = tuple(w.meta["categories"])
    choice = "official" if weights is None else weights
    if choice in ("official", "default", "DEFAULT", w.name):
        state_dict, digest = _official_state_dict(name, progress=progress)
        model = _build(name, len(categories))
        _load_into(model, state_dict, name, cached_weights_path(name))
        source, tag, meaningful = "official", f"{w.name} (sha256 {digest[:12]})", True
    elif choice == "random":
        with torch.random.fork_rng(devices=[]):  # leave the caller's global RNG untouched
            torch.manual_seed(seed)
            model = _build(name, len(categories))
        source, tag, digest, meaningful = "random", f"random init (seed {seed}; labels are meaningless)", None, False
    else:
        path = Path(choice)
        if not path.is_file():
            raise WeightsError(
                f"--weights {choice!s}: no such file; use 'official', 'random' or the path of a .pth/.safetensors file"
            )
        state_dict = load_state_dict_file(path)
        n = _num_classes(state_dict, path)
        if n != len(categories):
            categories = tuple(f"class {i}" for i in range(n))
        model = _build(name, n)
        _load_into(model, state_dict, name, path)
        digest = sha256_file(path)
        source, tag, meaningful = str(path), f"{path.name} (sha256 {digest[:12]})", True
    model.eval()
    if meta is not None:
        return _trained_model(name, model, meta, source=source, tag=tag, digest=digest)
    return LoadedModel(
        name=name,
        model=model,
        categories=categories,
        transforms=w.transforms(),
        weights=source,
        weights_tag=tag,
        sha256=digest,
        meaningful=meaningful,
    )


def _trained_model(name: str, model: nn.Module, meta: TrainedMetadata, *, source: str, tag: str, digest: str):
    """A ``seglens train`` file: its class names, colours, normalisation and input-size rule."""
    from torchvision.transforms._presets import SemanticSegmentation

    from .palettes import palette_for

    n = _num_classes(model.state_dict(), source)
    if len(meta.categories) != n:
        raise WeightsError(f"{source}: its metadata names {len(meta.categories)} classes but the head has {n}")
    palette = palette_for(meta.categories)
    palette[:n] = meta.palette
    return LoadedModel(
        name=name,
        model=model,
        categories=meta.categories,
        transforms=SemanticSegmentation(resize_size=meta.resize, mean=meta.mean, std=meta.std),
        weights=source,
        weights_tag=tag,
        sha256=digest,
        meaningful=True,
        palette=palette,
        normalize=(meta.mean, meta.std),
    )
