from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from espdetect.frame import jpeg_size

from .conftest import BoxDetector, PartReader, ServerThread, camera_stats, read_parts


def test_health_and_camera_list(client: httpx.Client, emulator: Any) -> None:
    health = client.get("/health")
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "cameras": 1, "viewers": 0}
    cameras = client.get("/cameras").json()
    assert [c["id"] for c in cameras] == ["cam"]
    assert cameras[0]["detect"] == "/cameras/cam/detect"
    assert cameras[0]["stream"] == "/cameras/cam/stream"
    # Camera URLs come from the configuration and are not published.
    assert emulator.stream_url not in str(cameras)


def test_viewer_page_is_served(client: httpx.Client) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "visibilitychange" in page.text
    assert "innerHTML" not in page.text


@pytest.mark.parametrize(
    ("path", "status"),
    [
        pytest.param("/cameras/nope/stream", 404, id="unknown-stream"),
        pytest.param("/cameras/nope/detect", 404, id="unknown-detect"),
        pytest.param("/cameras/nope/snapshot", 404, id="unknown-snapshot"),
        pytest.param("/cameras/nope/settings", 404, id="unknown-settings"),
        pytest.param("/cameras/nope/detections", 404, id="unknown-sse"),
        pytest.param("/cameras/bad%20id/stream", 422, id="invalid-id"),
        pytest.param("/cameras/" + "x" * 65 + "/stream", 422, id="too-long-id"),
    ],
)
def test_unknown_or_invalid_camera(client: httpx.Client, path: str, status: int) -> None:
    response = client.get(path)
    assert response.status_code == status
    if status == 404:
        assert "expected one of the configured cameras ['cam'], got 'nope'" in response.json()["detail"]
    assert camera_stats(client)["viewers_served"] == 0


def test_settings_get_and_patch(server: ServerThread, client: httpx.Client) -> None:
    settings = client.get("/cameras/cam/settings").json()
    assert settings["conf"] == 0.25
    assert settings["skip"] == "auto"
    assert settings["stale"] == "draw_last"
    assert settings["quality"] == 80
    assert settings["quality_tiers"] == [80, 40]
    assert settings["imgsz"] == 640
    assert settings["names"] == {"0": "person", "1": "bicycle", "2": "car"}
    assert "url" not in settings

    changed = client.patch(
        "/cameras/cam/settings",
        json={"conf": 0.5, "skip": 3, "classes": [0, 2], "quality": 60, "imgsz": 320, "stale": "raw"},
    )
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert (body["conf"], body["skip"], body["classes"], body["quality"], body["imgsz"], body["stale"]) == (
        0.5,
        3,
        [0, 2],
        60,
        320,
        "raw",
    )
    assert body["quality_tiers"] == [60, 40]
    params = server.hub.camera("cam").pipeline.params
    assert (params.conf, params.imgsz, params.classes) == (0.5, 320, (0, 2))

    # classes: null means all classes again; skip back to auto.
    body = client.patch("/cameras/cam/settings", json={"classes": None, "skip": "auto"}).json()
    assert body["classes"] is None and body["skip"] == "auto"
    assert server.hub.camera("cam").pipeline.params.classes is None
    assert client.get("/cameras/cam/settings").json()["conf"] == 0.5


@pytest.mark.parametrize(
    ("patch", "field", "message"),
    [
        pytest.param({"conf": 1.5}, "conf", "less than or equal to 1", id="conf-high"),
        pytest.param({"iou": -0.1}, "iou", "greater than or equal to 0", id="iou-low"),
        pytest.param({"skip": 0}, "skip", "from 1 to 10000 or 'auto', got 0", id="skip-zero"),
        pytest.param({"skip": "fast"}, "skip", "from 1 to 10000 or 'auto', got 'fast'", id="skip-text"),
        pytest.param({"quality": 101}, "quality", "less than or equal to 100", id="quality-high"),
        pytest.param(
            {"imgsz": 300},
            "imgsz",
            "expected imgsz to be a multiple of 32 from 32 to 1280, got 300",
            id="imgsz-odd",
        ),
        pytest.param(
            {"imgsz": 1312},
            "imgsz",
            "expected imgsz to be a multiple of 32 from 32 to 1280, got 1312",
            id="imgsz-big",
        ),
        pytest.param(
            {"classes": [0, 3]}, "classes", "between 0 and 2 for this model, got [3]", id="class-id"
        ),
        pytest.param({"classes": [-1]}, "classes", "greater than or equal to 0", id="class-negative"),
        pytest.param({"stale": "sometimes"}, "stale", "'draw_last' or 'raw'", id="stale"),
        pytest.param({"conf": None}, None, "conf: expected a value, got null", id="null"),
        pytest.param({"colour": "red"}, "colour", "Extra inputs are not permitted", id="unknown-field"),
    ],
)
def test_settings_patch_is_validated(
    client: httpx.Client, patch: dict[str, Any], field: str | None, message: str
) -> None:
    before = client.get("/cameras/cam/settings").json()
    response = client.patch("/cameras/cam/settings", json=patch)
    assert response.status_code == 422
    errors = response.json()["detail"]
    assert any(message in e["msg"] for e in errors), errors
    if field is not None:
        assert any(e["loc"][-1] == field or field in e["loc"] for e in errors), errors
    assert client.get("/cameras/cam/settings").json() == before


