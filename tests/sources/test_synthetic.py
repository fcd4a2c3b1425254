from __future__ import annotations

import asyncio
import time

import anyio
import numpy as np
import pytest

from espdetect.exceptions import EndOfStream
from espdetect.frame import decode_jpeg
from espdetect.sources import SyntheticSource


async def read_all(src: SyntheticSource) -> list[bytes]:
    with anyio.fail_after(10):
        return [f.jpeg or b"" async for f in src]


@pytest.mark.anyio
async def test_frames_are_real_jpegs_of_the_requested_size() -> None:
    async with SyntheticSource(size=(96, 64), count=3) as src:
        frames = [await src.read() for _ in range(3)]
        with pytest.raises(EndOfStream):
            await src.read()
    assert [f.seq for f in frames] == [0, 1, 2]
    for f in frames:
        assert f.jpeg is not None and f.jpeg[:2] == b"\xff\xd8" and f.jpeg[-2:] == b"\xff\xd9"
        assert f.size == (96, 64)
        assert decode_jpeg(f.jpeg).shape == (64, 96, 3)
        assert f.source_id == "synthetic"
    assert frames[1].camera_timestamp == pytest.approx(1 / 30)
    assert src.stats.frames == 3
    assert src.stats.bytes == sum(len(f.jpeg or b"") for f in frames)


@pytest.mark.anyio
async def test_same_seed_same_bytes_and_the_scene_moves() -> None:
    a = await read_all(SyntheticSource(count=4, seed=7))
    b = await read_all(SyntheticSource(count=4, seed=7))
    c = await read_all(SyntheticSource(count=4, seed=8))
    assert a == b
    assert a != c
    assert len(set(a)) == 4
    first, last = (decode_jpeg(j).astype(np.int16) for j in (a[0], a[-1]))
    assert np.abs(first - last).mean() > 0.5


@pytest.mark.anyio
async def test_fps_paces_the_frames() -> None:
    async with SyntheticSource(count=4, fps=40) as src:
        start = time.perf_counter()
        frames = [await src.read() for _ in range(4)]
    # Lower bound only: three intervals of 25 ms must have been waited out.
    assert frames[-1].arrival_mono - start >= 3 * 0.025 * 0.9
    assert frames[1].camera_timestamp == pytest.approx(1 / 40)


@pytest.mark.anyio
async def test_cancelled_read_keeps_the_sequence() -> None:
    frames = []
    cancelled = 0
    async with SyntheticSource(count=3) as src:
        for _ in range(3):
            pending = asyncio.create_task(src.read())
            await asyncio.sleep(0)
            pending.cancel()
            # A read whose orphaned encode already finished returns before the cancel lands
            # (no suspension left): then its frame is simply the next one of the sequence.
            try:
                frames.append(await pending)
            except asyncio.CancelledError:
                cancelled += 1
        frames += [await src.read() for _ in range(3 - len(frames))]
    assert cancelled >= 1  # the first read is always cancelled mid-encode
    assert [f.seq for f in frames] == [0, 1, 2]
    assert frames[0].jpeg == SyntheticSource(count=1).encode(0)


def test_iter_frames() -> None:
    assert [f.seq for f in SyntheticSource(count=3).iter_frames()] == [0, 1, 2]
    assert [f.seq for f in SyntheticSource().iter_frames(limit=2)] == [0, 1]


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"size": (8, 8)}, id="size"),
        pytest.param({"count": -1}, id="count"),
        pytest.param({"fps": 0}, id="fps"),
        pytest.param({"quality": 0}, id="quality"),
    ],
)
def test_rejects_bad_settings(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        SyntheticSource(**kwargs)  # type: ignore[arg-type]


def test_describe_names_the_class_and_source_id() -> None:
    assert SyntheticSource(count=1).describe() == "SyntheticSource(synthetic)"
