from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from espdetect.detectors.base import Detector
from espdetect.encoders.base import Encoder
from espdetect.encoders.jpeg import JpegEncoder
from espdetect.exceptions import ConfigurationError
from espdetect.frame import Frame
from espdetect.pipeline import FrameProcessor
from espdetect.server.camera import Camera, ViewerKind
from espdetect.server.errors import UnknownCamera, ViewerLimitReached
from espdetect.server.hub import CameraHub
from espdetect.server.settings import CameraConfig, DetectorSettings, ServerSettings, load_settings
from espdetect.sources.base import FrameSource
from espdetect.sources.synthetic import SyntheticSource
from espdetect.workers import Workers

from .conftest import BoxDetector


class CountingEncoder(Encoder):
    """A JPEG encoder that counts its calls (thread-safe)."""

    def __init__(self, quality: int, calls: list[int]) -> None:
        self._quality = quality
        self.calls = calls
        self._inner = JpegEncoder(quality)
        self._lock = threading.Lock()

    @property
    def quality(self) -> int:
        return self._quality

    def encode(self, image: np.ndarray) -> bytes:
        with self._lock:
            self.calls.append(self.quality)
        return self._inner.encode(image)

    def with_quality(self, quality: int) -> CountingEncoder:
        return CountingEncoder(quality, self.calls)


def _no_source(server: ServerSettings, camera: CameraConfig) -> FrameSource:
    return SyntheticSource(count=1)


def _hub(calls: list[int] | None = None, **settings: object) -> CameraHub:
    values: dict[str, object] = {
        "cameras": [CameraConfig(id="a", url="http://h/s"), CameraConfig(id="b", url="http://h/t")],
    }
    values.update(settings)
    server = ServerSettings(**values)  # type: ignore[arg-type]
    log: list[int] = [] if calls is None else calls
    detector = BoxDetector()
    workers = Workers(name="test")
    cameras = [
        Camera(
            server,
            cam,
            detector,
            source_factory=_no_source,
            encoder_factory=lambda q: CountingEncoder(q, log),
            workers=workers,
        )
        for cam in server.camera_settings()
    ]
    return CameraHub(server, cameras, detector, workers)


def test_limits_per_camera_and_in_total() -> None:
    hub = _hub(max_viewers_per_camera=2, max_viewers_total=3)
    a, b = hub.camera("a"), hub.camera("b")
    t1 = hub.admit(a, ViewerKind.RAW, "p1")
    hub.admit(a, ViewerKind.SSE, "p2")
    with pytest.raises(ViewerLimitReached, match="expected at most 2 viewers on camera 'a'"):
        hub.admit(a, ViewerKind.ANNOTATED, "p3")
    hub.admit(b, ViewerKind.RAW, "p4")
    with pytest.raises(ViewerLimitReached, match="expected at most 3 viewers on this server"):
        hub.admit(b, ViewerKind.RAW, "p5")
    assert (a.serve.viewers_rejected, b.serve.viewers_rejected) == (1, 1)
    t1.release("done")
    t1.release("done again")  # idempotent
    assert a.viewers == {ViewerKind.RAW: 0, ViewerKind.ANNOTATED: 0, ViewerKind.SSE: 1}
    assert hub.total_viewers == 2
    hub.admit(b, ViewerKind.ANNOTATED, "p6")


def test_ticket_ids_are_per_hub() -> None:
    first, second = _hub(), _hub()
    assert first.admit(first.camera("a"), ViewerKind.RAW, "p").id == 1
    assert second.admit(second.camera("a"), ViewerKind.RAW, "p").id == 1


def test_unknown_camera() -> None:
    hub = _hub()
    with pytest.raises(UnknownCamera, match=r"expected one of the configured cameras \['a', 'b'\], got 'c'"):
        hub.camera("c")
    assert hub.first().id == "a"


