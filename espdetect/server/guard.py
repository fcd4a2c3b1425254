"""`RequestGuard`: limits every request must meet, whether authentication is on or not.

* Request bodies are bounded (``max_body_size``): 413 before anything reads a huge upload.
* State-changing requests (anything but GET, HEAD, OPTIONS) from a browser on another site are
  refused with 403: a browser always names the page's origin in ``Origin`` (or at least
  ``Referer``) on such requests, and it must be one of this server's own origins or one of the
  configured ``cors_origins``. Clients that are not browsers send neither and pass.

This server's own origins are those of its allowed hosts (`espdetect.server.hosts`), never
whatever the request's ``Host`` says: the origin of the request itself (``scheme://Host``) when
that host is allowed, and any origin on a host the ``allowed_hosts`` setting names (a reverse
proxy's public name, whatever its scheme and port). A DNS-rebinding page on ``evil.example``
sends ``Host`` and ``Origin`` that match each other, but not the allowed hosts.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from espdetect.server.hosts import AllowedHosts, parse_host

__all__ = ["RequestGuard", "same_origin"]

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def _origin_key(url: str) -> tuple[str, str, int] | None:
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return parts.scheme, parts.hostname.lower(), port or _DEFAULT_PORTS[parts.scheme]


def same_origin(origin: str, scheme: str, host: str, allowed: AllowedHosts | None = None) -> bool:
    """Whether ``origin`` (``scheme://host[:port]``) is this server's own, for a request to ``host``.

    It is when it is the origin of the request itself and ``host`` is one of the ``allowed`` hosts
    (without ``allowed``, any host), or when ``allowed`` vouches for the origin's host
    (`AllowedHosts.vouched`).

    Example:
        >>> same_origin("http://127.0.0.1:8000", "http", "127.0.0.1:8000")
        True
        >>> same_origin("https://evil.example", "http", "127.0.0.1:8000")
        False
        >>> rebinding = AllowedHosts.for_server("127.0.0.1")
        >>> same_origin("http://evil.example:8000", "http", "evil.example:8000", rebinding)
        False
    """
    theirs = _origin_key(origin)
    if theirs is None:
        return False
    if allowed is not None and allowed.vouched(theirs[1]):
        return True
    parsed = parse_host(host)
    if parsed is None or (allowed is not None and not allowed.allows(parsed[0])):
        return False
    return _origin_key(f"{scheme}://{host}") == theirs


def _reply(status: int, detail: str) -> list[Message]:
    body = json.dumps({"detail": detail}).encode()
    return [
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        },
        {"type": "http.response.body", "body": body},
    ]


class RequestGuard:
    """ASGI middleware enforcing the body limit and the origin check of this module.

    Example:
        >>> hosts = AllowedHosts.for_server("127.0.0.1")
        >>> app.add_middleware(  # doctest: +SKIP
        ...     RequestGuard, max_body_size=1 << 20, allowed_origins=[], allowed_hosts=hosts
        ... )
    """

    def __init__(
        self,
        app: ASGIApp,
        max_body_size: int,
        allowed_origins: list[str],
        allowed_hosts: AllowedHosts | None = None,
    ) -> None:
        self.app = app
        self.max_body_size = max_body_size
        #: None: the request's own origin counts as this server's whatever its Host.
        self.hosts = allowed_hosts
        self.any_origin = "*" in allowed_origins
        self.allowed = {key for key in map(_origin_key, allowed_origins) if key is not None}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        length = headers.get("content-length")
        if length is not None and (not length.strip().isdigit() or int(length) > self.max_body_size):
            await self._send(
                send, 413, f"expected a request body of at most {self.max_body_size} bytes, got {length}"
            )
            return
        if scope["method"] in _SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        problem = self._foreign_origin(scope, headers)
        if problem is not None:
            await self._send(send, 403, problem)
            return
        # Read the (bounded) body here, so a chunked upload without Content-Length is bounded too.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_size:
                await self._send(
                    send, 413, f"expected a request body of at most {self.max_body_size} bytes, got more"
                )
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replay: list[Message] = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def receive_again() -> Message:
            if replay:
                return replay.pop()
            return await receive()

        await self.app(scope, receive_again, send)

    def _foreign_origin(self, scope: Scope, headers: Headers) -> str | None:
        origin = headers.get("origin")
        source = origin if origin is not None else headers.get("referer")
        if source is None:
            return None
        host = headers.get("host", "")
        if self.any_origin or same_origin(source, scope.get("scheme", "http"), host, self.hosts):
            return None
        key = _origin_key(source)
        if key is not None and key in self.allowed:
            return None
        what = "Origin" if origin is not None else "Referer"
        return (
            f"expected a state-changing request from this server's own pages or an allowed CORS origin, "
            f"got {what} {source[:200]!r}"
        )

    @staticmethod
    async def _send(send: Send, status: int, detail: str) -> None:
        for message in _reply(status, detail):
            await send(message)
