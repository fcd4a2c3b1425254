"""HTTP clients of the server benchmarks, on raw asyncio sockets (no client library in the way).

* `Viewer`: one MJPEG viewer. In counting mode it only counts boundary lines and bytes (cheap
  enough to run a hundred in the benchmark process); in parsing mode it also de-chunks the body,
  parses every part and records when its last byte arrived together with its ``X-Timestamp``.
* `EventViewer`: a server-sent-events client (``/cameras/{id}/detections``), recording events.
* `HttpPoller`: GET requests on one keep-alive connection, for polling ``/health`` and ``/stats``
  at a fine interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from espdetect.mjpeg import MultipartParser

__all__ = ["ChunkDecoder", "EventViewer", "HttpPoller", "PartRecord", "Viewer", "open_stream"]

_READ = 1 << 18


class ResponseError(Exception):
    """The server answered something other than 200, or closed the connection early."""


def _host_port(base_url: str) -> tuple[str, int]:
    parts = urlsplit(base_url)
    return parts.hostname or "127.0.0.1", parts.port or 80


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    raw = await reader.readuntil(b"\r\n\r\n")
    lines = raw.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return status, headers


async def open_stream(
    base_url: str, path: str, timeout: float = 10.0
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, dict[str, str]]:
    """Connect, send ``GET path`` and read the response head; raises `ResponseError` unless 200."""
    host, port = _host_port(base_url)

    async def go() -> tuple[asyncio.StreamReader, asyncio.StreamWriter, dict[str, str]]:
        reader, writer = await asyncio.open_connection(host, port, limit=_READ)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: */*\r\n\r\n".encode())
        try:
            status, headers = await _read_head(reader)
        except BaseException:
            writer.close()
            raise
        if status != 200:
            writer.close()
            raise ResponseError(f"expected 200 from GET {path}, got {status}")
        return reader, writer, headers

    return await asyncio.wait_for(go(), timeout)


class ChunkDecoder:
    """Incremental HTTP/1.1 chunked transfer decoding: feed raw bytes, get body bytes.

    Example:
        >>> ChunkDecoder().feed(b"3\\r\\nabc\\r\\n0\\r\\n\\r\\n")
        b'abc'
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._left = -1  # -1: a size line is due; >= 0: body bytes of the current chunk left
        self.finished = False

    def feed(self, data: bytes) -> bytes:
        self._buf += data
        out = bytearray()
        while self._buf and not self.finished:
            if self._left < 0:
                eol = self._buf.find(b"\r\n")
                if eol < 0:
                    break
                size = int(bytes(self._buf[:eol]).split(b";")[0].strip() or b"0", 16)
                del self._buf[: eol + 2]
                if size == 0:
                    self.finished = True
                    break
                self._left = size
            take = min(self._left, len(self._buf))
            out += self._buf[:take]
            del self._buf[:take]
            self._left -= take
            if self._left == 0:
                if len(self._buf) < 2:
                    self._left = 0
                    break
                del self._buf[:2]
                self._left = -1
        return bytes(out)


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
            reader, writer, headers = await open_stream(self.base_url, self.path, self.connect_timeout)
        except (OSError, asyncio.TimeoutError, ResponseError, asyncio.IncompleteReadError) as exc:
            self.error = f"connect: {exc!r}"
            self.ended = True
            return
        self._writer = writer
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        marker = f"--{self.boundary}\r\n".encode()
        tail = b""
        decoder = ChunkDecoder() if (self.parse and chunked) else None
        parser = MultipartParser(self.boundary, 16 * 1024 * 1024) if self.parse else None
        try:
            while True:
                data = await reader.read(_READ)
                if not data:
                    self.ended = True
                    return
                self.bytes += len(data)
                window = tail + data
                found = window.count(marker)
                if found:
                    self.frames += found
                    if self.first_frame is None:
                        self.first_frame = time.time()
                tail = window[-(len(marker) - 1) :]
                if parser is not None:
                    body = decoder.feed(data) if decoder is not None else data
                    parts = parser.feed(body)
                    if parts:
                        now = time.time()
                        for part in parts:
                            self.parts.append(PartRecord(now, part.timestamp, len(part.body)))
                        self._got_frame.set()
                elif found:
                    self._got_frame.set()
        except (OSError, asyncio.IncompleteReadError) as exc:
            self.error = f"read: {exc!r}"
            self.ended = True

    async def wait_frame(self, timeout: float) -> bool:
        """Whether a (complete, when parsing) part arrived within ``timeout`` seconds."""
        try:
            await asyncio.wait_for(self._got_frame.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def close(self) -> None:
        """Hang up (the socket closes at once) and stop the reading task."""
        if self._writer is not None:
            self._writer.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


@dataclass
class EventRecord:
    received: float
    data: dict[str, Any]


@dataclass
class EventViewer:
    """A server-sent events client; each ``data:`` line's JSON lands in ``events``."""

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
            reader, writer, headers = await open_stream(self.base_url, self.path)
        except (OSError, asyncio.TimeoutError, ResponseError, asyncio.IncompleteReadError) as exc:
            self.error = f"connect: {exc!r}"
            return
        self._writer = writer
        decoder = ChunkDecoder() if "chunked" in headers.get("transfer-encoding", "").lower() else None
        buf = b""
        try:
            while True:
                data = await reader.read(_READ)
                if not data:
                    return
                buf += decoder.feed(data) if decoder is not None else data
                while b"\n\n" in buf:
                    block, buf = buf.split(b"\n\n", 1)
                    for line in block.split(b"\n"):
                        if line.startswith(b"data: "):
                            self.events.append(EventRecord(time.time(), json.loads(line[6:])))
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            self.error = f"read: {exc!r}"

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


class HttpPoller:
    """GET requests over one keep-alive connection (reconnecting when the server closes it).

    Example:
        >>> poller = HttpPoller("http://127.0.0.1:8000")  # doctest: +SKIP
        >>> status, body = await poller.get("/health")  # doctest: +SKIP
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
                status, headers = await _read_head(reader)
                length = int(headers.get("content-length", "0"))
                body = await reader.readexactly(length)
                if headers.get("connection", "").lower() == "close":
                    await self.close()
                return status, body
            except (OSError, asyncio.IncompleteReadError):
                await self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    async def close(self) -> None:
        if self._conn is not None:
            self._conn[1].close()
            self._conn = None
