"""``/docs``: Swagger UI served by this server, not from a CDN, under a strict CSP.

FastAPI's default ``/docs`` page loads Swagger UI from jsDelivr and starts it with an inline
script: blank without internet, and at odds with a page CSP. :func:`install_docs` replaces it
on an app created with ``FastAPI(docs_url=None, redoc_url=None)``:

- ``GET /docs``: a small HTML page of ours, with no inline script and no inline style. It
  loads Swagger UI's CSS and JS, and ``static/docs.js`` (which calls ``SwaggerUIBundle``),
  all from ``/docs/assets/``; the OpenAPI URL reaches docs.js as a ``data-`` attribute.
- ``GET /docs/assets/{name}``: ``swagger-ui-bundle.js``, ``swagger-ui.css`` and
  ``favicon.png`` from the installed ``fastapi-offline`` package (MIT; it ships Swagger UI's
  release files in ``fastapi_offline/static/``; we use them in place, we do not copy them),
  and our ``docs.js``. Only these names are served; nothing else is looked up on disk.

Every response carries ``Content-Security-Policy`` (:data:`DOCS_CSP`) and
``X-Content-Type-Options: nosniff``. Cache headers: the page is ``no-cache`` (it names the
current assets); the page links the assets as ``?v=<content hash>``, and those URLs are
``public, max-age=31536000, immutable``; an asset asked for without the current hash is
``no-cache`` with an ``ETag`` (304 when unchanged).

Without fastapi-offline, ``/docs`` (and the Swagger UI assets) answer **503** with the app's
JSON error shape, ``{"error": ..., "detail": ...}``, saying to ``pip install 'seglens[web]'``:
the route exists but the server lacks an optional part, which its operator can install (a 404
would wrongly say there is no such page). ``/openapi.json`` is FastAPI's own and keeps working.
"""

# No ``from __future__ import annotations``: FastAPI reads the endpoints' annotations.
import hashlib
import html
import logging
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

__all__ = ["DOCS_CSP", "INSTALL_HINT", "install_docs"]

_log = logging.getLogger("seglens.web")

# The main page's policy (app._PAGE_CSP) as it stands, checked against Swagger UI 5.32 in
# headless Chromium (tests/test_web_browser.py): it needs nothing more.
# - script-src 'self': the bundle and docs.js; the bundle needs no eval (its
#   Function("return this") fallbacks are never reached in a browser with globalThis);
# - style-src 'self': swagger-ui.css; Swagger UI adds no <style> element and sets inline
#   styles only through the CSSOM (React's style props), which CSP does not govern;
# - img-src 'self' data: blob:: swagger-ui.css draws its icons as data: URLs, and "Try it
#   out" shows an image response (e.g. format=png) as an <img> of a blob: URL;
# - connect-src 'self': fetching /openapi.json and sending "Try it out" requests;
# - object-src 'none', base-uri 'none', frame-ancestors 'none': nothing to embed, no <base>,
#   never framed (clickjacking).
DOCS_CSP = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
INSTALL_HINT = "pip install 'seglens[web]' (or: pip install fastapi-offline)"

_JS = "text/javascript; charset=utf-8"
_SWAGGER_FILES = {
    "swagger-ui-bundle.js": _JS,
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon.png": "image/png",
}
_OUR_FILES = {"docs.js": _JS}
_IMMUTABLE = "public, max-age=31536000, immutable"
_SECURITY_HEADERS = {"Content-Security-Policy": DOCS_CSP, "X-Content-Type-Options": "nosniff"}

_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>{title} - API docs</title>
  <link rel="icon" type="image/png" href="{favicon}">
  <link rel="stylesheet" href="{css}">
  <script src="{bundle}" defer></script>
  <script src="{init}" defer></script>
</head>
<body>
  <noscript>This page needs JavaScript. The OpenAPI document is at <a href="{openapi}">{openapi}</a>.</noscript>
  <div id="swagger-ui" data-openapi-url="{openapi}"></div>
