"""The opt-in OV2640 model: frame rates per size and quality, bad frames after a size change."""

from __future__ import annotations

import time

import pytest

from espdetect.emulator import Emulator, EmulatorConfig
from espdetect.emulator.sensor import (
    OV2640_LINK_BYTES_PER_S,
    OV2640_RESIZE_BAD_FRAMES,
    Sensor,
    ov2640_frame_interval,
)
from espdetect.exceptions import ConfigurationError
from espdetect.frame import jpeg_size
from tests.emulator._wire import StreamClient, get

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("size", "nbytes", "fps"),
    [
        pytest.param((160, 120), 3_000, 31.0, id="qqvga-sensor-bound"),
        pytest.param((320, 240), 8_000, 31.0, id="qvga-sensor-bound"),
        pytest.param((640, 480), 15_000, 25.0, id="vga-sensor-bound"),
        pytest.param((800, 600), 40_000, 12.5, id="svga-wifi-bound"),
        pytest.param((1600, 1200), 60_000, 8.33, id="uxga-wifi-bound"),
        pytest.param((1600, 1200), 30_000, 12.5, id="uxga-sensor-bound"),
    ],
)
def test_frame_rate_model(size: tuple[int, int], nbytes: int, fps: float) -> None:
    assert 1 / ov2640_frame_interval(size, nbytes) == pytest.approx(fps, rel=0.01)


def test_bigger_jpegs_are_slower_once_wifi_bounds() -> None:
    small, big = ov2640_frame_interval((800, 600), 30_000), ov2640_frame_interval((800, 600), 60_000)
    assert big > small and big == 60_000 / OV2640_LINK_BYTES_PER_S


def test_ideal_sensor_has_no_interval_and_no_bad_frames() -> None:
    sensor = Sensor("2.x", (320, 240), 12)
    assert sensor.set("framesize", 8)
    assert sensor.frame_interval(50_000) == 0.0
    assert sensor.next_bad_frame() is None


def test_ov2640_sends_bad_frames_after_a_change_of_size_only() -> None:
    sensor = Sensor("2.x", (320, 240), 12, model="ov2640")
    assert sensor.set("framesize", 5)  # QVGA again: no change of size, no bad frames
    assert sensor.next_bad_frame() is None
    assert sensor.set("framesize", 8)  # VGA
    assert sensor.set("hmirror", 1)
    bad = [sensor.next_bad_frame() for _ in OV2640_RESIZE_BAD_FRAMES]
    assert [b.kind for b in bad if b is not None] == list(OV2640_RESIZE_BAD_FRAMES)
    assert [b.view.size for b in bad if b is not None] == [(320, 240), (640, 480), (640, 480)]
    assert bad[-1] is not None and bad[-1].view.hmirror  # garbled frames follow later settings
    assert sensor.next_bad_frame() is None


def test_unknown_sensor_model_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="sensor_model"):
        EmulatorConfig(sensor_model="ov5640")  # type: ignore[arg-type]


async def _frame_times(port: int, n: int) -> tuple[list[float], list[bytes]]:
    client = await StreamClient.open(port)
    try:
        await client.head()
        times: list[float] = []
        bodies: list[bytes] = []
        for _ in range(n):
            (part,) = await client.parts(1)
            times.append(time.monotonic())
            bodies.append(part.body)
        return times, bodies
    finally:
        client.close()


@pytest.mark.parametrize(
    ("framesize", "quality"),
    [
        pytest.param(1, 10, id="qqvga-q10"),
        pytest.param(9, 10, id="svga-q10"),
        pytest.param(9, 30, id="svga-q30"),
    ],
)
async def test_stream_is_paced_by_the_model(framesize: int, quality: int) -> None:
    cfg = EmulatorConfig(
        fps=None, framesize=framesize, quality=quality, sensor_model="ov2640", loop_frames=8, prerender=True
    )
    async with Emulator(cfg) as emu:
        times, bodies = await _frame_times(emu.stream_port, 9)
    size = jpeg_size(bodies[0])
    assert size == cfg.frame_size
    # Frames never come faster than the model allows (a busy machine may make them slower).
    expected = sum(ov2640_frame_interval(cfg.frame_size, len(b)) for b in bodies[:-1])
    assert times[-1] - times[0] >= 0.9 * expected


async def test_ideal_sensor_keeps_the_configured_rate_at_any_size() -> None:
    cfg = EmulatorConfig(fps=None, framesize=9, quality=10, loop_frames=4, prerender=True)
    async with Emulator(cfg) as emu:
        times, _ = await _frame_times(emu.stream_port, 9)
    # Unpaced: far faster than the SVGA model's ~13 fps.
    assert times[-1] - times[0] < 8 * ov2640_frame_interval((800, 600), 40_000)


async def test_bad_frames_after_a_size_change_then_clean_frames_on_a_fresh_connection() -> None:
    cfg = EmulatorConfig(fps=None, framesize=5, quality=12, sensor_model="ov2640", loop_frames=20)
    async with Emulator(cfg) as emu:
        client = await StreamClient.open(emu.stream_port)
        await client.head()
        await client.parts(1)
        reply = await get(emu.control_port, "/control?var=framesize&val=8")  # VGA
        assert reply.status_line == "HTTP/1.1 200 OK"
        parts = await client.parts(8)
        client.close()
        sizes = [jpeg_size(p.body) for p in parts]
        # A frame already on its way may be the old size; then the stale one, then the new size.
        first_new = sizes.index((640, 480))
        assert sizes[first_new - 1] == (320, 240)
        assert all(s == (640, 480) for s in sizes[first_new:])
        assert emu.stats.bad_frames == len(OV2640_RESIZE_BAD_FRAMES)

        # A fresh connection starts at scene frame 0 with good frames: the same bytes a camera
        # that booted at VGA sends.
        _, fresh = await _frame_times(emu.stream_port, 4)
        assert emu.stats.bad_frames == len(OV2640_RESIZE_BAD_FRAMES)
        garbled = parts[first_new : first_new + 2]
        clean_at_those_indexes = [1 + first_new + i for i in range(2)]
    booted = EmulatorConfig(fps=None, framesize=8, quality=12, loop_frames=20)
    async with Emulator(booted) as emu:
        _, reference = await _frame_times(emu.stream_port, 4 + max(clean_at_those_indexes))
    assert fresh == reference[:4]
    for part, index in zip(garbled, clean_at_those_indexes, strict=True):
        assert len(part.body) == len(reference[index]) and part.body != reference[index]
