"""The HTTP API and the web page of ``seglens serve``, in one FastAPI application.

Routes (OpenAPI docs at ``/docs``, Swagger UI served from the ``fastapi-offline`` package):

- ``POST /v1/segment``: multipart ``file`` plus optional ``model``, ``alpha``, ``format``
  (``json`` by default, ``png`` for the indexed mask, ``overlay`` for a JPEG);
- ``GET /v1/models``: the served models, with what ``seglens models`` shows for each;
- ``GET /healthz`` (the process answers), ``GET /readyz`` (models loaded and warmed up);
- ``GET /``: the web page (static files under ``seglens/web/static``, no build step, no CDN).

Models are built once, before the app (``create_app`` takes ready ``Segmenter`` objects).
Inference runs in a pool of ``workers`` threads. An upload's body is read first, capped at
``max_upload_mb`` and under its own deadline, without holding any model slot; then the image's
header is read, its shape checked against the model and its pixel count against the limits,
and only then is it admitted: at most ``workers + queue_size`` requests and ``max_queued_pixels``
decoded pixels in progress; one more is answered 503 with a ``Retry-After`` estimated from the
work ahead. Uploads are decoded from bytes: no user-supplied path is ever opened. Every error
is JSON: ``{"error": message, "detail": ...}``; every response carries ``nosniff``; only the
allowed ``Host`` names are served, and browser uploads only from the server's own page unless
``cors_origins`` allows other sites.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the endpoint's annotations at
# run time, and they refer to values local to create_app.
import asyncio
import dataclasses
import logging
import socket
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware

from .._version import __version__
from ..inference import Segmenter
from ..models import is_hf_model, model_info
from ..visualize import display_name
from ._docs import DOCS_CSP, install_docs
from ._gate import Admission, Guard, UploadGate, normalize_hosts, upload_too_large
from ._job import ApiError, Encoded, probe_upload, run_job
from ._limits import DEFAULT_SERVE_MAX_PIXELS
from ._protocol import DEFAULT_HEADER_TIMEOUT, protocol_class

__all__ = ["DEFAULT_SERVE_MAX_PIXELS", "LOOPBACK_HOSTS", "create_app", "serve"]

STATIC_DIR = Path(__file__).parent / "static"
_READ_CHUNK = 1 << 20
_WARMUP_SIZE = (64, 64)
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
_FORM_FIELDS = ("model", "format", "alpha")
# The page loads only its own files; images are blob: and data: URLs made in the page. The
# same policy fits the Swagger UI page at /docs.
_PAGE_CSP = DOCS_CSP
_log = logging.getLogger("seglens.web")


class _State:
    """What the running app holds: the worker pool (created at start-up) and readiness."""

    def __init__(self) -> None:
        self.executor: ThreadPoolExecutor | None = None
        self.ready = False
        self.not_ready_reason = "starting up: models are being warmed up"


def _error(status: int, message: str, detail: Any = None, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "detail": detail}, status_code=status, headers=dict(headers or {}))


def _validation_message(errors: list[dict]) -> tuple[str, list[dict]]:
    fields = []
    for e in errors:
        loc = [str(part) for part in e.get("loc", ()) if part not in ("body", "query")]
        fields.append({"field": ".".join(loc) or "body", "message": str(e.get("msg", "invalid"))})
    text = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
    if any(f["field"] == "file" for f in fields):
        text += " (send the image as the multipart/form-data field 'file')"
    return f"invalid request: {text}", fields


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError) -> JSONResponse:
        return _error(e.status, e.message, e.detail, e.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        message = e.detail if isinstance(e.detail, str) else f"HTTP {e.status_code}"
        if e.status_code == 404 and e.detail == "Not Found":
            message = f"no such endpoint: {request.method} {request.url.path} (see /docs)"
        return _error(e.status_code, message, None, e.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, e: RequestValidationError) -> JSONResponse:
        message, fields = _validation_message(list(e.errors()))
        return _error(422, message, fields)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, e: Exception) -> JSONResponse:
        # Starlette answers this one outside the middleware stack: nosniff is set here.
        _log.exception("internal error on %s %s", request.method, request.url.path)
        message = f"internal error ({type(e).__name__}: {e}); the server is still running"
        return _error(500, message, None, {"X-Content-Type-Options": "nosniff"})


async def _read_upload(file: UploadFile, limit: int) -> bytes:
    """The upload's bytes, read in chunks; 413 as soon as there are more than ``limit``."""
    chunks: list[bytes] = []
    total = 0
    while chunk := await file.read(min(_READ_CHUNK, limit + 1 - total)):
        total += len(chunk)
        if total > limit:
            raise ApiError(413, upload_too_large(limit), {"max_upload_bytes": limit})
        chunks.append(chunk)
    return b"".join(chunks)


