import hashlib
import os
import pickle
import re
import shutil
import urllib.error

import pytest
import torch
from safetensors.torch import save_file
from torchvision.models import get_model_weights

from seglens import models
from seglens.models import OFFICIAL_SHA256, WeightsError, cached_weights_path, list_models, load_model, model_info

SIX = [
    "deeplabv3_mobilenet_v3_large",
    "deeplabv3_resnet101",
    "deeplabv3_resnet50",
    "fcn_resnet101",
    "fcn_resnet50",
    "lraspp_mobilenet_v3_large",
]
SMALL = "lraspp_mobilenet_v3_large"


def test_registry_lists_the_six_torchvision_builders():
    assert list_models() == SIX
    assert models.DEFAULT_MODEL == "deeplabv3_resnet50"


@pytest.mark.parametrize("name", SIX)
def test_metadata_comes_from_torchvision_and_every_file_is_pinned(name):
    w = get_model_weights(name).DEFAULT
    info = model_info(name)
    assert info.weights == "COCO_WITH_VOC_LABELS_V1"
    assert info.num_classes == 21 == len(w.meta["categories"])
    assert (info.miou, info.pixel_acc) == tuple(w.meta["_metrics"]["COCO-val2017-VOC-labels"].values())
    assert info.url == w.url and info.filename == w.url.rsplit("/", 1)[1]
    assert info.cached is False  # TORCH_HOME is an empty temp dir in tests
    digest = OFFICIAL_SHA256[info.filename]
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    # torchvision names files "<name>-<first 8 hex digits of the SHA-256>.pth"
    assert digest.startswith(info.filename.rsplit("-", 1)[1].removesuffix(".pth"))


def test_default_model_published_numbers():
    info = model_info("deeplabv3_resnet50")
    assert (info.miou, info.pixel_acc, info.gflops) == (66.4, 92.4, 178.722)
    assert info.num_params == 42004074


def test_unknown_model_lists_choices():
    with pytest.raises(WeightsError, match=r"unknown model 'deeplab'; choose one of: deeplabv3_mobilenet_v3_large, "):
        load_model("deeplab", weights="random")


def test_random_weights_are_seeded_and_leave_global_rng_alone():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = load_model(SMALL, weights="random", seed=1)
    assert torch.equal(torch.random.get_rng_state(), before)
    b = load_model(SMALL, weights="random", seed=1)
    c = load_model(SMALL, weights="random", seed=2)
    key = "classifier.high_classifier.weight"
    assert torch.equal(a.model.state_dict()[key], b.model.state_dict()[key])
    assert not torch.equal(a.model.state_dict()[key], c.model.state_dict()[key])
    assert a.meaningful is False and "meaningless" in a.weights_tag
    assert not a.model.training


def _params_equal(model, state_dict):
    own = model.state_dict()
    return all(torch.equal(own[k], v) for k, v in state_dict.items() if not k.startswith("aux_classifier."))


def test_local_pth_with_aux_keys_loads_and_drops_the_aux_head(weights_file):
    path = weights_file("deeplabv3_mobilenet_v3_large")
    sd = torch.load(path, weights_only=True)
    assert any(k.startswith("aux_classifier.") for k in sd)  # like the official files
    loaded = load_model("deeplabv3_mobilenet_v3_large", weights=path)
    assert loaded.model.aux_classifier is None
    assert _params_equal(loaded.model, sd)
    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert loaded.weights == str(path) and loaded.meaningful


def test_local_safetensors_and_wrapped_checkpoints(weights_file, tmp_path):
    sd = torch.load(weights_file(SMALL), weights_only=True)
    st = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(st))
    assert _params_equal(load_model(SMALL, weights=st).model, sd)
    wrapped = tmp_path / "ckpt.pth"  # training checkpoint layout, DDP key prefix
    torch.save({"model": {"module." + k: v for k, v in sd.items()}, "epoch": 3}, wrapped)
    assert _params_equal(load_model(SMALL, weights=wrapped).model, sd)


def test_other_class_count_is_read_from_the_state_dict(tmp_path):
    from tests.conftest import calibrated_model

    path = tmp_path / "five.pth"
    torch.save(calibrated_model(SMALL, num_classes=5).state_dict(), path)
    loaded = load_model(SMALL, weights=path)
    assert loaded.categories == ("class 0", "class 1", "class 2", "class 3", "class 4")


def test_state_dict_of_another_model_is_refused(weights_file):
    with pytest.raises(WeightsError, match=r"does not fit deeplabv3_mobilenet_v3_large .*another --model"):
        load_model("deeplabv3_mobilenet_v3_large", weights=weights_file(SMALL))


