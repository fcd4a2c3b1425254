"""``espdetect serve`` on an emulated ESP32-CAM, measured from outside as a user would see it."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

from benchmarks._harness.server import CliServer
from espdetect.emulator import EmulatorConfig, EmulatorThread

__all__ = ["FPS", "VGA", "CameraCounters", "Served", "served"]

#: The camera every section emulates: an ESP32-CAM at VGA and 15 frames per second.
VGA = (640, 480)
FPS = 15.0

#: Counters of one camera in ``/stats`` that the benchmark reads (all cumulative).
_COUNTERS = ("frames_in", "frames_detected", "frames_out", "motion_checks", "moving_frames", "gated_frames",
             "keepalive_calls")  # fmt: skip


@dataclass(frozen=True)
class CameraCounters:
    """The camera's cumulative counters at one moment (``/stats``)."""

    frames_in: int
    frames_detected: int
    frames_out: int
    motion_checks: int
    moving_frames: int
    gated_frames: int
    keepalive_calls: int

    def __sub__(self, earlier: CameraCounters) -> CameraCounters:
        return CameraCounters(*(getattr(self, k) - getattr(earlier, k) for k in _COUNTERS))


class Served:
    """A running server and its emulated camera (see `served`)."""

    def __init__(self, server: CliServer, camera: EmulatorThread) -> None:
        self.server = server
        self.camera = camera
        self.client = httpx.Client(base_url=server.url, timeout=30.0)
        self._process = psutil.Process(server.proc.pid)

    def counters(self) -> CameraCounters:
        stats: dict[str, Any] = self.client.get("/stats").json()["cameras"]["cam"]
        return CameraCounters(*(int(stats[k]) for k in _COUNTERS))

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of the server process so far (its threads included)."""
        times = self._process.cpu_times()
        return float(times.user + times.system)

    @contextlib.contextmanager
    def viewer(self, path: str = "/cameras/cam/detect") -> Iterator[ViewerThread]:
        """A viewer reading ``path`` (annotated MJPEG by default) in a thread while inside."""
        viewer = ViewerThread(self.server.url + path)
        viewer.start()
        try:
            viewer.wait_bytes(1)
            yield viewer
        finally:
            viewer.stop()

    def wait_no_upstream(self, timeout: float = 30.0) -> None:
        """Until the server has let go of the camera (no stream left on the emulator)."""
        self.camera.wait_stream_clients(0, timeout)


class ViewerThread(threading.Thread):
    """Reads a streaming response to the end, counting bytes (an annotated-stream viewer)."""

    def __init__(self, url: str) -> None:
        super().__init__(name="viewer", daemon=True)
        self.url = url
        self.bytes = 0
        self.error: str | None = None
        self._halt = threading.Event()
        self._progress = threading.Condition()

    def run(self) -> None:
        try:
            with httpx.stream("GET", self.url, timeout=30.0) as response:
                for chunk in response.iter_raw():
                    with self._progress:
                        self.bytes += len(chunk)
                        self._progress.notify_all()
                    if self._halt.is_set():
                        return
        except httpx.HTTPError as exc:
            self.error = repr(exc)
        finally:
            with self._progress:
                self._progress.notify_all()

    def wait_bytes(self, n: int, timeout: float = 60.0) -> None:
        with self._progress:
            if not self._progress.wait_for(lambda: self.bytes >= n or not self.is_alive(), timeout):
                raise RuntimeError(f"the viewer of {self.url} got no data in {timeout} s")
        if self.error is not None:
            raise RuntimeError(f"the viewer of {self.url} failed: {self.error}")

    def stop(self) -> None:
        self._halt.set()
        self.join(30.0)


@contextlib.contextmanager
def served(camera: EmulatorConfig, args: list[str], log_dir: Path, name: str) -> Iterator[Served]:
    """An emulated camera (in this process) and ``espdetect serve ARGS`` on it (a child process).

    The server runs with whatever model ``$ESPDETECT_MODEL`` names, else the bundled one.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    with EmulatorThread(camera) as cam:
        server = CliServer(cam.stream_url, ["--grace-period", "0.3", *args], log_dir / f"{name}.log")
        try:
            served = Served(server, cam)
            with served.client:
                yield served
        finally:
            server.terminate()


def describe(camera: EmulatorConfig) -> str:
    """A short description of an emulated camera for the report."""
    scene = camera.scene if isinstance(camera.scene, str) else Path(camera.scene).name
    extras = {"noise": camera.noise, "brightness_ramp": camera.brightness_ramp}
    return f"{scene} {camera.size[0]}x{camera.size[1]} @ {camera.fps:g} fps " + json.dumps(
        {k: v for k, v in extras.items() if v}
    )
