from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from espdetect.detections import Detections, StageTimings
from espdetect.detectors.base import Detector, DetectParams, ModelInfo
from espdetect.emulator import EmulatorConfig, EmulatorThread
from espdetect.mjpeg import MultipartParser, Part
from espdetect.server.app import StreamingServer, create_app
from espdetect.server.hub import CameraHub, DetectorFactory
from espdetect.server.settings import DetectorSettings, ServerSettings
from espdetect.server.streaming import MJPEG_BOUNDARY


class BoxDetector(Detector):
    """A fast stand-in for YOLO: one "person" box (confidence 0.9) in the middle of every image."""

    def __init__(self, fixed_imgsz: int | None = None) -> None:
        self._info = ModelInfo(
            "box-test-model", {0: "person", 1: "bicycle", 2: "car"}, backend="test", fixed_imgsz=fixed_imgsz
        )
        self.params = self.check(DetectParams())
        self.calls = 0
        #: The params of the most recent call.
        self.last_params: DetectParams | None = None
        self.closed = False
        self._lock = threading.Lock()

    @property
    def info(self) -> ModelInfo:
        return self._info

    def _detect(self, image: np.ndarray, params: DetectParams) -> Detections:
        with self._lock:
            self.calls += 1
            self.last_params = params
        h, w = image.shape[:2]
        found = Detections(
            xyxy=np.array([[w * 0.25, h * 0.25, w * 0.75, h * 0.75]], np.float32),
            confidence=np.array([0.9], np.float32),
            class_id=np.array([0]),
            names=self._info.names,
            timings=StageTimings(0.1, 1.0, 0.1),
        )
        return found.filter(min_confidence=params.conf, classes=params.classes)

    def close(self) -> None:
        self.closed = True


def box_detectors(store: list[BoxDetector], fixed_imgsz: int | None = None) -> DetectorFactory:
    def make(settings: DetectorSettings) -> Detector:
        det = BoxDetector(fixed_imgsz)
        store.append(det)
        return det

    return make


class ServerThread:
    """A real uvicorn `StreamingServer` on 127.0.0.1 and a free port, in a background thread."""

    def __init__(self, settings: ServerSettings, **factories: Any) -> None:
        self.settings = settings
        self.app = create_app(settings, **factories)
        self._ready = threading.Event()
        self.server = StreamingServer(
            self.app, settings, host="127.0.0.1", port=0, on_started=lambda _: self._ready.set()
        )
        self.thread = threading.Thread(target=self._run, name="test-server", daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            self.server.run()
        except BaseException as exc:  # SystemExit on startup failure
            self.error = exc
        finally:
            self._ready.set()

    def start(self) -> ServerThread:
        self.thread.start()
        assert self._ready.wait(60), "server did not start"
        assert self.server.started, f"server failed to start: {self.error!r}"
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.bound_port}"

    @property
    def port(self) -> int:
        return self.server.bound_port

    @property
    def hub(self) -> CameraHub:
        hub: CameraHub = self.app.state.hub
        return hub


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``predicate`` until it holds (the server runs in another thread: no event to await)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def camera_stats(client: httpx.Client, camera: str = "cam") -> dict[str, Any]:
    stats: dict[str, Any] = client.get("/stats").json()["cameras"][camera]
    return stats


def labels_until(client: httpx.Client, camera: str, wanted: str = "person") -> set[str]:
    """Labels the camera's detections feed (SSE) names, read until ``wanted`` is among them."""
    labels: set[str] = set()
    with client.stream("GET", f"/cameras/{camera}/detections") as events:
        for line in events.iter_lines():
            if line.startswith("data: "):
                labels.update(d["label"] for d in json.loads(line[6:])["detections"])
                if wanted in labels:
                    break
    return labels


def viewer_total(client: httpx.Client, camera: str = "cam") -> int:
    return sum(camera_stats(client, camera)["viewers"].values())


class PartReader:
    """Reads multipart parts from a streaming response, keeping one iterator for its whole life.

    (Dropping an httpx ``iter_raw`` generator closes the connection, so it must be kept.)
    """

    def __init__(self, response: httpx.Response, boundary: str = MJPEG_BOUNDARY) -> None:
        self.response = response
        self._chunks = response.iter_raw()
        self._parser = MultipartParser(boundary)
        self._pending: list[Part] = []

    def read(self, n: int) -> list[Part]:
        while len(self._pending) < n:
            chunk = next(self._chunks, None)
            assert chunk is not None, f"stream ended after {len(self._pending)} parts"
            self._pending.extend(self._parser.feed(chunk))
        parts, self._pending = self._pending[:n], self._pending[n:]
        return parts


def read_parts(response: httpx.Response, n: int) -> list[Part]:
    """The first ``n`` parts of a response that is closed afterwards."""
    return PartReader(response).read(n)


@pytest.fixture
def emulator() -> Iterator[EmulatorThread]:
    with EmulatorThread(EmulatorConfig(fps=20.0, size=(320, 240), loop_frames=8)) as cam:
        yield cam


@pytest.fixture
def detectors() -> list[BoxDetector]:
    return []


@pytest.fixture
def make_server(
    emulator: EmulatorThread, detectors: list[BoxDetector], tmp_path: Path
) -> Iterator[Callable[..., ServerThread]]:
    """Start a server on the emulator with `BoxDetector`s; keyword arguments go to ServerSettings
    (the data directory is a temporary one)."""
    started: list[ServerThread] = []

    def make(fixed_imgsz: int | None = None, **settings: Any) -> ServerThread:
        values: dict[str, Any] = {
            "cameras": [f"cam={emulator.stream_url}"],
            "grace_period": 0.3,
            "data_dir": tmp_path / "data",
        }
        values.update(settings)
        server = ServerThread(
            ServerSettings(**values), detector_factory=box_detectors(detectors, fixed_imgsz)
        )
        started.append(server)
        return server.start()

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def server(make_server: Callable[..., ServerThread]) -> ServerThread:
    return make_server()


@pytest.fixture
def client(server: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10.0) as c:
        yield c


# -- headless Debian chromium (playwright drives it) -------------------------------------------

_CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

#: True once the viewer page's <img> shows a decoded frame.
SHOWS_FRAMES = (
    "() => { const img = document.getElementById('stream'); return !!img && img.naturalWidth > 0; }"
)


def _chromium() -> str:
    for candidate in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and Path(candidate).exists():
            return candidate
    pytest.skip("needs Debian's chromium (apt-get install chromium)")


@pytest.fixture
def page() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    executable = _chromium()
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=_CHROMIUM_ARGS)
        try:
            yield browser.new_page()
        finally:
            browser.close()
