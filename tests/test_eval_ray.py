"""evaluate(engine="ray"): the scoring on a Ray Data actor pool gives the local result exactly,
and the mergeable tally it rests on gives one pass's result whatever the split and merge order."""

import copy
import os
import pickle
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from seglens import _eval_tally
from seglens._cluster import INSTALL_HINT, ClusterError
from seglens.datasets import open_dataset
from seglens.evaluation import TTA, EvalConfig, evaluate, score_dataset
from seglens.inference import Segmenter
from tests._shapes import write_shapes
from tests.conftest import RAY_THREADS, calibrated_model

SMALL = "lraspp_mobilenet_v3_large"
TIMINGS = ("seconds", "images_per_s")
FLIP = dict(tta=TTA.parse("flip"), compare_tta=True, worst=3)  # TTA and plain scored in the same pass


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """Seven 3-class shape images plus one pair whose image cannot be read (index 5: inside the
    second chunk of four), and a seeded 3-class model's weights file."""
    root = write_shapes(tmp_path_factory.mktemp("shapes"), 7, seed=3, size=48)
    (root / "images" / "004x.png").write_bytes(b"not a png")
    Image.fromarray(np.zeros((48, 48), np.uint8), mode="L").save(root / "masks" / "004x.png")
    weights = tmp_path_factory.mktemp("weights") / "shapes.pth"
    torch.save(calibrated_model(SMALL, num_classes=3, seed=1).state_dict(), weights)
    return root, weights


def comparable(result) -> dict:
    """metrics.json's dict without what may differ between engines: the timings and the engine."""
    m = result.to_dict()
    for key in (*TIMINGS, "engine"):
        m.pop(key, None)
    return m