</body>
</html>
"""


@dataclass(frozen=True)
class _Asset:
    body: bytes
    media_type: str
    version: str  # the first 16 hex digits of the body's SHA-256: the ?v= of the page's links

    @property
    def etag(self) -> str:
        return f'"{self.version}"'


def _load(package: str, folder: str, names: dict[str, str]) -> dict[str, _Asset]:
    base = resources.files(package).joinpath(folder)
    assets = {}
    for name, media_type in names.items():
        body = base.joinpath(name).read_bytes()
        assets[name] = _Asset(body, media_type, hashlib.sha256(body).hexdigest()[:16])
    return assets


@lru_cache(maxsize=1)
def _swagger_assets() -> dict[str, _Asset] | None:
    """Swagger UI's files from the installed fastapi-offline, or None when it is not usable."""
    try:
        return _load("fastapi_offline", "static", _SWAGGER_FILES)
    except (ImportError, OSError) as e:  # not installed, or installed without its static files
        _log.warning(
            "API docs page disabled: Swagger UI's files (fastapi-offline) are missing (%s); %s", e, INSTALL_HINT
        )
        return None


@lru_cache(maxsize=1)
def _our_assets() -> dict[str, _Asset]:
    return _load("seglens.web", "static", _OUR_FILES)


def _unavailable(openapi: str) -> JSONResponse:
    return JSONResponse(
        {
            "error": f"the API docs page needs Swagger UI's files from the fastapi-offline package, which is not "
            f"installed: {INSTALL_HINT}; the OpenAPI document is still at {openapi}",
            "detail": {"missing": "fastapi-offline", "install": INSTALL_HINT, "openapi_url": openapi},
        },
        status_code=503,
        headers={**_SECURITY_HEADERS, "Cache-Control": "no-store"},
    )


def _not_found(request: Request) -> JSONResponse:
    return JSONResponse(
        {"error": f"no such docs asset: {request.url.path}", "detail": None},
        status_code=404,
        headers={**_SECURITY_HEADERS, "Cache-Control": "no-store"},
    )


def install_docs(app: FastAPI, *, openapi_url: str = "/openapi.json") -> None:
    """Add ``GET /docs`` (Swagger UI from this server) and ``GET /docs/assets/{name}`` to ``app``.

    Args:
        app: created with ``FastAPI(docs_url=None, redoc_url=None)`` (else FastAPI's own
            CDN-based ``/docs`` is there already and would answer first).
        openapi_url: where the app serves its OpenAPI document (FastAPI's ``openapi_url``);
            links are prefixed with the request's ``root_path``, as FastAPI's own page does.

    Raises:
        ValueError: ``app`` already has a docs or ReDoc page.
    """
    if app.docs_url is not None or app.redoc_url is not None:
        raise ValueError(
            f"install_docs needs FastAPI(docs_url=None, redoc_url=None); this app has docs_url={app.docs_url!r}, "
            f"redoc_url={app.redoc_url!r}, whose pages load Swagger UI / ReDoc from a CDN"
        )
    swagger = _swagger_assets()
    ours = _our_assets()

    def docs_page(request: Request) -> Response:
        root = request.scope.get("root_path", "").rstrip("/")
        openapi = root + openapi_url
        if swagger is None:
            return _unavailable(openapi)
        assets = {**swagger, **ours}

        def link(name: str) -> str:
            return html.escape(f"{root}/docs/assets/{name}?v={assets[name].version}")

        page = _PAGE.format(
            title=html.escape(request.app.title),
            favicon=link("favicon.png"),
            css=link("swagger-ui.css"),
            bundle=link("swagger-ui-bundle.js"),
            init=link("docs.js"),
            openapi=html.escape(openapi),
        )
        return HTMLResponse(page, headers={**_SECURITY_HEADERS, "Cache-Control": "no-cache"})

    def docs_asset(name: str, request: Request) -> Response:
        if name in ours:
            asset = ours[name]
        elif name in _SWAGGER_FILES:
            if swagger is None:
                return _unavailable(request.scope.get("root_path", "").rstrip("/") + openapi_url)
            asset = swagger[name]
        else:
            return _not_found(request)
        current = request.query_params.get("v") == asset.version
        headers = {**_SECURITY_HEADERS, "ETag": asset.etag, "Cache-Control": _IMMUTABLE if current else "no-cache"}
        if asset.etag in (tag.strip() for tag in request.headers.get("if-none-match", "").split(",")):
            return Response(status_code=304, headers=headers)
        return Response(asset.body, media_type=asset.media_type, headers=headers)

    app.add_api_route("/docs", docs_page, methods=["GET"], include_in_schema=False)
    app.add_api_route("/docs/assets/{name}", docs_asset, methods=["GET"], include_in_schema=False)