def test_apply_checks_the_model_before_changing_anything() -> None:
    cam = _hub().camera("a")
    before = cam.settings
    with pytest.raises(ConfigurationError, match=r"between 0 and 2 for this model, got \[5\]") as info:
        cam.apply({"classes": [0, 5], "conf": 0.9})
    assert info.value.field == "classes"
    assert cam.settings == before
    assert cam.pipeline.params.conf == 0.25


def test_apply_updates_detector_pipeline_and_encoder() -> None:
    calls: list[int] = []
    cam = _hub(calls).camera("a")
    old_encoder = cam.pipeline.processor.encoder
    new = cam.apply({"conf": 0.7, "skip": 4, "stale": "raw", "quality": 55})
    assert (new.conf, new.skip, new.stale.value, new.quality) == (0.7, 4, "raw", 55)
    assert cam.pipeline.params.conf == 0.7
    assert cam.detector.params.conf == 0.25  # the shared model's own params are untouched
    assert (cam.pipeline.config.skip, cam.pipeline.config.stale.value) == (4, "raw")
    assert cam.pipeline.processor.encoder is not old_encoder
    assert cam.quality_tiers == (55, 40)
    cam.apply({"quality": 30})
    assert list(cam.quality_tiers) == [30]  # the low tier would not be lower


@pytest.mark.anyio
async def test_lower_quality_is_encoded_once_per_frame_for_all_viewers() -> None:
    calls: list[int] = []
    cam = _hub(calls).camera("a")
    processor = FrameProcessor(cam.detector, None, CountingEncoder(80, calls))
    image = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    rendered = processor.render(Frame.from_image(image, seq=0, source_id="a"), None, fresh=False)
    assert calls == [80]
    results = await asyncio.gather(*(cam.encoded(rendered, 40) for _ in range(8)))
    assert calls == [80, 40]
    assert len(set(results)) == 1 and results[0][:2] == b"\xff\xd8"
    assert len(results[0]) < len(rendered.jpeg)
    # The next frame gets its own encode.
    other = processor.render(Frame.from_image(image, seq=1, source_id="a"), None, fresh=False)
    await cam.encoded(other, 40)
    assert calls == [80, 40, 80, 40]


@pytest.mark.anyio
async def test_source_counters_add_up_over_connections() -> None:
    cam = _hub().camera("a")
    first = cam._open_source()
    first.stats.frames, first.stats.reconnects, first.stats.corrupt = 10, 1, 2
    second = cam._open_source()
    second.stats.frames, second.stats.stalls = 5, 3
    total = cam.source_stats()
    assert (total.frames, total.reconnects, total.corrupt, total.stalls) == (15, 1, 2, 3)
    assert total.connected is False  # the pipeline is not reading


@pytest.mark.anyio
async def test_open_gives_every_camera_the_same_model_and_workers() -> None:
    server = load_settings(
        None,
        dict(
            cameras=[CameraConfig(id=c, url=f"http://h/{c}") for c in "abc"],  # type: ignore[list-item]
            detect_slots=2,
        ),
    )
    loaded: list[BoxDetector] = []

    def load(settings: DetectorSettings) -> Detector:
        loaded.append(BoxDetector())
        return loaded[-1]

    hub = await CameraHub.open(server, load, _no_source, lambda q: JpegEncoder(q))
    async with hub:
        workers = hub.workers
        assert (workers.detect_slots, workers.render_threads) == (2, 4)  # one render thread per camera + 1
        assert all(cam.pipeline.workers is workers for cam in hub.cameras.values())
        # One model for every camera, each with params of its own.
        assert len(loaded) == 1
        assert all(cam.detector is loaded[0] for cam in hub.cameras.values())
        hub.camera("a").apply({"conf": 0.6})
        assert (hub.camera("a").pipeline.params.conf, hub.camera("b").pipeline.params.conf) == (0.6, 0.25)
    assert loaded[0].closed
    with pytest.raises(RuntimeError, match="shutdown"):
        await workers.render(len, "closed with the hub")
