"""`Camera`: one configured camera of the server: its pipeline, settings, viewers and counters."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any, Final, NamedTuple

import anyio

from espdetect.detectors.base import Detector, DetectParams
from espdetect.encoders.base import Encoder
from espdetect.frame import Frame, jpeg_size
from espdetect.motion import MotionConfig
from espdetect.pipeline import CameraPipeline, PipelineConfig, Rendered, SubscriptionKind
from espdetect.server.event_service import check_event_labels
from espdetect.server.sensor import SensorKeeper, SensorStore
from espdetect.server.settings import CameraConfig, CameraOptions, ServerSettings
from espdetect.sources.base import FrameSource, SourceStats
from espdetect.stats import RateWindow, SampleWindow
from espdetect.workers import Workers

__all__ = [
    "Camera",
    "EncoderFactory",
    "FrameCounts",
    "ServeStats",
    "SourceFactory",
    "ViewerKind",
    "camera_params",
]

logger = logging.getLogger(__name__)

#: Opens the source of one camera; called each time the camera is needed after an idle period.
SourceFactory = Callable[[ServerSettings, CameraConfig], FrameSource]
#: Builds the JPEG encoder of the annotated stream at a quality.
EncoderFactory = Callable[[int], Encoder]

#: A cached frame older than this is not handed out as "live" (the slots keep their last value
#: across camera reconnections).
_LIVE_AGE: Final = 2.0


#: Camera options the server acts on itself (events, the unattended run), not the pipeline.
_NOT_PIPELINE: Final = frozenset({"always_on", "labels", "min_score", "min_frames", "end_timeout", "zones"})


def _recent(arrival_mono: float) -> bool:
    return time.perf_counter() - arrival_mono < _LIVE_AGE


class ViewerKind(str, Enum):
    """What a viewer watches."""

    RAW = "raw"
    ANNOTATED = "annotated"
    SSE = "sse"

    @property
    def subscription(self) -> SubscriptionKind:
        """The pipeline stage this kind of viewer needs."""
        return _SUBSCRIPTION[self]


_SUBSCRIPTION: Final[dict[ViewerKind, SubscriptionKind]] = {
    ViewerKind.RAW: "raw",
    ViewerKind.ANNOTATED: "annotated",
    ViewerKind.SSE: "detections",
}


class FrameCounts(NamedTuple):
    """Frames through each stage of one camera (or, from `RateWindow`, per second)."""

    #: Received from the camera.
    in_: float
    #: Run through the model.
    detect: float
    #: Annotated and encoded.
    out: float
    #: MJPEG parts and SSE events handed to viewers.
    sent: float


@dataclass
class ServeStats:
    """What the server did with one camera's frames (the pipeline counts the rest)."""

    #: MJPEG parts and SSE events handed to viewers' connections.
    frames_sent: int = 0
    bytes_sent: int = 0
    #: Annotated parts sent at the lower JPEG quality tier.
    low_quality_frames: int = 0
    #: Frames viewers missed because they were still busy with an older one.
    viewer_skipped: int = 0
    #: Viewers admitted over the camera's life, and turned away by a limit.
    viewers_served: int = 0
    viewers_rejected: int = 0
    #: Viewers dropped because one send stayed blocked for the viewer timeout.
    viewer_timeouts: int = 0
    #: Frame arrival to the last byte handed to the transport, annotated and raw streams.
    latency_ms: SampleWindow = field(default_factory=SampleWindow)
    raw_latency_ms: SampleWindow = field(default_factory=SampleWindow)


def _add_source_stats(a: SourceStats, b: SourceStats) -> SourceStats:
    out = SourceStats()
    for f in fields(SourceStats):
        if f.name != "connected":
            setattr(out, f.name, getattr(a, f.name) + getattr(b, f.name))
    return out


