"""`CameraHub`: the server's cameras, each with one pipeline, its viewers and their limits.

A `Camera` owns the `CameraPipeline` of one configured camera (one upstream connection while
anybody watches), its effective settings (changed at run time through `Camera.apply`) and the
counters the pipeline does not keep: viewers per kind, frames and bytes sent, end-to-end
latency. The hub admits viewers against the per-camera and total limits and hands out a
`ViewerTicket` whose ``release`` must run when the stream ends, whatever the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any, Literal

from espdetect.detectors.base import Detector
from espdetect.encoders.base import Encoder
from espdetect.exceptions import ConfigurationError, EspdetectError
from espdetect.frame import Frame
from espdetect.pipeline import CameraPipeline, PipelineConfig, Rendered, SubscriptionKind
from espdetect.server.metrics import RateWindow
from espdetect.server.settings import CameraSettings, ServerSettings, redact_url
from espdetect.sources.base import FrameSource, SourceStats
from espdetect.workers import Workers

__all__ = [
    "Camera",
    "CameraHub",
    "DetectorFactory",
    "EncoderFactory",
    "ServeStats",
    "SettingRejected",
    "SourceFactory",
    "UnknownCamera",
    "ViewerKind",
    "ViewerLimitReached",
    "ViewerTicket",
]

logger = logging.getLogger(__name__)

#: Builds the detector of one camera (blocking: model loading runs in a worker thread).
DetectorFactory = Callable[[ServerSettings, CameraSettings], Detector]
#: Opens the source of one camera; called each time the camera is needed after an idle period.
SourceFactory = Callable[[ServerSettings, CameraSettings], FrameSource]
#: Builds the JPEG encoder of the annotated stream at a quality.
EncoderFactory = Callable[[int], Encoder]

_SAMPLE_EVERY = 0.5
#: A cached frame older than this is not handed out as "live" (the slots keep their last value
#: across camera reconnections).
_LIVE_AGE = 2.0


def _retrieve(future: asyncio.Future[bytes]) -> None:
    # Marks a failure seen even when every viewer that wanted it has left.
    if not future.cancelled():
        future.exception()


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


_SUBSCRIPTION: dict[ViewerKind, SubscriptionKind] = {
    ViewerKind.RAW: "raw",
    ViewerKind.ANNOTATED: "annotated",
    ViewerKind.SSE: "detections",
}


class UnknownCamera(EspdetectError, LookupError):
    """No configured camera has this id."""

    def __init__(self, camera_id: str, known: list[str]) -> None:
        super().__init__(f"expected one of the configured cameras {known}, got {camera_id!r}")
        self.camera_id = camera_id
        self.known = known


class ViewerLimitReached(EspdetectError):
    """A new viewer would exceed the per-camera or the server-wide viewer limit."""

    def __init__(self, scope: Literal["camera", "server"], limit: int, camera_id: str) -> None:
        where = f"camera {camera_id!r}" if scope == "camera" else "this server"
        super().__init__(f"expected at most {limit} viewers on {where}, and all {limit} places are taken")
        self.scope = scope
        self.limit = limit
        self.camera_id = camera_id


class SettingRejected(EspdetectError, ValueError):
    """A settings change the camera's model cannot take (class id out of range, fixed input size)."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field_name = field_name
        self.message = message


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
    latency_ms: deque[float] = field(default_factory=lambda: deque(maxlen=1000))
    raw_latency_ms: deque[float] = field(default_factory=lambda: deque(maxlen=1000))


def _add_source_stats(a: SourceStats, b: SourceStats) -> SourceStats:
    out = SourceStats()
    for f in fields(SourceStats):
        if f.name == "connected":
            continue
        setattr(out, f.name, getattr(a, f.name) + getattr(b, f.name))
    return out


