from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from espdetect.emulator import EmulatorConfig, EmulatorThread
from espdetect.server.settings import CameraConfig, load_settings
from espdetect.server.streaming import MJPEG_BOUNDARY, _behind

from .conftest import (
    BoxDetector,
    PartReader,
    ServerThread,
    box_detectors,
    camera_stats,
    read_parts,
    viewer_total,
    wait_until,
)

_TIMESTAMP = re.compile(r"^\d+\.\d{6}$")


def _open_stream(stack: contextlib.ExitStack, client: httpx.Client, path: str) -> httpx.Response:
    response = stack.enter_context(client.stream("GET", path))
    assert response.status_code == 200, response.read()
    return response


def test_many_viewers_share_one_camera_connection_and_one_detection_per_frame(
    server: ServerThread, client: httpx.Client, emulator: EmulatorThread, detectors: list[BoxDetector]
) -> None:
    with contextlib.ExitStack() as stack:
        annotated = [PartReader(_open_stream(stack, client, "/cameras/cam/detect")) for _ in range(3)]
        raw = [PartReader(_open_stream(stack, client, "/cameras/cam/stream")) for _ in range(2)]
        events = _open_stream(stack, client, "/cameras/cam/detections").iter_lines()
        for reader in annotated + raw:
            reader.read(2)
        assert next(events) == "retry: 2000"

        calls_before = detectors[0].calls
        stats = camera_stats(client)
        calls_after = detectors[0].calls
        assert stats["viewers"] == {"raw": 2, "annotated": 3, "sse": 1}
        assert emulator.stats.stream_clients == 1
        assert emulator.stats.streams_total == 1
        assert stats["upstream_opens"] == 1
        # One detector per camera, called once per processed frame whatever the viewer count
        # (one call may be in flight while the stats are read).
        assert len(detectors) == 1
        assert 1 <= stats["frames_detected"] <= stats["frames_in"]
        assert calls_before - 1 <= stats["frames_detected"] <= calls_after


def test_camera_connection_closes_after_last_viewer_and_grace(
    server: ServerThread, client: httpx.Client, emulator: EmulatorThread
) -> None:
    assert emulator.stats.stream_clients == 0  # nobody watches yet: no camera connection
    with client.stream("GET", "/cameras/cam/detect") as response:
        reader = PartReader(response)
        reader.read(1)
        assert emulator.stats.stream_clients == 1
    wait_until(lambda: viewer_total(client) == 0, what="viewer count 0")
    emulator.wait_stream_clients(0, timeout=5.0)
    stats = camera_stats(client)
    assert not stats["upstream_open"]
    assert not stats["upstream_connected"]

    # The next viewer opens a new connection.
    with client.stream("GET", "/cameras/cam/stream") as response:
        read_parts(response, 1)
    assert emulator.stats.streams_total == 2


def _raw_connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5.0)
    return sock