def _server_timing(timing: Mapping[str, float]) -> str:
    return ", ".join(f"{k.removesuffix('_s')};dur={1000 * v:.1f}" for k, v in timing.items())


def _model_entry(name: str, seg: Segmenter, *, default: bool) -> dict[str, Any]:
    """``seglens models``' fields (torchvision's published metadata) plus what is served."""
    entry = {} if is_hf_model(seg.loaded.name) else dataclasses.asdict(model_info(seg.loaded.name))
    entry.update(
        name=name,
        architecture=seg.loaded.name,
        default=default,
        served_weights=seg.loaded.weights_tag,
        meaningful=seg.loaded.meaningful,
        device=str(seg.device),
        num_classes=len(seg.categories),
        categories=[display_name(c) for c in seg.categories],
    )
    return entry


def _check_form(form, default: str) -> None:
    """What FastAPI lets through: several ``file`` parts (it keeps the last), empty fields
    (it takes the default), repeated fields."""
    files = form.getlist("file")
    if len(files) > 1:
        raise ApiError(
            400, f"{len(files)} 'file' parts in one request: send one image per request", {"file_parts": len(files)}
        )
    defaults = {"model": default, "format": "json", "alpha": "0.5"}
    for key in _FORM_FIELDS:
        values = form.getlist(key)
        if len(values) > 1:
            raise ApiError(400, f"{len(values)} '{key}' fields in one request: send it once", {"field": key})
        if values and isinstance(values[0], str) and not values[0].strip():
            message = f"invalid request: {key}: empty; leave the field out for the default ({defaults[key]})"
            raise ApiError(422, message, [{"field": key, "message": "empty"}])


