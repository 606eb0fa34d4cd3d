"""http(s) inputs: :func:`is_url`, :func:`fetch_url` and the names :func:`find_images` gives URLs.

:func:`fetch_url` downloads with a size cap (``DEFAULT_URL_MAX_BYTES``) and a timeout that
bounds each socket operation and the whole download (``DEFAULT_URL_TIMEOUT``). Other schemes
(file:, ftp:, data:) are refused. Nothing here decodes images (:mod:`seglens.io.decode` does).
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import re
import socket
import ssl
import threading
import unicodedata
import urllib.error
import urllib.parse
import urllib.request  # downloads use the standard library only: no new dependency
from typing import Any

from .errors import DEFAULT_URL_MAX_BYTES, DEFAULT_URL_TIMEOUT, ImageLoadError

__all__ = ["fetch_url", "is_url"]

_OTHER_SCHEME = "unsupported URL scheme; use http(s) or a local path"
_OTHER_SCHEME_RE = re.compile(r"^(?:[a-z][a-z0-9+.-]+://|data:)", re.IGNORECASE)
_CHUNK = 64 * 1024
_MAX_NAME = 100  # characters of an output stem taken from a URL


def is_url(text: object) -> bool:
    """Whether ``text`` is a str starting with "http://" or "https://" (scheme in any case).

    Other schemes (file:, ftp:, data:, ...) are not URLs for seglens; nor are ``Path`` objects.
    """
    return isinstance(text, str) and text[:8].lower().startswith(("http://", "https://"))


def _other_scheme(text: str) -> bool:
    """A URL with a scheme we refuse ("ftp://...", "file://...", "data:...")."""
    return not is_url(text) and _OTHER_SCHEME_RE.match(text) is not None


def fetch_url(url: str, *, max_bytes: int = DEFAULT_URL_MAX_BYTES, timeout: float = DEFAULT_URL_TIMEOUT) -> bytes:
    """Download an http(s) URL with a GET request and return the body.

    Sends ``User-Agent: seglens/<version>`` and follows redirects, but only to http(s) URLs.
    Spaces and non-ASCII characters in the path and query are percent-encoded first.

    Args:
        url: an http:// or https:// URL (see :func:`is_url`).
        max_bytes: refuse a response whose Content-Length is above this before reading it, and
            stop reading one that sends more (no or a wrong Content-Length).
        timeout: seconds; limits each socket operation (connect, each read) and, as a hard
            deadline, the whole download, so a server trickling bytes cannot hang the caller.

    Raises:
        ImageLoadError: with ``path=url`` for every failure: HTTP error status, cannot connect,
            TLS error, timeout, connection cut off (kind "unreadable"), too large ("too_large"),
            redirect to another scheme ("unsupported").
        ValueError: ``url`` is not http(s), or bad ``max_bytes`` / ``timeout``.
    """
    if not is_url(url):
        raise ValueError(f"fetch_url expects an http:// or https:// URL, got {url!r}")
    _check_url_limits(max_bytes, timeout)
    return _fetch(url, max_bytes=max_bytes, timeout=timeout)[0]


def _check_url_limits(max_bytes: int, timeout: float, *, prefix: str = "") -> None:
    if type(max_bytes) is not int or max_bytes < 1:
        raise ValueError(f"{prefix}max_bytes must be a positive int, got {max_bytes!r}")
    if type(timeout) not in (int, float) or not 0 < timeout < float("inf"):
        raise ValueError(f"{prefix}timeout must be a positive number of seconds, got {timeout!r}")


def _fetch(url: str, *, max_bytes: int, timeout: float) -> tuple[bytes, str | None]:
    """The body and the Content-Type (lowercase "type/subtype", None if the server sent none)."""
    deadline = _Deadline(timeout)
    opener = urllib.request.build_opener(_HTTPHandler(deadline), _HTTPSHandler(deadline), _RedirectHandler())
    started = False  # whether the response headers arrived
    try:
        request = urllib.request.Request(_request_url(url), headers={"User-Agent": _user_agent()})
        with opener.open(request, timeout=timeout) as response:
            started = True
            length = _content_length(response)
            if length is not None and length > max_bytes:
                raise _too_large(url, max_bytes)
            body = _read_body(response, url, max_bytes)
            if deadline.expired:  # the deadline shut the socket, which reads as the end of the body
                raise ImageLoadError(url, _timeout_reason(timeout, started=True))
            if length is not None and len(body) < length:
                raise ImageLoadError(url, f"connection closed after {len(body)} of {length} bytes; try again")
            headers = response.headers
            return body, headers.get_content_type() if "Content-Type" in headers else None
    except (OSError, http.client.HTTPException, ValueError, _RedirectRefused) as e:
        if isinstance(e, urllib.error.HTTPError):
            e.close()
        if deadline.expired or _is_timeout(e):  # after the deadline, whatever broke is a timeout
            raise ImageLoadError(url, _timeout_reason(timeout, started=started)) from None
        raise ImageLoadError(url, *_network_reason(e)) from None
    finally:
        deadline.cancel()


def _user_agent() -> str:
    # the parent package, read when needed: it never imports seglens.io itself at import time
    from .._version import __version__

    return f"seglens/{__version__}"


def _request_url(url: str) -> str:
    """Percent-encode what a browser would (spaces, non-ASCII) in the path and query; drop the fragment."""
    parts = urllib.parse.urlsplit(url)
    safe = "/%:@!$&'()*+,;=~"
    path = urllib.parse.quote(parts.path, safe=safe)
    query = urllib.parse.quote(parts.query, safe=safe + "?")
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, query, ""))


def _content_length(response: http.client.HTTPResponse) -> int | None:
    if "chunked" in (response.headers.get("Transfer-Encoding") or "").lower():
        return None  # chunked bodies have no length; a Content-Length beside it is ignored
    value = (response.headers.get("Content-Length") or "").strip()
    return int(value) if value.isascii() and value.isdigit() else None


def _read_body(response: http.client.HTTPResponse, url: str, max_bytes: int) -> bytes:
    body = bytearray()
    while chunk := response.read1(_CHUNK):  # one recv at a time: stops soon after the limit
        body += chunk
        if len(body) > max_bytes:
            raise _too_large(url, max_bytes)
    return bytes(body)


def _too_large(url: str, max_bytes: int) -> ImageLoadError:
    return ImageLoadError(
        url, f"larger than {_size(max_bytes)}; download it yourself or raise the limit (--url-max-mb)", "too_large"
    )


def _size(n: int) -> str:
    for unit, scale in (("MB", 2**20), ("KB", 2**10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} bytes"


def _is_timeout(e: BaseException) -> bool:
    return isinstance(e, TimeoutError) or (isinstance(e, urllib.error.URLError) and isinstance(e.reason, TimeoutError))


def _timeout_reason(timeout: float, *, started: bool) -> str:
    if started:
        return f"download not finished within {timeout:g} s (server too slow); try again or download it yourself"
    return f"no response within {timeout:g} s; check the URL or try again"


def _network_reason(e: BaseException) -> tuple[str, str]:
    """(reason, kind) for an exception raised while downloading, other than a timeout."""
    if isinstance(e, _RedirectRefused):
        return f"redirected to {e.target}, which is not http(s); link the image file itself", "unsupported"
    if isinstance(e, urllib.error.HTTPError):
        return _http_reason(e.code, e.reason), "unreadable"
    if isinstance(e, urllib.error.URLError):
        if not isinstance(e.reason, BaseException):
            return f"cannot download ({e.reason}); check the URL", "unreadable"
        e = e.reason
    if isinstance(e, ssl.SSLCertVerificationError):
        reason = f"TLS certificate not accepted ({e.verify_message}); check the URL or the system's CA certificates"
        return reason, "unreadable"
    if isinstance(e, ssl.SSLError):
        return f"TLS error ({e.reason or e}); check the URL (https:// for a plain http server?)", "unreadable"
    if isinstance(e, socket.gaierror):
        return f"cannot connect: host not found ({e.strerror or e}); check the URL and the network", "unreadable"
    if isinstance(e, ConnectionRefusedError):
        return "cannot connect: connection refused; check the URL (host and port)", "unreadable"
    if isinstance(e, (ConnectionError, http.client.HTTPException)):
        return f"connection lost ({str(e) or type(e).__name__}); try again", "unreadable"
    if isinstance(e, ValueError):
        return f"invalid URL ({e}); check it", "unreadable"
    return f"cannot connect: {getattr(e, 'strerror', None) or e}", "unreadable"


def _http_reason(code: int, phrase: str) -> str:
    if 300 <= code < 400 or not phrase:  # for 3xx urllib puts its own text in the phrase
        with contextlib.suppress(ValueError):
            phrase = http.HTTPStatus(code).phrase
    status = f"HTTP {code} {phrase}".strip()
    if 300 <= code < 400:  # urllib gave up: a redirect loop, or no Location header
        return f"{status}: too many redirects or no target; open the URL in a browser and use the final address"
    if code in (401, 403):
        return f"{status}; the image is not public (download it yourself)"
    if code >= 500:
        return f"{status}; the server failed, try again later"
    return f"{status}; check the URL"


class _RedirectRefused(Exception):
    def __init__(self, target: str) -> None:
        super().__init__(target)
        self.target = target


class _RedirectHandler(urllib.request.HTTPRedirectHandler):
    """urllib's redirects, but only to http(s): urllib itself would also follow ftp://."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        if not is_url(newurl):
            fp.close()
            raise _RedirectRefused(newurl)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class _Deadline:
    """Shuts down every socket of one download once ``seconds`` have passed.

    Socket timeouts bound each operation only; a server sending one byte every few seconds
    would never trip them. Shutting the socket down wakes the reading thread at once.
    """

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            expired = self.expired
        if expired:
            _shutdown(sock)

    def cancel(self) -> None:
        self._timer.cancel()

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shutdown(sock)


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the plain socket's, also for TLS sockets


