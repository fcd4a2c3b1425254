from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from serve_process import start_and_wait_for_url

from espdetect.cli import build_parser, main
from espdetect.cli.serve import settings_from_args
from espdetect.emulator import EmulatorConfig, EmulatorThread
from espdetect.mjpeg import MultipartParser
from espdetect.server.streaming import MJPEG_BOUNDARY


def first_part(response: httpx.Response) -> bytes:
    parser = MultipartParser(MJPEG_BOUNDARY)
    for chunk in response.iter_raw():
        parts = parser.feed(chunk)
        if parts:
            return parts[0].body
    raise AssertionError("stream ended before the first part")


@pytest.fixture
def camera() -> Iterator[EmulatorThread]:
    with EmulatorThread(EmulatorConfig(fps=15.0, size=(320, 240), loop_frames=8)) as cam:
        yield cam


def test_sigterm_with_viewers_attached_stops_the_server_and_the_camera_connection(
    camera: EmulatorThread,
) -> None:
    proc, url = start_and_wait_for_url(
        ["serve", "--camera", f"front={camera.stream_url}", "--port", "0", "--model", "yolov8n.yaml",
         "--imgsz", "160", "--grace-period", "30"]
    )  # fmt: skip
    try:
        with httpx.Client(base_url=url, timeout=30.0) as client:
            assert client.get("/health").json()["cameras"] == 1
            with (
                client.stream("GET", "/cameras/front/stream") as raw,
                client.stream("GET", "/cameras/front/detect") as annotated,
            ):
                assert first_part(raw)[:2] == b"\xff\xd8"
                assert first_part(annotated)[:2] == b"\xff\xd8"
                assert camera.stats.stream_clients == 1
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=5.0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode in (0, -signal.SIGTERM)
    camera.wait_stream_clients(0, timeout=5.0)


def test_serve_needs_a_camera(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ESPDETECT_CAMERAS", raising=False)
    monkeypatch.delenv("ESPDETECT_CONFIG", raising=False)
    assert main(["serve"]) == 2
    assert "expected at least one camera" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--camera", "bad id=http://h/s"], "expected a camera id", id="camera-id"),
        pytest.param(["--camera", "http://h/s", "--conf", "3"], "less than or equal to 1", id="conf"),
        pytest.param(["--config", "/nonexistent/espdetect.toml"], "missing path", id="config"),
    ],
)
def test_serve_reports_bad_settings(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", *args]) == 2
    assert message in capsys.readouterr().out


def test_command_line_options_map_to_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ESPDETECT_CONF", raising=False)
    config = tmp_path / "espdetect.toml"
    config.write_text('conf = 0.3\nquality = 70\nclasses = [1]\n[[cameras]]\nid = "a"\nurl = "http://h/s"\n')
    args = build_parser().parse_args(
        [
            "serve",
            "--config",
            str(config),
            "--max-viewers",
            "3",
            "--skip",
            "2",
            "--classes",
            "all",
            "--stale",
            "raw",
            "--detect-slots",
            "2",
        ]
    )
    settings = settings_from_args(args, config_file=args.config)
    assert settings.max_viewers_per_camera == 3
    assert settings.detect_slots == 2
    assert (settings.skip, settings.stale.value, settings.classes) == (2, "raw", None)
    assert (settings.conf, settings.quality) == (0.3, 70)  # from the file
    assert [c.id for c in settings.cameras] == ["a"]
