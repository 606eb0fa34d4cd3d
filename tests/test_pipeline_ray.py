"""seglens.segment(engine="ray"): the same files and summary as the local engine, on a real local
Ray instance (tests/conftest.py's ray_instance), a two-node cluster on this machine and a real
S3 API on 127.0.0.1 (tests/_s3.py).

Each Ray run starts actors that import torch and build the model (seconds on 2 cores), so the
runs are few and each checks much.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import seglens
from seglens import _cluster
from seglens.io import bundled_examples
from tests.conftest import RAY_THREADS

pytest.importorskip("ray.data")

MODEL = "lraspp_mobilenet_v3_large"
RAY = {"engine": "ray", "ray_workers": 2, "cpus_per_worker": RAY_THREADS}  # the local engine's threads


def _odd_folder(root: Path) -> Path:
    """Small real photos in odd forms: grey, RGBA, EXIF-rotated, nested, upper-case suffix, plus
    a truncated JPEG, a non-image with an image suffix and a text file discovery skips."""
    root.mkdir(parents=True)
    photos = [Image.open(p).convert("RGB") for p in bundled_examples()]
    small = [im.resize((im.width // 4, im.height // 4)) for im in photos]
    small[0].save(root / "a.jpg", quality=90)
    small[1].convert("L").save(root / "grey.png")
    rgba = small[2].convert("RGBA")
    rgba.putalpha(128)
    rgba.save(root / "alpha.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees when shown
    small[3].save(root / "rotated.jpg", exif=exif)
    (root / "sub").mkdir()
    small[0].transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(root / "sub" / "b.JPG")
    (root / "broken.jpg").write_bytes((root / "a.jpg").read_bytes()[:600])
    (root / "not_an_image.png").write_bytes(b"hello, world")
    (root / "notes.txt").write_text("not an input")
    return root


def _without_timings(summary: dict) -> dict:
    return {**summary, "images": [{k: v for k, v in e.items() if k != "seconds"} for e in summary["images"]]}


def _csv_without_timings(data: bytes) -> list[dict]:
    rows = list(csv.DictReader(io.StringIO(data.decode())))
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def _files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return _odd_folder(tmp_path_factory.mktemp("odd") / "in")


@pytest.fixture(scope="module")
def local_run(folder, weights_file, tmp_path_factory):
    """The local engine's run over the folder: what every Ray run must equal."""
    out = tmp_path_factory.mktemp("local") / "out"
    summary = seglens.segment(folder, out, model=MODEL, weights=weights_file(MODEL))
    return out, summary


def test_ray_engine_writes_the_local_engines_files(ray_instance, folder, local_run, weights_file, tmp_path):
    local_out, local = local_run
    events = []
    bars = []

    class Bar:
        def __init__(self, **kwargs):
            self.kwargs, self.n = kwargs, 0
            bars.append(self)

        def update(self, n=1):
            self.n += n

        def close(self):
            pass

    out = tmp_path / "ray"
    summary = seglens.segment(
        folder, out, model=MODEL, weights=weights_file(MODEL), on_event=events.append, progress=Bar, **RAY
    )
    assert summary.segmented == local.segmented == 5
    assert [f["input"] for f in summary.failures] == [f["input"] for f in local.failures]
    assert [f["error"] for f in summary.failures] == [f["error"] for f in local.failures]
    assert len(summary.failures) == 2  # the truncated JPEG and the PNG that is not one
    ray_files, local_files = _files(out), _files(local_out)
    assert sorted(ray_files) == sorted(local_files)
    for name in local_files:
        if name not in ("summary.json", "summary.csv"):
            assert ray_files[name] == local_files[name], name  # masks, overlays, figures
    assert _csv_without_timings(ray_files["summary.csv"]) == _csv_without_timings(local_files["summary.csv"])
    assert _without_timings(json.loads(ray_files["summary.json"])) == _without_timings(
        json.loads(local_files["summary.json"])
    )
    assert [b.n for b in bars if b.kwargs.get("unit") == "img"] == [7]  # every input counted once
    notes = [e.message for e in events if e.kind == "note"]
    assert notes == [  # the backend decided once for the pool, as the local engine decides it
        f"Ray: 2 workers ({RAY_THREADS} CPU, {RAY_THREADS} threads each)",
        "backend torch (auto: 7 images: too few to repay an OpenVINO export)",
    ]
    assert sorted(e.input for e in events if e.kind == "done") == sorted(x["input"] for x in local.items)


