"""HTTP clients of the benchmarks, on raw sockets (no client library between the server and the figures).

asyncio, many in one process (`bench_server`):

* `Viewer`: one MJPEG viewer. In counting mode it only counts boundary lines and bytes (cheap
  enough to run a hundred in the benchmark process); in parsing mode it also parses every part
  and records when its last byte arrived together with its ``X-Timestamp``;
* `EventViewer`: a server-sent-events client (``/cameras/{id}/detections``), recording events;
* `HttpPoller`: GET requests on one keep-alive connection, for polling ``/health`` and ``/stats``;
* `open_response`: a request whose response head is read, whatever its status (viewer storms).

Blocking, one per thread (`soak`, `bench_reliability`): `watch` reads a stream until told to stop,
optionally throttled; `Probe` keeps one watching (reconnecting) for a whole run.

Both kinds read bodies with `PartReader` (`ChunkDecoder` + espdetect's `MultipartParser`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from espdetect.mjpeg import MultipartParser, Part
from espdetect.profiling.capacity_viewers import ChunkDecoder

__all__ = [
    "ChunkDecoder",
    "EventRecord",
    "EventViewer",
    "Head",
    "HttpPoller",
    "PartReader",
    "PartRecord",
    "Probe",
    "ResponseError",
    "Viewer",
    "Watch",
    "open_response",
    "open_stream",
    "parse_head",
    "request",
    "reset",
    "watch",
]

logger = logging.getLogger(__name__)

_READ = 1 << 18
#: Largest part a viewer accepts: well above any VGA JPEG, so none is dropped for its size.
_MAX_PART = 16 * 1024 * 1024


class ResponseError(Exception):
    """The server answered something other than 200, or closed the connection early."""


# -- HTTP/1.1 framing --------------------------------------------------------------------------------


def request(path: str, host: str = "127.0.0.1") -> bytes:
    """A ``GET path`` request head.

    Example:
        >>> request("/health")
        b'GET /health HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nAccept: */*\\r\\n\\r\\n'
    """
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: */*\r\n\r\n".encode()


class Head(NamedTuple):
    """A response's status and headers (lower-case names)."""

    status: int
    headers: dict[str, str]

    @property
    def chunked(self) -> bool:
        return "chunked" in self.headers.get("transfer-encoding", "").lower()


def parse_head(raw: bytes) -> Head:
    """The status line and headers of a response head (with or without the blank line).

    Example:
        >>> parse_head(b"HTTP/1.1 503 Service Unavailable\\r\\nRetry-After: 5\\r\\n\\r\\n")
        Head(status=503, headers={'retry-after': '5'})
    """
    lines = raw.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return Head(int(lines[0].split()[1]), headers)


def _host_port(base_url: str) -> tuple[str, int]:
    parts = urlsplit(base_url)
    return parts.hostname or "127.0.0.1", parts.port or 80


class PartReader:
    """The MJPEG parts a response body completes as it arrives (de-chunked first when chunked).

    Example:
        >>> body = b"--B\\r\\nContent-Length: 4\\r\\nX-Timestamp: 1.5\\r\\n\\r\\n\\xff\\xd8\\xff\\xd9\\r\\n"
        >>> [p.timestamp for p in PartReader("B", chunked=False).feed(body)]
        [1.5]
    """

    def __init__(self, boundary: str, *, chunked: bool) -> None:
        self._dechunk = ChunkDecoder() if chunked else None
        self._parser = MultipartParser(boundary, _MAX_PART)

    def feed(self, data: bytes) -> list[Part]:
        return self._parser.feed(self._dechunk.feed(data) if self._dechunk is not None else data)


# -- asyncio clients ---------------------------------------------------------------------------------


async def open_response(
    base_url: str, path: str, timeout: float = 10.0
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, Head]:
    """Connect, send ``GET path`` and read the response head, whatever its status."""
    host, port = _host_port(base_url)

    async def go() -> tuple[asyncio.StreamReader, asyncio.StreamWriter, Head]:
        reader, writer = await asyncio.open_connection(host, port, limit=_READ)
        writer.write(request(path, f"{host}:{port}"))
        try:
            head = parse_head(await reader.readuntil(b"\r\n\r\n"))
        except BaseException:
            writer.close()
            raise
        return reader, writer, head

    return await asyncio.wait_for(go(), timeout)


async def open_stream(
    base_url: str, path: str, timeout: float = 10.0
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, Head]:
    """`open_response`, raising `ResponseError` unless the status is 200."""
    reader, writer, head = await open_response(base_url, path, timeout)
    if head.status != 200:
        writer.close()
        raise ResponseError(f"expected 200 from GET {path}, got {head.status}")
    return reader, writer, head


#: What connecting or reading a stream may raise; a viewer records it instead.
_STREAM_ERRORS = (OSError, asyncio.TimeoutError, ResponseError, asyncio.IncompleteReadError)


