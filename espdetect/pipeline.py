"""The per-camera pipeline: latest-frame semantics from the source to annotated JPEG bytes.

Three stages share one source connection:

* the **reader** publishes every frame the source delivers into the ``raw`` slot;
* the **detector loop** takes the newest frame the skip policy accepts, runs the detector
  in a worker thread and publishes into ``detections``; it never works through a backlog;
* the **renderer** takes each newest frame, draws the most recent detections on it (or passes
  the camera's JPEG through untouched, see `StaleMode`), encodes once and publishes into
  ``output``.

Slots hold only the newest value (`Latest`), so a slow consumer drops frames for itself and
nothing queues. Each stage runs only while somebody asks for what it produces
(`CameraPipeline.subscribe`); with no subscribers the source is closed after a grace period.

`FrameProcessor` holds the blocking per-frame work (decode, detect, annotate, encode) so the
profiling harness replays clips through exactly the code the server runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Literal, NamedTuple, Protocol

import numpy as np

from espdetect.detections import Detections
from espdetect.detectors.base import Detector
from espdetect.encoders.base import Encoder
from espdetect.exceptions import DecodeError, EndOfStream, EspdetectError
from espdetect.frame import Frame, Reduce
from espdetect.latest import Latest, SlotClosed
from espdetect.sources.base import FrameSource
from espdetect.workers import Workers

__all__ = [
    "CameraPipeline",
    "DetectionResult",
    "FrameProcessor",
    "PipelineConfig",
    "PipelineStats",
    "RenderTimings",
    "Rendered",
    "Skip",
    "StaleMode",
    "SubscriptionKind",
    "choose_reduce",
]

logger = logging.getLogger(__name__)

#: Process every Nth frame (an int >= 1), or "auto": detect whenever the detector is free.
Skip = int | Literal["auto"]
SubscriptionKind = Literal["raw", "annotated", "detections"]


class StaleMode(str, Enum):
    """What the annotated stream shows on frames that got no fresh detection."""

    #: Draw the most recent detections (boxes do not flicker).
    DRAW_LAST = "draw_last"
    #: Forward the camera's JPEG untouched; boxes appear only on frames with fresh detections.
    RAW = "raw"


class AnnotatorLike(Protocol):
    """What the pipeline needs of an annotator (espdetect.annotate.Annotator fits)."""

    def annotate(self, image: np.ndarray, detections: Detections) -> np.ndarray: ...


@dataclass(frozen=True)
class PipelineConfig:
    """Per-camera processing settings, replaceable at run time with `CameraPipeline.update`.

    Example:
        >>> PipelineConfig(skip=3, stale=StaleMode.RAW).skip
        3
    """

    skip: Skip = "auto"
    stale: StaleMode = StaleMode.DRAW_LAST
    #: Decode at 1/2, 1/4 or 1/8 scale for detection; "auto" picks the largest reduction that
    #: keeps the image at least as large as the detector's input size.
    decode_reduce: Reduce | Literal["auto"] = "auto"
    #: Seconds the source stays open after the last subscriber leaves.
    grace_period: float = 1.0

    def __post_init__(self) -> None:
        if self.skip != "auto" and (
            not isinstance(self.skip, int) or isinstance(self.skip, bool) or self.skip < 1
        ):
            raise ValueError(f"skip must be an integer >= 1 or 'auto', got {self.skip!r}")
        if not isinstance(self.stale, StaleMode):
            object.__setattr__(self, "stale", StaleMode(self.stale))
        if self.decode_reduce not in (1, 2, 4, 8, "auto"):
            raise ValueError(f"decode_reduce must be 1, 2, 4, 8 or 'auto', got {self.decode_reduce!r}")
        if self.grace_period < 0:
            raise ValueError(f"grace_period must be >= 0 seconds, got {self.grace_period}")


class RenderTimings(NamedTuple):
    """Milliseconds spent producing one output frame."""

    decode_ms: float
    annotate_ms: float
    encode_ms: float


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
    quality: int | None
    #: The detections drawn, or None when the camera's JPEG was passed through.
    detection: DetectionResult | None
    #: True when the drawn detections were computed on this very frame or not drawn before.
    fresh: bool
    timings: RenderTimings
    ready_mono: float
    image: np.ndarray | None = field(default=None, repr=False)
    _encoder: Encoder | None = field(default=None, repr=False)
    _variants: dict[int, bytes] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def latency_ms(self) -> float:
        """Frame arrival to output bytes ready."""
        return (self.ready_mono - self.frame.arrival_mono) * 1000.0

    def encoded(self, quality: int) -> bytes:
        """The frame at JPEG ``quality`` (blocking: call from a worker thread)."""
        if quality == self.quality or self.image is None or self._encoder is None:
            return self.jpeg
        with self._lock:
            data = self._variants.get(quality)
            if data is None:
                data = _encode_at(self._encoder, self.image, quality)
                self._variants[quality] = data
            return data


def _encode_at(encoder: Encoder, image: np.ndarray, quality: int) -> bytes:
    with_quality = getattr(encoder, "with_quality", None)
    if callable(with_quality):
        other = with_quality(quality)
        if isinstance(other, Encoder):
            return other.encode(image)
    return encoder.encode(image)


def _retrieve(future: asyncio.Future[object]) -> None:
    # Marks the outcome of a helper future as seen (no "exception was never retrieved").
    if not future.cancelled():
        future.exception()


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
            return r  # type: ignore[return-value]
    return 1


class FrameProcessor:
    """The blocking per-frame work, shared by the server pipeline and the profiler.

    Example:
        >>> proc = FrameProcessor(detector, annotator, encoder)  # doctest: +SKIP
        >>> result = proc.detect(frame)
        >>> out = proc.render(frame, result, fresh=True)
    """

    def __init__(
        self,
        detector: Detector,
        annotator: AnnotatorLike | None,
        encoder: Encoder,
        *,
        decode_reduce: Reduce | Literal["auto"] = "auto",
    ) -> None:
        self.detector = detector
        self.annotator = annotator
        self.encoder = encoder
        self.decode_reduce = decode_reduce
        # Detector implementations are not required to be re-entrant.
        self._detect_lock = threading.Lock()

    def reduce_for(self, frame: Frame) -> Reduce:
        if self.decode_reduce != "auto":
            return self.decode_reduce
        imgsz = getattr(self.detector, "imgsz", None)
        return choose_reduce(frame.size, imgsz if isinstance(imgsz, int) else None)

    def detect(self, frame: Frame) -> DetectionResult:
        """Decode (reduced when useful) and detect. Raises DecodeError for corrupt JPEGs."""
        start = time.perf_counter()
        reduce = self.reduce_for(frame)
        image = frame.image(reduce)
        decoded = time.perf_counter()
        with self._detect_lock:
            detections = self.detector.detect(image)
        if reduce != 1:
            full_w, _ = frame.size
            detections = detections.scaled(full_w / image.shape[1])
        end = time.perf_counter()
        return DetectionResult(frame, detections, (decoded - start) * 1000.0, reduce, start, end)

    def render(
        self, frame: Frame, detection: DetectionResult | None, *, fresh: bool, passthrough: bool = False
    ) -> Rendered:
        """Draw ``detection`` on ``frame`` and encode; or forward the camera's bytes when asked."""
        start = time.perf_counter()
        if passthrough and frame.jpeg is not None:
            now = time.perf_counter()
            return Rendered(frame, frame.jpeg, None, None, False, RenderTimings(0.0, 0.0, 0.0), now)
        image = frame.image()
        decoded = time.perf_counter()
        if detection is not None and self.annotator is not None:
            image = self.annotator.annotate(image, detection.detections)
        annotated = time.perf_counter()
        jpeg = self.encoder.encode(image)
        end = time.perf_counter()
        quality = getattr(self.encoder, "quality", None)
        return Rendered(
            frame,
            jpeg,
            quality if isinstance(quality, int) else None,
            detection,
            fresh,
            RenderTimings(
                (decoded - start) * 1000.0, (annotated - decoded) * 1000.0, (end - annotated) * 1000.0
            ),
            end,
            image=image,
            _encoder=self.encoder,
        )


