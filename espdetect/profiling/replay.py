"""Replaying a recorded clip through the server's own per-frame code, keeping compact traces.

Two modes, both driving `espdetect.pipeline.FrameProcessor` (the blocking code the server runs):

* ``"fast"`` — every frame in order, one after the other, as fast as the machine allows. The
  server's per-frame rules (`FramePolicy`) decide on the clip's recorded arrival clock: frames
  the skip policy offers are motion-tested when motion gating is on and detected unless gated
  (keep-alive measured on that clock too); every frame is rendered with the most recent boxes
  (stale ones on skipped frames, moved along their tracks with tracking, the camera's own JPEG
  when there is nothing to draw, the last picture again for a still frame whose boxes stay put,
  as the server does). ``skip="auto"`` has no meaning without a
  camera pace, so it is decided on a virtual clock: a frame is offered when it is the newest
  frame at the moment the detector would be free, given the recorded arrival times and the
  measured motion-test and detection times. The result is deterministic for given timings,
  and it measures capacity: ``fps_output`` may exceed the camera's frame rate.
* ``"realtime"`` — the live situation: a `CameraPipeline` (exactly the server's class, with
  its latest-frame slots and concurrent detector and renderer) reads a `ClipSource` paced at
  the recorded arrival times; frames the pipeline is too busy for are dropped, as live. Each
  run takes the clip's duration. Motion gating and tracking are the pipeline's own.

Only numbers and boxes are kept per frame (no images), so memory stays bounded.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np

from espdetect.annotate import Annotator
from espdetect.constraints import DecodeReduce, Skip
from espdetect.detections import Detections
from espdetect.detectors.base import Detector, DetectParams
from espdetect.encoders.base import Encoder
from espdetect.exceptions import SourceUnavailable
from espdetect.frame import Frame
from espdetect.pipeline import (
    CameraPipeline,
    DetectionResult,
    FrameProcessor,
    PipelineConfig,
    PipelineStats,
    Rendered,
)
from espdetect.pipeline.policy import FramePolicy
from espdetect.sources.clip import ClipSource, load_clip_index

__all__ = [
    "ClipData",
    "ClipFrame",
    "DetectionSample",
    "GateCounts",
    "Mode",
    "RecordingProcessor",
    "RenderSample",
    "RunTrace",
    "load_clip",
    "replay",
    "warm_up",
]

#: How a configuration is replayed: see the module documentation.
Mode = Literal["fast", "realtime"]


@dataclass(frozen=True, eq=False)
class ClipFrame:
    """One recorded frame: its original JPEG bytes and when it arrived."""

    seq: int
    #: Seconds after the first frame's arrival.
    arrival_s: float
    camera_timestamp: float | None
    jpeg: bytes


@dataclass(frozen=True, eq=False)
class ClipData:
    """A recorded clip held in memory, replayable any number of times."""

    path: Path
    frames: tuple[ClipFrame, ...]
    #: sha256 over the frames' bytes and arrival times: identifies the clip's content.
    fingerprint: str

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def duration_s(self) -> float:
        return self.frames[-1].arrival_s - self.frames[0].arrival_s if self.frames else 0.0

    @property
    def fps(self) -> float:
        """Average camera frame rate of the recording (0 for fewer than two frames)."""
        if len(self.frames) < 2 or self.duration_s <= 0:
            return 0.0
        return (len(self.frames) - 1) / self.duration_s

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the first frame."""
        return self.frame(0).size

    def frame(self, index: int) -> Frame:
        """A new `Frame` for recorded frame ``index`` (nothing decoded yet), arriving now."""
        rec = self.frames[index]
        return Frame(
            seq=rec.seq,
            source_id=self.path.name,
            jpeg=rec.jpeg,
            arrival=time.time(),
            arrival_mono=time.perf_counter(),
            camera_timestamp=rec.camera_timestamp,
        )


