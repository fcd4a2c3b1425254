"""Pre-encoded JPEG frames, so that serving a frame costs a dictionary lookup, not an encode.

The cache holds JPEG bytes, one per frame index of the scene's loop, for each distinct picture
setting (size, quality, mirror, flip, colour bars), exactly as they go on the wire: sensor noise
and the brightness ramp (`~espdetect.emulator.scene.SensorEffects`) are already in them, so each
index has its own JPEG even where the scene stands still. A loop is filled on first use (or all
at once by :meth:`FrameCache.prerender`). Memory is bounded twice: only the few most recently
used settings are kept, and all of them together hold at most ``max_bytes``; a frame that does
not fit is encoded again each time it is served. (A 900-frame loop, 60 s of the yard at 15 fps,
takes about 38 MB at VGA and quality 12, but about 145 MB at 1600x1200 and 1.1 GB at quality 0.)
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict

import cv2

from espdetect.emulator.scene import Image, Scene, color_bars
from espdetect.emulator.sensor import SensorView

__all__ = ["DEFAULT_MAX_BYTES", "FrameCache", "encode_frame", "jpeg_quality"]

logger = logging.getLogger(__name__)

#: The most encoded bytes a `FrameCache` holds unless told otherwise.
DEFAULT_MAX_BYTES = 256 << 20


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


class _Loop:
    """The encoded frames of one sensor setting and how many bytes they take."""

    __slots__ = ("frames", "nbytes")

    def __init__(self, frame_count: int) -> None:
        self.frames: list[bytes | None] = [None] * frame_count
        self.nbytes = 0


class FrameCache:
    """Encoded frames of a scene, per sensor setting, filled lazily off the event loop.

    At most ``max_variants`` settings and ``max_bytes`` of JPEG data are kept (least recently
    used settings go first); frames past the byte budget are served but not kept.

    Example:
        >>> cache = FrameCache(PhotoScene(frames=30), max_bytes=64 << 20)  # doctest: +SKIP
        >>> jpeg = await cache.get(0, SensorView((320, 240), 12, False, False, False))  # doctest: +SKIP
    """

    def __init__(self, scene: Scene, max_variants: int = 4, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_variants < 1:
            raise ValueError(f"expected max_variants >= 1, got {max_variants}")
        if max_bytes < 0:
            raise ValueError(f"expected max_bytes >= 0, got {max_bytes}")
        self.scene = scene
        self._max_variants = max_variants
        self._max_bytes = max_bytes
        self._variants: OrderedDict[SensorView, _Loop] = OrderedDict()
        self._pending: dict[tuple[SensorView, int], asyncio.Future[bytes]] = {}
        self._full_logged = False

    @property
    def frame_count(self) -> int:
        return self.scene.frame_count

    @property
    def nbytes(self) -> int:
        """JPEG bytes held now, all settings together."""
        return sum(loop.nbytes for loop in self._variants.values())

    def _loop(self, view: SensorView) -> _Loop:
        loop = self._variants.get(view)
        if loop is None:
            loop = _Loop(self.scene.frame_count)
            self._variants[view] = loop
            while len(self._variants) > self._max_variants:
                self._variants.popitem(last=False)
        else:
            self._variants.move_to_end(view)
        return loop

    def _put(self, view: SensorView, index: int, data: bytes) -> None:
        """Keep ``data`` as frame ``index`` of ``view``, evicting older settings to make room."""
        loop = self._variants.get(view)
        if loop is None or loop.frames[index] is not None:
            return  # the setting was evicted meanwhile, or another render got there first
        total = self.nbytes
        while total + len(data) > self._max_bytes:
            oldest = next(iter(self._variants))
            if oldest == view:
                if not self._full_logged:
                    self._full_logged = True
                    logger.info(
                        "frame cache full (%d MiB): further frames are encoded each time they are sent",
                        self._max_bytes >> 20,
                    )
                return
            total -= self._variants.pop(oldest).nbytes
        loop.frames[index] = data
        loop.nbytes += len(data)

    def cached(self, index: int, view: SensorView) -> bytes | None:
        """The encoded frame if it is ready, without rendering."""
        loop = self._variants.get(view)
        return None if loop is None else loop.frames[index % self.scene.frame_count]

    async def get(self, index: int, view: SensorView) -> bytes:
        """Frame ``index`` (taken modulo the loop length) encoded for ``view``."""
        index %= self.scene.frame_count
        data = self._loop(view).frames[index]
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
        if not future.cancelled() and future.exception() is None:
            self._put(*key, future.result())

    async def prerender(self, view: SensorView) -> None:
        """Encode the whole loop for ``view`` now (in a worker thread), as far as ``max_bytes`` allows."""
        loop = self._loop(view)
        missing = [i for i, data in enumerate(loop.frames) if data is None]
        # Other settings may be evicted for this one, but not past the budget: stop encoding there
        # rather than hold a loop that will not be kept.
        room = self._max_bytes - loop.nbytes

        def work() -> list[bytes]:
            encoded: list[bytes] = []
            used = 0
            for i in missing:
                data = encode_frame(self.scene, i, view)
                used += len(data)
                if used > room:
                    break
                encoded.append(data)
            return encoded

        for i, data in zip(missing, await asyncio.to_thread(work), strict=False):
            self._put(view, i, data)