def _check_args(
    segmenters: Mapping[str, Segmenter],
    max_upload_mb: float,
    workers: int,
    queue_size: int,
    *,
    max_queued_pixels: int | None,
    body_timeout: float,
    min_upload_rate: float,
    cors_origins: Sequence[str],
) -> None:
    if not segmenters:
        raise ValueError("create_app needs at least one Segmenter, e.g. {'lraspp_mobilenet_v3_large': Segmenter(...)}")
    for name, seg in segmenters.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"model names must be non-empty strings, got {name!r}")
        if not isinstance(seg, Segmenter):
            raise TypeError(f"segmenters[{name!r}] must be a seglens Segmenter, got {type(seg).__name__}")
    if not max_upload_mb > 0:
        raise ValueError(f"max_upload_mb must be > 0, got {max_upload_mb!r}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if queue_size < 0:
        raise ValueError(f"queue_size must be >= 0, got {queue_size}")
    if max_queued_pixels is not None and max_queued_pixels < 1:
        raise ValueError(f"max_queued_pixels must be >= 1 or None, got {max_queued_pixels}")
    if not body_timeout > 0:
        raise ValueError(f"body_timeout must be > 0 seconds, got {body_timeout!r}")
    if not min_upload_rate >= 0:
        raise ValueError(f"min_upload_rate must be >= 0 bytes/s, got {min_upload_rate!r}")
    for origin in cors_origins:
        if origin != "*" and (not origin.startswith(("http://", "https://")) or origin.rstrip("/").count("/") > 2):
            raise ValueError(
                f"CORS origin {origin!r}: give scheme://host[:port] with no path, e.g. https://app.example"
            )
    if not (STATIC_DIR / "index.html").is_file():
        raise RuntimeError(
            f"the web page's files are missing from {STATIC_DIR}; reinstall seglens (package data not installed)"
        )


def create_app(
    segmenters: Mapping[str, Segmenter],
    *,
    max_upload_mb: float = 20,
    max_pixels: int | None = DEFAULT_SERVE_MAX_PIXELS,
    max_queued_pixels: int | None = DEFAULT_SERVE_MAX_PIXELS,
    workers: int = 1,
    queue_size: int = 4,
    body_timeout: float = 20.0,
    min_upload_rate: float = 500.0,
    allowed_hosts: Sequence[str] = LOOPBACK_HOSTS,
    cors_origins: Sequence[str] = (),
    warmup: bool = True,
) -> FastAPI:
    """Build the ``seglens serve`` application around already loaded models.

    Args:
        segmenters: models a client may pick, by name; the first is the default.
        max_upload_mb: largest upload in MiB (413 above it; the body stops being read there).
        max_pixels: largest image in pixels, checked from the header before decoding (413).
        max_queued_pixels: most decoded pixels in progress (running and queued) at once; an
            image that does not fit gets 503 + Retry-After unless nothing else is in progress.
            ``None``: requests are only counted.
        workers: inference threads; each runs one image at a time.
        queue_size: requests that may wait for a worker; more at once get 503 + Retry-After.
        body_timeout: seconds an upload's body may take to arrive, plus one second for every
            ``min_upload_rate`` bytes received; a slower body is answered 408, connection closed.
        min_upload_rate: bytes per second that extend ``body_timeout`` (0: a fixed deadline).
        allowed_hosts: ``Host`` header names served (others get 400: DNS rebinding);
            ``"*.example.com"`` patterns and ``"*"`` (any) work. :func:`serve` adds the address
            it binds to.
        cors_origins: other sites (``"https://app.example"``, or ``"*"``) whose pages may call
            the API from a browser; by default browser uploads are accepted only from this
            server's own page (API clients that send no ``Origin`` are not affected).
        warmup: run each model once on a tiny image at start-up; ``/readyz`` waits for it.

    Returns:
        The FastAPI app; run it with :func:`serve` or any ASGI server (one process: the models
        and the pool live in it). The pool starts and stops with the app's lifespan.
    """
    _check_args(
        segmenters,
        max_upload_mb,
        workers,
        queue_size,
        max_queued_pixels=max_queued_pixels,
        body_timeout=body_timeout,
        min_upload_rate=min_upload_rate,
        cors_origins=cors_origins,
    )
    models = dict(segmenters)
    default = next(iter(models))
    max_upload_bytes = int(max_upload_mb * 2**20)
    hosts = normalize_hosts(allowed_hosts)
    origins = [o.rstrip("/") for o in cors_origins]
    state = _State()
    admission = Admission(workers + queue_size, max_queued_pixels, workers)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="seglens-web")
        loop = asyncio.get_running_loop()
        try:
            if warmup:
                blank = Image.new("RGB", _WARMUP_SIZE)
                for seg in models.values():
                    await loop.run_in_executor(state.executor, seg, blank)
                    t0 = time.perf_counter()  # a second, warm run: the fixed cost of one job
                    await loop.run_in_executor(state.executor, seg, blank)
                    admission.record(_WARMUP_SIZE[0] * _WARMUP_SIZE[1], time.perf_counter() - t0)
            state.ready = True
        except Exception as e:  # noqa: BLE001 - reported by /readyz; /healthz still answers
            state.not_ready_reason = f"warm-up of a model failed ({type(e).__name__}: {e})"
            _log.exception("model warm-up failed")
        try:
            yield
        finally:
            state.ready = False
            state.not_ready_reason = "shutting down"
            state.executor.shutdown(wait=True, cancel_futures=True)

    app = FastAPI(
        title="seglens",
        version=__version__,
        summary="Semantic segmentation with pretrained torchvision networks",
        lifespan=lifespan,
        docs_url=None,  # FastAPI's own pages load Swagger UI / ReDoc from a CDN: ours below
        redoc_url=None,
    )
    install_docs(app)
    app.state.seglens_allowed_hosts = hosts  # the live list Guard reads; serve() extends it
    _install_error_handlers(app)
    # Added innermost first: Guard (hosts, nosniff) sees every request, then CORS, then uploads.
    app.add_middleware(
        UploadGate,
        path="/v1/segment",
        max_upload_bytes=max_upload_bytes,
        cors_origins=origins,
        body_timeout=body_timeout,
        min_upload_rate=min_upload_rate,
    )
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST"],
            allow_headers=["*"],
            expose_headers=["Server-Timing", "X-Seglens-Model", "Retry-After"],
        )
    app.add_middleware(Guard, allowed_hosts=hosts)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Content-Security-Policy": _PAGE_CSP})

    @app.get("/healthz", summary="The process is alive")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    def load() -> dict[str, Any]:
        return {
            "in_flight": admission.in_flight,
            "capacity": admission.capacity,
            "pixels_in_flight": admission.pixels_in_flight,
            "max_queued_pixels": max_queued_pixels,
        }

    @app.get(
        "/readyz",
        summary="Models loaded and warmed up",
        responses={503: {"description": "not ready yet, or shutting down"}},
    )
    def readyz() -> JSONResponse:
        info = {"models": list(models), **load()}
        if state.ready and state.executor is not None:
            return JSONResponse({"ready": True, **info})
        return JSONResponse({"ready": False, "error": state.not_ready_reason, **info}, status_code=503)

    @app.get("/v1/models", summary="The models this server was started with")
    def list_served_models() -> dict[str, Any]:
        return {
            "default": default,
            "models": [_model_entry(name, seg, default=name == default) for name, seg in models.items()],
            "limits": {
                "max_upload_bytes": max_upload_bytes,
                "max_pixels": max_pixels,
                "max_queued_pixels": max_queued_pixels,
                "workers": workers,
                "queue_size": queue_size,
                "body_timeout_s": body_timeout,
                "min_upload_rate": min_upload_rate,
            },
        }

    def busy() -> ApiError:
        wait = admission.retry_after()
        info = load()
        message = (
            f"server busy: {info['in_flight']} of {info['capacity']} request slots taken, "
            f"{info['pixels_in_flight'] / 1e6:.1f} MP in progress; retry in {wait} s"
        )
        return ApiError(
            503,
            message,
            {**info, "workers": workers, "queue_size": queue_size, "retry_after_s": wait},
            {"Retry-After": str(wait)},
        )

    @app.post(
        "/v1/segment",
        summary="Segment one image",
        response_class=Response,
        responses={
            200: {
                "description": "JSON (default): size, model, classes present, timing and `mask_png` "
                "(base64 indexed PNG); `format=png`: the indexed mask PNG (VOC palette, pixel value = class index); "
                "`format=overlay`: a JPEG",
                "content": {"application/json": {}, "image/png": {}, "image/jpeg": {}},
            },
            400: {
                "description": "unreadable image (empty, truncated, corrupt); several `file` parts or repeated fields; "
                "unknown Host"
            },
            403: {"description": "a browser upload from another site's page (see --cors-origin)"},
            404: {"description": "unknown model; the answer lists the choices"},
            408: {"description": "the body arrived too slowly (the connection is closed)"},
            413: {
                "description": "upload over --max-upload-mb, or image over --max-pixels (decompression bombs included)"
            },
            415: {"description": "not an image, or a format that is not accepted"},
            422: {
                "description": "bad or empty alpha, format or model, no file, or an image shape the model cannot take"
            },
            503: {
                "description": "all request slots or the pixel budget in use (Retry-After: the expected wait), "
                "or not ready"
            },
        },
    )
    async def segment(
        request: Request,
        file: Annotated[UploadFile, File(description="the image: JPEG, PNG, WebP, BMP, GIF or TIFF")],
        model: Annotated[
            str | None, Form(description=f"one of the served models (default: {default})", examples=[default])
        ] = None,
        alpha: Annotated[float, Form(ge=0.0, le=1.0, description="overlay opacity of the mask, 0..1")] = 0.5,
        fmt: Annotated[
            Literal["json", "png", "overlay"],
            Form(alias="format", description="json, png (indexed mask) or overlay (JPEG)"),
        ] = "json",
    ) -> Response:
        _check_form(await request.form(), default)
        name = model or default
        if name not in models:
            choices = list(models)
            raise ApiError(
                404, f"unknown model {name!r}; this server serves: {', '.join(choices)}", {"choices": choices}
            )
        if state.executor is None or not state.ready:
            raise ApiError(503, f"server not ready ({state.not_ready_reason})", None, {"Retry-After": "1"})
        data = await _read_upload(file, max_upload_bytes)
        seg = models[name]
        width, height = await run_in_threadpool(probe_upload, seg, data, max_pixels=max_pixels)
        ticket = admission.try_admit(width * height)
        if ticket is None:
            raise busy()
        try:
            submitted = time.perf_counter()
            try:
                future = state.executor.submit(
                    run_job, name, seg, data, max_pixels=max_pixels, fmt=fmt, alpha=alpha, submitted=submitted
                )
            except RuntimeError:  # the pool is shut down
                raise ApiError(
                    503, "server shutting down; retry on another instance", None, {"Retry-After": "1"}
                ) from None
            del data
            ticket.hold_until_done(future)
            try:
                encoded: Encoded = await asyncio.wrap_future(future)
            except ApiError:
                raise
            except Exception as e:  # a failed job fails its request, not the server
                _log.exception("segmenting an upload with %s failed", name)
                raise ApiError(
                    500, f"internal error while segmenting ({type(e).__name__}: {e}); the server is still running"
                ) from e
        finally:
            ticket.drop()
        admission.record(
            width * height, sum(v for k, v in encoded.timing.items() if k in ("decode_s", "inference_s", "encode_s"))
        )
        headers = {"Server-Timing": _server_timing(encoded.timing), "X-Seglens-Model": name}
        if fmt != "json":
            filename = "mask.png" if fmt == "png" else "overlay.jpg"
            headers["Content-Disposition"] = f'inline; filename="{filename}"'
        return Response(encoded.content, media_type=encoded.media_type, headers=headers)

    return app


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port``, or an OSError that says which flag to change."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as e:
        raise OSError(
            f"--host {host}: cannot resolve it ({e.strerror}); use an IP address such as 127.0.0.1 or 0.0.0.0"
        ) from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restart at once after a stop
        sock.bind(address)
    except OSError as e:
        sock.close()
        raise OSError(
            f"cannot listen on {host}:{port} ({e.strerror or e}); choose another --port, or stop the program using it"
        ) from None
    return sock


