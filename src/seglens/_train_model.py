"""The network :mod:`seglens.train` trains: its starting weights, optimiser groups, and the
``best.safetensors`` it writes.

Starting points (``--weights`` / ``--weights-backbone``), all loaded without executing code:

- ``official``: torchvision's COCO_WITH_VOC_LABELS_V1 file through :mod:`seglens.models`' pinned,
  SHA-256-checked loader; every tensor whose shape fits the new class count is kept (backbone,
  decoder, auxiliary head's body) and the classifier's last layer(s) start afresh, as fine-tuning
  tutorials replace ``classifier[4]``.
- ``random``: torchvision's own init (seeded).
- a local ``.pth`` / ``.safetensors`` file: loaded as it is (its class count must fit).
- ``--weights-backbone imagenet``: the ImageNet classifier the builder names as its default
  backbone (e.g. ``MobileNet_V3_Large_Weights.IMAGENET1K_V1``), downloaded once into the torch hub
  cache with torch.hub's hash-prefix check, the prefix checked again on every load, and unpickled
  with ``weights_only=True``; or a local file of such a backbone.
"""

from __future__ import annotations

import hashlib
import inspect
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models import get_model

from . import models as _models
from ._train_config import TrainError
from ._trained import METADATA_KEY, TrainedMetadata
from .io import atomic_open
from .models import WeightsError, load_state_dict_file

__all__ = ["build_model", "param_groups", "save_trained"]


def _builder_default_backbone(name: str):
    from torchvision.models import segmentation

    return inspect.signature(getattr(segmentation, name)).parameters["weights_backbone"].default


def has_aux(name: str) -> bool:
    """Whether the family has an auxiliary head (FCN and DeepLabV3 do, LR-ASPP does not)."""
    return not name.startswith("lraspp")


def _new(name: str, num_classes: int) -> nn.Module:
    aux = has_aux(name) or None  # lraspp refuses aux_loss=True
    model = get_model(name, weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=aux)
    # torchvision's MobileNetV3 sets BatchNorm momentum 0.01: its running statistics trail the
    # weights by ~100 steps, so a short run validates with stale statistics (constant labels in
    # eval mode after 50 steps from scratch, measured). 0.1, PyTorch's default, follows in ~10.
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.momentum is not None and m.momentum < 0.1:
            m.momentum = 0.1
    return model


