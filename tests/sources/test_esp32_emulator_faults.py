"""`MjpegStreamSource` and `CaptureSource` against the ESP32-CAM emulator, one fault mode at a time.

Every test checks the same three things: the source recovers (keeps delivering frames),
counts what happened, and never delivers anything but complete JPEGs the camera sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import anyio
import pytest

from espdetect.emulator import Emulator, EmulatorConfig, Fault, FaultKind
from espdetect.exceptions import SourceUnavailable
from espdetect.frame import Frame, jpeg_size
from espdetect.sources import CaptureSource, MjpegStreamSource

from ._servers import wait_until

pytestmark = pytest.mark.anyio

SIZE = (160, 120)
FAST = {"backoff_initial": 0.01, "backoff_max": 0.1, "buffer": 256}


def emulator(*faults: Fault, uptime: float = 0.0) -> Emulator:
    config = EmulatorConfig(fps=60.0, size=SIZE, faults=tuple(faults), uptime=uptime)
    return Emulator(config, host="127.0.0.1", port=0)


def stream_source(emu: Emulator, **kwargs: object) -> MjpegStreamSource:
    options: dict[str, object] = {**FAST, **kwargs}
    return MjpegStreamSource(emu.stream_url, **options)  # type: ignore[arg-type]


async def read_frames(src: MjpegStreamSource | CaptureSource, n: int, timeout: float = 20.0) -> list[Frame]:
    with anyio.fail_after(timeout):
        return [await src.read() for _ in range(n)]


def assert_real_frames(frames: Sequence[Frame]) -> None:
    """Only complete JPEGs of the camera's size, in order, none repeated."""
    for f in frames:
        assert f.jpeg is not None
        assert f.jpeg[:2] == b"\xff\xd8" and f.jpeg[-2:] == b"\xff\xd9"
        assert jpeg_size(f.jpeg) == SIZE
    seqs = [f.seq for f in frames]
    assert seqs == sorted(set(seqs))


@pytest.fixture
async def clean_emulator() -> AsyncIterator[Emulator]:
    async with emulator() as emu:
        yield emu


async def test_clean_stream_one_connection() -> None:
    async with emulator() as emu, stream_source(emu) as src:
        frames = await read_frames(src, 10)
        stats = emu.stats
    assert_real_frames(frames)
    assert [f.seq for f in frames] == list(range(10))
    assert all(f.camera_timestamp is not None for f in frames)
    assert src.stats.frames >= 10 and src.stats.corrupt == 0 and src.stats.reconnects == 0
    assert stats.streams_total == 1
    assert stats.stream_waiting == 0


async def test_aclose_frees_the_single_stream_slot() -> None:
    async with emulator() as emu:
        src = stream_source(emu)
        await read_frames(src, 2)
        await src.aclose()
        await emu.wait_stream_clients(0, timeout=3)
        # The camera serves one client: a new source must get frames right away.
        async with stream_source(emu, reconnect=False) as again:
            assert_real_frames(await read_frames(again, 2))
        assert emu.stats.stream_waiting == 0


async def test_drop_after_reconnects() -> None:
    async with emulator(Fault(FaultKind.DROP_AFTER, frames=3)) as emu, stream_source(emu) as src:
        frames = await read_frames(src, 8)
        stats = emu.stats
    assert_real_frames(frames)
    assert [f.seq for f in frames] == list(range(8))
    assert src.stats.reconnects >= 2
    assert src.stats.stalls == 0 and src.stats.corrupt == 0 and src.stats.connect_failures == 0
    assert stats.streams_total >= 3
    assert src.stats.frames <= stats.frames_sent


async def test_stall_is_detected_and_the_connection_recycled() -> None:
    fault = Fault(FaultKind.STALL, frames=2)  # stalls forever, with the socket open
    async with emulator(fault) as emu, stream_source(emu, stall_timeout=0.3) as src:
        frames = await read_frames(src, 5)
        stats = emu.stats
    assert_real_frames(frames)
    assert src.stats.stalls >= 2
    assert src.stats.reconnects >= 2
    # Each stalled connection was closed before the next one: none ever waited for the slot.
    assert stats.streams_total >= 3


async def test_slow_bytes_without_frames_count_as_a_stall() -> None:
    # 2 kB/s: bytes keep coming but a 160x120 frame (~4 kB) takes seconds, so the watchdog fires.
    async with emulator(Fault(FaultKind.SLOW, rate=2000)) as emu:
        async with stream_source(emu, stall_timeout=0.3) as src:
            reader = asyncio.create_task(src.read())
            await wait_until(lambda: src.stats.stalls >= 1, timeout=10)
            assert not reader.done()
            assert src.stats.frames == 0
            assert src.stats.bytes > 0
            reader.cancel()
        # A slow link that still carries whole frames in time is not a stall.
        emu.set_faults([Fault(FaultKind.SLOW, rate=200_000)])
        async with stream_source(emu, stall_timeout=2.0) as src:
            assert_real_frames(await read_frames(src, 3))
            assert src.stats.stalls == 0