def load_clip(path: str | Path) -> ClipData:
    """Read a clip folder (written by `ClipWriter`) into memory.

    Frames are read through `ClipSource`, so they are numbered exactly as a live replay numbers
    them (incomplete JPEGs skipped); arrival times come from the clip's index.

    Raises:
        SourceUnavailable: not a clip folder, or it holds no complete frame.

    Example:
        >>> clip = load_clip("data/clips/emulator-qvga")  # doctest: +SKIP
        >>> len(clip), round(clip.fps)
        (150, 15)
    """
    import hashlib

    folder = Path(path)
    source = ClipSource(folder, pace="fast")
    frames = list(source.iter_frames())
    rows = load_clip_index(folder)
    # The source skips incomplete frames; pair the rest with their index rows by order and size.
    out: list[ClipFrame] = []
    digest = hashlib.sha256()
    j = 0
    for frame in frames:
        jpeg = frame.jpeg or b""
        if len(rows) != len(frames):
            while j < len(rows) - 1 and rows[j].bytes != len(jpeg):
                j += 1
        arrival = rows[min(j, len(rows) - 1)].arrival_s if rows else 0.0
        j += 1
        out.append(ClipFrame(frame.seq, arrival, frame.camera_timestamp, jpeg))
        digest.update(f"{arrival:.6f}:{len(jpeg)}:".encode())
        digest.update(jpeg)
    if not out:
        raise SourceUnavailable(str(folder), "expected complete JPEG frames, got none in the clip")
    return ClipData(folder, tuple(out), digest.hexdigest())


class DetectionSample(NamedTuple):
    """What one detection produced and how long each stage took (milliseconds)."""

    seq: int
    decode_ms: float
    preprocess_ms: float
    inference_ms: float
    postprocess_ms: float
    #: The whole `FrameProcessor.detect` call: decode, detector, rescaling.
    detect_ms: float
    xyxy: np.ndarray
    confidence: np.ndarray
    class_id: np.ndarray
    started_mono: float
    finished_mono: float


class RenderSample(NamedTuple):
    """One output frame: stage times (milliseconds), size, latency and which boxes it shows."""

    seq: int
    decode_ms: float
    annotate_ms: float
    encode_ms: float
    nbytes: int
    #: Frame arrival to encoded bytes ready.
    latency_ms: float
    #: Sequence number of the frame whose detections are drawn (None: none drawn yet).
    shown_seq: int | None
    fresh: bool
    arrival_mono: float
    ready_mono: float
    #: The boxes drawn on this frame (the detections shown, or the tracks' predicted boxes).
    drawn_xyxy: np.ndarray
    drawn_confidence: np.ndarray
    drawn_class_id: np.ndarray

    @classmethod
    def of(cls, out: Rendered) -> RenderSample:
        """The sample of one output frame (a repeated picture too: no stage time, same boxes)."""
        drawn = out.drawn if out.drawn is not None else Detections.empty()
        return cls(
            out.frame.seq,
            out.timings.decode_ms,
            out.timings.annotate_ms,
            out.timings.encode_ms,
            len(out.jpeg),
            out.latency_ms,
            out.detection.frame.seq if out.detection is not None else None,
            out.fresh,
            out.frame.arrival_mono,
            out.ready_mono,
            drawn.xyxy.copy(),
            drawn.confidence.copy(),
            drawn.class_id.copy(),
        )


class RecordingProcessor(FrameProcessor):
    """``processor``'s work, keeping a compact sample of every detect call and every render call
    (``keep_renders``; a realtime replay samples the pipeline's outputs instead)."""

    def __init__(self, processor: FrameProcessor, *, keep_renders: bool = True) -> None:
        super().__init__(
            processor.detector,
            processor.annotator,
            processor.encoder,
            params=processor.params,
            decode_reduce=processor.decode_reduce,
        )
        self.keep_renders = keep_renders
        self.detections: list[DetectionSample] = []
        self.renders: list[RenderSample] = []

    def clear(self) -> None:
        self.detections = []
        self.renders = []

    def detect(self, frame: Frame) -> DetectionResult:
        result = super().detect(frame)
        det = result.detections
        t = det.timings
        self.detections.append(
            DetectionSample(
                frame.seq,
                result.decode_ms,
                t.preprocess_ms if t else math.nan,
                t.inference_ms if t else math.nan,
                t.postprocess_ms if t else math.nan,
                result.detect_ms,
                det.xyxy.copy(),
                det.confidence.copy(),
                det.class_id.copy(),
                result.started_mono,
                result.finished_mono,
            )
        )
        return result

    def render(
        self,
        frame: Frame,
        detection: DetectionResult | None,
        *,
        fresh: bool,
        passthrough: bool = False,
        boxes: Detections | None = None,
    ) -> Rendered:
        out = super().render(frame, detection, fresh=fresh, passthrough=passthrough, boxes=boxes)
        if self.keep_renders:
            self.renders.append(RenderSample.of(out))
        return out