def test_missing_local_file():
    with pytest.raises(WeightsError, match=r"--weights nope\.pth: no such file; use 'official', 'random' or the path"):
        load_model(SMALL, weights="nope.pth")


class _WritesMarker:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        # Unpickling this calls open(path, "w"): arbitrary code execution in miniature.
        return (open, (str(self.path), "w"))


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, writer):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    payload = {"classifier.high_classifier.weight": _WritesMarker(marker)}
    if writer == "torch.save":
        torch.save(payload, evil)
    else:
        with open(evil, "wb") as f:
            pickle.dump(payload, f)
    with pytest.raises(WeightsError, match=r"evil\.pth: cannot be loaded safely .*weights_only=True"):
        load_model(SMALL, weights=evil)
    assert not marker.exists()
    # Control: a full unpickle of the same bytes would have run the payload.
    if writer == "pickle.dump":
        pickle.loads(evil.read_bytes())
        assert marker.exists()


def test_offline_without_cached_file_names_file_url_and_path():
    path = cached_weights_path("deeplabv3_resnet50")
    with pytest.raises(WeightsError) as e:
        load_model("deeplabv3_resnet50")
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("deeplabv3_resnet50_coco-cd0a2569.pth is not cached and could not be downloaded from ")
    assert "https://download.pytorch.org/models/deeplabv3_resnet50_coco-cd0a2569.pth" in msg
    assert f"place it at {path}" in msg
    assert not path.exists()


def test_network_failure_leaves_nothing_behind(monkeypatch):
    monkeypatch.delenv("SEGLENS_OFFLINE")

    def no_network(url, dst, hash_prefix=None, progress=True):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(WeightsError, match="Temporary failure in name resolution.*place it at"):
        load_model(SMALL)
    assert not cached_weights_path(SMALL).exists()


def _pin(monkeypatch, name, path):
    """Pretend a test-saved file is the official one: pin its digest (the real pins stay tested above)."""
    monkeypatch.setitem(OFFICIAL_SHA256, cached_weights_path(name).name, hashlib.sha256(path.read_bytes()).hexdigest())


def test_official_download_then_verified_load(monkeypatch, weights_file):
    src = weights_file(SMALL)
    _pin(monkeypatch, SMALL, src)
    monkeypatch.delenv("SEGLENS_OFFLINE")
    calls = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        calls.append((url, hash_prefix))
        shutil.copyfile(src, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    loaded = load_model(SMALL)
    assert calls == [(get_model_weights(SMALL).DEFAULT.url, "d234d4ea")]
    assert cached_weights_path(SMALL).is_file() and model_info(SMALL).cached
    assert loaded.weights == "official" and loaded.weights_tag.startswith("COCO_WITH_VOC_LABELS_V1 (sha256 ")
    assert _params_equal(loaded.model, torch.load(src, weights_only=True))
    load_model(SMALL)  # second load: from the cache, no download
    assert len(calls) == 1


def test_tampered_cache_file_is_refused(monkeypatch, weights_file):
    src = weights_file(SMALL)
    _pin(monkeypatch, SMALL, src)
    cached = cached_weights_path(SMALL)
    cached.parent.mkdir(parents=True)
    data = bytearray(src.read_bytes())
    data[-100] ^= 1  # one flipped bit
    cached.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match=r"does not match the official .*delete it and run again"):
        load_model(SMALL)


def test_every_torch_load_in_the_package_is_weights_only():
    import seglens

    root = os.path.dirname(seglens.__file__)
    for dirpath, _, files in os.walk(root):
        for f in files:
            if f.endswith(".py"):
                text = open(os.path.join(dirpath, f), encoding="utf-8").read()
                for call in re.findall(r"torch\.load\([^)]*\)", text):
                    assert "weights_only=True" in call, (f, call)


def test_hf_names_dispatch_to_seglens_hf(monkeypatch):
    assert models.is_hf_model("hf:nvidia/segformer-b0-finetuned-ade-512-512")
    assert not models.is_hf_model(SMALL) and not models.is_hf_model(None)
    # hf: checkpoints carry their own weights; refused before transformers is even imported
    for weights in ("random", "weights.pth"):
        with pytest.raises(WeightsError, match=r"^hf:org/name: Hugging Face checkpoints carry their own weights"):
            load_model("hf:org/name", weights=weights)
    import seglens.hf

    calls = []
    monkeypatch.setattr(seglens.hf, "load_hf_model", lambda spec, progress: calls.append((spec, progress)) or "loaded")
    assert load_model("hf:org/name", progress=False) == "loaded"
    assert load_model("hf:/some/folder", weights=None) == "loaded"
    assert calls == [("org/name", False), ("/some/folder", True)]
    assert list_models() == SIX  # the torchvision registry is unchanged
