from __future__ import annotations

import asyncio
import threading
from functools import cache

import cv2
import numpy as np
import pytest

from espdetect.exceptions import EndOfStream, SourceUnavailable
from espdetect.frame import Frame
from espdetect.sources.base import FrameSource, SourceStats


@cache
def _jpeg() -> bytes:
    ok, buf = cv2.imencode(".jpg", np.full((16, 24, 3), 128, np.uint8))
    assert ok
    return buf.tobytes()


class CountingSource(FrameSource):
    """``count`` frames, then EndOfStream (or ``fail_at``: SourceUnavailable at that frame)."""

    source_id = "counting"

    def __init__(self, count: int, fail_at: int | None = None) -> None:
        super().__init__()
        self.count = count
        self.fail_at = fail_at
        self.next_seq = 0
        self.closes = 0
        self.read_threads: set[int] = set()
        self.read_loops: set[int] = set()

    async def read(self) -> Frame:
        self.read_threads.add(threading.get_ident())
        self.read_loops.add(id(asyncio.get_running_loop()))
        await asyncio.sleep(0)  # a real suspension point, like a socket read
        if self.closes:
            raise EndOfStream("closed")
        if self.fail_at is not None and self.next_seq == self.fail_at:
            raise SourceUnavailable("test://counting", "gone")
        if self.next_seq >= self.count:
            raise EndOfStream("done")
        seq = self.next_seq
        self.next_seq += 1
        self.stats.frames += 1
        return Frame(seq=seq, source_id=self.source_id, jpeg=_jpeg())

    async def aclose(self) -> None:
        self.closes += 1


def test_iter_frames_from_plain_code() -> None:
    src = CountingSource(4)
    assert [f.seq for f in src.iter_frames()] == [0, 1, 2, 3]
    assert src.closes == 1
    assert threading.get_ident() not in src.read_threads
    assert len(src.read_loops) == 1


def test_iter_frames_limit_stops_early_and_closes() -> None:
    src = CountingSource(100)
    assert [f.seq for f in src.iter_frames(limit=3)] == [0, 1, 2]
    assert src.closes == 1
    assert src.next_seq == 3


def test_iter_frames_limit_zero_reads_nothing() -> None:
    src = CountingSource(5)
    assert list(src.iter_frames(limit=0)) == []
    assert src.next_seq == 0
    assert src.closes == 1


def test_iter_frames_closes_when_the_consumer_stops() -> None:
    src = CountingSource(100)
    it = src.iter_frames()
    assert next(it).seq == 0
    assert src.closes == 0
    it.close()
    assert src.closes == 1


def test_iter_frames_propagates_errors_and_closes() -> None:
    src = CountingSource(10, fail_at=2)
    seen: list[int] = []
    with pytest.raises(SourceUnavailable, match="gone"):
        for f in src.iter_frames():
            seen.append(f.seq)
    assert seen == [0, 1]
    assert src.closes == 1


def test_iter_frames_inside_a_running_event_loop() -> None:
    """What Jupyter does: sync code called while the thread's own loop is running."""

    async def notebook_cell() -> list[int]:
        assert asyncio.get_running_loop().is_running()
        return [f.seq for f in CountingSource(3).iter_frames()]

    assert asyncio.run(notebook_cell()) == [0, 1, 2]


@pytest.mark.anyio
async def test_iter_frames_inside_an_anyio_test_loop() -> None:
    src = CountingSource(3)
    outer = id(asyncio.get_running_loop())
    frames = list(src.iter_frames())
    assert [f.seq for f in frames] == [0, 1, 2]
    assert outer not in src.read_loops
    assert src.closes == 1
    # The outer loop is still healthy afterwards.
    await asyncio.sleep(0)


def test_iter_frames_does_not_leak_threads() -> None:
    before = {t.ident for t in threading.enumerate()}
    for _ in range(5):
        list(CountingSource(2).iter_frames())
    leftover = [t for t in threading.enumerate() if t.ident not in before and t.name == "espdetect-sync"]
    assert leftover == []


@pytest.mark.anyio
async def test_async_iteration_and_context_manager() -> None:
    src = CountingSource(3)
    async with src as entered:
        assert entered is src
        assert [f.seq async for f in src] == [0, 1, 2]
        assert src.closes == 0
    assert src.closes == 1
    assert src.stats.frames == 3


@pytest.mark.anyio
async def test_context_manager_closes_on_error() -> None:
    src = CountingSource(3)
    with pytest.raises(RuntimeError, match="boom"):
        async with src:
            await src.read()
            raise RuntimeError("boom")
    assert src.closes == 1


@pytest.mark.anyio
async def test_read_after_end_keeps_raising_end_of_stream() -> None:
    src = CountingSource(1)
    await src.read()
    for _ in range(2):
        with pytest.raises(EndOfStream):
            await src.read()


def test_base_aclose_is_a_harmless_default() -> None:
    class Minimal(FrameSource):
        async def read(self) -> Frame:
            raise EndOfStream

    src = Minimal()
    assert list(src.iter_frames()) == []
    asyncio.run(src.aclose())
    assert src.source_id == "source"


def test_frame_source_is_abstract() -> None:
    with pytest.raises(TypeError):
        FrameSource()  # type: ignore[abstract]


def test_source_stats_defaults_and_as_dict() -> None:
    stats = SourceStats()
    d = stats.as_dict()
    assert d["frames"] == 0 and d["connected"] is False
    assert set(d) >= {"frames", "bytes", "corrupt", "oversize", "stalls", "reconnects", "connect_failures"}
    stats.frames = 3
    stats.connected = True
    assert stats.as_dict()["frames"] == 3 and stats.as_dict()["connected"] is True
