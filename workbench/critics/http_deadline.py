"""One HTTP POST that finishes by a deadline, however slowly the server answers.

``urllib``'s ``timeout`` bounds each socket operation, not the exchange: a server that sends one
byte a second never trips a 2 s timeout. Here every read of the status line, the headers and the
body goes through a reader that sets the socket timeout to the time left until a
``time.monotonic()`` deadline and raises :class:`DeadlineExceeded` once it has passed; connecting
and sending get the time left as their timeout. Reads are at most ``READ_CHUNK_BYTES`` at a time.

Only the standard library is used; proxies from the environment (``HTTPS_PROXY``, ...) work as in
``urllib.request``. Name resolution (DNS) is not covered by the deadline.
"""

from __future__ import annotations

import functools
import http.client
import io
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import Message
from typing import Any

READ_CHUNK_BYTES = 4096
MAX_BODY_BYTES = 16 * 2**20
_MIN_TIMEOUT_S = 0.001


class DeadlineExceeded(TimeoutError):
    """The deadline passed before the reply was complete (connecting, sending or reading)."""


class HttpTransportError(OSError):
    """The exchange failed before a complete HTTP reply: refused, reset, not HTTP, too large."""


@dataclass(frozen=True)
class HttpReply:
    """A complete HTTP reply, whatever its status.

    Attributes:
        status: the HTTP status code, e.g. 200, 503.
        reason: the reason phrase, e.g. ``"Service Unavailable"``.
        headers: the reply headers.
        body: the whole body (at most ``MAX_BODY_BYTES``).
    """

    status: int
    reason: str
    headers: Message
    body: bytes


def one_line(text: str, limit: int = 160) -> str:
    """``text`` with runs of whitespace (newlines included) made one space, cut to ``limit`` chars."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def post_with_deadline(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    deadline: float,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> HttpReply:
    """POST ``body`` to ``url`` and return the complete reply before ``deadline``.

    Args:
        url: ``http://`` or ``https://`` address.
        body: the request body (bytes).
        headers: request headers, e.g. ``{"Content-Type": "application/json"}``.
        deadline: ``time.monotonic()`` value (seconds) by which the reply must be complete.
        max_body_bytes: longer bodies are an :class:`HttpTransportError`.

    Returns:
        The reply, for any status (4xx / 5xx included).

    Raises:
        DeadlineExceeded: the deadline passed first.
        HttpTransportError: no complete HTTP reply (connection refused or reset, not HTTP, ...).
    """
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise DeadlineExceeded("the deadline had passed before the request was sent")
    handlers: list[urllib.request.BaseHandler] = [_DeadlineHTTPHandler(deadline)]
    if hasattr(urllib.request, "HTTPSHandler"):
        handlers.append(_DeadlineHTTPSHandler(deadline))
    opener = urllib.request.build_opener(*handlers)
    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
    try:
        try:
            response: Any = opener.open(request, timeout=remaining)
            status, reason = int(response.status), str(response.reason)
        except urllib.error.HTTPError as error:
            response, status, reason = error, int(error.code), str(error.reason)
        try:
            data = response.read(max_body_bytes + 1)
            reply_headers = response.headers
        finally:
            response.close()
    except DeadlineExceeded:
        raise
    except urllib.error.URLError as error:
        if isinstance(error.reason, TimeoutError) or time.monotonic() >= deadline:
            raise DeadlineExceeded("the deadline passed while connecting or sending") from None
        raise HttpTransportError(_describe(error.reason)) from None
    except TimeoutError:
        raise DeadlineExceeded("the deadline passed while waiting for the reply") from None
    except (OSError, http.client.HTTPException) as error:
        if time.monotonic() >= deadline:
            raise DeadlineExceeded("the deadline passed while reading the reply") from None
        raise HttpTransportError(_describe(error)) from None
    if len(data) > max_body_bytes:
        raise HttpTransportError(f"reply body longer than {max_body_bytes} bytes")
    return HttpReply(status, reason, reply_headers, data)


def _describe(error: object) -> str:
    """``"ConnectionRefusedError: [Errno 111] Connection refused"``, on one line."""
    if isinstance(error, BaseException):
        return one_line(f"{type(error).__name__}: {error}")
    return one_line(str(error))


class _DeadlineReader(io.RawIOBase):
    """A socket's raw reader that gives each read only the time left until the deadline."""

    def __init__(self, raw: io.RawIOBase, sock: socket.socket, deadline: float) -> None:
        super().__init__()
        self._raw = raw
        self._sock = sock
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:  # buffer: a writable bytes-like object
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise DeadlineExceeded("the deadline passed while reading the reply")
        self._sock.settimeout(max(remaining, _MIN_TIMEOUT_S))
        view = memoryview(buffer)[:READ_CHUNK_BYTES]
        try:
            count = self._raw.readinto(view)
        except TimeoutError:
            raise DeadlineExceeded("the deadline passed while reading the reply") from None
        return 0 if count is None else count

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


class _DeadlineResponse(http.client.HTTPResponse):
    """An ``HTTPResponse`` whose status line, headers and body are read through ``_DeadlineReader``."""

    def __init__(self, sock: socket.socket, *args: Any, deadline: float, **kwargs: Any) -> None:
        super().__init__(sock, *args, **kwargs)
        raw = self.fp.detach()
        self.fp = io.BufferedReader(_DeadlineReader(raw, sock, deadline), READ_CHUNK_BYTES)


class _DeadlineConnectionMixin:
    """Gives a connection the deadline: its responses use ``_DeadlineResponse``, sends the time left."""

    sock: socket.socket | None
    response_class: Any

    def __init__(self, *args: Any, deadline: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline = deadline
        self.response_class = functools.partial(_DeadlineResponse, deadline=deadline)

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        if time.monotonic() >= self._deadline:
            raise DeadlineExceeded("the deadline passed while connecting")
        if self.sock is not None:
            self.sock.settimeout(max(self._deadline - time.monotonic(), _MIN_TIMEOUT_S))


class _DeadlineHTTPConnection(_DeadlineConnectionMixin, http.client.HTTPConnection):
    pass


class _DeadlineHTTPSConnection(_DeadlineConnectionMixin, http.client.HTTPSConnection):
    pass


class _DeadlineHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: float) -> None:
        super().__init__()
        self._deadline = deadline

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(functools.partial(_DeadlineHTTPConnection, deadline=self._deadline), req)


class _DeadlineHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: float) -> None:
        super().__init__()
        self._deadline = deadline

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        connection = functools.partial(_DeadlineHTTPSConnection, deadline=self._deadline)
        return self.do_open(connection, req, context=self._context)  # type: ignore[attr-defined]
