"""`Encoder`: turns an image into compressed bytes."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

__all__ = ["Encoder"]


class Encoder(ABC):
    """Compresses a BGR image. ``encode`` blocks; run it off the event loop."""

    #: The MIME type of what ``encode`` returns.
    media_type: str = "image/jpeg"

    @abstractmethod
    def encode(self, image: np.ndarray) -> bytes:
        """Compress ``image`` (H, W, 3 BGR uint8)."""