def test_ray_engine_resumes_like_the_local_engine(ray_instance, folder, local_run, weights_file, tmp_path):
    local_out, _ = local_run
    out = tmp_path / "out"
    shutil.copytree(local_out, out)  # an earlier run (engines agree on names and settings)
    for p in out.glob("grey*"):
        p.unlink()
    (out / ".grey.png.tmp-abcd1234").write_bytes(b"half a file a killed run left")
    summary = seglens.segment(folder, out, model=MODEL, weights=weights_file(MODEL), skip_existing=True, **RAY)
    assert (summary.segmented, summary.skipped) == (1, 4)
    assert _files(out).keys() == _files(local_out).keys()  # the stale temporary is gone
    assert (out / "grey.png").read_bytes() == (local_out / "grey.png").read_bytes()
    assert _without_timings(summary.to_dict()) == _without_timings(json.loads((local_out / "summary.json").read_text()))


def test_a_killed_worker_costs_a_retry_not_the_run(ray_instance, weights_file, tmp_path):
    psutil = pytest.importorskip("psutil")
    src = tmp_path / "many"
    src.mkdir()
    photo = Image.open(bundled_examples()[0]).convert("RGB").resize((320, 240))
    for i in range(24):
        photo.rotate(i * 15).save(src / f"img{i:02d}.jpg")
    out = tmp_path / "out"
    result: dict = {}

    def run():
        result["summary"] = seglens.segment(
            src,
            out,
            model=MODEL,
            weights=weights_file(MODEL),
            outputs=["mask"],
            ray_workers=1,
            cpus_per_worker=RAY_THREADS,
            engine="ray",
        )

    thread = threading.Thread(target=run)
    thread.start()
    killed = None
    deadline = time.monotonic() + 120
    while killed is None and time.monotonic() < deadline and thread.is_alive():
        if any(out.glob("*.png")):  # the actor is working: kill it mid-run
            for proc in psutil.process_iter(["pid", "cmdline"]):
                if "SeglensWorker" in " ".join(proc.info["cmdline"] or ()):
                    os.kill(proc.info["pid"], signal.SIGKILL)
                    killed = proc.info["pid"]
                    break
        time.sleep(0.05)
    thread.join(timeout=300)
    assert killed is not None, "never saw a worker to kill"
    summary = result["summary"]
    assert summary.segmented == 24 and not summary.failures
    assert [e["input"] for e in summary.items] == [str(p) for p in sorted(src.glob("*.jpg"))]  # once each, in order
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"img{i:02d}.png" for i in range(24)] + ["summary.csv", "summary.json"]
    )
    local = seglens.segment(src, tmp_path / "local", model=MODEL, weights=weights_file(MODEL), outputs=["mask"])
    for e in local.items:
        name = e["outputs"]["mask"]
        assert np.array_equal(np.asarray(Image.open(out / name)), np.asarray(Image.open(tmp_path / "local" / name)))


def test_engine_errors_are_one_line(monkeypatch, folder, tmp_path):
    with pytest.raises(ValueError, match="engine= must be one of local, ray"):
        seglens.segment(folder, tmp_path / "o", engine="spark")
    with pytest.raises(ValueError, match=r"ray_workers=: for engine='ray' only"):
        seglens.segment(folder, tmp_path / "o", ray_workers=2)
    with pytest.raises(_cluster.ClusterError, match=r"workers '3:1': need 1 <= MIN <= MAX"):
        seglens.segment(folder, tmp_path / "o", engine="ray", ray_workers="3:1")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(_cluster.ClusterError, match=r"pip install 'seglens\[ray\]'"):
        seglens.segment(folder, tmp_path / "o", engine="ray")
    assert not (tmp_path / "o").exists()


