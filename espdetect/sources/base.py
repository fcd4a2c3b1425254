"""`FrameSource`: the one interface every frame source implements."""

from __future__ import annotations

import asyncio
import threading
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Coroutine, Generator
from dataclasses import dataclass, fields
from types import TracebackType
from typing import Any, TypeVar

from espdetect.exceptions import EndOfStream
from espdetect.frame import Frame

__all__ = ["FrameSource", "SourceStats"]

T = TypeVar("T")
_S = TypeVar("_S", bound="FrameSource")


@dataclass
class SourceStats:
    """Counters every source keeps (network sources fill all of them)."""

    frames: int = 0
    bytes: int = 0
    #: Parts that were not complete JPEGs (truncated, corrupt) and were skipped.
    corrupt: int = 0
    #: Parts larger than the maximum part size, dropped unread.
    oversize: int = 0
    #: Times no complete frame came within the stall timeout.
    stalls: int = 0
    #: Connections opened after the first one.
    reconnects: int = 0
    #: Connection attempts that failed (refused, HTTP error, wrong content type).
    connect_failures: int = 0
    #: Bytes between parts that belonged to no frame.
    garbage_bytes: int = 0
    #: Parts whose Content-Length disagreed with the data.
    length_mismatch: int = 0
    #: Frames discarded unread because the consumer fell behind (the newest are kept).
    dropped: int = 0
    connected: bool = False

    def as_dict(self) -> dict[str, int | bool]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class FrameSource(ABC):
    """A source of frames, read asynchronously one at a time.

    ``read()`` returns the next frame or raises `EndOfStream` when a finite source is done
    (or the source was closed). Sources are async context managers and async iterators;
    ``iter_frames()`` gives a blocking iterator for scripts and notebooks.

    Example:
        >>> from espdetect.sources import SyntheticSource
        >>> async def first() -> Frame:
        ...     async with SyntheticSource(count=1) as src:
        ...         return await src.read()
    """

    #: A short name that identifies the source in logs, frames and metrics.
    source_id: str = "source"

    def __init__(self) -> None:
        self.stats = SourceStats()
        self._next_seq = 0

    def describe(self) -> str:
        """Where the frames come from, for logs, messages and recordings (never a password)."""
        return f"{type(self).__name__}({self.source_id})"

    @abstractmethod
    async def read(self) -> Frame:
        """The next frame. Raises `EndOfStream` when there are no more."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook, most sources hold nothing
        """Release connections, files and threads. Safe to call more than once."""

    async def __aenter__(self: _S) -> _S:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __aiter__(self) -> AsyncIterator[Frame]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Frame]:
        while True:
            try:
                yield await self.read()
            except EndOfStream:
                return

    def _count_frame(self, size: int = 0) -> int:
        """Count one more frame delivered (and ``size`` bytes of it) in ``stats``; returns its ``seq``."""
        seq = self._next_seq
        self._next_seq += 1
        self.stats.frames += 1
        self.stats.bytes += size
        return seq

    def iter_frames(self, limit: int | None = None) -> Generator[Frame, None, None]:
        """Blocking iterator over up to ``limit`` frames; works inside Jupyter's running loop.

        The source runs on a private event loop in a background thread, so this can be used
        from plain scripts and from notebooks alike. The source is closed when the iterator ends.

        Example:
            >>> from espdetect.sources import SyntheticSource
            >>> [f.seq for f in SyntheticSource(count=3).iter_frames()]
            [0, 1, 2]
        """
        runner = _LoopThread()
        try:
            n = 0
            while limit is None or n < limit:
                try:
                    frame = runner.run(self.read())
                except EndOfStream:
                    return
                n += 1
                yield frame
        finally:
            try:
                runner.run(self.aclose())
            finally:
                runner.stop()


class _LoopThread:
    """An event loop running in a daemon thread, for calling async code from sync code."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="espdetect-sync", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self.loop.close()
