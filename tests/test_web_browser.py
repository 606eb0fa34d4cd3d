"""The web page in a real browser: headless Chromium (Debian's /usr/bin/chromium) driven by
Playwright, against a live uvicorn server on 127.0.0.1.

Skipped with a reason when Chromium or Playwright is missing, except under CI (env ``CI``
set), where a missing browser is a failure. Screenshots go to ``$SEGLENS_TEST_ARTIFACTS``
(default: the test's tmp_path): ``serve.png`` (the page after segmenting the astronaut; the
README's docs/serve.png), ``serve_error.png`` and ``docs.png`` (Swagger UI on /docs).
"""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import live_server, photo

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
MODEL = "lraspp_mobilenet_v3_large"
TIMEOUT_MS = 60_000


def _require_browser(*extra: tuple[str, str]) -> None:
    """Skip when the browser stack is missing; under CI, fail instead (a skip would hide it).

    ``extra``: more (module, pip package) pairs the test needs.
    """
    missing = []
    if not os.path.exists(CHROMIUM):
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    for module, package in (
        ("playwright.sync_api", "playwright"),
        ("uvicorn", "uvicorn"),
        ("fastapi", "fastapi"),
        ("httpx", "httpx"),
        *extra,
    ):
        try:
            __import__(module)
        except ImportError:
            missing.append(f"{package} (pip install {package})")
    if not missing:
        return
    reason = "browser test needs " + ", ".join(missing) + "; never run `playwright install`, Debian's chromium is used"
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: a skipped browser test is a failure)")
    pytest.skip(reason)