def test_fixed_size_model_refuses_other_input_sizes(make_server: Callable[..., ServerThread]) -> None:
    server = make_server(fixed_imgsz=640)
    with httpx.Client(base_url=server.url, timeout=10.0) as client:
        assert client.get("/cameras/cam/settings").json()["fixed_imgsz"] == 640
        refused = client.patch("/cameras/cam/settings", json={"imgsz": 320})
        assert refused.status_code == 422
        assert refused.json()["detail"][0]["loc"] == ["body", "imgsz"]
        assert "fixed input size, got 320" in refused.json()["detail"][0]["msg"]
        assert client.patch("/cameras/cam/settings", json={"imgsz": 640}).status_code == 200


def test_settings_of_unknown_camera(client: httpx.Client) -> None:
    assert client.patch("/cameras/other/settings", json={"conf": 0.3}).status_code == 404


@pytest.mark.parametrize("annotated", [False, True], ids=["raw", "annotated"])
def test_snapshot_waits_for_a_frame_when_nothing_is_cached(client: httpx.Client, annotated: bool) -> None:
    response = client.get("/cameras/cam/snapshot", params={"annotated": str(annotated).lower()})
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    assert response.headers["cache-control"] == "no-store"
    assert float(response.headers["x-timestamp"]) > 0
    assert jpeg_size(response.content) == (320, 240)


def test_snapshot_uses_the_live_frame_while_streaming(client: httpx.Client) -> None:
    with client.stream("GET", "/cameras/cam/detect") as response:
        reader = PartReader(response)
        reader.read(1)
        snapshot = client.get("/cameras/cam/snapshot?annotated=true")
        assert snapshot.status_code == 200
        assert snapshot.content[:2] == b"\xff\xd8"
        assert camera_stats(client)["upstream_opens"] == 1


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_snapshot_without_a_camera_answers_503(
    make_server: Callable[..., ServerThread], detectors: list[BoxDetector]
) -> None:
    server = make_server(cameras=[f"dead=http://127.0.0.1:{_closed_port()}/stream"], snapshot_timeout=0.3)
    with httpx.Client(base_url=server.url, timeout=10.0) as client:
        response = client.get("/cameras/dead/snapshot")
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert response.json()["detail"] == "expected a frame from camera 'dead' within 0.3 s, got none"
        assert camera_stats(client, "dead")["connect_failures"] >= 1


@pytest.mark.parametrize(
    ("alias", "target"), [("/stream", "/cameras/cam/stream"), ("/stream/detect", "/cameras/cam/detect")]
)
def test_stream_aliases_serve_the_first_camera(client: httpx.Client, alias: str, target: str) -> None:
    with client.stream("GET", alias) as response:
        assert response.status_code == 200
        parts = read_parts(response, 1)
    assert parts[0].is_complete_jpeg
    kind = "raw" if target.endswith("stream") else "annotated"
    assert camera_stats(client)["viewers_served"] == 1
    with client.stream("GET", alias) as response:
        reader = PartReader(response)
        reader.read(1)
        assert camera_stats(client)["viewers"][kind] == 1


def test_stats_report_counters_rates_and_percentiles(client: httpx.Client) -> None:
    with client.stream("GET", "/cameras/cam/detect") as response:
        reader = PartReader(response)
        reader.read(5)
        stats = client.get("/stats").json()
    assert stats["viewers_total"] == 1
    cam = stats["cameras"]["cam"]
    assert cam["upstream_connected"] is True
    assert cam["viewers"] == {"raw": 0, "annotated": 1, "sse": 0}
    assert cam["frames_in"] >= cam["frames_detected"] >= 1
    assert cam["frames_out"] >= 5
    assert cam["frames_sent"] >= 5
    for key in ("dropped", "reconnects", "stalls", "corrupt", "viewer_timeouts"):
        assert cam[key] >= 0
    assert set(cam["fps"]) == {"in", "detect", "out", "sent"}
    assert cam["inference_ms"]["p50"] == 1.0  # BoxDetector reports 1 ms
    assert cam["latency_ms"]["p50"] is not None


