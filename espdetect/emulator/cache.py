"""Pre-encoded JPEG frames, so that serving a frame costs a dictionary lookup, not an encode.

Each distinct picture setting (size, quality, mirror, flip, colour bars) gets its own loop of
encoded frames, filled on first use (or all at once by :meth:`FrameCache.prerender`). Only the
few most recently used settings are kept, which bounds memory.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict

import cv2

from espdetect.emulator.scene import Image, Scene, color_bars
from espdetect.emulator.sensor import SensorView

__all__ = ["FrameCache", "encode_frame", "jpeg_quality"]


def jpeg_quality(esp_quality: int) -> int:
    """The libjpeg quality (1..100) that best matches an ESP32 ``quality`` (0..63, lower is better).

    The OV2640 scales its quantisation tables linearly with ``quality``; libjpeg scales them by
    ``5000/Q`` percent below Q=50 and ``200-2Q`` above. A scale of 7 % per step matches the sizes
    people report (VGA at quality 10 around 12-15 KB): 10 -> 65, 12 -> 58, 63 -> 11, 0 -> 100.

    Example:
        >>> [jpeg_quality(q) for q in (0, 10, 12, 63)]
        [100, 65, 58, 11]
    """
    if not 0 <= esp_quality <= 63:
        raise ValueError(f"expected an ESP32 JPEG quality 0..63, got {esp_quality!r}")
    scale = 7.0 * esp_quality
    quality = 100 - scale / 2 if scale <= 100 else 5000 / scale
    return max(1, min(100, round(quality)))


def encode_frame(scene: Scene, index: int, view: SensorView) -> bytes:
    """Render and encode one frame as the sensor settings in ``view`` dictate (blocking)."""
    img: Image = color_bars(view.size) if view.colorbar else scene.render(index, view.size)
    if view.hmirror or view.vflip:
        code = -1 if view.hmirror and view.vflip else (1 if view.hmirror else 0)
        img = cv2.flip(img, code)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality(view.quality)])
    if not ok:
        raise RuntimeError(f"OpenCV failed to encode a {view.size} frame")
    return buf.tobytes()


class FrameCache:
    """Encoded frames of a scene, per sensor setting, filled lazily off the event loop.

    Example:
        >>> cache = FrameCache(PhotoScene(frames=30))  # doctest: +SKIP
        >>> jpeg = await cache.get(0, SensorView((320, 240), 12, False, False, False))  # doctest: +SKIP
    """

    def __init__(self, scene: Scene, max_variants: int = 4) -> None:
        if max_variants < 1:
            raise ValueError(f"expected max_variants >= 1, got {max_variants}")
        self.scene = scene
        self._max_variants = max_variants
        self._variants: OrderedDict[SensorView, list[bytes | None]] = OrderedDict()
        self._pending: dict[tuple[SensorView, int], asyncio.Future[bytes]] = {}

    @property
    def frame_count(self) -> int:
        return self.scene.frame_count

    def _frames(self, view: SensorView) -> list[bytes | None]:
        frames = self._variants.get(view)
        if frames is None:
            frames = [None] * self.scene.frame_count
            self._variants[view] = frames
            while len(self._variants) > self._max_variants:
                self._variants.popitem(last=False)
        else:
            self._variants.move_to_end(view)
        return frames

    def cached(self, index: int, view: SensorView) -> bytes | None:
        """The encoded frame if it is ready, without rendering."""
        frames = self._variants.get(view)
        return None if frames is None else frames[index % self.scene.frame_count]

    async def get(self, index: int, view: SensorView) -> bytes:
        """Frame ``index`` (taken modulo the loop length) encoded for ``view``."""
        index %= self.scene.frame_count
        frames = self._frames(view)
        data = frames[index]
        if data is not None:
            return data
        key = (view, index)
        future = self._pending.get(key)
        if future is None:
            future = asyncio.ensure_future(asyncio.to_thread(encode_frame, self.scene, index, view))
            self._pending[key] = future
            future.add_done_callback(lambda f: self._store(key, f))
        # Shielded: one client going away must not cancel a render others wait for.
        return await asyncio.shield(future)

    def _store(self, key: tuple[SensorView, int], future: asyncio.Future[bytes]) -> None:
        self._pending.pop(key, None)
        view, index = key
        frames = self._variants.get(view)
        if frames is not None and not future.cancelled() and future.exception() is None:
            frames[index] = future.result()

    async def prerender(self, view: SensorView) -> None:
        """Encode the whole loop for ``view`` now (in a worker thread)."""
        frames = self._frames(view)
        missing = [i for i, data in enumerate(frames) if data is None]

        def work() -> list[bytes]:
            return [encode_frame(self.scene, i, view) for i in missing]

        for i, data in zip(missing, await asyncio.to_thread(work), strict=True):
            frames[i] = data
