"""JPEG encoders: `JpegEncoder` and the `make_encoder` factory.

The encoder is libjpeg-turbo through ``simplejpeg`` (also the strict decoder in
`espdetect.frame`), so that a server runs without OpenCV installed (the container image
leaves OpenCV out). It was ``OpenCVJpegEncoder``, backend "opencv", while it called ``cv2.imencode``.

Against the ``cv2.imencode`` it replaced, on a 640x480 photo: the same quantisation tables and
4:2:0 subsampling at a given quality, so ``quality`` means what it meant. The bytes differ, since
TurboJPEG uses libjpeg's fast integer DCT below quality 96: at quality 40-80 the PSNR is 0.01-0.04
dB lower and the size within 0.1 %; at 95, 0.6 dB lower. The time is the same within this VM's
noise (0.8-1.0 ms a frame at quality 80). ``benchmarks/bench_stages.py`` times the encode.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

import numpy as np
import simplejpeg

from espdetect.constraints import JPEG_QUALITY, check_bgr_image
from espdetect.encoders.base import Encoder
from espdetect.exceptions import ConfigurationError

__all__ = ["EncoderBackend", "JpegEncoder", "make_encoder"]

#: Encoder implementations `make_encoder` can build; "auto" picks the fastest available.
EncoderBackend = Literal["simplejpeg", "auto"]
#: Chroma at half resolution both ways, as cv2.imencode wrote it; simplejpeg's default, 4:4:4,
#: costs about 14 % more bytes at the same quality.
_SUBSAMPLING: Final = "420"


class JpegEncoder(Encoder):
    """Baseline JPEG through libjpeg-turbo (``simplejpeg``).

    Immutable, so one instance may be shared by threads.

    Example:
        >>> enc = JpegEncoder(quality=70)
        >>> enc.encode(np.zeros((240, 320, 3), np.uint8))[:2]
        b'\\xff\\xd8'
    """

    def __init__(self, quality: int = 80) -> None:
        self._quality = JPEG_QUALITY.check("quality", quality)

    @property
    def quality(self) -> int:
        return self._quality

    def encode(self, image: np.ndarray) -> bytes:
        """Compress a BGR image to baseline JPEG bytes.

        Raises:
            ValueError: ``image`` is not a non-empty (H, W, 3) uint8 array.
        """
        # TurboJPEG reads rows with no stride of their own: a view (a crop, a [::2] slice) is
        # copied first, a contiguous image is passed as is.
        pixels = np.ascontiguousarray(check_bgr_image(image))
        data: bytes = simplejpeg.encode_jpeg(
            pixels, quality=self._quality, colorspace="BGR", colorsubsampling=_SUBSAMPLING
        )
        return data

    def with_quality(self, quality: int) -> JpegEncoder:
        return self if quality == self._quality else JpegEncoder(quality)

    def __repr__(self) -> str:
        return f"JpegEncoder(quality={self._quality})"


def make_encoder(backend: EncoderBackend = "auto", quality: int = 80) -> Encoder:
    """Build the JPEG encoder named by ``backend`` at ``quality``.

    Raises:
        ConfigurationError: unknown backend or quality outside 1..100.

    Example:
        >>> make_encoder("auto", 60)
        JpegEncoder(quality=60)
    """
    if backend not in get_args(EncoderBackend):
        raise ConfigurationError(
            f"expected encoder backend to be one of {', '.join(get_args(EncoderBackend))}, got {backend!r}",
            field="backend",
        )
    return JpegEncoder(quality)
