"""The server's events reach MQTT (a real Mosquitto and a real subscriber) and webhooks (a real
HTTP receiver), end to end: camera, detector, engine, store, sinks."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
import pytest
import simplejpeg
from paho.mqtt.enums import CallbackAPIVersion

from espdetect.server.webhooks import verify_signature
from tests.mosquitto import Mosquitto
from tests.mosquitto import mosquitto as mosquitto  # the fixture

from .conftest import ServerThread, wait_until

MakeServer = Callable[..., ServerThread]
QUICK: dict[str, Any] = {"min_frames": 2, "end_timeout": 0.5}


class Subscriber:
    """A paho client in its own network thread, keeping every message by topic."""

    def __init__(self, url: str, topics: list[str]) -> None:
        host, port = url.removeprefix("mqtt://").rsplit(":", 1)
        self.messages: dict[str, list[bytes]] = {}
        self.retained: dict[str, bool] = {}
        self._lock = threading.Lock()
        self.topics = topics
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="test-subscriber")
        self.client.on_message = self._on_message
        self.client.on_connect = self._on_connect
        self.client.connect(host, int(port))
        self.client.loop_start()

    def _on_connect(self, client: paho.Client, *args: Any) -> None:
        for topic in self.topics:
            client.subscribe(topic, qos=1)

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.setdefault(message.topic, []).append(bytes(message.payload))
            self.retained[message.topic] = bool(message.retain)

    def get(self, topic: str) -> list[bytes]:
        with self._lock:
            return list(self.messages.get(topic, []))

    def records(self, topic: str) -> list[dict[str, Any]]:
        return [json.loads(payload) for payload in self.get(topic)]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def subscriber(mosquitto: Mosquitto) -> Iterator[Subscriber]:
    mosquitto.start()
    sub = Subscriber(mosquitto.url, ["espdetect/#", "homeassistant/#"])
    yield sub
    sub.close()


def test_events_counts_snapshots_and_discovery_reach_the_broker(
    make_server: MakeServer, mosquitto: Mosquitto, subscriber: Subscriber
) -> None:
    server = make_server(mqtt_url=mosquitto.url, **QUICK)
    with httpx.Client(base_url=server.url, timeout=10.0) as client:
        wait_until(lambda: bool(subscriber.get("espdetect/cam/events")), 20, "a start record")
        start = subscriber.records("espdetect/cam/events")[0]
        assert start["type"] == "start" and start["camera"] == "cam" and start["label"] == "person"
        assert {"id", "score", "box", "start_time", "end_time"} <= start.keys() and start["end_time"] is None
        # The record and the stored event agree; the picture came over MQTT too.
        assert client.get(f"/events/{start['id']}").json()["start_time"] == start["start_time"]
        wait_until(lambda: bool(subscriber.get("espdetect/cam/person/snapshot")), 10, "a snapshot")
        picture = subscriber.get("espdetect/cam/person/snapshot")[0]
        assert simplejpeg.decode_jpeg_header(picture)[:2] == (240, 320)
        wait_until(lambda: b"1" in subscriber.get("espdetect/cam/person"), 10, "a count of 1")
        assert subscriber.get("espdetect/available")[-1] == b"online"
        configs = [t for t in subscriber.messages if t.startswith("homeassistant/") and t.endswith("/config")]
        kinds = {t.split("/")[1] for t in configs}
        assert kinds == {"binary_sensor", "camera"}
        sensor = json.loads(subscriber.get(next(t for t in configs if "/binary_sensor/" in t))[-1])
        assert sensor["state_topic"] == "espdetect/cam/person"
        # The person stops counting: the event ends, the count falls to 0.
        client.patch("/cameras/cam/settings", json={"min_score": 0.95})
        wait_until(
            lambda: any(r["type"] == "end" for r in subscriber.records("espdetect/cam/events")), 10, "an end"
        )
        wait_until(lambda: subscriber.get("espdetect/cam/person")[-1] == b"0", 10, "a count of 0")
        sinks = client.get("/stats").json()["events"]["sinks"]
        assert sinks["mqtt"]["connected"] and sinks["mqtt"]["delivered"] >= 3
    server.stop()
    wait_until(lambda: subscriber.get("espdetect/available")[-1] == b"offline", 10, "offline")


class Receiver(http.server.ThreadingHTTPServer):
    """A webhook receiver on 127.0.0.1 and a free port, keeping each POST's headers and body."""

    def __init__(self) -> None:
        self.posts: list[tuple[dict[str, str], bytes]] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.posts.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        receiver = self
        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


def test_events_are_posted_to_webhooks_signed(make_server: MakeServer, tmp_path: Path) -> None:
    receiver = Receiver()
    try:
        server = make_server(webhook_urls=[receiver.url], webhook_secret="s3cret", **QUICK)
        wait_until(lambda: bool(receiver.posts), 20, "a webhook POST")
        headers, body = receiver.posts[0]
        record = json.loads(body)
        assert record["type"] == "start" and headers["x-espdetect-event"] == "start"
        assert verify_signature(
            "s3cret", headers["x-espdetect-timestamp"], body, headers["x-espdetect-signature"]
        )
        assert not verify_signature(
            "wrong", headers["x-espdetect-timestamp"], body, headers["x-espdetect-signature"]
        )
        with httpx.Client(base_url=server.url, timeout=10.0) as client:
            assert client.get(f"/events/{record['id']}").status_code == 200
    finally:
        receiver.shutdown()
        receiver.server_close()
