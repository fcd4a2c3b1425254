"""Helpers for sources that do blocking work (file reads, OpenCV) and pace their output."""

from __future__ import annotations

import asyncio
import time
from abc import abstractmethod
from collections.abc import Callable
from typing import Generic, TypeVar

from espdetect.exceptions import EndOfStream
from espdetect.frame import Frame
from espdetect.sources.base import FrameSource

__all__ = ["BlockingCall", "Pacer", "ThreadedSource"]

T = TypeVar("T")


class BlockingCall(Generic[T]):
    """Runs one blocking call at a time in a worker thread, surviving cancellation of the caller.

    If the coroutine awaiting ``run()`` is cancelled, the thread keeps going (threads cannot be
    interrupted) and the next ``run()`` returns *that* call's result instead of starting a new
    one, so no frame read from a file or capture is ever lost.
    """

    def __init__(self) -> None:
        self._task: asyncio.Task[T] | None = None

    async def run(self, fn: Callable[[], T]) -> T:
        if self._task is None:
            self._task = asyncio.ensure_future(asyncio.to_thread(fn))
        task = self._task
        try:
            # shield: a cancelled caller must not cancel the thread's future and lose its result.
            result = await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.cancelled():
                self._task = None
            raise  # the caller was cancelled: keep the call for the next run()
        except BaseException:
            self._task = None
            raise
        self._task = None
        return result

    async def wait_idle(self) -> None:
        """Wait for an orphaned call (its caller was cancelled) to finish, ignoring its outcome."""
        task, self._task = self._task, None
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)


class Pacer:
    """Spaces events ``interval`` seconds apart on the monotonic clock.

    With ``catch_up=False`` a consumer that falls behind does not get a burst of overdue
    events afterwards: the schedule restarts from now, as a live camera's would.
    """

    def __init__(self, interval: float, *, catch_up: bool = False) -> None:
        if not interval > 0:
            raise ValueError(f"interval must be > 0 seconds, got {interval!r}")
        self.interval = interval
        self.catch_up = catch_up
        self._last: float | None = None

    async def wait(self) -> None:
        now = time.perf_counter()
        if self._last is None:
            self._last = now
            return
        due = self._last + self.interval
        if not self.catch_up and now > due + self.interval:
            due = now
        if due > now:
            await asyncio.sleep(due - now)
        # Only commit after the sleep: a cancelled wait leaves the schedule as it was.
        self._last = due


class ThreadedSource(FrameSource, Generic[T]):
    """A `FrameSource` whose reads do blocking work (file reads, decoding) in a worker thread.

    ``read()`` runs one read at a time, so a second concurrent ``read()`` cannot take over the
    first one's pending call. A subclass implements `_read`, runs its blocking work through
    ``self._call`` (which yields ``T``), calls `_check_open` before each step of a read that may
    loop, and numbers each frame it returns with ``_count_frame``.

    Example:
        >>> class Blank(ThreadedSource[bytes]):  # doctest: +SKIP
        ...     async def _read(self) -> Frame:
        ...         self._check_open()
        ...         jpeg = await self._call.run(lambda: encode_blank_jpeg())
        ...         return Frame(seq=self._count_frame(len(jpeg)), source_id=self.source_id, jpeg=jpeg)
    """

    def __init__(self, source_id: str) -> None:
        super().__init__()
        self.source_id = source_id
        self._call: BlockingCall[T] = BlockingCall()
        self._closed = False
        self._lock = asyncio.Lock()

    async def read(self) -> Frame:
        """The next frame; the class says when the frames end and what it raises then.

        Raises:
            EndOfStream: no more frames, or the source was closed.
        """
        async with self._lock:
            return await self._read()

    @abstractmethod
    async def _read(self) -> Frame:
        """The next frame; called with the read lock held."""

    def _check_open(self) -> None:
        if self._closed:
            raise EndOfStream(f"{self.source_id}: source closed")

    async def aclose(self) -> None:
        """Stop reading, after any blocking call still running in the worker thread."""
        self._closed = True
        await self._call.wait_idle()
