"""Each fault observed on the wire, at start and switched at runtime."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json

import pytest

from espdetect.emulator import Emulator, EmulatorConfig, Fault, FaultKind
from espdetect.emulator.faults import DEFAULT_OVERSIZE_BYTES
from espdetect.mjpeg import ESP32_BOUNDARY, Part

from ._wire import BOUNDARY_CHUNK, LEGACY_PART_HEAD, PART_HEAD, StreamClient, decode, get

pytestmark = pytest.mark.anyio


def config(*faults: Fault, **kwargs: object) -> EmulatorConfig:
    options: dict[str, object] = {"fps": 50.0, "loop_frames": 8, "faults": faults}
    options.update(kwargs)
    return EmulatorConfig(**options)  # type: ignore[arg-type]


async def open_stream(emu: Emulator) -> StreamClient:
    client = await StreamClient.open(emu.stream_port)
    head = await client.head()
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    return client


def content_length(head: bytes) -> int:
    match = PART_HEAD.match(head) or LEGACY_PART_HEAD.match(head)
    assert match is not None, head
    return int(match[1])


async def test_stall_sends_nothing_but_keeps_the_socket_open() -> None:
    async with Emulator(config(Fault(FaultKind.STALL, frames=3))) as emu:
        client = await open_stream(emu)
        await client.parts(3)
        stats = await emu.wait_until(lambda s: s.stalled_streams == 1)
        assert stats.frames_sent == 3
        # Proving silence needs a window: nothing arrives and the socket does not close.
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(client.reader.read(1), 0.3)
        assert not client.reader.at_eof()
        assert emu.stats.stream_clients == 1
        emu.set_faults([])  # a stall without seconds lasts until the faults change
        (part,) = await client.parts(1)
        assert part.is_complete_jpeg
        client.close()


async def test_stall_with_seconds_resumes_by_itself() -> None:
    async with Emulator(config(Fault(FaultKind.STALL, frames=1, seconds=0.2))) as emu:
        client = await open_stream(emu)
        await client.parts(1)
        await emu.wait_until(lambda s: s.stalled_streams == 1)
        parts = await client.parts(3)
        assert all(p.is_complete_jpeg for p in parts)
        assert emu.stats.stalled_streams == 0
        client.close()


async def test_stall_set_at_runtime_applies_to_the_running_stream() -> None:
    async with Emulator(config()) as emu:
        client = await open_stream(emu)
        await client.parts(2)
        emu.set_faults([Fault(FaultKind.STALL)])
        stats = await emu.wait_until(lambda s: s.stalled_streams == 1)
        assert stats.stream_clients == 1
        emu.set_faults([])
        await emu.wait_until(lambda s: s.stalled_streams == 0)
        await client.parts(2)
        client.close()


async def test_drop_after_closes_each_stream_after_n_frames() -> None:
    async with Emulator(config(Fault(FaultKind.DROP_AFTER, frames=3))) as emu:
        for _ in range(2):  # every new stream is dropped again
            client = await open_stream(emu)
            parts = await client.parts(3)
            assert all(p.is_complete_jpeg for p in parts)
            assert await asyncio.wait_for(client.read_to_eof(), 10) == b""
            raw = bytes(client.raw)
            assert raw.endswith(b"\xff\xd9\r\n")  # ends after the last JPEG chunk: no terminator
            assert f"--{ESP32_BOUNDARY}--".encode() not in raw
            client.close()
        stats = await emu.wait_stream_clients(0)
        assert stats.streams_total == 2 and stats.frames_sent == 6


async def test_drop_after_set_at_runtime_counts_from_the_change() -> None:
    async with Emulator(config()) as emu:
        client = await open_stream(emu)
        await client.parts(2)
        emu.set_faults([Fault(FaultKind.DROP_AFTER, frames=2)])
        before = emu.stats.frames_sent
        received = 2
        with contextlib.suppress(asyncio.IncompleteReadError):
            while True:
                received += len(await client.parts(1))
        client.close()
        stats = await emu.wait_stream_clients(0)
    # Two frames after the change, plus at most one that was being written when it came.
    assert 2 <= stats.frames_sent - before <= 3
    assert received == stats.frames_sent


async def test_corrupt_jpeg_flips_bytes_mid_image() -> None:
    async with Emulator(config(Fault(FaultKind.CORRUPT_JPEG, frames=2), loop_frames=1)) as emu:
        client = await open_stream(emu)
        _, _, clean = await client.frame_chunks()
        _, head2, bad = await client.frame_chunks()
        client.close()
    assert content_length(head2) == len(bad) == len(clean)
    assert bad[:2] == b"\xff\xd8" and bad[-2:] == b"\xff\xd9"
    assert bad != clean
    changed = [i for i, (a, b) in enumerate(zip(clean, bad, strict=True)) if a != b]
    assert clean.find(b"\xff\xda") < changed[0] and changed[-1] < len(clean) - 2


async def test_truncated_jpeg_is_cut_with_matching_length() -> None:
    async with Emulator(config(Fault(FaultKind.TRUNCATED_JPEG, frames=2), loop_frames=1)) as emu:
        client = await open_stream(emu)
        _, _, clean = await client.frame_chunks()
        _, head, cut = await client.frame_chunks()
        client.close()
    assert len(cut) == len(clean) // 2
    assert content_length(head) == len(cut)
    assert cut == clean[: len(cut)]
    assert cut[-2:] != b"\xff\xd9"


async def test_truncated_jpeg_to_given_size() -> None:
    async with Emulator(config(Fault(FaultKind.TRUNCATED_JPEG, size=1000))) as emu:
        client = await open_stream(emu)
        (part,) = await client.parts(1)
        client.close()
    assert len(part.body) == 1000 and part.headers["content-length"] == "1000"
    assert not part.is_complete_jpeg


@pytest.mark.parametrize("delta", [pytest.param(None, id="default"), pytest.param(-100, id="understated")])
async def test_wrong_length_header_differs_from_body(delta: int | None) -> None:
    async with Emulator(config(Fault(FaultKind.WRONG_LENGTH, delta=delta))) as emu:
        client = await open_stream(emu)
        _, head, jpeg = await client.frame_chunks()
        client.close()
    assert content_length(head) == len(jpeg) + (1000 if delta is None else delta)
    assert jpeg[:2] == b"\xff\xd8" and jpeg[-2:] == b"\xff\xd9"


async def test_oversize_part_is_several_mebibytes_and_still_decodes() -> None:
    async with Emulator(config(Fault(FaultKind.OVERSIZE), size=(320, 240))) as emu:
        client = await open_stream(emu)
        _, head, jpeg = await client.frame_chunks()
        client.close()
    assert len(jpeg) >= DEFAULT_OVERSIZE_BYTES
    assert content_length(head) == len(jpeg)
    assert decode(jpeg).shape == (240, 320, 3)


@pytest.mark.parametrize(
    ("status", "line"),
    [
        pytest.param(None, "503 Service Unavailable", id="default"),
        pytest.param(500, "500 Internal Server Error"),
    ],
)
async def test_html_error_instead_of_a_stream(status: int | None, line: str) -> None:
    async with Emulator(config(Fault(FaultKind.HTML_ERROR, status=status))) as emu:
        reply = await get(emu.stream_port, "/stream")
        status_reply = await get(emu.control_port, "/status")
    assert reply.status_line == f"HTTP/1.1 {line}"
    assert [name for name, _ in reply.headers] == ["Content-Type", "Content-Length"]
    assert reply.header("Content-Type") == "text/html"
    assert reply.body.startswith(b"<!DOCTYPE html>") and line.encode() in reply.body
    assert status_reply.status_line == "HTTP/1.1 200 OK"  # the control port is unaffected


@pytest.mark.parametrize(
    "setup",
    [
        pytest.param({"faults": (Fault(FaultKind.LEGACY_FRAMING),)}, id="fault"),
        pytest.param({"firmware": "legacy"}, id="legacy-firmware"),
    ],
)
async def test_legacy_framing_order_and_headers(setup: dict[str, object]) -> None:
    options: dict[str, object] = {"fps": 50.0, "loop_frames": 8}
    options.update(setup)
    async with Emulator(EmulatorConfig(**options)) as emu:  # type: ignore[arg-type]
        client = await StreamClient.open(emu.stream_port)
        head = await client.head()
        first = await client.frame_chunks()
        second = await client.frame_chunks()
        client.close()
    assert head == (
        b"HTTP/1.1 200 OK\r\n"
        b"Content-Type: multipart/x-mixed-replace;boundary=123456789000000000000987654321\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    for part_head, jpeg, boundary in (first, second):
        assert LEGACY_PART_HEAD.match(part_head), part_head
        assert content_length(part_head) == len(jpeg)
        assert jpeg[:2] == b"\xff\xd8" and jpeg[-2:] == b"\xff\xd9"
        assert boundary == BOUNDARY_CHUNK


async def test_legacy_framing_parses_with_multipart_parser() -> None:
    async with Emulator(config(Fault(FaultKind.LEGACY_FRAMING))) as emu:
        client = await open_stream(emu)
        parts = await client.parts(3)
        client.close()
    assert all(p.is_complete_jpeg and p.timestamp is None for p in parts)
    assert client.parser.stats.garbage_bytes == 0


async def test_refuse_reboots_and_recovers() -> None:
    async with Emulator(config(uptime=1000.0, size=(320, 240))) as emu:
        control, stream = emu.control_port, emu.stream_port
        assert (await get(control, "/control?var=framesize&val=8")).status_line == "HTTP/1.1 200 OK"
        client = await open_stream(emu)
        (before,) = await client.parts(1)
        assert before.timestamp is not None and before.timestamp >= 1000

        emu.set_faults([Fault(FaultKind.REFUSE, seconds=0.3)])
        await emu.wait_until(lambda s: s.refusing)
        with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
            await asyncio.wait_for(client.parts(100), 10)  # the open stream is cut
        client.close()
        for port in (control, stream):
            with pytest.raises(ConnectionRefusedError):
                await asyncio.open_connection("127.0.0.1", port)

        stats = await emu.wait_until(lambda s: not s.refusing, timeout=10)
        assert stats.boots == 2
        client = await open_stream(emu)
        (after,) = await client.parts(1)
        client.close()
        assert after.timestamp is not None and after.timestamp < 10  # the clock restarted near 0
        # Settings are back to the configured ones after the reboot.
        assert decode(after.body).shape == (240, 320, 3)
        assert json.loads((await get(control, "/status")).body)["framesize"] == 5


async def test_refuse_after_frames_cuts_the_stream() -> None:
    async with Emulator(config(Fault(FaultKind.REFUSE, frames=2, seconds=0.2))) as emu:
        client = await open_stream(emu)
        await client.parts(2)
        with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
            await asyncio.wait_for(client.parts(100), 10)
        client.close()
        stats = await emu.wait_until(lambda s: s.boots == 2 and not s.refusing, timeout=10)
        assert stats.frames_sent == 2
        # Once per fault set: the next stream is not rebooted again.
        client = await open_stream(emu)
        await client.parts(3)
        client.close()
        assert emu.stats.boots == 2


async def test_refuse_in_config_refuses_from_the_start() -> None:
    async with Emulator(config(Fault(FaultKind.REFUSE, seconds=0.2))) as emu:
        assert emu.stats.refusing
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", emu.control_port)
        await emu.wait_until(lambda s: not s.refusing, timeout=10)
        assert (await get(emu.control_port, "/status")).status_line == "HTTP/1.1 200 OK"


async def test_slow_throttles_the_stream() -> None:
    # X-Timestamp is the emulator's own clock, taken just before each frame is written, so the
    # gap between two stamps is at least the time the throttle needed to send the first frame.
    rate = 200_000
    async with Emulator(config(Fault(FaultKind.SLOW, rate=rate), fps=None, loop_frames=2)) as emu:
        client = await open_stream(emu)
        parts = await client.parts(4)
        client.close()
    assert all(p.is_complete_jpeg for p in parts)
    for earlier, later in itertools.pairwise(parts):
        assert earlier.timestamp is not None and later.timestamp is not None
        # At most one 50 ms slice of budget is spent without waiting.
        assert later.timestamp - earlier.timestamp >= (len(earlier.body) - rate // 20) / rate


async def test_slow_set_at_runtime_reaches_the_running_stream() -> None:
    rate = 100_000
    async with Emulator(config(fps=None, loop_frames=2)) as emu:
        client = await open_stream(emu)
        await client.parts(2)
        emu.set_faults([Fault(FaultKind.SLOW, rate=rate)])
        changed_at = emu.uptime
        # Frames written before the change may still sit in socket buffers; skip past them by
        # their stamps (every frame stamped after the change is sent under the new rate).
        throttled: list[Part] = []
        while len(throttled) < 3:
            (part,) = await client.parts(1)
            assert part.timestamp is not None
            if part.timestamp > changed_at:
                throttled.append(part)
        client.close()
    for earlier, later in itertools.pairwise(throttled):
        assert earlier.timestamp is not None and later.timestamp is not None
        assert later.timestamp - earlier.timestamp >= (len(earlier.body) - rate // 20) / rate


async def test_faults_are_counted() -> None:
    async with Emulator(config(Fault(FaultKind.CORRUPT_JPEG, frames=2))) as emu:
        client = await open_stream(emu)
        await client.parts(4)
        client.close()
        stats = await emu.wait_stream_clients(0)
    assert stats.faults_injected >= 2
    assert emu.faults == (Fault(FaultKind.CORRUPT_JPEG, frames=2),)
