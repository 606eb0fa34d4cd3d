"""What guards the server before a model is involved: hosts, origins, slow bodies, admission.

Two pure ASGI middlewares and the admission counter the upload endpoint uses:

- :class:`Guard` (every request): answers only to the allowed ``Host`` names (DNS rebinding),
  and adds ``X-Content-Type-Options: nosniff`` to every response.
- :class:`UploadGate` (``POST /v1/segment`` only): refuses cross-site browser uploads unless
  their origin is allowed; refuses a declared ``Content-Length`` over the limit at once; then
  reads the whole body, capped, into a spooled temporary file, under a deadline that grows
  with the bytes received (Apache mod_reqtimeout's rule: ``body_timeout`` seconds, plus one
  second per ``min_rate`` bytes). A stalled or trickling body is answered 408 and its
  connection closed; it never holds a model slot. Only then does the endpoint see the request.
- :class:`Admission`: the endpoint admits a request after reading the image's header, by count
  (``workers + queue_size`` requests in progress) and by decoded pixels in progress (running
  and queued); a refused one gets 503 with a ``Retry-After`` estimated from the work ahead.
  A slot is released when the request's worker job is done, so a client that disconnects
  cannot let jobs pile up behind the pool.
"""

from __future__ import annotations

import asyncio
import json
import math
import tempfile
import threading
from collections.abc import Sequence
from concurrent.futures import Future

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "MULTIPART_SLACK",
    "Admission",
    "Guard",
    "Ticket",
    "UploadGate",
    "host_allowed",
    "normalize_hosts",
    "upload_too_large",
]

MULTIPART_SLACK = 64 * 1024  # room for the multipart boundaries, part headers and small fields
_SPOOL_IN_MEMORY = 1 << 20  # bytes of a body kept in memory; the rest goes to a temporary file
_REPLAY_CHUNK = 64 * 1024
_SMALL_JOB_PIXELS = 600_000  # up to about this size the network's fixed cost dominates a job
_MAX_RETRY_AFTER_S = 600
_NOSNIFF = (b"x-content-type-options", b"nosniff")


class Ticket:
    """One admitted request's share of the server; released when every holder has let go."""

    def __init__(self, admission: Admission, pixels: int, estimate_s: float) -> None:
        self._lock = threading.Lock()
        self._holders = 1  # the request itself
        self._admission = admission
        self.pixels = pixels
        self.estimate_s = estimate_s

    def hold_until_done(self, future: Future) -> None:
        """Keep the slot until ``future`` (the request's worker job) has finished."""
        with self._lock:
            self._holders += 1
        future.add_done_callback(lambda _: self.drop())

    def drop(self) -> None:
        with self._lock:
            self._holders -= 1
            done = self._holders == 0
        if done:
            self._admission._release(self)


class Admission:
    """Requests in progress, counted and weighed by decoded pixels; shared with ``/readyz``.

    Args:
        capacity: most requests in progress (running + queued): ``workers + queue_size``.
        pixel_budget: most decoded pixels in progress at once (``None``: no pixel limit). An
            image is admitted when it fits in what is left, or when nothing else is in progress.
        workers: inference threads (to turn the work ahead into a wait).
    """

    def __init__(self, capacity: int, pixel_budget: int | None, workers: int) -> None:
        self.capacity = capacity
        self.pixel_budget = pixel_budget
        self.workers = workers
        self._lock = threading.Lock()
        self._tickets: set[Ticket] = set()
        # Job time ~ fixed + per_pixel x pixels, learnt from finished jobs (warm-up included).
        self._fixed_s = 0.5
        self._per_pixel_s = 0.0
        self._seen_small = False

    @property
    def in_flight(self) -> int:
        """Requests admitted and not yet finished (with their worker jobs)."""
        return len(self._tickets)

    @property
    def pixels_in_flight(self) -> int:
        with self._lock:
            return sum(t.pixels for t in self._tickets)

    def estimate(self, pixels: int) -> float:
        """Seconds one worker is expected to spend on an image of ``pixels`` pixels."""
        return self._fixed_s + self._per_pixel_s * pixels

    def record(self, pixels: int, seconds: float) -> None:
        """Learn from a finished job (decode + inference + encode) how long images take."""
        with self._lock:
            if pixels <= _SMALL_JOB_PIXELS:
                self._fixed_s = 0.7 * self._fixed_s + 0.3 * seconds if self._seen_small else seconds
                self._seen_small = True
            else:
                rate = max(0.0, seconds - self._fixed_s) / pixels
                self._per_pixel_s = 0.7 * self._per_pixel_s + 0.3 * rate if self._per_pixel_s else rate

    def try_admit(self, pixels: int) -> Ticket | None:
        """A ticket if the request fits (count and pixels), else None; never waits."""
        with self._lock:
            if len(self._tickets) >= self.capacity:
                return None
            held = sum(t.pixels for t in self._tickets)
            if self._tickets and self.pixel_budget is not None and held + pixels > self.pixel_budget:
                return None
            ticket = Ticket(self, pixels, self.estimate(pixels))
            self._tickets.add(ticket)
            return ticket

    def retry_after(self) -> int:
        """Whole seconds until the work in progress is expected to be done (at least 1)."""
        with self._lock:
            ahead = sum(t.estimate_s for t in self._tickets)
        return max(1, min(_MAX_RETRY_AFTER_S, math.ceil(ahead / self.workers)))

    def _release(self, ticket: Ticket) -> None:
        with self._lock:
            self._tickets.discard(ticket)


