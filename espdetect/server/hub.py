"""`CameraHub`: the server's cameras, the model they share, their viewers and the viewer limits.

The hub loads the model once (`DetectorFactory`) and gives every camera's pipeline the same
detector and the same worker threads, so model calls take turns across cameras instead of
competing for the cores. It admits viewers against the per-camera and total limits and hands
out a `ViewerTicket` whose ``release`` must run when the stream ends, whatever the reason.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Final

import anyio
from anyio.abc import TaskGroup

from espdetect._async import Stage
from espdetect.detectors.base import Detector
from espdetect.exceptions import EspdetectError, SlotClosed
from espdetect.latest import Latest
from espdetect.server.camera import Camera, EncoderFactory, SourceFactory, ViewerKind
from espdetect.server.errors import UnknownCamera, ViewerLimitReached
from espdetect.server.event_service import EventService
from espdetect.server.sensor import SensorStore
from espdetect.server.settings import DetectorSettings, ServerSettings, redact_url
from espdetect.workers import Workers

__all__ = ["CameraHub", "DetectorFactory", "ViewerTicket"]

logger = logging.getLogger(__name__)

#: Loads the model every camera shares (blocking: it runs in a worker thread).
DetectorFactory = Callable[[DetectorSettings], Detector]

#: Seconds between samples of the frame counters behind the rates of /stats.
_SAMPLE_EVERY: Final = 0.5
#: Pauses before an unattended camera whose source failed is opened again: doubling, capped.
_RETRY_FIRST: Final = 0.5
_RETRY_MAX: Final = 30.0
#: Seconds the unattended cameras may take to stop on shutdown.
_STOP_TIMEOUT: Final = 5.0


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
        self.camera.viewers[self.kind] -= 1
        if reason == "send timeout":
            self.camera.serve.viewer_timeouts += 1
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
    """The server's cameras and viewers; an async context manager that runs them.

    Example:
        >>> hub = await CameraHub.open(settings, load_model, open_source, make_encoder)  # doctest: +SKIP
        >>> async with hub:
        ...     ticket = hub.admit(hub.camera("front"), ViewerKind.ANNOTATED, "127.0.0.1:5000")
        ...     ticket.release("done")
    """

    def __init__(
        self,
        settings: ServerSettings,
        cameras: list[Camera],
        detector: Detector,
        workers: Workers,
        events: EventService | None = None,
    ) -> None:
        self.settings = settings
        self.cameras: dict[str, Camera] = {cam.id: cam for cam in cameras}
        #: The model every camera shares (closed with the hub).
        self.detector = detector
        #: The threads every camera's pipeline shares (closed with the hub).
        self.workers = workers
        #: Set when the server stops: every stream ends at once.
        self.shutdown = anyio.Event()
        #: The events of every camera, when events are on (closed with the hub).
        self.events = events
        #: Per camera: the job that keeps it running with no viewer (events, ``always_on``).
        self._unattended = {cam_id: Stage(f"{cam_id}-unattended") for cam_id in self.cameras}
        self._group: TaskGroup | None = None
        self._ticket_ids = itertools.count(1)
        self._running: contextlib.AbstractAsyncContextManager[CameraHub] | None = None

    @classmethod
    async def open(
        cls,
        settings: ServerSettings,
        detector_factory: DetectorFactory,
        source_factory: SourceFactory,
        encoder_factory: EncoderFactory,
        events: EventService | None = None,
    ) -> CameraHub:
        """Load the model (in a worker thread) and build every camera on it.

        ``events`` (when events are on) is closed with the hub, also when opening fails.
        """
        detector = await anyio.to_thread.run_sync(detector_factory, settings.detector)
        logger.info("model %s on %s (%s)", detector.info.model, detector.info.device, detector.info.backend)
        all_settings = settings.camera_settings()
        # One render thread per camera (and one for the lower quality tier) so that no camera's
        # drawing waits for another's; model calls take turns on detect_slots threads.
        # A remote model (Ray) costs this process nothing while it runs: each camera may have a
        # call in flight, and the pool's batches gather them.
        slots = settings.detector.detect_slots
        if detector.info.remote:
            slots = max(slots, len(all_settings))
        workers = Workers(slots, len(all_settings) + 1, name="espdetect")
        # Sensor settings changed through the API are kept in the data directory.
        sensor_store = SensorStore(settings.data_dir)
        cameras = []
        try:
            for cam_settings in all_settings:
                cameras.append(
                    Camera(
                        settings,
                        cam_settings,
                        detector,
                        source_factory=source_factory,
                        encoder_factory=encoder_factory,
                        workers=workers,
                        sensor_store=sensor_store,
                    )
                )
                await cameras[-1].sensor.restore()
                logger.info("camera %s: %s", cam_settings.id, redact_url(cam_settings.url))
        except BaseException:  # a camera the model cannot serve: nothing is left loaded
            workers.close()
            detector.close()
            if events is not None:
                await events.finish()
            raise
        return cls(settings, cameras, detector, workers, events)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[CameraHub]:
        """Run the hub while it serves: the rates of /stats, the events and the cameras that run
        with no viewer; on the way out end the events going on and close everything.

        Example:
            >>> async with hub.running():  # doctest: +SKIP
            ...     ...  # serve
        """
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(self._sample_rates, name="espdetect-rate-sampler")
                if self.events is not None:
                    await group.start(self.events.run, name="espdetect-events")
                self._group = group
                for cam in self.cameras.values():
                    group.start_soon(cam.sensor.run, name=f"{cam.id}-sensor")
                    self.refresh(cam)
                try:
                    yield self
                finally:
                    self._group = None
                    with anyio.move_on_after(_STOP_TIMEOUT, shield=True):
                        for stage in self._unattended.values():
                            await stage.stop()
                        if self.events is not None:
                            await self.events.finish()
                    group.cancel_scope.cancel()
        finally:
            await self.aclose()

    async def __aenter__(self) -> CameraHub:
        self._running = self.running()
        return await self._running.__aenter__()

    async def __aexit__(self, *exc: object) -> None:
        if self._running is not None:
            running, self._running = self._running, None
            await running.__aexit__(None, None, None)

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

    def unattended(self, camera: Camera) -> bool:
        """Whether ``camera`` runs with no viewer: events are on, or it is ``always_on``."""
        return self.events is not None or camera.settings.always_on

    def refresh(self, camera: Camera) -> None:
        """Start or stop ``camera``'s unattended run after its settings changed."""
        group = self._group
        if group is None:
            return
        stage = self._unattended[camera.id]
        if self.unattended(camera) and not stage.running:
            stage.start(group, lambda: self._run_unattended(camera))
            logger.info("%s: running unattended (%s)", camera.id, "events" if self.events else "always_on")
        elif not self.unattended(camera) and stage.running:
            stage.cancel()
            logger.info("%s: no longer unattended; the connection follows its viewers", camera.id)

    def apply(self, camera: Camera, changes: dict[str, object]) -> None:
        """Apply settings changes to ``camera`` (see `Camera.apply`), then to its events and run."""
        settings = camera.apply(changes)
        if self.events is not None:
            self.events.reconfigure(camera.id, settings)
        self.refresh(camera)

    async def _run_unattended(self, camera: Camera) -> None:
        """Hold a detections subscription with no viewer, feeding the events when they are on;
        when the camera's source fails, open it again after a pause."""
        pipeline = camera.pipeline
        delay = _RETRY_FIRST
        while True:
            began = time.monotonic()
            try:
                async with pipeline.subscribe("detections"):
                    if self.events is not None:
                        await self.events.follow(pipeline)
                    else:
                        await _until_closed(pipeline.detections)
            except SlotClosed:
                pass
            except EspdetectError as exc:  # the pipeline stopped after an internal error (logged)
                logger.warning("%s: unattended run stopped: %s", camera.id, exc)
            # A connection that lasted resets the back-off; one failing at once doubles it.
            if time.monotonic() - began > _RETRY_MAX:
                delay = _RETRY_FIRST
            logger.info("%s: camera stream ended; opening it again in %.1f s", camera.id, delay)
            await anyio.sleep(delay)
            delay = min(delay * 2, _RETRY_MAX)

    def refusal(self, camera: Camera) -> ViewerLimitReached | None:
        """Why a new viewer of ``camera`` would be turned away now (counted), or None."""
        limits = self.settings.viewers
        refused = None
        if camera.viewer_count >= limits.max_viewers_per_camera:
            refused = ViewerLimitReached("camera", limits.max_viewers_per_camera, camera.id)
        elif self.total_viewers >= limits.max_viewers_total:
            refused = ViewerLimitReached("server", limits.max_viewers_total, camera.id)
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

    def begin_shutdown(self) -> None:
        """End every stream now (idempotent)."""
        if not self.shutdown.is_set():
            logger.info("ending %d viewer streams for shutdown", self.total_viewers)
            self.shutdown.set()

    async def aclose(self) -> None:
        """End every stream, stop the pipelines, close the camera connections and the model."""
        self.begin_shutdown()
        try:
            async with anyio.create_task_group() as group:
                for cam in self.cameras.values():
                    group.start_soon(cam.pipeline.aclose, name=f"{cam.id}-close")
        finally:
            self.workers.close()
            self.detector.close()

    async def _sample_rates(self) -> None:
        while True:
            now = time.monotonic()
            for cam in self.cameras.values():
                cam.sample_rates(now)
            await anyio.sleep(_SAMPLE_EVERY)


async def _until_closed(slot: Latest[Any]) -> None:
    version = slot.version
    while True:
        version, _ = await slot.next_after(version)