def test_pool_sizing_rule():
    # 2-core machine: one actor, half a CPU left for Ray Data's own tasks
    assert _cluster.plan_pool({"CPU": 2.0}) == _cluster.Pool(1, 1, 1.5, 0.0, 2)
    assert _cluster.plan_pool({"CPU": 16.0}) == _cluster.Pool(1, 4, 3.5, 0.0, 4)
    assert _cluster.plan_pool({"CPU": 16.0, "GPU": 4.0}, gpus_per_worker=1) == _cluster.Pool(1, 4, 1.0, 1.0, 1)
    assert _cluster.plan_pool({"CPU": 16.0, "GPU": 2.0}, gpus_per_worker=0.5, workers="2:4").max_workers == 4
    assert _cluster.plan_pool({"CPU": 4.0}, workers="2", cpus_per_worker=1) == _cluster.Pool(2, 2, 1.0, 0.0, 1)
    with pytest.raises(_cluster.ClusterError, match="the cluster has 0 GPUs"):
        _cluster.plan_pool({"CPU": 4.0}, gpus_per_worker=1)
    with pytest.raises(_cluster.ClusterError, match="MIN:MAX"):
        _cluster.parse_workers("two")


def test_two_node_cluster(folder, local_run, weights_file, tmp_path):
    """A head and a worker node on this machine (ray.cluster_utils.Cluster): one actor per node."""
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()  # the shared instance: the next test that asks for it starts it again
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": RAY_THREADS, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=RAY_THREADS)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False, logging_level="ERROR")
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2
        out = tmp_path / "out"
        summary = seglens.segment(
            folder,
            out,
            model=MODEL,
            weights=weights_file(MODEL),
            engine="ray",
            ray_workers=2,
            cpus_per_worker=RAY_THREADS,
        )
        local_out, local = local_run
        assert summary.segmented == 5 and len(summary.failures) == 2
        for name, data in _files(local_out).items():
            if not name.startswith("summary."):
                assert (out / name).read_bytes() == data, name
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_object_store_in_and_out(ray_instance, s3_server, folder, local_run, weights_file, monkeypatch, tmp_path):
    """s3:// inputs and outputs through a real S3 API (moto's server on 127.0.0.1)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the driver's staging folder
    bucket = s3_server.make_bucket("seglens-ray-io")
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            s3_server.client.put_object(
                Bucket="seglens-ray-io", Key=f"in/{p.relative_to(folder).as_posix()}", Body=p.read_bytes()
            )
    kwargs = {"model": MODEL, "weights": weights_file(MODEL), **RAY}
    summary = seglens.segment(f"{bucket}/in", f"{bucket}/out/", **kwargs)
    assert summary.out == f"{bucket}/out"
    local_out, local = local_run
    listed = s3_server.client.list_objects_v2(Bucket="seglens-ray-io", Prefix="out/")["Contents"]
    stored = {o["Key"][len("out/") :]: o["Key"] for o in listed}
    assert sorted(stored) == sorted(_files(local_out))  # the same names, nothing half-written
    for name, data in _files(local_out).items():
        got = s3_server.client.get_object(Bucket="seglens-ray-io", Key=stored[name])["Body"].read()
        if name == "summary.json":
            expected = json.loads(data.decode().replace(str(folder), f"{bucket}/in"))
            assert _without_timings(json.loads(got)) == _without_timings(expected)
        elif name == "summary.csv":
            assert _csv_without_timings(got) == _csv_without_timings(
                data.decode().replace(str(folder), f"{bucket}/in").encode()
            )
        else:
            assert got == data, name
    again = seglens.segment(f"{bucket}/in", f"{bucket}/out", skip_existing=True, **kwargs)  # resume from the store
    assert (again.segmented, again.skipped, len(again.failures)) == (0, 5, 2)
    assert _without_timings(again.to_dict()) == _without_timings(summary.to_dict())
    assert list((tmp_path / "cache" / "seglens" / "runs").glob("*/summary.json"))  # staged here, not in ~/.cache
    s3_server.client.delete_object(Bucket="seglens-ray-io", Key="out/summary.json")  # the store's summary gone:
    third = seglens.segment(f"{bucket}/in", f"{bucket}/out", skip_existing=True, **kwargs)  # no stale staging copy
    assert (third.segmented, third.skipped) == (5, 0)
    with pytest.raises(seglens.pipeline.RunError, match="no images found .*no-such-bucket"):
        seglens.segment("s3://no-such-bucket/in", f"{bucket}/out2", **kwargs)
