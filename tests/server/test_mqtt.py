"""`MqttSink` against a real Mosquitto broker, read by real MQTT subscribers (aiomqtt)."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import anyio
import pytest
from anyio.abc import TaskStatus

from espdetect.events import Event, EventUpdate, UpdateType
from espdetect.server.mqtt import MqttSink, _Connection
from espdetect.server.notify import CountMessage, EventMessage, EventSink
from espdetect.server.settings import MqttSettings
from tests.mosquitto import HOST, Mosquitto, skip_without_mosquitto
from tests.mosquitto import mosquitto as mosquitto  # the fixture, for the tests below

ROOT = Path(__file__).resolve().parents[2]
#: Generous: the suite also runs on small, busy machines.
TIMEOUT = 30.0
JPEG = b"\xff\xd8\xff\xe0 a picture \xff\xd9"


def _event(
    n: int, kind: UpdateType = "start", *, camera: str = "door", label: str = "person"
) -> EventMessage:
    event = Event(
        id=f"e{n}",
        camera="door",
        label="person",
        score=0.875,
        box=(10.0, 20.0, 50.0, 120.0),
        frame_size=(640, 480),
        start_time=1000.0 + n,
        best_time=1000.5 + n,
        group_id=f"e{n}",
        end_time=1004.0 + n if kind == "end" else None,
        snapshot=JPEG if kind != "end" else None,
    )
    return EventMessage.of(EventUpdate(kind, event, notify=kind == "start"))


def _sink(url: str, labels: Mapping[str, Sequence[str]] | None = None, **options: Any) -> MqttSink:
    settings = MqttSettings(mqtt_url=url, **options)
    return MqttSink(settings, labels={"door": ["person"]} if labels is None else labels, version="9.9.9")


@asynccontextmanager
async def running(sink: MqttSink) -> AsyncIterator[MqttSink]:
    """``sink.run`` in a task, cancelled (an orderly shutdown) on leaving."""
    async with anyio.create_task_group() as tg:
        await tg.start(sink.run)
        yield sink
        tg.cancel_scope.cancel()


async def until(condition: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Wait for ``condition`` (about counters, which have no event to wait on)."""
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.02)


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool
    qos: int


class Collector:
    """A real subscriber: keeps what arrives on ``topics`` and connects again when the broker
    comes back. ``persistent``: a persistent session, so the broker queues QoS 1 messages for it
    while it is away."""

    def __init__(
        self,
        broker: Mosquitto,
        topics: Sequence[str],
        *,
        name: str = "collector",
        persistent: bool = False,
        credentials: tuple[str, str] | None = None,
    ) -> None:
        self.broker = broker
        self.topics = [*topics, f"test/{name}/sync"]
        self.name = name
        self.persistent = persistent
        self.credentials = credentials
        self.messages: list[Received] = []
        self._changed = anyio.Event()
        self._client: aiomqtt.Client | None = None
        self._syncs = 0

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        started = False
        user, password = self.credentials or (None, None)
        while True:
            client = aiomqtt.Client(
                HOST,
                self.broker.port,
                identifier=self.name,
                clean_session=not self.persistent,
                username=user,
                password=password,
            )
            try:
                async with client:
                    await client.subscribe([(topic, 1) for topic in self.topics])
                    self._client = client
                    if not started:
                        started = True
                        task_status.started()
                    async for message in client.messages:
                        payload = message.payload
                        assert isinstance(payload, bytes)
                        self._add(Received(message.topic.value, payload, message.retain, message.qos))
            except aiomqtt.MqttError:
                self._client = None
                await anyio.sleep(0.05)  # the broker is restarting: try again

    def _add(self, message: Received) -> None:
        self.messages.append(message)
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    async def wait_for(self, predicate: Callable[[list[Received]], bool]) -> list[Received]:
        with anyio.fail_after(TIMEOUT):
            while not predicate(self.messages):
                await self._changed.wait()
        return self.messages

    async def sync(self) -> None:
        """Return once every retained message of the subscriptions has arrived: the broker sends
        them before it passes on anything published after subscribing, like this marker."""
        assert self._client is not None
        self._syncs += 1
        marker = str(self._syncs).encode()
        await self._client.publish(f"test/{self.name}/sync", marker, qos=1)
        await self.wait_for(lambda ms: any(m.payload == marker and "/sync" in m.topic for m in ms))

    def on(self, topic: str) -> list[Received]:
        return [m for m in self.messages if m.topic == topic]

    def payloads(self, topic: str) -> list[bytes]:
        return [m.payload for m in self.on(topic)]


