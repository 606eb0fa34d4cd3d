"""Admission control for the upload endpoint, before any of the body is read.

A pure ASGI middleware, so it acts before FastAPI parses the multipart body:

- at most ``capacity`` (= workers + queue size) segment requests are in progress; one more is
  answered 503 with ``Retry-After`` at once, its body left unread;
- a declared ``Content-Length`` above the body limit is answered 413 at once;
- a body that grows past the limit while it streams in (chunked uploads, lying headers) stops
  being read: the receive channel raises a 413 ``HTTPException``, which FastAPI passes through.

A request's slot is released when the request is finished *and* the worker job it submitted
(if any) is done, so a client that disconnects cannot let jobs pile up behind the pool.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from concurrent.futures import Future

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["MULTIPART_SLACK", "TICKET_KEY", "BodyTooLarge", "Gate", "Slots", "Ticket", "upload_too_large"]

TICKET_KEY = "seglens.ticket"
RETRY_AFTER_S = 1  # one inference on CPU takes well under a second for the mobile models
MULTIPART_SLACK = 64 * 1024  # room for the multipart boundaries, part headers and small fields


class BodyTooLarge(HTTPException):
    """The request body passed the upload limit while it was being read."""


class Ticket:
    """One admitted request's slot; released when every holder has let go."""

    def __init__(self, release: Callable[[], None]) -> None:
        self._lock = threading.Lock()
        self._holders = 1  # the request itself
        self._release = release

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
            self._release()


class Slots:
    """A counter of requests in progress, shared by the middleware and the app (for /readyz).

    Args:
        capacity: most requests in progress (running + queued).
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()
        self._in_flight = 0

    @property
    def in_flight(self) -> int:
        """Requests admitted and not yet finished (with their worker jobs)."""
        return self._in_flight

    def try_acquire(self) -> bool:
        """Take a slot if one is free, without waiting."""
        with self._lock:
            if self._in_flight >= self.capacity:
                return False
            self._in_flight += 1
            return True

    def release(self) -> None:
        with self._lock:
            self._in_flight -= 1


class Gate:
    """ASGI middleware limiting in-progress requests and body size on one POST path.

    Args:
        app: the wrapped application.
        path: the guarded endpoint, e.g. ``"/v1/segment"``.
        slots: the shared counter of requests in progress.
        max_upload_bytes: largest file accepted; the body may be ``MULTIPART_SLACK`` bytes more.
        busy_detail: extra fields for the 503 answer's ``detail`` (workers, queue size).
    """

    def __init__(self, app: ASGIApp, *, path: str, slots: Slots, max_upload_bytes: int, busy_detail: dict | None = None) -> None:
        self.app = app
        self.path = path
        self.slots = slots
        self.max_upload_bytes = max_upload_bytes
        self.max_body_bytes = max_upload_bytes + MULTIPART_SLACK
        self.busy_detail = busy_detail or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.path or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            detail = {"max_upload_bytes": self.max_upload_bytes, "content_length": declared}
            await _send_json(send, 413, upload_too_large(self.max_upload_bytes), detail)
            return
        if not self.slots.try_acquire():
            message = f"server busy: all {self.slots.capacity} request slots are taken; retry in {RETRY_AFTER_S} s"
            detail = {"in_flight": self.slots.in_flight, "capacity": self.slots.capacity, **self.busy_detail}
            await _send_json(send, 503, message, detail, headers=[(b"retry-after", str(RETRY_AFTER_S).encode())])
            return
        ticket = Ticket(self.slots.release)
        scope[TICKET_KEY] = ticket
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise BodyTooLarge(413, upload_too_large(self.max_upload_bytes))
            return message

        try:
            await self.app(scope, limited_receive, send)
        finally:
            ticket.drop()


def upload_too_large(max_upload_bytes: int) -> str:
    """The 413 message for an upload over the limit."""
    mb = max_upload_bytes / 2**20
    return f"upload too large: the limit is {mb:g} MiB per file (the server's --max-upload-mb); send a smaller or more compressed image"


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", ()):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _send_json(send: Send, status: int, message: str, detail: dict, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"error": message, "detail": detail}).encode("utf-8")
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *(headers or [])],
    })
    await send({"type": "http.response.body", "body": body})
