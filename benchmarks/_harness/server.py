"""Launching what the benchmarks measure: the espdetect server and emulated ESP32-CAMs.

* `start_server`: the server as `bench_server` runs it (`create_app` + `StreamingServer` in a
  child speaking the line protocol, settings as JSON);
* `CliServer`: ``espdetect serve`` itself, as a user runs it (`soak`, `bench_reliability`);
* `start_cameras` / `Cameras`: emulated cameras in a child process of their own, so their CPU is
  charged to neither the server nor the benchmark, and a busy benchmark cannot delay frames.
  The child reports every change of a camera's stream count with a timestamp.

The child side of `start_server` and `start_cameras` is `benchmarks._harness.children`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from benchmarks._harness.procs import Child, ProcessGroup, Resources, module_argv
from espdetect.emulator import EmulatorStats

__all__ = [
    "CameraEvent",
    "CameraSpec",
    "Cameras",
    "CliServer",
    "free_port_pair",
    "start_cameras",
    "start_server",
]

logger = logging.getLogger(__name__)

CHILDREN = "benchmarks._harness.children"


@dataclass(frozen=True)
class CameraSpec:
    """One emulated camera of a `Cameras` process.

    An explicit ``port`` P serves the control page on P and the stream on P + 1.

    Example:
        >>> CameraSpec("cam", fps=15.0, size=(640, 480)).max_stream_clients
        1
    """

    name: str
    fps: float
    size: tuple[int, int]
    quality: int = 12
    max_stream_clients: int = 1
    port: int = 0
    #: The emulator's scene: "photos" or "yard" (people walking in and out on a timeline).
    scene: str = "photos"
    #: Yard scene: seconds of empty yard first, and seconds the first person stands still.
    still_seconds: float = 12.0
    stand_seconds: float = 3.0

    @staticmethod
    def from_json(data: dict[str, Any]) -> CameraSpec:
        size = data["size"]
        return CameraSpec(**{**data, "size": (int(size[0]), int(size[1]))})


@dataclass(frozen=True)
class CameraEvent:
    """A camera's stream count changed (``t``: Unix time the emulator counted it)."""

    t: float
    camera: str
    stream_clients: int
    streams_total: int


class Cameras(Child):
    """A child process of emulated cameras: their URLs, stream-count events and counters.

    Example:
        >>> cams = start_cameras(group, "cams", [CameraSpec("cam", 15.0, (640, 480))])  # doctest: +SKIP
        >>> cams.ready()["cam"]  # doctest: +SKIP
        'http://127.0.0.1:41233/stream'
    """

    def __init__(self, name: str, specs: list[CameraSpec], log_dir: Path) -> None:
        self.events: list[CameraEvent] = []
        self._changed = threading.Condition()
        spec_json = json.dumps([asdict(s) for s in specs])
        super().__init__(name, module_argv(CHILDREN, "cameras", spec_json), log_dir)
        self.urls: dict[str, str] = {}

    def on_message(self, word: str, payload: dict[str, Any]) -> None:
        if word == "EVENT":
            with self._changed:
                self.events.append(CameraEvent(**payload))
                self._changed.notify_all()
            return
        super().on_message(word, payload)

    def ready(self, timeout: float = 120.0) -> dict[str, str]:
        """Wait until every camera listens; camera name -> stream URL."""
        self.urls = {k: str(v) for k, v in self.wait("READY", timeout).items()}
        return self.urls

    def clients(self, camera: str) -> int:
        """The streams ``camera`` serves now (as last reported)."""
        with self._changed:
            latest = next((e for e in reversed(self.events) if e.camera == camera), None)
        return 0 if latest is None else latest.stream_clients

    def wait_event(self, camera: str, clients: int, after: float, timeout: float) -> CameraEvent | None:
        """The first event at or after ``after`` (Unix) where ``camera`` serves ``clients`` streams."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for event in self.events:
                    if event.camera == camera and event.t >= after and event.stream_clients == clients:
                        return event
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._changed.wait(min(left, 0.2))

    async def await_event(
        self, camera: str, clients: int, after: float, timeout: float
    ) -> CameraEvent | None:
        return await asyncio.to_thread(self.wait_event, camera, clients, after, timeout)

    def wait_clients(self, camera: str, clients: int, timeout: float) -> bool:
        """Wait until ``camera`` serves exactly ``clients`` streams now; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                latest = next((e for e in reversed(self.events) if e.camera == camera), None)
                if (latest.stream_clients if latest is not None else 0) == clients:
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 0.2))

    async def await_clients(self, camera: str, clients: int, timeout: float) -> bool:
        return await asyncio.to_thread(self.wait_clients, camera, clients, timeout)

    def max_clients(self, camera: str, since: float = 0.0) -> int:
        """The most streams ``camera`` served at once from ``since`` (Unix) on, counting the state then."""
        with self._changed:
            mine = [e for e in self.events if e.camera == camera]
        before = [e.stream_clients for e in mine if e.t < since][-1:]
        return max(before + [e.stream_clients for e in mine if e.t >= since], default=0)

    def stats(self, timeout: float = 10.0) -> dict[str, EmulatorStats]:
        """Every camera's counters now (blocking: a round trip to the child)."""
        self.send("stats")
        cameras = self.wait("STATS", timeout)["cameras"]
        return {name: EmulatorStats(**values) for name, values in cameras.items()}

    async def await_stats(self) -> dict[str, EmulatorStats]:
        return await asyncio.to_thread(self.stats)