@dataclass
class PartRecord:
    """One MJPEG part as a parsing viewer saw it."""

    #: ``time.time()`` when the part's last byte had been read.
    received: float
    #: The part's X-Timestamp (the server's Unix arrival time of the camera frame).
    timestamp: float | None
    size: int


@dataclass
class Viewer:
    """One MJPEG viewer of ``base_url + path``; `start` connects, `close` hangs up.

    ``frames`` counts boundary lines (parts begun), ``bytes`` what was read. With
    ``parse=True`` every complete part is also recorded in ``parts``.

    Example:
        >>> viewer = Viewer("http://127.0.0.1:8000", "/cameras/cam/detect", "espdetectframe")
        >>> await viewer.start(); await viewer.wait_frame(10.0)  # doctest: +SKIP
        True
    """

    base_url: str
    path: str
    boundary: str
    parse: bool = False
    connect_timeout: float = 10.0
    frames: int = 0
    bytes: int = 0
    first_frame: float | None = None
    error: str | None = None
    parts: list[PartRecord] = field(default_factory=list)
    ended: bool = False
    _writer: asyncio.StreamWriter | None = None
    _task: asyncio.Task[None] | None = None
    _got_frame: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        """Connect and start reading in a task (errors end up in ``error``, never raised)."""
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            reader, writer, head = await open_stream(self.base_url, self.path, self.connect_timeout)
        except _STREAM_ERRORS as exc:
            self.error = f"connect: {exc!r}"
            self.ended = True
            return
        self._writer = writer
        try:
            await self._read(reader, head)
        except (OSError, asyncio.IncompleteReadError) as exc:
            self.error = f"read: {exc!r}"
        self.ended = True

    async def _read(self, reader: asyncio.StreamReader, head: Head) -> None:
        marker = f"--{self.boundary}\r\n".encode()
        tail = b""
        parts = PartReader(self.boundary, chunked=head.chunked) if self.parse else None
        while data := await reader.read(_READ):
            self.bytes += len(data)
            # Boundary lines split across two reads are found in the previous read's tail.
            window = tail + data
            found = window.count(marker)
            if found:
                self.frames += found
                if self.first_frame is None:
                    self.first_frame = time.time()
            tail = window[-(len(marker) - 1) :]
            if parts is not None:
                complete = parts.feed(data)
                if complete:
                    now = time.time()
                    self.parts += [PartRecord(now, p.timestamp, len(p.body)) for p in complete]
                    self._got_frame.set()
            elif found:
                self._got_frame.set()

    async def wait_frame(self, timeout: float) -> bool:
        """Whether a (complete, when parsing) part arrived within ``timeout`` seconds."""
        try:
            await asyncio.wait_for(self._got_frame.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def close(self) -> None:
        """Hang up (the socket closes at once) and stop the reading task."""
        await _hang_up(self._writer, self._task)


async def _hang_up(writer: asyncio.StreamWriter | None, task: asyncio.Task[None] | None) -> None:
    if writer is not None:
        writer.close()
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


@dataclass
class EventRecord:
    """One server-sent event: when it arrived and its ``data:`` JSON."""

    received: float
    data: dict[str, Any]


@dataclass
class EventViewer:
    """A server-sent events client; each ``data:`` line's JSON lands in ``events``.

    Example:
        >>> events = EventViewer("http://127.0.0.1:8000", "/cameras/cam/detections")  # doctest: +SKIP
        >>> await events.start()  # doctest: +SKIP
    """

    base_url: str
    path: str
    events: list[EventRecord] = field(default_factory=list)
    error: str | None = None
    _writer: asyncio.StreamWriter | None = None
    _task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            reader, writer, head = await open_stream(self.base_url, self.path)
        except _STREAM_ERRORS as exc:
            self.error = f"connect: {exc!r}"
            return
        self._writer = writer
        decoder = ChunkDecoder() if head.chunked else None
        buf = b""
        try:
            while data := await reader.read(_READ):
                buf += decoder.feed(data) if decoder is not None else data
                while b"\n\n" in buf:
                    block, buf = buf.split(b"\n\n", 1)
                    for line in block.split(b"\n"):
                        if line.startswith(b"data: "):
                            self.events.append(EventRecord(time.time(), json.loads(line[6:])))
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            self.error = f"read: {exc!r}"

    async def close(self) -> None:
        await _hang_up(self._writer, self._task)


class HttpPoller:
    """GET requests over one keep-alive connection (reconnecting when the server closes it).

    Example:
        >>> poller = HttpPoller("http://127.0.0.1:8000")  # doctest: +SKIP
        >>> (await poller.json("/health"))["viewers"]  # doctest: +SKIP
        0
    """

    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        self.host, self.port = _host_port(base_url)
        self.timeout = timeout
        self._conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def get(self, path: str) -> tuple[int, bytes]:
        return await asyncio.wait_for(self._get(path), self.timeout)

    async def json(self, path: str) -> Any:
        status, body = await self.get(path)
        if status != 200:
            raise ResponseError(f"expected 200 from GET {path}, got {status}: {body[:200]!r}")
        return json.loads(body)

    async def _get(self, path: str) -> tuple[int, bytes]:
        for attempt in (0, 1):
            if self._conn is None:
                self._conn = await asyncio.open_connection(self.host, self.port, limit=_READ)
            reader, writer = self._conn
            try:
                writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n\r\n".encode())
                head = parse_head(await reader.readuntil(b"\r\n\r\n"))
                body = await reader.readexactly(int(head.headers.get("content-length", "0")))
                if head.headers.get("connection", "").lower() == "close":
                    await self.close()
                return head.status, body
            except (OSError, asyncio.IncompleteReadError):
                # The server closed the idle keep-alive connection: one retry on a new one.
                await self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    async def close(self) -> None:
        if self._conn is not None:
            self._conn[1].close()
            self._conn = None


# -- blocking clients --------------------------------------------------------------------------------


def reset(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0), the way a crashed client leaves."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@dataclass
class Watch:
    """What one viewing session saw."""

    status: int = 0
    parts: int = 0
    #: (receive time, latency ms from the part's X-Timestamp) per part.
    frames: list[tuple[float, float]] = field(default_factory=list)
    retry_after: str = ""


def watch(
    port: int,
    path: str,
    until: Callable[[], bool],
    *,
    boundary: str = "espdetectframe",
    on_frame: Callable[[float, float], None] | None = None,
    rate: int | None = None,
    timeout: float = 10.0,
) -> tuple[Watch, socket.socket]:
    """Open ``path`` and read parts until ``until()`` is true or the stream ends; the socket stays open.

    ``rate`` throttles reading to that many bytes per second (a slow viewer). Latency is the
    receive time minus the part's X-Timestamp (NaN without one); SSE paths are read, not parsed.

    Example:
        >>> seen, sock = watch(8000, "/cameras/cam/stream", lambda: False)  # doctest: +SKIP
    """
    result = Watch()
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.sendall(request(path))
    # Short reads so that ``until`` is checked often on a quiet stream.
    sock.settimeout(0.25)
    buffered = b""
    parts: PartReader | None = None
    step = 65536 if rate is None else max(1, rate // 10)
    while not until():
        try:
            data = sock.recv(step)
        except TimeoutError:
            continue
        except OSError:
            break
        if not data:
            break
        if parts is None:
            buffered += data
            if b"\r\n\r\n" not in buffered:
                continue
            raw, _, data = buffered.partition(b"\r\n\r\n")
            head = parse_head(raw)
            result.status, result.retry_after = head.status, head.headers.get("retry-after", "")
            if head.status != 200:
                break
            parts = PartReader(boundary, chunked=head.chunked)
        if not path.endswith("detections"):
            for part in parts.feed(data):
                stamp = part.timestamp
                latency = (time.time() - stamp) * 1000.0 if stamp is not None else float("nan")
                result.parts += 1
                result.frames.append((time.monotonic(), latency))
                if on_frame is not None:
                    on_frame(time.monotonic(), latency)
        if rate is not None:
            time.sleep(len(data) / rate)
    return result, sock


class Probe:
    """A viewer that stays connected for a whole run on its own thread (reconnecting if the server ends it).

    Example:
        >>> stop = threading.Event()
        >>> probe = Probe(8000, "/cameras/cam/stream", stop)  # doctest: +SKIP
        >>> probe.window(t0, t1)  # (frame times, latencies) between t0 and t1  # doctest: +SKIP
    """

    def __init__(
        self, port: int, path: str, closing: threading.Event, leave: threading.Event | None = None
    ) -> None:
        self.port = port
        self.path = path
        #: Set: do not reconnect any more. ``leave`` set: also close the current stream.
        self.closing = closing
        self.leave = leave
        self.lock = threading.Lock()
        self.times: list[float] = []
        self.latencies: list[float] = []
        self.reconnects = 0
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"probe {path}")
        self.thread.start()

    def _frame(self, t: float, latency: float) -> None:
        with self.lock:
            self.times.append(t)
            self.latencies.append(latency)

    def _run(self) -> None:
        while not self.closing.is_set():
            try:
                # Without ``leave``, reads until the stream ends: at the latest when the server stops.
                until = self.leave.is_set if self.leave is not None else lambda: False
                _, sock = watch(self.port, self.path, until, on_frame=self._frame)
                sock.close()
            except OSError as exc:
                if not self.closing.is_set():
                    logger.warning("probe %s: %r", self.path, exc)
            if not self.closing.is_set():
                self.reconnects += 1
                self.closing.wait(0.5)

    def window(self, start: float, end: float) -> tuple[list[float], list[float]]:
        """(frame times, latencies) of the frames received in ``[start, end)`` (monotonic)."""
        with self.lock:
            pairs = [(t, lat) for t, lat in zip(self.times, self.latencies, strict=True) if start <= t < end]
        return [p[0] for p in pairs], [p[1] for p in pairs]

    def first_after(self, t0: float) -> float | None:
        """The time of the first frame at or after ``t0`` (monotonic), if any yet."""
        with self.lock:
            return next((t for t in self.times if t >= t0), None)
