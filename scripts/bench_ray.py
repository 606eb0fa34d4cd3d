"""The Ray engine against the local one, side by side in one run (issue 13's measurement).

    python scripts/bench_ray.py --images ../shared/datasets/camvid/val --workers 1,2

Each configuration segments the same images into a fresh folder through ``seglens.segment``;
printed per configuration: the job's wall time, time to the first finished image (the local
engine's includes building the model; the Ray engine's also describing the model in a task and
starting the actors; torch is imported and Ray started once before the runs, Ray's start is
printed on its own), the steady rate (images after the
first, over the time after the first) and the overall rate, with ratios to the local engine.
``--repeat N`` runs every configuration N times and prints medians (the machines are noisy).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import seglens  # noqa: E402
from seglens import _cluster  # noqa: E402


def run_once(images: list[Path], out: Path, engine: dict, args) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    done: list[float] = []
    start = time.perf_counter()
    summary = seglens.segment(
        images, out, model=args.model, weights=args.weights, outputs=args.outputs.split(","),
        batch_size=args.batch_size, on_event=lambda e: done.append(time.perf_counter()) if e.kind == "done" else None,
        **engine,
    )  # fmt: skip
    wall = time.perf_counter() - start
    n = summary.segmented
    steady = (n - 1) / (done[-1] - done[0]) if n > 1 and done[-1] > done[0] else float("nan")
    return {"wall": wall, "first": done[0] - start, "steady": steady, "rate": n / wall, "n": n}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=Path, default=Path("../shared/datasets/camvid/val"))
    p.add_argument("--limit", type=int, default=101)
    p.add_argument("--model", default="lraspp_mobilenet_v3_large")
    p.add_argument("--weights", default="random")
    p.add_argument("--outputs", default="mask", help="output kinds, comma-separated (default: mask)")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--workers", default="1,2", help="Ray pool sizes to run (default: 1,2)")
    p.add_argument("--cpus-per-worker", type=float, help="default: the sizing rule for one worker, 1 CPU for more")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--settle", type=float, default=15.0, help="seconds to wait after starting Ray (default: 15)")
    args = p.parse_args()

    images = sorted(x for x in args.images.iterdir() if x.suffix.lower() in (".png", ".jpg", ".jpeg"))[: args.limit]
    import seglens.inference  # noqa: F401 - torch and torchvision imported before any timing

    t = time.perf_counter()
    ray = _cluster.connect("local")
    ray_start = time.perf_counter() - t
    time.sleep(args.settle)  # Ray's own processes finish starting before the first timed run
    cpus = ray.cluster_resources().get("CPU", 0)
    configs = [("local", {})]
    for w in (int(x) for x in args.workers.split(",")):
        per = args.cpus_per_worker or (None if w == 1 else max(0.5, (cpus - 0.5) / w))
        configs.append(
            (f"ray, {w} worker{'s' if w > 1 else ''}", {"engine": "ray", "ray_workers": w, "cpus_per_worker": per})
        )
    results: dict[str, list[dict]] = {name: [] for name, _ in configs}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeat):
            for name, engine in configs:
                results[name].append(run_once(images, Path(tmp) / "out", engine, args))
                print(f"[{r + 1}/{args.repeat}] {name}: {results[name][-1]}", file=sys.stderr)

    def med(name: str, key: str) -> float:
        return statistics.median(x[key] for x in results[name])

    print(f"{len(images)} images from {args.images}, {args.model}, outputs {args.outputs}, batch {args.batch_size}; "
          f"{cpus:g} CPUs; Ray started in {ray_start:.1f} s (once, not in the rows); medians of {args.repeat}")  # fmt: skip
    header = (
        f"{'engine':<18} {'wall s':>8} {'first s':>8} {'steady img/s':>13} {'x local':>8} {'img/s':>7} {'x local':>8}"
    )
    print(header)
    print("-" * len(header))
    for name, _ in configs:
        print(
            f"{name:<18} {med(name, 'wall'):8.1f} {med(name, 'first'):8.1f} {med(name, 'steady'):13.2f} "
            f"{med(name, 'steady') / med('local', 'steady'):8.2f} {med(name, 'rate'):7.2f} "
            f"{med(name, 'rate') / med('local', 'rate'):8.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
