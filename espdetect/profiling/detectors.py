"""Loading the detectors a sweep needs: one per model and precision, loaded once.

Example:
    >>> cache = DetectorCache(default_factory("cpu"))
    >>> det = cache.get(ProfileConfig(model="yolov8n.onnx"))  # doctest: +SKIP
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from espdetect.detectors.base import Detector
from espdetect.profiling.config import ProfileConfig

__all__ = ["DetectorCache", "DetectorFactory", "default_factory"]

#: Loads the detector a configuration needs (its model and precision; size and confidence go
#: with each call).
DetectorFactory = Callable[[ProfileConfig], Detector]


def default_factory(device: str | None = "cpu") -> DetectorFactory:
    """A factory of detectors on ``device``, on the runtime each model format needs (`open_detector`).

    Example:
        >>> make = default_factory("cpu")
        >>> det = make(ProfileConfig(model="yolov8n.onnx"))  # doctest: +SKIP
    """

    def make(config: ProfileConfig) -> Detector:
        from espdetect.detectors.factory import open_detector

        detector = open_detector(config.model, device=device, half=config.half)
        detector.warmup(2)
        return detector

    return make


class DetectorCache:
    """Detectors by (model, half), least recently used dropped beyond ``max_size``.

    A model that failed to load keeps failing from the cache instead of loading again.
    """

    def __init__(self, factory: DetectorFactory, max_size: int = 6) -> None:
        if max_size < 1:
            raise ValueError(f"max_size must be >= 1, got {max_size}")
        self.factory = factory
        self.max_size = max_size
        self._items: OrderedDict[tuple[str, bool], Detector | Exception] = OrderedDict()
        self.loads = 0

    def get(self, config: ProfileConfig) -> Detector:
        """The detector for ``config``'s model (its params go with each call).

        Raises:
            Exception: whatever the factory raised for this model (again on every call).
        """
        key = config.model_key
        item = self._items.get(key)
        if item is None:
            self.loads += 1
            try:
                item = self.factory(config)
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:  # remembered and re-raised for every configuration of this model
                item = exc
            self._items[key] = item
            while len(self._items) > self.max_size:
                self._items.popitem(last=False)
        self._items.move_to_end(key)
        if isinstance(item, Exception):
            raise item
        return item
