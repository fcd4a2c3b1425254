from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from espdetect.cli import build_parser, main
from espdetect.cli.serve import settings_from_args
from espdetect.emulator import EmulatorConfig, EmulatorThread
from espdetect.mjpeg import MultipartParser
from espdetect.server.streaming import MJPEG_BOUNDARY
from tests.cli.serve_process import running, stderr_of


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
    args = ["serve", "--camera", f"front={camera.stream_url}", "--port", "0", "--grace-period", "30"]
    with running(args) as (proc, url), httpx.Client(base_url=url, timeout=30.0) as client:
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
    assert proc.returncode in (0, -signal.SIGTERM)
    camera.wait_stream_clients(0, timeout=5.0)


def test_serve_without_a_camera_stays_up_and_says_what_to_configure(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A container started before its config is written must not exit into a restart loop.
    monkeypatch.delenv("ESPDETECT_CAMERAS", raising=False)
    monkeypatch.setenv("ESPDETECT_CONFIG", str(tmp_path))  # a folder without espdetect.toml
    monkeypatch.setenv("ESPDETECT_DATA_DIR", str(tmp_path / "data"))
    with running(["serve", "--port", "0", "--host", "0.0.0.0"]) as (proc, url):
        port = int(url.rsplit(":", 1)[1])
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10.0) as client:
            assert client.get("/health").json() == {"status": "ok", "cameras": 0, "viewers": 0}
            assert client.get("/ready").status_code == 200
            assert client.get("/cameras").json() == []
        assert main(["health", "--url", f"http://127.0.0.1:{port}/health"]) == 0
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10.0)
        err = stderr_of(proc)
    assert "no camera configured" in err and "ESPDETECT_CAMERAS=" in err
    assert "without authentication" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--camera", "bad id=http://h/s"], "expected camera id to be", id="camera-id"),
        pytest.param(["--camera", "http://h/s", "--conf", "3"], "less than or equal to 1", id="conf"),
        pytest.param(["--config", "/nonexistent/espdetect.toml"], "missing path", id="config"),
        pytest.param(["--camera", "http://h/s", "--mqtt-url", "http://b"], "expected mqtt_url", id="mqtt"),
        pytest.param(["--camera", "http://h/s", "--zones", "[[[0,0],[1,0]]]"], "three or more", id="zones"),
        pytest.param(
            ["--camera", "http://h/s", "--events", "--data-dir", "/proc/none/x"],
            "writable data_dir",
            id="data",
        ),
    ],
)
def test_serve_reports_bad_settings(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.splitlines()) == 1


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
    assert settings.viewers.max_viewers_per_camera == 3
    assert settings.detector.detect_slots == 2
    defaults = settings.defaults
    assert (defaults.skip, defaults.stale.value, defaults.classes) == (2, "raw", None)
    assert (defaults.conf, defaults.quality) == (0.3, 70)  # from the file
    assert [c.id for c in settings.cameras] == ["a"]


def test_every_option_but_secrets_and_cameras_has_a_flag() -> None:
    from espdetect.server.settings import leaf_fields

    parser = build_parser()
    serve = next(
        action.choices["serve"]
        for action in parser._actions
        if isinstance(action.choices, dict) and "serve" in action.choices
    )
    flags = {option for action in serve._actions for option in action.option_strings}
    missing = [
        name
        for _, name, _ in leaf_fields()
        if "--" + name.replace("_", "-") not in flags
        and name
        not in ("cameras", "auth_password_hash", "auth_token_hash", "session_secret", "webhook_secret")
    ]
    assert missing == []


def test_boolean_flags_and_none(monkeypatch: pytest.MonkeyPatch) -> None:
    args = build_parser().parse_args(
        ["serve", "--camera", "http://h/s", "--access-log", "--no-half", "--imgsz", "none", "--threads", "2"]
    )
    settings = settings_from_args(args)
    assert settings.serving.access_log is True and settings.detector.half is False
    assert settings.defaults.imgsz is None and settings.detector.threads == 2


def test_event_labels_the_model_lacks_are_refused_before_serving(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["serve", "--camera", "http://127.0.0.1:9/s", "--port", "0", "--events", "--labels", "persn,car"]
    assert main([*args, "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "camera 'cam': expected labels among the model's classes" in err and "'persn'" in err


def test_events_is_a_switch_that_may_stay_unset() -> None:
    parse = build_parser().parse_args
    assert settings_from_args(parse(["serve", "--camera", "http://h/s", "--events"])).events is True
    assert settings_from_args(parse(["serve", "--camera", "http://h/s", "--no-events"])).events is False
    unset = settings_from_args(parse(["serve", "--camera", "http://h/s", "--webhook-urls", "http://w/h"]))
    assert unset.events is None and unset.events_enabled
