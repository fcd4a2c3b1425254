from __future__ import annotations

import time

import anyio
import pytest

from espdetect.exceptions import EndOfStream, SourceUnavailable
from espdetect.sources import CaptureSource

from ._servers import Script, ScriptedServer, http_response, make_jpeg, serving

pytestmark = pytest.mark.anyio

FAST = {"backoff_initial": 0.01, "backoff_max": 0.05}


def capture_reply(jpeg: bytes, timestamp: str = "12.000345") -> bytes:
    """What the firmware's /capture handler sends (plus Connection: close for this test server)."""
    extra = (
        "Content-Disposition: inline; filename=capture.jpg\r\nAccess-Control-Allow-Origin: *\r\n"
        f"X-Timestamp: {timestamp}\r\nConnection: close\r\n"
    )
    return http_response("200 OK", "image/jpeg", jpeg, extra)


def source_for(server: ScriptedServer, **kwargs: object) -> CaptureSource:
    options: dict[str, object] = {**FAST, **kwargs}
    return CaptureSource(server.url("/capture"), **options)  # type: ignore[arg-type]


async def test_polls_one_jpeg_per_request(jpegs: list[bytes]) -> None:
    def scripts(s: ScriptedServer) -> list[Script]:
        return [s.raw(capture_reply(jpegs[0], "12.000345")), s.raw(capture_reply(jpegs[1], "12.100000"))]

    async with serving(scripts) as server, source_for(server) as src:
        with anyio.fail_after(5):
            frames = [await src.read(), await src.read()]
    assert [f.jpeg for f in frames] == jpegs[:2]
    assert [f.seq for f in frames] == [0, 1]
    assert frames[0].camera_timestamp == pytest.approx(12.000345)
    assert frames[0].source_id == f"127.0.0.1:{server.port}"
    assert src.stats.frames == 2
    assert src.stats.bytes == len(jpegs[0]) + len(jpegs[1])
    assert all(b"GET /capture HTTP/1.1" in r for r in server.requests)


async def test_error_replies_are_counted_and_retried(jpegs: list[bytes]) -> None:
    def scripts(s: ScriptedServer) -> list[Script]:
        return [
            s.raw(http_response("500 Internal Server Error", "text/html", b"Camera capture failed")),
            s.raw(http_response("200 OK", "text/html", b"<html>login</html>")),
            s.raw(http_response("200 OK", "image/jpeg", jpegs[0][:100])),
            s.raw(capture_reply(jpegs[1])),
        ]

    async with serving(scripts) as server, source_for(server) as src:
        with anyio.fail_after(5):
            frame = await src.read()
    assert frame.jpeg == jpegs[1]
    assert frame.seq == 0
    assert src.stats.connect_failures == 2
    assert src.stats.corrupt == 1
    assert src.stats.reconnects == 1
    assert src.stats.frames == 1
    assert src.backoff.attempt == 0


async def test_failure_without_reconnect_raises() -> None:
    page = http_response("500 Internal Server Error", "text/html", b"Camera capture failed")
    async with (
        serving(lambda s: [s.raw(page)]) as server,
        source_for(server, reconnect=False) as src,
    ):
        with anyio.fail_after(5), pytest.raises(SourceUnavailable) as info:
            await src.read()
    assert "500" in info.value.reason and "Camera capture failed" in info.value.reason


async def test_oversize_reply_is_rejected(jpegs: list[bytes]) -> None:
    big = make_jpeg(5, (160, 120), noise=True)

    def scripts(s: ScriptedServer) -> list[Script]:
        return [s.raw(capture_reply(big)), s.raw(capture_reply(jpegs[0]))]

    async with serving(scripts) as server, source_for(server, max_size=len(big) - 1) as src:
        with anyio.fail_after(5):
            frame = await src.read()
    assert frame.jpeg == jpegs[0]
    assert src.stats.oversize == 1


async def test_interval_spaces_requests(jpegs: list[bytes]) -> None:
    async with (
        serving(lambda s: [s.raw(capture_reply(jpegs[0]))]) as server,
        source_for(server, interval=0.05) as src,
    ):
        start = time.perf_counter()
        with anyio.fail_after(5):
            frames = [await src.read() for _ in range(3)]
    # A lower bound only: requests start at least `interval` apart, however slow the machine.
    assert frames[-1].arrival_mono - start >= 2 * 0.05 * 0.9
    assert [f.seq for f in frames] == [0, 1, 2]


async def test_read_after_close_ends() -> None:
    src = CaptureSource("http://127.0.0.1:9/capture")
    await src.aclose()
    with pytest.raises(EndOfStream):
        await src.read()
