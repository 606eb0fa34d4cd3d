"""seglens train on tiny generated datasets (coloured shapes on textured backgrounds, tests/_shapes.py).

One module-scoped run trains lraspp_mobilenet_v3_large from random init for ten short epochs
(about 10 s); the tests read its run folder, load its best weights in segment/eval/serve, resume
runs, and feed the bad inputs a user would.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from seglens._train_data import Augment, EpochSampler, class_weights, split_indices
from seglens._train_run import Plan
from seglens.cli import main
from seglens.models import WeightsError, load_model
from seglens.train import TrainConfig, TrainDiverged, TrainError, TrainEvent, TrainInterrupted, train
from tests._shapes import CLASSES, COLOURS, write_shapes

MODEL = "lraspp_mobilenet_v3_large"
FAST = {"model": MODEL, "weights": "random", "batch_size": 8, "crop": 64, "workers": 0, "lr": 0.05}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shapes")
    write_shapes(root / "train", 32, seed=1)
    write_shapes(root / "val", 8, seed=2)
    return root


@pytest.fixture(scope="module")
def trained(shapes, tmp_path_factory):
    """(TrainResult, events) of a 10-epoch run from random init."""
    events: list[TrainEvent] = []
    out = tmp_path_factory.mktemp("runs") / "shapes"
    result = train(root=str(shapes / "train"), classes=str(shapes / "train" / "classes.txt"),
                   val_root=str(shapes / "val"), epochs=10, out=str(out), on_event=events.append, **FAST)  # fmt: skip
    return result, events


def test_training_learns_far_above_chance(trained):
    result, events = trained
    # Random weights (and any constant labelling) score <= 30 here: background covers ~88% of the pixels.
    assert result.best_miou > 55, result.history
    assert [e.row["epoch"] for e in events if e.kind == "epoch"] == list(range(1, 11))
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"] / 3
    run = Path(result.run_dir)
    assert {p.name for p in run.iterdir()} >= {"config.json", "last.ckpt", "best.safetensors", "metrics.csv",
                                                "curves.png", "eval"}  # fmt: skip
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == list(range(1, 11))
    assert max(float(r["val_miou"]) for r in rows) == pytest.approx(result.best_miou)
    assert Image.open(run / "curves.png").size == (1000, 360)


def test_report_of_best_weights_equals_the_epochs_validation(trained):
    result, _ = trained
    metrics = json.loads((Path(result.run_dir) / "eval" / "metrics.json").read_text())
    assert metrics["miou"] == pytest.approx(result.best_miou, abs=0.01)
    assert set(metrics["per_class"]) == set(CLASSES)


def test_best_weights_carry_names_colours_and_input_rule(trained):
    loaded = load_model(weights=trained[0].best_weights)  # no model name: the file says which
    assert loaded.name == MODEL
    assert loaded.categories == CLASSES
    np.testing.assert_array_equal(loaded.palette[:3], np.array(COLOURS, dtype=np.uint8))
    assert loaded.transforms.resize_size is None  # trained at the images' own size, run at it
    with pytest.raises(WeightsError, match="trained as lraspp_mobilenet_v3_large"):
        load_model("fcn_resnet50", weights=trained[0].best_weights)


def test_segment_and_eval_use_the_trained_classes(trained, shapes, tmp_path, capsys):
    best = trained[0].best_weights
    code = main(["segment", str(shapes / "val" / "images" / "000.png"), "-w", best, "-o", str(tmp_path / "seg"), "-q"])
    assert code == 0
    summary = json.loads((tmp_path / "seg" / "summary.json").read_text())
    assert summary["model"] == MODEL
    names = {c["name"] for c in summary["images"][0]["classes"]}
    assert names <= set(CLASSES) and names & {"square", "disc"}  # the legend says "disc", not a VOC name
    code = main(["eval", "--dataset", "folder", "--root", str(shapes / "val"), "-w", best,
                 "-o", str(tmp_path / "ev"), "-q"])  # fmt: skip
    assert code == 0
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert set(metrics["per_class"]) == set(CLASSES)
    assert metrics["miou"] == pytest.approx(trained[0].best_miou, abs=0.01)


def test_serve_names_the_trained_classes(trained, shapes):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from seglens import Segmenter
    from seglens.web import create_app

    seg = Segmenter(MODEL, weights=trained[0].best_weights, device="cpu")
    data = (shapes / "val" / "images" / "001.png").read_bytes()
    with TestClient(create_app({MODEL: seg}), base_url="http://127.0.0.1") as client:
        r = client.post("/v1/segment", files={"file": ("a.png", data, "image/png")})
    assert r.status_code == 200, r.text
    assert {c["name"] for c in r.json()["classes"]} <= set(CLASSES)


# ---------------------------------------------------------------- resume


def _interrupt_after(epoch: int, events: list):
    def on_event(event: TrainEvent) -> None:
        events.append(event)
        if event.kind == "epoch" and event.row["epoch"] == epoch:
            os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C: the run stops after this epoch

    return on_event


def test_resume_continues_exactly(shapes, tmp_path):
    common = {"root": str(shapes / "train"), "classes": str(shapes / "train" / "classes.txt"),
              "val_root": str(shapes / "val"), "epochs": 3, "eval_report": False, **FAST}  # fmt: skip
    straight = train(out=str(tmp_path / "a"), **common)
    events: list = []
    with pytest.raises(TrainInterrupted) as info:
        train(out=str(tmp_path / "b"), on_event=_interrupt_after(2, events), **common)
    assert Path(info.value.checkpoint).is_file()
    resumed = train(resume=str(tmp_path / "b"))
    keys = ("epoch", "steps", "images", "train_loss", "lr", "val_miou", "val_pixel_acc")
    assert [{k: r[k] for k in keys} for r in resumed.history] == [{k: r[k] for k in keys} for r in straight.history]


def test_sigint_mid_epoch_saves_and_resume_finishes(shapes, tmp_path):
    common = {"root": str(shapes / "train"), "classes": str(shapes / "train" / "classes.txt"),
              "val_fraction": 0.25, "epochs": 2, "eval_report": False, **FAST, "batch_size": 4}  # fmt: skip
    import seglens._train_run as run

    calls = {"n": 0}
    original = run.seg_loss

    def loss_then_interrupt(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return original(*args, **kwargs)

    run.seg_loss = loss_then_interrupt
    try:
        with pytest.raises(TrainInterrupted):
            train(out=str(tmp_path / "r"), **common)
    finally:
        run.seg_loss = original
    state = torch.load(tmp_path / "r" / "last.ckpt", weights_only=True)
    assert (state["epoch"], state["batch"]) == (0, 3)
    result = train(resume=str(tmp_path / "r"))
    assert [r["epoch"] for r in result.history] == [1, 2]
    assert result.history[-1]["steps"] == 2 * 6  # 24 training images / batch 4, no step repeated


# ---------------------------------------------------------------- bad input


def _run(tmp_path, **kwargs):
    events: list = []
    return events, train(out=str(tmp_path / "run"), epochs=1, eval_report=False, on_event=events.append,
                         **{**FAST, **kwargs})  # fmt: skip


def test_binary_255_masks_are_refused_with_the_fix(tmp_path):
    root = write_shapes(tmp_path / "d", 6, seed=3)
    for p in (root / "masks").iterdir():
        m = np.array(Image.open(p))
        Image.fromarray(np.where(m == 1, 255, 0).astype(np.uint8), mode="L").save(p)
    with pytest.raises(TrainError, match="--mask-values 0,255"):
        _run(tmp_path, root=str(root), val_fraction=0.3)
    events, result = _run(tmp_path, root=str(root), val_fraction=0.3, mask_values=(0, 255))
    assert result.epochs == 1 and load_model(weights=result.best_weights).categories == ("class 0", "class 1")


def test_out_of_range_value_names_the_file(tmp_path):
    root = write_shapes(tmp_path / "d", 6, seed=3)
    m = np.array(Image.open(root / "masks" / "002.png"))
    m[0, 0] = 7
    Image.fromarray(m, mode="L").save(root / "masks" / "002.png")
    with pytest.raises(TrainError, match=r"002\.png.*7 \(1 px\)"):
        _run(tmp_path, root=str(root), classes=str(root / "classes.txt"), val_fraction=0.3)


def test_empty_dataset_and_missing_masks(tmp_path):
    root = write_shapes(tmp_path / "d", 8, seed=3)
    for i in (0, 1):
        (root / "masks" / f"{i:03d}.png").unlink()
    events, result = _run(tmp_path, root=str(root), classes=str(root / "classes.txt"), val_fraction=0.3)
    warned = [e.message for e in events if e.kind == "warning"]
    assert any("000.png: no mask" in w for w in warned) and any("001.png: no mask" in w for w in warned)
    assert result.history[0]["images"] + 2 == 6  # 6 pairs: 4 train (2 batches of... one batch), 2 val
    for p in (root / "masks").iterdir():
        p.unlink()
    with pytest.raises(TrainError, match="no training images with masks"):
        _run(tmp_path, root=str(root), classes=str(root / "classes.txt"))


def test_unreadable_images_are_skipped_and_listed(tmp_path):
    root = write_shapes(tmp_path / "d", 10, seed=3)
    (root / "images" / "004.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    events, result = _run(tmp_path, root=str(root), classes=str(root / "classes.txt"), val_fraction=0.2)
    assert any("004.png" in e.message and "unreadable" in e.message for e in events if e.kind == "warning")
    assert result.epochs == 1


def test_weights_file_with_another_class_count(tmp_path, weights_file):
    root = write_shapes(tmp_path / "d", 6, seed=3)
    with pytest.raises(TrainError, match="21 classes but the training data has 3"):
        _run(tmp_path, root=str(root), classes=str(root / "classes.txt"), val_fraction=0.3,
             weights=weights_file(MODEL))  # fmt: skip


def test_out_folder_that_cannot_be_written(tmp_path):
    root = write_shapes(tmp_path / "d", 6, seed=3)
    (tmp_path / "file").write_text("x")
    with pytest.raises(TrainError, match="cannot create the run folder"):
        train(root=str(root), out=str(tmp_path / "file" / "run"), epochs=1, **FAST)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    import seglens._train_run as run

    root = write_shapes(tmp_path / "d", 8, seed=3)
    calls = {"n": 0}
    original = run.seg_loss

    def nan_in_epoch_two(*args, **kwargs):
        calls["n"] += 1
        loss = original(*args, **kwargs)
        return loss * float("nan") if calls["n"] > 1 else loss

    monkeypatch.setattr(run, "seg_loss", nan_in_epoch_two)
    with pytest.raises(TrainDiverged, match=r"became nan at epoch 2, step 1.*last\.ckpt \(epoch 1\)"):
        train(root=str(root), classes=str(root / "classes.txt"), val_fraction=0.25, out=str(tmp_path / "run"),
              epochs=3, eval_report=False, **FAST)  # fmt: skip
    assert torch.load(tmp_path / "run" / "last.ckpt", weights_only=True)["epoch"] == 1


def test_existing_out_folder_is_never_overwritten(tmp_path):
    root = write_shapes(tmp_path / "d", 6, seed=3)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "keep.txt").write_text("mine")
    _, result = _run(tmp_path, root=str(root), val_fraction=0.3)
    assert result.run_dir == str(tmp_path / "run-2")
    assert (tmp_path / "run" / "keep.txt").read_text() == "mine"


# ---------------------------------------------------------------- CLI


def test_cli_train_then_resume(shapes, tmp_path, capsys):
    args = ["train", "--root", str(shapes / "train"), "--classes", str(shapes / "train" / "classes.txt"),
            "--val-root", str(shapes / "val"), "-w", "random", "--epochs", "1", "-b", "8", "--crop", "64",
            "--workers", "1", "--no-report", "-q", "-o", str(tmp_path / "run")]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("best epoch 1 of 1: val mIoU") and str(tmp_path / "run" / "best.safetensors") in out
    assert main(["train", "--resume", str(tmp_path / "run"), "--epochs", "2", "-q"]) == 0
    assert "best epoch" in capsys.readouterr().out
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--images", "x", "--masks", "y"], "argument --root: give --root or --images + --masks, not both"),
        (["--crop", "8"], "argument --crop: --crop must be an integer >= 32"),
        (["--val-fraction", "1.5"], "argument --val-fraction"),
    ],
)
def test_cli_usage_errors(extra, words, tmp_path, capsys):
    assert main(["train", "--root", str(tmp_path), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: seglens train: ") and words in err


# ---------------------------------------------------------------- DDP


def test_torchrun_two_gloo_processes(shapes, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "seglens.cli", "train", "--root", str(shapes / "train"), "--classes",
           str(shapes / "train" / "classes.txt"), "--val-root", str(shapes / "val"), "-w", "random", "--epochs", "2",
           "-b", "4", "--crop", "64", "--lr", "0.05", "--workers", "0", "--device", "cpu", "-q",
           "-o", str(out)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("best epoch") == 1, proc.stdout  # rank 0 speaks for the job
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp"]  # rank 1 made no folder of its own
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    # 32 images over 2 processes of batch 4: 4 steps per epoch, 8 images a step.
    assert [(r["epoch"], r["steps"]) for r in rows] == [("1", "4"), ("2", "8")]
    assert load_model(weights=str(out / "best.safetensors")).categories == CLASSES


# ---------------------------------------------------------------- pieces


def test_plan_fits_the_budget_from_measured_steps():
    config = TrainConfig(root="x", minutes=1.0, batch_size=4)
    plan = Plan(steps_per_epoch=10, config=config, n_val=8)
    for _ in range(6):
        plan.advance(0.5, 0.0)  # 0.5 s a step: an epoch ~5 s + 0.5 s of validation
    assert plan.epochs == 10  # floor(60 / 5.5)
    assert plan.warmup == 5  # 5% of 100 planned steps
    plan.replan(3, 10.0, 30.0)  # slower than planned: 30 s left, 10 s an epoch
    assert plan.epochs == 6
    assert plan.done(6) and not plan.done(5)
    fixed = Plan(steps_per_epoch=10, config=TrainConfig(root="x", epochs=4), n_val=0)
    assert [round(fixed.factor(s), 4) for s in (0, 1, 2, 20, 40)] == [0.01, 0.505, 1.0, 0.5612, 0.0]


def test_class_weights_exact():
    pixels, images = [100, 300, 0, 600], [1, 2, 0, 3]
    assert class_weights("none", pixels, images, 400.0) is None
    # freq = 100/400, 300/800, 600/1200 = 0.25, 0.375, 0.5; median 0.375
    assert class_weights("median", pixels, images, 400.0) == [1.5, 1.0, 0.0, 0.75]
    enet = class_weights("inverse", pixels, images, 400.0)
    assert enet[2] == 0.0 and enet[0] == pytest.approx(1 / np.log(1.02 + 0.1), abs=1e-6)


def test_sampler_shards_and_resumes():
    shards = [EpochSampler(10, seed=3, rank=r, world=2) for r in (0, 1)]
    for s in shards:
        s.set_epoch(1)
    a, b = list(shards[0]), list(shards[1])
    assert len(a) == len(b) == 5 and sorted(a + b) == list(range(10))
    shards[0].set_epoch(1, offset=2)
    assert list(shards[0]) == a[2:]
    assert split_indices(10, 0.2, 0) == split_indices(10, 0.2, 0) and len(split_indices(10, 0.2, 0)[1]) == 2


def test_augment_pads_masks_with_the_ignore_value():
    torch.manual_seed(0)
    augment = Augment(crop=96, ignore_index=11, mean=(0.5,) * 3, std=(0.5,) * 3, scale_range=(1.0, 1.0))
    image = Image.new("RGB", (40, 30), (255, 0, 0))
    target = np.full((30, 40), 3, np.uint8)
    x, y = augment(image, target)
    assert x.shape == (3, 96, 96) and y.shape == (96, 96) and y.dtype == torch.int64
    assert set(torch.unique(y).tolist()) == {3, 11} and int((y == 3).sum()) == 40 * 30


# ---------------------------------------------------------------- starting weights


def test_official_start_keeps_everything_but_the_last_layers(monkeypatch):
    import seglens._train_model as tm
    from tests.conftest import calibrated_model

    name = "deeplabv3_mobilenet_v3_large"
    official = calibrated_model(name).state_dict()  # stands in for the pinned COCO-VOC file (21 classes)
    monkeypatch.setattr(tm._models, "_official_state_dict", lambda n, progress: (official, "ab" * 32))
    model, where = tm.build_model(name, 3, weights=None, weights_backbone="none", seed=0)
    fresh = {"classifier.4.weight", "classifier.4.bias", "aux_classifier.4.weight", "aux_classifier.4.bias"}
    assert where == f"official COCO_WITH_VOC_LABELS_V1 (sha256 {'ab' * 6}); new classifier: {', '.join(sorted(fresh))}"
    for key, value in model.state_dict().items():
        if key in fresh:
            assert value.shape[0] == 3
        else:
            assert torch.equal(value, official[key]), key
    groups = tm.param_groups(model, lr=0.01, head_lr=10.0, freeze_backbone=False)
    assert [(g["name"], g["lr"]) for g in groups] == [("backbone", 0.01), ("classifier", 0.1), ("aux_classifier", 0.1)]


def test_backbone_file_start_and_frozen_backbone(tmp_path):
    from torchvision.models import get_model

    import seglens._train_model as tm

    torch.manual_seed(5)
    classifier = get_model("mobilenet_v3_large", weights=None)
    torch.save(classifier.state_dict(), tmp_path / "backbone.pth")
    model, where = tm.build_model(MODEL, 3, weights=None, weights_backbone=str(tmp_path / "backbone.pth"), seed=0)
    assert where.startswith(f"backbone {tmp_path / 'backbone.pth'}")
    own = model.backbone.state_dict()
    assert torch.equal(own["0.0.weight"], classifier.state_dict()["features.0.0.weight"])
    assert torch.equal(own["16.1.running_var"], classifier.state_dict()["features.16.1.running_var"])
    groups = tm.param_groups(model, lr=0.1, head_lr=10.0, freeze_backbone=True)
    assert [(g["name"], g["lr"]) for g in groups] == [("classifier", 1.0)]
    assert not any(p.requires_grad for p in model.backbone.parameters())
    wrong = get_model("resnet18", weights=None)
    torch.save(wrong.state_dict(), tmp_path / "resnet.pth")
    with pytest.raises(TrainError, match="backbone's .* tensors are missing or do not fit"):
        tm.build_model(MODEL, 3, weights=None, weights_backbone=str(tmp_path / "resnet.pth"), seed=0)


def test_eval_resize_none_runs_a_plain_state_dict_at_its_training_size(trained, shapes, tmp_path):
    """A state dict without seglens metadata runs at torchvision's 520-pixel rule unless told
    ``--resize none``; then it scores exactly what its metadata-carrying twin scores."""
    from seglens.evaluation import evaluate
    from seglens.models import load_state_dict_file

    plain = tmp_path / "plain.pth"
    torch.save(load_state_dict_file(trained[0].best_weights), plain)
    common = {"model": MODEL, "classes": str(shapes / "val" / "classes.txt"), "worst": 0}
    native = evaluate("folder", str(shapes / "val"), weights=str(plain), scale=1.0, **common)
    resized = evaluate("folder", str(shapes / "val"), weights=str(plain), **common)
    twin = evaluate("folder", str(shapes / "val"), weights=trained[0].best_weights, **common)
    assert native.miou == twin.miou == pytest.approx(trained[0].best_miou, abs=0.01)
    assert resized.miou != native.miou
    with pytest.raises(ValueError, match="protocol='native'"):
        evaluate("folder", str(shapes / "val"), weights=str(plain), scale=1.0, protocol="torchvision", **common)


def test_kill_9_loses_at_most_the_epoch_in_progress(shapes, tmp_path):
    import time

    out = tmp_path / "k"
    cmd = [sys.executable, "-m", "seglens.cli", "train", "--root", str(shapes / "train"), "--classes",
           str(shapes / "train" / "classes.txt"), "--val-root", str(shapes / "val"), "-w", "random", "--epochs", "4",
           "-b", "8", "--crop", "64", "--lr", "0.05", "--workers", "0", "--no-report", "-q",
           "-o", str(out)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (out / "metrics.csv").is_file() and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.kill()  # SIGKILL: no handler runs
        proc.wait(30)
    finally:
        proc.kill()
    done = torch.load(out / "last.ckpt", weights_only=True)["epoch"]
    assert done >= 1
    result = train(resume=str(out))
    assert [r["epoch"] for r in result.history] == [1, 2, 3, 4]
    assert not list(out.glob(".*.tmp-*"))
