"""The training baseline (torchvision's reference loop) and the side-by-side speed rows."""

from __future__ import annotations

import torch

from seglens._bench_train import reference_train, reference_transform, train_speed
from seglens.models import load_model
from tests._shapes import write_shapes


def test_reference_transform_is_the_presets_recipe():
    tf = reference_transform(crop=96, ignore_index=11)
    names = [type(t).__name__ for t in tf.transforms]
    assert names == ["RandomResize", "RandomHorizontalFlip", "RandomCrop", "ToDtype", "Normalize"]
    assert (tf.transforms[0].min_size, tf.transforms[0].max_size) == (260, 1040)


def test_reference_loop_trains_and_saves_a_loadable_state_dict(tmp_path):
    root = write_shapes(tmp_path / "d", 8, seed=4)
    run = reference_train(str(root / "images"), str(root / "masks"), model="lraspp_mobilenet_v3_large",
                          num_classes=3, ignore_index=255, steps=3, batch_size=2, crop=64, workers=0,
                          save=tmp_path / "ref.pth")  # fmt: skip
    assert (run["steps"], run["images"], len(run["losses"])) == (3, 6, 3)
    assert all(torch.isfinite(torch.tensor(run["losses"])))
    loaded = load_model("lraspp_mobilenet_v3_large", weights=str(tmp_path / "ref.pth"))
    assert len(loaded.categories) == 3 and loaded.transforms.resize_size == [520]  # the reference's rule


def test_speed_rows_compare_the_same_work(tmp_path):
    root = write_shapes(tmp_path / "d", 24, seed=5)
    rows = train_speed(str(root / "images"), str(root / "masks"), classes=str(root / "classes.txt"),
                       ignore_index=255, model="lraspp_mobilenet_v3_large", batch_size=4, crop=64, steps=4,
                       workers=0, out=tmp_path / "run")  # fmt: skip
    assert [r["loop"] for r in rows] == ["torchvision reference", "seglens train"]
    assert [r["steps"] for r in rows] == [4, 4]
    assert rows[0]["vs_reference"] == 1.0 and rows[1]["vs_reference"] > 0
    assert all(0 <= r["data_wait_pct"] <= 100 for r in rows)


def test_cli_bench_train_prints_both_loops(tmp_path, capsys):
    from seglens.cli import main

    root = write_shapes(tmp_path / "d", 12, seed=6)
    code = main(["bench", "--train", "--images", str(root / "images"), "--masks", str(root / "masks"),
                 "--classes", str(root / "classes.txt"), "-m", "lraspp_mobilenet_v3_large", "--steps", "2",
                 "-b", "2", "--crop", "64", "--train-workers", "0", "--json", str(tmp_path / "rows.json")])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "torchvision reference" in out and "seglens train" in out and "1.00x" in out
    import json

    assert [r["steps"] for r in json.loads((tmp_path / "rows.json").read_text())] == [2, 2]
