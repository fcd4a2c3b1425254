"""The firmware knowledge and the control client of the library, against real sockets."""

from __future__ import annotations

import http.server
import re
import socket
import threading
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from espdetect.camera_control import (
    CameraControl,
    ControlRefused,
    ControlTimeout,
    ControlUnreachable,
    NotFirmwareError,
    control_url_for,
)
from espdetect.emulator import EmulatorConfig, EmulatorThread
from espdetect.exceptions import EspdetectError
from espdetect.firmware import (
    CONTROL_RANGES,
    CONTROL_VARIABLES,
    check_control_value,
    generation_from_status,
    reported_variables,
)
from espdetect.framesizes import FirmwareGeneration

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# -- firmware ----------------------------------------------------------------------------------


def test_one_range_table_for_every_variable_with_the_stricter_quality() -> None:
    assert set(CONTROL_RANGES) == set(CONTROL_VARIABLES)
    assert CONTROL_RANGES["quality"] == (4, 63)
    assert check_control_value("vflip", False) == 0
    with pytest.raises(ValueError, match="expected quality between 4 and 63, got 3"):
        check_control_value("quality", 3)
    with pytest.raises(ValueError, match="expected brightness as an integer between -2 and 2, got True"):
        check_control_value("brightness", True)
    with pytest.raises(ValueError, match="got 'xclk'"):
        check_control_value("xclk", 20)


@pytest.mark.parametrize(
    ("firmware", "size", "frame", "expected"),
    [
        pytest.param("legacy", (320, 240), (320, 240), "legacy", id="legacy-keys"),
        pytest.param("legacy", (160, 120), None, "legacy", id="legacy-without-a-frame"),
        pytest.param("2.x", (320, 240), (320, 240), "2.x", id="2.x-by-frame-size"),
        pytest.param("3.x", (320, 240), (320, 240), "3.x", id="3.x-by-frame-size"),
        pytest.param("3.x", (160, 120), (160, 120), None, id="index-1-shared"),
        pytest.param("2.x", (96, 96), (96, 96), None, id="index-0-shared"),
        pytest.param("2.x", (640, 480), None, None, id="no-frame-yet"),
        pytest.param("2.x", (640, 480), (320, 240), None, id="frame-of-another-size"),
    ],
)
def test_generation_from_the_emulators_status(
    firmware: FirmwareGeneration, size: tuple[int, int], frame: tuple[int, int] | None, expected: str | None
) -> None:
    with EmulatorThread(EmulatorConfig(fps=5.0, size=size, loop_frames=2, firmware=firmware)) as cam:
        status = cam.emulator.sensor_status
    assert generation_from_status(status, frame) == expected
    if expected is not None:
        assert set(reported_variables(expected)) <= set(status)


def test_status_without_a_framesize_decides_nothing() -> None:
    assert generation_from_status({"quality": 10}, (320, 240)) is None


# -- the client --------------------------------------------------------------------------------


class Reply(http.server.BaseHTTPRequestHandler):
    """Answers every GET with the server's ``reply`` (status, content type, body)."""

    def do_GET(self) -> None:
        status, kind, body = self.server.reply  # type: ignore[attr-defined]
        self.server.paths.append(self.path)  # type: ignore[attr-defined]
        self.server.auth.append(self.headers.get("Authorization"))  # type: ignore[attr-defined]
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def replying() -> Iterator[http.server.ThreadingHTTPServer]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Reply)
    httpd.paths = []  # type: ignore[attr-defined]
    httpd.auth = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


async def test_status_and_set_on_the_emulator() -> None:
    with EmulatorThread(EmulatorConfig(fps=5.0, size=(320, 240), loop_frames=2)) as cam:
        async with CameraControl(cam.control_url) as control:
            assert (await control.status())["framesize"] == 5
            await control.set("quality", 20)
            await control.set("hmirror", True)
            status = await control.status()
            with pytest.raises(ControlRefused, match="accept framesize=15, got HTTP 500") as refused:
                await control.set("framesize", 15)  # a 3.x number: this 2.x camera says 500
            with pytest.raises(ValueError, match="between 4 and 63"):
                await control.set("quality", 2)
    assert (status["quality"], status["hmirror"]) == (20, 1)
    assert isinstance(refused.value, EspdetectError) and refused.value.status_code == 500


async def test_an_answer_that_is_not_the_firmware_is_not_firmware(
    replying: http.server.ThreadingHTTPServer,
) -> None:
    port = replying.server_address[1]
    for reply in [(404, "text/html", b"<h1>404</h1>"), (200, "application/json", b'{"ok": true}')]:
        replying.reply = reply  # type: ignore[attr-defined]
        async with CameraControl(f"http://user:secret@127.0.0.1:{port}") as control:
            with pytest.raises(NotFirmwareError) as info:
                await control.status()
        assert "secret" not in str(info.value) and not isinstance(info.value, ControlUnreachable)
    assert replying.auth[0] == "Basic dXNlcjpzZWNyZXQ="  # type: ignore[attr-defined]


async def test_refused_and_silent_ports_are_unreachable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    async with CameraControl(f"http://127.0.0.1:{closed}") as control:
        with pytest.raises(ControlUnreachable) as refused:
            await control.status()
    assert not isinstance(refused.value, ControlTimeout)
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never answers (a busy ESP32)
        async with CameraControl(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout=0.3) as control:
            with anyio.fail_after(5):
                with pytest.raises(ControlTimeout, match=re.escape("within 0.3 s")):
                    await control.status()


def test_control_url_and_bad_arguments() -> None:
    assert control_url_for("http://192.168.4.1:81/stream") == "http://192.168.4.1:80"
    with pytest.raises(ValueError, match="http"):
        CameraControl("ftp://cam")
    with pytest.raises(ValueError, match="timeout"):
        CameraControl("http://cam", timeout=0)