def test_metrics_parse_as_prometheus_text(client: httpx.Client) -> None:
    with client.stream("GET", "/cameras/cam/stream") as response:
        reader = PartReader(response)
        reader.read(2)
        text = client.get("/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    viewers = {s.labels["kind"]: s.value for s in families["espdetect_viewers"].samples}
    assert viewers == {"raw": 1.0, "annotated": 0.0, "sse": 0.0}
    assert families["espdetect_upstream_connected"].samples[0].value == 1.0
    frames_in = [s for s in families["espdetect_frames_in"].samples if s.name == "espdetect_frames_in_total"]
    assert frames_in[0].labels == {"camera": "cam"} and frames_in[0].value >= 2
    latency = {s.labels["quantile"] for s in families["espdetect_latency_ms"].samples}
    assert latency == {"0.5", "0.95", "0.99"}


def test_the_settings_patch_covers_every_camera_option() -> None:
    from espdetect.server.routes import SettingsPatch
    from espdetect.server.settings import CameraOptions

    assert set(SettingsPatch.model_fields) == set(CameraOptions.model_fields)


def test_motion_settings_patch_live(server: ServerThread, client: httpx.Client) -> None:
    settings = client.get("/cameras/cam/settings").json()
    assert (settings["motion"], settings["tracking"], settings["keepalive"]) == (True, True, 30.0)
    mask = [[0, 0], [0.5, 0], [0.5, 0.1], [0, 0.1]]
    changed = client.patch(
        "/cameras/cam/settings",
        json={
            "motion": False,
            "tracking": False,
            "keepalive": 5,
            "motion_threshold": 40,
            "motion_masks": [mask],
        },
    )
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert (body["motion"], body["tracking"], body["keepalive"], body["motion_threshold"]) == (
        False,
        False,
        5.0,
        40,
    )
    assert body["motion_masks"] == [mask]
    config = server.hub.camera("cam").pipeline.config
    assert (config.motion, config.tracking, config.keepalive) == (False, False, 5.0)
    assert config.motion_config.threshold == 40
    assert config.motion_config.masks == ((((0.0, 0.0), (0.5, 0.0), (0.5, 0.1), (0.0, 0.1))),)


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        pytest.param({"motion": "yes"}, "motion", id="motion-text"),
        pytest.param({"tracking": 1}, "tracking", id="tracking-number"),
        pytest.param({"motion_threshold": 256}, "motion_threshold", id="threshold"),
        pytest.param({"motion_min_area": -0.1}, "motion_min_area", id="area"),
        pytest.param({"motion_masks": [[[0, 0], [1, 1]]]}, "motion_masks", id="masks"),
        pytest.param({"keepalive": 0}, "keepalive", id="keepalive"),
        pytest.param({"keepalive": None}, None, id="null"),
    ],
)
def test_bad_motion_patches_are_refused(
    client: httpx.Client, patch: dict[str, Any], field: str | None
) -> None:
    before = client.get("/cameras/cam/settings").json()
    response = client.patch("/cameras/cam/settings", json=patch)
    assert response.status_code == 422
    if field is not None:
        assert any(field in e["loc"] for e in response.json()["detail"]), response.json()
    assert client.get("/cameras/cam/settings").json() == before


def test_a_still_camera_is_idle_and_says_so(
    make_server: Callable[..., ServerThread], detectors: list[BoxDetector]
) -> None:
    from espdetect.emulator import EmulatorConfig, EmulatorThread
    from espdetect.emulator.scene import sample_photo

    still = EmulatorConfig(fps=20.0, size=(320, 240), scene=sample_photo("bus.jpg"))
    with EmulatorThread(still) as cam:
        server = make_server(cameras=[f"cam={cam.stream_url}"])
        client = httpx.Client(base_url=server.url, timeout=10.0)
        with client, client.stream("GET", "/cameras/cam/detect") as response:
            PartReader(response).read(40)  # two seconds of a still picture
            stats = camera_stats(client)
            text = client.get("/metrics").text
    # One model call when the stream started; the keep-alive (30 s) was never due.
    assert detectors[0].calls == 1
    assert stats["motion_checks"] >= 39 and stats["gated_frames"] >= 38
    assert stats["moving_frames"] == 0 and stats["motion_fraction"] == 0.0
    assert stats["motion_ms"]["p50"] is not None
    families = {f.name: f for f in text_string_to_metric_families(text)}
    saved = families["espdetect_model_calls_saved"].samples[0]
    assert saved.labels == {"camera": "cam"} and saved.value >= 38
    assert families["espdetect_motion_fraction"].samples[0].value == 0.0
    assert {s.name for s in families["espdetect_detecting"].samples} == {"espdetect_detecting"}


def test_a_moving_scene_runs_the_model(client: httpx.Client, detectors: list[BoxDetector]) -> None:
    with client.stream("GET", "/cameras/cam/detect") as response:
        PartReader(response).read(10)
        stats = camera_stats(client)
    # The photo scene pans to and fro (a frame can match the background: gated), so most frames move.
    assert stats["moving_frames"] >= 3 and stats["detecting"] is True
    assert detectors[0].calls == stats["moving_frames"] + stats["keepalive_calls"]
