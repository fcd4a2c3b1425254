"""Stand-ins for the pipeline tests: a camera fed by the test, a deterministic model, viewers.

The camera is an in-test `FrameSource` fed from an asyncio.Queue the test controls, and the
model a small deterministic `Detector` that can be held at a gate to act slow, so the tests
advance on events rather than on wall-clock sleeps.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable
from contextlib import aclosing
from functools import cache
from typing import TypeVar

import cv2
import numpy as np
import pytest

from espdetect.detections import Detections, StageTimings
from espdetect.detectors.base import Detector, DetectParams, ModelInfo
from espdetect.exceptions import EndOfStream
from espdetect.frame import Frame
from espdetect.pipeline import CameraPipeline, DetectionResult, PipelineConfig, Rendered
from espdetect.sources.base import FrameSource

T = TypeVar("T")
TIMEOUT = 10.0  # safety net only: every wait below ends on an event


async def within(aw: Awaitable[T]) -> T:
    return await asyncio.wait_for(aw, TIMEOUT)


async def settle() -> None:
    """Let every runnable task reach its next await (loop passes, no wall-clock wait)."""
    for _ in range(10):
        await asyncio.sleep(0)


# -- stand-ins --------------------------------------------------------------------------------


@cache
def sample_jpeg(width: int = 64, height: int = 48) -> bytes:
    yy, xx = np.mgrid[0:height, 0:width]
    img = np.stack([xx * 4 % 256, yy * 5 % 256, np.full_like(xx, 90)], axis=2).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buf.tobytes()


def make_frame(seq: int, jpeg: bytes | None = None) -> Frame:
    # A fresh bytes object per frame, so pass-through can be checked by identity.
    return Frame(seq=seq, source_id="cam", jpeg=bytes(bytearray(jpeg if jpeg is not None else sample_jpeg())))


CORRUPT = b"\xff\xd8 this is not a decodable jpeg \xff\xd9"

Item = Frame | BaseException | None


class QueueSource(FrameSource):
    """Frames the test puts in ``queue``; None ends the stream, an exception is raised by read()."""

    source_id = "cam"

    def __init__(self) -> None:
        super().__init__()
        self.queue: asyncio.Queue[Item] = asyncio.Queue()
        self.closed = asyncio.Event()
        self.close_started = asyncio.Event()
        #: When set by a test, aclose() waits on it (a slow disconnect).
        self.close_gate: asyncio.Event | None = None

    async def read(self) -> Frame:
        if self.closed.is_set():
            raise EndOfStream("closed")
        item = await self.queue.get()
        if item is None or self.closed.is_set():
            raise EndOfStream("end of test stream")
        if isinstance(item, BaseException):
            raise item
        return item

    async def aclose(self) -> None:
        self.close_started.set()
        if self.close_gate is not None:
            await self.close_gate.wait()
        self.closed.set()


class Upstream:
    """The source factory: records every source it opens."""

    def __init__(self) -> None:
        self.sources: list[QueueSource] = []
        self._opened = asyncio.Event()

    def __call__(self) -> QueueSource:
        src = QueueSource()
        self.sources.append(src)
        self._opened.set()
        return src

    async def source(self, index: int = 0) -> QueueSource:
        while len(self.sources) <= index:
            self._opened.clear()
            await within(self._opened.wait())
        return self.sources[index]

    async def push(self, *items: Item, index: int | None = None) -> None:
        """Queue items on source ``index`` (default: the newest, once there is one)."""
        src = await self.source(0 if index is None else index)
        if index is None:
            src = self.sources[-1]
        for item in items:
            src.queue.put_nowait(item)


class StandInDetector(Detector):
    """One centred box per image; optionally held at a gate (a slow model) or failing on call N."""

    def __init__(self, *, gated: bool = False, fail_calls: frozenset[int] = frozenset()) -> None:
        self._info = ModelInfo("stand-in", {0: "person", 1: "dog"}, backend="test")
        self.params = self.check(DetectParams())
        self.gated = gated
        self.fail_calls = fail_calls
        self.calls = 0
        self.shapes: list[tuple[int, ...]] = []
        self._lock = threading.Lock()
        self._gate = threading.Semaphore(0)
        self._loop = asyncio.get_running_loop()
        self._started: asyncio.Queue[int] = asyncio.Queue()

    @property
    def info(self) -> ModelInfo:
        return self._info

    def _detect(self, image: np.ndarray, params: DetectParams) -> Detections:
        with self._lock:
            self.calls += 1
            n = self.calls
            self.shapes.append(image.shape)
        self._loop.call_soon_threadsafe(self._started.put_nowait, n)
        if self.gated and not self._gate.acquire(timeout=TIMEOUT):
            raise TimeoutError("test never released the detector")
        if n in self.fail_calls:
            raise RuntimeError(f"model failure on call {n}")  # as a runtime would: not an espdetect error
        return self.find(image)

    def find(self, image: np.ndarray) -> Detections:
        """What this model sees in ``image``: one "person" box in the middle."""
        h, w = image.shape[:2]
        return Detections(
            xyxy=np.array([[w * 0.25, h * 0.25, w * 0.75, h * 0.75]], np.float32),
            confidence=np.array([0.9], np.float32),
            class_id=np.array([0]),
            names=self._info.names,
            timings=StageTimings(0.1, 0.2, 0.3),
        )

    async def started(self) -> int:
        """Wait until a detect call has begun; its call number."""
        return await within(self._started.get())

    def release(self, n: int = 1) -> None:
        for _ in range(n):
            self._gate.release()


@pytest.fixture
def upstream() -> Upstream:
    return Upstream()


@pytest.fixture
async def detector() -> AsyncIterator[StandInDetector]:
    det = StandInDetector()
    yield det
    det.release(1000)


@pytest.fixture
async def slow_detector() -> AsyncIterator[StandInDetector]:
    det = StandInDetector(gated=True)
    yield det
    det.release(1000)  # never leave a worker thread parked at the gate


def pipeline(upstream: Upstream, det: Detector, **config: object) -> CameraPipeline:
    cfg = PipelineConfig(**{"grace_period": 0.01, **config})  # type: ignore[arg-type]
    return CameraPipeline(upstream, det, config=cfg, name="test")


class Viewer:
    """An ``outputs()`` consumer running as a task, recording what it receives."""

    def __init__(self, pipe: CameraPipeline) -> None:
        self.got: list[Rendered] = []
        self._new = asyncio.Event()
        self.task = asyncio.create_task(self._run(pipe))

    async def _run(self, pipe: CameraPipeline) -> None:
        async with aclosing(pipe.outputs()) as outputs:
            async for rendered in outputs:
                self.got.append(rendered)
                self._new.set()

    async def until_seq(self, seq: int) -> Rendered:
        """Wait for the output of frame ``seq``."""
        while True:
            for r in reversed(self.got):
                if r.frame.seq == seq:
                    return r
            self._new.clear()
            await within(self._new.wait())

    @property
    def seqs(self) -> list[int]:
        return [r.frame.seq for r in self.got]


async def start_viewers(pipe: CameraPipeline, n: int = 1) -> list[Viewer]:
    viewers = [Viewer(pipe) for _ in range(n)]
    while pipe.demand["annotated"] < n:
        await settle()
    await settle()
    return viewers


async def raw_until_seq(pipe: CameraPipeline, seq: int) -> None:
    version = 0
    while True:
        version, frame = await within(pipe.raw.next_after(version))
        if frame.seq == seq:
            return


async def detections_until_seq(
    pipe: CameraPipeline, seq: int, version: int = 0
) -> tuple[int, DetectionResult]:
    while True:
        version, result = await within(pipe.detections.next_after(version))
        if result.frame.seq >= seq:
            return version, result
