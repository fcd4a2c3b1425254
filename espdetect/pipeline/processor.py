"""`FrameProcessor`: the blocking per-frame work (decode, detect, draw, encode) and its results.

The server's `CameraPipeline` and the profiler's replay both run frames through this class,
so what is measured is what is served.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import numpy as np

from espdetect.annotate import Annotator
from espdetect.constraints import DecodeReduce, Reduce
from espdetect.detections import Detections
from espdetect.detectors.base import Detector, DetectParams
from espdetect.encoders.base import Encoder
from espdetect.frame import Frame

__all__ = ["DetectionResult", "FrameProcessor", "RenderTimings", "Rendered", "choose_reduce"]


class RenderTimings(NamedTuple):
    """Milliseconds spent producing one output frame."""

    decode_ms: float
    annotate_ms: float
    encode_ms: float

    @property
    def total_ms(self) -> float:
        return self.decode_ms + self.annotate_ms + self.encode_ms


_NO_TIMINGS = RenderTimings(0.0, 0.0, 0.0)


@dataclass(frozen=True, eq=False)
class DetectionResult:
    """Detections computed on one frame, with the time it took."""

    frame: Frame
    detections: Detections
    decode_ms: float
    #: Scale the image was decoded at for detection (boxes are already in full-scale pixels).
    reduce: int
    started_mono: float
    finished_mono: float

    @property
    def detect_ms(self) -> float:
        return (self.finished_mono - self.started_mono) * 1000.0

    def to_dict(self) -> dict[str, object]:
        """JSON form (server-sent events, logs)."""
        out = self.detections.to_dict()
        out.update(
            seq=self.frame.seq,
            source=self.frame.source_id,
            timestamp=round(self.frame.arrival, 6),
            width=self.frame.size[0],
            height=self.frame.size[1],
            detect_ms=round(self.detect_ms, 3),
        )
        return out


@dataclass(eq=False)
class Rendered:
    """One output frame: annotated JPEG bytes (or the camera's own) and how they came to be.

    ``encoded(quality)`` returns the image at another JPEG quality, encoding each quality at
    most once per frame whatever the number of viewers asking.
    """

    frame: Frame
    jpeg: bytes
    #: The JPEG quality of ``jpeg``; None when the camera's own bytes were passed through.
    quality: int | None
    #: The detections drawn, or None when the camera's JPEG was passed through.
    detection: DetectionResult | None
    #: True when the drawn detections were computed on this very frame or not drawn before.
    fresh: bool
    timings: RenderTimings
    ready_mono: float
    image: np.ndarray | None = field(default=None, repr=False)
    encoder: Encoder | None = field(default=None, repr=False)
    #: The boxes drawn (the detections, or the tracks' predicted boxes); None when nothing was.
    drawn: Detections | None = field(default=None, repr=False)
    _variants: dict[int, bytes] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def repeated(self, frame: Frame) -> Rendered:
        """This picture again as the output for ``frame`` (a still scene: nothing to redraw).

        The encoded variants are shared, so each quality is still encoded once.
        """
        return replace(self, frame=frame, fresh=False, timings=_NO_TIMINGS, ready_mono=time.perf_counter())

    @property
    def latency_ms(self) -> float:
        """Frame arrival to output bytes ready."""
        return (self.ready_mono - self.frame.arrival_mono) * 1000.0

    def cached(self, quality: int) -> bytes | None:
        """The frame at JPEG ``quality`` if it is already encoded (never blocks), else None."""
        if quality == self.quality or self.image is None or self.encoder is None:
            return self.jpeg
        return self._variants.get(quality)

    def encoded(self, quality: int) -> bytes:
        """The frame at JPEG ``quality`` (blocking: call from a worker thread)."""
        if quality == self.quality or self.image is None or self.encoder is None:
            return self.jpeg
        with self._lock:
            data = self._variants.get(quality)
            if data is None:
                data = self.encoder.with_quality(quality).encode(self.image)
                self._variants[quality] = data
            return data


def choose_reduce(size: tuple[int, int], imgsz: int | None) -> Reduce:
    """The largest JPEG decode reduction that keeps the long side at least ``imgsz``.

    Example:
        >>> choose_reduce((1600, 1200), 640)
        2
    """
    if not imgsz:
        return 1
    long_side = max(size)
    for r in (8, 4, 2):
        if long_side // r >= imgsz:
            return r  # type: ignore[return-value]  # a member of Reduce
    return 1


class FrameProcessor:
    """The blocking per-frame work, shared by the server pipeline and the profiler.

    ``params`` are this processor's detection params (checked against the detector's model);
    they may be replaced at any time and apply from the next frame. ``encoder`` likewise.

    Example:
        >>> proc = FrameProcessor(detector, Annotator(), JpegEncoder(80))  # doctest: +SKIP
        >>> result = proc.detect(frame)
        >>> out = proc.render(frame, result, fresh=True)
    """

    def __init__(
        self,
        detector: Detector,
        annotator: Annotator | None,
        encoder: Encoder,
        *,
        params: DetectParams | None = None,
        decode_reduce: DecodeReduce = "auto",
    ) -> None:
        self.detector = detector
        self.annotator = annotator
        self.encoder = encoder
        self.params = detector.params if params is None else detector.check(params)
        self.decode_reduce = decode_reduce

    def reduce_for(self, frame: Frame) -> Reduce:
        if self.decode_reduce != "auto":
            return self.decode_reduce
        return choose_reduce(frame.size, self.params.imgsz)

    def detect(self, frame: Frame) -> DetectionResult:
        """Decode (reduced when useful) and detect.

        Raises:
            DecodeError: the frame's JPEG is corrupt.
            DetectorError: the model failed on it.
        """
        start = time.perf_counter()
        reduce = self.reduce_for(frame)
        if self.detector.info.remote and frame.jpeg is not None:
            # The model runs elsewhere: its bytes travel, the replica decodes (nothing decoded here).
            detections = self.detector.detect_jpeg(frame.jpeg, self.params, reduce)
            end = time.perf_counter()
            return DetectionResult(frame, detections, 0.0, reduce, start, end)
        image = frame.image(reduce)
        decoded = time.perf_counter()
        detections = self.detector.detect(image, self.params)
        if reduce != 1:
            detections = detections.scaled(frame.size[0] / image.shape[1])
        end = time.perf_counter()
        return DetectionResult(frame, detections, (decoded - start) * 1000.0, reduce, start, end)

    def render(
        self,
        frame: Frame,
        detection: DetectionResult | None,
        *,
        fresh: bool,
        passthrough: bool = False,
        boxes: Detections | None = None,
    ) -> Rendered:
        """Draw ``boxes`` (default: ``detection``'s) on ``frame`` and encode, or forward the
        camera's bytes when asked (``passthrough``: nothing is drawn, ``detection`` is kept as
        what the frame shows)."""
        start = time.perf_counter()
        if passthrough and frame.jpeg is not None:
            return Rendered(frame, frame.jpeg, None, detection, fresh, _NO_TIMINGS, start)
        image = frame.image()
        decoded = time.perf_counter()
        drawn = boxes if boxes is not None else detection.detections if detection is not None else None
        if drawn is not None and self.annotator is not None:
            image = self.annotator.annotate(image, drawn)
        annotated = time.perf_counter()
        encoder = self.encoder
        jpeg = encoder.encode(image)
        end = time.perf_counter()
        timings = RenderTimings(
            (decoded - start) * 1000.0, (annotated - decoded) * 1000.0, (end - annotated) * 1000.0
        )
        return Rendered(frame, jpeg, encoder.quality, detection, fresh, timings, end, image, encoder, drawn)
