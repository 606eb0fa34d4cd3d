"""uvicorn's HTTP/1.1 protocol with a deadline for request headers (slowloris).

uvicorn times out idle keep-alive connections, but nothing times out a request that is being
received: its keep-alive timer is cancelled by every byte, and ASGI middleware only runs once
the headers are complete. A connection that sends headers one byte at a time, or half a header
and then nothing, stays open for ever. This subclass of uvicorn's own protocol (httptools when
installed, else h11) arms a timer whenever the connection waits for a request's headers (when
it opens, and after each response) and disarms it when a request starts; when it fires, the
connection is answered 408 and closed. Request bodies have their own deadline
(:class:`seglens.web._gate.UploadGate`); after a response, bytes of an unread body do not start
a request, so the same timer closes a connection that keeps trickling them.
"""

from __future__ import annotations

import asyncio
import json

__all__ = ["DEFAULT_HEADER_TIMEOUT", "protocol_class"]

DEFAULT_HEADER_TIMEOUT = 10.0


def protocol_class(header_timeout: float | None = DEFAULT_HEADER_TIMEOUT) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol class with a ``header_timeout`` (seconds) for each request's headers.

    Pass the result as ``uvicorn.Config(app, http=...)``. ``None``: uvicorn's class unchanged.
    """
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    if header_timeout is None:
        return AutoHTTPProtocol
    if not header_timeout > 0:
        raise ValueError(f"header_timeout must be > 0 seconds or None, got {header_timeout!r}")
    name = f"HeaderDeadline{AutoHTTPProtocol.__name__}"
    return type(name, (_HeaderDeadline, AutoHTTPProtocol), {"header_timeout": float(header_timeout)})


class _HeaderDeadline:
    """Mixin over uvicorn's ``H11Protocol`` / ``HttpToolsProtocol`` (both keep ``self.cycle``)."""

    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:  # type: ignore[no-untyped-def]
        super().connection_made(transport)  # type: ignore[misc]
        self._arm()

    def data_received(self, data: bytes) -> None:
        cycle = self.cycle  # type: ignore[attr-defined]
        super().data_received(data)  # type: ignore[misc]
        if self.cycle is not cycle:  # type: ignore[attr-defined]  # a request's headers are complete
            self._disarm()

    def on_response_complete(self) -> None:
        cycle = self.cycle  # type: ignore[attr-defined]
        super().on_response_complete()  # type: ignore[misc]
        if self.cycle is cycle and not self.transport.is_closing():  # type: ignore[attr-defined]
            self._arm()  # waiting for the next request's headers (a pipelined one has started)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)  # type: ignore[misc]

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)  # type: ignore[attr-defined]

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        transport = self.transport  # type: ignore[attr-defined]
        if transport.is_closing():
            return
        if self.cycle is not None:  # type: ignore[attr-defined]  # after a response: just close
            transport.close()
            return
        message = (
            f"request headers too slow: a request's headers must arrive within {self.header_timeout:g} s; "
            "the connection is closed"
        )
        body = json.dumps({"error": message, "detail": {"header_timeout_s": self.header_timeout}}).encode()
        head = (
            "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nx-content-type-options: nosniff\r\nconnection: close\r\n\r\n"
        )
        transport.write(head.encode("ascii") + body)
        transport.close()