@pytest.fixture
def artifacts(tmp_path) -> Path:
    folder = Path(os.environ.get("SEGLENS_TEST_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def canvas_pixels(page, selector: str) -> np.ndarray:
    """The RGBA pixels of a canvas, read in the page."""
    data = page.eval_on_selector(
        selector,
        "c => Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)",
    )
    width, height = page.eval_on_selector(selector, "c => [c.width, c.height]")
    return np.array(data, dtype=np.uint8).reshape(height, width, 4)


def set_opacity(page, percent: int) -> None:
    page.eval_on_selector(
        "#alpha", "(el, v) => { el.value = String(v); el.dispatchEvent(new Event('input')); }", percent
    )
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")


def test_page_segments_a_photo_and_shows_errors(weights_file, tmp_path, artifacts, monkeypatch):
    _require_browser()
    import httpx
    from playwright.sync_api import sync_playwright

    import seglens.web.app as web_app
    from seglens import Segmenter
    from seglens.web import create_app

    # Hold the first request in the worker until the page shows it is busy.
    gate = threading.Event()
    real = web_app.run_job

    def held(*args, **kwargs):
        assert gate.wait(TIMEOUT_MS / 1000), "the test never released the worker"
        return real(*args, **kwargs)

    monkeypatch.setattr(web_app, "run_job", held)
    seg = Segmenter(MODEL, weights=weights_file(MODEL), device="cpu")
    image_path = tmp_path / "astronaut.png"
    photo("astronaut").save(image_path)  # 512 x 512
    text_path = tmp_path / "notes.txt"
    text_path.write_text("not a picture\n")

    with live_server(create_app({MODEL: seg})) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
            page.set_default_timeout(TIMEOUT_MS)
            problems: list[str] = []
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("console", lambda m: m.type == "error" and problems.append(f"console: {m.text}"))
            page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))

            page.goto(url)
            page.wait_for_selector("body[data-state=idle]")
            assert page.eval_on_selector("#model", "s => s.value") == MODEL

            # Upload; the busy indicator shows while the server works.
            page.set_input_files("#file", str(image_path))
            page.wait_for_selector("#busy", state="visible")
            assert "Segmenting astronaut.png" in page.inner_text("#busy")
            gate.set()
            page.wait_for_selector("body[data-state=done]")
            assert page.is_hidden("#busy") and page.is_hidden("#error")

            # Original, overlay and mask side by side, at the image's size.
            assert page.eval_on_selector("#original", "c => [c.width, c.height]") == [512, 512]
            assert page.eval_on_selector("#overlay", "c => [c.width, c.height]") == [512, 512]
            page.wait_for_function(
                "() => document.getElementById('mask').complete && document.getElementById('mask').naturalWidth === 512"
            )

            # The legend lists what the API says is in the same image, in the same order.
            with httpx.Client(base_url=url, timeout=60) as client:
                api = client.post(
                    "/v1/segment", files={"file": ("astronaut.png", image_path.read_bytes(), "image/png")}
                ).json()
            names = page.eval_on_selector_all("#legend li .name", "els => els.map(e => e.textContent)")
            assert names == [c["name"] for c in api["classes"]] and len(names) >= 2
            shares = page.eval_on_selector_all("#legend li .pct", "els => els.map(e => e.textContent)")
            assert shares[0] == f"{100 * api['classes'][0]['fraction']:.1f}%"
            colors = page.eval_on_selector_all(
                "#legend li .swatch", "els => els.map(e => getComputedStyle(e).backgroundColor)"
            )
            assert colors[0] == "rgb({}, {}, {})".format(*api["classes"][0]["color"])

            # The opacity slider re-blends in the page: 0 shows the photo, 100 the class colours.
            original = canvas_pixels(page, "#original")
            set_opacity(page, 0)
            np.testing.assert_array_equal(canvas_pixels(page, "#overlay"), original)
            set_opacity(page, 100)
            full = canvas_pixels(page, "#overlay")[..., :3]
            mask = np.asarray(Image.open(io.BytesIO(_b64(api["mask_png"]))).convert("RGB"))
            tinted = mask.any(axis=2)  # everything but the background (black)
            assert tinted.any()
            np.testing.assert_array_equal(full[tinted], mask[tinted])
            np.testing.assert_array_equal(full[~tinted], original[..., :3][~tinted])
            set_opacity(page, 50)
            assert page.inner_text("#alpha-value") == "50%"

            # Downloads: the indexed mask PNG and the overlay.
            with page.expect_download() as download:
                page.click("#download-mask")
            assert download.value.suggested_filename == "astronaut_mask.png"
            saved = Image.open(download.value.path())
            assert saved.mode == "P" and saved.size == (512, 512)
            np.testing.assert_array_equal(np.asarray(saved), np.asarray(Image.open(io.BytesIO(_b64(api["mask_png"])))))
            with page.expect_download() as download:
                page.click("#download-overlay")
            assert download.value.suggested_filename == "astronaut_overlay.jpg"
            assert Image.open(download.value.path()).size == (512, 512)

            page.screenshot(path=str(artifacts / "serve.png"))

            # A format the browser cannot show (TIFF): the page draws the server's decoding.
            tiff_path = tmp_path / "chelsea.tif"
            cat = photo("chelsea")  # 451 x 300
            cat.save(tiff_path)
            page.set_input_files("#file", str(tiff_path))
            page.wait_for_selector("body[data-state=done]")
            assert page.eval_on_selector("#original", "c => [c.width, c.height]") == [451, 300]
            shown = canvas_pixels(page, "#original")[..., :3].astype(np.int16)
            assert np.abs(shown - np.asarray(cat, dtype=np.int16)).mean() < 4  # JPEG of the same pixels
            assert page.eval_on_selector_all("#legend li", "els => els.length") >= 1

            # A text file, dropped on the page: a red message, not a blank screen.
            transfer = page.evaluate_handle(
                "() => { const dt = new DataTransfer(); "
                "dt.items.add(new File(['not a picture'], 'notes.txt', {type: 'text/plain'})); return dt; }"
            )
            page.dispatch_event("#drop", "drop", {"dataTransfer": transfer})
            page.wait_for_selector("body[data-state=error]")
            error = page.inner_text("#error")
            assert page.is_visible("#error") and "notes.txt" in error and "not an image" in error
            assert page.eval_on_selector("#error", "e => getComputedStyle(e).color") == "rgb(166, 27, 27)"
            # Picking it with the file chooser says the same.
            page.set_input_files("#file", str(text_path))
            page.wait_for_selector("body[data-state=error]")
            assert "not an image" in page.inner_text("#error")
            page.screenshot(path=str(artifacts / "serve_error.png"))
            assert problems == [] or all("status of 415" in m for m in problems), problems
        finally:
            browser.close()