@dataclass
class PipelineStats:
    """Counters and recent timing samples of one pipeline (percentiles over the last samples)."""

    frames_in: int = 0
    frames_detected: int = 0
    frames_out: int = 0
    #: Frames that reached the camera while the renderer was busy and were never rendered.
    dropped: int = 0
    #: Frames that could not be decoded (each counted once, whichever stage hit it).
    decode_errors: int = 0
    detector_errors: int = 0
    #: Times the source failed (other than by ending); current consumers' streams end.
    source_errors: int = 0
    upstream_opens: int = 0
    inference_ms: deque[float] = field(default_factory=lambda: deque(maxlen=1000))
    detect_ms: deque[float] = field(default_factory=lambda: deque(maxlen=1000))
    latency_ms: deque[float] = field(default_factory=lambda: deque(maxlen=1000))
    render_ms: deque[float] = field(default_factory=lambda: deque(maxlen=1000))

    def percentiles(self, name: str, qs: Iterable[float] = (50, 95, 99)) -> dict[str, float | None]:
        samples = getattr(self, name)
        if not samples:
            return {f"p{int(q)}": None for q in qs}
        arr = np.fromiter(samples, dtype=np.float64)
        return {f"p{int(q)}": round(float(np.percentile(arr, q)), 3) for q in qs}