def _load_fitting(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> list[str]:
    """Load every tensor whose name and shape fit; return the names left at their init."""
    own = model.state_dict()
    fitting = {k: v for k, v in state_dict.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    if not any(k.startswith("backbone.") for k in fitting):
        raise TrainError(
            f"{source}: none of its tensors fit the model's backbone; is it for another --model?", "weights"
        )
    model.load_state_dict(fitting, strict=False)
    return sorted(set(own) - set(fitting))


def _backbone_file(spec: str, name: str, *, progress: bool) -> tuple[dict[str, torch.Tensor], str]:
    if spec != "imagenet":
        return load_state_dict_file(spec), spec
    weights = _builder_default_backbone(name)
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
    prefix = path.stem.rsplit("-", 1)[-1]
    if not path.is_file():
        if _models.is_offline():
            raise TrainError(
                f"{path.name} is not cached and SEGLENS_OFFLINE is set; place it at {path}", "weights_backbone"
            )
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(weights.url, str(path), hash_prefix=prefix, progress=progress)
        except (OSError, RuntimeError) as e:
            raise TrainError(
                f"{path.name} could not be downloaded from {weights.url} ({e}); download it elsewhere and place it at "
                f"{path}, or pass --weights-backbone FILE",
                "weights_backbone",
            ) from e
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if not digest.startswith(prefix):
        raise TrainError(
            f"{path}: SHA-256 {digest[:12]}... does not start with {prefix} (corrupted?); delete it", "weights_backbone"
        )
    return load_state_dict_file(path), f"{weights} ({path.name})"


def _load_backbone(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """An ImageNet classifier's tensors into ``model.backbone`` (mobilenet's ``features.`` prefix
    dropped; the classifier's fc layers are not part of a segmentation backbone)."""
    own = model.backbone.state_dict()
    mapped = {}
    for key in own:
        for candidate in (key, "features." + key, "backbone." + key):
            if candidate in state_dict and tuple(state_dict[candidate].shape) == tuple(own[key].shape):
                mapped[key] = state_dict[candidate]
                break
    missing = [k for k in own if k not in mapped]
    if missing:
        raise TrainError(
            f"{source}: {len(missing)} of the backbone's {len(own)} tensors are missing or do not fit "
            f"(e.g. {missing[0]}); is it a backbone for this --model?",
            "weights_backbone",
        )
    model.backbone.load_state_dict(mapped, strict=True)


def build_model(
    name: str, num_classes: int, *, weights: str | None, weights_backbone: str, seed: int, progress: bool = False
) -> tuple[nn.Module, str]:
    """The network to train (with its auxiliary head where the family has one) and a one-line
    description of where its weights come from."""
    if name not in _models.list_models():
        raise TrainError(f"unknown model {name!r}; choose one of: {', '.join(_models.list_models())}", "model")
    choice = weights if weights is not None else ("random" if weights_backbone not in ("none", None) else "official")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _new(name, num_classes)
    if choice == "official":
        try:
            state_dict, digest = _models._official_state_dict(name, progress=progress)
        except WeightsError as e:
            raise TrainError(f"{e}; or start from --weights random or --weights-backbone imagenet", "weights") from None
        fresh = _load_fitting(model, state_dict, "official weights")
        head = [k for k in fresh if not k.endswith("num_batches_tracked")]
        return model, f"official COCO_WITH_VOC_LABELS_V1 (sha256 {digest[:12]}); new classifier: {', '.join(head)}"
    if choice == "random":
        if weights_backbone not in ("none", None):
            state_dict, source = _backbone_file(weights_backbone, name, progress=progress)
            _load_backbone(model, state_dict, source)
            return model, f"backbone {source}, the rest random (seed {seed})"
        return model, f"random init (seed {seed})"
    try:
        state_dict = load_state_dict_file(choice)
        n = _models._num_classes(state_dict, choice)
    except WeightsError as e:
        raise TrainError(str(e), "weights") from None
    if n != num_classes:
        raise TrainError(
            f"{choice}: its head has {n} classes but the training data has {num_classes}; pass weights with "
            f"{num_classes} classes, or --weights official / random to start a new head",
            "weights",
        )
    fresh = [k for k in _load_fitting(model, state_dict, choice) if not k.startswith("aux_classifier.")]
    if fresh:
        raise TrainError(f"{choice}: does not fit {name} ({len(fresh)} tensors missing, e.g. {fresh[0]})", "weights")
    return model, f"{Path(choice).name} (sha256 {_models.sha256_file(choice)[:12]})"


def param_groups(model: nn.Module, *, lr: float, head_lr: float, freeze_backbone: bool) -> list[dict[str, Any]]:
    """Optimiser groups: backbone at ``lr`` (frozen: left out), classifier at ``lr * head_lr``, the
    auxiliary head at ``lr * 10`` (torchvision's reference)."""
    if freeze_backbone:
        for p in model.backbone.parameters():
            p.requires_grad_(False)
    groups = []
    for prefix, scale in (("backbone", 1.0), ("classifier", head_lr), ("aux_classifier", 10.0)):
        params = [p for n, p in model.named_parameters() if n.split(".")[0] == prefix and p.requires_grad]
        if params:
            groups.append({"params": params, "lr": lr * scale, "initial_lr": lr * scale, "name": prefix})
    return groups


def inference_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """What inference needs: no auxiliary head, no DDP prefix, contiguous CPU tensors."""
    model = getattr(model, "module", model)
    return {
        k: v.detach().to("cpu").contiguous()
        for k, v in model.state_dict().items()
        if not k.startswith("aux_classifier.")
    }


def save_trained(path: Path, model: nn.Module, meta: TrainedMetadata, **extra: Any) -> None:
    """``best.safetensors``: the inference weights with seglens' metadata, written atomically."""
    from safetensors.torch import save

    data = save(inference_state_dict(model), metadata={METADATA_KEY: meta.to_json(**extra)})
    with atomic_open(path, "wb") as f:
        f.write(data)
