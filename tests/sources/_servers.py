"""Real loopback servers that speak like an ESP32-CAM, and JPEG builders, for the source tests."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Literal

import cv2
import numpy as np

from espdetect.mjpeg import ESP32_STREAM_CONTENT_TYPE, esp32_legacy_part, esp32_part_pieces, http_chunk

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
Then = Literal["eof", "hang"]

STREAM_HEAD = (
    "HTTP/1.1 200 OK\r\n"
    f"Content-Type: {ESP32_STREAM_CONTENT_TYPE}\r\n"
    "Transfer-Encoding: chunked\r\n"
    "Access-Control-Allow-Origin: *\r\n"
    "X-Framerate: 60\r\n"
    "\r\n"
).encode("ascii")


def make_jpeg(i: int, size: tuple[int, int] = (32, 24), *, noise: bool = False) -> bytes:
    """A small, real JPEG whose bytes differ for every ``i``."""
    w, h = size
    img = np.full((h, w, 3), (i * 37 % 256, i * 91 % 256, i * 13 % 256), np.uint8)
    if noise:
        img = np.random.default_rng(i).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    cv2.putText(img, str(i), (1, h - 2), cv2.FONT_HERSHEY_PLAIN, 0.8, (255, 255, 255), 1)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return bytes(buf.tobytes())


def esp32_frame_bytes(jpeg: bytes, timestamp: float) -> bytes:
    """One frame exactly as the current firmware writes it: three HTTP chunks."""
    return b"".join(http_chunk(p) for p in esp32_part_pieces(jpeg, timestamp))


async def read_request(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


class ScriptedServer:
    """A loopback HTTP server that serves the n-th connection with the n-th script.

    The last script repeats for later connections. ``client_eofs`` counts connections whose
    client closed the socket while a script waited for it (``then="hang"``).
    """

    def __init__(self, scripts: Sequence[Script]) -> None:
        assert scripts
        self.scripts = list(scripts)
        self.connections = 0
        self.client_eofs = 0
        self.client_eof = asyncio.Event()
        self.requests: list[bytes] = []
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self, port: int = 0) -> ScriptedServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def url(self, path: str = "/stream") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def wait_for_client_close(self, reader: asyncio.StreamReader) -> None:
        """Block until the client closes its end (what the ESP32 would notice as a send failure)."""
        while await reader.read(65536):
            pass
        self.client_eofs += 1
        self.client_eof.set()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        script = self.scripts[min(self.connections, len(self.scripts) - 1)]
        self.connections += 1
        try:
            self.requests.append(await read_request(reader))
            await script(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass  # close() ends scripts that wait forever
        finally:
            writer.close()
            self._handlers.discard(task)

    # -- scripts ----------------------------------------------------------------------------

    def esp32_stream(
        self,
        jpegs: Sequence[bytes],
        *,
        then: Then = "hang",
        timestamp: float = 10.0,
        tail: bytes = b"",
    ) -> Script:
        """The current firmware: head, then three chunks per frame, then ``tail`` raw bytes."""

        async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(STREAM_HEAD)
            for i, jpeg in enumerate(jpegs):
                writer.write(esp32_frame_bytes(jpeg, timestamp + i / 10))
            writer.write(tail)
            await writer.drain()
            if then == "hang":
                await self.wait_for_client_close(reader)

        return script

    def raw(self, data: bytes, *, then: Then = "eof") -> Script:
        async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(data)
            await writer.drain()
            if then == "hang":
                await self.wait_for_client_close(reader)

        return script


ScriptFactory = Callable[[ScriptedServer], Sequence[Script]]


def http_response(status: str, content_type: str, body: bytes, extra: str = "") -> bytes:
    """A complete non-stream reply as esp_http_server's httpd_resp_send writes it."""
    head = f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    return head.encode("ascii") + body


def legacy_stream(jpegs: Sequence[bytes]) -> bytes:
    """Pre-2020 firmware: no leading boundary, no X-Timestamp, boundary after each JPEG."""
    body = b"".join(http_chunk(p) for jpeg in jpegs for p in esp32_legacy_part(jpeg))
    return STREAM_HEAD + body


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll a condition that no event signals (counters of another task)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


class ThreadedServer:
    """A `ScriptedServer` on its own event loop in a thread, for testing blocking APIs."""

    def __init__(self, make_scripts: ScriptFactory) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        server = ScriptedServer([lambda r, w: asyncio.sleep(0)])
        server.scripts = list(make_scripts(server))
        self.server = asyncio.run_coroutine_threadsafe(server.start(), self.loop).result(5)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


@contextlib.asynccontextmanager
async def serving(make_scripts: ScriptFactory) -> AsyncIterator[ScriptedServer]:
    """Start a `ScriptedServer` whose scripts may refer to the server itself."""
    server = ScriptedServer([lambda r, w: asyncio.sleep(0)])
    server.scripts = list(make_scripts(server))
    await server.start()
    try:
        yield server
    finally:
        await server.close()