class CameraPipeline:
    """One camera's pipeline: one source connection shared by raw, annotated and detection consumers.

    ``source_factory`` opens a new source each time the pipeline needs the camera (first
    subscriber after an idle period); the source is closed when nobody has subscribed for
    ``config.grace_period`` seconds.

    Example:
        >>> async def show(url: str) -> None:  # doctest: +SKIP
        ...     async with CameraPipeline(lambda: MjpegStreamSource(url), UltralyticsDetector()) as pipe:
        ...         async for out in pipe.outputs(limit=10):
        ...             print(out.frame.seq, len(out.detection.detections) if out.detection else "-")
    """

    def __init__(
        self,
        source_factory: Callable[[], FrameSource],
        detector: Detector,
        *,
        annotator: AnnotatorLike | None = None,
        encoder: Encoder | None = None,
        config: PipelineConfig | None = None,
        name: str = "camera",
        workers: Workers | None = None,
    ) -> None:
        self.name = name
        self.config = config or PipelineConfig()
        #: Threads for model calls and rendering; pass one `Workers` to every camera of a
        #: process so their model calls take turns instead of competing for the cores.
        self.workers = workers or Workers(name=name)
        self._own_workers = workers is None
        if annotator is None:
            from espdetect.annotate import Annotator

            annotator = Annotator()
        if encoder is None:
            from espdetect.encoders.jpeg import OpenCVJpegEncoder

            encoder = OpenCVJpegEncoder(quality=80)
        self.processor = FrameProcessor(detector, annotator, encoder, decode_reduce=self.config.decode_reduce)
        self._source_factory = source_factory
        self.source: FrameSource | None = None
        self.raw: Latest[Frame] = Latest()
        self.detections: Latest[DetectionResult] = Latest()
        self.output: Latest[Rendered] = Latest()
        self.stats = PipelineStats()
        self._demand: dict[SubscriptionKind, int] = {"raw": 0, "annotated": 0, "detections": 0}
        self._reader: asyncio.Task[None] | None = None
        self._detector_task: asyncio.Task[None] | None = None
        self._renderer: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None
        self._detecting: Frame | None = None
        #: Set when the detection of ``_detecting`` has finished, whether it succeeded or not.
        self._detecting_done = asyncio.Event()
        self._undecodable: Frame | None = None
        self._drawn_detection: DetectionResult | None = None
        self._last_detected_seq: int | None = None
        self._ended = False
        self._closed = False
        self.upstream_changed = asyncio.Event()

    # -- public -------------------------------------------------------------------------

    @property
    def demand(self) -> dict[SubscriptionKind, int]:
        """Current subscribers per kind."""
        return dict(self._demand)

    @property
    def upstream_open(self) -> bool:
        """Whether the source connection is open (reader running)."""
        return self._reader is not None and not self._reader.done()

    @property
    def ended(self) -> bool:
        """A finite source ran out of frames."""
        return self._ended

    def update(self, **changes: object) -> PipelineConfig:
        """Replace config fields (validated); takes effect on the next frame."""
        new = replace(self.config, **changes)  # type: ignore[arg-type]
        self.config = new
        self.processor.decode_reduce = new.decode_reduce
        return new

    @contextlib.asynccontextmanager
    async def subscribe(self, kind: SubscriptionKind) -> AsyncIterator[CameraPipeline]:
        """Hold demand for ``kind`` while the context is open; stages start and stop with demand."""
        if kind not in self._demand:
            raise ValueError(f"kind must be one of {sorted(self._demand)}, got {kind!r}")
        if self._closed:
            raise EspdetectError(f"pipeline {self.name!r} is closed")
        self._demand[kind] += 1
        self._reconcile()
        try:
            yield self
        finally:
            self._demand[kind] -= 1
            if not self._closed:
                self._reconcile()

    async def outputs(self, limit: int | None = None) -> AsyncGenerator[Rendered, None]:
        """Annotated output frames, newest first-come (frames a slow consumer misses are skipped)."""
        async with self.subscribe("annotated"):
            version = self.output.version
            n = 0
            while limit is None or n < limit:
                try:
                    version, rendered = await self.output.next_after(version)
                except SlotClosed:
                    return
                n += 1
                yield rendered

    async def aclose(self) -> None:
        """Stop every stage and close the source."""
        self._closed = True
        for slot in (self.raw, self.detections, self.output):
            slot.close()
        await self._stop_tasks(self._closer, self._renderer, self._detector_task)
        self._closer = self._renderer = self._detector_task = None
        await self._close_upstream()
        if self._own_workers:
            self.workers.close()

    async def __aenter__(self) -> CameraPipeline:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- lifecycle ----------------------------------------------------------------------

    def _reconcile(self) -> None:
        total = sum(self._demand.values())
        need_detect = self._demand["annotated"] + self._demand["detections"] > 0
        need_render = self._demand["annotated"] > 0
        if total > 0:
            if self._closer is not None:
                self._closer.cancel()
                self._closer = None
            if (self._reader is None or self._reader.done()) and not self._ended:
                for slot in (self.raw, self.detections, self.output):
                    slot.reopen()
                self._reader = asyncio.create_task(self._read_loop(), name=f"{self.name}-reader")
                self.upstream_changed.set()
        elif self._closer is None and self._reader is not None:
            self._closer = asyncio.create_task(self._close_after_grace(), name=f"{self.name}-closer")
        if need_detect and (self._detector_task is None or self._detector_task.done()):
            self._detector_task = asyncio.create_task(self._detect_loop(), name=f"{self.name}-detector")
        elif not need_detect and self._detector_task is not None:
            self._detector_task.cancel()
            self._detector_task = None
        if need_render and (self._renderer is None or self._renderer.done()):
            self._renderer = asyncio.create_task(self._render_loop(), name=f"{self.name}-renderer")
        elif not need_render and self._renderer is not None:
            self._renderer.cancel()
            self._renderer = None

    async def _close_after_grace(self) -> None:
        await asyncio.sleep(self.config.grace_period)
        self._closer = None
        if sum(self._demand.values()) == 0:
            await self._close_upstream()

    async def _close_upstream(self) -> None:
        reader, self._reader = self._reader, None
        # Take this reader's source now: a subscriber arriving while we wait below starts a
        # new reader with a new source, which must not be the one closed here.
        source = self.source
        await self._stop_tasks(reader)
        if self.source is source:
            self.source = None
        if source is not None:
            with contextlib.suppress(Exception):
                await source.aclose()
            logger.info("%s: upstream closed", self.name)
        self.upstream_changed.set()

    @staticmethod
    async def _stop_tasks(*tasks: asyncio.Task[None] | None) -> None:
        live = [t for t in tasks if t is not None and not t.done()]
        for t in live:
            t.cancel()
        for t in live:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    # -- stages ---------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        # Only ``raw`` is closed here: the detector and renderer still finish the newest frame,
        # then close the slots they feed, so consumers get the last frame before the end.
        source: FrameSource | None = None
        try:
            source = self._source_factory()
            self.source = source
            self.stats.upstream_opens += 1
            logger.info("%s: upstream opened (%s)", self.name, type(source).__name__)
            while True:
                try:
                    frame = await source.read()
                except EndOfStream:
                    logger.info("%s: source ended after %d frames", self.name, self.stats.frames_in)
                    self._ended = True
                    self.raw.close()
                    return
                if frame.jpeg is None:
                    # Raw viewers get JPEG bytes; sources without them are encoded once here.
                    jpeg = await self.workers.render(self.processor.encoder.encode, frame.image())
                    frame = replace(frame, jpeg=jpeg)
                self.stats.frames_in += 1
                if self.stats.frames_in % 100 == 0:
                    logger.info("%s: %d frames in", self.name, self.stats.frames_in)
                self.raw.publish(frame)
        except Exception as exc:
            # Without this the task would die unseen and every consumer would wait forever.
            # Not `ended`: the next subscriber opens a fresh source.
            self.stats.source_errors += 1
            logger.error("%s: source failed: %r", self.name, exc)
            self.raw.close()
        finally:
            if source is not None and self.source is source:
                with contextlib.suppress(Exception):
                    await source.aclose()

    def _wants_detection(self, frame: Frame) -> bool:
        skip = self.config.skip
        if skip == "auto" or self._last_detected_seq is None:
            return True
        return frame.seq - self._last_detected_seq >= skip or frame.seq < self._last_detected_seq

    async def _detect_loop(self) -> None:
        version = self.raw.version
        if self.raw.value is not None and self.raw.value.seq != self._last_detected_seq:
            version -= 1  # the newest frame has not been detected yet: take it
        while True:
            try:
                version, frame = await self.raw.next_after(version)
            except SlotClosed:
                self.detections.close()
                return
            if not self._wants_detection(frame):
                continue
            async with self.workers.detection_turn():
                # Other cameras' model calls may have run while this one waited: take the newest.
                newest = self.raw.value
                if self.raw.version > version and newest is not None:
                    version, frame = self.raw.version, newest
                self._detecting = frame
                done = self._detecting_done = asyncio.Event()
                try:
                    result = await self.workers.detect(self.processor.detect, frame)
                except DecodeError as exc:
                    self._count_decode_error(frame)
                    logger.debug("%s: skipped undecodable frame %d: %s", self.name, frame.seq, exc)
                    continue
                except Exception:
                    self.stats.detector_errors += 1
                    logger.exception("%s: detector failed on frame %d", self.name, frame.seq)
                    continue
                finally:
                    self._detecting = None
                    # Wakes a renderer waiting for this frame's boxes, also when there are none;
                    # on success it runs after the publish below (same step, no await between).
                    done.set()
            self._last_detected_seq = frame.seq
            self.stats.frames_detected += 1
            timings = result.detections.timings
            if timings is not None:
                self.stats.inference_ms.append(timings.inference_ms)
            self.stats.detect_ms.append(result.detect_ms)
            self.detections.publish(result)

    async def _render_loop(self) -> None:
        version = self.raw.version - 1 if self.raw.value is not None else self.raw.version
        while True:
            try:
                new_version, frame = await self.raw.next_after(version)
            except SlotClosed:
                self.output.close()
                return
            if self.output.value is not None:
                self.stats.dropped += max(0, new_version - version - 1)
            version = new_version
            await self._await_own_detection(frame)
            latest = self.detections.value
            fresh = latest is not None and latest is not self._drawn_detection
            passthrough = self.config.stale is StaleMode.RAW and not fresh
            try:
                rendered = await self.workers.render(
                    self.processor.render,
                    frame,
                    None if passthrough else latest,
                    fresh=fresh,
                    passthrough=passthrough,
                )
            except DecodeError:
                self._count_decode_error(frame)
                continue
            if fresh:
                self._drawn_detection = latest
            self.stats.frames_out += 1
            self.stats.latency_ms.append(rendered.latency_ms)
            self.stats.render_ms.append(sum(rendered.timings))
            self.output.publish(rendered)

    def _count_decode_error(self, frame: Frame) -> None:
        # The detector and the renderer both decode the same frame: count it once.
        if frame is not self._undecodable:
            self._undecodable = frame
            self.stats.decode_errors += 1

    async def _await_own_detection(self, frame: Frame) -> None:
        """If ``frame`` is being detected, wait for its boxes unless a newer frame comes first."""
        await asyncio.sleep(0)  # let the detector loop pick this frame up first
        if self._detecting is not frame:
            return
        waits: set[asyncio.Future[object]] = {asyncio.ensure_future(self._detecting_done.wait())}
        if not self.raw.closed:  # a closed source sends no newer frame: just wait for the boxes
            waits.add(asyncio.ensure_future(self.raw.next_after(self.raw.version)))
        for fut in waits:
            fut.add_done_callback(_retrieve)
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            # Cancelled, not awaited: awaiting here could swallow a cancellation of this task
            # (the renderer would then outlive its subscribers).
            for fut in waits:
                fut.cancel()
