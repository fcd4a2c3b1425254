"""The viewers of a capacity run: raw-socket HTTP clients that count what they receive.

Each `StreamViewer` holds one connection to a camera's stream (server-sent detections, annotated
or raw MJPEG) and records when each event or frame arrived and its latency: the arrival time of
the camera frame at the server (the SSE event's ``timestamp``, the MJPEG part's ``X-Timestamp``,
both Unix time) to the moment its last byte was read here. Plain sockets rather than an HTTP
library keep the clients' own CPU small beside the server they measure.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from espdetect.mjpeg import DEFAULT_MAX_PART_SIZE, MultipartParser, boundary_from_content_type

__all__ = ["PATHS", "ChunkDecoder", "StreamViewer", "ViewerKind"]

#: What a capacity run's viewers watch: server-sent detections, annotated or raw MJPEG.
ViewerKind = Literal["sse", "annotated", "raw"]

#: The server path of each kind of viewer, for a camera id.
PATHS: dict[str, str] = {
    "sse": "/cameras/{id}/detections",
    "annotated": "/cameras/{id}/detect",
    "raw": "/cameras/{id}/stream",
}

_READ = 1 << 16


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
                    break  # the chunk's CRLF has not arrived yet
                del self._buf[:2]
                self._left = -1
        return bytes(out)


@dataclass
class StreamViewer:
    """One viewer of ``base_url`` watching camera ``camera`` as ``kind``; `start`, then `close`.

    ``received`` holds the Unix time each event or frame was read completely, ``latency_ms``
    its latency (NaN when the server sent no timestamp), ``detect_ms`` the detection time
    each server-sent event reports. Errors end up in ``error``, never raised.

    Example:
        >>> viewer = StreamViewer("http://127.0.0.1:8000", "cam1", "sse")
        >>> await viewer.start(); await viewer.wait_connected(10.0)  # doctest: +SKIP
        True
    """

    base_url: str
    camera: str
    kind: ViewerKind
    connect_timeout: float = 10.0
    received: list[float] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)
    detect_ms: list[float] = field(default_factory=list)
    error: str | None = None
    status: int | None = None
    _connected: asyncio.Event = field(default_factory=asyncio.Event)
    _writer: asyncio.StreamWriter | None = None
    _task: asyncio.Task[None] | None = None

    @property
    def path(self) -> str:
        return PATHS[self.kind].format(id=self.camera)

    async def start(self) -> None:
        """Connect and read in a task of the running loop."""
        self._task = asyncio.create_task(self._run(), name=f"viewer-{self.camera}-{self.kind}")

    async def wait_connected(self, timeout: float) -> bool:
        """Whether the server answered (with any status) within ``timeout`` seconds."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._connected.wait(), timeout)
        return self._connected.is_set()

    def count(self, start: float, end: float) -> int:
        """Events or frames read completely between ``start`` and ``end`` (Unix time)."""
        return bisect.bisect_left(self.received, end) - bisect.bisect_left(self.received, start)

    def window(self, start: float, end: float) -> tuple[list[float], list[float]]:
        """(latencies, detection times) of what was read between ``start`` and ``end``."""
        lo, hi = bisect.bisect_left(self.received, start), bisect.bisect_left(self.received, end)
        return self.latency_ms[lo:hi], self.detect_ms[lo:hi] if self.kind == "sse" else []

    async def close(self) -> None:
        """Hang up and stop reading."""
        if self._writer is not None:
            self._writer.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _run(self) -> None:
        parts = urlsplit(self.base_url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, limit=_READ), self.connect_timeout
            )
            self._writer = writer
            writer.write(f"GET {self.path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: */*\r\n\r\n".encode())
            raw_head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.connect_timeout)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            self.error = f"connect: {exc!r}"
            self._connected.set()
            return
        lines = raw_head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        self.status = int(lines[0].split()[1])
        self._connected.set()
        if self.status != 200:
            self.error = f"HTTP {self.status} from GET {self.path}"
            writer.close()
            return
        chunks = ChunkDecoder() if "chunked" in headers.get("transfer-encoding", "").lower() else None
        try:
            if self.kind == "sse":
                await self._read_events(reader, chunks)
            else:
                boundary = boundary_from_content_type(headers.get("content-type", "")) or "frame"
                await self._read_parts(reader, chunks, boundary)
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            self.error = f"read: {exc!r}"

    async def _read_events(self, reader: asyncio.StreamReader, chunks: ChunkDecoder | None) -> None:
        buf = b""
        while data := await reader.read(_READ):
            buf += chunks.feed(data) if chunks is not None else data
            if b"\n\n" not in buf:
                continue
            now = time.time()
            *blocks, buf = buf.split(b"\n\n")
            for block in blocks:
                for line in block.split(b"\n"):
                    if line.startswith(b"data:"):
                        event = json.loads(line[5:])
                        stamp = event.get("timestamp")
                        self.received.append(now)
                        self.latency_ms.append((now - stamp) * 1000.0 if stamp else float("nan"))
                        self.detect_ms.append(float(event.get("detect_ms") or float("nan")))

    async def _read_parts(
        self, reader: asyncio.StreamReader, chunks: ChunkDecoder | None, boundary: str
    ) -> None:
        parser = MultipartParser(boundary, DEFAULT_MAX_PART_SIZE)
        while data := await reader.read(_READ):
            done = parser.feed(chunks.feed(data) if chunks is not None else data)
            if done:
                now = time.time()
                for part in done:
                    stamp = part.timestamp
                    self.received.append(now)
                    self.latency_ms.append((now - stamp) * 1000.0 if stamp else float("nan"))