def assert_same(local, other) -> None:
    np.testing.assert_array_equal(local.confusion_matrix, other.confusion_matrix)
    assert (other.miou, other.pixel_acc) == (local.miou, local.pixel_acc)
    assert other.per_class == local.per_class and other.per_image == local.per_image
    assert other.skipped == local.skipped and other.size == local.size and other.boundary == local.boundary
    assert other.tta_comparison == local.tta_comparison
    assert [(w.name, w.miou) for w in other.worst] == [(w.name, w.miou) for w in local.worst]
    for a, b in zip(local.worst, other.worst):  # the panels' pixels too
        for field in ("image", "target", "pred"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert comparable(other) == comparable(local)  # and everything else metrics.json holds


class Bars:
    """A progress-bar factory that records each bar's total and updates."""

    def __init__(self) -> None:
        self.bars: dict[str, list[int]] = {}

    def __call__(self, *, total, unit, desc):
        self.bars[desc] = [total]
        updates = self.bars[desc]

        class Bar:
            def update(self, n=1):
                updates.append(n)

            def close(self):
                pass

        return Bar()


def crashing_once(dataset, marker):
    """``dataset`` whose reading of sample 2 in another process (a Ray worker) ends that process
    the first time: an actor that dies mid-chunk. A class made here goes to the workers by value."""

    class CrashOnce(type(dataset)):
        def __getitem__(self, i):
            if i == 2 and os.getpid() != self.driver and not os.path.exists(self.marker):
                open(self.marker, "w").close()
                os._exit(1)
            return super().__getitem__(i)

    crashing = copy.copy(dataset)
    crashing.__class__ = CrashOnce
    crashing.driver, crashing.marker = os.getpid(), str(marker)
    return crashing


def test_ray_engine_gives_the_local_result_exactly(ray_instance, shapes, tmp_path):
    """Flip TTA compared with plain inference, one unreadable pair, and a worker that dies in the
    middle of a chunk: Ray restarts it and runs the chunk again. (The network runs at the images'
    own 48 pixels, scale=1: a quick test.)"""
    root, weights = shapes
    config = EvalConfig(protocol="native", **FLIP)
    kw = dict(model=SMALL, weights=weights, config=config, device="cpu", scale=1.0)
    local = evaluate("folder", root, **kw, classes=root / "classes.txt")
    assert len(local.skipped) == 1 and local.skipped[0].index == 5 and local.settings.dataset.images == 7
    assert len({p.miou for p in local.per_image}) > 1  # scores that differ between images: a real comparison

    bars, events, marker = Bars(), [], tmp_path / "crashed"
    dataset = crashing_once(open_dataset("folder", root, classes_file=root / "classes.txt"), marker)
    ray = evaluate(dataset, **kw, engine="ray", ray_workers="2", cpus_per_worker=RAY_THREADS, progress=bars,
                   on_event=events.append)  # fmt: skip
    assert marker.exists()  # a worker died
    assert_same(local, ray)
    assert ray.settings.engine == "ray" and local.settings.engine is None
    assert ray.to_dict()["engine"] == "ray" and "engine" not in local.to_dict()  # local metrics.json unchanged
    total, *updates = bars.bars["eval"]
    assert total == sum(updates) == 8 and updates == [4, 4]  # one update per chunk of four samples
    assert [e.message for e in events if e.kind == "note"] == [
        f"Ray: 2 workers ({RAY_THREADS} CPU, {RAY_THREADS} threads each)"
    ]


def test_tally_merges_in_any_order_to_one_pass(shapes):
    """Scored in parts (halves, or odd and even indices: the size analysis' float sum then waits
    for the gaps) and merged in reverse order, pickled and without pixels on the way as a Ray
    worker sends them, a tally gives what one pass gives (the torchvision protocol: the panels'
    pixels are read again through its resize)."""
    root, weights = shapes
    seg = Segmenter(SMALL, weights=weights, device="cpu")
    dataset = open_dataset("folder", root, classes_file=root / "classes.txt")
    config = EvalConfig(protocol="torchvision", **FLIP)
    one_pass = score_dataset(seg, dataset, config)

    protocol = _eval_tally.resolve_protocol(seg, dataset, config)
    scorer = _eval_tally.Scorer(seg, protocol, config)
    n = len(dataset)

    def scored(indices):
        tally = scorer.tally(dataset)
        scorer.run(dataset, indices, tally)
        tally.strip_pixels()
        return pickle.loads(pickle.dumps(tally))

    parts = {i: scored([i]) for i in range(n)}  # score each image once; combine the parts below
    for split in ([range(0, 3), range(3, n)], [range(0, n, 2), range(1, n, 2)]):
        total = scorer.tally(dataset)
        for indices in reversed(split):
            part = scorer.tally(dataset)
            for i in reversed(indices):
                part.merge(pickle.loads(pickle.dumps(parts[i])))
            total.merge(part)
        total.fill_pixels(lambda i: scorer.view(dataset[i]))
        result = _eval_tally.build_result(total, seg, dataset, protocol, config, seconds=1.0)
        assert_same(one_pass, result)

    with pytest.raises(ValueError, match="count them twice"):
        parts[0].merge(pickle.loads(pickle.dumps(parts[0])))


def test_engine_option_errors(shapes, monkeypatch):
    root, weights = shapes
    with pytest.raises(ValueError, match="engine= must be one of local, ray, got 'spark'"):
        evaluate("folder", root, weights=weights, engine="spark")
    with pytest.raises(ValueError, match="ray_workers=: for engine='ray' only"):
        evaluate("folder", root, weights=weights, ray_workers="2")
    seg = Segmenter(SMALL, weights=weights, device="cpu")
    with pytest.raises(ValueError, match="segmenter= runs in this process"):
        evaluate("folder", root, segmenter=seg, engine="ray")
    for name in ("ray", "ray.data"):  # Ray not installed: importing it fails
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ClusterError, match="needs Ray Data") as e:
        evaluate("folder", root, weights=weights, engine="ray")
    assert INSTALL_HINT in str(e.value) and INSTALL_HINT == "pip install 'seglens[ray]'"


def test_a_workers_own_error_is_sent_back_as_it_is(shapes):
    """A worker that cannot build its model (here: a weights file missing on its node) answers
    every chunk with the exception, pickled, which the driver raises as it is (Ray Data would
    wrap it into a UserCodeException that arrives without it)."""
    from seglens._eval_options import _MODEL_OPTIONS
    from seglens._eval_ray import _Worker
    from seglens.models import WeightsError

    root, _ = shapes
    options = dict(_MODEL_OPTIONS, device="cpu")
    spec = {"model": SMALL, "weights": str(root / "gone.pth"), "model_options": options,
            "threads": torch.get_num_threads(),  # in this process: its thread count must not change
            "dataset": None, "protocol": "native", "config": EvalConfig()}  # fmt: skip
    rows = _Worker(spec)({"start": np.array([0, 4]), "stop": np.array([4, 8])})
    assert list(rows["start"]) == [0, 4] and list(rows["tally"]) == [b"", b""]
    with pytest.raises(WeightsError, match="gone.pth"):
        raise pickle.loads(rows["error"][0])
