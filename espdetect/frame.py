"""`Frame`: one picture from a source, carrying its JPEG bytes and a lazily decoded image."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import simplejpeg

from espdetect.constraints import Reduce, check_bgr_image
from espdetect.exceptions import DecodeError

__all__ = ["Frame", "Reduce", "bgr_to_gray", "decode_gray", "decode_jpeg", "jpeg_size", "shrink"]

_REDUCES: Final = (1, 2, 4, 8)
#: OpenCV's fixed-point BGR -> gray weights (B, G, R; 15 fractional bits): the same luma, to the
#: bit, as ``cv2.cvtColor(..., COLOR_BGR2GRAY)`` gives, without needing OpenCV installed.
_GRAY_WEIGHTS: Final = (3735, 19235, 9798)
_GRAY_SHIFT: Final = 15


def decode_jpeg(data: bytes, reduce: Reduce = 1) -> np.ndarray:
    """Decode JPEG bytes to a BGR image, optionally at 1/2, 1/4 or 1/8 scale.

    Reduced decoding skips most of the IDCT work, so it is much cheaper than decoding at
    full size and resizing. The decode (libjpeg-turbo through ``simplejpeg``) is strict: data
    libjpeg reports as corrupt (flipped bits mid-image, extraneous bytes, not a JPEG at all)
    raises `DecodeError` instead of yielding a garbled picture, as OpenCV silently would.

    Example:
        >>> img = decode_jpeg(open("data/bus.jpg", "rb").read(), reduce=2)  # doctest: +SKIP
    """
    if reduce not in _REDUCES:
        raise ValueError(f"reduce must be one of 1, 2, 4, 8, got {reduce!r}")
    if not data:
        raise DecodeError(0, "empty")
    try:
        if reduce == 1:
            img = simplejpeg.decode_jpeg(data, colorspace="BGR", strict=True)
        else:
            wh = jpeg_size(data)
            if wh is None:
                raise DecodeError(len(data), "missing a frame header (SOF)")
            img = simplejpeg.decode_jpeg(
                data, colorspace="BGR", strict=True, min_width=wh[0] // reduce, min_height=wh[1] // reduce
            )
    except ValueError as exc:  # simplejpeg's one error type for bytes libjpeg rejects
        raise DecodeError(len(data), f"corrupt ({exc})") from None
    return np.asarray(img)


def decode_gray(frame: Frame, reduce: Reduce) -> np.ndarray:
    """``frame`` as a grayscale (H, W) uint8 image at 1/``reduce`` scale, decoded for this call.

    From JPEG bytes libjpeg-turbo decodes the luma plane alone at the reduced scale, which costs
    a fraction of a colour decode (motion tests run on every frame); a frame without bytes is
    converted from its image.

    Raises:
        DecodeError: the JPEG is corrupt.
    """
    if frame.jpeg is None:
        return bgr_to_gray(frame.image(reduce))
    data = frame.jpeg
    try:
        wh = jpeg_size(data) if reduce != 1 else None
        if reduce != 1 and wh is None:
            raise DecodeError(len(data), "missing a frame header (SOF)")
        kwargs = {"min_width": wh[0] // reduce, "min_height": wh[1] // reduce} if wh is not None else {}
        gray = simplejpeg.decode_jpeg(data, colorspace="GRAY", strict=True, **kwargs)
    except ValueError as exc:
        raise DecodeError(len(data), f"corrupt ({exc})") from None
    return np.asarray(gray)[:, :, 0]


def bgr_to_gray(image: np.ndarray) -> np.ndarray:
    """The (H, W) uint8 luma of a BGR ``image``, equal to OpenCV's ``COLOR_BGR2GRAY`` to the bit.

    Example:
        >>> bgr_to_gray(np.array([[[255, 0, 0], [0, 0, 255]]], np.uint8)).tolist()
        [[29, 76]]
    """
    # uint32 holds 255 * 32768 with room; OpenCV rounds by adding half before the shift.
    wb, wg, wr = _GRAY_WEIGHTS
    luma = image[:, :, 0].astype(np.uint32) * wb
    luma += image[:, :, 1].astype(np.uint32) * wg
    luma += image[:, :, 2].astype(np.uint32) * wr
    luma += 1 << (_GRAY_SHIFT - 1)
    luma >>= _GRAY_SHIFT
    return luma.astype(np.uint8)


def shrink(image: np.ndarray, reduce: Reduce) -> np.ndarray:
    """``image`` (H, W, C uint8) averaged down to ``max(1, W // reduce)`` x ``max(1, H // reduce)``.

    OpenCV's ``cv2.resize(..., interpolation=INTER_AREA)`` at that size without OpenCV. When the
    size divides into whole blocks (640x480, 1280x720, 1920x1080 at 2, 4, 8) each output pixel is
    the rounded mean of its block, the same to the bit. Otherwise each output pixel covers a
    fractional span of the source weighted by overlap, as OpenCV's area resampling does (within
    one grey level: float sums in another order), rather than dropping the leftover rows and
    columns, so boxes found on the small image still scale back by ``W / w``.

    Example:
        >>> shrink(np.arange(16, dtype=np.uint8).reshape(4, 4, 1), 2)[:, :, 0].tolist()
        [[3, 5], [11, 13]]
    """
    h, w = image.shape[:2]
    out_h, out_w = max(1, h // reduce), max(1, w // reduce)
    if h % out_h == 0 and w % out_w == 0:
        return _block_mean(image, h // out_h, w // out_w)
    return _area_resample(image, out_h, out_w)


def _block_mean(image: np.ndarray, fy: int, fx: int) -> np.ndarray:
    """Mean of each ``fy`` x ``fx`` block, rounded as OpenCV's integer-scale INTER_AREA rounds."""
    h, w, c = image.shape
    out_h, out_w = h // fy, w // fx
    # A block is at most 15 x 15 (a side just under 2 * 8 shrinks to one pixel), so uint16 holds
    # its sum. Whole rows first, then neighbouring pixels: contiguous runs, about twice as fast
    # as summing strided views.
    rows = image.reshape(out_h, fy, w * c)
    column_sums = rows[:, 0].astype(np.uint16)
    for dy in range(1, fy):
        column_sums += rows[:, dy]
    pixels = column_sums.reshape(out_h, out_w, fx * c)
    acc = pixels[:, :, :c].copy()
    for dx in range(1, fx):
        acc += pixels[:, :, dx * c : (dx + 1) * c]
    if fy == fx == 2:
        # OpenCV's 2x2 path computes (sum + 2) >> 2: halves round up.
        acc += 2
        acc >>= 2
        return acc.astype(np.uint8)
    # The other factors multiply by 1 / area in float32 and round to nearest even; the same
    # float32 steps round a sum near a half the same way (14 / 28 rounds up there).
    scale = np.float32(1) / np.float32(fy * fx)
    mean: np.ndarray = np.rint(acc.astype(np.float32) * scale)
    return mean.astype(np.uint8)


