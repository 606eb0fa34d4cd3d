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
import socket
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
    return {
        "status": r.status_code,
        "retry_after": r.headers.get("retry-after"),
        "start": t0,
        "end": t1,
        "seconds": t1 - t0,
        "attempts": attempts,
        "bytes": len(r.content),
    }


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
            assert (
                client.post("/v1/segment", files={"file": ("photo.jpg", data, "image/jpeg")}).status_code == 200
            )  # warm
        rss_before = psutil.Process().memory_info().rss

        with peak_rss() as rss:
            results, wall = burst(url, data, retry=False)
        assert len(results) == CLIENTS  # none lost
        assert {r["status"] for r in results} <= {200, 503}, [r["status"] for r in results]
        # Retry-After: the expected wait for the work admitted ahead (a few small jobs: seconds)
        assert all(1 <= int(r["retry_after"]) <= 5 for r in results if r["status"] == 503)
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
        "setup": {
            "model": MODEL,
            "device": "cpu",
            "workers": WORKERS,
            "queue_size": QUEUE,
            "clients": CLIENTS,
            "image": "skimage chelsea 200x150 JPEG",
            "image_bytes": len(data),
            "format": "png",
            "torch_threads": __import__("torch").get_num_threads(),
            "cpus": os.cpu_count(),
        },
        "burst": counts,
        "retrying_clients": summary(retried, wall_retry),
        "rss_before_mib": round(rss_before / 2**20, 1),
        "rss_peak_mib": round(max(rss["peak"], rss_retry["peak"]) / 2**20, 1),
        "rss_growth_mib": round(growth / 2**20, 1),
    }
    folder = Path(os.environ.get("SEGLENS_TEST_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "load.json").write_text(json.dumps(report, indent=2) + "\n")


# ---------------------------------------------------------------- slow and stalled clients

STALLED, SLOW = 5, 20
BODY_TIMEOUT_S = 4.0
HEADER_TIMEOUT_S = 1.0


def raw_connection(url: str, head: bytes) -> socket.socket:
    """A client socket that has sent ``head`` (headers, maybe the start of a body) and then waits."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.sendall(head)
    return sock


def upload_head(url: str, length: int, first: bytes = b"") -> bytes:
    host = url.removeprefix("http://")
    return (
        f"POST /v1/segment HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; boundary=x\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode() + first


def answer(sock: socket.socket) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and when it closed it.

    A reset counts as closed: a server that closes a socket with unread bytes in it (a trickled
    byte that arrived meanwhile) sends RST, which can overtake the answer it wrote just before."""
    chunks = []
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks), time.monotonic()


def test_stalled_and_slow_uploads_do_not_lock_out_normal_ones(weights_file, tmp_path):
    """5 stalled bodies and 20 that trickle at 1 byte/s, against 1 worker + a queue of 4: normal
    uploads keep getting 200 at their usual latency, and the slow bodies are dropped (408, closed)
    at the body deadline. Before the fix, the 5 stalled uploads alone held every slot."""
    from seglens import Segmenter
    from seglens.web import create_app

    data = jpeg_bytes()
    seg = Segmenter(MODEL, weights=weights_file(MODEL), device="cpu")
    app = create_app({MODEL: seg}, workers=WORKERS, queue_size=QUEUE, body_timeout=BODY_TIMEOUT_S, min_upload_rate=500)
    with live_server(app) as url, httpx.Client(base_url=url, timeout=CLIENT_TIMEOUT_S) as client:
        files = {"file": ("photo.jpg", data, "image/jpeg")}

        def timed_upload() -> tuple[int, float]:
            t0 = time.perf_counter()
            r = client.post("/v1/segment", files=files, data={"format": "png"})
            return r.status_code, time.perf_counter() - t0

        baseline = [timed_upload() for _ in range(6)][1:]
        assert all(status == 200 for status, _ in baseline)
        usual = max(seconds for _, seconds in baseline)

        t_attack = time.monotonic()
        stalled = [raw_connection(url, upload_head(url, 100_000, b"--x\r\n")) for _ in range(STALLED)]
        slow = [raw_connection(url, upload_head(url, 100_000)) for _ in range(SLOW)]
        stop = threading.Event()

        def trickle() -> None:  # one byte a second on every slow connection
            while not stop.wait(1.0):
                for s in slow:
                    with contextlib.suppress(OSError):
                        s.send(b"x")

        trickler = threading.Thread(target=trickle, daemon=True)
        trickler.start()
        time.sleep(0.5)  # every attacker connection is in, its body being read
        during = []
        while time.monotonic() - t_attack < BODY_TIMEOUT_S - 1:  # all attackers still connected
            during.append(timed_upload())
        assert len(during) >= 3
        assert [status for status, _ in during] == [200] * len(during)
        assert max(seconds for _, seconds in during) < max(3 * usual, usual + 0.5), (baseline, during)

        with ThreadPoolExecutor(STALLED + SLOW) as pool:
            ends = list(pool.map(answer, stalled + slow))
        stop.set()
        for i, (body, end) in enumerate(ends):
            if i < STALLED or body:  # the trickling ones may see the reset first (see answer())
                assert body.startswith(b"HTTP/1.1 408 "), body[:200]
                assert b"upload too slow" in body and b"connection: close" in body.lower()
            # dropped at the deadline: 4 s, plus 1 s per 500 bytes received (a few bytes here)
            assert BODY_TIMEOUT_S - 0.5 < end - t_attack < BODY_TIMEOUT_S + 3, end - t_attack
        assert sum(body.startswith(b"HTTP/1.1 408 ") for body, _ in ends) >= STALLED
        for s in stalled + slow:
            s.close()
        assert client.get("/readyz").json()["in_flight"] == 0
        assert timed_upload()[0] == 200
    report = {
        "setup": {
            "model": MODEL,
            "workers": WORKERS,
            "queue_size": QUEUE,
            "stalled": STALLED,
            "slow_1_byte_per_s": SLOW,
            "body_timeout_s": BODY_TIMEOUT_S,
            "min_upload_rate": 500,
        },
        "normal_upload_ms_before": [round(1000 * t, 1) for _, t in baseline],
        "normal_upload_ms_during_attack": [round(1000 * t, 1) for _, t in during],
        "attackers_dropped_after_s": sorted(round(end - t_attack, 2) for _, end in ends),
    }
    folder = Path(os.environ.get("SEGLENS_TEST_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "slow_clients.json").write_text(json.dumps(report, indent=2) + "\n")


def test_connections_whose_headers_never_finish_are_closed(weights_file):
    """uvicorn has no deadline for a request's headers; seglens serve's protocol closes them."""
    from seglens import Segmenter
    from seglens.web import create_app
    from seglens.web._protocol import protocol_class

    seg = Segmenter(MODEL, weights=weights_file(MODEL), device="cpu")
    with live_server(create_app({MODEL: seg}), http=protocol_class(HEADER_TIMEOUT_S)) as url:
        t0 = time.monotonic()
        host = url.removeprefix("http://")
        partial = [
            raw_connection(url, f"POST /v1/segment HTTP/1.1\r\nHost: {host}\r\nX-Slow: ".encode()) for _ in range(100)
        ]
        silent = [raw_connection(url, b"") for _ in range(20)]
        # A normal request on a fresh connection is not affected.
        with httpx.Client(base_url=url, timeout=10) as client:
            assert client.get("/healthz").status_code == 200
            time.sleep(HEADER_TIMEOUT_S + 0.5)  # an idle keep-alive connection is closed too, harmlessly
            assert client.get("/healthz").status_code == 200
        with ThreadPoolExecutor(32) as pool:
            ends = list(pool.map(answer, partial + silent))
        for body, end in ends:
            assert body.startswith(b"HTTP/1.1 408 ") and b"request headers too slow" in body, body[:200]
            assert HEADER_TIMEOUT_S - 0.2 < end - t0 < HEADER_TIMEOUT_S + 3
        for s in partial + silent:
            s.close()


def jpeg_bytes() -> bytes:
    buf = io.BytesIO()
    photo("chelsea").resize((200, 150)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


# ---------------------------------------------------------------- extreme shapes


def test_extreme_shapes_get_4xx_without_a_large_allocation(weights_file):
    from PIL import Image

    from seglens import Segmenter
    from seglens.web import create_app

    files = {}
    for w, h in ((49_000_000, 1), (10_000_000, 5), (100_000, 490), (7100, 7100)):
        buf = io.BytesIO()
        Image.new("1", (w, h)).save(buf, format="PNG")
        files[(w, h)] = buf.getvalue()
    seg = Segmenter(MODEL, weights=weights_file(MODEL), device="cpu")
    app = create_app({MODEL: seg})  # max_pixels 50,000,000: only 7100x7100 is over it
    with live_server(app) as url, httpx.Client(base_url=url, timeout=CLIENT_TIMEOUT_S) as client:
        assert (
            client.post("/v1/segment", files={"file": ("p.jpg", jpeg_bytes(), "image/jpeg")}).status_code == 200
        )  # warm
        rss_before = psutil.Process().memory_info().rss
        with peak_rss() as rss:
            answers = {
                size: client.post("/v1/segment", files={"file": ("x.png", data, "image/png")})
                for size, data in files.items()
            }
        for (w, h), r in answers.items():
            body = r.json()
            assert r.status_code == (413 if (w, h) == (7100, 7100) else 422), (w, h, r.text)
            assert "\n" not in body["error"] and "--tile" not in body["error"]
        assert "above this server's limit of 50000000" in answers[(7100, 7100)].json()["error"]
    growth = rss["peak"] - rss_before
    assert growth < 200 * 2**20, f"RSS grew by {growth / 2**20:.0f} MiB"