@dataclass(frozen=True)
class GateCounts:
    """What motion gating did during one replay (all zero without ``motion``), as the pipeline's
    `PipelineStats` counted it.

    Example:
        >>> from espdetect.pipeline.policy import CallReason
        >>> stats = PipelineStats()
        >>> stats.count_motion(CallReason.GATED, 0.4)
        >>> GateCounts.of(stats).gated_frames
        1
    """

    #: Frames the motion test looked at (every frame offered to the model).
    motion_checks: int = 0
    #: Checked frames where something moved (or the whole scene changed).
    moving_frames: int = 0
    #: Model calls made only because the keep-alive was due.
    keepalive_calls: int = 0
    #: Checked frames kept from the model.
    gated_frames: int = 0
    #: Milliseconds of each motion test (the most recent `PipelineStats.motion_ms` window).
    motion_ms: tuple[float, ...] = ()

    @classmethod
    def of(cls, stats: PipelineStats) -> GateCounts:
        return cls(
            stats.motion_checks,
            stats.moving_frames,
            stats.keepalive_calls,
            stats.gated_frames,
            tuple(stats.motion_ms),
        )


@dataclass
class RunTrace:
    """Everything measured in one replay of a clip with one configuration."""

    mode: Mode
    frames_in: int
    wall_s: float
    detections: list[DetectionSample] = field(default_factory=list)
    renders: list[RenderSample] = field(default_factory=list)
    #: What motion gating did (all zero without it).
    gate: GateCounts = field(default_factory=GateCounts)


def _auto_selection(arrivals: Sequence[float], next_free: float, index: int) -> bool:
    """Whether frame ``index`` is the newest frame when a detector free at ``next_free`` takes one."""
    following = arrivals[index + 1] if index + 1 < len(arrivals) else math.inf
    return following > next_free


def _replay_fast(clip: ClipData, processor: RecordingProcessor, config: PipelineConfig) -> RunTrace:
    # Long: the server's detect and render loops folded into one pass over the clip; every
    # decision is FramePolicy's, on the clip's arrival clock.
    arrivals = [f.arrival_s for f in clip.frames]
    policy = FramePolicy(config)
    stats = PipelineStats()
    last: DetectionResult | None = None
    previous: Rendered | None = None
    next_free = -math.inf
    start = time.perf_counter()
    for i in range(len(clip)):
        frame = clip.frame(i)
        t = arrivals[i]
        if config.skip == "auto":
            offered = _auto_selection(arrivals, next_free, i)
        else:
            offered = policy.offered(frame.seq)
        fresh = still = False
        if offered:
            busy_ms = 0.0
            call = True
            if config.motion:
                motion = policy.motion.detect(frame)
                reason = policy.decide(motion, t)
                stats.count_motion(reason, motion.ms)
                busy_ms += motion.ms
                call = reason.call
                still = not call
            if call:
                result = processor.detect(frame)
                busy_ms += result.detect_ms
                last = policy.called(frame.seq, t, result)
                fresh = True
            # The server's detector task is busy for the motion test too (it awaits it).
            next_free = max(t, next_free) + busy_ms / 1000.0
        drawing = policy.drawing(last, fresh, t)
        if policy.repeats(previous, last, drawing, still, t):
            assert previous is not None  # checked by repeats
            previous = previous.repeated(frame)
            processor.renders.append(RenderSample.of(previous))
            continue
        previous = processor.render(
            frame, drawing.detection, fresh=fresh, passthrough=drawing.passthrough, boxes=drawing.boxes
        )
        policy.drew(t)
    wall = time.perf_counter() - start
    return RunTrace("fast", len(clip), wall, processor.detections, processor.renders, GateCounts.of(stats))


