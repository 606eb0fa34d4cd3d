"""Shared fixtures: real photographs that packages ship, and test-saved weights (never downloads)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.models import get_model, get_model_weights

from tests._s3 import s3_server  # noqa: F401 - the S3 server fixture, shared by every test module

PHOTOS = ("astronaut", "chelsea", "coffee")


@pytest.fixture(autouse=True)
def _no_downloads(monkeypatch, tmp_path_factory):
    """Every test runs with an empty private torch hub cache and downloads switched off."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("torch_home")))
    monkeypatch.setenv("SEGLENS_OFFLINE", "1")
    # exports of the session (backend="auto" picks OpenVINO when one is cached): none from ~/.cache
    monkeypatch.setenv("SEGLENS_CACHE", str(_session_cache(tmp_path_factory)))


def _session_cache(factory) -> object:
    if not _CACHE:
        _CACHE.append(factory.mktemp("seglens_cache"))
    return _CACHE[0]


_CACHE: list = []


def photo(name: str) -> Image.Image:
    import skimage.data

    return Image.fromarray(getattr(skimage.data, name)())


@pytest.fixture(scope="session")
def photos() -> list[Image.Image]:
    """Three real photographs of different sizes: 512x512, 451x300, 600x400."""
    return [photo(n) for n in PHOTOS]


def calibrated_model(name: str, *, num_classes: int = 21, seed: int = 0) -> torch.nn.Module:
    """A seeded random model whose BatchNorm statistics come from real photographs.

    Plain random init leaves BN at mean 0 / var 1 and gives near-constant label maps; one
    train-mode pass over real images makes the labels vary across each image, so label-equality
    tests compare something. Built like the official checkpoints: aux head included where the
    family has one.
    """
    kwargs = {} if name.startswith("lraspp") else {"aux_loss": True}
    key = (name, num_classes, seed)
    if key not in _CALIBRATED:  # once per session: the statistics' float sums depend on the thread count
        torch.manual_seed(seed)
        model = get_model(name, weights=None, weights_backbone=None, num_classes=num_classes, **kwargs)
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.momentum = None  # cumulative average over the calibration pass
        tf = get_model_weights(name).DEFAULT.transforms()
        batch = torch.stack([tf(photo(n).resize((256, 256))) for n in PHOTOS])
        model.train()
        with torch.no_grad():
            model(batch)
        _CALIBRATED[key] = {k: v.clone() for k, v in model.state_dict().items()}
    model = get_model(name, weights=None, weights_backbone=None, num_classes=num_classes, **kwargs)
    model.load_state_dict(_CALIBRATED[key])
    return model.eval()


_CALIBRATED: dict[tuple, dict] = {}


@pytest.fixture(scope="session")
def weights_file(tmp_path_factory):
    """Factory: path of a saved calibrated state dict (.pth) for a model name, cached per session."""
    cache: dict[str, object] = {}

    def make(name: str = "lraspp_mobilenet_v3_large"):
        if name not in cache:
            path = tmp_path_factory.mktemp("weights") / f"{name}.pth"
            torch.save(calibrated_model(name).state_dict(), path)
            cache[name] = path
        return cache[name]

    return make


def varied(labels: np.ndarray) -> bool:
    """At least two classes with 1% of the pixels each: a label map worth comparing."""
    counts = np.bincount(labels.ravel())
    return int((counts > 0.01 * labels.size).sum()) >= 2


@contextlib.contextmanager
def live_server(app, *, backlog: int = 2048, **config) -> Iterator[str]:
    """Run ``app`` with uvicorn in a background thread on a free 127.0.0.1 port; yield its URL.

    ``config``: more ``uvicorn.Config`` arguments (e.g. ``http=`` a protocol class)."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))  # the OS picks a free port; uvicorn serves on this very socket
    server = uvicorn.Server(
        uvicorn.Config(app, log_config=None, access_log=False, lifespan="on", backlog=backlog, **config)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the uvicorn test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


# torch threads of each Ray worker in the tests: the local engine's (CPU convolutions sum in an
# order that depends on the thread count, so equal threads give equal results by construction).
RAY_THREADS = torch.get_num_threads()


@pytest.fixture
def ray_instance(s3_server):
    """A local Ray instance (two workers of RAY_THREADS CPUs fit) shared by the Ray tests: started by the first test
    that asks for it, and again after a test that needed a cluster of its own shut it down.

    It depends on the S3 server (tests/_s3.py) so that the server's environment is set before
    Ray starts: Ray's workers inherit it.
    """
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    from seglens import _cluster

    if not ray.is_initialized():
        ray.init(
            address="local", num_cpus=max(4, 2 * RAY_THREADS), include_dashboard=False, log_to_driver=False,
            logging_level="ERROR",
        )  # fmt: skip
    _cluster.quiet()
    return ray
