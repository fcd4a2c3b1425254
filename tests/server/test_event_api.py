"""Events in the server: unattended cameras, the store behind /events, the live feed, settings."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import simplejpeg
from prometheus_client.parser import text_string_to_metric_families

from espdetect.server.passwords import hash_token

from .conftest import ServerThread, camera_stats, wait_until

MakeServer = Callable[..., ServerThread]
#: Quick events: the stand-in detector sees its "person" in every frame.
QUICK: dict[str, Any] = {"events": True, "min_frames": 2, "end_timeout": 0.5}


def _events(client: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = client.get("/events", params=params).json()["events"]
    return found


def _first_event(client: httpx.Client, timeout: float = 15.0) -> dict[str, Any]:
    wait_until(lambda: bool(_events(client)), timeout, "an event")
    return _events(client)[0]


class SseReader:
    """Reads server-sent events (``event:``, ``id:``, ``data:`` fields) from a streaming response."""

    def __init__(self, response: httpx.Response) -> None:
        self._lines = response.iter_lines()

    def next(self) -> dict[str, str]:
        fields: dict[str, str] = {}
        for line in self._lines:
            if not line:
                if "data" in fields:
                    return fields
                fields = {}
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            fields[name] = value.lstrip(" ")
        raise AssertionError("the event stream ended")


@pytest.fixture
def events_client(make_server: MakeServer) -> Iterator[httpx.Client]:
    server = make_server(**QUICK)
    with httpx.Client(base_url=server.url, timeout=10.0) as client:
        yield client


def test_a_camera_with_events_runs_with_no_viewer_and_its_event_is_listed(
    events_client: httpx.Client,
) -> None:
    client = events_client
    event = _first_event(client)
    # Nobody watched: the camera was opened for the events alone.
    stats = camera_stats(client)
    assert sum(stats["viewers"].values()) == 0 and stats["upstream_connected"]
    assert event["camera"] == "cam" and event["label"] == "person" and event["end_time"] is None
    assert event["score"] == pytest.approx(0.9) and event["frame_size"] == [320, 240]
    assert client.get(f"/events/{event['id']}").json()["id"] == event["id"]
    picture = client.get(event["snapshot"])
    assert picture.status_code == 200 and picture.headers["content-type"] == "image/jpeg"
    assert simplejpeg.decode_jpeg_header(picture.content)[:2] == (240, 320)
    crop = client.get(event["crop"])
    height, width = simplejpeg.decode_jpeg_header(crop.content)[:2]
    assert (width, height) < (320, 240)  # the box alone
    ready = client.get("/ready")
    assert ready.status_code == 200 and ready.json()["cameras"]["cam"] == {
        "unattended": True,
        "connected": True,
        "ready": True,
    }


def test_an_event_ends_when_its_object_stops_counting(events_client: httpx.Client) -> None:
    client = events_client
    event = _first_event(client)
    # The stand-in's person scores 0.9: above 0.95 it no longer counts, as if it had left.
    assert client.patch("/cameras/cam/settings", json={"min_score": 0.95}).status_code == 200
    wait_until(lambda: client.get(f"/events/{event['id']}").json()["end_time"] is not None, 10, "the end")
    ended = client.get(f"/events/{event['id']}").json()
    assert ended["end_time"] >= ended["start_time"]
    stats = client.get("/stats").json()["events"]
    assert stats["started"] >= 1 and stats["ended"] >= 1 and stats["store_errors"] == 0
    text = client.get("/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["espdetect_events_started"].samples[0].value >= 1


def test_the_live_feed_sends_start_and_end(events_client: httpx.Client) -> None:
    client = events_client
    with client.stream("GET", "/events/live") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        reader = SseReader(response)
        start = reader.next()
        assert start["event"] == "start"
        record = json.loads(start["data"])
        assert record["type"] == "start" and record["id"] == start["id"] and record["notify"] is True
        client.patch("/cameras/cam/settings", json={"min_score": 0.95})
        while True:  # an update may come first
            message = reader.next()
            if message["event"] == "end":
                break
        assert json.loads(message["data"])["id"] == record["id"]


def test_listing_filters_and_pages(events_client: httpx.Client) -> None:
    client = events_client
    event = _first_event(client)
    assert _events(client, camera="cam", label="person")[0]["id"] == event["id"]
    assert _events(client, label="car") == []
    assert _events(client, after=event["start_time"] + 1) == []
    assert _events(client, before=event["start_time"] + 1)[0]["id"] == event["id"]
    page = client.get("/events", params={"limit": 1}).json()
    assert len(page["events"]) == 1 and page["next_cursor"] is not None
    rest = client.get("/events", params={"limit": 1, "cursor": page["next_cursor"]}).json()
    assert all(e["id"] != event["id"] for e in rest["events"])
    bad = client.get("/events", params={"cursor": "not-a-cursor"})
    assert bad.status_code == 422 and "cursor" in bad.text
    assert client.get("/events", params={"after": "nan"}).status_code == 422
    assert client.get("/events", params={"limit": 0}).status_code == 422


def test_delete_removes_the_event_and_its_pictures(events_client: httpx.Client) -> None:
    client = events_client
    event = _first_event(client)
    client.patch("/cameras/cam/settings", json={"min_score": 0.95})  # it ends; no new one starts
    wait_until(lambda: client.get(f"/events/{event['id']}").json()["end_time"] is not None, 10, "the end")
    assert client.delete(f"/events/{event['id']}").status_code == 204
    assert client.get(f"/events/{event['id']}").status_code == 404
    assert client.get(event["snapshot"]).status_code == 404
    assert client.delete(f"/events/{event['id']}").status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "/events/..%2F..%2Fetc%2Fpasswd/snapshot.jpg",
        "/events/%2e%2e/snapshot.jpg",
        "/events/.hidden/snapshot.jpg",
        "/events/a%00b/snapshot.jpg",
        "/events/" + "a" * 200 + "/snapshot.jpg",
    ],
)
def test_event_ids_cannot_name_files_outside_the_snapshots(events_client: httpx.Client, path: str) -> None:
    response = events_client.get(path)
    assert response.status_code in (404, 422)
    assert not response.headers["content-type"].startswith("image/")


def test_a_picture_linked_out_of_the_data_directory_is_not_served(
    make_server: MakeServer, tmp_path: Path
) -> None:
    server = make_server(**QUICK)
    with httpx.Client(base_url=server.url, timeout=10.0) as client:
        event = _first_event(client)
        secret = tmp_path / "secret.jpg"
        secret.write_bytes(b"\xff\xd8 not for the web \xff\xd9")
        picture = tmp_path / "data" / "snapshots" / f"{event['id']}.jpg"
        picture.unlink()
        os.symlink(secret, picture)
        response = client.get(f"/events/{event['id']}/snapshot.jpg")
        assert response.status_code == 404 and b"not for the web" not in response.content


def test_events_need_credentials_when_authentication_is_on(make_server: MakeServer) -> None:
    token = "events-test-token"
    server = make_server(**QUICK, auth_token_hash=hash_token(token))
    with httpx.Client(base_url=server.url, timeout=10.0) as client:
        for path in ("/events", "/events/live", "/events/x/snapshot.jpg"):
            assert client.get(path).status_code == 401
        assert client.delete("/events/x").status_code == 401
        headers = {"Authorization": f"Bearer {token}"}
        wait_until(lambda: bool(client.get("/events", headers=headers).json()["events"]), 15, "an event")


def test_with_events_off_the_api_says_how_to_turn_them_on_and_cameras_follow_viewers(
    make_server: MakeServer,
) -> None:
    server = make_server()
    with httpx.Client(base_url=server.url, timeout=10.0) as client:
        response = client.get("/events")
        assert response.status_code == 404 and "events = true" in response.json()["detail"]
        ready = client.get("/ready").json()
        assert ready["events"] is False and ready["cameras"]["cam"]["unattended"] is False
        # Nothing needs the camera: it is not opened (the idle benchmark's 0 connections).
        assert camera_stats(client)["upstream_opens"] == 0


def test_always_on_keeps_a_camera_open_with_no_viewer_until_switched_off(make_server: MakeServer) -> None:
    server = make_server(always_on=True)
    with httpx.Client(base_url=server.url, timeout=10.0) as client:
        wait_until(lambda: camera_stats(client)["frames_detected"] > 2, 15, "detections with no viewer")
        assert client.get("/events").status_code == 404
        assert client.patch("/cameras/cam/settings", json={"always_on": False}).status_code == 200
        wait_until(lambda: not camera_stats(client)["upstream_open"], 10, "the connection to close")
        assert client.patch("/cameras/cam/settings", json={"always_on": True}).status_code == 200
        wait_until(lambda: camera_stats(client)["upstream_open"], 10, "the connection to open again")


def test_event_settings_are_validated_and_live(events_client: httpx.Client) -> None:
    client = events_client
    refused = client.patch("/cameras/cam/settings", json={"labels": ["persn"]})
    assert refused.status_code == 422 and "persn" in refused.text and "model's classes" in refused.text
    bad: dict[str, Any]
    for bad in (
        {"labels": []},
        {"labels": ["a/b"]},
        {"labels": "person"},
        {"zones": [[[0, 0], [1, 0]]]},
        {"zones": [[[0, 0], [2, 0], [1, 1]]]},
        {"min_frames": 0},
        {"end_timeout": "5"},
        {"always_on": 1},
    ):
        assert client.patch("/cameras/cam/settings", json=bad).status_code == 422, bad
    zones = [[[0.0, 0.5], [1.0, 0.5], [1.0, 1.0], [0.0, 1.0]]]
    body = client.patch(
        "/cameras/cam/settings", json={"labels": ["person", "car"], "zones": zones, "min_frames": 4}
    ).json()
    assert body["labels"] == ["person", "car"] and body["zones"] == zones and body["min_frames"] == 4
    assert client.get("/cameras/cam/settings").json()["zones"] == zones


def test_the_data_directory_holds_the_events(make_server: MakeServer, tmp_path: Path) -> None:
    server = make_server(**QUICK)
    with httpx.Client(base_url=server.url, timeout=10.0) as client:
        event = _first_event(client)
    assert (tmp_path / "data" / "events.sqlite3").is_file()
    assert (tmp_path / "data" / "snapshots" / f"{event['id']}.jpg").is_file()


def test_a_foreign_page_cannot_delete_events(events_client: httpx.Client) -> None:
    event = _first_event(events_client)
    refused = events_client.delete(f"/events/{event['id']}", headers={"Origin": "https://evil.example"})
    assert refused.status_code == 403
    assert events_client.get(f"/events/{event['id']}").status_code == 200