def start_cameras(group: ProcessGroup, name: str, specs: list[CameraSpec]) -> Cameras:
    """Start a `Cameras` child in ``group`` (call its `Cameras.ready` before using the URLs)."""
    cams = Cameras(name, specs, group.log_dir)
    group.add(cams)
    return cams


def start_server(group: ProcessGroup, name: str, settings: dict[str, Any]) -> Child:
    """Start the espdetect server with ``settings`` (`ServerSettings` fields) on an ephemeral port.

    Its ``READY {"url": ...}`` comes after the app's start-up, i.e. with the model loaded.

    Example:
        >>> settings = {"cameras": ["cam=http://127.0.0.1:8081/stream"]}
        >>> child = start_server(group, "espdetect", settings)  # doctest: +SKIP
        >>> child.wait("READY", 600.0)["url"]  # doctest: +SKIP
        'http://127.0.0.1:38117'
    """
    return group.start(name, module_argv(CHILDREN, "serve", json.dumps(settings)))


def free_port_pair() -> int:
    """A port P such that P and P + 1 are free (an emulator started later listens on both).

    Taken below Linux's ephemeral range, so outgoing connections opened meanwhile cannot take it.
    """
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, 30000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port
    raise RuntimeError("expected a free pair of ports between 20000 and 30000, found none")


_URL_LINE = re.compile(r"espdetect server: (http://127\.0\.0\.1:\d+)/")
_SERVE = "import sys; from espdetect.cli import main; sys.exit(main())"


class CliServer:
    """``espdetect serve --camera cam=URL --port 0 ARGS`` in a child process; its log goes to ``log_path``.

    The constructor returns once the server printed its URL (the model is loaded then).

    Example:
        >>> log = Path("/tmp/server.log")
        >>> server = CliServer(camera.stream_url, ["--model", "m.onnx"], log)  # doctest: +SKIP
        >>> server.terminate()  # seconds until the process was gone  # doctest: +SKIP
        0.41
    """

    def __init__(
        self, camera_url: str, args: list[str], log_path: Path, env: dict[str, str] | None = None
    ) -> None:
        self.log_path = log_path
        self._log = log_path.open("w")
        full_env = {**os.environ, "YOLO_OFFLINE": "True", "YOLO_AUTOINSTALL": "False", **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _SERVE, "serve", "--camera", f"cam={camera_url}", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env=full_env,
        )
        self.url = self._read_url()
        self.port = int(self.url.rsplit(":", 1)[1])
        self.ps = psutil.Process(self.proc.pid)
        # Keep reading stdout so the child never blocks on a full pipe.
        threading.Thread(target=self._drain, daemon=True).start()

    def _read_url(self) -> str:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            match = _URL_LINE.search(line)
            if match:
                return match.group(1)
        self.proc.wait(10)
        raise RuntimeError(f"the server exited with {self.proc.returncode}; see {self.log_path}")

    def _drain(self) -> None:
        for _ in self.proc.stdout or ():
            pass

    def resources(self) -> Resources:
        return Resources.of(self.ps)

    def terminate(self, timeout: float = 30.0) -> float:
        """SIGTERM; the seconds until the process is gone."""
        start = time.perf_counter()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        took = time.perf_counter() - start
        self._log.close()
        return took

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()
