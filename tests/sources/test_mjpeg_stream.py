from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

import anyio
import httpx
import pytest

from espdetect.exceptions import EndOfStream, SourceUnavailable
from espdetect.mjpeg import esp32_part_pieces, http_chunk
from espdetect.sources import MjpegStreamSource

from ._servers import (
    STREAM_HEAD,
    Script,
    ScriptedServer,
    ScriptFactory,
    esp32_frame_bytes,
    http_response,
    legacy_stream,
    make_jpeg,
    serving,
    wait_until,
)

pytestmark = pytest.mark.anyio

FAST = {"backoff_initial": 0.01, "backoff_max": 0.05}


def source_for(server: ScriptedServer, **kwargs: object) -> MjpegStreamSource:
    options: dict[str, object] = {**FAST, "buffer": 64, **kwargs}
    return MjpegStreamSource(server.url(), **options)  # type: ignore[arg-type]


async def read_n(source: MjpegStreamSource, n: int) -> list[bytes]:
    with anyio.fail_after(10):
        return [(await source.read()).jpeg or b"" for _ in range(n)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_reads_firmware_frames_with_camera_timestamps(jpegs: list[bytes]) -> None:
    async with (
        serving(lambda s: [s.esp32_stream(jpegs[:3], timestamp=1234.5)]) as server,
        source_for(server) as src,
    ):
        frames = [await src.read() for _ in range(3)]
    assert [f.jpeg for f in frames] == jpegs[:3]
    assert [f.seq for f in frames] == [0, 1, 2]
    assert [f.camera_timestamp for f in frames] == pytest.approx([1234.5, 1234.6, 1234.7])
    assert frames[0].source_id == f"127.0.0.1:{server.port}"
    assert frames[0].arrival_mono <= frames[2].arrival_mono
    assert src.stats.frames == 3
    assert src.stats.corrupt == 0
    assert src.stats.bytes >= sum(len(j) for j in jpegs[:3])
    assert server.connections == 1
    assert b"GET /stream HTTP/1.1" in server.requests[0]


async def test_eof_reconnects_and_never_invents_frames(jpegs: list[bytes]) -> None:
    # The second connection ends in the middle of a frame, like a camera that fails a capture.
    cut = esp32_frame_bytes(jpegs[4], 2.0)[:200]

    def scripts(s: ScriptedServer) -> list[Script]:
        return [
            s.esp32_stream(jpegs[0:2], then="eof"),
            s.esp32_stream(jpegs[2:4], then="eof", tail=cut),
            s.esp32_stream(jpegs[5:7]),
        ]

    async with serving(scripts) as server, source_for(server) as src:
        got = await read_n(src, 6)
        assert src.stats.connected
    assert got == jpegs[0:4] + jpegs[5:7]
    assert src.stats.reconnects == 2
    assert src.stats.frames == 6
    assert src.stats.connect_failures == 0
    assert src.backoff.attempt == 0  # reset by the good frames after the reconnect


async def test_eof_without_reconnect_ends_the_stream(jpegs: list[bytes]) -> None:
    async with (
        serving(lambda s: [s.esp32_stream(jpegs[:2], then="eof")]) as server,
        source_for(server, reconnect=False) as src,
    ):
        assert await read_n(src, 2) == jpegs[:2]
        with anyio.fail_after(5), pytest.raises(EndOfStream):
            await src.read()
        with pytest.raises(EndOfStream):
            await src.read()
    assert server.connections == 1


async def test_html_error_page_counts_failures_then_recovers(
    jpegs: list[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    page = b"<html><body><h1>500 Internal Server Error</h1>Camera capture failed</body></html>"

    def scripts(s: ScriptedServer) -> list[Script]:
        return [
            s.raw(http_response("500 Internal Server Error", "text/html", page)),
            s.raw(http_response("200 OK", "text/html", b"<html>captive portal</html>")),
            s.esp32_stream(jpegs[:2]),
        ]

    caplog.set_level(logging.DEBUG, logger="espdetect.sources.mjpeg_stream")
    async with serving(scripts) as server, source_for(server) as src:
        assert await read_n(src, 2) == jpegs[:2]
    assert src.stats.connect_failures == 2
    assert src.stats.reconnects == 0  # failed attempts are not connections
    assert src.stats.frames == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("500" in m and "Camera capture failed" in m for m in warnings)
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "text/html" in logged and "captive portal" in logged


async def test_error_page_without_reconnect_raises_source_unavailable() -> None:
    body = b"<html>not found</html>"
    async with (
        serving(lambda s: [s.raw(http_response("404 Not Found", "text/html", body))]) as server,
        source_for(server, reconnect=False) as src,
    ):
        with anyio.fail_after(5), pytest.raises(SourceUnavailable) as info:
            await src.read()
    assert "404" in info.value.reason and "not found" in info.value.reason
    assert info.value.url == server.url()
    assert src.stats.connect_failures == 1


async def test_wrong_content_type_is_a_connect_failure(jpegs: list[bytes]) -> None:
    still = http_response("200 OK", "image/jpeg", jpegs[0])
    async with (
        serving(lambda s: [s.raw(still)]) as server,
        source_for(server, reconnect=False) as src,
    ):
        with anyio.fail_after(5), pytest.raises(SourceUnavailable, match="multipart"):
            await src.read()
    assert src.stats.frames == 0


async def test_refused_until_the_camera_comes_back(jpegs: list[bytes]) -> None:
    port = free_port()
    async with MjpegStreamSource(f"http://127.0.0.1:{port}/stream", **FAST) as src:  # type: ignore[arg-type]
        reader = asyncio.create_task(src.read())
        await wait_until(lambda: src.stats.connect_failures >= 2)
        assert not reader.done()
        server = ScriptedServer([lambda r, w: asyncio.sleep(0)])
        server.scripts = [server.esp32_stream(jpegs[:1])]
        await server.start(port)
        try:
            with anyio.fail_after(5):
                frame = await reader
        finally:
            await src.aclose()
            await server.close()
    assert frame.jpeg == jpegs[0]
    assert src.stats.reconnects == 0


async def test_refused_without_reconnect_raises() -> None:
    port = free_port()
    async with MjpegStreamSource(f"http://127.0.0.1:{port}/stream", reconnect=False) as src:
        with anyio.fail_after(5), pytest.raises(SourceUnavailable, match="cannot connect"):
            await src.read()
    assert src.stats.connect_failures == 1


async def test_stall_closes_and_reconnects(jpegs: list[bytes]) -> None:
    def scripts(s: ScriptedServer) -> list[Script]:
        return [s.esp32_stream(jpegs[:1]), s.esp32_stream([]), s.esp32_stream(jpegs[1:3])]

    async with serving(scripts) as server, source_for(server, stall_timeout=0.2) as src:
        assert await read_n(src, 3) == jpegs[:3]
        # The stalled connections were really closed: the server saw the client leave.
        await wait_until(lambda: server.client_eofs >= 2)
    assert src.stats.stalls == 2
    assert src.stats.reconnects == 2
    assert server.connections == 3


async def test_stall_without_reconnect_raises(jpegs: list[bytes]) -> None:
    async with (
        serving(lambda s: [s.esp32_stream(jpegs[:1])]) as server,
        source_for(server, stall_timeout=0.2, reconnect=False) as src,
    ):
        assert await read_n(src, 1) == jpegs[:1]
        with anyio.fail_after(5), pytest.raises(SourceUnavailable, match="no complete frame"):
            await src.read()
    assert src.stats.stalls == 1


async def test_corrupt_and_truncated_parts_are_skipped(jpegs: list[bytes]) -> None:
    truncated = jpegs[1][: len(jpegs[1]) // 2]
    garbage_jpeg = b"\x00\x11" * 300
    body = b"".join(
        esp32_frame_bytes(j, 1.0) for j in (jpegs[0], truncated, garbage_jpeg, jpegs[2], jpegs[3])
    )
    async with (
        serving(lambda s: [s.raw(STREAM_HEAD + body, then="hang")]) as server,
        source_for(server) as src,
    ):
        assert await read_n(src, 3) == [jpegs[0], jpegs[2], jpegs[3]]
    assert src.stats.corrupt == 2
    assert src.stats.frames == 3


async def test_oversize_parts_are_dropped(jpegs: list[bytes]) -> None:
    big = make_jpeg(99, (160, 120), noise=True)
    assert len(big) > 4096
    body = b"".join(esp32_frame_bytes(j, 1.0) for j in (jpegs[0], big, jpegs[1]))
    async with (
        serving(lambda s: [s.raw(STREAM_HEAD + body, then="hang")]) as server,
        source_for(server, max_part_size=4096) as src,
    ):
        assert await read_n(src, 2) == [jpegs[0], jpegs[1]]
    assert src.stats.oversize == 1
    assert src.stats.frames == 2


async def test_lying_content_length_is_recut_at_the_boundary(jpegs: list[bytes]) -> None:
    def lying(jpeg: bytes, length: int) -> bytes:
        sep, head, data = esp32_part_pieces(jpeg, 1.0)
        head = head.replace(f"Content-Length: {len(jpeg)}".encode(), f"Content-Length: {length}".encode())
        return b"".join(http_chunk(p) for p in (sep, head, data))

    body = (
        lying(jpegs[0], len(jpegs[0]) + 50)
        + lying(jpegs[1], len(jpegs[1]) - 50)
        + esp32_frame_bytes(jpegs[2], 1.0)
        + esp32_frame_bytes(jpegs[3], 1.0)
    )
    async with (
        serving(lambda s: [s.raw(STREAM_HEAD + body, then="hang")]) as server,
        source_for(server) as src,
    ):
        assert await read_n(src, 4) == jpegs[:4]
    assert src.stats.length_mismatch == 2
    assert src.stats.corrupt == 0


async def test_legacy_framing(jpegs: list[bytes]) -> None:
    async with (
        serving(lambda s: [s.raw(legacy_stream(jpegs[:3]), then="hang")]) as server,
        source_for(server) as src,
    ):
        frames = [await src.read() for _ in range(3)]
    assert [f.jpeg for f in frames] == jpegs[:3]
    assert all(f.camera_timestamp is None for f in frames)


@pytest.mark.parametrize(
    "content_type",
    [
        pytest.param("multipart/x-mixed-replace", id="no-boundary-param"),
        pytest.param(None, id="no-content-type"),
    ],
)
async def test_boundary_found_in_the_body_when_the_header_lacks_it(
    jpegs: list[bytes], content_type: str | None
) -> None:
    head = STREAM_HEAD.replace(
        b"multipart/x-mixed-replace;boundary=123456789000000000000987654321",
        content_type.encode() if content_type else b"",
    )
    if content_type is None:
        head = head.replace(b"Content-Type: \r\n", b"")
    body = b"".join(esp32_frame_bytes(j, 1.0) for j in jpegs[:3])
    async with (
        serving(lambda s: [s.raw(head + body, then="hang")]) as server,
        source_for(server) as src,
    ):
        assert await read_n(src, 3) == jpegs[:3]


async def test_aclose_closes_the_upstream_socket_promptly(jpegs: list[bytes]) -> None:
    async with serving(lambda s: [s.esp32_stream(jpegs[:3])]) as server:
        src = source_for(server)
        assert await read_n(src, 1) == jpegs[:1]
        assert not server.client_eof.is_set()
        await src.aclose()
        with anyio.fail_after(2):
            await server.client_eof.wait()
        with pytest.raises(EndOfStream):
            await src.read()
        assert not src.stats.connected


async def test_aclose_wakes_a_pending_read() -> None:
    async with serving(lambda s: [s.esp32_stream([])]) as server:
        src = source_for(server)
        pending = asyncio.create_task(src.read())
        await wait_until(lambda: src.stats.connected)
        await src.aclose()
        with anyio.fail_after(2), pytest.raises(EndOfStream):
            await pending
        with anyio.fail_after(2):
            await server.client_eof.wait()


async def test_cancelled_read_loses_nothing(jpegs: list[bytes]) -> None:
    gate = asyncio.Event()

    def scripts(s: ScriptedServer) -> list[Script]:
        async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(STREAM_HEAD + esp32_frame_bytes(jpegs[0], 1.0))
            await writer.drain()
            await gate.wait()
            writer.write(esp32_frame_bytes(jpegs[1], 1.1) + esp32_frame_bytes(jpegs[2], 1.2))
            await writer.drain()
            await s.wait_for_client_close(reader)

        return [script]

    async with serving(scripts) as server, source_for(server) as src:
        first = await src.read()
        for _ in range(3):
            pending = asyncio.create_task(src.read())
            await asyncio.sleep(0.01)
            assert not pending.done()
            pending.cancel()
            with pytest.raises(asyncio.CancelledError):
                await pending
        gate.set()
        rest = [await src.read(), await src.read()]
    assert [f.jpeg for f in [first, *rest]] == jpegs[:3]
    assert [f.seq for f in [first, *rest]] == [0, 1, 2]
    assert server.connections == 1
    assert src.stats.reconnects == 0


async def test_slow_consumer_keeps_the_newest_frames(jpegs: list[bytes]) -> None:
    gate = asyncio.Event()

    def scripts(s: ScriptedServer) -> list[Script]:
        async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(STREAM_HEAD + esp32_frame_bytes(jpegs[0], 1.0))
            await gate.wait()
            writer.write(b"".join(esp32_frame_bytes(j, 1.0) for j in jpegs[1:10]))
            await s.wait_for_client_close(reader)

        return [script]

    async with serving(scripts) as server, source_for(server, buffer=2) as src:
        assert (await src.read()).jpeg == jpegs[0]
        gate.set()
        await wait_until(lambda: src.stats.frames == 10)
        newest = [await src.read(), await src.read()]
    assert [f.jpeg for f in newest] == jpegs[8:10]
    assert [f.seq for f in newest] == [8, 9]
    assert src.stats.dropped == 7


async def test_borrowed_client_is_left_open(jpegs: list[bytes]) -> None:
    async with (
        serving(lambda s: [s.esp32_stream(jpegs[:1])]) as server,
        httpx.AsyncClient() as client,
    ):
        src = MjpegStreamSource(server.url(), client=client)
        assert await read_n(src, 1) == jpegs[:1]
        await src.aclose()
        assert not client.is_closed
        with anyio.fail_after(2):
            await server.client_eof.wait()


def test_iter_frames_from_blocking_code(
    jpegs: list[bytes], threaded_server: Callable[[ScriptFactory], ScriptedServer]
) -> None:
    server = threaded_server(lambda s: [s.esp32_stream(jpegs[:4])])
    frames = list(MjpegStreamSource(server.url(), buffer=8).iter_frames(limit=3))
    assert [f.jpeg for f in frames] == jpegs[:3]


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"stall_timeout": 0}, id="stall_timeout"),
        pytest.param({"connect_timeout": -1}, id="connect_timeout"),
        pytest.param({"buffer": 0}, id="buffer"),
        pytest.param({"max_part_size": 10}, id="max_part_size"),
        pytest.param({"backoff_initial": 3.0, "backoff_max": 2.0}, id="backoff"),
    ],
)
def test_rejects_bad_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        MjpegStreamSource("http://127.0.0.1:81/stream", **kwargs)  # type: ignore[arg-type]


def test_rejects_non_http_url() -> None:
    with pytest.raises(ValueError, match="http"):
        MjpegStreamSource("rtsp://camera/stream")


def test_source_id_never_shows_credentials() -> None:
    source = MjpegStreamSource("http://admin:secret@cam.local:81/stream?x=1")
    assert source.source_id == "cam.local:81"
    assert source.describe() == "http://cam.local:81/stream?x=1"