class _WatchedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, *args: Any, deadline: _Deadline, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline = deadline

    def connect(self) -> None:
        super().connect()
        self._deadline.watch(self.sock)


class _WatchedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, *args: Any, deadline: _Deadline, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline = deadline

    def connect(self) -> None:
        super().connect()
        self._deadline.watch(self.sock)


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self._deadline = deadline

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(functools.partial(_WatchedHTTPConnection, deadline=self._deadline), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self._deadline = deadline

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        connection = functools.partial(_WatchedHTTPSConnection, deadline=self._deadline)
        return self.do_open(connection, req, context=_ssl_context())


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    return ssl.create_default_context()  # verifies certificates and host names; loading CAs takes a while


def _url_key(url: str) -> str:
    """What makes two URLs the same download: scheme and host in any case, fragment ignored."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return url
    return urllib.parse.urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path or "/", parts.query, ""))


def _url_name(url: str) -> tuple[str, str]:
    """``(stem, suffix)`` for a URL: its last path segment, percent-decoded, else its host.

    "https://example.com/img/cat.jpg?x=1" -> ("cat", ".jpg"); "https://example.com/" ->
    ("example.com", "").
    """
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        parts = None
    segment = urllib.parse.unquote(parts.path.rsplit("/", 1)[-1]) if parts else ""
    stem, dot, extension = segment.rpartition(".")
    if dot and stem and re.fullmatch(r"[A-Za-z0-9]{1,8}", extension):
        name, suffix = _safe_name(stem), "." + extension.lower()
    else:
        name, suffix = _safe_name(segment), ""
    if not name:
        name, suffix = _safe_name(parts.hostname or "") if parts else "", ""
    return name or "url", suffix


def _safe_name(text: str) -> str:
    """A file-name stem: no path separators, control or Windows-reserved characters, no "..", <= 100 characters."""
    text = "".join("_" if c in '/\\:*?"<>|' or unicodedata.category(c)[0] == "C" else c for c in text)
    text = re.sub(r"\.{2,}", ".", text).strip(" .")
    return text[:_MAX_NAME].rstrip(" .")
