"""Benchmark of seglens train on CamVid (issue 12): speed vs torchvision's reference loop, and
val mIoU per wall-clock budget, both scored with seglens eval on CamVid val.

    python scripts/bench_train.py speed  --steps 20                       # side by side, one run
    python scripts/bench_train.py quality --minutes 10 --model lraspp_mobilenet_v3_large [--reference]

Everything is written under --out (default bench_train/): each run folder, and one JSON line per
result appended to results.jsonl.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from seglens._bench_train import reference_train, train_speed
from seglens.evaluation import evaluate
from seglens.train import train

CAMVID = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "camvid"


def _record(out: Path, row: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with (out / "results.jsonl").open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=("speed", "quality"))
    p.add_argument("--camvid", type=Path, default=CAMVID)
    p.add_argument("--model", default="lraspp_mobilenet_v3_large")
    p.add_argument("--minutes", type=float, default=10)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--crop", type=int, default=480)
    p.add_argument("--reference", action="store_true", help="quality: the reference loop instead of seglens train")
    p.add_argument(
        "--recipe", default="{}", help='quality: JSON of extra train() options, e.g. \'{"class_weights": "median"}\''
    )
    p.add_argument("--out", type=Path, default=Path("bench_train"))
    a = p.parse_args()
    c = a.camvid
    data = {"images": str(c / "train"), "masks": str(c / "trainannot"), "ignore_index": 11}
    if a.what == "speed":
        rows = train_speed(**data, classes=str(c / "classes.txt"), model=a.model, batch_size=a.batch_size,
                           crop=a.crop, steps=a.steps, out=a.out / f"speed-{time.strftime('%H%M%S')}")  # fmt: skip
        for r in rows:
            _record(a.out, {"bench": "speed", "model": a.model, "batch": a.batch_size, "crop": a.crop, **r})
        return
    val = {
        "images": str(c / "val"),
        "masks": str(c / "valannot"),
        "classes": str(c / "classes.txt"),
        "ignore_index": 11,
    }
    name = f"{a.model}-{'reference' if a.reference else 'seglens'}-{a.minutes:g}min"
    if a.reference:
        weights = a.out / f"{name}.pth"
        run = reference_train(**data, model=a.model, num_classes=11, minutes=a.minutes, batch_size=a.batch_size,
                              crop=a.crop, save=weights)  # fmt: skip
        info = {"steps": run["steps"], "images_per_s": run["images_per_s"], "train_s": run["seconds"]}
    else:
        recipe = json.loads(a.recipe)
        result = train(**data, classes=str(c / "classes.txt"), val_images=val["images"], val_masks=val["masks"],
                       model=a.model, weights="random", minutes=a.minutes, batch_size=a.batch_size, crop=a.crop,
                       out=str(a.out / name), eval_report=False, progress=True, **recipe)  # fmt: skip
        weights = Path(result.best_weights)
        last = result.history[-1]
        info = {"epochs": result.epochs, "best_epoch": result.best_epoch, "steps": last["steps"],
                "train_s": last["elapsed_s"], "recipe": recipe}  # fmt: skip
    scored = evaluate("folder", model=a.model, weights=str(weights), out=a.out / f"{name}-eval", **val)
    _record(a.out, {"bench": "quality", "run": name, "minutes": a.minutes, "miou": scored.miou,
                    "pixel_acc": scored.pixel_acc, **info})  # fmt: skip


if __name__ == "__main__":
    main()
