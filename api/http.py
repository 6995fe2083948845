"""The HTTP layer around every route: request ids, body size, safe headers, the access log.

``EdgeMiddleware`` (plain ASGI, outermost after Starlette's error handler):

* ``X-Request-ID``: kept when it is 1–64 characters of ``[A-Za-z0-9._-]``,
  otherwise replaced by a generated one; echoed on the response and bound to
  the operational log's context;
* bodies larger than ``max_body_bytes`` are refused with 413 — by
  ``Content-Length`` before anything is read, and by counting while a body
  without one streams in;
* every response gets ``Cache-Control: no-store`` (unless the route set its
  own), ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer``
  and a CSP that forbids framing;
* one access-log line per request: method, path (never the query string),
  status, duration, request id.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.problems import TOO_LARGE, ProblemError, render

Headers = list[tuple[bytes, bytes]]
_REQUEST_ID = re.compile(rb"[A-Za-z0-9._-]{1,64}")
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
    (b"x-frame-options", b"DENY"),
)

log = structlog.get_logger("api.access")


def request_id_of(scope: Scope | MutableMapping[str, Any]) -> str:
    state = scope.get("state") or {}
    rid = state.get("request_id")
    return rid if isinstance(rid, str) else "unknown"


_ID_ALPHABET = "abcdefghjkmnpqrstuvwxyz"


def new_request_id() -> str:
    """16 letters (~72 bits): no digit runs, so the log's allowlist never mistakes one for a number.

    One draw of 128 random bits, written in base 23 (the bias of the kept
    digits is below 2**-55); a ``secrets.choice`` per letter cost 16 system calls.
    """
    n = secrets.randbits(128)
    letters = []
    for _ in range(16):
        n, digit = divmod(n, len(_ID_ALPHABET))
        letters.append(_ID_ALPHABET[digit])
    return "".join(letters)


class _TooLargeError(Exception):
    """The body passed ``max_body_bytes`` while it streamed in; answered with 413."""


class EdgeMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-request-id", b"")
        request_id = given.decode("ascii") if _REQUEST_ID.fullmatch(given) else new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status = 500
        started_response = False

        async def send_with_headers(message: Message) -> None:
            nonlocal status, started_response
            if message["type"] == "http.response.start":
                started_response = True
                status = int(message["status"])
                out: Headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                names = {k.lower() for k, _ in out}
                out.append((b"x-request-id", request_id.encode("ascii")))
                if b"cache-control" not in names:
                    out.append((b"cache-control", b"no-store"))
                out.extend(h for h in SECURITY_HEADERS if h[0] not in names)
                message = {**message, "headers": out}
            await send(message)

        try:
            length = headers.get(b"content-length")
            if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
                raise _TooLargeError
            await self.app(scope, _limited(receive, self.max_body_bytes), send_with_headers)
        except _TooLargeError:
            if started_response:
                raise
            await render(ProblemError(TOO_LARGE, f"the request body is larger than {self.max_body_bytes} bytes"), request_id)(scope, receive, send_with_headers)
        finally:
            log.info(
                "request",
                method=str(scope.get("method", "")).lower(),
                path=scope.get("path", ""),
                status=status,
                duration_ms=int((time.perf_counter() - started) * 1000),
            )
            structlog.contextvars.unbind_contextvars("request_id")


def _limited(receive: Receive, limit: int) -> Callable[[], Awaitable[Message]]:
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _TooLargeError
        return message

    return wrapped


__all__ = ["SECURITY_HEADERS", "EdgeMiddleware", "new_request_id", "request_id_of"]
