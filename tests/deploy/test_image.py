"""The container image, built by ``python3 dev.py image`` and run against an emulated camera on the
host: annotated video, detections, events in /data, the health check, non-root, SIGTERM, size."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from espdetect.emulator import EmulatorConfig, EmulatorThread
from espdetect.event_store import EventStore
from tests._lab import free_port
from tests.deploy.container import (
    BuiltImage,
    build_image,
    engine_or_reason,
    engine_run,
    image_size,
    require_images,
    started,
    wait_healthy,
)
from tests.server.conftest import PartReader, labels_until

pytestmark = [pytest.mark.image, pytest.mark.timeout(1800)]

#: What the image may add to its base (the deployment issue's bound).
ADDED_BYTES_MAX = 300_000_000


@pytest.fixture(scope="module")
def image() -> BuiltImage:
    engine, reason = engine_or_reason()
    if engine is None:
        if require_images():
            pytest.fail(f"ESPDETECT_REQUIRE_IMAGE=1 but {reason}")
        pytest.skip(reason)
    return build_image()


@pytest.fixture
def camera() -> Iterator[EmulatorThread]:
    with EmulatorThread(EmulatorConfig(fps=8.0, size=(640, 480), loop_frames=12)) as cam:
        yield cam


def _shared_folder(path: Path, uid: int = 10001) -> Path:
    """A host folder the image's user (uid 10001) can use."""
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, uid, uid) if os.geteuid() == 0 else path.chmod(0o777)
    return path


def test_the_image_serves_detections_stores_events_and_stops_on_sigterm(
    image: BuiltImage, camera: EmulatorThread, tmp_path: Path
) -> None:
    port = free_port()
    config, data = tmp_path / "config", _shared_folder(tmp_path / "data")
    config.mkdir()
    config.chmod(0o755)
    # Settings from the /config volume (the camera) and the environment (the port) together.
    (config / "espdetect.toml").write_text(
        f'events = true\n[[cameras]]\nid = "yard"\nurl = "{camera.stream_url}"\n'
    )
    (config / "espdetect.toml").chmod(0o644)
    volumes = ["--volume", f"{config}:/config:ro", "--volume", f"{data}:/data"]
    with started(image.ref, image.engine, {"ESPDETECT_PORT": str(port)}, options=volumes) as box:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, box.running)
        with httpx.Client(base_url=url, timeout=60.0) as client:
            labels = labels_until(client, "yard")
            with client.stream("GET", "/cameras/yard/detect") as annotated:
                part = PartReader(annotated).read(1)[0]
            assert part.is_complete_jpeg
            # An event opens after a few frames with a person; SIGTERM must store it closed.
            deadline = time.monotonic() + 60
            while not client.get("/events", params={"camera": "yard"}).json()["events"]:
                assert time.monotonic() < deadline, "no event recorded"
                time.sleep(0.25)
        health = box.exec("espdetect", "health")
        assert health.returncode == 0 and "ok: 1 cameras" in health.stdout
        assert box.exec("id", "-u").stdout.strip() == "10001"
        assert box.exec("python3", "-c", "import cv2").returncode != 0  # the server path has no OpenCV
        code, _ = box.stop_with_sigterm(grace=10.0)
        logs = box.logs()
    # 137 would be the SIGKILL after the grace period: the server must leave by itself.
    assert code in (0, 143), logs[-3000:]
    assert "without authentication" in logs and "all cameras closed" in logs
    camera.wait_stream_clients(0, timeout=10.0)
    store = EventStore(data)
    try:
        stored = store.list(camera="yard")
    finally:
        store.close()
    assert stored and stored[0].label == "person" and stored[0].end_time is not None
    assert "person" in labels


def test_the_image_without_a_camera_stays_up_and_explains(image: BuiltImage) -> None:
    port = free_port()
    with started(image.ref, image.engine, {"ESPDETECT_PORT": str(port)}) as box:
        wait_healthy(f"http://127.0.0.1:{port}", box.running)
        assert httpx.get(f"http://127.0.0.1:{port}/health").json()["cameras"] == 0
        assert box.running()
        logs = box.logs()
        code, _ = box.stop_with_sigterm(grace=10.0)
    assert "no camera configured" in logs and "ESPDETECT_CAMERAS=" in logs
    assert code in (0, 143)


def test_the_image_adds_at_most_300_mb_to_its_base(image: BuiltImage) -> None:
    added = image_size(image.engine, image.ref) - image_size(image.engine, image.base)
    assert 0 < added <= ADDED_BYTES_MAX, f"the image adds {added / 1e6:.0f} MB"


def test_the_image_keeps_its_health_check(image: BuiltImage) -> None:
    # Built in docker format: an OCI image would drop HEALTHCHECK under Podman.
    done = engine_run(image.engine, "image", "inspect", image.ref)
    box = json.loads(done.stdout)[0]
    # Podman shows it beside Config, Docker inside it.
    health = box.get("Healthcheck") or (box.get("Config") or {}).get("Healthcheck") or {}
    assert health.get("Test") == ["CMD", "espdetect", "health"], box.get("Config")