async def _replay_realtime_async(
    clip: ClipData, processor: RecordingProcessor, config: PipelineConfig, timeout: float
) -> tuple[PipelineStats, list[RenderSample]]:
    pipe = CameraPipeline(
        lambda: ClipSource(clip.path, pace="realtime"),
        processor.detector,
        params=processor.params,
        annotator=processor.annotator,
        encoder=processor.encoder,
        config=config,
        name=f"profile-{clip.path.name}",
    )
    pipe.processor = processor
    # What a viewer receives, repeated pictures of a still scene included (they are no render call).
    outputs: list[RenderSample] = []

    async def consume() -> None:
        async for out in pipe.outputs():
            outputs.append(RenderSample.of(out))

    async with pipe:
        await asyncio.wait_for(consume(), timeout)
    return pipe.stats, outputs


def _replay_realtime(
    clip: ClipData, processor: RecordingProcessor, config: PipelineConfig, timeout: float
) -> RunTrace:
    # The source closes as soon as the clip ends and the run's last frame is out.
    config = replace(config, grace_period=0.0)
    # A private event loop in a worker thread: works from scripts and from a running Jupyter loop.
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="espdetect-replay") as pool:
        run = _replay_realtime_async(clip, processor, config, timeout)
        stats, renders = pool.submit(asyncio.run, run).result()
    if renders:
        first = min(r.arrival_mono for r in renders)
        wall = max(r.ready_mono for r in renders) - first
    else:
        wall = 0.0
    return RunTrace("realtime", len(clip), wall, processor.detections, renders, GateCounts.of(stats))


def warm_up(clip: ClipData, processor: FrameProcessor, frames: int) -> None:
    """Detect and render the first ``frames`` frames, discarding the results (caches, lazy init)."""
    if frames < 0:
        raise ValueError(f"expected frames >= 0, got {frames}")
    for i in range(min(frames, len(clip))):
        frame = clip.frame(i)
        processor.render(frame, processor.detect(frame), fresh=True)


def replay(
    clip: ClipData,
    detector: Detector,
    encoder: Encoder,
    *,
    mode: Mode = "fast",
    skip: Skip = 1,
    decode_reduce: DecodeReduce = "auto",
    params: DetectParams | None = None,
    annotator: Annotator | None = None,
    warmup: int = 2,
    motion: bool = False,
    keepalive: float = PipelineConfig.keepalive,
    tracking: bool = False,
) -> RunTrace:
    """Replay ``clip`` once through a `FrameProcessor` and return what was measured.

    ``warmup`` frames are detected and rendered first and left out of the trace. ``params``
    default to the detector's own. ``motion``, ``keepalive`` and ``tracking`` are the
    `PipelineConfig` settings of the same names.

    Raises:
        ConfigurationError: a pipeline setting out of range.

    Example:
        >>> trace = replay(load_clip("data/clips/emulator-qvga"), detector, encoder, skip=2)  # doctest: +SKIP
        >>> len(trace.renders), len(trace.detections)
        (150, 75)
    """
    if mode not in ("fast", "realtime"):
        raise ValueError(f"expected mode 'fast' or 'realtime', got {mode!r}")
    if warmup < 0:
        raise ValueError(f"expected warmup >= 0 frames, got {warmup}")
    config = PipelineConfig(
        skip=skip, decode_reduce=decode_reduce, motion=motion, keepalive=keepalive, tracking=tracking
    )
    drawer = annotator if annotator is not None else Annotator()
    processor = RecordingProcessor(
        FrameProcessor(detector, drawer, encoder, params=params, decode_reduce=decode_reduce),
        keep_renders=mode == "fast",
    )
    warm_up(clip, processor, warmup)
    processor.clear()
    if mode == "fast":
        return _replay_fast(clip, processor, config)
    return _replay_realtime(clip, processor, config, timeout=clip.duration_s * 3 + 60.0)
