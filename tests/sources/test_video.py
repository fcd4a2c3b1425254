from __future__ import annotations

import time
from pathlib import Path

import anyio
import cv2
import numpy as np
import pytest

from espdetect.exceptions import EndOfStream, SourceUnavailable
from espdetect.sources import VideoFileSource

pytestmark = pytest.mark.anyio

LEVELS = [20 * i for i in range(10)]


@pytest.fixture
def video(tmp_path: Path) -> Path:
    """Ten 64x48 frames at 25 fps, frame i a flat grey of level 20*i."""
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 25.0, (64, 48))
    assert writer.isOpened()
    for level in LEVELS:
        writer.write(np.full((48, 64, 3), level, np.uint8))
    writer.release()
    return path


async def test_decodes_every_frame_then_ends(video: Path) -> None:
    async with VideoFileSource(video) as src:
        with anyio.fail_after(10):
            frames = [f async for f in src]
        with pytest.raises(EndOfStream):
            await src.read()
    assert [f.seq for f in frames] == list(range(10))
    assert all(f.jpeg is None and f.size == (64, 48) for f in frames)
    means = [float(f.image().mean()) for f in frames]
    assert means == pytest.approx(LEVELS, abs=3)
    stamps = [f.camera_timestamp for f in frames]
    assert stamps == pytest.approx([i / 25 for i in range(10)], abs=1e-3)
    assert src.fps == pytest.approx(25.0)
    assert frames[0].source_id == "clip.avi"


async def test_loop_rewinds(video: Path) -> None:
    async with VideoFileSource(video, loop=True) as src:
        with anyio.fail_after(10):
            frames = [await src.read() for _ in range(23)]
    assert [f.seq for f in frames] == list(range(23))
    assert float(frames[10].image().mean()) == pytest.approx(LEVELS[0], abs=3)
    assert float(frames[22].image().mean()) == pytest.approx(LEVELS[2], abs=3)


async def test_realtime_follows_the_file_frame_rate(video: Path) -> None:
    async with VideoFileSource(video, realtime=True) as src:
        start = time.perf_counter()
        frames = [await src.read() for _ in range(4)]
    assert frames[-1].arrival_mono - start >= 3 / 25 * 0.9


async def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(SourceUnavailable, match="no such file"):
        VideoFileSource(tmp_path / "missing.mp4")
    bogus = tmp_path / "bogus.avi"
    bogus.write_text("this is not a video")
    async with VideoFileSource(bogus) as src:
        with pytest.raises(SourceUnavailable, match="unreadable"):
            await src.read()


def test_iter_frames(video: Path) -> None:
    assert len(list(VideoFileSource(video).iter_frames())) == 10
