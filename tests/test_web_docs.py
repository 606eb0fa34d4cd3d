"""``/docs`` (seglens.web._docs): Swagger UI from this server, no CDN, under a strict CSP.

In-process (FastAPI's TestClient) against a small app of our own; no browser here (the page
renders in headless Chromium in tests/test_web_browser.py), no network.
"""

# No ``from __future__ import annotations``: FastAPI reads make_app's endpoint annotations, and
# tests/test_web_browser.py serves the same app.
import io
import sys
import warnings
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the web extra is not installed: pip install 'seglens[web]'")
pytest.importorskip("python_multipart", reason="python-multipart is not installed: pip install 'seglens[web]'")

with warnings.catch_warnings():  # newer Starlette prefers httpx2 and warns when it finds httpx
    warnings.filterwarnings("ignore", message=".*httpx2.*")
    from fastapi.testclient import TestClient

from fastapi import FastAPI, File, Form, UploadFile
from fastapi.responses import Response

import seglens.web._docs as docs
from seglens.web._docs import DOCS_CSP, install_docs

ROOT = Path(__file__).resolve().parents[1]
SWAGGER_TYPES = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon.png": "image/png",
    "docs.js": "text/javascript",
}


def needs_fastapi_offline():
    pytest.importorskip("fastapi_offline", reason="fastapi-offline is not installed: pip install 'seglens[web]'")


def make_app(**kwargs) -> FastAPI:
    """A small app shaped like seglens' API (a multipart upload with an enum form field, answered
    as JSON or PNG) with install_docs' /docs, as app.py will have it."""
    app = FastAPI(title="seglens <docs> test", version="1.2.3", docs_url=None, redoc_url=None, **kwargs)
    install_docs(app)

    @app.get("/healthz", summary="The process is alive")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post(
        "/v1/thumbnail",
        summary="A thumbnail of an upload",
        response_class=Response,
        responses={200: {"content": {"image/png": {}, "application/json": {}}}},
    )
    async def thumbnail(
        file: Annotated[UploadFile, File(description="an image")],
        fmt: Annotated[Literal["json", "png"], Form(alias="format")] = "json",
    ) -> Response:
        image = Image.open(io.BytesIO(await file.read())).convert("RGB")
        image.thumbnail((48, 48))
        if fmt == "json":
            return Response(f'{{"size": [{image.width}, {image.height}]}}', media_type="application/json")
        out = io.BytesIO()
        image.save(out, "PNG")
        return Response(out.getvalue(), media_type="image/png")

    return app


@pytest.fixture
def client():
    needs_fastapi_offline()
    with TestClient(make_app()) as c:
        yield c


