"""Worker threads for the blocking per-frame work of pipelines, shareable by several cameras.

A model call on a CPU already keeps every core busy (ONNX Runtime and PyTorch parallelise each
inference), so running one per camera at the same time only makes every call slower, and while
they fight, drawing and encoding wait behind them: with one shared pool, eight cameras on two
cores delivered about 1 frame/s each instead of 15. `Workers` therefore keeps the two kinds of
work apart: model calls take turns on ``detect_slots`` threads, in the order the cameras asked,
and rendering has threads of its own that never queue behind a model call.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

__all__ = ["Workers"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Workers:
    """Threads for model calls and for rendering; one instance may serve many pipelines.

    ``detect_slots`` is how many model calls run at once across every pipeline using this
    instance (1 suits a CPU; a GPU may gain from 2). ``render_threads`` bounds decoding,
    drawing and encoding running at once; one per camera means no camera waits for another.

    Example:
        >>> import asyncio
        >>> async def demo() -> int:
        ...     workers = Workers(detect_slots=1, render_threads=2)
        ...     try:
        ...         async with workers.detection_turn():
        ...             return await workers.detect(sum, [1, 2, 3])
        ...     finally:
        ...         workers.close()
        >>> asyncio.run(demo())
        6
    """

    def __init__(self, detect_slots: int = 1, render_threads: int = 1, *, name: str = "espdetect") -> None:
        if detect_slots < 1:
            raise ValueError(f"detect_slots must be >= 1, got {detect_slots}")
        if render_threads < 1:
            raise ValueError(f"render_threads must be >= 1, got {render_threads}")
        self.detect_slots = detect_slots
        self.render_threads = render_threads
        # Threads start on first use, so an unused instance costs nothing.
        self._detect_pool = ThreadPoolExecutor(detect_slots, thread_name_prefix=f"{name}-detect")
        self._render_pool = ThreadPoolExecutor(render_threads, thread_name_prefix=f"{name}-render")
        self._turns: asyncio.Semaphore | None = None
        self._closed = False

    @contextlib.asynccontextmanager
    async def detection_turn(self) -> AsyncIterator[None]:
        """Wait until a model call may start (first come, first served), hold the turn inside.

        Choose the frame *after* the turn is granted: the wait can be a whole inference
        of another camera, and the newest frame is the one worth detecting.
        """
        if self._turns is None:
            self._turns = asyncio.Semaphore(self.detect_slots)
        async with self._turns:
            yield

    @property
    def turn_free(self) -> bool:
        """Whether `detection_turn` would be granted without waiting."""
        return self._turns is None or not self._turns.locked()

    async def detect(self, fn: Callable[..., T], /, *args: object, **kwargs: object) -> T:
        """Run a model call ``fn(*args, **kwargs)`` on a detection thread."""
        return await self._run(self._detect_pool, functools.partial(fn, *args, **kwargs))

    async def render(self, fn: Callable[..., T], /, *args: object, **kwargs: object) -> T:
        """Run decoding, drawing or encoding ``fn(*args, **kwargs)`` on a render thread."""
        return await self._run(self._render_pool, functools.partial(fn, *args, **kwargs))

    @staticmethod
    async def _run(pool: ThreadPoolExecutor, call: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(pool, call)

    def close(self) -> None:
        """Stop the threads once their current call returns; queued calls are dropped."""
        if not self._closed:
            self._closed = True
            self._detect_pool.shutdown(wait=False, cancel_futures=True)
            self._render_pool.shutdown(wait=False, cancel_futures=True)
