"""`EmulatorThread`: an :class:`Emulator` on its own event loop in a background thread.

For notebooks, scripts and synchronous tests (OpenCV, ffmpeg) that need a camera to talk to.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, TypeVar

from espdetect.emulator.config import EmulatorConfig
from espdetect.emulator.faults import Fault
from espdetect.emulator.server import CameraEndpoints, Emulator, EmulatorStats

__all__ = ["EmulatorThread"]

T = TypeVar("T")

_START_TIMEOUT = 60.0


class EmulatorThread(CameraEndpoints):
    """Runs an :class:`Emulator` in a daemon thread; a context manager with the same ports and URLs.

    The ports and URLs are those of the running emulator (RuntimeError when it is not running).

    Example:
        >>> with EmulatorThread(EmulatorConfig(fps=10.0)) as cam:  # doctest: +SKIP
        ...     cap = cv2.VideoCapture(cam.stream_url)
        ...     ok, img = cap.read()
    """

    def __init__(self, config: EmulatorConfig | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.config = config if config is not None else EmulatorConfig()
        self.host = host
        self.port = port
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._emulator: Emulator | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self) -> None:
        """Start the thread and wait until the emulator listens.

        Raises:
            ConfigurationError, OSError: whatever :meth:`Emulator.start` raised.
        """
        if self._thread is not None:
            raise RuntimeError("expected a stopped EmulatorThread, got one already started")
        self._ready.clear()
        self._error = None
        self._thread = threading.Thread(target=self._run, name="espdetect-emulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(_START_TIMEOUT):
            raise TimeoutError(f"expected the emulator to start within {_START_TIMEOUT} s, got no answer")
        if self._error is not None:
            self._thread.join()
            self._thread = None
            raise self._error

    def stop(self) -> None:
        """Stop the emulator (closing all connections) and join the thread."""
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None:
            return
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already finished
                loop.call_soon_threadsafe(stop.set)
        thread.join()
        self._thread = None
        self._emulator = None

    def __enter__(self) -> EmulatorThread:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        emulator = Emulator(self.config, self.host, self.port)
        try:
            await emulator.start()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._emulator = emulator
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await emulator.stop()

    # -- access from the calling thread ---------------------------------------------------------

    @property
    def emulator(self) -> Emulator:
        """The running emulator; touch its methods only through this class from other threads."""
        if self._emulator is None:
            raise RuntimeError("expected a started EmulatorThread, got one not running")
        return self._emulator

    def _call(self, make: Callable[[], Coroutine[Any, Any, T]], timeout: float | None = None) -> T:
        emulator = self.emulator  # raises when not running
        assert self._loop is not None and emulator is not None
        future = asyncio.run_coroutine_threadsafe(make(), self._loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"expected an answer from the emulator thread within {timeout} s") from None

    @property
    def control_port(self) -> int:
        return self.emulator.control_port

    @property
    def control_url(self) -> str:
        """Base URL of the control server (``/control``, ``/status``), like the firmware's port 80."""
        return self.emulator.control_url

    @property
    def stream_port(self) -> int:
        return self.emulator.stream_port

    @property
    def stats(self) -> EmulatorStats:
        """A snapshot of the emulator's counters."""
        emulator = self.emulator

        async def snapshot() -> EmulatorStats:
            return emulator.stats

        return self._call(snapshot)

    def set_faults(self, faults: tuple[Fault, ...] | list[Fault]) -> None:
        """Replace the active faults (thread-safe)."""
        emulator = self.emulator
        new = tuple(faults)

        async def apply() -> None:
            emulator.set_faults(new)

        self._call(apply)

    def wait_until(
        self, predicate: Callable[[EmulatorStats], bool], timeout: float | None = None
    ) -> EmulatorStats:
        """Block until ``predicate(stats)`` holds (see :meth:`Emulator.wait_until`)."""
        emulator = self.emulator
        return self._call(lambda: emulator.wait_until(predicate, timeout))

    def wait_stream_clients(self, n: int, timeout: float | None = None) -> EmulatorStats:
        """Block until exactly ``n`` streams are being served."""
        return self.wait_until(lambda s: s.stream_clients == n, timeout)
