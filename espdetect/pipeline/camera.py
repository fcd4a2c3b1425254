"""`CameraPipeline`: latest-frame semantics from one camera connection to annotated JPEG bytes.

Three stages share one source connection:

* the **reader** publishes every frame the source delivers into the ``raw`` slot;
* the **detector** takes the newest frame the skip policy accepts, runs the model in a
  worker thread and publishes into ``detections``; it never works through a backlog;
* the **renderer** takes each newest frame, draws the most recent detections on it (or passes
  the camera's JPEG through untouched, see `StaleMode`), encodes once and publishes into
  ``output``.

Slots hold only the newest value (`Latest`), so a slow consumer drops frames for itself and
nothing queues. Each stage runs only while somebody asks for what it produces
(`CameraPipeline.subscribe`); with no subscribers the source is closed after a grace period.

The stages are tasks of one anyio task group, each in a cancel scope of its own (`Stage`), so
demand can start and stop them one by one while the group guarantees none outlives the
pipeline. The group lives in one host task that the pipeline starts on first use and ends in
`CameraPipeline.aclose`, so a pipeline works the same inside ``async with`` and across the
cells of a notebook.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import fields, replace
from typing import Any, Final, Literal

import anyio
from anyio.abc import TaskGroup
from typing_extensions import Unpack

from espdetect._async import CLEANUP_TIMEOUT, Stage, first_completed
from espdetect.annotate import Annotator
from espdetect.constraints import DecodeReduce, Skip
from espdetect.detectors.base import DetectKwargs, Detector, DetectParams
from espdetect.encoders.base import Encoder
from espdetect.encoders.jpeg import JpegEncoder
from espdetect.exceptions import (
    ConfigurationError,
    DecodeError,
    DetectorError,
    EndOfStream,
    EspdetectError,
    SlotClosed,
)
from espdetect.frame import Frame
from espdetect.latest import Latest
from espdetect.motion import MotionConfig, Polygon
from espdetect.pipeline.config import PipelineConfig, StaleMode
from espdetect.pipeline.policy import FramePolicy
from espdetect.pipeline.processor import DetectionResult, FrameProcessor, Rendered
from espdetect.pipeline.stats import PipelineStats
from espdetect.sources.base import FrameSource
from espdetect.workers import Workers

__all__ = ["CameraPipeline", "PipelineChanges", "SubscriptionKind"]

if sys.version_info >= (3, 11):
    _ExceptionGroup = ExceptionGroup  # noqa: F821 - a builtin from 3.11
else:  # anyio depends on the backport there
    from exceptiongroup import ExceptionGroup as _ExceptionGroup

logger = logging.getLogger(__name__)

SubscriptionKind = Literal["raw", "annotated", "detections"]


class PipelineChanges(DetectKwargs, total=False):
    """What `CameraPipeline.update` may change: detection params and these."""

    skip: Skip
    stale: StaleMode | str
    decode_reduce: DecodeReduce
    quality: int
    motion: bool
    keepalive: float
    tracking: bool
    still_refresh: float
    #: `MotionConfig` fields, prefixed.
    motion_threshold: int
    motion_min_area: float
    motion_masks: Sequence[Polygon]


_CONFIG_KEYS: Final = frozenset({f.name for f in fields(PipelineConfig)} - {"grace_period", "motion_config"})
_MOTION_KEYS: Final = frozenset(f"motion_{f.name}" for f in fields(MotionConfig))
_PARAM_KEYS: Final = frozenset(f.name for f in fields(DetectParams))
_KNOWN: Final = _CONFIG_KEYS | _MOTION_KEYS | _PARAM_KEYS | {"quality"}


class CameraPipeline:
    """One camera's pipeline: one source connection shared by raw, annotated and detection consumers.

    ``source_factory`` opens a new source each time the pipeline needs the camera (first
    subscriber after an idle period); the source is closed when nobody has subscribed for
    ``config.grace_period`` seconds. ``params`` are this camera's detection params; several
    pipelines may share one ``detector`` (one loaded model) with params of their own.

    Example:
        >>> async def show(url: str) -> None:  # doctest: +SKIP
        ...     async with CameraPipeline(lambda: MjpegStreamSource(url), OnnxDetector()) as pipe:
        ...         async for out in pipe.outputs(limit=10):
        ...             print(out.frame.seq, len(out.detection.detections) if out.detection else "-")
    """

    def __init__(
        self,
        source_factory: Callable[[], FrameSource],
        detector: Detector,
        *,
        params: DetectParams | None = None,
        annotator: Annotator | None = None,
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
        self.processor = FrameProcessor(
            detector,
            annotator if annotator is not None else Annotator(),
            encoder if encoder is not None else JpegEncoder(quality=80),
            params=params,
            decode_reduce=self.config.decode_reduce,
        )
        self._source_factory = source_factory
        #: The open source, while the reader runs.
        self.source: FrameSource | None = None
        self.raw: Latest[Frame] = Latest()
        self.detections: Latest[DetectionResult] = Latest()
        self.output: Latest[Rendered] = Latest()
        self.stats = PipelineStats()
        #: The last failure that stopped the source or the stages, or failed a model call (None:
        #: none yet): what a user interface shows, where the counters in `stats` only count.
        self.last_error: Exception | None = None
        self._demand: dict[SubscriptionKind, int] = {"raw": 0, "annotated": 0, "detections": 0}
        self._reader = Stage(f"{name}-reader")
        self._detector = Stage(f"{name}-detector")
        self._renderer = Stage(f"{name}-renderer")
        self._closer = Stage(f"{name}-closer")
        self._group: TaskGroup | None = None
        self._host: asyncio.Task[None] | None = None
        self._started: anyio.Event | None = None
        self._stopping: anyio.Event | None = None
        self._detecting: Frame | None = None
        #: Set when the detection of ``_detecting`` has finished, whether it succeeded or not.
        self._detecting_done: anyio.Event | None = None
        self._undecodable: Frame | None = None
        self._drawn_detection: DetectionResult | None = None
        #: ``raw``'s version when the reader last (re)started: frames up to it are from before.
        self._fresh_from = 0
        #: The newest frame the motion test found unchanged (its picture may repeat the last one).
        self._still: Frame | None = None
        #: Which frames get a model call and what the others show, on the frames' arrival clock.
        self._policy = FramePolicy(self.config)
        self._ended = False
        self._closed = False

    # -- public -------------------------------------------------------------------------

    @property
    def detector(self) -> Detector:
        return self.processor.detector

    @property
    def params(self) -> DetectParams:
        """This camera's detection params (resolved for the model)."""
        return self.processor.params

    @property
    def encoder(self) -> Encoder:
        """The encoder of the annotated stream."""
        return self.processor.encoder

    @property
    def demand(self) -> dict[SubscriptionKind, int]:
        """Current subscribers per kind."""
        return dict(self._demand)

    @property
    def upstream_open(self) -> bool:
        """Whether the source connection is open (reader running)."""
        return self._reader.running

    @property
    def last_model_call(self) -> float | None:
        """Arrival (``time.perf_counter()`` clock) of the frame the model last ran on; None before any."""
        return self._policy.last_call

    @property
    def still(self) -> Frame | None:
        """The newest frame the motion test found unchanged (no model call: the detections of the
        last call still stand for it), or None; compare its ``seq`` with the last detections'."""
        return self._still

    @property
    def ended(self) -> bool:
        """A finite source ran out of frames."""
        return self._ended

    def update(self, **changes: Unpack[PipelineChanges]) -> None:
        """Change settings; all are checked before any applies, from the next frame on.

        Leave an argument out to keep its value; ``imgsz=None`` is the model's own input size
        and ``classes=None`` all classes.

        Raises:
            ConfigurationError: a value out of range, one the model cannot take, or a name that
                is not a setting (its ``field`` names it); nothing is changed then.

        Example:
            >>> pipe.update(conf=0.5, classes=[0], skip=2, quality=60)  # doctest: +SKIP
        """
        given: dict[str, Any] = dict(changes)
        unknown = sorted(set(given) - _KNOWN)
        if unknown:
            raise ConfigurationError(
                f"expected settings among {sorted(_KNOWN)}, got {unknown}", field=unknown[0]
            )
        config_changes = {k: v for k, v in given.items() if k in _CONFIG_KEYS}
        motion_changes = {k.removeprefix("motion_"): v for k, v in given.items() if k in _MOTION_KEYS}
        if motion_changes:
            config_changes["motion_config"] = replace(self.config.motion_config, **motion_changes)
        config = replace(self.config, **config_changes)
        params = self.detector.check(
            replace(self.params, **{k: v for k, v in given.items() if k in _PARAM_KEYS})
        )
        quality = changes.get("quality")
        encoder = self.encoder if quality is None else self.encoder.with_quality(quality)
        self.config = config
        self._policy.update(config)
        self.processor.decode_reduce = config.decode_reduce
        self.processor.params = params
        self.processor.encoder = encoder

    @contextlib.asynccontextmanager
    async def subscribe(self, kind: SubscriptionKind) -> AsyncIterator[CameraPipeline]:
        """Hold demand for ``kind`` while the context is open; stages start and stop with demand.

        Raises:
            EspdetectError: the pipeline is closed.
        """
        if kind not in self._demand:
            raise ValueError(f"expected kind to be one of {sorted(self._demand)}, got {kind!r}")
        group = await self.start()
        self._demand[kind] += 1
        self._reconcile(group)
        try:
            yield self
        finally:
            self._demand[kind] -= 1
            if not self._closed and self._group is not None:
                self._reconcile(self._group)

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

    async def start(self) -> TaskGroup:
        """Start the task group the stages run in (idempotent; `subscribe` calls it).

        Raises:
            EspdetectError: the pipeline is closed, or stopped after an internal error.
        """
        if self._closed:
            raise EspdetectError(f"pipeline {self.name!r} is closed")
        if self._host is None or (self._host.done() and self._group is None):
            # First use, or the stages stopped on an unexpected error (logged): start afresh.
            self._detecting = None
            self._started = anyio.Event()
            self._stopping = anyio.Event()
            # The one task the pipeline manages by hand: it hosts the task group, so the stages
            # outlive the subscriber that started them (and a notebook cell).
            self._host = asyncio.get_running_loop().create_task(
                self._run(self._started), name=f"{self.name}-pipeline"
            )
        assert self._started is not None
        await self._started.wait()  # also when another subscriber is starting it right now
        if self._group is None:
            raise EspdetectError(f"pipeline {self.name!r} stopped after an internal error (see the log)")
        return self._group

    async def aclose(self) -> None:
        """Stop every stage and close the source."""
        self._closed = True
        for slot in (self.raw, self.detections, self.output):
            slot.close()
        try:
            if self._host is not None and self._stopping is not None:
                self._stopping.set()
                await self._host
        finally:
            if self._own_workers:
                self.workers.close()

    async def __aenter__(self) -> CameraPipeline:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- lifecycle ----------------------------------------------------------------------

    async def _run(self, started: anyio.Event) -> None:
        assert self._stopping is not None
        try:
            async with anyio.create_task_group() as group:
                self._group = group
                started.set()
                await self._stopping.wait()
                group.cancel_scope.cancel()
        except Exception as exc:
            # The pipeline supervises its stages: an unexpected error (a bug, or a third-party
            # source raising something of its own) is logged with its traceback and counted;
            # its consumers end, and the next subscriber starts the stages afresh.
            self.stats.stage_errors += 1
            # The task group wraps the stage's error; one error is what a user wants to see.
            while isinstance(exc, _ExceptionGroup) and len(exc.exceptions) == 1:
                exc = exc.exceptions[0]
            self.last_error = exc
            logger.exception("%s: pipeline stages stopped by an unexpected error", self.name)
        finally:
            self._group = None
            started.set()
            # Consumers end instead of waiting for frames that will never come.
            for slot in (self.raw, self.detections, self.output):
                slot.close()

    def _reconcile(self, group: TaskGroup) -> None:
        total = sum(self._demand.values())
        if total > 0:
            self._closer.cancel()
            if not self._reader.running and not self._ended:
                for slot in (self.raw, self.detections, self.output):
                    slot.reopen()
                # What ``raw`` holds now came over the previous connection: not to be detected or
                # drawn again (it may be minutes old, and a motion test would take it as the scene).
                self._fresh_from = self.raw.version
                self._reader.start(group, self._read_loop)
        elif self._reader.running and not self._closer.running:
            self._closer.start(group, self._close_after_grace)
        for stage, needed, job in (
            (self._detector, self._demand["annotated"] + self._demand["detections"] > 0, self._detect_loop),
            (self._renderer, self._demand["annotated"] > 0, self._render_loop),
        ):
            if needed and not stage.running:
                stage.start(group, job)
            elif not needed:
                stage.cancel()

    async def _close_after_grace(self) -> None:
        await anyio.sleep(self.config.grace_period)
        if sum(self._demand.values()) == 0:
            # Shielded: a subscriber arriving now starts a new reader; this one still closes.
            with anyio.CancelScope(shield=True):
                await self._reader.stop()

    # -- stages ---------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        # Only ``raw`` is closed here: the detector and renderer still finish the newest frame,
        # then close the slots they feed, so consumers get the last frame before the end.
        source: FrameSource | None = None
        try:
            source = self.source = self._source_factory()
            self.stats.upstream_opens += 1
            # A new connection may show another scene (a camera that rebooted or moved).
            self._policy.reset()
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
                    jpeg = await self.workers.render(self.encoder.encode, frame.image())
                    frame = replace(frame, jpeg=jpeg)
                self.stats.frames_in += 1
                self.raw.publish(frame)
        except (EspdetectError, OSError) as exc:
            # Not `ended`: the next subscriber opens a fresh source.
            self.stats.source_errors += 1
            self.last_error = exc
            logger.error("%s: source failed: %r", self.name, exc)
            self.raw.close()
        finally:
            if source is not None:
                with anyio.move_on_after(CLEANUP_TIMEOUT, shield=True):
                    await source.aclose()
                if self.source is source:
                    self.source = None
                logger.info("%s: upstream closed", self.name)

    async def _detect_loop(self) -> None:
        version = self.raw.version
        newest = self.raw.value
        policy = self._policy
        if (
            newest is not None
            and version > self._fresh_from
            and newest.seq != policy.last_detected_seq
            and policy.offered(newest.seq)
        ):
            version -= 1  # the newest frame has not been detected yet: take it
        while True:
            try:
                version, frame = await self.raw.next_after(version)
            except SlotClosed:
                self.detections.close()
                return
            if not self._policy.offered(frame.seq):
                continue
            # From here until its boxes are published (or the frame is let go) the renderer waits
            # for this frame's verdict, so an object's first frame is drawn with its own boxes.
            self._detecting = frame
            done = self._detecting_done = anyio.Event()
            try:
                if self.config.motion and not await self._worth_a_model_call(frame):
                    continue
                released = not self.workers.turn_free
                if released:
                    # Another camera's model call is running: the renderer draws this frame with
                    # the boxes there are rather than hold it for a whole inference.
                    self._detecting = None
                    done.set()
                async with self.workers.detection_turn():
                    # Other cameras' model calls may have run while this one waited: take the newest.
                    newest = self.raw.value
                    if self.raw.version > version and newest is not None:
                        version, frame = self.raw.version, newest
                    self._detecting = frame
                    if released:
                        done = self._detecting_done = anyio.Event()
                    result = await self._detect_one(frame)
                # On the frames' clock, so keep-alives follow the camera (and a replayed clip's time).
                result = self._policy.called(frame.seq, frame.arrival_mono, result)
                if result is None:
                    continue
                self.stats.frames_detected += 1
                timings = result.detections.timings
                if timings is not None:
                    self.stats.inference_ms.add(timings.inference_ms)
                self.stats.detect_ms.add(result.detect_ms)
                # Published in the same step as the renderer is woken below (no await between),
                # and the tracker was updated in that step too: no half-done update is seen.
                self.detections.publish(result)
            finally:
                self._detecting = None
                done.set()

    async def _worth_a_model_call(self, frame: Frame) -> bool:
        """Whether ``frame`` needs the model (`FramePolicy.decide`); the motion test runs on a
        render thread (well under a millisecond at 1/8 scale)."""
        try:
            motion = await self.workers.render(self._policy.motion.detect, frame)
        except DecodeError:
            self._count_decode_error(frame)
            return False
        reason = self._policy.decide(motion, frame.arrival_mono)
        self.stats.count_motion(reason, motion.ms)
        if not reason.call:
            self._still = frame
        return reason.call

    async def _detect_one(self, frame: Frame) -> DetectionResult | None:
        """The detections of ``frame``, or None when it cannot be decoded or the model failed."""
        try:
            return await self.workers.detect(self.processor.detect, frame)
        except DecodeError as exc:
            self._count_decode_error(frame)
            logger.debug("%s: skipped undecodable frame %d: %s", self.name, frame.seq, exc)
        except DetectorError as exc:
            self.stats.detector_errors += 1
            self.last_error = exc
            logger.error("%s: detection failed on frame %d: %s", self.name, frame.seq, exc)
        return None

    async def _render_loop(self) -> None:
        version = self.raw.version
        if self.raw.value is not None and version > self._fresh_from:
            version -= 1  # draw the newest frame at once
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
            t = frame.arrival_mono
            drawing = self._policy.drawing(latest, fresh, t)
            previous = self.output.value
            if self._policy.repeats(previous, latest, drawing, frame is self._still, t):
                assert previous is not None  # checked by repeats
                self.stats.frames_out += 1
                self.output.publish(previous.repeated(frame))
                continue
            try:
                rendered = await self.workers.render(
                    self.processor.render,
                    frame,
                    drawing.detection,
                    fresh=fresh,
                    passthrough=drawing.passthrough,
                    boxes=drawing.boxes,
                )
            except DecodeError:
                self._count_decode_error(frame)
                continue
            if fresh:
                self._drawn_detection = latest
            self._policy.drew(t)
            self.stats.frames_out += 1
            self.stats.latency_ms.add(rendered.latency_ms)
            self.stats.render_ms.add(rendered.timings.total_ms)
            self.output.publish(rendered)

    def _count_decode_error(self, frame: Frame) -> None:
        # The detector and the renderer both decode the same frame: count it once.
        if frame is not self._undecodable:
            self._undecodable = frame
            self.stats.decode_errors += 1

    async def _await_own_detection(self, frame: Frame) -> None:
        """If ``frame`` is being detected, wait for its boxes unless a newer frame comes first."""
        await anyio.lowlevel.checkpoint()  # let the detector pick this frame up first
        done = self._detecting_done
        if self._detecting is not frame or done is None:
            return
        if self.raw.closed:  # a closed source sends no newer frame: just wait for the boxes
            await done.wait()
            return
        version = self.raw.version

        async def newer_frame() -> None:
            with contextlib.suppress(SlotClosed):
                await self.raw.next_after(version)

        await first_completed(done.wait, newer_frame)