def _request(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()


def _reset(sock: socket.socket) -> None:
    # SO_LINGER 0: close with RST instead of FIN, the way a crashed client leaves.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _read_until(sock: socket.socket, marker: bytes, limit: int = 1_000_000) -> bytes:
    data = b""
    while marker not in data and len(data) < limit:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_viewer_counts_return_to_zero_after_aborted_connections(
    server: ServerThread, client: httpx.Client, emulator: EmulatorThread
) -> None:
    paths = ["/cameras/cam/stream", "/cameras/cam/detect", "/cameras/cam/detections"]
    for round_ in range(3):
        for path in paths:
            # Closed in the middle of the request headers.
            sock = _raw_connect(server.port)
            sock.sendall(_request(path)[:20])
            sock.close()
            # Closed right after the response headers.
            sock = _raw_connect(server.port)
            sock.sendall(_request(path))
            assert b" 200 " in _read_until(sock, b"\r\n\r\n")
            (_reset if round_ % 2 else socket.socket.close)(sock)
        # Closed in the middle of a frame.
        for path in paths[:2]:
            sock = _raw_connect(server.port)
            sock.sendall(_request(path))
            data = _read_until(sock, b"\xff\xd8")
            assert b"\xff\xd8" in data
            (_reset if round_ % 2 else socket.socket.close)(sock)
    wait_until(lambda: viewer_total(client) == 0, what="viewer count 0 after aborted connections")
    stats = camera_stats(client)
    assert stats["viewers_served"] == 3 * 5
    emulator.wait_stream_clients(0, timeout=5.0)

    # Counting still works afterwards.
    with client.stream("GET", "/cameras/cam/stream") as response:
        reader = PartReader(response)  # kept: dropping it closes the connection
        reader.read(1)
        assert camera_stats(client)["viewers"]["raw"] == 1


@pytest.mark.parametrize("path", ["/cameras/cam/stream", "/cameras/cam/detect"], ids=["raw", "annotated"])
def test_parts_carry_type_length_and_arrival_timestamp(
    server: ServerThread, client: httpx.Client, path: str
) -> None:
    with client.stream("GET", path) as response:
        assert response.headers["content-type"] == f"multipart/x-mixed-replace; boundary={MJPEG_BOUNDARY}"
        assert "no-store" in response.headers["cache-control"]
        parts = read_parts(response, 3)
        received = time.time()
    for part in parts:
        assert part.headers["content-type"] == "image/jpeg"
        assert int(part.headers["content-length"]) == len(part.body)
        assert part.is_complete_jpeg
        assert _TIMESTAMP.match(part.headers["x-timestamp"])
        assert part.timestamp is not None
        assert received - 30.0 < part.timestamp <= received
    stats = camera_stats(client)
    key = "raw_latency_ms" if path.endswith("stream") else "latency_ms"
    assert stats[key]["p50"] is not None
    assert stats[key]["p50"] <= stats[key]["p95"] <= stats[key]["p99"]


@pytest.fixture
def still_emulator(sample_images: dict[str, Path]) -> Iterator[EmulatorThread]:
    config = EmulatorConfig(fps=20.0, size=(320, 240), scene=sample_images["bus"], loop_frames=1)
    with EmulatorThread(config) as cam:
        yield cam


def test_raw_stream_forwards_the_camera_jpeg_bytes_unchanged(
    still_emulator: EmulatorThread, detectors: list[BoxDetector]
) -> None:
    camera = CameraConfig(id="cam", url=still_emulator.stream_url)
    settings = load_settings(None, dict(cameras=[camera], grace_period=0.2))
    server = ServerThread(settings, detector_factory=box_detectors(detectors)).start()
    try:
        camera_jpeg = httpx.get(still_emulator.capture_url, timeout=10.0).content
        assert camera_jpeg[:2] == b"\xff\xd8"
        with httpx.Client(base_url=server.url, timeout=10.0) as client:
            with client.stream("GET", "/cameras/cam/stream") as response:
                parts = read_parts(response, 3)
            snapshot = client.get("/cameras/cam/snapshot").content
        assert all(part.body == camera_jpeg for part in parts)
        assert snapshot == camera_jpeg
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("limits", "scope"),
    [
        pytest.param({"max_viewers_per_camera": 2}, "camera", id="per-camera"),
        pytest.param({"max_viewers_total": 2}, "server", id="total"),
    ],
)
def test_viewers_beyond_the_limits_get_503_with_retry_after(
    make_server: Callable[..., ServerThread], limits: dict[str, int], scope: str
) -> None:
    server = make_server(retry_after=7, **limits)
    with httpx.Client(base_url=server.url, timeout=10.0) as client, contextlib.ExitStack() as stack:
        _open_stream(stack, client, "/cameras/cam/stream")
        _open_stream(stack, client, "/cameras/cam/detections")
        for path in ("/cameras/cam/detect", "/stream", "/cameras/cam/detections"):
            refused = client.get(path)
            assert refused.status_code == 503
            assert refused.headers["retry-after"] == "7"
            assert "expected at most 2 viewers" in refused.json()["detail"]
            assert ("this server" in refused.json()["detail"]) == (scope == "server")
        assert viewer_total(client) == 2
        assert camera_stats(client)["viewers_rejected"] == 3
        # Snapshots are not viewers: they still work at the limit.
        assert client.get("/cameras/cam/snapshot").status_code == 200
    with httpx.Client(base_url=server.url, timeout=10.0) as client:
        wait_until(lambda: viewer_total(client) == 0, what="viewers gone")
        with client.stream("GET", "/cameras/cam/detect") as response:
            assert response.status_code == 200


@pytest.fixture
def big_frame_emulator() -> Iterator[EmulatorThread]:
    # Large, high-quality frames fill a non-reading viewer's socket buffers within a second or two.
    config = EmulatorConfig(fps=30.0, size=(1280, 960), quality=2, loop_frames=4, prerender=True)
    with EmulatorThread(config) as cam:
        yield cam


