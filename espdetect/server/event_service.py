"""`EventService`: the server's events — one engine per camera, the store, the live feed, the sinks.

Each camera's `EventEngine` is fed by `EventService.follow` while the hub keeps the camera
running unattended (`CameraHub`): every model result of the camera's pipeline, and between
them the still frames motion gating let through without a model call (the detections of the
last call still stand for them, so a person standing still stays one event). Every record the
engines make is

1. stored (`EventStore`, in a worker thread, one write at a time, the picture before the row),
2. then published: to the live feed (``GET /events/live``) and to each sink (MQTT, webhooks),

so that whoever is notified can fetch the event and its picture at once. Stopping the service
ends the events going on and stores their end before the sinks say goodbye.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final, TypeVar

import anyio
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from espdetect.event_store import EventStore, PruneStats
from espdetect.events import EventConfig, EventEngine, EventUpdate
from espdetect.exceptions import ConfigurationError
from espdetect.pipeline import CameraPipeline, DetectionResult
from espdetect.server.metric_spec import counter
from espdetect.server.notify import CountMessage, EventMessage, EventSink, SinkStats
from espdetect.server.settings import CameraOptions, ServerSettings, redact_url

__all__ = ["EventCounters", "EventService", "check_event_labels", "event_config"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Seconds between checks for events that timed out and frames motion gating kept from the model.
_TICK: Final = 0.25
#: Seconds between retention passes over the store.
_PRUNE_EVERY: Final = 3600.0
#: Records a live-feed subscriber may fall behind by before it is dropped (it reconnects).
_FEED_BUFFER: Final = 64
#: Seconds the service may take, on shutdown, to end and store the events going on.
_FINISH_TIMEOUT: Final = 5.0


def event_config(options: CameraOptions) -> EventConfig:
    """The engine settings a camera's options ask for."""
    return EventConfig(
        labels=options.labels,
        min_score=options.min_score,
        min_frames=options.min_frames,
        end_timeout=options.end_timeout,
        zones=[[(x, y) for x, y in zone] for zone in options.zones],
    )


def check_event_labels(camera_id: str, labels: Sequence[str], names: Sequence[str]) -> None:
    """Raise `ConfigurationError` naming the camera when a label is not one of the model's classes."""
    known = set(names)
    unknown = [label for label in labels if label not in known]
    if unknown:
        sample = ", ".join(sorted(known)[:8])
        raise ConfigurationError(
            f"camera {camera_id!r}: expected labels among the model's classes ({sample}, ...), "
            f"got {', '.join(map(repr, unknown))}",
            field="labels",
        )


@dataclass
class EventCounters:
    """What the service did since it started (``events`` in ``/stats``)."""

    started: int = field(default=0, metadata=counter("Events started.", name="events_started"))
    updated: int = field(
        default=0, metadata=counter("Event records of a better picture.", name="events_updated")
    )
    ended: int = field(default=0, metadata=counter("Events ended.", name="events_ended"))
    store_errors: int = field(
        default=0, metadata=counter("Event records the store could not write.", name="events_store_errors")
    )
    feed_dropped: int = field(
        default=0,
        metadata=counter("Live event feeds dropped for falling behind.", name="events_feed_dropped"),
    )
    pruned: int = field(
        default=0, metadata=counter("Finished events removed by retention.", name="events_pruned")
    )
    #: Per sink ("mqtt", "webhooks").
    sinks: dict[str, SinkStats] = field(default_factory=dict)


@dataclass
class _Watch:
    """One camera's engine and what was last fed to it."""

    engine: EventEngine
    #: Settings to apply before the next frame (changed through the settings API).
    pending: EventConfig | None = None
    #: The last model result fed.
    last_result: DetectionResult | None = None
    #: Timestamp (Unix seconds) of the last frame fed.
    fed: float = -math.inf
    counts: dict[str, int] = field(default_factory=dict)


