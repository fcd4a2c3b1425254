"""JPEG encoders: `OpenCVJpegEncoder` and the `make_encoder` factory.

OpenCV's wheels already encode through libjpeg-turbo. simplejpeg (the libjpeg-turbo binding
espdetect uses for strict decoding) was measured as an encoder against it on 320x240 and
640x480 frames at qualities 40-80: within 2-5 % either way, a few hundredths of a millisecond
per frame, so no second encoder backend is shipped. ``benchmarks/bench_stages.py`` repeats
that comparison.
"""

from __future__ import annotations

from typing import Literal, get_args

import cv2
import numpy as np

from espdetect.constraints import JPEG_QUALITY, check_bgr_image
from espdetect.encoders.base import Encoder
from espdetect.exceptions import ConfigurationError

__all__ = ["EncoderBackend", "OpenCVJpegEncoder", "make_encoder"]

#: Encoder implementations `make_encoder` can build; "auto" picks the fastest available.
EncoderBackend = Literal["opencv", "auto"]


class OpenCVJpegEncoder(Encoder):
    """Baseline JPEG through ``cv2.imencode`` (libjpeg-turbo inside OpenCV's wheels).

    Immutable, so one instance may be shared by threads.

    Example:
        >>> enc = OpenCVJpegEncoder(quality=70)
        >>> enc.encode(np.zeros((240, 320, 3), np.uint8))[:2]
        b'\\xff\\xd8'
    """

    def __init__(self, quality: int = 80) -> None:
        self._quality = JPEG_QUALITY.check("quality", quality)
        self._params = [cv2.IMWRITE_JPEG_QUALITY, self._quality]

    @property
    def quality(self) -> int:
        return self._quality

    def encode(self, image: np.ndarray) -> bytes:
        """Compress a BGR image to baseline JPEG bytes.

        Raises:
            ValueError: ``image`` is not a non-empty (H, W, 3) uint8 array.
        """
        ok, buf = cv2.imencode(".jpg", check_bgr_image(image), self._params)
        if not ok:  # pragma: no cover - OpenCV fails only on shapes rejected above
            raise ValueError(f"expected an encodable image, got shape {image.shape} that OpenCV refused")
        return bytes(buf.tobytes())

    def with_quality(self, quality: int) -> OpenCVJpegEncoder:
        return self if quality == self._quality else OpenCVJpegEncoder(quality)

    def __repr__(self) -> str:
        return f"OpenCVJpegEncoder(quality={self._quality})"


def make_encoder(backend: EncoderBackend = "auto", quality: int = 80) -> Encoder:
    """Build the JPEG encoder named by ``backend`` at ``quality``.

    Raises:
        ConfigurationError: unknown backend or quality outside 1..100.

    Example:
        >>> make_encoder("auto", 60)
        OpenCVJpegEncoder(quality=60)
    """
    if backend not in get_args(EncoderBackend):
        raise ConfigurationError(
            f"expected encoder backend to be one of {', '.join(get_args(EncoderBackend))}, got {backend!r}",
            field="backend",
        )
    return OpenCVJpegEncoder(quality)
