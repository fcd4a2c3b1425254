"""Small structured-concurrency helpers on anyio: racing waits, and tasks stopped on demand."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Final, TypeVar

import anyio
from anyio.abc import TaskGroup

__all__ = ["Stage", "first_completed", "run_blocking"]

_T = TypeVar("_T")

#: Seconds a cancelled stage may spend on its own cleanup (closing a connection) before it is cut short.
CLEANUP_TIMEOUT: Final = 5.0


def run_blocking(coro: Coroutine[Any, Any, _T], thread_name: str = "espdetect") -> _T:
    """Run ``coro`` to its end on a fresh event loop and return its result, from any caller.

    ``asyncio.run`` refuses to start inside a running loop, which is where Jupyter runs every
    cell; there the coroutine runs on a private loop in a worker thread instead.

    Example:
        >>> async def two() -> int:
        ...     return 2
        >>> run_blocking(two())
        2
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=thread_name) as pool:
        return pool.submit(asyncio.run, coro).result()


async def first_completed(*waits: Callable[[], Awaitable[object]]) -> int:
    """Run every wait concurrently; when one returns, cancel the others and return its index.

    Example:
        >>> async def demo() -> int:
        ...     return await first_completed(anyio.sleep_forever, lambda: anyio.sleep(0))
        >>> anyio.run(demo)
        1
    """
    winner: list[int] = []

    async def run(index: int, wait: Callable[[], Awaitable[object]], group: TaskGroup) -> None:
        await wait()
        winner.append(index)
        group.cancel_scope.cancel()

    async with anyio.create_task_group() as group:
        for index, wait in enumerate(waits):
            group.start_soon(run, index, wait, group)
    return winner[0]


class Stage:
    """One long-running job of a task group that can be stopped on its own and awaited.

    The task group owns the task (its errors reach the group); the stage holds the cancel
    scope that stops it and an event that says it has finished, cleanup included.

    Example:
        >>> async def demo() -> bool:
        ...     async with anyio.create_task_group() as tg:
        ...         stage = Stage("sleeper")
        ...         stage.start(tg, anyio.sleep_forever)
        ...         await stage.stop()
        ...         return stage.running
        >>> anyio.run(demo)
        False
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._scope: anyio.CancelScope | None = None
        # Made on first start: an anyio event needs a running event loop.
        self._done: anyio.Event | None = None

    @property
    def running(self) -> bool:
        """Started, not asked to stop, and not finished."""
        return (
            self._scope is not None
            and not self._scope.cancel_called
            and self._done is not None
            and not self._done.is_set()
        )

    def start(self, group: TaskGroup, job: Callable[[], Awaitable[None]]) -> None:
        """Run ``job`` in ``group``; an earlier run of this stage may still be finishing."""
        scope = self._scope = anyio.CancelScope()
        done = self._done = anyio.Event()

        async def run() -> None:
            try:
                with scope:
                    await job()
            finally:
                done.set()

        group.start_soon(run, name=self.name)

    def cancel(self) -> None:
        """Ask the current run to stop (returns at once)."""
        if self._scope is not None:
            self._scope.cancel()

    async def stop(self) -> None:
        """Stop the current run and wait until it has finished."""
        self.cancel()
        if self._done is not None:
            await self._done.wait()