# ---------------------------------------------------------------- hosts


def normalize_hosts(hosts: Sequence[str]) -> list[str]:
    """Host names as the allowlist compares them: lower case, no port, no IPv6 brackets."""
    out = []
    for h in hosts:
        h = h.strip().lower()
        if not h:
            raise ValueError("allowed host names must not be empty")
        if "/" in h or (":" in h and not h.startswith("[") and h.count(":") == 1):
            raise ValueError(
                f"allowed host {h!r}: give a host name or address without scheme or port, e.g. example.com or 10.0.0.5"
            )
        out.append(h.strip("[]"))
    return list(dict.fromkeys(out))


def _host_name(value: str) -> str:
    """``Host`` header value -> the name alone (port and IPv6 brackets removed), lower case."""
    value = value.strip().lower()
    if value.startswith("["):  # [::1]:8000
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def host_allowed(host: str, allowed: Sequence[str]) -> bool:
    """Whether ``host`` (a Host header's value) matches the allowlist (``*`` and ``*.suffix`` patterns)."""
    name = _host_name(host)
    for pattern in allowed:
        if pattern == "*" or pattern == name or (pattern.startswith("*.") and name.endswith(pattern[1:])):
            return True
    return False


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


class Guard:
    """ASGI middleware for every HTTP request: Host allowlist, ``nosniff`` on every response.

    Args:
        app: the wrapped application.
        allowed_hosts: a live list (the server may extend it when it binds); ``*`` allows any.
    """

    def __init__(self, app: ASGIApp, *, allowed_hosts: list[str]) -> None:
        self.app = app
        self.allowed_hosts = allowed_hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_nosniff(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", ()) if h[0].lower() != _NOSNIFF[0]]
                message = {**message, "headers": [*headers, _NOSNIFF]}
            await send(message)

        host = _header(scope, b"host") or ""
        if not host_allowed(host, self.allowed_hosts):
            # The allowed names are not listed: a rebinding page could read them.
            message = (
                f"unknown Host {host!r}: this server answers only to the names it was started for "
                f"(a guard against DNS rebinding); its operator can allow more with --allowed-hosts"
            )
            await send_json(send_nosniff, 400, message, {"host": host})
            return
        await self.app(scope, receive, send_nosniff)


# ---------------------------------------------------------------- uploads


class UploadGate:
    """ASGI middleware for one POST path: origin check, size cap, whole body read under a deadline.

    Args:
        app: the wrapped application.
        path: the guarded endpoint, e.g. ``"/v1/segment"``.
        max_upload_bytes: largest file accepted; the body may be ``MULTIPART_SLACK`` bytes more.
        cors_origins: origins (``https://app.example``) whose pages may upload; ``*`` for any.
        body_timeout: seconds a body may take, plus one per ``min_upload_rate`` bytes received.
        min_upload_rate: bytes per second a slow upload must keep up (0: no extension, the
            whole body within ``body_timeout``).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        path: str,
        max_upload_bytes: int,
        cors_origins: Sequence[str] = (),
        body_timeout: float = 20.0,
        min_upload_rate: float = 500.0,
    ) -> None:
        self.app = app
        self.path = path
        self.max_upload_bytes = max_upload_bytes
        self.max_body_bytes = max_upload_bytes + MULTIPART_SLACK
        self.cors_origins = list(cors_origins)
        self.body_timeout = body_timeout
        self.min_upload_rate = min_upload_rate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.path or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        refused = self._cross_site(scope)
        if refused is not None:
            await send_json(
                send, 403, refused, {"origin": _header(scope, b"origin"), "cors_origins": self.cors_origins}
            )
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            detail = {"max_upload_bytes": self.max_upload_bytes, "content_length": declared}
            await send_json(send, 413, upload_too_large(self.max_upload_bytes), detail, close=True)
            return
        with tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY) as spool:
            try:
                size = await self._read_body(receive, spool)
            except _BodyRefused as e:
                await send_json(send, e.status, e.message, e.detail, close=True)
                return
            except _ClientGone:
                return
            spool.seek(0)
            await self.app(scope, _replay(spool, size, receive), send)

    def _cross_site(self, scope: Scope) -> str | None:
        """Why a browser upload from another site is refused, or None when it may go on.

        API clients (curl, httpx, requests) send neither header and pass. Browsers send
        ``Origin`` on every POST and ``Sec-Fetch-Site``; a page of this server is same-origin.
        """
        origin = _header(scope, b"origin")
        site = _header(scope, b"sec-fetch-site")
        if origin is None and site in (None, "same-origin", "none"):
            return None
        if origin is not None:
            host = _header(scope, b"host") or ""
            own = f"{scope.get('scheme', 'http')}://{host}".lower()
            if origin.lower() == own or "*" in self.cors_origins or origin in self.cors_origins:
                return None
        elif "*" in self.cors_origins:
            return None
        shown = origin if origin is not None else f"a {site} page"
        return (
            f"upload from {shown} refused: this server accepts browser uploads only from its own page; "
            f"its operator can allow another site's origin with --cors-origin"
        )

    async def _read_body(self, receive: Receive, spool) -> int:
        loop = asyncio.get_running_loop()
        start = loop.time()
        deadline = start + self.body_timeout
        received = 0
        while True:
            remaining = deadline - loop.time()
            try:
                if remaining <= 0:
                    raise TimeoutError
                message = await asyncio.wait_for(receive(), remaining)
            except TimeoutError:
                seconds = loop.time() - start
                raise _BodyRefused(
                    408,
                    self._too_slow(received, seconds),
                    {
                        "received_bytes": received,
                        "seconds": round(seconds, 3),
                        "body_timeout_s": self.body_timeout,
                        "min_upload_rate": self.min_upload_rate,
                    },
                ) from None
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > self.max_body_bytes:
                raise _BodyRefused(
                    413, upload_too_large(self.max_upload_bytes), {"max_upload_bytes": self.max_upload_bytes}
                )
            spool.write(chunk)
            if self.min_upload_rate > 0:
                deadline += len(chunk) / self.min_upload_rate
            if not message.get("more_body", False):
                return received

    def _too_slow(self, received: int, seconds: float) -> str:
        rate = f" plus 1 s per {self.min_upload_rate:g} bytes received" if self.min_upload_rate > 0 else ""
        return (
            f"upload too slow: the request body must arrive within {self.body_timeout:g} s{rate} "
            f"(got {received} bytes in {seconds:.1f} s); the connection is closed, send it again"
        )


class _BodyRefused(Exception):
    def __init__(self, status: int, message: str, detail: dict) -> None:
        super().__init__(message)
        self.status, self.message, self.detail = status, message, detail


class _ClientGone(Exception):
    pass


def _replay(spool, size: int, receive: Receive) -> Receive:
    """A receive channel that gives the buffered body again, then the client's own events."""
    done = False

    async def replay() -> Message:
        nonlocal done
        if not done:  # an empty body is one empty message
            chunk = spool.read(_REPLAY_CHUNK)
            done = spool.tell() >= size
            return {"type": "http.request", "body": chunk, "more_body": not done}
        return await receive()  # http.disconnect, when the client goes

    return replay


def upload_too_large(max_upload_bytes: int) -> str:
    """The 413 message for an upload over the limit."""
    mb = max_upload_bytes / 2**20
    return (
        f"upload too large: the limit is {mb:g} MiB per file (the server's --max-upload-mb); "
        "send a smaller or more compressed image"
    )


def _content_length(scope: Scope) -> int | None:
    value = _header(scope, b"content-length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


async def send_json(
    send: Send,
    status: int,
    message: str,
    detail,
    headers: list[tuple[bytes, bytes]] | None = None,
    *,
    close: bool = False,
) -> None:
    """An error answer in the API's shape, ``{"error": message, "detail": detail}``, from ASGI."""
    body = json.dumps({"error": message, "detail": detail}).encode("utf-8")
    extra = [(b"connection", b"close")] if close else []
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *extra,
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
