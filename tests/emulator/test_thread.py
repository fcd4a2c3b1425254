"""The emulator from synchronous code, and real clients (ffmpeg, OpenCV) reading its stream."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from espdetect.emulator import EmulatorConfig, EmulatorThread, Fault, FaultKind
from espdetect.exceptions import ConfigurationError
from espdetect.mjpeg import ESP32_BOUNDARY

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg binary")


def test_thread_serves_and_stops() -> None:
    with EmulatorThread(EmulatorConfig(fps=30.0, loop_frames=4)) as cam:
        with urllib.request.urlopen(cam.status_url, timeout=10) as reply:
            assert reply.headers["Content-Type"] == "application/json"
            assert json.loads(reply.read())["framesize"] == 5
        with urllib.request.urlopen(cam.capture_url, timeout=10) as reply:
            assert reply.read()[:2] == b"\xff\xd8"
        assert cam.stats.control_requests == 2
        assert (cam.control_url, cam.stream_url) == (cam.emulator.control_url, cam.emulator.stream_url)
        sock = socket.create_connection(("127.0.0.1", cam.emulator.stream_port), timeout=10)
        sock.sendall(b"GET /stream HTTP/1.1\r\n\r\n")
        assert cam.wait_stream_clients(1, timeout=10).stream_clients == 1
        cam.set_faults([Fault(FaultKind.STALL)])
        assert cam.wait_until(lambda s: s.stalled_streams == 1, timeout=10).stalled_streams == 1
        assert cam.emulator.faults == (Fault(FaultKind.STALL),)
    # stop() closed the stream connection: the client reads to EOF instead of hanging.
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    sock.close()
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    with pytest.raises(RuntimeError, match="not running"):
        _ = cam.stream_url


def test_thread_reports_startup_errors(tmp_path: Path) -> None:
    cam = EmulatorThread(EmulatorConfig(scene=tmp_path / "nothing.mp4"))
    with pytest.raises(ConfigurationError, match=r"nothing\.mp4"):
        cam.start()
    cam.stop()  # harmless after a failed start


@pytest.mark.ffmpeg
@needs_ffmpeg
def test_ffmpeg_decodes_the_stream(tmp_path: Path) -> None:
    out = tmp_path / "frames.raw"
    with EmulatorThread(EmulatorConfig(fps=30.0, size=(320, 240), loop_frames=8)) as cam:
        proc = subprocess.run(
            [
                "ffmpeg",
                "-hide_banner",
                "-loglevel",
                "error",
                "-i",
                cam.stream_url,
                "-frames:v",
                "5",
                "-f",
                "rawvideo",
                "-pix_fmt",
                "bgr24",
                "-y",
                str(out),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 0, proc.stderr
    frames = np.frombuffer(out.read_bytes(), dtype=np.uint8).reshape(-1, 240, 320, 3)
    assert len(frames) == 5
    assert frames.std() > 10  # real picture content, not a blank


@pytest.mark.ffmpeg
@needs_ffmpeg
def test_ffmpeg_null_output_exits_cleanly() -> None:
    with EmulatorThread(EmulatorConfig(fps=30.0, loop_frames=4)) as cam:
        proc = subprocess.run(
            ["ffmpeg", "-hide_banner", "-i", cam.stream_url, "-frames:v", "5", "-f", "null", "-"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 0, proc.stderr
    assert "mjpeg" in proc.stderr and "320x240" in proc.stderr


@pytest.mark.ffmpeg
@pytest.mark.parametrize("framesize", [pytest.param(5, id="QVGA"), pytest.param(8, id="VGA")])
def test_opencv_videocapture_reads_frames(framesize: int) -> None:
    width, height = {5: (320, 240), 8: (640, 480)}[framesize]
    with EmulatorThread(EmulatorConfig(fps=30.0, framesize=framesize, loop_frames=4)) as cam:
        cap = cv2.VideoCapture(cam.stream_url, cv2.CAP_FFMPEG)
        try:
            assert cap.isOpened()
            shapes = []
            for _ in range(3):
                ok, img = cap.read()
                assert ok
                shapes.append(img.shape)
        finally:
            cap.release()
    assert shapes == [(height, width, 3)] * 3


def test_unpaced_throughput_is_measured(record_property: Callable[[str, object], None]) -> None:
    """Measures (never asserts) how fast the emulator serves VGA frames with fps unlimited."""
    frames = 300
    cfg = EmulatorConfig(fps=None, size=(640, 480), loop_frames=30, prerender=True)
    with EmulatorThread(cfg) as cam:
        sock = socket.create_connection(("127.0.0.1", cam.emulator.stream_port), timeout=30)
        sock.sendall(b"GET /stream HTTP/1.1\r\n\r\n")
        delimiter = f"--{ESP32_BOUNDARY}".encode()
        seen, tail, received = 0, b"", 0
        start = time.perf_counter()
        while seen < frames + 1:
            data = sock.recv(1 << 20)
            assert data, "stream ended early"
            received += len(data)
            seen += (tail + data).count(delimiter)
            tail = data[-len(delimiter) :]
        elapsed = time.perf_counter() - start
        sock.close()
    fps = frames / elapsed
    record_property("emulator_fps_640x480", round(fps))
    print(f"emulator: {fps:.0f} fps at 640x480, {received / elapsed / 1e6:.1f} MB/s")
    assert received > frames * 5_000