@asynccontextmanager
async def collecting(broker: Mosquitto, topics: Sequence[str], **options: Any) -> AsyncIterator[Collector]:
    collector = Collector(broker, topics, **options)
    async with anyio.create_task_group() as tg:
        await tg.start(collector.run)
        yield collector
        tg.cancel_scope.cancel()


async def publish_retained(broker: Mosquitto, topic: str, payload: bytes) -> None:
    async with aiomqtt.Client(HOST, broker.port, identifier="helper") as client:
        await client.publish(topic, payload, qos=1, retain=True)


# -- topics and payloads -------------------------------------------------------------------


def test_the_sink_is_an_event_sink() -> None:
    sink: EventSink = _sink("mqtt://broker.invalid")  # mypy checks the protocol
    assert sink.name == "mqtt"
    assert sink.stats().connected is False
    with pytest.raises(ValueError, match="mqtt_url"):
        MqttSink(MqttSettings(), labels={})


@pytest.mark.anyio
async def test_records_counts_and_snapshots_go_to_their_topics(mosquitto: Mosquitto) -> None:
    async with collecting(mosquitto, ["espdetect/#"]) as seen, running(_sink(mosquitto.url)) as sink:
        sink.submit(_event(1))
        sink.submit(CountMessage("door", "person", 2))
        sink.submit(_event(1, "end"))
        await seen.wait_for(lambda ms: len([m for m in ms if m.topic == "espdetect/door/events"]) == 2)
        await seen.wait_for(lambda ms: any(m.topic == "espdetect/door/person" for m in ms))
        await until(lambda: sink.stats().delivered == 3)

        start, end = (json.loads(p) for p in seen.payloads("espdetect/door/events"))
        assert start["type"] == "start" and end["type"] == "end"
        assert {k: start[k] for k in ("id", "camera", "label", "score", "box", "start_time", "end_time")} == {
            "id": "e1",
            "camera": "door",
            "label": "person",
            "score": 0.875,
            "box": [10.0, 20.0, 50.0, 120.0],
            "start_time": 1001.0,
            "end_time": None,
        }
        assert end["end_time"] == 1005.0
        assert seen.payloads("espdetect/door/person") == [b"2"]
        # One picture (the end record has none), sent before the record it belongs to.
        assert seen.payloads("espdetect/door/person/snapshot") == [JPEG]
        topics = [m.topic for m in seen.messages]
        assert topics.index("espdetect/door/person/snapshot") < topics.index("espdetect/door/events")
        assert seen.payloads("espdetect/available") == [b"online"]
        assert {m.qos for m in seen.messages if m.topic.startswith("espdetect/")} == {1}
        stats = sink.stats()
        assert (stats.connected, stats.queued, stats.delivered, stats.dropped, stats.failed) == (
            True,
            0,
            3,
            0,
            0,
        )


@pytest.mark.anyio
async def test_a_late_subscriber_gets_counts_snapshots_and_availability_not_records(
    mosquitto: Mosquitto,
) -> None:
    async with running(_sink(mosquitto.url)) as sink:
        sink.submit(_event(1))
        sink.submit(CountMessage("door", "person", 3))
        await until(lambda: sink.stats().delivered == 2)
        async with collecting(mosquitto, ["espdetect/#"], name="late") as late:
            await late.sync()
    retained = {m.topic: m.payload for m in late.messages if m.retain}
    assert retained == {
        "espdetect/door/person": b"3",
        "espdetect/door/person/snapshot": JPEG,
        "espdetect/available": b"online",
    }
    assert late.on("espdetect/door/events") == []


