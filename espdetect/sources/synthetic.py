"""`SyntheticSource`: deterministic generated frames with real JPEG bytes, for tests and benchmarks."""

from __future__ import annotations

import cv2
import numpy as np

from espdetect.exceptions import EndOfStream
from espdetect.frame import Frame
from espdetect.sources._blocking import Pacer, ThreadedSource

__all__ = ["SyntheticSource"]

_SHAPES = 3


class SyntheticSource(ThreadedSource[bytes]):
    """Generated frames: moving shapes over a gradient, JPEG-encoded like a camera's.

    Frame ``n`` depends only on ``(n, size, seed, quality)``, so two sources with the same
    settings give byte-identical JPEGs. ``camera_timestamp`` counts seconds at ``fps``
    (30 when unpaced), the way an ESP32's time-since-boot would. Frames are encoded in a
    worker thread; ``read()`` raises `EndOfStream` after ``count`` frames or once closed.

    Args:
        size: (width, height) of the frames.
        count: number of frames before `EndOfStream`; None for endless.
        fps: pace the frames at this rate; None delivers them as fast as they are encoded.
        seed: chooses the colours, starting positions and speeds.
        quality: JPEG quality (1-100).
        source_id: name used in frames.

    Example:
        >>> [f.size for f in SyntheticSource(size=(64, 48), count=2).iter_frames()]
        [(64, 48), (64, 48)]
    """

    def __init__(
        self,
        *,
        size: tuple[int, int] = (320, 240),
        count: int | None = None,
        fps: float | None = None,
        seed: int = 0,
        quality: int = 80,
        source_id: str = "synthetic",
    ) -> None:
        super().__init__(source_id)
        width, height = size
        if width < 16 or height < 16:
            raise ValueError(f"size must be at least (16, 16), got {size!r}")
        if count is not None and count < 0:
            raise ValueError(f"count must be >= 0 or None, got {count!r}")
        if fps is not None and not fps > 0:
            raise ValueError(f"fps must be > 0 or None, got {fps!r}")
        if not 1 <= quality <= 100:
            raise ValueError(f"quality must be in 1..100, got {quality!r}")
        self.size = (width, height)
        self.count = count
        self.fps = fps
        self.seed = seed
        self.quality = quality
        self._pacer = Pacer(1.0 / fps) if fps else None
        rng = np.random.default_rng(seed)
        self._background = _gradient(width, height, rng)
        self._starts = rng.uniform(0.0, 1.0, size=(_SHAPES, 2))
        # Speeds in image sizes per frame: slow enough to look like motion at 30 fps.
        directions = rng.choice([-1.0, 1.0], size=(_SHAPES, 2))
        self._speeds = rng.uniform(0.004, 0.02, size=(_SHAPES, 2)) * directions
        self._colors = [tuple(int(c) for c in rng.integers(0, 256, size=3)) for _ in range(_SHAPES)]

    async def _read(self) -> Frame:
        self._check_open()
        if self.count is not None and self._next_seq >= self.count:
            raise EndOfStream(f"{self.source_id}: all {self.count} frames delivered")
        if self._pacer is not None:
            await self._pacer.wait()
        seq = self._next_seq
        jpeg = await self._call.run(lambda: self.encode(seq))
        self._count_frame(len(jpeg))
        return Frame(
            seq=seq,
            source_id=self.source_id,
            jpeg=jpeg,
            camera_timestamp=seq / (self.fps or 30.0),
        )

    def render(self, seq: int) -> np.ndarray:
        """The BGR image of frame ``seq`` (deterministic)."""
        width, height = self.size
        img = self._background.copy()
        extent = np.array([width, height], dtype=np.float64)
        radius = max(4, min(width, height) // 8)
        for i in range(_SHAPES):
            # Positions bounce between the edges: a triangle wave of the travelled distance.
            travelled = (self._starts[i] + self._speeds[i] * seq) % 2.0
            frac = 1.0 - np.abs(travelled - 1.0)
            cx, cy = (int(v) for v in frac * (extent - 2 * radius) + radius)
            r = radius
            color = self._colors[i]
            if i % 3 == 0:
                cv2.circle(img, (cx, cy), r, color, thickness=-1, lineType=cv2.LINE_AA)
            elif i % 3 == 1:
                cv2.rectangle(img, (cx - r, cy - r), (cx + r, cy + r), color, thickness=-1)
            else:
                pts = np.array([[cx, cy - r], [cx - r, cy + r], [cx + r, cy + r]], np.int32)
                cv2.fillPoly(img, [pts], color, lineType=cv2.LINE_AA)
        scale = max(0.3, height / 480)
        white = (255, 255, 255)
        cv2.putText(img, f"{seq}", (4, height - 6), cv2.FONT_HERSHEY_SIMPLEX, scale, white, 1, cv2.LINE_AA)
        return img

    def encode(self, seq: int) -> bytes:
        """The JPEG bytes of frame ``seq`` (deterministic)."""
        ok, buf = cv2.imencode(".jpg", self.render(seq), [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:  # pragma: no cover - OpenCV always encodes a valid BGR image
            raise RuntimeError("OpenCV failed to encode a synthetic frame")
        return bytes(buf.tobytes())


def _gradient(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    top = rng.integers(0, 128, size=3).astype(np.float32)
    bottom = rng.integers(128, 256, size=3).astype(np.float32)
    t = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    column = top[None, :] * (1.0 - t) + bottom[None, :] * t
    return np.ascontiguousarray(np.broadcast_to(column[:, None, :], (height, width, 3)).astype(np.uint8))
