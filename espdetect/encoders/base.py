"""`Encoder`: turns an image into compressed bytes at a quality."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np

__all__ = ["Encoder"]


class Encoder(ABC):
    """Compresses a BGR image. ``encode`` blocks; run it off the event loop.

    An encoder is immutable: ``with_quality`` gives another one, so a server can swap the
    encoder of a running pipeline without locking.

    Example:
        >>> enc = JpegEncoder(quality=80)  # doctest: +SKIP
        >>> enc.with_quality(50).quality  # doctest: +SKIP
        50
    """

    #: The MIME type of what ``encode`` returns.
    media_type: ClassVar[str] = "image/jpeg"

    @property
    @abstractmethod
    def quality(self) -> int:
        """The quality ``encode`` compresses at (1..100, higher is better)."""

    @abstractmethod
    def encode(self, image: np.ndarray) -> bytes:
        """Compress ``image`` (H, W, 3 BGR uint8)."""

    @abstractmethod
    def with_quality(self, quality: int) -> Encoder:
        """The same encoder at another quality."""
