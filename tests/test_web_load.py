"""Back-pressure under load: a live uvicorn server with 1 worker and a queue of 4, hit by 64
concurrent uploads of a small real photograph.

Every request must get 200 or 503 + Retry-After (none hangs, none is lost), both answers must
occur, the server must still answer afterwards, and its memory must stay bounded. A second
round, with clients that honour Retry-After, must get all 64 through. The numbers (requests/s,
status counts, latency percentiles, RSS) are written to ``load.json`` in
``$SEGLENS_TEST_ARTIFACTS`` (default: the test's tmp_path).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import live_server, photo

httpx = pytest.importorskip("httpx", reason="the load test needs httpx: pip install httpx")
psutil = pytest.importorskip("psutil", reason="the load test needs psutil: pip install psutil")
uvicorn = pytest.importorskip("uvicorn", reason="the web extra is not installed: pip install 'seglens[web]'")
pytest.importorskip("fastapi", reason="the web extra is not installed: pip install 'seglens[web]'")

MODEL = "lraspp_mobilenet_v3_large"
CLIENTS = 64
WORKERS, QUEUE = 1, 4
CLIENT_TIMEOUT_S = 60  # a request that takes longer counts as hung
MAX_RSS_GROWTH = 1.5 * 2**30


@contextlib.contextmanager
def peak_rss() -> Iterator[dict[str, int]]:
    """Sample this process's resident memory every 20 ms in a thread; yields {"peak": bytes}."""
    process = psutil.Process()
    result = {"peak": process.memory_info().rss}
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.02):
            result["peak"] = max(result["peak"], process.memory_info().rss)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield result
    finally:
        stop.set()
        thread.join()


def upload(url: str, data: bytes, start: threading.Barrier, *, retry: bool) -> dict:
    """One client: POST the image (after all clients are ready); with ``retry``, honour 503s."""
    attempts = []
    with httpx.Client(base_url=url, timeout=CLIENT_TIMEOUT_S) as client:  # built before the clock starts
        start.wait()
        t0 = time.perf_counter()
        for _ in range(200 if retry else 1):
            r = client.post("/v1/segment", files={"file": ("photo.jpg", data, "image/jpeg")}, data={"format": "png"})
            attempts.append((r.status_code, r.headers.get("retry-after")))
            if r.status_code != 503 or not retry:
                break
            time.sleep(float(r.headers["retry-after"]))
    t1 = time.perf_counter()
    return {"status": r.status_code, "retry_after": r.headers.get("retry-after"), "start": t0, "end": t1, "seconds": t1 - t0, "attempts": attempts, "bytes": len(r.content)}


def burst(url: str, data: bytes, *, retry: bool) -> tuple[list[dict], float]:
    start = threading.Barrier(CLIENTS)
    with ThreadPoolExecutor(CLIENTS) as pool:
        futures = [pool.submit(upload, url, data, start, retry=retry) for _ in range(CLIENTS)]
        results = [f.result() for f in futures]  # a client error or timeout fails the test here
    return results, max(r["end"] for r in results) - min(r["start"] for r in results)


def summary(results: list[dict], wall: float) -> dict:
    ok = [r["seconds"] for r in results if r["status"] == 200]
    every = [r["seconds"] for r in results]
    return {
        "requests": len(results),
        "status_200": len(ok),
        "status_503": sum(r["status"] == 503 for r in results),
        "http_attempts": sum(len(r["attempts"]) for r in results),
        "wall_s": round(wall, 3),
        "ok_per_s": round(len(ok) / wall, 2),
        "answers_per_s": round(sum(len(r["attempts"]) for r in results) / wall, 2),
        "latency_all_p50_ms": round(1000 * float(np.percentile(every, 50)), 1),
        "latency_all_p95_ms": round(1000 * float(np.percentile(every, 95)), 1),
        "latency_200_p50_ms": round(1000 * float(np.percentile(ok, 50)), 1) if ok else None,
        "latency_200_p95_ms": round(1000 * float(np.percentile(ok, 95)), 1) if ok else None,
    }


def test_64_concurrent_uploads_get_200_or_503_and_memory_stays_bounded(weights_file, tmp_path):
    from seglens import Segmenter
    from seglens.web import create_app

    buf = io.BytesIO()
    photo("chelsea").resize((200, 150)).save(buf, format="JPEG", quality=90)
    data = buf.getvalue()
    seg = Segmenter(MODEL, weights=weights_file(MODEL), device="cpu")
    app = create_app({MODEL: seg}, workers=WORKERS, queue_size=QUEUE)

    with live_server(app, backlog=256) as url:
        with httpx.Client(base_url=url, timeout=CLIENT_TIMEOUT_S) as client:
            assert client.get("/readyz").status_code == 200
            assert client.post("/v1/segment", files={"file": ("photo.jpg", data, "image/jpeg")}).status_code == 200  # warm
        rss_before = psutil.Process().memory_info().rss

        with peak_rss() as rss:
            results, wall = burst(url, data, retry=False)
        assert len(results) == CLIENTS  # none lost
        assert {r["status"] for r in results} <= {200, 503}, [r["status"] for r in results]
        assert all(r["retry_after"] == "1" for r in results if r["status"] == 503)
        assert all(r["bytes"] > 0 for r in results)
        counts = summary(results, wall)
        assert counts["status_200"] >= 1 and counts["status_503"] >= 1, counts
        # At most workers + queue are admitted at a time; with 64 arriving together, the rest wait
        # for nothing: the 503s come back at once, long before the slowest 200.
        assert counts["status_200"] <= CLIENTS - counts["status_503"]

        with peak_rss() as rss_retry:
            retried, wall_retry = burst(url, data, retry=True)
        assert [r["status"] for r in retried] == [200] * CLIENTS  # every client gets through

        with httpx.Client(base_url=url, timeout=10) as client:
            assert client.get("/healthz").json() == {"status": "ok"}
            ready = client.get("/readyz").json()
            assert ready["ready"] is True and ready["in_flight"] == 0

    growth = max(rss["peak"], rss_retry["peak"]) - rss_before
    assert growth < MAX_RSS_GROWTH, f"RSS grew by {growth / 2**20:.0f} MiB under load"

    report = {
        "setup": {"model": MODEL, "device": "cpu", "workers": WORKERS, "queue_size": QUEUE, "clients": CLIENTS,
                  "image": "skimage chelsea 200x150 JPEG", "image_bytes": len(data), "format": "png",
                  "torch_threads": __import__("torch").get_num_threads(), "cpus": os.cpu_count()},
        "burst": counts,
        "retrying_clients": summary(retried, wall_retry),
        "rss_before_mib": round(rss_before / 2**20, 1),
        "rss_peak_mib": round(max(rss["peak"], rss_retry["peak"]) / 2**20, 1),
        "rss_growth_mib": round(growth / 2**20, 1),
    }
    folder = Path(os.environ.get("SEGLENS_TEST_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "load.json").write_text(json.dumps(report, indent=2) + "\n")