def _b64(text: str) -> bytes:
    import base64

    return base64.b64decode(text)


# Records CSP violations in the page, from before its first script runs.
_CSP_LISTENER = """
window.__cspViolations = [];
document.addEventListener('securitypolicyviolation', e => window.__cspViolations.push(
  `${e.effectiveDirective} blocked ${e.blockedURI || '(inline)'} \
at ${e.sourceFile}:${e.lineNumber} ${e.sample}`), true);
"""


def test_docs_page_renders_offline_under_its_csp(tmp_path, artifacts):
    """/docs: Swagger UI from this server renders the API and runs "Try it out" (an image
    answer, shown as a blob: image) with no console error, no CSP violation, and no request
    leaving 127.0.0.1."""
    _require_browser(("fastapi_offline", "fastapi-offline"), ("python_multipart", "python-multipart"))
    from playwright.sync_api import sync_playwright

    from tests.test_web_docs import make_app  # seglens-shaped routes plus install_docs

    image_path = tmp_path / "chelsea.png"
    photo("chelsea").save(image_path)  # 451 x 300

    with live_server(make_app()) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(TIMEOUT_MS)
            page.add_init_script(_CSP_LISTENER)
            problems: list[str] = []
            offsite: list[str] = []
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on(
                "console", lambda m: m.type in ("error", "warning") and problems.append(f"console {m.type}: {m.text}")
            )
            page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
            page.on("request", lambda r: r.url.startswith((url + "/", f"blob:{url}/")) or offsite.append(r.url))

            response = page.goto(url + "/docs")
            assert response.status == 200 and "script-src 'self'" in response.headers["content-security-policy"]

            # Swagger UI rendered the API from /openapi.json: title, version, each operation.
            page.wait_for_selector(".swagger-ui .info h1.title")
            assert page.inner_text(".info h1.title").startswith("seglens <docs> test")
            assert "1.2.3" in page.inner_text(".info .version")
            for path in ("/healthz", "/v1/thumbnail"):
                assert page.is_visible(f'.opblock-summary-path[data-path="{path}"]'), path
            # swagger-ui.css applies (a coloured method badge, not the browser's defaults).
            badge = page.eval_on_selector(
                ".opblock-get .opblock-summary-method", "e => getComputedStyle(e).backgroundColor"
            )
            assert badge not in ("rgba(0, 0, 0, 0)", "transparent"), badge

            # "Try it out": upload, ask for a PNG; Swagger UI shows it as an <img> of a blob: URL.
            operation = "#operations-default-thumbnail_v1_thumbnail_post"
            page.click(f"{operation} .opblock-summary-control")
            page.click(f"{operation} button.try-out__btn")
            page.set_input_files(f"{operation} input[type=file]", str(image_path))
            page.select_option(f'{operation} tr[data-property-name="format"] select', "png")
            page.click(f"{operation} button.execute")
            page.wait_for_selector(f"{operation} .live-responses-table tr.response .response-col_status")
            assert (
                page.inner_text(f"{operation} .live-responses-table tr.response .response-col_status")
                .strip()
                .startswith("200")
            )
            image = f"{operation} .live-responses-table img"
            page.wait_for_function(
                "sel => { const i = document.querySelector(sel); return i && i.complete; }", arg=image
            )
            src, size = page.eval_on_selector(image, "i => [i.src, [i.naturalWidth, i.naturalHeight]]")
            page.screenshot(path=str(artifacts / "docs.png"))
            violations = page.evaluate("() => window.__cspViolations")
        finally:
            browser.close()
    assert violations == [], violations  # first: a blocked image shows up here, not as a size
    assert src.startswith(f"blob:{url}/") and size == [48, 32], (src, size)
    assert problems == [], problems
    assert offsite == [], offsite