class _ConnectionWatch(FrameSource):
    """The camera's source as the pipeline reads it: frames pass through untouched, and the first
    frame of each new upstream connection (a reboot looks like one) is reported to ``opened``
    with its size. One integer comparison per frame."""

    def __init__(self, inner: FrameSource, opened: Callable[[tuple[int, int] | None], None]) -> None:
        super().__init__()
        self.inner = inner
        self.stats = inner.stats
        self.source_id = inner.source_id
        self._opened = opened
        self._connection: int | None = None

    def describe(self) -> str:
        return self.inner.describe()

    async def read(self) -> Frame:
        frame = await self.inner.read()
        # A network source counts its connections after the first: a new count, a new connection.
        connection = self.inner.stats.reconnects
        if connection != self._connection:
            self._connection = connection
            self._opened(jpeg_size(frame.jpeg) if frame.jpeg is not None else None)
        return frame

    async def aclose(self) -> None:
        await self.inner.aclose()


def camera_params(settings: CameraConfig) -> DetectParams:
    """The detection params a camera's settings ask for (not yet checked against a model)."""
    return DetectParams(conf=settings.conf, iou=settings.iou, imgsz=settings.imgsz, classes=settings.classes)


class Camera:
    """One configured camera: pipeline, settings, viewer counts and serving counters.

    ``settings`` are the camera's effective settings (``[defaults]`` merged in, ``imgsz``
    resolved for the model); `apply` changes them at run time.

    Example:
        >>> cam = hub.camera("front")  # doctest: +SKIP
        >>> cam.viewers[ViewerKind.ANNOTATED]
        0
    """

    def __init__(
        self,
        server: ServerSettings,
        settings: CameraConfig,
        detector: Detector,
        *,
        source_factory: SourceFactory,
        encoder_factory: EncoderFactory,
        workers: Workers | None = None,
        sensor_store: SensorStore | None = None,
    ) -> None:
        self.id = settings.id
        self.server = server
        self._source_factory = source_factory
        self._source: FrameSource | None = None
        self._retired_stats = SourceStats()
        self.viewers: dict[ViewerKind, int] = dict.fromkeys(ViewerKind, 0)
        self.serve = ServeStats()
        self.rates = RateWindow(server.serving.stats_window)
        #: Lower-quality encodes in progress, by (frame, quality): later viewers wait for them.
        self._encoding: dict[tuple[int, int], anyio.Event] = {}
        params = camera_params(settings)
        if server.events_enabled:
            check_event_labels(settings.id, settings.labels, list(detector.info.names.values()))
        self.pipeline = CameraPipeline(
            self._open_source,
            detector,
            params=params,
            encoder=encoder_factory(settings.quality),
            config=PipelineConfig(
                skip=settings.skip,
                stale=settings.stale,
                grace_period=server.upstream.grace_period,
                motion=settings.motion,
                motion_config=MotionConfig(
                    threshold=settings.motion_threshold,
                    min_area=settings.motion_min_area,
                    masks=settings.motion_masks,
                ),
                keepalive=settings.keepalive,
                tracking=settings.tracking,
            ),
            name=settings.id,
            workers=workers,
        )
        # "The model's own size" resolved: report what the detector really uses.
        self.settings = settings.model_copy(update={"imgsz": self.pipeline.params.imgsz})
        #: Keeps the camera's own sensor settings (applied on every connection); its `run`
        #: is a task of the hub.
        self.sensor = SensorKeeper.for_camera(
            settings,
            server.upstream.sensor_check_interval,
            connected=self._upstream_connected,
            frame_size=self._live_frame_size,
            store=sensor_store,
        )

    @property
    def detector(self) -> Detector:
        return self.pipeline.detector

    # -- source ---------------------------------------------------------------------------

    def _open_source(self) -> FrameSource:
        if self._source is not None:
            self._retired_stats = _add_source_stats(self._retired_stats, self._source.stats)
        self._source = self._source_factory(self.server, self.settings)
        return _ConnectionWatch(self._source, self.sensor.connection_opened)

    def _upstream_connected(self) -> bool:
        return self.pipeline.upstream_open and self._source is not None and self._source.stats.connected

    def _live_frame_size(self) -> tuple[int, int] | None:
        frame = self.live_frame()
        return jpeg_size(frame.jpeg) if frame is not None and frame.jpeg is not None else None

    def source_stats(self) -> SourceStats:
        """Source counters summed over every connection this camera has had."""
        if self._source is None:
            return _add_source_stats(self._retired_stats, SourceStats())
        total = _add_source_stats(self._retired_stats, self._source.stats)
        total.connected = self.pipeline.upstream_open and self._source.stats.connected
        return total

    # -- viewers and settings --------------------------------------------------------------

    @property
    def viewer_count(self) -> int:
        return sum(self.viewers.values())

    @property
    def quality_tiers(self) -> tuple[int, ...]:
        """JPEG qualities annotated viewers may get, best first."""
        low = self.server.viewers.low_quality
        if low < self.settings.quality:
            return (self.settings.quality, low)
        return (self.settings.quality,)

    def apply(self, changes: Mapping[str, Any]) -> CameraConfig:
        """Apply option changes (`CameraOptions` names); they take effect on the next frame.

        Raises:
            pydantic.ValidationError: a value out of range or an unknown option.
            ConfigurationError: a value the model cannot take (a class id beyond its classes, a
                size a fixed-size model cannot take); ``field`` names it.

        Nothing changes when anything is refused.
        """
        options = CameraOptions.model_validate({**self.settings.options.model_dump(), **changes})
        checked = {name: getattr(options, name) for name in changes}
        if "labels" in changes and self.server.events_enabled:
            check_event_labels(self.id, options.labels, list(self.detector.info.names.values()))
        self.pipeline.update(**{k: v for k, v in checked.items() if k not in _NOT_PIPELINE})
        self.settings = self.settings.model_copy(update={**checked, "imgsz": self.pipeline.params.imgsz})
        logger.info("%s: settings changed: %s", self.id, ", ".join(f"{k}={v!r}" for k, v in changes.items()))
        return self.settings

    def live_frame(self) -> Frame | None:
        """The newest camera frame if the camera is being read and the frame is recent, else None."""
        frame = self.pipeline.raw.value
        if self.pipeline.upstream_open and frame is not None and _recent(frame.arrival_mono):
            return frame
        return None

    def live_output(self) -> Rendered | None:
        """The newest annotated frame if annotated frames are being made and it is recent, else None."""
        pipe = self.pipeline
        rendered = pipe.output.value
        live = pipe.upstream_open and pipe.demand["annotated"] > 0
        if live and rendered is not None and _recent(rendered.frame.arrival_mono):
            return rendered
        return None

    async def encoded(self, rendered: Rendered, quality: int) -> bytes:
        """``rendered`` at another JPEG quality, encoded once per frame and quality in a worker
        thread and shared by every viewer that asks: the first starts the encode, the others wait
        for it without holding a render thread."""
        data = rendered.cached(quality)
        if data is not None:
            return data
        key = (id(rendered), quality)
        pending = self._encoding.get(key)
        if pending is not None:
            await pending.wait()
            data = rendered.cached(quality)
            if data is not None:
                return data
        done = self._encoding[key] = anyio.Event()
        try:
            # Shielded: the encode serves every viewer of this tier; one leaving waits the ~1 ms out.
            with anyio.CancelScope(shield=True):
                fresh = await self.pipeline.workers.render(rendered.encoded, quality)
        finally:
            del self._encoding[key]
            done.set()
        return fresh

    def counts(self) -> FrameCounts:
        stats = self.pipeline.stats
        return FrameCounts(stats.frames_in, stats.frames_detected, stats.frames_out, self.serve.frames_sent)

    def sample_rates(self, now: float) -> None:
        self.rates.add(now, self.counts())
