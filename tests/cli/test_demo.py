from __future__ import annotations

import signal

import httpx

from espdetect.frame import jpeg_size
from tests.cli.serve_process import running
from tests.server.conftest import labels_until


def test_demo_serves_an_emulated_camera_until_ctrl_c() -> None:
    # No model named anywhere: the demo runs the model bundled with espdetect (offline, no torch).
    with running(["demo", "--port", "0", "--size", "320x240", "--fps", "10"], unset=("ESPDETECT_MODEL",)) as (
        proc,
        url,
    ):
        with httpx.Client(base_url=url, timeout=30.0) as client:
            assert [c["id"] for c in client.get("/cameras").json()] == ["cam"]
            assert "<title>espdetect</title>" in client.get("/").text
            snapshot = client.get("/cameras/cam/snapshot", params={"annotated": "true"})
            assert snapshot.status_code == 200
            assert jpeg_size(snapshot.content) == (320, 240)
            settings = client.get("/cameras/cam/settings").json()
            assert settings["model"]["model"].endswith("yolov8n_int8.onnx")
            assert settings["model"]["backend"] == "onnxruntime"
            labels = labels_until(client, "cam")
            assert "person" in labels  # the emulated camera shows people: the demo finds them
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=5.0)
    assert proc.returncode == 130  # interrupted, after a clean shutdown
