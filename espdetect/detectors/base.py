"""`Detector`: turns an image into `Detections`."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from espdetect.detections import Detections

__all__ = ["Detector"]


class Detector(ABC):
    """Finds objects in a BGR image. ``detect`` blocks; run it off the event loop.

    Implementations fill ``Detections.timings`` with the per-stage times of the call.
    """

    #: Class id -> label of the model.
    names: dict[int, str]

    @abstractmethod
    def detect(self, image: np.ndarray) -> Detections:
        """Detect objects in ``image`` (H, W, 3 BGR uint8); boxes in that image's pixels."""
