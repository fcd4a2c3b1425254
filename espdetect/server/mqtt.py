"""`MqttSink`: event records to an MQTT broker, with Home Assistant discovery.

Topics, with P the ``mqtt_prefix`` (``espdetect``); every message goes out with QoS 1:

* ``P/<camera>/events``: each event record's JSON (`EventMessage.body`), not retained.
* ``P/<camera>/<label>``: how many objects of the label the camera sees (ASCII digits), retained.
* ``P/<camera>/<label>/snapshot``: the JPEG of the event's best moment, retained, so that Home
  Assistant's camera entity shows the latest one. It goes out before the record it belongs to.
* ``P/available``: ``online`` (retained) after each connection; ``offline`` on shutdown and, as
  the connection's last will, from the broker when the process dies.

Delivery. `MqttSink.submit` only queues, in a bounded outbox: when it is full the oldest record is
dropped (counted). `MqttSink.run` connects, and reconnects forever with a growing, jittered delay;
a record leaves the outbox only once the broker acknowledged it (PUBACK), so records queued while
the broker is away go out, in order, when it is back. A record cut off by a lost connection is sent
again: subscribers may see it twice (QoS 1 is "at least once"). A count still waiting is replaced
by a newer count of the same camera and label: only the latest matters to a retained topic. On
shutdown the sink takes up to a second to send what is queued and say ``offline``.

Home Assistant discovery (``mqtt_discovery``). After each connection and on `MqttSink.announce`,
the sink publishes a retained config per camera and label under ``<discovery_prefix>/`` (usually
``homeassistant/``): a ``binary_sensor`` ("occupancy", on while the count is above 0) and a
``camera`` showing the snapshot, grouped in one device per camera. Configs of labels no longer
announced are removed (an empty retained payload), also those a previous run left at the broker:
the sink subscribes to its own config topics and clears the ones it did not publish. When Home
Assistant says it (re)started (``online`` on ``<discovery_prefix>/status``) the configs go again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import random
import re
import socket
import ssl
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import unquote, urlsplit

import aiomqtt
import anyio
from anyio.abc import TaskStatus

import espdetect
from espdetect.server.notify import CountMessage, Notification, SinkStats
from espdetect.server.settings import MqttSettings, redact_url

__all__ = ["MqttSink"]

logger = logging.getLogger(__name__)

#: First delay before connecting again, doubled per failure up to `BACKOFF_MAX` (seconds). The
#: cap is short: the broker is usually on the LAN, an attempt costs next to nothing, and every
#: second of it delays the notification of whatever happened while the broker was away (a cap
#: of 30 s delivered those records ~20 s after a 30-s outage ended; bench_events).
BACKOFF_FIRST: Final = 0.5
BACKOFF_MAX: Final = 5.0
#: Seconds a PUBACK may take before the connection is taken for dead and made again.
PUBLISH_TIMEOUT: Final = 30.0
#: Seconds of the connection's keep-alive: a silent broker is noticed within about twice that.
KEEPALIVE: Final = 30
#: Seconds a shutdown may take to say ``offline`` and disconnect.
GOODBYE: Final = 1.0
#: Connections in a row that may fail while one record is being sent before it is given up.
MAX_ATTEMPTS: Final = 5

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def _safe_id(text: str) -> str:
    """``text`` fit for a discovery topic level or a unique id (``[A-Za-z0-9_-]``).

    A text that had to change gets a short hash of itself, so that "traffic light" and
    "traffic_light" stay two entities.
    """
    safe = _UNSAFE.sub("_", text)
    if safe != text:
        safe += "_" + hashlib.sha1(text.encode()).hexdigest()[:6]
    return safe


def _client_id(settings: MqttSettings) -> str:
    if settings.mqtt_client_id:
        return settings.mqtt_client_id
    return ("espdetect-" + re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname()))[:64]


@dataclass(frozen=True)
class _Connection:
    """Where and how to connect, from ``mqtt_url``."""

    host: str
    port: int
    username: str | None
    password: str | None
    tls: ssl.SSLContext | None
    #: The URL without its password, for logs.
    shown: str

    @classmethod
    def parse(cls, url: str) -> _Connection:
        parts = urlsplit(url)
        secure = parts.scheme == "mqtts"
        username = unquote(parts.username) if parts.username is not None else None
        password = unquote(parts.password) if parts.password is not None else None
        return cls(
            host=parts.hostname or "",
            port=parts.port or (8883 if secure else 1883),
            username=username,
            password=password,
            # Loading the system's certificates blocks: once, here, not on every connection.
            tls=ssl.create_default_context() if secure else None,
            shown=redact_url(url),
        )


@dataclass(eq=False)
class _Record:
    """One submitted notification: the MQTT messages still to publish for it."""

    #: (topic, payload, retain), in order; the first goes next.
    parts: list[tuple[str, bytes, bool]]
    #: (camera, label) of a count, which a newer count replaces while it waits.
    key: tuple[str, str] | None = None
    dropped: bool = False
    #: Connections that failed while it was being sent.
    attempts: int = 0


@dataclass(eq=False)
class _Outbox:
    """The bounded FIFO of records not yet acknowledged; the head is the one being sent.

    Locked, so that `MqttSink.submit` may also be called from a worker thread.
    """

    capacity: int
    records: deque[_Record] = field(default_factory=deque)
    #: The waiting count of each (camera, label).
    counts: dict[tuple[str, str], _Record] = field(default_factory=dict)
    sending: _Record | None = None
    delivered: int = 0
    dropped: int = 0
    failed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def put(self, record: _Record) -> None:
        with self.lock:
            if record.key is not None:
                waiting = self.counts.get(record.key)
                if waiting is not None and waiting is not self.sending:
                    waiting.parts = record.parts
                    return
                self.counts[record.key] = record
            if len(self.records) >= self.capacity:
                # The oldest goes, even when it is being sent: the bound is a promise about memory.
                oldest = self.records.popleft()
                oldest.dropped = True
                self._forget(oldest)
                self.dropped += 1
            self.records.append(record)

    def head(self) -> _Record | None:
        with self.lock:
            self.sending = self.records[0] if self.records else None
            return self.sending

    def next_part(self, record: _Record) -> tuple[str, bytes, bool] | None:
        with self.lock:
            return record.parts[0] if record.parts and not record.dropped else None

    def sent_part(self, record: _Record) -> None:
        with self.lock:
            if record.parts:
                record.parts.pop(0)

    def release(self, *, broken: bool) -> _Record | None:
        """The head is no longer being sent: newer counts may replace it again.

        ``broken``: the connection failed while the broker had not acknowledged it. A record that
        does so `MAX_ATTEMPTS` times in a row (a broker that drops the connection on a too large
        message does) is given up, so that it does not hold up the rest forever; it is returned.
        """
        with self.lock:
            record, self.sending = self.sending, None
            if record is None or not broken or record.dropped:
                return None
            record.attempts += 1
            if record.attempts < MAX_ATTEMPTS:
                return None
            self.records.remove(record)
            self._forget(record)
            self.failed += 1
            return record

    def done(self, record: _Record, *, failed: bool = False) -> None:
        with self.lock:
            self.sending = None
            if record.dropped:
                return  # counted when it was dropped
            self.records.remove(record)
            self._forget(record)
            if failed:
                self.failed += 1
            else:
                self.delivered += 1

    def _forget(self, record: _Record) -> None:
        if record.key is not None and self.counts.get(record.key) is record:
            del self.counts[record.key]


class _Backoff:
    """Delays between connection attempts: doubling from `BACKOFF_FIRST` to `BACKOFF_MAX`, jittered
    (half to all of the step) so that many clients of one broker do not come back in step."""

    def __init__(self) -> None:
        self._step = BACKOFF_FIRST

    def reset(self) -> None:
        self._step = BACKOFF_FIRST

    def next(self) -> float:
        delay = self._step * random.uniform(0.5, 1.0)
        self._step = min(BACKOFF_MAX, self._step * 2)
        return delay


class MqttSink:
    """Sends event records, object counts and snapshots to an MQTT broker (an `EventSink`).

    ``labels`` are the labels that make events, per camera id: what Home Assistant discovery
    announces until `announce` gives others. See the module's docstring for the topics.

    Example:
        >>> from espdetect.server.settings import MqttSettings
        >>> sink = MqttSink(MqttSettings(mqtt_url="mqtt://broker.lan"), labels={"door": ["person"]})
        >>> sink.submit(CountMessage("door", "person", 1))
        >>> sink.stats().queued
        1

        ``run`` delivers (connecting, and reconnecting, on its own) until cancelled::

            async with anyio.create_task_group() as tg:
                await tg.start(sink.run)
    """

    name: str = "mqtt"

    def __init__(
        self,
        settings: MqttSettings,
        *,
        labels: Mapping[str, Sequence[str]],
        version: str = espdetect.__version__,
    ) -> None:
        if settings.mqtt_url is None:
            raise ValueError("expected settings.mqtt_url to name the broker, got None")
        self._settings = settings
        self._version = version
        self._connection = _Connection.parse(settings.mqtt_url)
        self._client_id = _client_id(settings)
        self._prefix = settings.mqtt_prefix
        self._available = f"{self._prefix}/available"
        self._node = _safe_id(self._prefix.replace("/", "_"))
        self._outbox = _Outbox(settings.mqtt_outbox)
        self._lock = threading.Lock()
        #: Discovery configs now, by topic, and the config topics to empty at the broker.
        self._configs: dict[str, bytes] = {}
        self._stale: set[str] = set()
        #: Config topics published since the process started (removed when their label goes).
        self._announced: set[str] = set()
        self._discovery_due = False
        self._connected = False
        self._connections = 0
        self._retries = 0
        #: Connection attempts failed in a row (logged on the first only).
        self._failures = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._wakeup: anyio.Event | None = None
        self.announce(labels)

    # -- what the event service calls -------------------------------------------------------

    def announce(self, labels: Mapping[str, Sequence[str]]) -> None:
        """The labels that make events, per camera: Home Assistant entities are made for these and
        removed for any other (when ``mqtt_discovery`` is on). Never blocks."""
        for camera, names in labels.items():
            if "events" in names:
                logger.warning(
                    "MQTT: label 'events' of camera %s shares its topic with event records", camera
                )
        configs = self._discovery_configs(labels) if self._settings.mqtt_discovery else {}
        with self._lock:
            self._configs = configs
            self._stale |= self._announced - configs.keys()
            self._discovery_due = bool(configs)
        self._wake()

    def submit(self, item: Notification) -> None:
        """Queue ``item`` for the broker; never blocks or raises (a full outbox drops its oldest).

        Callable from the event loop's thread or any other.
        """
        prefix = f"{self._prefix}/{item.camera}"
        if isinstance(item, CountMessage):
            topic = f"{prefix}/{item.label}"
            record = _Record([(topic, str(item.count).encode(), True)], key=(item.camera, item.label))
        else:
            parts = [(f"{prefix}/events", item.body, False)]
            if item.snapshot is not None:
                # Before the record, so that whoever reacts to the record finds the new picture.
                parts.insert(0, (f"{prefix}/{item.label}/snapshot", item.snapshot, True))
            record = _Record(parts)
        self._outbox.put(record)
        self._wake()

    def stats(self) -> SinkStats:
        """Counters and state now (``retries``: failed connection attempts and lost connections).

        Example:
            >>> from espdetect.server.settings import MqttSettings
            >>> MqttSink(MqttSettings(mqtt_url="mqtt://broker.lan"), labels={}).stats().connected
            False
        """
        box = self._outbox
        with box.lock:
            return SinkStats(
                connected=self._connected,
                queued=len(box.records),
                delivered=box.delivered,
                retries=self._retries,
                failed=box.failed,
                dropped=box.dropped,
            )

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Deliver until cancelled, connecting again whenever the connection fails.

        Ready (``task_status.started()``) at once, before any connection. On cancellation it takes
        up to about a second, shielded, to send what is queued, publish ``offline`` and disconnect.
        """
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._wakeup = anyio.Event()
        task_status.started()
        backoff = _Backoff()
        while True:
            connections = self._connections
            try:
                await self._session(backoff)
            except aiomqtt.MqttError as exc:
                self._failed(exc, lost=self._connections > connections)
            await anyio.sleep(backoff.next())

    # -- one connection ------------------------------------------------------------------------

    def _new_client(self) -> aiomqtt.Client:
        c = self._connection
        return aiomqtt.Client(
            c.host,
            c.port,
            username=c.username,
            password=c.password,
            identifier=self._client_id,
            logger=logging.getLogger(f"{__name__}.client"),
            will=aiomqtt.Will(self._available, b"offline", qos=1, retain=True),
            keepalive=KEEPALIVE,
            tls_context=c.tls,
        )

    async def _session(self, backoff: _Backoff) -> None:
        """Connect, then deliver until the connection fails (raises `aiomqtt.MqttError`)."""
        client = self._new_client()
        try:
            await client.__aenter__()
        except BaseException:
            _close_socket(client)
            raise
        self._on_connected()
        backoff.reset()
        try:
            await self._serve(client)
        except anyio.get_cancelled_exc_class():
            self._connected = False
            self._outbox.release(broken=False)
            await self._goodbye(client)
            logger.info("MQTT: disconnected from %s", self._connection.shown)
            raise
        except BaseException:
            self._connected = False
            given_up = self._outbox.release(broken=True)
            if given_up is not None:
                topic = given_up.parts[0][0] if given_up.parts else "?"
                logger.error(
                    "MQTT: gave up a message to %s: the connection failed %d times while sending it",
                    topic,
                    given_up.attempts,
                )
            # No DISCONNECT: a connection that failed (or hangs) ends abruptly, so that the broker
            # publishes the last will, "offline", until the next connection says "online".
            _close_socket(client)
            raise

    async def _serve(self, client: aiomqtt.Client) -> None:
        """Publish while watching the connection; whichever fails first ends both."""
        failures: list[aiomqtt.MqttError] = []
        async with anyio.create_task_group() as tg:

            async def guarded(work: Callable[[aiomqtt.Client], Awaitable[None]]) -> None:
                try:
                    await work(client)
                except aiomqtt.MqttError as exc:
                    failures.append(exc)
                tg.cancel_scope.cancel()

            tg.start_soon(guarded, self._watch)
            tg.start_soon(guarded, self._deliver)
        raise failures[0] if failures else aiomqtt.MqttError("the connection ended")

    async def _goodbye(self, client: aiomqtt.Client) -> None:
        """Send what is queued, say ``offline`` and disconnect, within `GOODBYE` seconds however
        cancelled we are: the last records of a shutdown (events ending) are worth the wait."""
        with anyio.move_on_after(GOODBYE, shield=True):
            with anyio.move_on_after(GOODBYE / 2), contextlib.suppress(aiomqtt.MqttError):
                while await self._send_oldest(client):
                    pass
            self._outbox.release(broken=False)
            with contextlib.suppress(aiomqtt.MqttError):
                await client.publish(self._available, b"offline", qos=1, retain=True, timeout=GOODBYE)
            with contextlib.suppress(aiomqtt.MqttError):
                await client.__aexit__(None, None, None)
        _close_socket(client)  # when the broker did not answer in time

    async def _watch(self, client: aiomqtt.Client) -> None:
        """Read what the broker sends (discovery configs, Home Assistant's status) until the
        connection fails: aiomqtt's message iterator then raises."""
        if self._settings.mqtt_discovery:
            prefix, node = self._settings.mqtt_discovery_prefix, self._node
            topics = [f"{prefix}/status", f"{prefix}/binary_sensor/{node}/+/config"]
            await client.subscribe([(topic, 1) for topic in [*topics, f"{prefix}/camera/{node}/+/config"]])
        async for message in client.messages:
            self._received(message.topic.value, message.payload)

    def _received(self, topic: str, payload: Any) -> None:
        if topic == f"{self._settings.mqtt_discovery_prefix}/status":
            if payload in (b"online", "online"):
                with self._lock:
                    self._discovery_due = bool(self._configs)
                self._wake()
            return
        with self._lock:
            # A config of ours the broker keeps from before (another run, other labels).
            if payload and topic not in self._configs:
                self._stale.add(topic)
        self._wake()

    async def _deliver(self, client: aiomqtt.Client) -> None:
        await _publish(client, self._available, b"online", retain=True)
        while True:
            await self._publish_discovery(client)
            if not await self._send_oldest(client):
                await self._idle()

    async def _send_oldest(self, client: aiomqtt.Client) -> bool:
        """Publish the oldest record, whose parts leave the outbox once acknowledged; False when
        there is none."""
        record = self._outbox.head()
        if record is None:
            return False
        while (part := self._outbox.next_part(record)) is not None:
            topic, payload, retain = part
            try:
                await _publish(client, topic, payload, retain=retain)
            except (ValueError, TypeError) as exc:  # paho refused it: it never will take it
                logger.error("MQTT: cannot publish to %r (%s); record given up", topic, exc)
                self._outbox.done(record, failed=True)
                return True
            self._outbox.sent_part(record)
        self._outbox.done(record)
        return True

    async def _publish_discovery(self, client: aiomqtt.Client) -> None:
        with self._lock:
            configs = dict(self._configs) if self._discovery_due else {}
            stale = sorted(self._stale - self._configs.keys())
            self._stale.clear()
            self._discovery_due = False
        try:
            while stale:
                await _publish(client, stale[0], b"", retain=True)  # empty and retained: entity removed
                with self._lock:
                    self._announced.discard(stale.pop(0))
            for topic, payload in configs.items():
                await _publish(client, topic, payload, retain=True)
                with self._lock:
                    self._announced.add(topic)
        except BaseException:
            with self._lock:  # again on the next connection
                self._stale.update(stale)
                self._discovery_due = bool(self._configs)
            raise

    async def _idle(self) -> None:
        assert self._wakeup is not None  # set by run()
        await self._wakeup.wait()
        self._wakeup = anyio.Event()

    def _wake(self) -> None:
        loop = self._loop
        if loop is None:
            return  # run() looks at the outbox when it starts
        if threading.get_ident() == self._loop_thread:
            self._set_wakeup()
        else:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to wake
                loop.call_soon_threadsafe(self._set_wakeup)

    def _set_wakeup(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    # -- connection state, logged on changes only ------------------------------------------

    def _on_connected(self) -> None:
        self._connected = True
        self._connections += 1
        with self._lock:
            self._discovery_due = bool(self._configs)
        shown, failures = self._connection.shown, self._failures
        after = f" after {failures} failed attempts" if failures > 1 else ""
        logger.info("MQTT: connected to %s as %s%s", shown, self._client_id, after)
        self._failures = 0

    def _failed(self, exc: aiomqtt.MqttError, *, lost: bool) -> None:
        self._retries += 1
        shown = self._connection.shown
        if lost:
            logger.warning("MQTT: lost the connection to %s (%s); connecting again", shown, _reason(exc))
        elif self._failures == 0:
            reason = _reason(exc)
            logger.warning("MQTT: no connection to %s (%s); trying again until it answers", shown, reason)
        else:
            logger.debug("MQTT: still no connection to %s (%s)", shown, _reason(exc))
        self._failures += 1

    # -- Home Assistant discovery ------------------------------------------------------------

    def _discovery_configs(self, labels: Mapping[str, Sequence[str]]) -> dict[str, bytes]:
        """The retained config of each entity, by topic: a binary sensor and a camera per label."""
        prefix, node = self._settings.mqtt_discovery_prefix, self._node
        configs: dict[str, bytes] = {}
        for camera, names in labels.items():
            device = {
                "identifiers": [f"{node}_{camera}"],
                "name": camera,
                "manufacturer": "espdetect",
                "model": "ESP32-CAM",
                "sw_version": self._version,
            }
            for label in names:
                object_id = f"{camera}_{_safe_id(label)}"
                common = {
                    "availability_topic": self._available,
                    "payload_available": "online",
                    "payload_not_available": "offline",
                    "device": device,
                    "origin": {"name": "espdetect", "sw_version": self._version},
                    "qos": 1,
                }
                sensor = {
                    "name": label,
                    "unique_id": f"{node}_{object_id}_occupancy",
                    "state_topic": f"{self._prefix}/{camera}/{label}",
                    # The topic holds a count: on while it is above 0 (text that is no number: off).
                    "value_template": "{{ 'ON' if value | int(0) > 0 else 'OFF' }}",
                    "payload_on": "ON",
                    "payload_off": "OFF",
                    "device_class": "occupancy",
                    **common,
                }
                camera_entity = {
                    "name": f"{label} snapshot",
                    "unique_id": f"{node}_{object_id}_snapshot",
                    "topic": f"{self._prefix}/{camera}/{label}/snapshot",
                    **common,
                }
                configs[f"{prefix}/binary_sensor/{node}/{object_id}/config"] = _json(sensor)
                configs[f"{prefix}/camera/{node}/{object_id}/config"] = _json(camera_entity)
        return configs


def _reason(exc: BaseException) -> str:
    """``exc`` with its cause: aiomqtt's "Disconnected during message iteration" alone says little."""
    cause = exc.__cause__
    return f"{exc}: {cause}" if cause is not None and str(cause) else str(exc)


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


async def _publish(client: aiomqtt.Client, topic: str, payload: bytes, *, retain: bool) -> None:
    """Publish with QoS 1; returns once the broker acknowledged it (aiomqtt awaits the PUBACK)."""
    await client.publish(topic, payload, qos=1, retain=retain, timeout=PUBLISH_TIMEOUT)


def _close_socket(client: aiomqtt.Client) -> None:
    """Close the client's socket if it is still open (a connection given up on midway).

    aiomqtt closes it on an orderly disconnect and paho on a broken connection; a disconnect or
    connect cut short by a deadline leaves it open, watched by the event loop, until collected.
    """
    client._client._sock_close()  # paho's own closing: unregisters it from the loop first
