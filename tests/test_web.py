"""HTTP API of ``seglens serve``: every endpoint, every refusal with its status and message.

In-process (FastAPI's TestClient, lifespan included), a calibrated lraspp model from a
test-saved .pth, small real photographs; no network, no official weights.
"""

from __future__ import annotations

import base64
import io
import socket
import subprocess
import sys
import threading
import time
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the web extra is not installed: pip install 'seglens[web]'")
pytest.importorskip("multipart", reason="python-multipart is not installed: pip install 'seglens[web]'")

with warnings.catch_warnings():  # newer Starlette prefers httpx2 and warns when it finds httpx
    warnings.filterwarnings("ignore", message=".*httpx2.*")
    from fastapi.testclient import TestClient

import seglens.web.app as web_app
from seglens import Segmenter
from seglens.io import load_image
from seglens.models import model_info
from seglens.visualize import voc_palette
from seglens.web import create_app, serve
from tests.conftest import photo, varied

MODEL = "lraspp_mobilenet_v3_large"


@pytest.fixture(scope="module")
def seg(weights_file) -> Segmenter:
    return Segmenter(MODEL, weights=weights_file(MODEL), device="cpu")


@pytest.fixture(scope="module")
def image_png() -> bytes:
    """The astronaut photograph at 200x150, as PNG bytes."""
    return encode(photo("astronaut").resize((200, 150)))


def local_client(app) -> TestClient:
    """A TestClient that calls the app as http://127.0.0.1 (an allowed Host, like a local server)."""
    return TestClient(app, base_url="http://127.0.0.1")


@pytest.fixture
def client(seg):
    with local_client(create_app({MODEL: seg})) as c:
        yield c


def encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def encode_jpeg(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def post(client, data: bytes, *, filename: str = "photo.png", content_type: str = "image/png", **fields):
    return client.post("/v1/segment", files={"file": (filename, data, content_type)}, data=fields)


def png_claiming(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header says width x height (CRC fixed): a bomb as far as the header goes."""
    raw = bytearray(encode(Image.new("L", (1, 1))))
    raw[16:20] = width.to_bytes(4, "big")  # IHDR data starts at byte 16: width, height, ...
    raw[20:24] = height.to_bytes(4, "big")
    raw[29:33] = zlib.crc32(bytes(raw[12:29])).to_bytes(4, "big")  # CRC over "IHDR" + 13 data bytes
    return bytes(raw)


def assert_error(response, status: int, *words: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers.get("x-content-type-options") == "nosniff"
    body = response.json()
    assert set(body) == {"error", "detail"}
    for word in words:
        assert word in body["error"], body["error"]
    return body


# ---------------------------------------------------------------- status endpoints


def test_healthz_and_readyz(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    # 1 worker + 4 queued; the pixel budget defaults to --max-pixels
    assert ready.json() == {
        "ready": True,
        "models": [MODEL],
        "in_flight": 0,
        "capacity": 5,
        "pixels_in_flight": 0,
        "max_queued_pixels": 50_000_000,
    }


def test_not_ready_before_startup(seg, image_png):
    client = local_client(create_app({MODEL: seg}))  # no `with`: the lifespan (pool, warm-up) never ran
    body = client.get("/readyz")
    assert body.status_code == 503 and body.json()["ready"] is False
    assert "starting up" in body.json()["error"]
    assert client.get("/healthz").status_code == 200
    response = post(client, image_png)
    assert_error(response, 503, "not ready")
    assert response.headers["retry-after"] == "1"


def test_models_lists_served_models_with_published_metadata(seg):
    app = create_app({"fast": seg, MODEL: seg}, max_upload_mb=5, max_pixels=1000, workers=2, queue_size=3)
    with local_client(app) as client:
        body = client.get("/v1/models").json()
    assert body["default"] == "fast"
    assert [m["name"] for m in body["models"]] == ["fast", MODEL]
    entry = body["models"][0]
    info = model_info(MODEL)
    assert entry["architecture"] == MODEL and entry["default"] is True
    assert (entry["miou"], entry["pixel_acc"], entry["gflops"], entry["num_params"]) == (
        info.miou,
        info.pixel_acc,
        info.gflops,
        info.num_params,
    )
    assert entry["served_weights"] == seg.loaded.weights_tag and entry["meaningful"] is True
    assert entry["num_classes"] == 21 and entry["categories"][0] == "background" and entry["categories"][15] == "person"
    assert body["limits"] == {
        "max_upload_bytes": 5 * 2**20,
        "max_pixels": 1000,
        "max_queued_pixels": 50_000_000,
        "workers": 2,
        "queue_size": 3,
        "body_timeout_s": 20.0,
        "min_upload_rate": 500.0,
    }


def test_page_static_files_and_docs(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script src="/static/app.js"' in page.text and "/static/style.css" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "http" not in page.text.replace("http-equiv", "")  # no CDN: nothing is loaded from elsewhere
    for name, kind in (("app.js", "javascript"), ("style.css", "text/css")):
        asset = client.get(f"/static/{name}")
        assert asset.status_code == 200 and kind in asset.headers["content-type"]
        assert "https://" not in asset.text and "http://" not in asset.text
    assert client.get("/static/../app.py").status_code == 404
    assert client.get("/static/%2e%2e/app.py").status_code == 404
    schema = client.get("/openapi.json").json()
    assert {"/v1/segment", "/v1/models", "/healthz", "/readyz"} <= set(schema["paths"])
    assert client.get("/docs").status_code == 200
    assert_error(client.get("/nope"), 404, "no such endpoint")


# ---------------------------------------------------------------- segmenting


def test_segment_json(client, seg, image_png):
    response = post(client, image_png)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {
        "model",
        "architecture",
        "weights",
        "meaningful",
        "width",
        "height",
        "classes",
        "timing",
        "mask_png",
    }
    assert (body["model"], body["width"], body["height"]) == (MODEL, 200, 150)
    assert set(body["timing"]) == {"queue_s", "decode_s", "inference_s", "encode_s", "total_s"}
    assert all(v >= 0 for v in body["timing"].values())
    assert "inference;dur=" in response.headers["server-timing"]

    mask = Image.open(io.BytesIO(base64.b64decode(body["mask_png"])))
    assert mask.format == "PNG" and mask.mode == "P" and mask.size == (200, 150)
    palette = np.array(mask.getpalette(), dtype=np.uint8).reshape(-1, 3)
    np.testing.assert_array_equal(palette, voc_palette(256))
    labels = np.asarray(mask)
    expected = seg(load_image(image_png))
    np.testing.assert_array_equal(labels, expected.labels)  # the same labels as the library gives
    assert varied(labels)

    counts = np.bincount(labels.ravel(), minlength=256)
    assert [c["index"] for c in body["classes"]] == [c.index for c in expected.classes]
    for c in body["classes"]:
        assert c["pixels"] == counts[c["index"]] and c["fraction"] == pytest.approx(counts[c["index"]] / labels.size)
        assert c["color"] == voc_palette(256)[c["index"]].tolist()
        assert c["hex"] == "#{:02x}{:02x}{:02x}".format(*c["color"])
        assert c["name"] == ("background" if c["index"] == 0 else seg.categories[c["index"]])
    assert sum(c["fraction"] for c in body["classes"]) == pytest.approx(1.0)


def test_segment_png_is_the_indexed_mask(client, seg, image_png):
    response = post(client, image_png, format="png")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert response.headers["x-seglens-model"] == MODEL
    mask = Image.open(io.BytesIO(response.content))
    assert mask.mode == "P" and mask.size == (200, 150)
    np.testing.assert_array_equal(np.array(mask.getpalette(), dtype=np.uint8).reshape(-1, 3), voc_palette(256))
    np.testing.assert_array_equal(np.asarray(mask), seg(load_image(image_png)).labels)


def test_segment_overlay_jpeg_uses_alpha(client, seg, image_png):
    expected = seg(load_image(image_png))
    for alpha in (0.0, 0.8):
        response = post(client, image_png, format="overlay", alpha=str(alpha))
        assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
        overlay = Image.open(io.BytesIO(response.content))
        assert overlay.format == "JPEG" and overlay.size == (200, 150)
        # Exactly the library's overlay, saved as the CLI saves it (JPEG quality 90).
        same = Image.open(io.BytesIO(encode_jpeg(expected.overlay(alpha))))
        np.testing.assert_array_equal(np.asarray(overlay), np.asarray(same))


def test_model_choice_and_unknown_model(seg, image_png):
    with local_client(create_app({"a": seg, "b": seg})) as client:
        assert post(client, image_png).json()["model"] == "a"  # the first is the default
        assert post(client, image_png, model="b").json()["model"] == "b"
        body = assert_error(
            post(client, image_png, model="deeplabv3_resnet50"), 404, "unknown model", "'deeplabv3_resnet50'", "a, b"
        )
        assert body["detail"] == {"choices": ["a", "b"]}


def test_uploads_are_decoded_from_memory(client, image_png, monkeypatch):
    seen = []
    real = web_app.run_job

    def spy(name, segmenter, data, **kwargs):
        seen.append(type(data))
        return real(name, segmenter, data, **kwargs)

    monkeypatch.setattr(web_app, "run_job", spy)
    # A hostile file name is just a label: nothing is opened by that name.
    assert post(client, image_png, filename="../../../etc/passwd").status_code == 200
    assert post(client, image_png, filename="/dev/zero").status_code == 200
    assert seen == [bytes, bytes]


# ---------------------------------------------------------------- bad requests


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"alpha": "1.5"}, ("alpha", "less than or equal to 1")),
        ({"alpha": "-0.1"}, ("alpha", "greater than or equal to 0")),
        ({"alpha": "opaque"}, ("alpha", "valid number")),
        ({"format": "gif"}, ("format", "'json', 'png' or 'overlay'")),
    ],
)
def test_bad_alpha_or_format(client, image_png, fields, words):
    body = assert_error(post(client, image_png, **fields), 422, "invalid request", *words)
    assert body["detail"][0]["field"] in fields


def test_missing_file(client):
    assert_error(client.post("/v1/segment", data={"format": "png"}), 422, "file", "multipart/form-data field 'file'")


def test_not_an_image_is_415(client):
    body = assert_error(
        post(client, b"hello, I am text\n", filename="notes.txt", content_type="text/plain"), 415, "not an image"
    )
    assert "supported: JPEG, PNG" in body["detail"]["reason"]


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"", ("empty file",)),
        ("truncated", ("truncated",)),
        ("corrupt", ("could not decode",)),
    ],
)
def test_unreadable_image_is_400(client, image_png, data, words):
    if data == "truncated":
        data = encode(photo("astronaut").resize((200, 150)), "JPEG")[:3000]
    elif data == "corrupt":
        raw = bytearray(image_png)
        raw[60:400] = bytes(340)  # signature, IHDR and the IDAT chunk header intact; its data wrecked
        data = bytes(raw)
    assert_error(post(client, data), 400, "unreadable image", *words)


def test_pixel_limit_is_413(seg, image_png):
    with local_client(create_app({MODEL: seg}, max_pixels=200 * 150 - 1)) as client:
        body = assert_error(
            post(client, image_png),
            413,
            "image too large",
            "200x150 is 30000 pixels",
            "limit of 29999",
            "send a downscaled copy",
        )
        assert "--" not in body["error"]  # the API's words, not the CLI's
    with local_client(create_app({MODEL: seg}, max_pixels=200 * 150)) as client:
        assert post(client, image_png).status_code == 200


def test_decompression_bombs_are_413(client, seg):
    # 10000 x 10000 in a 70-byte file: refused from the header, by the server's pixel limit...
    assert_error(post(client, png_claiming(10_000, 10_000)), 413, "image too large", "10000x10000", "limit of 50000000")
    # ...and by Pillow's own bomb guard when the server has no limit of its own.
    with local_client(create_app({MODEL: seg}, max_pixels=None)) as unlimited:
        assert_error(post(unlimited, png_claiming(20_000, 20_000)), 413, "image too large", "decompression bomb")
        assert unlimited.get("/healthz").status_code == 200


def _multipart(data: bytes, boundary: str = "seglens-test-boundary") -> tuple[bytes, str]:
    head = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="file"; filename="x.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    )
    return head.encode() + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def test_upload_size_limit_is_413(seg, image_png):
    limit = 10 * 1024  # max_upload_mb below is 10 KiB
    with local_client(create_app({MODEL: seg}, max_upload_mb=limit / 2**20)) as client:
        big = bytes(200 * 1024)
        # 1. Content-Length says too much: refused before the body is read.
        body = assert_error(post(client, big), 413, "upload too large", "0.00976562 MiB")
        assert body["detail"]["max_upload_bytes"] == limit
        # 2. No Content-Length (chunked): reading stops once the body passes the limit.
        payload, content_type = _multipart(big)
        chunks = (payload[i : i + 4096] for i in range(0, len(payload), 4096))
        assert_error(
            client.post("/v1/segment", content=chunks, headers={"content-type": content_type}), 413, "upload too large"
        )
        # 3. The file itself is one byte over (the body is within the multipart allowance).
        assert_error(post(client, bytes(limit + 1)), 413, "upload too large")
        # Exactly at the limit is read (and then found not to be an image).
        assert_error(post(client, bytes(limit)), 415)
        assert client.get("/healthz").status_code == 200


def test_internal_error_is_500_and_server_survives(client, image_png, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    real = web_app.run_job
    monkeypatch.setattr(web_app, "run_job", broken)
    assert_error(post(client, image_png), 500, "internal error", "boom", "still running")
    monkeypatch.setattr(web_app, "run_job", real)
    assert post(client, image_png).status_code == 200
    assert client.get("/readyz").json()["in_flight"] == 0


# ---------------------------------------------------------------- back-pressure


def test_full_queue_answers_503_at_once(seg, image_png, monkeypatch):
    """1 worker + 1 queue slot: two requests are held in a blocked worker, the third gets 503."""
    entered = threading.Semaphore(0)
    release = threading.Event()
    real = web_app.run_job

    def blocked(*args, **kwargs):
        entered.release()
        assert release.wait(30), "test did not release the worker"
        return real(*args, **kwargs)

    monkeypatch.setattr(web_app, "run_job", blocked)
    with local_client(create_app({MODEL: seg}, workers=1, queue_size=1)) as client:
        results: list = []
        threads = [threading.Thread(target=lambda: results.append(post(client, image_png))) for _ in range(2)]
        for t in threads:
            t.start()
        assert entered.acquire(timeout=30)  # the first is in the worker; the second waits behind it
        deadline = time.monotonic() + 30
        while client.get("/readyz").json()["in_flight"] < 2:
            assert time.monotonic() < deadline, "the second request never got a slot"
            time.sleep(0.01)

        t0 = time.perf_counter()
        busy = post(client, image_png)
        assert time.perf_counter() - t0 < 1.0  # answered at once, not queued
        body = assert_error(busy, 503, "server busy", "2 of 2 request slots taken", "0.1 MP in progress")
        wait = int(busy.headers["retry-after"])
        assert body["detail"] == {
            "in_flight": 2,
            "capacity": 2,
            "workers": 1,
            "queue_size": 1,
            "pixels_in_flight": 2 * 200 * 150,
            "max_queued_pixels": 50_000_000,
            "retry_after_s": wait,
        }
        assert f"retry in {wait} s" in body["error"]

        release.set()
        for t in threads:
            t.join(60)
        assert [r.status_code for r in results] == [200, 200]
        assert client.get("/readyz").json()["in_flight"] == 0
        assert post(client, image_png).status_code == 200  # slots come back


# ---------------------------------------------------------------- construction


def test_create_app_checks_its_arguments(seg):
    with pytest.raises(ValueError, match="at least one Segmenter"):
        create_app({})
    with pytest.raises(ValueError, match="workers must be >= 1"):
        create_app({MODEL: seg}, workers=0)
    with pytest.raises(ValueError, match="queue_size must be >= 0"):
        create_app({MODEL: seg}, queue_size=-1)
    with pytest.raises(ValueError, match="max_upload_mb must be > 0"):
        create_app({MODEL: seg}, max_upload_mb=0)
    with pytest.raises(TypeError, match="must be a seglens Segmenter"):
        create_app({MODEL: "lraspp_mobilenet_v3_large"})


def test_importing_seglens_web_is_cheap():
    code = "import sys, seglens.web; print(sorted(m for m in ('fastapi', 'torch', 'uvicorn') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_serve_names_the_flag_when_the_port_is_taken(seg):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port} .*choose another --port"):
            serve(create_app({MODEL: seg}), host="127.0.0.1", port=port)
    with pytest.raises(OSError, match="--host no-such-host.invalid: cannot resolve it"):
        serve(create_app({MODEL: seg}), host="no-such-host.invalid", port=0)


def test_missing_web_extra_says_what_to_install():
    code = "import sys; sys.modules['fastapi'] = None; import seglens.web; seglens.web.create_app"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 1
    assert "install the web extra: pip install 'seglens[web]'" in out.stderr


def test_hugging_face_model_is_served_with_its_own_names_and_palette(tmp_path_factory):
    import base64
    import io

    import numpy as np
    from PIL import Image

    pytest.importorskip("transformers")
    from seglens import Segmenter
    from seglens.web import create_app
    from tests.conftest import photo
    from tests.test_hf import NAMES5, _save, _segformer

    seg = Segmenter(f"hf:{_save(tmp_path_factory, 'served', *_segformer())}", device="cpu")
    buf = io.BytesIO()
    photo("chelsea").save(buf, format="PNG")
    with local_client(create_app({"tiny": seg})) as client:
        models = client.get("/v1/models").json()["models"]
        assert models[0]["categories"] == list(NAMES5)
        r = client.post("/v1/segment", files={"file": ("c.png", buf.getvalue(), "image/png")})
    assert r.status_code == 200
    body = r.json()
    expected = seg(photo("chelsea"))
    assert [c["name"] for c in body["classes"]] == [c.name for c in expected.classes]
    assert [c["color"] for c in body["classes"]] == [list(c.color) for c in expected.classes]
    mask = Image.open(io.BytesIO(base64.b64decode(body["mask_png"])))
    np.testing.assert_array_equal(np.asarray(mask), expected.labels)


# ---------------------------------------------------------------- hardening


def bilevel_png(width: int, height: int) -> bytes:
    """A real 1-bit PNG of width x height (a few KB even for 49 megapixels)."""
    return encode(Image.new("1", (width, height)))


def test_every_response_is_nosniff(client, image_png, monkeypatch):
    answers = [
        client.get("/"),
        client.get("/healthz"),
        client.get("/readyz"),
        client.get("/v1/models"),
        client.get("/openapi.json"),
        client.get("/static/app.js"),
        client.get("/nope"),
        client.get("/v1/segment"),  # 404, 405
        post(client, image_png),
        post(client, b"text", content_type="text/plain"),
        post(client, image_png, alpha="2"),
        client.get("/", headers={"host": "evil.example"}),  # 400 from the host guard
    ]
    monkeypatch.setattr(web_app, "run_job", lambda *a, **k: 1 / 0)
    answers.append(post(client, image_png))  # 500, answered outside the middleware stack
    assert [r.status_code for r in answers] == [200, 200, 200, 200, 200, 200, 404, 405, 200, 415, 422, 400, 500]
    assert all(r.headers.get("x-content-type-options") == "nosniff" for r in answers)


@pytest.mark.parametrize(
    ("host", "allowed", "ok"),
    [
        ("127.0.0.1", None, True),
        ("127.0.0.1:8000", None, True),
        ("localhost:8000", None, True),
        ("[::1]:8000", None, True),
        ("LOCALHOST", None, True),
        ("evil.example", None, False),
        ("evil.example:8000", None, False),
        ("127.0.0.1.evil.example", None, False),
        ("", None, False),
        ("seg.example.com", ["seg.example.com"], True),
        ("a.b.lan:80", ["*.lan"], True),
        ("lan", ["*.lan"], False),
        ("anything.at.all", ["*"], True),
    ],
)
def test_host_header_allowlist(seg, image_png, host, allowed, ok):
    kwargs = {} if allowed is None else {"allowed_hosts": allowed}
    with local_client(create_app({MODEL: seg}, **kwargs)) as client:
        r = client.get("/healthz", headers={"host": host})
        if ok:
            assert r.status_code == 200 and r.json() == {"status": "ok"}
        else:
            body = assert_error(r, 400, f"unknown Host {host!r}", "DNS rebinding", "--allowed-hosts")
            assert body["detail"]["host"] == host
            # The upload endpoint is guarded too, before its body is read.
            assert_error(client.post("/v1/segment", headers={"host": host}), 400, "unknown Host")


def test_bound_hosts_cover_the_listening_address():
    assert web_app.bound_hosts("10.1.2.3") == ["10.1.2.3"]
    assert web_app.bound_hosts("::1") == ["::1"]
    every = web_app.bound_hosts("0.0.0.0")
    assert {"127.0.0.1", "localhost", socket.gethostname().lower()} <= set(every)
    with pytest.raises(ValueError, match="without scheme or port"):
        web_app.normalize_hosts(["example.com:8000"])


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 200),  # curl, httpx, requests: no Origin
        ({"origin": "http://127.0.0.1", "sec-fetch-site": "same-origin"}, 200),  # the server's own page
        ({"sec-fetch-site": "none"}, 200),  # typed in the address bar
        ({"origin": "http://evil.example", "sec-fetch-site": "cross-site"}, 403),
        ({"origin": "http://evil.example"}, 403),
        ({"origin": "null"}, 403),  # sandboxed frames, file: pages
        ({"sec-fetch-site": "cross-site"}, 403),
        ({"origin": "http://127.0.0.1:9999", "sec-fetch-site": "same-site"}, 403),  # another port is another origin
    ],
)
def test_cross_site_uploads_are_refused(client, image_png, headers, status):
    r = client.post("/v1/segment", files={"file": ("p.png", image_png, "image/png")}, headers=headers)
    if status == 200:
        assert r.status_code == 200, r.text
    else:
        body = assert_error(r, 403, "refused", "its own page", "--cors-origin")
        assert body["detail"]["origin"] == headers.get("origin")


def test_cors_origin_allows_another_site(seg, image_png):
    with local_client(create_app({MODEL: seg}, cors_origins=["https://app.example"])) as client:
        ok = client.post(
            "/v1/segment",
            files={"file": ("p.png", image_png, "image/png")},
            data={"format": "png"},
            headers={"origin": "https://app.example", "sec-fetch-site": "cross-site"},
        )
        assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "https://app.example"
        assert "server-timing" in ok.headers["access-control-expose-headers"].lower()
        preflight = client.options(
            "/v1/segment",
            headers={
                "origin": "https://app.example",
                "access-control-request-method": "POST",
                "access-control-request-headers": "x-custom",
            },
        )
        assert (
            preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == "https://app.example"
        )
        other = client.post(
            "/v1/segment", files={"file": ("p.png", image_png, "image/png")}, headers={"origin": "https://evil.example"}
        )
        assert_error(other, 403, "https://evil.example")
    with pytest.raises(ValueError, match="scheme://host"):
        create_app({MODEL: seg}, cors_origins=["app.example"])


def test_several_file_parts_are_400(client, image_png):
    files = [("file", ("a.png", image_png, "image/png")), ("file", ("b.png", image_png, "image/png"))]
    body = assert_error(client.post("/v1/segment", files=files), 400, "2 'file' parts", "one image per request")
    assert body["detail"] == {"file_parts": 2}


@pytest.mark.parametrize("field", ["model", "format", "alpha"])
def test_empty_fields_are_422_not_the_default(client, image_png, field):
    body = assert_error(post(client, image_png, **{field: ""}), 422, f"{field}: empty", "leave the field out")
    assert body["detail"] == [{"field": field, "message": "empty"}]
    twice = {"model": [MODEL, MODEL], "format": ["png", "json"], "alpha": ["0.1", "0.2"]}[field]
    repeated = client.post("/v1/segment", files={"file": ("p.png", image_png, "image/png")}, data={field: twice})
    assert_error(repeated, 400, f"2 '{field}' fields", "send it once")


@pytest.mark.parametrize(("width", "height"), [(49_000_000, 1), (10_000_000, 5), (100_000, 490)])
def test_extreme_shapes_are_refused_from_the_header(client, seg, width, height, monkeypatch):
    data = bilevel_png(width, height)
    decoded = []
    monkeypatch.setattr(web_app, "run_job", lambda *a, **k: decoded.append(1))
    body = assert_error(
        post(client, data), 422, "image shape not accepted", f"{width}x{height}", "send a crop or a downscaled copy"
    )
    assert "--tile" not in body["error"] and "\n" not in body["error"]  # the API's own words, one line
    assert (body["detail"]["width"], body["detail"]["height"]) == (width, height)
    assert decoded == []  # refused before any job: nothing was decoded


def test_pixel_budget_admits_by_decoded_pixels(seg, image_png, monkeypatch):
    """Budget 100,000 pixels: a 200x150 image (30,000) in progress leaves room for 70,000."""
    entered, release = threading.Semaphore(0), threading.Event()
    real = web_app.run_job

    def blocked(*args, **kwargs):
        entered.release()
        assert release.wait(30), "test did not release the worker"
        return real(*args, **kwargs)

    monkeypatch.setattr(web_app, "run_job", blocked)
    big = encode(photo("astronaut").resize((400, 300)))  # 120,000 pixels
    small = encode(photo("astronaut").resize((100, 70)))  # 7,000 pixels
    with local_client(create_app({MODEL: seg}, max_queued_pixels=100_000, queue_size=4)) as client:
        first: list = []
        t = threading.Thread(target=lambda: first.append(post(client, image_png)))
        t.start()
        assert entered.acquire(timeout=30)
        busy = post(client, big)  # 30,000 + 120,000 > 100,000
        body = assert_error(busy, 503, "server busy", "1 of 5 request slots taken", "0.0 MP in progress")
        assert body["detail"]["pixels_in_flight"] == 30_000 and body["detail"]["max_queued_pixels"] == 100_000
        queued: list = []
        t2 = threading.Thread(target=lambda: queued.append(post(client, small)))  # 37,000 <= 100,000: admitted, queued
        t2.start()
        deadline = time.monotonic() + 30
        while client.get("/readyz").json()["pixels_in_flight"] != 37_000:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        release.set()
        t.join(60), t2.join(60)
        assert [r.status_code for r in first + queued] == [200, 200]
        assert post(client, big).status_code == 200  # alone, an image over the budget still goes through
        assert client.get("/readyz").json()["pixels_in_flight"] == 0


def test_retry_after_reflects_the_work_ahead():
    from seglens.web._gate import Admission

    adm = Admission(capacity=3, pixel_budget=None, workers=1)
    adm.record(4096, 0.2)  # a tiny image: the fixed cost of a job
    adm.record(1_000_000, 2.2)  # 1 MP: 2 s more, 2 microseconds a pixel
    assert adm.estimate(0) == pytest.approx(0.2) and adm.estimate(49_000_000) == pytest.approx(98.2)
    assert adm.retry_after() == 1  # nothing in progress
    big = adm.try_admit(49_000_000)
    assert adm.retry_after() == 99
    small = adm.try_admit(10_000)
    assert adm.retry_after() == 99  # 98.2 + 0.22 = 98.42 -> 99
    assert adm.try_admit(10_000) is not None and adm.try_admit(10_000) is None  # 3 slots
    big.drop()
    assert adm.retry_after() == 1 and adm.in_flight == 2
    two = Admission(capacity=3, pixel_budget=None, workers=2)
    two.record(4096, 0.2), two.record(1_000_000, 2.2)
    two.try_admit(49_000_000)
    assert two.retry_after() == 50  # two workers share the work ahead
    small.drop()
