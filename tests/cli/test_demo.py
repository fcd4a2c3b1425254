from __future__ import annotations

import signal

import httpx
from serve_process import start_and_wait_for_url

from espdetect.frame import jpeg_size


def test_demo_serves_an_emulated_camera_until_ctrl_c() -> None:
    proc, url = start_and_wait_for_url(
        [
            "demo",
            "--port",
            "0",
            "--model",
            "yolov8n.yaml",
            "--imgsz",
            "160",
            "--size",
            "320x240",
            "--fps",
            "10",
        ]
    )
    try:
        with httpx.Client(base_url=url, timeout=30.0) as client:
            assert [c["id"] for c in client.get("/cameras").json()] == ["cam"]
            assert "<title>espdetect</title>" in client.get("/").text
            snapshot = client.get("/cameras/cam/snapshot", params={"annotated": "true"})
            assert snapshot.status_code == 200
            assert jpeg_size(snapshot.content) == (320, 240)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=5.0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130  # interrupted, after a clean shutdown