class EventService:
    """Events of every camera: engines, store, live feed and sinks (see the module).

    Example:
        >>> service = EventService.open(settings, sinks)  # doctest: +SKIP
        >>> async with anyio.create_task_group() as tg:  # doctest: +SKIP
        ...     await tg.start(service.run)
        ...     tg.start_soon(service.follow, hub.camera("door"))
    """

    def __init__(
        self,
        settings: ServerSettings,
        store: EventStore,
        sinks: Sequence[EventSink] = (),
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.sinks = tuple(sinks)
        self.counters = EventCounters()
        self._clock = clock
        self._watches: dict[str, _Watch] = {
            cam.id: _Watch(EventEngine(cam.id, event_config(cam))) for cam in settings.camera_settings()
        }
        # One store call at a time, in order: an event's end never overtakes its start.
        self._store_turn = anyio.CapacityLimiter(1)
        self._feed: set[MemoryObjectSendStream[EventMessage]] = set()
        self._closed = False

    @classmethod
    def open(cls, settings: ServerSettings, sinks: Sequence[EventSink] = ()) -> EventService:
        """Open the store in the settings' data directory (blocking: creates folders, may recover).

        Raises:
            ConfigurationError: the data directory cannot be created or written.
        """
        data_dir = settings.data_dir
        try:
            store = EventStore(data_dir)
        except OSError as exc:
            raise ConfigurationError(
                f"expected a writable data_dir for events, got {str(data_dir)!r}: {exc.strerror or exc}",
                field="data_dir",
            ) from None
        logger.info("events: stored in %s", data_dir)
        return cls(settings, store, sinks)

    @property
    def data_dir(self) -> Path:
        return self.store.data_dir

    def stats(self) -> EventCounters:
        """A copy of the counters now, with each sink's."""
        return replace(self.counters, sinks={sink.name: sink.stats() for sink in self.sinks})

    # -- running ------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run the sinks and retention until cancelled; started once the sinks accept records."""
        labels = {camera: watch.engine.config.labels for camera, watch in self._watches.items()}
        async with anyio.create_task_group() as group:
            for sink in self.sinks:
                sink.announce(labels)
                await group.start(_run_sink, sink)
            group.start_soon(self._prune_forever, name="espdetect-event-retention")
            task_status.started()

    async def follow(self, pipeline: CameraPipeline) -> None:
        """Feed the camera's engine until the pipeline's detections end (the source failed).

        The caller holds a ``detections`` subscription on ``pipeline`` while this runs.
        """
        watch = self._watches[pipeline.name]
        slot = pipeline.detections
        version = slot.version
        while True:
            result: DetectionResult | None = None
            with anyio.move_on_after(_TICK):
                version, result = await slot.next_after(version)  # SlotClosed ends the loop
            await self._apply_pending(watch)
            if result is not None:
                await self._take(pipeline, watch, result)
            else:
                await self._idle(pipeline, watch)

    def reconfigure(self, camera_id: str, options: CameraOptions) -> None:
        """Use ``options``' event settings for the camera from its next frame."""
        watch = self._watches[camera_id]
        config = event_config(options)
        if config != watch.engine.config:
            watch.pending = config
            if watch.engine.config.labels != config.labels:
                labels = {cam: (w.pending or w.engine.config).labels for cam, w in self._watches.items()}
                for sink in self.sinks:
                    sink.announce(labels)

    async def finish(self) -> None:
        """End the events going on, store and publish their end, close the store (idempotent)."""
        if self._closed:
            return
        self._closed = True
        with anyio.move_on_after(_FINISH_TIMEOUT, shield=True):
            now = self._clock()
            for camera, watch in self._watches.items():
                updates = watch.engine.end_all(now)
                if updates:
                    logger.info("%s: %d event(s) ended by shutdown", camera, len(updates))
                await self._emit(watch, updates)
        for stream in list(self._feed):
            stream.close()
        await anyio.to_thread.run_sync(self.store.close, limiter=self._store_turn)

    # -- live feed ------------------------------------------------------------------------

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[MemoryObjectReceiveStream[EventMessage]]:
        """Records as they happen; a subscriber that falls behind is dropped (its stream ends)."""
        send, receive = anyio.create_memory_object_stream[EventMessage](_FEED_BUFFER)
        self._feed.add(send)
        try:
            with receive:
                yield receive
        finally:
            self._feed.discard(send)
            send.close()

    # -- store --------------------------------------------------------------------------

    async def in_store(self, fn: Callable[..., T], /, *args: object) -> T:
        """Run a blocking store call in a worker thread, in turn with the service's writes."""
        return await anyio.to_thread.run_sync(lambda: fn(*args), limiter=self._store_turn)

    # -- internals ------------------------------------------------------------------------

    async def _apply_pending(self, watch: _Watch) -> None:
        config, watch.pending = watch.pending, None
        if config is not None:
            await self._emit(watch, watch.engine.reconfigure(config, self._clock()))

    async def _take(self, pipeline: CameraPipeline, watch: _Watch, result: DetectionResult) -> None:
        frame = result.frame
        processor = pipeline.processor

        def snapshot() -> bytes:
            # The annotated frame at the stream's quality (the boxes of this very result).
            return processor.render(frame, result, fresh=True).jpeg

        updates = await pipeline.workers.render(
            watch.engine.update,
            result.detections,
            timestamp=frame.arrival,
            frame_size=frame.size,
            snapshot=snapshot,
        )
        watch.last_result = result
        watch.fed = frame.arrival
        await self._emit(watch, updates)

    async def _idle(self, pipeline: CameraPipeline, watch: _Watch) -> None:
        still = pipeline.still
        last = watch.last_result
        if still is not None and last is not None and still.arrival > max(watch.fed, last.frame.arrival):
            watch.fed = still.arrival
            updates = watch.engine.hold(still.arrival)
        else:
            updates = watch.engine.tick(self._clock())
        await self._emit(watch, updates)

    async def _emit(self, watch: _Watch, updates: list[EventUpdate]) -> None:
        for update in updates:
            await self._store(update)
            message = EventMessage.of(update)
            self._count(update)
            for stream in list(self._feed):
                try:
                    stream.send_nowait(message)
                except anyio.WouldBlock:
                    self.counters.feed_dropped += 1
                    self._feed.discard(stream)
                    stream.close()
                except anyio.BrokenResourceError:
                    self._feed.discard(stream)
            for sink in self.sinks:
                sink.submit(message)
        counts = watch.engine.counts
        for label, count in counts.items():
            if watch.counts.get(label) != count:
                for sink in self.sinks:
                    sink.submit(CountMessage(watch.engine.camera, label, count))
        watch.counts = counts

    def _count(self, update: EventUpdate) -> None:
        event = update.event
        if update.type == "start":
            self.counters.started += 1
            logger.info(
                "%s: %s event %s started (score %.2f)", event.camera, event.label, event.id, event.score
            )
        elif update.type == "end":
            self.counters.ended += 1
            assert event.end_time is not None  # an end record has one
            logger.info(
                "%s: %s event %s ended after %.1f s",
                event.camera,
                event.label,
                event.id,
                event.end_time - event.start_time,
            )
        else:
            self.counters.updated += 1

    async def _store(self, update: EventUpdate) -> None:
        try:
            await self.in_store(self.store.apply, update)
        except Exception:
            # The notification still goes out: being told beats nothing when the disk is full.
            self.counters.store_errors += 1
            logger.exception("events: could not store %s of event %s", update.type, update.event.id)

    async def _prune_forever(self) -> None:
        storage = self.settings.storage
        max_age = storage.retain_days * 86400.0 or None
        max_bytes = storage.retain_mb * 1_000_000 or None
        if max_age is None and max_bytes is None:
            return
        while True:
            try:
                pruned: PruneStats = await self.in_store(self.store.prune, self._clock(), max_age, max_bytes)
            except Exception:
                logger.exception("events: retention pass failed")
            else:
                self.counters.pruned += pruned.deleted
                if pruned.deleted:
                    logger.info("events: retention removed %d finished event(s)", pruned.deleted)
            await anyio.sleep(_PRUNE_EVERY)


async def _run_sink(sink: EventSink, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    await sink.run(task_status=task_status)


def describe_sinks(settings: ServerSettings) -> str:
    """Where events go, for the start-up log (URLs redacted)."""
    places = []
    if settings.mqtt.mqtt_url:
        places.append(f"MQTT {redact_url(settings.mqtt.mqtt_url)}")
    places.extend(f"webhook {redact_url(url)}" for url in settings.webhooks.webhook_urls)
    return ", ".join(places) or "nowhere but the store and the live feed"
