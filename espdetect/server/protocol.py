"""`HeadLimitedProtocol`: uvicorn's httptools protocol with bounded request heads.

uvicorn reads a request head without any limit: httptools grows a header by concatenating
bytes objects, so one 64 MiB header costs seconds of event-loop time (every viewer and
``/health`` wait) and hundreds of megabytes. These limits act on the bytes as they arrive,
before the parser sees them and before authentication, so nothing buffers more than
`HeadLimits.max_size` of a head:

* a head larger than ``max_size`` bytes (request line and headers) gets 431, or 414 while the
  request line itself is still unfinished; more than ``max_headers`` headers get 431; a head the
  parser rejects gets 400. Each answer is followed by closing the connection, unread.
* a head not complete ``timeout`` seconds after the connection opened (or after the first byte
  of a later request on a kept-alive connection) closes the connection (slowloris).
* at most ``max_pending`` connections of a server may be waiting for a head (new or idle
  kept-alive ones); beyond that, a new connection gets 503 and is closed at once. Streaming
  viewers are past their head and do not count.

Only the request direction is touched: a response, and so every MJPEG part, goes out through
uvicorn's code unchanged. Only httptools (``uvicorn[standard]``) is supported; the h11
implementation has no per-header hook to bound.
"""

from __future__ import annotations

import asyncio
import json
import logging
from asyncio import TimerHandle
from dataclasses import dataclass
from typing import Any, ClassVar

try:
    import httptools
    from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
except ImportError as exc:  # pragma: no cover - uvicorn[standard] is a dependency
    raise ImportError(
        "espdetect's server needs uvicorn's httptools protocol: pip install 'uvicorn[standard]'"
    ) from exc
from uvicorn.config import Config
from uvicorn.server import ServerState

