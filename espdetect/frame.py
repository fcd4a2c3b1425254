"""`Frame`: one picture from a source, carrying its JPEG bytes and a lazily decoded image."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from espdetect.constraints import Reduce, check_bgr_image
from espdetect.exceptions import DecodeError

try:  # libjpeg-turbo with strict error reporting; OpenCV is the fallback
    import simplejpeg as _simplejpeg
except ImportError:  # pragma: no cover - simplejpeg is a declared dependency
    _simplejpeg = None

__all__ = ["Frame", "Reduce", "decode_gray", "decode_jpeg", "jpeg_size"]

_REDUCED_FLAGS: dict[int, int] = {
    1: cv2.IMREAD_COLOR,
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}


def decode_jpeg(data: bytes, reduce: Reduce = 1) -> np.ndarray:
    """Decode JPEG bytes to a BGR image, optionally at 1/2, 1/4 or 1/8 scale.

    Reduced decoding skips most of the IDCT work, so it is much cheaper than decoding at
    full size and resizing. With libjpeg-turbo's ``simplejpeg`` available (a dependency), the
    decode is strict: data libjpeg reports as corrupt (flipped bits mid-image, extraneous bytes)
    raises `DecodeError` instead of yielding a garbled picture, as OpenCV silently would.

    Example:
        >>> img = decode_jpeg(open("data/bus.jpg", "rb").read(), reduce=2)  # doctest: +SKIP
    """
    if reduce not in _REDUCED_FLAGS:
        raise ValueError(f"reduce must be one of 1, 2, 4, 8, got {reduce!r}")
    if not data:
        raise DecodeError(0, "empty")
    if _simplejpeg is not None:
        try:
            if reduce == 1:
                img = _simplejpeg.decode_jpeg(data, colorspace="BGR", strict=True)
            else:
                wh = jpeg_size(data)
                if wh is None:
                    raise DecodeError(len(data), "missing a frame header (SOF)")
                img = _simplejpeg.decode_jpeg(
                    data, colorspace="BGR", strict=True, min_width=wh[0] // reduce, min_height=wh[1] // reduce
                )
        except ValueError as exc:
            raise DecodeError(len(data), f"corrupt ({exc})") from None
        return np.asarray(img)
    img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), _REDUCED_FLAGS[reduce])
    if img is None:
        raise DecodeError(len(data))
    return img


def decode_gray(frame: Frame, reduce: Reduce) -> np.ndarray:
    """``frame`` as a grayscale (H, W) uint8 image at 1/``reduce`` scale, decoded for this call.

    From JPEG bytes libjpeg-turbo decodes the luma plane alone at the reduced scale, which costs
    a fraction of a colour decode (motion tests run on every frame); a frame without bytes is
    converted from its image.

    Raises:
        DecodeError: the JPEG is corrupt.
    """
    if frame.jpeg is None or _simplejpeg is None:
        return cv2.cvtColor(frame.image(reduce), cv2.COLOR_BGR2GRAY)
    data = frame.jpeg
    try:
        wh = jpeg_size(data) if reduce != 1 else None
        if reduce != 1 and wh is None:
            raise DecodeError(len(data), "missing a frame header (SOF)")
        kwargs = {"min_width": wh[0] // reduce, "min_height": wh[1] // reduce} if wh is not None else {}
        gray = _simplejpeg.decode_jpeg(data, colorspace="GRAY", strict=True, **kwargs)
    except ValueError as exc:
        raise DecodeError(len(data), f"corrupt ({exc})") from None
    return np.asarray(gray)[:, :, 0]


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """Width and height read from a JPEG's SOF marker without decoding, or None if absent."""
    n = len(data)
    if n < 4 or data[0] != 0xFF or data[1] != 0xD8:
        return None
    i = 2
    while i + 9 < n:
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        seg_len = (data[i + 2] << 8) | data[i + 3]
        # SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC) carry the frame size.
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h = (data[i + 5] << 8) | data[i + 6]
            w = (data[i + 7] << 8) | data[i + 8]
            return (w, h)
        if marker == 0xDA:  # start of scan: no SOF before it
            return None
        i += 2 + seg_len
    return None


@dataclass(eq=False)
class Frame:
    """One frame from a source.

    ``jpeg`` holds the original compressed bytes when the source has them (ESP32 streams,
    recorded clips), so they can be forwarded without re-encoding. ``image()`` decodes lazily,
    at most once per scale, and is safe to call from several threads.

    ``arrival`` is the Unix time at which the frame reached us; ``arrival_mono`` the same
    instant on ``time.perf_counter()``'s clock, for measuring durations.

    Example:
        >>> f = Frame.from_image(np.zeros((240, 320, 3), np.uint8), seq=0, source_id="test")
        >>> f.size
        (320, 240)
    """

    seq: int
    source_id: str
    jpeg: bytes | None = None
    arrival: float = field(default_factory=time.time)
    arrival_mono: float = field(default_factory=time.perf_counter)
    #: The camera's own timestamp (seconds since boot for an ESP32), when it sent one.
    camera_timestamp: float | None = None
    _images: dict[int, np.ndarray] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        if self.jpeg is None and 1 not in self._images:
            raise ValueError("a Frame needs JPEG bytes or a decoded image, got neither")

    @classmethod
    def from_image(
        cls,
        image: np.ndarray,
        *,
        seq: int,
        source_id: str,
        arrival: float | None = None,
        arrival_mono: float | None = None,
    ) -> Frame:
        """Wrap an already decoded BGR image (sources without compressed bytes)."""
        check_bgr_image(image)
        return cls(
            seq=seq,
            source_id=source_id,
            jpeg=None,
            arrival=time.time() if arrival is None else arrival,
            arrival_mono=time.perf_counter() if arrival_mono is None else arrival_mono,
            _images={1: image},
        )

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the full-scale image, read from the JPEG header when possible."""
        full = self._images.get(1)
        if full is not None:
            return (full.shape[1], full.shape[0])
        assert self.jpeg is not None
        wh = jpeg_size(self.jpeg)
        if wh is not None:
            return wh
        img = self.image()
        return (img.shape[1], img.shape[0])

    @property
    def nbytes(self) -> int:
        """Size of the compressed bytes (0 when the source had none)."""
        return len(self.jpeg) if self.jpeg is not None else 0

    def image(self, reduce: Reduce = 1) -> np.ndarray:
        """The decoded BGR image, decoded on first request (reduced scale when asked).

        Raises:
            DecodeError: the JPEG bytes are corrupt.
        """
        img = self._images.get(reduce)
        if img is not None:
            return img
        with self._lock:
            img = self._images.get(reduce)
            if img is not None:
                return img
            if self.jpeg is not None:
                img = decode_jpeg(self.jpeg, reduce)
            else:
                full = self._images[1]
                h, w = full.shape[:2]
                img = cv2.resize(
                    full, (max(1, w // reduce), max(1, h // reduce)), interpolation=cv2.INTER_AREA
                )
            self._images[reduce] = img
            return img

    @property
    def decoded(self) -> bool:
        """Whether a decoded image is held (sources without JPEG bytes always hold one)."""
        return bool(self._images)