def test_viewer_that_stops_reading_is_disconnected(
    big_frame_emulator: EmulatorThread, detectors: list[BoxDetector]
) -> None:
    camera = CameraConfig(id="cam", url=big_frame_emulator.stream_url)
    settings = load_settings(None, dict(cameras=[camera], grace_period=0.2, viewer_timeout=0.5))
    server = ServerThread(settings, detector_factory=box_detectors(detectors)).start()
    stuck = socket.socket()
    try:
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.connect(("127.0.0.1", server.port))
        stuck.sendall(_request("/cameras/cam/stream"))
        with httpx.Client(base_url=server.url, timeout=10.0) as client:
            wait_until(
                lambda: camera_stats(client)["viewer_timeouts"] == 1, timeout=30.0, what="viewer timeout"
            )
            assert viewer_total(client) == 0
    finally:
        stuck.close()
        server.stop()


def test_slow_annotated_viewer_moves_to_the_lower_jpeg_quality(
    big_frame_emulator: EmulatorThread, detectors: list[BoxDetector]
) -> None:
    camera = CameraConfig(id="cam", url=big_frame_emulator.stream_url)
    settings = load_settings(None, dict(cameras=[camera], grace_period=0.2, quality=90, low_quality=30))
    server = ServerThread(settings, detector_factory=box_detectors(detectors)).start()
    slow = socket.socket()
    stop = threading.Event()

    def read_slowly() -> None:
        # About 200 kB/s: far below what 1280x960 frames at camera speed need.
        while not stop.is_set():
            try:
                if not slow.recv(8192):
                    return
            except OSError:
                return
            stop.wait(0.04)

    reader = threading.Thread(target=read_slowly, daemon=True)
    try:
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        slow.connect(("127.0.0.1", server.port))
        slow.sendall(_request("/cameras/cam/detect"))
        reader.start()
        with httpx.Client(base_url=server.url, timeout=10.0) as client:
            wait_until(
                lambda: camera_stats(client)["low_quality_frames"] > 0, timeout=30.0, what="lower tier"
            )
            stats = camera_stats(client)
            assert stats["viewers"]["annotated"] == 1
            assert stats["viewer_skipped"] > 0
    finally:
        stop.set()
        slow.close()
        reader.join(5.0)
        server.stop()


def test_detection_events_are_json_per_processed_frame(server: ServerThread, client: httpx.Client) -> None:
    with client.stream("GET", "/cameras/cam/detections") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.iter_lines()
        assert next(lines) == "retry: 2000"
        events = []
        event: dict[str, str] = {}
        for line in lines:
            if not line:
                if event:
                    events.append(event)
                    event = {}
                if len(events) == 3:
                    break
                continue
            key, _, value = line.partition(": ")
            event[key] = value
    seqs = []
    for ev in events:
        data = json.loads(ev["data"])
        assert int(ev["id"]) == data["seq"]
        assert data["source"] == "cam"
        assert data["width"] == 320 and data["height"] == 240
        assert [d["label"] for d in data["detections"]] == ["person"]
        assert len(data["detections"][0]["xyxy"]) == 4
        assert set(data["timings_ms"]) == {"preprocess_ms", "inference_ms", "postprocess_ms"}
        seqs.append(data["seq"])
    assert seqs == sorted(set(seqs))


@pytest.mark.ffmpeg
def test_ffmpeg_reads_the_annotated_stream(server: ServerThread) -> None:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        pytest.skip("needs the ffmpeg binary")
    result = subprocess.run(
        [
            ffmpeg,
            "-hide_banner",
            "-i",
            f"{server.url}/cameras/cam/detect",
            "-frames:v",
            "3",
            "-f",
            "null",
            "-",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "mjpeg" in result.stderr
    assert "320x240" in result.stderr


@pytest.mark.parametrize(
    ("send_s", "interval_s", "skipped", "behind"),
    [
        pytest.param(0.001, 0.05, 0, False, id="fast"),
        pytest.param(0.040, 0.05, 0, True, id="slow-send"),
        pytest.param(0.001, 0.05, 2, True, id="skipped"),
        pytest.param(0.100, 0.0, 0, False, id="interval-unknown"),
    ],
)
def test_behind_means_slow_send_or_missed_frames(
    send_s: float, interval_s: float, skipped: int, behind: bool
) -> None:
    assert _behind(send_s, interval_s, skipped) is behind
