"""A tiny deterministic world for profiling tests: a moving square and a detector that finds it."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from espdetect.detections import Detections, StageTimings
from espdetect.detectors.base import Detector, DetectParams, ModelInfo
from espdetect.frame import Frame
from espdetect.profiling.config import ProfileConfig
from espdetect.sources.clip import ClipWriter

FRAMES = 30
FPS = 15.0
SQUARE = 40
#: Pixels the square moves per frame: boxes one frame old still match (IoU 0.67), two do not (0.43).
STEP = 8


def square_image(i: int, size: tuple[int, int] = (320, 240)) -> np.ndarray:
    w, h = size
    img = np.zeros((h, w, 3), np.uint8)
    x = 10 + (i * STEP) % (w - SQUARE - 20)
    cv2.rectangle(img, (x, 100), (x + SQUARE - 1, 100 + SQUARE - 1), (255, 255, 255), -1)
    return img


class SquareDetector(Detector):
    """Finds the bright square exactly: the bounding box of pixels above mid-grey, class 0."""

    def __init__(self, fixed_imgsz: int | None = None) -> None:
        self._info = ModelInfo("squares", {0: "square"}, backend="test", fixed_imgsz=fixed_imgsz)
        self.params = self.check(DetectParams())
        self.seen_params: list[DetectParams] = []

    @property
    def info(self) -> ModelInfo:
        return self._info

    def _detect(self, image: np.ndarray, params: DetectParams) -> Detections:
        self.seen_params.append(params)
        ys, xs = np.nonzero(image[:, :, 1] > 128)
        if len(xs) == 0:
            return Detections.empty(self._info.names)
        box = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float32)
        timings = StageTimings(0.1, 0.5, 0.1)
        return Detections(box, np.array([0.9], np.float32), np.array([0]), self._info.names, timings)


class SquareFactory:
    """A detector factory that records the configurations it built detectors for."""

    def __init__(self) -> None:
        self.calls: list[ProfileConfig] = []

    def __call__(self, config: ProfileConfig) -> Detector:
        self.calls.append(config)
        return SquareDetector()


def write_square_clip(path: Path, frames: int = FRAMES, fps: float = FPS, *, still: bool = False) -> Path:
    """A clip of the moving square with arrival times exactly 1/fps apart.

    ``still``: every frame is the same JPEG (the square never moves).
    """
    with ClipWriter(path, source="test squares") as writer:
        for i in range(frames):
            ok, buf = cv2.imencode(".jpg", square_image(0 if still else i), [cv2.IMWRITE_JPEG_QUALITY, 90])
            assert ok
            writer.write(Frame(seq=i, source_id="squares", jpeg=buf.tobytes(), arrival_mono=100.0 + i / fps))
    return path