def bound_hosts(host: str) -> list[str]:
    """The ``Host`` names a server bound to ``host`` is reached by: the address itself, and for
    a wildcard address (``0.0.0.0``, ``::``) this machine's interface addresses and names."""
    if host not in ("", "0.0.0.0", "::"):
        return normalize_hosts([host])
    import psutil

    names = [*LOOPBACK_HOSTS, socket.gethostname(), socket.getfqdn()]
    for addresses in psutil.net_if_addrs().values():
        names += [a.address.split("%")[0] for a in addresses if a.family in (socket.AF_INET, socket.AF_INET6)]
    return normalize_hosts([n for n in names if n])


def serve(
    app: FastAPI,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
    header_timeout: float | None = DEFAULT_HEADER_TIMEOUT,
) -> None:
    """Run ``app`` with uvicorn in this process until interrupted (Ctrl-C stops it cleanly).

    One process on purpose: the models and the worker pool live in it. The names ``host``
    is reached by are added to the app's allowed hosts. A connection whose request headers take
    longer than ``header_timeout`` seconds is answered 408 and closed (``None``: no deadline).

    Raises:
        OSError: the address cannot be used (port taken, unknown host); the message names the
            flag to change. Raised before anything is served.
    """
    import uvicorn

    http = protocol_class(header_timeout)
    sock = _listen(host, port)
    allowed = getattr(app.state, "seglens_allowed_hosts", None)
    if allowed is not None and "*" not in allowed:
        allowed.extend(h for h in bound_hosts(host) if h not in allowed)
    try:
        config = uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=30, http=http)
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