@pytest.mark.anyio
async def test_a_waiting_count_is_replaced_by_a_newer_one(mosquitto: Mosquitto) -> None:
    sink = _sink(mosquitto.url)
    for count in (1, 2, 3):
        sink.submit(CountMessage("door", "person", count))
    sink.submit(CountMessage("door", "car", 1))
    assert sink.stats().queued == 2  # not connected yet: the counts wait, the latest of each
    async with collecting(mosquitto, ["espdetect/door/+"]) as seen, running(sink):
        await until(lambda: sink.stats().delivered == 2)
        await seen.sync()
    assert seen.payloads("espdetect/door/person") == [b"3"]
    assert seen.payloads("espdetect/door/car") == [b"1"]
    assert sink.stats().dropped == 0


# -- availability --------------------------------------------------------------------------


@pytest.mark.anyio
async def test_shutdown_says_offline(mosquitto: Mosquitto) -> None:
    async with collecting(mosquitto, ["espdetect/available"]) as seen:
        async with running(_sink(mosquitto.url)):
            await seen.wait_for(lambda ms: len(ms) == 1)
        await seen.wait_for(lambda ms: len(ms) == 2)
    assert seen.payloads("espdetect/available") == [b"online", b"offline"]


@pytest.mark.anyio
async def test_shutdown_sends_what_is_queued_first(mosquitto: Mosquitto) -> None:
    async with collecting(mosquitto, ["espdetect/available", "espdetect/door/events"]) as seen:
        async with running(_sink(mosquitto.url)) as sink:
            await seen.wait_for(lambda ms: len(ms) == 1)
            for n in range(1, 4):
                sink.submit(_event(n, "end"))
            # Leaving cancels the sink at once: the records are still queued, the first maybe
            # already on its way (it may then arrive twice: QoS 1 is "at least once").
        await seen.wait_for(lambda ms: any(m.payload == b"offline" for m in ms))
    ids = [json.loads(p)["id"] for p in seen.payloads("espdetect/door/events")]
    assert list(dict.fromkeys(ids)) == ["e1", "e2", "e3"] and ids == sorted(ids)
    assert seen.messages[-1].payload == b"offline"  # after the records
    assert sink.stats().delivered == 3


_SINK_PROCESS = """
import sys, anyio
from espdetect.server.mqtt import MqttSink
from espdetect.server.settings import MqttSettings
sink = MqttSink(MqttSettings(mqtt_url=sys.argv[1], mqtt_client_id="doomed"), labels={})
anyio.run(sink.run)
"""


