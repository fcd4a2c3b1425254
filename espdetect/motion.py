"""`MotionDetector`: is anything moving? A cheap test on a tiny grayscale decode, run on every frame.

Each frame is decoded at 1/8 (or 1/4, 1/2) scale straight to grayscale by libjpeg-turbo, which
costs a fraction of a full decode, blurred, and compared with a running background. What differs
by more than ``threshold`` grey levels, outside the masks, is motion; the boxes around it are
scaled back to the frame's pixels.

What it ignores, and how:

* JPEG and sensor noise: the blur and the threshold (noise moves pixels by a few levels);
* slow light changes (dusk, clouds, auto-exposure): the background follows the scene at
  ``adapt`` per frame, and the median difference over the frame (a uniform brightening) is
  subtracted before thresholding;
* a sudden global change (lights switched on, the sensor switching modes): when more than
  ``lighting_fraction`` of the frame changes at once, the background is reset instead of
  reporting motion everywhere;
* places that always move (a timestamp overlay, a tree): ``masks``, polygons in normalised
  coordinates.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import cv2
import numpy as np

from espdetect.constraints import FloatRange, IntRange, Reduce, check_decode_reduce
from espdetect.exceptions import ConfigurationError
from espdetect.frame import Frame, decode_gray

__all__ = ["THRESHOLD", "MotionConfig", "MotionDetector", "MotionResult", "Polygon", "check_polygons"]

#: A polygon in normalised frame coordinates: (x, y) pairs from 0 to 1, at least three.
Polygon = Sequence[Sequence[float]]

#: Grey levels a pixel must change by to count as motion.
THRESHOLD = IntRange(1, 255)
#: Fractions of the frame (areas, normalised coordinates).
_FRACTION = FloatRange(0.0, 1.0)


def check_polygons(value: object, name: str = "masks") -> tuple[tuple[tuple[float, float], ...], ...]:
    """``value`` as polygons of normalised (x, y) points, at least three each.

    Example:
        >>> check_polygons([[(0, 0), (0.3, 0), (0.3, 0.1)]])
        (((0.0, 0.0), (0.3, 0.0), (0.3, 0.1)),)
    """
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise ConfigurationError(f"expected {name} to be a list of polygons, got {value!r}", field=name)
    polygons = []
    for polygon in value:
        if isinstance(polygon, str | bytes) or not isinstance(polygon, Sequence) or len(polygon) < 3:
            raise ConfigurationError(
                f"expected each of {name} to be three or more [x, y] points, got {polygon!r}", field=name
            )
        points = []
        for point in polygon:
            if isinstance(point, str | bytes) or not isinstance(point, Sequence) or len(point) != 2:
                raise ConfigurationError(f"expected [x, y] points in {name}, got {point!r}", field=name)
            points.append((_FRACTION.check(name, point[0]), _FRACTION.check(name, point[1])))
        polygons.append(tuple(points))
    return tuple(polygons)


@dataclass(frozen=True)
class MotionConfig:
    """How `MotionDetector` decides what moved.

    Example:
        >>> MotionConfig(threshold=30, masks=[[(0, 0), (0.4, 0), (0.4, 0.08), (0, 0.08)]]).threshold
        30
    """

    #: Decode scale: 8 turns VGA into 80x60, plenty to see a person walk in.
    reduce: Reduce = 8
    #: Grey levels (after a 3x3 blur) a pixel must differ from the background by.
    threshold: int = 25
    #: Smallest moving region, as a fraction of the frame (at 1/8 VGA, 0.002 is about 10 pixels).
    min_area: float = 0.002
    #: How fast the background follows the scene, per frame (0.05: a stopped object fades in ~1 s at 15 fps).
    adapt: float = 0.05
    #: A change over more of the frame than this is a lighting change: the background is reset.
    lighting_fraction: float = 0.6
    #: Regions never to report (normalised polygons).
    masks: Sequence[Polygon] = field(default=())

    def __post_init__(self) -> None:
        reduce = check_decode_reduce(self.reduce, "motion_reduce")
        if reduce == "auto":
            raise ConfigurationError(
                "expected motion_reduce to be 1, 2, 4 or 8, got 'auto'", field="motion_reduce"
            )
        object.__setattr__(self, "reduce", reduce)
        object.__setattr__(self, "threshold", THRESHOLD.check("motion_threshold", self.threshold))
        object.__setattr__(self, "min_area", _FRACTION.check("motion_min_area", self.min_area))
        object.__setattr__(self, "adapt", _FRACTION.check("motion_adapt", self.adapt))
        object.__setattr__(
            self, "lighting_fraction", _FRACTION.check("motion_lighting_fraction", self.lighting_fraction)
        )
        object.__setattr__(self, "masks", check_polygons(self.masks, "motion_masks"))


class MotionResult(NamedTuple):
    """What moved in one frame."""

    #: (N, 4) xyxy boxes around the moving regions, in the frame's full-scale pixels.
    boxes: np.ndarray
    #: Fraction of the unmasked frame that changed (0 when the change was taken for lighting).
    fraction: float
    #: True when a change over most of the frame reset the background instead of counting.
    lighting: bool
    #: Milliseconds the test took (decode included).
    ms: float

    @property
    def moving(self) -> bool:
        return len(self.boxes) > 0


class MotionDetector:
    """A running-background motion test for one camera (not thread-safe per call: one caller).

    Example:
        >>> motion = MotionDetector(MotionConfig(threshold=20))
        >>> result = motion.detect(frame)  # doctest: +SKIP
        >>> result.moving, result.boxes  # doctest: +SKIP
    """

    def __init__(self, config: MotionConfig | None = None) -> None:
        self.config = config or MotionConfig()
        self._background: np.ndarray | None = None
        self._mask: np.ndarray | None = None  # True where motion counts
        self._lock = threading.Lock()

    def reset(self) -> None:
        """Forget the background (the next frame becomes it): a new connection, a new scene."""
        with self._lock:
            self._background = None

    def update(self, config: MotionConfig) -> None:
        """Use ``config`` from the next frame; a new decode scale or new masks reset the background."""
        with self._lock:
            if (config.reduce, config.masks) != (self.config.reduce, self.config.masks):
                self._background = None
                self._mask = None
            self.config = config

    def detect(self, frame: Frame) -> MotionResult:
        """Compare ``frame`` with the background and move the background towards it (blocking).

        Raises:
            DecodeError: the frame's JPEG is corrupt.
        """
        start = time.perf_counter()
        with self._lock:
            config = self.config
            gray = decode_gray(frame, config.reduce)
            blurred = cv2.GaussianBlur(gray, (3, 3), 0).astype(np.float32)
            background = self._background
            if background is None or background.shape != blurred.shape:
                self._background = blurred
                self._mask = None
                return MotionResult(_NO_BOXES, 0.0, False, _ms(start))
            mask = self._valid_mask(blurred.shape)
            if not mask.any():  # all masked: nothing can move
                self._background = blurred
                return MotionResult(_NO_BOXES, 0.0, False, _ms(start))
            # A uniform brightening or darkening (auto-exposure, dusk) moves the median difference,
            # not the shape: the background takes it at once, clipped as the sensor clips, so
            # saturated highlights that cannot brighten do not read as a change.
            background += float(np.median((blurred - background)[mask]))
            np.clip(background, 0.0, 255.0, out=background)
            diff = blurred - background
            changed = (np.abs(diff) > config.threshold) & mask
            fraction = float(changed.sum()) / max(1, int(mask.sum()))
            if fraction > config.lighting_fraction:
                self._background = blurred
                return MotionResult(_NO_BOXES, 0.0, True, _ms(start))
            cv2.accumulateWeighted(blurred, background, config.adapt)
            boxes = _boxes(changed, config.min_area, frame.size)
        return MotionResult(boxes, fraction, False, _ms(start))

    def _valid_mask(self, shape: tuple[int, ...]) -> np.ndarray:
        if self._mask is None or self._mask.shape != shape[:2]:
            h, w = shape[:2]
            valid = np.full((h, w), 255, np.uint8)
            for polygon in self.config.masks:
                points = np.round(np.asarray(polygon, np.float32) * (w - 1, h - 1)).astype(np.int32)
                cv2.fillPoly(valid, [points], 0)
            self._mask = valid > 0
        return self._mask


_NO_BOXES = np.zeros((0, 4), np.float32)
_DILATE = np.ones((3, 3), np.uint8)


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


def _boxes(changed: np.ndarray, min_area: float, size: tuple[int, int]) -> np.ndarray:
    """Boxes around the changed regions large enough to count, in full-frame pixels."""
    if not changed.any():
        return _NO_BOXES
    h, w = changed.shape
    # Joins the pieces of one moving object (a person's arm and torso) into one region.
    grown = cv2.dilate(changed.astype(np.uint8), _DILATE, iterations=2)
    contours, _ = cv2.findContours(grown, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    least = min_area * w * h
    scale_x, scale_y = size[0] / w, size[1] / h
    boxes = [
        (x * scale_x, y * scale_y, (x + bw) * scale_x, (y + bh) * scale_y)
        for x, y, bw, bh in (cv2.boundingRect(c) for c in contours)
        if bw * bh >= least
    ]
    return np.asarray(boxes, np.float32).reshape(-1, 4)
