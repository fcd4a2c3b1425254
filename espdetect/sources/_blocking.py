"""Helpers for sources that do blocking work (file reads, OpenCV) and pace their output."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["BlockingCall", "Pacer"]

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
