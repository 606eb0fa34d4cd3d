"""backend="auto" (the command line's default): the fastest exact path that pays for the run."""

from __future__ import annotations

import importlib.util
import shutil

import pytest
import torch

import seglens
from seglens.backends import AUTO_EXPORT_IMAGES, choose_backend, export
from seglens.io import bundled_examples
from seglens.models import load_model

SMALL = "lraspp_mobilenet_v3_large"
CPU = torch.device("cpu")


def test_the_rule(monkeypatch, tmp_path, weights_file):
    pytest.importorskip("openvino")
    monkeypatch.setenv("SEGLENS_CACHE", str(tmp_path / "cache"))
    loaded = load_model(SMALL, weights=weights_file(SMALL))
    assert choose_backend(loaded, device=CPU, precision="fp32", images=3) == (
        "torch", "3 images: too few to repay an OpenVINO export",
    )  # fmt: skip
    assert choose_backend(loaded, device=CPU, precision="fp32", images=AUTO_EXPORT_IMAGES) == (
        "openvino", f"OpenVINO f32, {AUTO_EXPORT_IMAGES} images repay its one-time export",
    )  # fmt: skip
    assert choose_backend(loaded, device=torch.device("cuda"), precision="fp32", images=10**6)[0] == "torch"
    assert choose_backend(loaded, device=CPU, precision="bf16", images=10**6)[0] == "torch"
    assert choose_backend(loaded, device=CPU, precision="int8", images=1)[0] == "openvino"
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    backend, why = choose_backend(loaded, device=CPU, precision="fp32", images=10**6)
    assert backend == "torch" and "pip install 'seglens[openvino]'" in why


def test_segment_picks_openvino_once_its_export_is_cached(monkeypatch, tmp_path, weights_file):
    pytest.importorskip("openvino")
    monkeypatch.setenv("SEGLENS_CACHE", str(tmp_path / "cache"))
    photos = tmp_path / "photos"
    photos.mkdir()
    for p in bundled_examples()[:2]:
        shutil.copy(p, photos / p.name)
    w = weights_file(SMALL)
    events = []
    first = seglens.segment(photos, tmp_path / "a", model=SMALL, weights=w, backend="auto", on_event=events.append)
    assert (first.settings["backend"], first.settings["backend_choice"]) == (
        "torch", "auto: 2 images: too few to repay an OpenVINO export",
    )  # fmt: skip
    assert "backend torch (auto: 2 images" in " ".join(e.message for e in events if e.kind == "note")
    export(load_model(SMALL, weights=w), "openvino")  # as an earlier long run (or seglens export) leaves it
    second = seglens.segment(photos, tmp_path / "b", model=SMALL, weights=w, backend="auto")
    assert second.settings["backend"] == "openvino"
    assert second.settings["backend_choice"] == "auto: OpenVINO f32, its export of these weights is cached"
    torch_run = seglens.segment(photos, tmp_path / "c", model=SMALL, weights=w, backend="torch")  # forced
    assert torch_run.settings["backend"] == "torch" and "backend_choice" not in torch_run.settings
    for a, b in zip(second.items, torch_run.items):  # the exact path: the same labels to float rounding
        fa = {c["name"]: c["fraction"] for c in a["classes"]}
        fb = {c["name"]: c["fraction"] for c in b["classes"]}
        assert fa.keys() == fb.keys() and all(abs(fa[k] - fb[k]) < 1e-3 for k in fa)
