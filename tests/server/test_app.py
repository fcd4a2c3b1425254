from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import httpx
import pytest

from espdetect.detectors.base import Detector
from espdetect.emulator import EmulatorConfig, EmulatorThread
from espdetect.exceptions import ModelLoadError
from espdetect.server.app import create_app
from espdetect.server.settings import CameraConfig, DetectorSettings, ServerSettings, load_settings

from .conftest import BoxDetector, PartReader, ServerThread, box_detectors


def _drain(reader: PartReader) -> None:
    """Read until the server ends the stream (an exception means it was cut, not ended)."""
    while True:
        try:
            reader.read(1)
        except AssertionError:  # "stream ended": the iterator finished cleanly
            return


def test_shutdown_ends_streams_and_closes_the_camera(
    emulator: EmulatorThread, detectors: list[BoxDetector], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="espdetect.server")
    settings = load_settings(
        None, dict(cameras=[CameraConfig(id="cam", url=emulator.stream_url)], grace_period=30.0)
    )
    server = ServerThread(settings, detector_factory=box_detectors(detectors)).start()
    with (
        httpx.Client(base_url=server.url, timeout=10.0) as client,
        client.stream("GET", "/cameras/cam/stream") as raw,
        client.stream("GET", "/cameras/cam/detect") as annotated,
        client.stream("GET", "/cameras/cam/detections") as events,
    ):
        readers = [PartReader(raw), PartReader(annotated)]
        for reader in readers:
            reader.read(1)
        lines = events.iter_lines()
        next(lines)
        assert emulator.stats.stream_clients == 1

        server.stop(timeout=10.0)
        assert not server.thread.is_alive()
        for reader in readers:
            _drain(reader)
        for _ in lines:  # the event stream ends too (a cut stream would raise here)
            pass
    # A 30 s grace period does not hold the camera connection past shutdown.
    emulator.wait_stream_clients(0, timeout=5.0)
    reasons = [r.getMessage() for r in caplog.records if "disconnected:" in r.getMessage()]
    assert len(reasons) == 3
    assert all("disconnected: server shutdown" in r for r in reasons), reasons


def test_failing_model_load_stops_startup(emulator: EmulatorThread) -> None:
    def broken(settings: DetectorSettings) -> Detector:
        raise ModelLoadError("missing.onnx", "expected an existing file")

    settings = load_settings(None, dict(cameras=[CameraConfig(id="cam", url=emulator.stream_url)]))
    server = ServerThread(settings, detector_factory=broken)
    server.thread.start()
    server.thread.join(30.0)
    assert not server.server.started
    assert isinstance(server.error, SystemExit)


def test_create_app_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESPDETECT_CAMERAS", "yard=http://10.1.2.3:81/stream")
    monkeypatch.setenv("ESPDETECT_MAX_VIEWERS_TOTAL", "3")
    app = create_app(detector_factory=lambda s: BoxDetector())
    settings: ServerSettings = app.state.settings
    assert [c.id for c in settings.cameras] == ["yard"]
    assert settings.viewers.max_viewers_total == 3


@pytest.fixture
def photo_emulator() -> Iterator[EmulatorThread]:
    with EmulatorThread(EmulatorConfig(fps=10.0, size=(640, 480), loop_frames=10)) as cam:
        yield cam


@pytest.mark.model
def test_real_model_finds_people_end_to_end(photo_emulator: EmulatorThread, model_path: str) -> None:
    settings = load_settings(
        None,
        dict(
            cameras=[CameraConfig(id="cam", url=photo_emulator.stream_url)],
            model=model_path,
            grace_period=0.2,
        ),
    )
    server = ServerThread(settings).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30.0) as client:
            labels: set[str] = set()
            with client.stream("GET", "/cameras/cam/detections") as events:
                for line in events.iter_lines():
                    if line.startswith("data: "):
                        event = json.loads(line[6:])
                        labels.update(d["label"] for d in event["detections"])
                        if "person" in labels:
                            break
            assert "person" in labels
            with client.stream("GET", "/cameras/cam/detect") as annotated:
                reader = PartReader(annotated)
                part = reader.read(1)[0]
            assert part.is_complete_jpeg
            stats = client.get("/stats").json()["cameras"]["cam"]
            assert stats["inference_ms"]["p50"] > 0
            settings_body = client.get("/cameras/cam/settings").json()
            assert settings_body["names"]["0"] == "person"
            assert settings_body["fixed_imgsz"] == 640
            refused = client.patch("/cameras/cam/settings", json={"imgsz": 320})
            assert refused.status_code == 422
    finally:
        server.stop()