__all__ = ["HeadLimitedProtocol", "HeadLimits", "PendingGate", "limited_protocol"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class HeadLimits:
    """What a request head may cost (see the module documentation).

    Example:
        >>> HeadLimits(max_size=32 * 1024, max_headers=100, timeout=10.0, max_pending=256).max_headers
        100
    """

    #: Bytes of the request line and headers together.
    max_size: int
    #: Header lines of one request.
    max_headers: int
    #: Seconds a connection may take to send a complete head.
    timeout: float
    #: Connections of one server waiting for a head at once.
    max_pending: int


class PendingGate:
    """How many connections of one server are waiting for a request head, against a cap.

    Example:
        >>> gate = PendingGate(1)
        >>> gate.admit(), gate.admit()
        (True, False)
        >>> gate.leave(); gate.count
        0
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0
        self._refusing = False

    def admit(self) -> bool:
        """Counts a new connection in, or returns False when the cap is reached."""
        if self.count >= self.limit:
            if not self._refusing:
                # Once per burst: a flood of refusals must not become a flood of log lines.
                logger.warning("refusing new connections: %d are waiting for a request head", self.count)
                self._refusing = True
            return False
        self.count += 1
        return True

    def hold(self) -> None:
        """Counts in a kept-alive connection waiting for its next head (never refused: it is open)."""
        self.count += 1

    def leave(self) -> None:
        """Counts out a connection that got its head or closed."""
        self.count -= 1
        if self.count < self.limit:
            self._refusing = False


class _HeadRejected(Exception):
    """Raised from a parser callback to stop parsing a head that breaks a limit."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class HeadLimitedProtocol(HttpToolsProtocol):
    """`HttpToolsProtocol` enforcing `HeadLimits`; use `limited_protocol` for one bound to a server.

    Example:
        >>> config = uvicorn.Config(app, http=limited_protocol(limits))  # doctest: +SKIP
    """

    #: Set by `limited_protocol`, with the `gate` its server's connections share.
    limits: ClassVar[HeadLimits]
    gate: ClassVar[PendingGate]

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        # Per head; reset when a message ends, so a kept-alive connection starts each head afresh.
        self._head_bytes = 0
        self._header_count = 0
        self._line_done = False
        self._head_started = False
        #: Between the end of a head and the end of its message: bytes are body, not head.
        self._in_body = False
        self._heads = 0
        # Per connection.
        self._pending = False
        self._head_timer: TimerHandle | None = None

    # -- connection -------------------------------------------------------------------------

    # Narrower than asyncio's BaseTransport as in uvicorn: stream servers always hand a Transport.
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if not self.gate.admit():
            logger.debug("connection refused: too many connections waiting for a request head")
            self._answer(503, "expected fewer connections waiting for a request head; retry shortly")
            return
        self._pending = True
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        self._release()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return  # answered or refused already: nothing more will be answered
        self._unset_keepalive_if_required()
        limit = self.limits.max_size
        start, end = 0, len(data)
        view = memoryview(data)
        while start < end:
            if self._in_body:
                # Bodies are bounded by the application (max_body_size), as they arrive.
                stop = end
            else:
                stop = min(end, start + limit - self._head_bytes)
                self._head_bytes += stop - start
                if not self._line_done and data.find(b"\n", start, stop) >= 0:
                    self._line_done = True
            heads = self._heads
            if not self._feed(view[start:stop]):
                return
            start = stop
            if not self._in_body and heads == self._heads and self._head_bytes >= limit:
                if self._line_done:
                    self._reject(431, f"expected a request head of at most {limit} bytes, got more")
                else:
                    self._reject(414, f"expected a request line of at most {limit} bytes, got more")
                return
        # Bytes of an unfinished head, even blank lines (which start no message but stop uvicorn's
        # keep-alive timer): the head must now be finished in time.
        if self._head_timer is None and not self._in_body and (self._head_started or self._head_bytes):
            self._arm_head_timer()

    def _feed(self, data: memoryview) -> bool:
        """Parses ``data``; False when the connection is answered and closing (or upgraded)."""
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _HeadRejected):
                self._reject(cause.status, cause.detail)
            else:
                self._reject(400, "expected a valid HTTP request")
            return False
        except httptools.HttpParserError:
            self._reject(400, "expected a valid HTTP request")
            return False
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return False
        return True

    def on_response_complete(self) -> None:
        pipelined = bool(self.pipeline)
        super().on_response_complete()
        if not pipelined and not self.transport.is_closing() and not self._pending:
            # Idle until the next head (uvicorn's keep-alive timeout bounds how long).
            self._pending = True
            self.gate.hold()

    # -- parser callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._head_started = True
        super().on_message_begin()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.limits.max_headers:
            raise _HeadRejected(431, f"expected at most {self.limits.max_headers} request headers, got more")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_body = True
        self._head_started = False
        self._heads += 1
        self._disarm_head_timer()
        self._release()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_body = False
        self._head_bytes = 0
        self._header_count = 0
        self._line_done = False
        super().on_message_complete()

    # -- helpers ----------------------------------------------------------------------------

    def _release(self) -> None:
        if self._pending:
            self._pending = False
            self.gate.leave()

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.limits.timeout, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            logger.debug("closed a connection without a complete head after %s s", self.limits.timeout)
            self.transport.close()

    def _reject(self, status: int, detail: str) -> None:
        logger.debug("rejected a request head (%d): %s", status, detail)
        self._answer(status, detail)

    def _answer(self, status: int, detail: str) -> None:
        """Answers ``status`` and closes; unread bytes are dropped (the kernel resets a flood)."""
        if self.cycle is not None and not self.cycle.response_complete:
            # A response is under way (a pipelined head went wrong): an answer would corrupt it.
            self.transport.close()
            return
        body = json.dumps({"detail": detail}).encode()
        content = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend(
            [
                b"content-type: application/json\r\n",
                b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
                b"connection: close\r\n\r\n",
                body,
            ]
        )
        self.transport.write(b"".join(content))
        self.transport.close()


def limited_protocol(limits: HeadLimits) -> type[HeadLimitedProtocol]:
    """A `HeadLimitedProtocol` class bound to ``limits`` and a pending-connection count of its own.

    uvicorn instantiates the class it is given for every connection, so the count shared by
    one server's connections lives on a class made for that server.

    Example:
        >>> cls = limited_protocol(HeadLimits(max_size=8192, max_headers=50, timeout=5.0, max_pending=16))
        >>> cls.gate.limit, cls.limits.max_size
        (16, 8192)
    """
    gate = PendingGate(limits.max_pending)

    class BoundHeadLimitedProtocol(HeadLimitedProtocol):
        pass

    BoundHeadLimitedProtocol.limits = limits
    BoundHeadLimitedProtocol.gate = gate
    return BoundHeadLimitedProtocol
