from __future__ import annotations

import asyncio
from pathlib import Path

import anyio
import cv2
import numpy as np
import pytest

from espdetect.exceptions import EndOfStream, SourceUnavailable
from espdetect.sources import OpenCVSource

pytestmark = pytest.mark.anyio


@pytest.fixture
def video(tmp_path: Path) -> Path:
    path = tmp_path / "cam.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 25.0, (64, 48))
    assert writer.isOpened()
    for i in range(30):
        writer.write(np.full((48, 64, 3), 8 * i, np.uint8))
    writer.release()
    return path


async def test_reads_newest_frames_until_the_end(video: Path) -> None:
    async with OpenCVSource(str(video), reconnect=False) as src:
        with anyio.fail_after(10):
            frames = [f async for f in src]
    assert frames, "expected at least one frame"
    seqs = [f.seq for f in frames]
    assert seqs == sorted(set(seqs))
    assert all(f.size == (64, 48) and f.jpeg is None for f in frames)
    # Every captured frame was either delivered or counted as dropped.
    assert src.stats.frames == 30
    assert src.stats.frames == len(frames) + src.stats.dropped
    assert seqs[-1] == 29
    assert float(frames[-1].image().mean()) == pytest.approx(8 * 29, abs=3)


async def test_unopenable_target_without_reconnect(tmp_path: Path) -> None:
    async with OpenCVSource(str(tmp_path / "nothing.avi"), reconnect=False) as src:
        with anyio.fail_after(10), pytest.raises(SourceUnavailable, match="cannot open"):
            await src.read()
    assert src.stats.connect_failures == 1


async def test_retrying_source_closes_promptly(tmp_path: Path) -> None:
    src = OpenCVSource(str(tmp_path / "nothing.avi"), backoff_initial=0.01, backoff_max=0.02)
    pending = asyncio.create_task(src.read())
    with anyio.fail_after(10):
        while src.stats.connect_failures < 2:
            await asyncio.sleep(0.01)
        await src.aclose()
        with pytest.raises(EndOfStream):
            await pending
    assert not pending.cancelled()


def test_default_source_id() -> None:
    assert OpenCVSource(0).source_id == "camera0"
    assert OpenCVSource("rtsp://cam/live", source_id="door").source_id == "door"