def _area_taps(n_src: int, n_dst: int) -> tuple[np.ndarray, np.ndarray]:
    """Source indices and weights (n_dst, k) of each output pixel along one axis, by overlap."""
    scale = n_src / n_dst
    start = np.arange(n_dst) * scale
    index = np.floor(start).astype(np.intp)[:, None] + np.arange(int(np.ceil(scale)) + 1)
    overlap = np.minimum(start[:, None] + scale, index + 1) - np.maximum(start[:, None], index)
    weight = np.clip(overlap, 0.0, None) / scale
    # Taps past the end have zero weight; clamping keeps their index valid.
    return np.minimum(index, n_src - 1), weight.astype(np.float32)


def _area_resample(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Area resampling at a fractional scale, separably: rows first (whole-row gathers are cheap)."""
    rows_at, rows_w = _area_taps(image.shape[0], out_h)
    cols_at, cols_w = _area_taps(image.shape[1], out_w)
    rows = np.zeros((out_h, *image.shape[1:]), np.float32)
    for k in range(rows_at.shape[1]):
        rows += image[rows_at[:, k]] * rows_w[:, k, None, None]
    out = np.zeros((out_h, out_w, *image.shape[2:]), np.float32)
    for k in range(cols_at.shape[1]):
        out += rows[:, cols_at[:, k]] * cols_w[:, k, None]
    return np.rint(out).astype(np.uint8)


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
            jpeg = self.jpeg
            img = decode_jpeg(jpeg, reduce) if jpeg is not None else shrink(self._images[1], reduce)
            self._images[reduce] = img
            return img

    @property
    def decoded(self) -> bool:
        """Whether a decoded image is held (sources without JPEG bytes always hold one)."""
        return bool(self._images)