class _Page(HTMLParser):
    """Every tag with its attributes, and the text inside each <script> and <style>."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.inline: dict[str, list[str]] = {"script": [], "style": []}
        self._open: str | None = None

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag in self.inline:
            self._open = tag
            self.inline[tag].append("")

    def handle_endtag(self, tag):
        if tag == self._open:
            self._open = None

    def handle_data(self, data):
        if self._open:
            self.inline[self._open][-1] += data

    def urls(self) -> list[str]:
        return [
            value
            for _, attrs in self.tags
            for name, value in attrs.items()
            if name in ("src", "href") and value is not None
        ]


def parse(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    page.close()
    return page


def test_page_is_ours_with_strict_headers(client):
    r = client.get("/docs")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert r.headers["content-security-policy"] == DOCS_CSP
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["cache-control"] == "no-cache"
    assert "cdn" not in r.text.lower() and "unpkg" not in r.text.lower()
    assert "<title>seglens &lt;docs&gt; test - API docs</title>" in r.text  # the app's title, escaped


def test_csp_is_strict():
    directives = dict(d.strip().split(" ", 1) for d in DOCS_CSP.split(";"))
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'"  # no 'unsafe-inline', no 'unsafe-eval', no hosts
    assert directives["style-src"] == "'self'"
    assert directives["object-src"] == "'none'" and directives["base-uri"] == "'none'"
    assert directives["frame-ancestors"] == "'none'"
    assert "unsafe" not in DOCS_CSP and "http" not in DOCS_CSP and "*" not in DOCS_CSP


def test_page_has_no_inline_code_and_only_same_origin_urls(client):
    page = parse(client.get("/docs").text)
    assert page.inline["style"] == []  # no <style> element
    scripts = [attrs for tag, attrs in page.tags if tag == "script"]
    assert len(scripts) == 2 and all(attrs.get("src") for attrs in scripts)
    assert all(text.strip() == "" for text in page.inline["script"])  # no inline script
    for tag, attrs in page.tags:
        assert "style" not in attrs, f"inline style on <{tag}>"
        assert not [a for a in attrs if a.startswith("on")], f"inline event handler on <{tag}>: {attrs}"
    urls = page.urls()
    assert len(urls) >= 4
    for url in urls:
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc and url.startswith("/"), f"not same-origin: {url}"


def test_every_referenced_asset_is_served(client):
    page = parse(client.get("/docs").text)
    assets = [u for u in page.urls() if u.startswith("/docs/assets/")]
    assert {urlsplit(u).path.rsplit("/", 1)[1] for u in assets} == set(SWAGGER_TYPES)
    swagger_dir = resources.files("fastapi_offline").joinpath("static")
    for url in assets:
        name = urlsplit(url).path.rsplit("/", 1)[1]
        r = client.get(url)
        assert r.status_code == 200, url
        assert r.headers["content-type"].split(";")[0] == SWAGGER_TYPES[name]
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["content-security-policy"] == DOCS_CSP
        assert r.headers["cache-control"] == "public, max-age=31536000, immutable"  # the URL names the content
        expected = (
            ROOT / "src/seglens/web/static/docs.js" if name == "docs.js" else swagger_dir.joinpath(name)
        ).read_bytes()
        assert r.content == expected  # the installed package's own file, served as is
    bundle = client.get(next(u for u in assets if "swagger-ui-bundle.js" in u)).text
    assert "SwaggerUIBundle" in bundle
    init = client.get(next(u for u in assets if "docs.js" in u)).text
    assert "SwaggerUIBundle(" in init and "validatorUrl: null" in init


def test_page_points_swagger_ui_at_the_openapi_document(client):
    page = parse(client.get("/docs").text)
    (root,) = [attrs for tag, attrs in page.tags if attrs.get("id") == "swagger-ui"]
    assert root["data-openapi-url"] == "/openapi.json"
    r = client.get("/openapi.json")
    assert r.status_code == 200 and "/healthz" in r.json()["paths"]
    assert "/docs" not in r.json()["paths"] and not any(p.startswith("/docs/") for p in r.json()["paths"])


def test_asset_revalidation_and_unknown_names(client):
    r = client.get("/docs/assets/swagger-ui.css")  # no ?v=: may change with the package
    assert r.status_code == 200 and r.headers["cache-control"] == "no-cache"
    etag = r.headers["etag"]
    again = client.get("/docs/assets/swagger-ui.css", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert client.get("/docs/assets/swagger-ui.css?v=stale").headers["cache-control"] == "no-cache"
    for name in ("redoc.standalone.js", "core.py", "__init__.py", "index.html", "app.js"):
        r = client.get(f"/docs/assets/{name}")  # only the four names; nothing else is looked up
        assert r.status_code == 404, name
        assert r.headers["x-content-type-options"] == "nosniff"
    assert client.get("/docs/assets/..%2f..%2fapp.py").status_code == 404  # no route: {name} holds no "/"


def test_links_follow_root_path():
    needs_fastapi_offline()
    with TestClient(make_app(), root_path="/seglens") as c:
        r = c.get("/docs")
    page = parse(r.text)
    assert all(u.startswith("/seglens/") for u in page.urls())
    (root,) = [attrs for tag, attrs in page.tags if attrs.get("id") == "swagger-ui"]
    assert root["data-openapi-url"] == "/seglens/openapi.json"


def test_refuses_an_app_with_fastapis_cdn_docs():
    with pytest.raises(ValueError, match="docs_url=None"):
        install_docs(FastAPI())


def test_without_fastapi_offline_docs_says_what_to_install(monkeypatch):
    docs._swagger_assets.cache_clear()
    monkeypatch.setitem(sys.modules, "fastapi_offline", None)  # import fails: ModuleNotFoundError
    try:
        app = make_app()
    finally:
        docs._swagger_assets.cache_clear()
    with TestClient(app) as c:
        r = c.get("/docs")
        assert r.status_code == 503
        assert r.headers["content-type"] == "application/json"
        assert r.headers["x-content-type-options"] == "nosniff" and r.headers["cache-control"] == "no-store"
        body = r.json()
        assert "pip install 'seglens[web]'" in body["error"] and "fastapi-offline" in body["error"]
        assert "/openapi.json" in body["error"]
        assert body["detail"]["missing"] == "fastapi-offline"
        assert c.get("/docs/assets/swagger-ui-bundle.js").status_code == 503
        assert c.get("/docs/assets/docs.js").status_code == 200  # ours, always there
        spec = c.get("/openapi.json")
        assert spec.status_code == 200 and "/healthz" in spec.json()["paths"]


def test_fastapi_offline_is_in_the_web_and_dev_extras():
    tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11+")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for extra in ("web", "dev"):
        assert any(req.replace(" ", "").startswith("fastapi-offline>=") for req in extras[extra]), extra
