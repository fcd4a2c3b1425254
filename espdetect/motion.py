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

The image work is numpy (and Pillow to fill the mask polygons), not OpenCV, so the server runs
without OpenCV installed: at 1/8 scale a frame is a few thousand pixels, where numpy costs
microseconds per step.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw

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
            blurred = _blur(gray)
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
            background += np.float32(config.adapt) * diff  # a running average, towards the frame
            boxes = _boxes(changed, config.min_area, frame.size)
        return MotionResult(boxes, fraction, False, _ms(start))

    def _valid_mask(self, shape: tuple[int, ...]) -> np.ndarray:
        if self._mask is None or self._mask.shape != shape[:2]:
            h, w = shape[:2]
            valid = Image.new("L", (w, h), 255)
            draw = ImageDraw.Draw(valid)
            for polygon in self.config.masks:
                corners = np.round(np.asarray(polygon, np.float64) * (w - 1, h - 1)).astype(int)
                points = [(x, y) for x, y in corners.tolist()]
                draw.polygon(points, fill=0)
                # Every pixel the edges touch is masked too (Pillow's fill leaves some on slanted
                # edges), so a mask covers what it did with OpenCV's fillPoly to within a pixel.
                draw.line([*points, points[0]], fill=0, width=1)
            self._mask = np.asarray(valid) > 0
        return self._mask


_NO_BOXES = np.zeros((0, 4), np.float32)
#: Pixels the changed regions grow by on each side before they are boxed (two 3x3 dilations).
_GROW = 2


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


def _blur(gray: np.ndarray) -> np.ndarray:
    """A 3x3 Gaussian blur of a uint8 image, as float32: OpenCV's ``GaussianBlur(gray, (3, 3), 0)``
    (a [1, 2, 1] / 4 kernel each way, edges mirrored without repeating the edge pixel), unrounded.

    Example:
        >>> _blur(np.array([[0, 16, 0]], np.uint8)).tolist()
        [[8.0, 8.0, 8.0]]
    """
    h, w = gray.shape
    # Mirrored borders (BORDER_REFLECT_101: row -1 is row 1), or the edge itself when one pixel wide.
    padded = np.empty((h + 2, w + 2), np.uint16)  # sums of 16 uint8 fit
    padded[1:-1, 1:-1] = gray
    padded[0, 1:-1] = gray[min(1, h - 1)]
    padded[-1, 1:-1] = gray[max(h - 2, 0)]
    padded[:, 0] = padded[:, min(2, w)]
    padded[:, -1] = padded[:, max(w - 1, 1)]
    rows = padded[:-2] + padded[2:]
    rows += padded[1:-1]
    rows += padded[1:-1]
    out = rows[:, :-2] + rows[:, 2:]
    out += rows[:, 1:-1]
    out += rows[:, 1:-1]
    blurred: np.ndarray = np.multiply(out, np.float32(1 / 16), dtype=np.float32)
    return blurred


def _grow(mask: np.ndarray, by: int) -> np.ndarray:
    """``mask`` dilated by a (2 * by + 1)-pixel square, one axis after the other (a maximum is separable)."""
    wide = mask.copy()
    for step in range(1, by + 1):
        wide[:, step:] |= mask[:, :-step]
        wide[:, :-step] |= mask[:, step:]
    grown = wide.copy()
    for step in range(1, by + 1):
        grown[step:] |= wide[:-step]
        grown[:-step] |= wide[step:]
    return grown


def _regions(mask: np.ndarray) -> np.ndarray:
    """(N, 4) int64 ``x1, y1, x2, y2`` (ends exclusive) bounding each 8-connected region of ``mask``.

    Works on the mask's horizontal runs (a few per row of a region), not its pixels, in a fixed
    number of numpy calls for the usual shapes: each run is joined to the first run it touches in
    the row above, pointer jumping takes every run to the top of its chain, and only runs touching
    several runs above (a U, a Y) need a union-find pass. OpenCV's contours did this in C; here
    the cost stays with numpy's per-call overhead (~50 us at VGA/8) rather than a Python loop.

    Example:
        >>> _regions(np.array([[1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0], [0, 1, 0, 0]], bool)).tolist()
        [[0, 0, 3, 2], [1, 3, 2, 4]]
    """
    h, w = mask.shape
    stride = w + 2  # a blank column either side, so no run spans two rows
    padded = np.zeros((h, stride), bool)
    padded[:, 1:-1] = mask
    flat = padded.ravel()
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    starts, ends = edges[0::2], edges[1::2]  # flat positions, row-major; ends exclusive
    n = len(starts)
    if n == 0:
        return np.zeros((0, 4), np.int64)
    # The runs in the row above that touch a run (diagonally too) are a range of indices: those
    # ending at or after its start, up to those starting at or before its end, less a row.
    first = np.searchsorted(ends, starts - stride)
    last = np.searchsorted(starts, ends - stride, side="right")
    index = np.arange(n)
    labels = np.where(last > first, first, index)  # under the first run above it, if any
    # Each step of a chain climbs one row, so log2(h) doublings reach every chain's top.
    for _ in range((h - 1).bit_length()):
        labels = labels[labels]
    forks = np.flatnonzero(last - first > 1)
    if len(forks):  # runs touching more runs above than the first: union those too
        count = last[forks] - first[forks] - 1
        below = np.repeat(forks, count)
        upper = np.arange(len(below)) - np.repeat(np.cumsum(count) - count - first[forks] - 1, count)
        while True:
            a, b = labels[upper], labels[below]  # roots: every label points at one here
            apart = a != b
            if not apart.any():
                break
            # Hook the larger root under the smaller, then jump until all point at roots again.
            np.minimum.at(labels, np.maximum(a, b)[apart], np.minimum(a, b)[apart])
            while not np.array_equal(jumped := labels[labels], labels):
                labels = jumped
    rows = starts // stride
    offset = rows * stride + 1
    x1 = np.full(n, w)
    np.minimum.at(x1, labels, starts - offset)
    x2 = np.zeros(n, np.int64)
    np.maximum.at(x2, labels, ends - offset)
    y2 = np.zeros(n, np.int64)
    np.maximum.at(y2, labels, rows)
    roots = np.flatnonzero(labels == index)  # a region's root is its first run: its top row
    return np.stack([x1[roots], rows[roots], x2[roots], y2[roots] + 1], axis=1)


def _boxes(changed: np.ndarray, min_area: float, size: tuple[int, int]) -> np.ndarray:
    """Boxes around the changed regions large enough to count, in full-frame pixels (one per
    8-connected region, a region inside a hole of another included)."""
    if not changed.any():
        return _NO_BOXES
    h, w = changed.shape
    # Joins the pieces of one moving object (a person's arm and torso) into one region.
    regions = _regions(_grow(changed, _GROW))
    spans = regions[:, 2:] - regions[:, :2]
    regions = regions[spans[:, 0] * spans[:, 1] >= min_area * w * h]
    scale = np.array([size[0] / w, size[1] / h] * 2)
    boxes: np.ndarray = (regions * scale).astype(np.float32).reshape(-1, 4)
    return boxes
