"""Picture files in and out, through Pillow: `read_image` and `write_jpeg`.

For what runs without OpenCV installed (the server image leaves it out): ``espdetect detect``
and scripts that hand a file to a detector. On JPEG and PNG files both give what ``cv2.imread``
and ``cv2.imwrite`` gave, pixel for pixel and byte for byte (Pillow decodes and encodes JPEG with
the same libjpeg-turbo defaults).

Example:
    >>> from espdetect.detectors import open_detector  # doctest: +SKIP
    >>> open_detector().detect(read_image("bus.jpg")).count_by_label()  # doctest: +SKIP
    {'person': 4, 'bus': 1}
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import numpy as np
from PIL import Image, ImageOps

from espdetect.constraints import check_bgr_image

__all__ = ["read_image", "write_jpeg"]

#: Pillow's modes for 16-bit grey pictures, which its RGB conversion clips at 255.
_SIXTEEN_BIT: Final = frozenset({"I;16", "I;16B", "I;16L", "I;16N"})


def read_image(path: str | Path) -> np.ndarray:
    """The picture in ``path`` as an (H, W, 3) BGR uint8 array, what ``cv2.imread(path)`` gives.

    Any format Pillow reads; turned upright per its EXIF orientation, grey and palette pictures
    expanded to three channels, alpha dropped, 16-bit samples scaled to 8 bits, as OpenCV does.

    Raises:
        OSError: ``path`` is missing, or is not a picture Pillow can decode (unknown format,
            truncated data, or more pixels than Pillow's decompression-bomb limit).

    Example:
        >>> read_image("bus.jpg").shape  # doctest: +SKIP
        (1080, 810, 3)
    """
    try:
        with Image.open(path) as opened:
            picture = ImageOps.exif_transpose(opened)
            if picture.mode in _SIXTEEN_BIT:
                grey = (np.asarray(picture, np.uint16) >> 8).astype(np.uint8)
                return np.repeat(grey[:, :, None], 3, axis=2)
            rgb = np.asarray(picture.convert("RGB"))
    except Image.DecompressionBombError as exc:  # not an OSError; one error type for callers
        raise OSError(f"{path}: {exc}") from exc
    except ImportError as exc:
        # Ultralytics, once imported, wraps Image.open to retry a file Pillow cannot identify
        # with a HEIF plugin, and raises ImportError where that plugin is not installed.
        raise OSError(f"{path}: not a picture Pillow can identify ({exc})") from exc
    return np.ascontiguousarray(rgb[:, :, ::-1])


def write_jpeg(path: str | Path, image: np.ndarray, quality: int = 95) -> None:
    """Write a BGR ``image`` to ``path`` as a baseline JPEG; quality 95 is ``cv2.imwrite``'s default.

    Raises:
        ValueError: ``image`` is not a non-empty (H, W, 3) uint8 array.
        OSError: the file cannot be written.
    """
    rgb = np.ascontiguousarray(check_bgr_image(image)[:, :, ::-1])
    Image.fromarray(rgb).save(path, "JPEG", quality=quality)