@pytest.mark.anyio
async def test_the_broker_says_offline_when_the_process_dies(mosquitto: Mosquitto) -> None:
    """The last will: a process killed outright (SIGKILL) cannot say goodbye; its broker does."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    async with collecting(mosquitto, ["espdetect/available"]) as seen:
        process = subprocess.Popen([sys.executable, "-c", _SINK_PROCESS, mosquitto.url], cwd=ROOT, env=env)
        try:
            await seen.wait_for(lambda ms: [m.payload for m in ms] == [b"online"])
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
        await seen.wait_for(lambda ms: len(ms) == 2)
    assert seen.payloads("espdetect/available") == [b"online", b"offline"]


# -- delivery while the broker is away -----------------------------------------------------


@pytest.mark.anyio
async def test_records_wait_for_a_broker_that_went_away_and_arrive_in_order(tmp_path: Path) -> None:
    skip_without_mosquitto()
    # Persistence keeps the subscriber's session across the restart, so it misses nothing even
    # if the sink is back before it.
    broker = Mosquitto(tmp_path, persistence=True)
    broker.start()
    try:
        async with (
            collecting(broker, ["espdetect/door/events"], persistent=True) as seen,
            running(_sink(broker.url)) as sink,
        ):
            await until(lambda: sink.stats().connected)
            await anyio.to_thread.run_sync(broker.stop)
            await until(lambda: not sink.stats().connected)
            for n in range(1, 6):
                sink.submit(_event(n, "end"))
            assert sink.stats().queued == 5
            await anyio.to_thread.run_sync(broker.start)
            await seen.wait_for(lambda ms: len(ms) >= 5)
            await until(lambda: sink.stats().delivered == 5)
            stats = sink.stats()
    finally:
        broker.stop()
    assert [json.loads(m.payload)["id"] for m in seen.messages] == [f"e{n}" for n in range(1, 6)]
    assert (stats.queued, stats.dropped, stats.connected) == (0, 0, True)
    assert stats.retries >= 1  # the lost connection at least


@pytest.mark.anyio
async def test_a_message_the_broker_refuses_is_given_up_not_the_rest(tmp_path: Path) -> None:
    """A broker drops the connection on a message over its size limit, every time it is sent:
    after a few tries that record is given up (counted failed) and the others go on."""
    skip_without_mosquitto()
    broker = Mosquitto(tmp_path, options=["max_packet_size 2000"])
    broker.start()
    big = EventMessage(_event(1).update, _event(1).body, snapshot=b"\xff\xd8" + bytes(5000))
    try:
        async with (
            collecting(broker, ["espdetect/door/events"]) as seen,
            running(_sink(broker.url, mqtt_discovery=False)) as sink,
        ):
            sink.submit(big)
            sink.submit(_event(2, "end"))
            await seen.wait_for(lambda ms: len(ms) >= 1)
            await until(lambda: sink.stats().delivered == 1)
            stats = sink.stats()
    finally:
        broker.stop()
    assert [json.loads(p)["id"] for p in seen.payloads("espdetect/door/events")] == ["e2"]
    assert (stats.failed, stats.queued, stats.dropped) == (1, 0, 0)
    assert stats.retries >= 5


@pytest.mark.anyio
async def test_a_full_outbox_drops_the_oldest(mosquitto: Mosquitto) -> None:
    sink = _sink(mosquitto.url, mqtt_outbox=3)
    for n in range(1, 6):
        sink.submit(_event(n, "end"))
    stats = sink.stats()
    assert (stats.queued, stats.dropped) == (3, 2)
    async with collecting(mosquitto, ["espdetect/door/events"]) as seen, running(sink):
        await seen.wait_for(lambda ms: len(ms) >= 3)
        await until(lambda: sink.stats().delivered == 3)
    assert [json.loads(p)["id"] for p in seen.payloads("espdetect/door/events")] == ["e3", "e4", "e5"]
    assert sink.stats().dropped == 2


# -- Home Assistant discovery --------------------------------------------------------------


def _configs(messages: list[Received]) -> dict[str, dict[str, Any]]:
    """The discovery configs now: the last payload per topic, without removed (empty) ones."""
    latest = {m.topic: m.payload for m in messages if m.topic.startswith("homeassistant/")}
    return {topic: json.loads(payload) for topic, payload in latest.items() if payload}


@pytest.mark.anyio
async def test_discovery_announces_a_sensor_and_a_camera_per_label(mosquitto: Mosquitto) -> None:
    labels = {"door": ["person", "traffic light"], "yard": ["dog"]}
    async with collecting(mosquitto, ["homeassistant/#"]) as seen, running(_sink(mosquitto.url, labels)):
        await seen.wait_for(lambda ms: len(_configs(ms)) == 6)
    configs = _configs(seen.messages)
    assert {m.qos for m in seen.messages if m.topic.startswith("homeassistant/")} == {1}
    topic = re.compile(r"homeassistant/(binary_sensor|camera)/espdetect/[A-Za-z0-9_-]+/config")
    assert all(topic.fullmatch(t) for t in configs), sorted(configs)
    sensors = {c["state_topic"]: c for t, c in configs.items() if "/binary_sensor/" in t}
    cameras = {c["topic"]: c for t, c in configs.items() if "/camera/" in t}
    assert set(sensors) == {"espdetect/door/person", "espdetect/door/traffic light", "espdetect/yard/dog"}
    assert set(cameras) == {f"{state}/snapshot" for state in sensors}
    for config in [*sensors.values(), *cameras.values()]:
        assert re.fullmatch(r"[A-Za-z0-9_-]+", config["unique_id"])
        assert config["availability_topic"] == "espdetect/available"
        assert (config["payload_available"], config["payload_not_available"]) == ("online", "offline")
        device = config["device"]
        assert device["manufacturer"] == "espdetect" and device["sw_version"] == "9.9.9"
        assert device["name"] in ("door", "yard") and device["identifiers"]
    for sensor in sensors.values():
        assert sensor["device_class"] == "occupancy"
        assert "value_template" in sensor and sensor["name"] in ("person", "traffic light", "dog")
    assert len({c["unique_id"] for c in configs.values()}) == 6
    # One device per camera, holding all of that camera's entities.
    devices = {c["device"]["name"]: json.dumps(c["device"]["identifiers"]) for c in configs.values()}
    assert len(set(devices.values())) == 2
    by_device = {name: [c for c in configs.values() if c["device"]["name"] == name] for name in devices}
    assert (len(by_device["door"]), len(by_device["yard"])) == (4, 2)


def test_the_value_template_is_on_while_the_count_is_above_zero() -> None:
    jinja2 = pytest.importorskip("jinja2", reason="renders Home Assistant's template (jinja2 not installed)")
    sink = _sink("mqtt://broker.invalid")
    sensor = next(json.loads(p) for t, p in sink._configs.items() if "/binary_sensor/" in t)
    template = jinja2.Environment().from_string(sensor["value_template"])
    rendered = [template.render(value=value) for value in ("0", "1", "12", "", "junk")]
    assert rendered == ["OFF", "ON", "ON", "OFF", "OFF"]
    assert (sensor["payload_on"], sensor["payload_off"]) == ("ON", "OFF")


@pytest.mark.anyio
async def test_announce_removes_the_entities_of_labels_gone(mosquitto: Mosquitto) -> None:
    sink = _sink(mosquitto.url, {"door": ["person", "car"]})
    async with collecting(mosquitto, ["homeassistant/#"]) as seen, running(sink):
        await seen.wait_for(lambda ms: len(_configs(ms)) == 4)
        sink.announce({"door": ["person"]})
        await seen.wait_for(lambda ms: len(_configs(ms)) == 2)
        removed = [m.topic for m in seen.messages if m.payload == b""]
        assert sorted(removed) == [
            "homeassistant/binary_sensor/espdetect/door_car/config",
            "homeassistant/camera/espdetect/door_car/config",
        ]
        async with collecting(mosquitto, ["homeassistant/#"], name="late") as late:
            await late.sync()
    assert sorted(c["state_topic"] for c in _configs(late.messages).values() if "state_topic" in c) == [
        "espdetect/door/person"
    ]
    assert len(_configs(late.messages)) == 2


@pytest.mark.anyio
async def test_configs_an_earlier_run_left_are_removed(mosquitto: Mosquitto) -> None:
    stale = "homeassistant/binary_sensor/espdetect/door_cat/config"
    other = "homeassistant/binary_sensor/someone_else/door_cat/config"
    await publish_retained(mosquitto, stale, b'{"name": "cat"}')
    await publish_retained(mosquitto, other, b'{"name": "cat"}')
    async with collecting(mosquitto, ["homeassistant/#"]) as seen, running(_sink(mosquitto.url)):
        await seen.wait_for(lambda ms: any(m.topic == stale and m.payload == b"" for m in ms))
        async with collecting(mosquitto, ["homeassistant/#"], name="late") as late:
            await late.sync()
    assert stale not in _configs(late.messages)
    assert other in _configs(late.messages)  # not ours: left alone


@pytest.mark.anyio
async def test_home_assistant_coming_online_gets_the_configs_again(mosquitto: Mosquitto) -> None:
    topic = "homeassistant/binary_sensor/espdetect/door_person/config"
    async with (
        collecting(mosquitto, ["homeassistant/binary_sensor/#"]) as seen,
        running(_sink(mosquitto.url)),
    ):
        await seen.wait_for(lambda ms: len([m for m in ms if m.topic == topic]) == 1)
        async with aiomqtt.Client(HOST, mosquitto.port, identifier="home-assistant") as ha:
            await ha.publish("homeassistant/status", b"online", qos=1)
        await seen.wait_for(lambda ms: len([m for m in ms if m.topic == topic]) == 2)


@pytest.mark.anyio
async def test_no_discovery_when_it_is_off(mosquitto: Mosquitto) -> None:
    sink = _sink(mosquitto.url, mqtt_discovery=False)
    async with collecting(mosquitto, ["homeassistant/#", "espdetect/#"]) as seen, running(sink):
        await seen.wait_for(lambda ms: any(m.topic == "espdetect/available" for m in ms))
        await seen.sync()
    assert [m.topic for m in seen.messages if m.topic.startswith("homeassistant/")] == []


# -- connection ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_credentials_reach_the_broker_and_never_the_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    skip_without_mosquitto(passwd=True)
    password = "pa55-W0rd-in-the-URL"
    broker = Mosquitto(tmp_path, users={"espdetect": password, "reader": "reader-pw"})
    broker.start()
    caplog.set_level(logging.DEBUG)
    url = f"mqtt://espdetect:{password}@{HOST}:{broker.port}"
    try:
        async with collecting(broker, ["espdetect/#"], credentials=("reader", "reader-pw")) as seen:
            async with running(_sink(url)) as sink:
                sink.submit(_event(1))
                await seen.wait_for(lambda ms: any(m.topic == "espdetect/door/events" for m in ms))
            wrong = _sink(url.replace(password, "not-" + password), mqtt_client_id="wrong")
            async with running(wrong):
                await until(lambda: wrong.stats().retries >= 3)
                assert wrong.stats().connected is False
    finally:
        broker.stop()
    assert password not in caplog.text
    assert f"espdetect:***@{HOST}:{broker.port}" in caplog.text
    ours = [r for r in caplog.records if r.name == "espdetect.server.mqtt" and r.levelno >= logging.WARNING]
    # The failing sink said so once, not on every attempt.
    assert len([r for r in ours if "no connection" in r.getMessage()]) == 1


def test_urls_give_the_port_tls_and_credentials() -> None:
    plain = _Connection.parse("mqtt://broker.lan")
    assert (plain.host, plain.port, plain.username, plain.password, plain.tls) == (
        "broker.lan",
        1883,
        None,
        None,
        None,
    )
    secure = _Connection.parse("mqtts://me:p%40ss@broker.lan")
    assert (secure.port, secure.username, secure.password) == (8883, "me", "p@ss")
    assert secure.tls is not None and secure.tls.verify_mode == ssl.CERT_REQUIRED
    assert secure.shown == "mqtts://me:***@broker.lan"
    assert _Connection.parse("mqtt://h:1999").port == 1999


@pytest.mark.anyio
async def test_records_submitted_from_another_thread_go_out(mosquitto: Mosquitto) -> None:
    async with (
        collecting(mosquitto, ["espdetect/door/events"]) as seen,
        running(_sink(mosquitto.url)) as sink,
    ):
        await until(lambda: sink.stats().connected)
        await anyio.to_thread.run_sync(sink.submit, _event(1, "end"))
        await seen.wait_for(lambda ms: len(ms) == 1)


@pytest.mark.anyio
async def test_the_client_id_is_the_host_name_by_default(mosquitto: Mosquitto) -> None:
    host = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())
    async with running(_sink(mosquitto.url)) as sink:
        await until(lambda: sink.stats().connected)
    async with running(_sink(mosquitto.url, mqtt_client_id="cameras-1")) as sink:
        await until(lambda: sink.stats().connected)
    log = mosquitto.log.read_text()
    assert f" as {('espdetect-' + host)[:64]} " in log
    assert " as cameras-1 " in log


@pytest.mark.anyio
async def test_it_starts_before_the_broker_answers_and_connects_when_it_does(tmp_path: Path) -> None:
    skip_without_mosquitto()
    broker = Mosquitto(tmp_path)  # not started: nothing listens on its port yet
    try:
        async with running(_sink(broker.url)) as sink:
            sink.submit(_event(1))
            await until(lambda: sink.stats().retries >= 1)
            assert sink.stats().connected is False
            await anyio.to_thread.run_sync(broker.start)
            await until(lambda: sink.stats().delivered == 1)
    finally:
        broker.stop()
