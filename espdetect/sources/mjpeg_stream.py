"""`MjpegStreamSource`: frames from an ESP32-CAM ``/stream`` (or any multipart MJPEG over HTTP)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import deque
from typing import Literal

import anyio
import httpx

from espdetect.exceptions import EndOfStream, SourceUnavailable
from espdetect.frame import Frame
from espdetect.mjpeg import DEFAULT_MAX_PART_SIZE, MultipartParser, Part, boundary_from_content_type
from espdetect.sources._http import AttemptFailed, HttpSource, snippet
from espdetect.sources._retry import Backoff, Retry
from espdetect.sources.base import FrameSource

__all__ = ["MjpegStreamSource"]

logger = logging.getLogger(__name__)

# A boundary line in a body whose Content-Type did not name one: "--" + RFC 2046 bchars.
_BOUNDARY_LINE = re.compile(rb"(?:^|\n)--([0-9A-Za-z'()+_,\-./:=?]{1,70})\r?\n")
_SNIPPET_BYTES = 200

DisconnectKind = Literal["eof", "error", "stall", "connect"]


class _Disconnect(AttemptFailed[DisconnectKind]):
    """Ends one upstream session; ``kind`` decides the counters and what reconnect=False raises."""


class MjpegStreamSource(HttpSource):
    """Frames from a multipart MJPEG HTTP stream, with one upstream connection and auto-reconnect.

    Built for the ESP32-CAM CameraWebServer ``/stream`` (both the current and the pre-2020
    framing), which serves a single client, ends streams without a terminator and reboots
    on brownouts. A background task reads the stream from the first ``read()`` on and keeps
    the newest ``buffer`` frames; older ones are dropped (counted in ``stats.dropped``) so a
    slow consumer never makes the camera wait or the memory grow. Frame ``seq`` numbers are
    given on arrival, so a gap means dropped frames.

    Only complete JPEGs (SOI..EOI) become frames; anything else is counted (``stats.corrupt``,
    ``stats.oversize``, ...) and skipped: the source never invents a frame. The connection is
    re-opened with capped exponential backoff after EOF, refused/reset connections, HTTP
    errors, non-multipart replies (an HTML error page) and stalls (no complete frame for
    ``stall_timeout`` seconds). The backoff resets after every good frame, so a rebooted
    camera is picked up again within ``backoff_max`` seconds of coming back.

    ``stats.frames`` counts complete frames received (dropped ones included) and ``stats.bytes``
    the body bytes received from the camera (framing included).

    Args:
        url: the stream URL, e.g. ``http://192.168.4.1:81/stream``.
        source_id: name used in frames and logs; defaults to the URL's host:port.
        max_part_size: parts larger than this are dropped unread.
        stall_timeout: seconds without a complete frame before the connection is recycled.
        connect_timeout: seconds to connect and receive the response head.
        backoff_initial: first reconnect delay in seconds (doubles per failure).
        backoff_max: the largest reconnect delay in seconds.
        reconnect: when False, the first failure raises instead (`SourceUnavailable`, or
            `EndOfStream` when the camera ended the stream).
        client: an ``httpx.AsyncClient`` to use (not closed by this source); by default the
            source creates and closes its own.
        buffer: how many unread frames to keep.

    Example:
        >>> async def grab(url: str) -> Frame:  # doctest: +SKIP
        ...     async with MjpegStreamSource(url, stall_timeout=3.0) as src:
        ...         return await src.read()
    """

    def __init__(
        self,
        url: str,
        *,
        source_id: str | None = None,
        max_part_size: int = DEFAULT_MAX_PART_SIZE,
        stall_timeout: float = 5.0,
        connect_timeout: float = 5.0,
        backoff_initial: float = 0.1,
        backoff_max: float = 2.0,
        reconnect: bool = True,
        client: httpx.AsyncClient | None = None,
        buffer: int = 2,
    ) -> None:
        retry = Retry(Backoff(backoff_initial, backoff_max), logger, "reconnecting")
        super().__init__(url, source_id, retry, client=client, reconnect=reconnect)
        if not stall_timeout > 0:
            raise ValueError(f"stall_timeout must be > 0 seconds, got {stall_timeout!r}")
        if not connect_timeout > 0:
            raise ValueError(f"connect_timeout must be > 0 seconds, got {connect_timeout!r}")
        if buffer < 1:
            raise ValueError(f"buffer must be at least 1 frame, got {buffer!r}")
        # Validates the size early instead of on the first connection.
        MultipartParser("x", max_part_size)
        # Credentials go in an Authorization header instead: httpx logs request URLs at INFO.
        self._request_url, self._auth = _split_credentials(url)
        self.max_part_size = max_part_size
        self.stall_timeout = stall_timeout
        self.connect_timeout = connect_timeout
        self._frames: deque[Frame] = deque(maxlen=buffer)
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._terminal: BaseException | None = None
        self._opened_once = False

    # -- FrameSource ----------------------------------------------------------------------

    async def read(self) -> Frame:
        """The next frame (oldest buffered first); waits through reconnects.

        Cancelling a pending ``read()`` is safe: the connection keeps running and a later
        ``read()`` continues with the following frame.

        Raises:
            EndOfStream: the source was closed, or (reconnect=False) the camera ended the stream.
            SourceUnavailable: (reconnect=False) the camera could not be reached or misbehaved.
        """
        while True:
            if self._closed:
                raise EndOfStream(f"{self.source_id}: source closed")
            if self._frames:
                return self._frames.popleft()
            if self._terminal is not None:
                raise self._terminal
            if self._task is None:
                self._task = asyncio.create_task(self._run(), name=f"mjpeg-{self.source_id}")
            self._wakeup.clear()
            await self._wakeup.wait()

    async def aclose(self) -> None:
        """Stop reading and close the upstream TCP connection (the camera serves one client)."""
        self._closed = True
        self._wakeup.set()
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._frames.clear()
        await super().aclose()

    # -- reader task ----------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while True:
                try:
                    await self._session()
                    raise _Disconnect("eof", "the camera ended the stream")
                except _Disconnect as exc:
                    outcome = exc
                except httpx.RemoteProtocolError as exc:
                    # The firmware never sends the final chunk: EOF mid-body is how streams end.
                    outcome = _Disconnect("eof", f"the camera closed the connection ({exc})")
                except (httpx.TransportError, OSError) as exc:
                    outcome = _Disconnect("error", f"connection lost: {_describe(exc)}")
                finally:
                    self.stats.connected = False
                self._account(outcome)
                if not self.reconnect:
                    self._terminal = (
                        EndOfStream(f"{self.source_id}: {outcome.reason}")
                        if outcome.kind == "eof"
                        else SourceUnavailable(self._request_url, outcome.reason)
                    )
                    return
                await asyncio.sleep(self._retry.next_delay(self.source_id, outcome.reason))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug, not a camera problem: surface it instead of looping
            logger.exception("%s: stream reader failed", self.source_id)
            self._terminal = SourceUnavailable(self._request_url, f"stream reader failed: {exc!r}")
        finally:
            self._wakeup.set()

    def _account(self, outcome: _Disconnect) -> None:
        if outcome.kind == "connect":
            self.stats.connect_failures += 1
            logger.debug("%s: connection attempt failed: %s", self.source_id, outcome.reason)
        else:
            if outcome.kind == "stall":
                self.stats.stalls += 1
            logger.info("%s: disconnected: %s", self.source_id, outcome.reason)

    async def _session(self) -> None:
        """One connection: open, check the reply, parse frames until it ends (always by raising)."""
        timeout = httpx.Timeout(
            connect=self.connect_timeout, read=None, write=self.connect_timeout, pool=self.connect_timeout
        )
        headers = {"Accept": "multipart/x-mixed-replace, */*;q=0.1"}
        async with contextlib.AsyncExitStack() as stack:
            response: httpx.Response | None = None
            # httpx's read timeout would also cut the body; bound only the head here (a busy
            # ESP32 keeps a second client waiting in its backlog, never answering).
            with anyio.move_on_after(self.connect_timeout):
                try:
                    request = self._get_client().stream(
                        "GET", self._request_url, headers=headers, timeout=timeout, auth=self._auth
                    )
                    response = await stack.enter_async_context(request)
                except (httpx.TransportError, OSError) as exc:
                    raise _Disconnect("connect", f"cannot connect: {_describe(exc)}") from exc
            if response is None:
                raise _Disconnect("connect", f"no response within {self.connect_timeout:g} s")
            boundary = await self._check_response(response)
            self.stats.connected = True
            if self._opened_once:
                self.stats.reconnects += 1
            self._opened_once = True
            logger.info("%s: connected to %s", self.source_id, self._request_url)
            await self._read_body(response, boundary)

    async def _check_response(self, response: httpx.Response) -> str | None:
        content_type = response.headers.get("content-type", "")
        if response.status_code != 200:
            body = await _body_start(response)
            raise _Disconnect("connect", f"expected HTTP 200, got {response.status_code}: {snippet(body)!r}")
        if content_type and not content_type.strip().lower().startswith("multipart/"):
            body = await _body_start(response)
            raise _Disconnect(
                "connect",
                f"expected multipart/x-mixed-replace, got {content_type!r}: {snippet(body)!r}",
            )
        return boundary_from_content_type(content_type) if content_type else None

    async def _read_body(self, response: httpx.Response, boundary: str | None) -> None:
        parser = MultipartParser(boundary, self.max_part_size) if boundary else None
        sniffed = bytearray()
        synced = _ParserCounters()
        with anyio.CancelScope(deadline=anyio.current_time() + self.stall_timeout) as watchdog:
            async for chunk in response.aiter_raw():
                if parser is None:
                    sniffed += chunk
                    parser = self._sniff_parser(sniffed)
                    if parser is None:
                        continue
                    chunk = bytes(sniffed)
                    sniffed.clear()
                got_frame = False
                for part in parser.feed(chunk):
                    got_frame |= self._deliver(part)
                synced.sync(parser, self)
                if got_frame:
                    watchdog.deadline = anyio.current_time() + self.stall_timeout
        if watchdog.cancelled_caught:
            raise _Disconnect("stall", f"no complete frame for {self.stall_timeout:g} s")

    def _sniff_parser(self, data: bytearray) -> MultipartParser | None:
        match = _BOUNDARY_LINE.search(data)
        if match is not None:
            boundary = match.group(1).decode("ascii")
            logger.info("%s: no boundary in Content-Type, found %r in the body", self.source_id, boundary)
            return MultipartParser(boundary, self.max_part_size)
        if len(data) > self.max_part_size:
            raise _Disconnect(
                "connect", f"expected a multipart boundary, none in the first {len(data)} bytes"
            )
        return None

    def _deliver(self, part: Part) -> bool:
        if not part.is_complete_jpeg:
            self.stats.corrupt += 1
            logger.debug(
                "%s: skipped a part that is not a complete JPEG (%d bytes)", self.source_id, len(part.body)
            )
            return False
        frame = Frame(
            seq=self._count_frame(), source_id=self.source_id, jpeg=part.body, camera_timestamp=part.timestamp
        )
        if len(self._frames) == self._frames.maxlen:
            self.stats.dropped += 1
        self._frames.append(frame)
        self._wakeup.set()
        if self.backoff.attempt:
            self._retry.reset()
        return True


class _ParserCounters:
    """Adds what a connection's parser counted since the last sync to the source's stats."""

    def __init__(self) -> None:
        self.bytes_in = self.garbage = self.oversize = self.mismatch = 0

    def sync(self, parser: MultipartParser, source: FrameSource) -> None:
        p, s = parser.stats, source.stats
        s.bytes += p.bytes_in - self.bytes_in
        s.garbage_bytes += p.garbage_bytes - self.garbage
        s.oversize += p.oversize - self.oversize
        s.length_mismatch += p.length_mismatch - self.mismatch
        self.bytes_in, self.garbage, self.oversize, self.mismatch = (
            p.bytes_in,
            p.garbage_bytes,
            p.oversize,
            p.length_mismatch,
        )


async def _body_start(response: httpx.Response) -> bytes:
    """The first bytes of an error reply's body, read for a second at most (it may never end)."""
    data = bytearray()
    with anyio.move_on_after(1.0), contextlib.suppress(httpx.HTTPError):
        async for chunk in response.aiter_raw():
            data += chunk
            if len(data) >= _SNIPPET_BYTES:
                break
    return bytes(data[:_SNIPPET_BYTES])


def _split_credentials(url: str) -> tuple[str, httpx.BasicAuth | httpx._client.UseClientDefault]:
    parsed = httpx.URL(url)
    if not parsed.username and not parsed.password:
        return url, httpx.USE_CLIENT_DEFAULT
    bare = str(parsed.copy_with(username=None, password=None))
    return bare, httpx.BasicAuth(parsed.username, parsed.password)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
