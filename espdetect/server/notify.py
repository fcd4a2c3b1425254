"""What the event service hands to the places events go: MQTT, webhooks (`EventSink`).

The service builds each record's JSON once (`EventMessage`) and gives it to every sink with
`EventSink.submit`, which never blocks and never raises: a sink keeps a bounded outbox of its
own and delivers from its `EventSink.run` task, retrying while its peer is away. A sink that
falls behind drops its oldest records (counted in `SinkStats`), never the server's memory.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from anyio.abc import TaskStatus

from espdetect.events import EventUpdate
from espdetect.server.metric_spec import counter, gauge

__all__ = ["CountMessage", "EventMessage", "EventSink", "Notification", "SinkStats"]


@dataclass(frozen=True)
class EventMessage:
    """One event record going out: its JSON body (the same on MQTT and webhooks) and its picture.

    ``snapshot`` is the JPEG of the event's best moment on ``start`` and ``update`` records that
    carry one; None on ``end`` (the picture did not change) and when the frame could not be encoded.

    Example:
        >>> from espdetect.events import Event, EventUpdate
        >>> event = Event(id="e1", camera="door", label="person", score=0.9, box=(1, 2, 3, 4),
        ...               frame_size=(640, 480), start_time=100.0, best_time=100.0, group_id="e1")
        >>> message = EventMessage.of(EventUpdate("start", event, notify=True))
        >>> json.loads(message.body)["type"], message.camera, message.label
        ('start', 'door', 'person')
    """

    update: EventUpdate
    #: UTF-8 JSON of ``update.to_dict()``.
    body: bytes
    snapshot: bytes | None

    @classmethod
    def of(cls, update: EventUpdate) -> EventMessage:
        snapshot = update.event.snapshot if update.type != "end" else None
        body = json.dumps(update.to_dict(), separators=(",", ":"), allow_nan=False).encode()
        return cls(update, body, snapshot)

    @property
    def camera(self) -> str:
        return self.update.event.camera

    @property
    def label(self) -> str:
        return self.update.event.label


@dataclass(frozen=True)
class CountMessage:
    """How many objects of a label a camera sees now, while the label has an event (else 0).

    Sent when it changes; MQTT keeps the last one (retained) for Home Assistant's binary sensor.
    """

    camera: str
    label: str
    count: int


#: What a sink is given.
Notification = EventMessage | CountMessage


@dataclass(frozen=True)
class SinkStats:
    """How one sink is doing (a snapshot for ``/stats``; ``/metrics`` labels it ``sink``)."""

    #: Whether its peer was reachable at the last attempt (MQTT: connected).
    connected: bool = field(metadata=gauge("1 while the sink's peer is reachable.", name="sink_connected"))
    #: Records waiting to go out.
    queued: int = field(metadata=gauge("Records waiting to go out.", name="sink_queued"))
    #: Records its peer acknowledged (MQTT: PUBACK; webhooks: a 2xx answer).
    delivered: int = field(metadata=counter("Records the peer acknowledged.", name="sink_delivered"))
    #: Attempts that failed and were tried again.
    retries: int = field(metadata=counter("Failed attempts tried again.", name="sink_retries"))
    #: Records given up on after every retry failed.
    failed: int = field(metadata=counter("Records given up on after every retry.", name="sink_failed"))
    #: Records dropped unsent because the outbox was full (the oldest go first).
    dropped: int = field(
        metadata=counter("Records dropped unsent: the outbox was full.", name="sink_dropped")
    )


class EventSink(Protocol):
    """A place events go. ``run`` delivers; ``submit`` and ``announce`` only queue."""

    #: Short name for logs and ``/stats`` ("mqtt", "webhooks").
    name: str

    def announce(self, labels: Mapping[str, Sequence[str]]) -> None:
        """The labels that make events, per camera: sent at start and again when they change
        (MQTT: Home Assistant discovery); sinks that need no announcement ignore it."""

    def submit(self, item: Notification) -> None:
        """Queue ``item`` for delivery; never blocks or raises (a full outbox drops its oldest)."""

    def stats(self) -> SinkStats:
        """Counters and state now."""

    async def run(self, *, task_status: TaskStatus[None]) -> None:
        """Deliver until cancelled; ``task_status.started()`` once ready to accept items (not
        necessarily connected). On cancellation a sink may take up to about one second, shielded,
        to flush and say goodbye (MQTT: ``offline`` on the availability topic)."""