class Camera:
    """One configured camera: pipeline, settings, viewer counts and serving counters.

    Example:
        >>> cam = hub.camera("front")  # doctest: +SKIP
        >>> cam.viewers[ViewerKind.ANNOTATED]
        0
    """

    def __init__(
        self,
        server: ServerSettings,
        settings: CameraSettings,
        detector: Detector,
        *,
        source_factory: SourceFactory,
        encoder_factory: EncoderFactory,
        workers: Workers | None = None,
    ) -> None:
        imgsz = getattr(detector, "imgsz", None)
        if settings.imgsz is None and isinstance(imgsz, int):
            # "The model's own size" resolved: report what the detector really uses.
            settings = settings.model_copy(update={"imgsz": imgsz})
        self.id = settings.id
        self.server = server
        self.settings = settings
        self.detector = detector
        self._source_factory = source_factory
        self._encoder_factory = encoder_factory
        self._source: FrameSource | None = None
        self._retired_stats = SourceStats()
        self.viewers: dict[ViewerKind, int] = dict.fromkeys(ViewerKind, 0)
        self.serve = ServeStats()
        self.rates = RateWindow(server.stats_window)
        self._variant: tuple[Rendered, int, asyncio.Future[bytes]] | None = None
        self.pipeline = CameraPipeline(
            self._open_source,
            detector,
            encoder=encoder_factory(settings.quality),
            config=PipelineConfig(skip=settings.skip, stale=settings.stale, grace_period=server.grace_period),
            name=settings.id,
            workers=workers,
        )

    # -- source ---------------------------------------------------------------------------

    def _open_source(self) -> FrameSource:
        if self._source is not None:
            self._retired_stats = _add_source_stats(self._retired_stats, self._source.stats)
        self._source = self._source_factory(self.server, self.settings)
        return self._source

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
        if self.server.low_quality < self.settings.quality:
            return (self.settings.quality, self.server.low_quality)
        return (self.settings.quality,)

    @property
    def class_count(self) -> int | None:
        """How many classes the model knows (None when it does not say)."""
        names = getattr(self.detector, "names", None)
        return len(names) if isinstance(names, Mapping) and names else None

    @property
    def fixed_imgsz(self) -> int | None:
        """The only input size the model takes, for fixed-shape exports (ONNX, OpenVINO...)."""
        value = getattr(self.detector, "fixed_imgsz", None)
        if isinstance(value, tuple) and value and all(isinstance(v, int) for v in value):
            return max(int(v) for v in value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        return None

    def check(self, changes: Mapping[str, Any]) -> None:
        """Refuse changes the model cannot take.

        Raises:
            SettingRejected: a class id beyond the model's classes, or a size a fixed-size
                model cannot take.
        """
        classes = changes.get("classes")
        nc = self.class_count
        if classes is not None and nc is not None:
            bad = [c for c in classes if c >= nc]
            if bad:
                raise SettingRejected(
                    "classes", f"expected class ids between 0 and {nc - 1} for this model, got {bad}"
                )
        imgsz = changes.get("imgsz")
        fixed = self.fixed_imgsz
        if imgsz is not None and fixed is not None and imgsz != fixed:
            raise SettingRejected(
                "imgsz", f"expected {fixed}: this model was exported with a fixed input size, got {imgsz}"
            )

    def apply(self, changes: Mapping[str, Any]) -> CameraSettings:
        """Validate and apply setting changes; they take effect on the next frame.

        Raises:
            SettingRejected: see `check`.
        """
        self.check(changes)
        new = CameraSettings.model_validate({**self.settings.model_dump(), **changes})
        detector_keys = {"conf", "iou", "imgsz", "classes"}
        if detector_keys & changes.keys():
            update = getattr(self.detector, "update", None)
            if callable(update):
                try:
                    update(**{k: getattr(new, k) for k in sorted(detector_keys)})
                except ConfigurationError as exc:
                    field_name = next(
                        (k for k in sorted(detector_keys & changes.keys()) if k in str(exc)), "body"
                    )
                    raise SettingRejected(field_name, str(exc)) from None
        pipeline_changes: dict[str, object] = {k: getattr(new, k) for k in ("skip", "stale") if k in changes}
        if pipeline_changes:
            self.pipeline.update(**pipeline_changes)
        if "quality" in changes and new.quality != self.settings.quality:
            self.pipeline.processor.encoder = self._encoder_factory(new.quality)
        self.settings = new
        logger.info("%s: settings changed: %s", self.id, ", ".join(f"{k}={v!r}" for k, v in changes.items()))
        return new

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
        """``rendered`` at another JPEG quality: one worker-thread encode per frame and quality,
        shared by every viewer that asks (a viewer leaving mid-encode does not cancel it)."""
        variant = self._variant
        if variant is None or variant[0] is not rendered or variant[1] != quality:
            future = asyncio.ensure_future(self.pipeline.workers.render(rendered.encoded, quality))
            future.add_done_callback(_retrieve)
            variant = self._variant = (rendered, quality, future)
        return await asyncio.shield(variant[2])

    def sample_rates(self, now: float | None = None) -> None:
        stats = self.pipeline.stats
        self.rates.add(
            time.monotonic() if now is None else now,
            (stats.frames_in, stats.frames_detected, stats.frames_out, self.serve.frames_sent),
        )


class ViewerTicket:
    """One admitted viewer; ``release`` (idempotent) gives its place back and logs why it left."""

    def __init__(self, hub: CameraHub, camera: Camera, kind: ViewerKind, peer: str, ticket_id: int) -> None:
        self.id = ticket_id
        self.hub = hub
        self.camera = camera
        self.kind = kind
        self.peer = peer
        self.started = time.monotonic()
        self.frames = 0
        self.bytes = 0
        self.skipped = 0
        self.released = False
        self.reason: str | None = None

    def sent(self, nbytes: int, skipped: int = 0) -> None:
        """Count one part or event handed to this viewer's connection."""
        self.frames += 1
        self.bytes += nbytes
        self.skipped += skipped
        serve = self.camera.serve
        serve.frames_sent += 1
        serve.bytes_sent += nbytes
        serve.viewer_skipped += skipped

    def release(self, reason: str) -> None:
        if self.released:
            return
        self.released = True
        self.reason = reason
        self.hub._release(self)
        logger.info(
            "viewer %d (%s %s, %s) disconnected: %s after %.1f s, %d frames, %d skipped",
            self.id,
            self.camera.id,
            self.kind.value,
            self.peer,
            reason,
            time.monotonic() - self.started,
            self.frames,
            self.skipped,
        )


class CameraHub:
    """The server's cameras and viewers.

    Example:
        >>> hub = await CameraHub.open(settings, make_detector, open_source, make_encoder)  # doctest: +SKIP
        >>> ticket = hub.admit(hub.camera("front"), ViewerKind.ANNOTATED, "127.0.0.1:5000")
        >>> ticket.release("done")
    """

    def __init__(
        self, settings: ServerSettings, cameras: list[Camera], workers: Workers | None = None
    ) -> None:
        self.settings = settings
        self.cameras: dict[str, Camera] = {cam.id: cam for cam in cameras}
        #: The threads every camera's pipeline shares (closed with the hub).
        self.workers = workers
        #: Set when the server stops: every stream ends at once.
        self.shutdown = asyncio.Event()
        self._ticket_ids = itertools.count(1)
        self._sampler: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls,
        settings: ServerSettings,
        detector_factory: DetectorFactory,
        source_factory: SourceFactory,
        encoder_factory: EncoderFactory,
    ) -> CameraHub:
        """Build every camera (loading models in a worker thread) and start the rate sampler."""
        cameras = []
        all_settings = settings.camera_settings()
        # One render thread per camera (and one for the lower quality tier) so that no camera's
        # drawing waits for another's; model calls take turns on detect_slots threads.
        workers = Workers(settings.detect_slots, len(all_settings) + 1, name="espdetect")
        for cam_settings in all_settings:
            detector = await asyncio.to_thread(detector_factory, settings, cam_settings)
            cameras.append(
                Camera(
                    settings,
                    cam_settings,
                    detector,
                    source_factory=source_factory,
                    encoder_factory=encoder_factory,
                    workers=workers,
                )
            )
            logger.info("camera %s: %s", cam_settings.id, redact_url(cam_settings.url))
        hub = cls(settings, cameras, workers)
        hub._sampler = asyncio.create_task(hub._sample_rates(), name="espdetect-rate-sampler")
        return hub

    @property
    def total_viewers(self) -> int:
        return sum(cam.viewer_count for cam in self.cameras.values())

    def camera(self, camera_id: str) -> Camera:
        """The camera with this id. Raises `UnknownCamera`."""
        cam = self.cameras.get(camera_id)
        if cam is None:
            raise UnknownCamera(camera_id, list(self.cameras))
        return cam

    def first(self) -> Camera:
        """The first configured camera (the ``/stream`` aliases). Raises `UnknownCamera` when none."""
        for cam in self.cameras.values():
            return cam
        raise UnknownCamera("(first)", [])

    def refusal(self, camera: Camera) -> ViewerLimitReached | None:
        """Why a new viewer of ``camera`` would be turned away now (counted), or None."""
        refused = None
        if camera.viewer_count >= self.settings.max_viewers_per_camera:
            refused = ViewerLimitReached("camera", self.settings.max_viewers_per_camera, camera.id)
        elif self.total_viewers >= self.settings.max_viewers_total:
            refused = ViewerLimitReached("server", self.settings.max_viewers_total, camera.id)
        if refused is not None:
            camera.serve.viewers_rejected += 1
        return refused

    def admit(self, camera: Camera, kind: ViewerKind, peer: str) -> ViewerTicket:
        """Count a new viewer, or raise `ViewerLimitReached` when a limit is reached."""
        refused = self.refusal(camera)
        if refused is not None:
            raise refused
        ticket = ViewerTicket(self, camera, kind, peer, next(self._ticket_ids))
        camera.viewers[kind] += 1
        camera.serve.viewers_served += 1
        logger.info(
            "viewer %d (%s %s, %s) connected; %d viewers on %s",
            ticket.id,
            camera.id,
            kind.value,
            peer,
            camera.viewer_count,
            camera.id,
        )
        return ticket

    def _release(self, ticket: ViewerTicket) -> None:
        ticket.camera.viewers[ticket.kind] -= 1
        if ticket.reason == "send timeout":
            ticket.camera.serve.viewer_timeouts += 1

    def begin_shutdown(self) -> None:
        """End every stream now (idempotent)."""
        if not self.shutdown.is_set():
            logger.info("ending %d viewer streams for shutdown", self.total_viewers)
            self.shutdown.set()

    async def aclose(self) -> None:
        """End every stream, stop the pipelines and close the camera connections."""
        self.begin_shutdown()
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
            self._sampler = None
        await asyncio.gather(*(cam.pipeline.aclose() for cam in self.cameras.values()))
        if self.workers is not None:
            self.workers.close()

    async def _sample_rates(self) -> None:
        while True:
            now = time.monotonic()
            for cam in self.cameras.values():
                cam.sample_rates(now)
            await asyncio.sleep(_SAMPLE_EVERY)