async def test_corrupt_jpeg_with_intact_markers_passes_through() -> None:
    # The bytes are damaged inside the scan data but SOI/EOI stay, as the ESP32 driver would
    # deliver them: the source forwards what the camera sent and leaves decoding to the consumer.
    async with emulator(Fault(FaultKind.CORRUPT_JPEG, frames=2)) as emu, stream_source(emu) as src:
        frames = await read_frames(src, 6)
    assert_real_frames(frames)
    assert [f.seq for f in frames] == list(range(6))
    assert src.stats.reconnects == 0 and src.stats.corrupt == 0


async def test_truncated_jpeg_is_skipped_and_counted() -> None:
    async with emulator(Fault(FaultKind.TRUNCATED_JPEG, frames=2)) as emu, stream_source(emu) as src:
        frames = await read_frames(src, 5)
    assert_real_frames(frames)
    assert src.stats.corrupt >= 4  # every second frame
    assert src.stats.reconnects == 0


@pytest.mark.parametrize("delta", [pytest.param(1000, id="too-long"), pytest.param(-100, id="too-short")])
async def test_wrong_length_is_recut(delta: int) -> None:
    fault = Fault(FaultKind.WRONG_LENGTH, frames=2, delta=delta)
    async with emulator(fault) as emu, stream_source(emu) as src:
        frames = await read_frames(src, 6)
    assert_real_frames(frames)
    assert [f.seq for f in frames] == list(range(6))  # the lying parts are kept, correctly cut
    assert src.stats.length_mismatch >= 2
    assert src.stats.corrupt == 0 and src.stats.reconnects == 0


async def test_oversize_parts_are_dropped_unbuffered() -> None:
    fault = Fault(FaultKind.OVERSIZE, frames=2, size=300_000)
    async with emulator(fault) as emu, stream_source(emu, max_part_size=100_000) as src:
        frames = await read_frames(src, 4)
    assert_real_frames(frames)
    assert all(len(f.jpeg or b"") < 100_000 for f in frames)
    assert src.stats.oversize >= 3
    assert src.stats.reconnects == 0


async def test_html_error_page_then_recovery() -> None:
    async with emulator(Fault(FaultKind.HTML_ERROR, status=503)) as emu, stream_source(emu) as src:
        reader = asyncio.create_task(read_frames(src, 3))
        await wait_until(lambda: src.stats.connect_failures >= 2)
        assert not reader.done()
        emu.set_faults([])
        frames = await reader
    assert_real_frames(frames)
    assert src.stats.connect_failures >= 2
    assert src.stats.reconnects == 0  # error pages are failed attempts, not connections


async def test_html_error_page_without_reconnect() -> None:
    async with (
        emulator(Fault(FaultKind.HTML_ERROR, status=500)) as emu,
        stream_source(emu, reconnect=False) as src,
    ):
        with anyio.fail_after(10), pytest.raises(SourceUnavailable, match="500"):
            await src.read()


async def test_legacy_framing() -> None:
    async with emulator(Fault(FaultKind.LEGACY_FRAMING)) as emu, stream_source(emu) as src:
        frames = await read_frames(src, 5)
    assert_real_frames(frames)
    assert [f.seq for f in frames] == list(range(5))
    assert all(f.camera_timestamp is None for f in frames)
    assert src.stats.corrupt == 0


async def test_reboot_refuses_then_recovers_with_a_new_clock() -> None:
    fault = Fault(FaultKind.REFUSE, frames=4, seconds=0.5)
    async with emulator(fault, uptime=100.0) as emu, stream_source(emu, backoff_max=0.2) as src:
        before = await read_frames(src, 4)
        after = await read_frames(src, 3)
        stats = emu.stats
    assert_real_frames(before + after)
    assert stats.boots == 2
    assert src.stats.reconnects >= 1
    assert src.stats.connect_failures >= 1
    # X-Timestamp is time since boot: it restarts after the reboot (never treated as wall time).
    assert all(f.camera_timestamp is not None and f.camera_timestamp >= 100.0 for f in before)
    assert all(f.camera_timestamp is not None and f.camera_timestamp < 10.0 for f in after)


async def test_capture_endpoint(clean_emulator: Emulator) -> None:
    async with CaptureSource(clean_emulator.capture_url, reconnect=False) as src:
        frames = await read_frames(src, 3)
    assert_real_frames(frames)
    assert all(f.camera_timestamp is not None for f in frames)
    assert src.stats.frames == 3


async def test_capture_through_a_reboot() -> None:
    async with emulator() as emu:
        src = CaptureSource(emu.capture_url, backoff_initial=0.01, backoff_max=0.1)
        async with src:
            assert_real_frames(await read_frames(src, 1))
            emu.set_faults([Fault(FaultKind.REFUSE, seconds=0.3)])
            assert_real_frames(await read_frames(src, 2))
    assert src.stats.connect_failures >= 1
    assert src.stats.reconnects == 1
