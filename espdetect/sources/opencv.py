"""`OpenCVSource`: the newest frame from a webcam or any stream OpenCV opens (RTSP, HTTP, files)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time

import cv2
import numpy as np

from espdetect.exceptions import EndOfStream, SourceUnavailable
from espdetect.frame import Frame
from espdetect.sources._retry import Backoff, Retry
from espdetect.sources.base import FrameSource

__all__ = ["OpenCVSource"]

logger = logging.getLogger(__name__)


class OpenCVSource(FrameSource):
    """Frames from ``cv2.VideoCapture`` on a camera index or URL, read by a worker thread.

    The thread reads continuously and keeps only the newest frame, so a slow consumer gets
    fresh frames instead of a growing backlog (RTSP buffers otherwise fall behind); frames
    it never picked up are counted in ``stats.dropped`` and show as gaps in ``seq``. When the
    capture fails or ends, it is re-opened with capped exponential backoff (``reconnect=True``)
    or the source ends (``reconnect=False``: `EndOfStream` after a stream that worked,
    `SourceUnavailable` when it never opened).

    Args:
        index_or_url: a camera index (``0``) or anything ``cv2.VideoCapture`` opens.
        source_id: name used in frames and logs.
        reconnect: re-open the capture when it fails or ends.
        backoff_initial: first re-open delay in seconds (doubles per failure).
        backoff_max: the largest re-open delay in seconds.
        api_preference: an OpenCV backend (``cv2.CAP_FFMPEG``, ``cv2.CAP_V4L2``...), or None for any.

    Example:
        >>> async def webcam() -> Frame:  # doctest: +SKIP
        ...     async with OpenCVSource(0) as src:
        ...         return await src.read()
    """

    def __init__(
        self,
        index_or_url: int | str,
        *,
        source_id: str | None = None,
        reconnect: bool = True,
        backoff_initial: float = 0.1,
        backoff_max: float = 2.0,
        api_preference: int | None = None,
    ) -> None:
        super().__init__()
        self.target = index_or_url
        default_id = f"camera{index_or_url}" if isinstance(index_or_url, int) else str(index_or_url)
        self.source_id = source_id or default_id
        self.reconnect = reconnect
        self.api_preference = api_preference
        self.backoff = Backoff(backoff_initial, backoff_max)
        self._retry = Retry(self.backoff, logger, "retrying")
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup = asyncio.Event()
        self._latest: tuple[int, np.ndarray, float, float, float | None] | None = None
        self._produced = 0
        self._terminal: BaseException | None = None
        self._closed = False

    async def read(self) -> Frame:
        """The newest frame not yet returned; waits for the next one when there is none.

        Raises:
            EndOfStream: the source was closed, or (reconnect=False) the stream ended.
            SourceUnavailable: (reconnect=False) the capture could not be opened.
        """
        while True:
            if self._closed:
                raise EndOfStream(f"{self.source_id}: source closed")
            with self._lock:
                latest, terminal = self._latest, self._terminal
                self._latest = None
            if latest is not None:
                seq, image, arrival, arrival_mono, position = latest
                frame = Frame.from_image(
                    image, seq=seq, source_id=self.source_id, arrival=arrival, arrival_mono=arrival_mono
                )
                frame.camera_timestamp = position
                return frame
            if terminal is not None:
                raise terminal
            if self._thread is None:
                self._start()
            self._wakeup.clear()
            # Re-check after clearing: the worker may have published in between.
            with self._lock:
                pending = self._latest is not None or self._terminal is not None
            if not pending:
                await self._wakeup.wait()

    async def aclose(self) -> None:
        """Stop the worker thread and release the capture."""
        self._closed = True
        self._stop.set()
        self._wakeup.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            # A capture blocked in read() (dead RTSP server) can take its own timeout to return.
            await asyncio.to_thread(thread.join, 10.0)
            if thread.is_alive():
                logger.warning("%s: capture thread still busy after 10 s; leaving it to exit", self.source_id)
        self.stats.connected = False

    def _start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._work, name=f"opencv-{self.source_id}", daemon=True)
        self._thread.start()

    def _notify(self) -> None:
        loop = self._loop
        if loop is None:
            return
        # A closed loop means nobody is waiting any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._wakeup.set)

    def _open(self) -> cv2.VideoCapture | None:
        if self.api_preference is None:
            cap = cv2.VideoCapture(self.target)
        else:
            cap = cv2.VideoCapture(self.target, self.api_preference)
        if cap.isOpened():
            return cap
        cap.release()
        return None

    def _work(self) -> None:
        cap: cv2.VideoCapture | None = None
        opened_once = False
        worked = False
        try:
            while not self._stop.is_set():
                if cap is None:
                    cap = self._open()
                    if cap is None:
                        self.stats.connect_failures += 1
                        if self._give_up(f"cannot open {self.target!r}", worked):
                            return
                        continue
                    if opened_once:
                        self.stats.reconnects += 1
                    opened_once = True
                    self.stats.connected = True
                    logger.info("%s: capture opened", self.source_id)
                ok, image = cap.read()
                if not ok or image is None:
                    cap.release()
                    cap = None
                    self.stats.connected = False
                    if self._give_up("the capture ended or failed", worked):
                        return
                    continue
                worked = True
                if image.ndim == 2:
                    image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
                position = float(cap.get(cv2.CAP_PROP_POS_MSEC)) / 1000.0
                self._publish(image, position)
                if self.backoff.attempt:
                    self._retry.reset()
        except Exception as exc:  # OpenCV raising is a bug somewhere: report it to the reader
            logger.exception("%s: capture thread failed", self.source_id)
            with self._lock:
                self._terminal = SourceUnavailable(str(self.target), f"capture thread failed: {exc!r}")
            self._notify()
        finally:
            if cap is not None:
                cap.release()
            self.stats.connected = False

    def _publish(self, image: np.ndarray, position: float | None) -> None:
        with self._lock:
            seq = self._produced
            self._produced += 1
            if self._latest is not None:
                self.stats.dropped += 1
            self._latest = (seq, image, time.time(), time.perf_counter(), position or None)
        self.stats.frames += 1
        self._notify()

    def _give_up(self, reason: str, worked: bool) -> bool:
        """Decide after a failure: True ends the worker (reason recorded), False retries after a delay."""
        if not self.reconnect:
            terminal: BaseException = (
                EndOfStream(f"{self.source_id}: {reason}")
                if worked
                else SourceUnavailable(str(self.target), reason)
            )
            with self._lock:
                self._terminal = terminal
            self._notify()
            return True
        return self._stop.wait(self._retry.next_delay(self.source_id, reason))
