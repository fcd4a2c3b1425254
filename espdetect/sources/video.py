"""`VideoFileSource`: decoded frames from a video file through OpenCV."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import cv2
import numpy as np

from espdetect.exceptions import EndOfStream, SourceUnavailable
from espdetect.frame import Frame
from espdetect.sources._blocking import BlockingCall, Pacer, ThreadedSource

__all__ = ["VideoFileSource"]

logger = logging.getLogger(__name__)

_Read = tuple[np.ndarray, float] | None


class VideoFileSource(ThreadedSource[_Read]):
    """Frames decoded from a video file (any format OpenCV's FFmpeg backend reads).

    Decoding runs in a worker thread. Frames carry the decoded image and no JPEG bytes;
    ``camera_timestamp`` is the frame's position in the video, in seconds. ``read()`` raises
    `EndOfStream` after the last frame (without ``loop``) or once closed, and `SourceUnavailable`
    when OpenCV cannot open or decode the file.

    Args:
        path: the video file.
        loop: rewind to the start after the last frame.
        realtime: deliver frames at the video's own frame rate instead of as fast as possible.
        source_id: name used in frames; defaults to the file name.

    Raises:
        SourceUnavailable: the file does not exist (checked here) or OpenCV cannot open it
            (raised by the first ``read()``).

    Example:
        >>> async def count(path: str) -> int:  # doctest: +SKIP
        ...     async with VideoFileSource(path) as src:
        ...         return len([f async for f in src])
    """

    def __init__(
        self,
        path: str | Path,
        *,
        loop: bool = False,
        realtime: bool = False,
        source_id: str | None = None,
    ) -> None:
        file = Path(path)
        if not file.is_file():
            raise SourceUnavailable(str(file), "expected a video file, got no such file")
        super().__init__(source_id or file.name)
        self.path = file
        self.loop = loop
        self.realtime = realtime
        #: Frames per second reported by the file (known after the first read).
        self.fps: float | None = None
        self._cap: cv2.VideoCapture | None = None
        self._opener: BlockingCall[tuple[cv2.VideoCapture, float]] = BlockingCall()
        self._pacer: Pacer | None = None

    async def _read(self) -> Frame:
        self._check_open()
        if self._cap is None:
            self._cap = await self._open()
        if self._pacer is not None:
            await self._pacer.wait()
        cap = self._cap
        result = await self._call.run(lambda: self._read_next(cap))
        if result is None:
            raise EndOfStream(f"{self.source_id}: end of video after {self.stats.frames} frames")
        image, position = result
        frame = Frame.from_image(image, seq=self._count_frame(), source_id=self.source_id)
        frame.camera_timestamp = position
        return frame

    async def aclose(self) -> None:
        """Release the decoder (after any read still running in the worker thread)."""
        await super().aclose()
        await self._opener.wait_idle()
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()

    async def _open(self) -> cv2.VideoCapture:
        def open_capture() -> tuple[cv2.VideoCapture, float]:
            cap = cv2.VideoCapture(str(self.path))
            if not cap.isOpened():
                cap.release()
                raise SourceUnavailable(
                    str(self.path), "expected a video OpenCV can read, got an unreadable file"
                )
            return cap, float(cap.get(cv2.CAP_PROP_FPS))

        cap, fps = await self._opener.run(open_capture)
        self.fps = fps if math.isfinite(fps) and fps > 0 else None
        if self.realtime:
            if self.fps is None:
                logger.warning("%s: the file reports no frame rate; pacing at 30 fps", self.source_id)
            self._pacer = Pacer(1.0 / (self.fps or 30.0))
        return cap

    def _read_next(self, cap: cv2.VideoCapture) -> _Read:
        ok, image = cap.read()
        if not ok and self.loop and self.stats.frames > 0:
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, image = cap.read()
        if not ok or image is None:
            return None
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        return image, float(cap.get(cv2.CAP_PROP_POS_MSEC)) / 1000.0
