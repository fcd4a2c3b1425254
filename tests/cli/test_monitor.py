from __future__ import annotations

import io
import json
import re
import signal
import socket
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from espdetect.cli import main
from espdetect.cli.monitor import (
    MonitorOptions,
    auth_for,
    monitor,
    normalize_url,
    parse_stats,
    render_json,
    render_table,
)
from espdetect.emulator import EmulatorConfig, EmulatorThread
from espdetect.server.settings import CameraConfig, load_settings
from tests.cli.cli_process import espdetect_command
from tests.cli.serve_process import restore_sigint
from tests.server.conftest import PartReader, ServerThread, box_detectors, wait_until


def canned_stats(process: dict[str, Any] | None = None) -> dict[str, Any]:
    """A ``/stats`` body as `espdetect.server.metrics.hub_stats` builds it (two cameras)."""
    front = {
        "upstream_connected": True,
        "upstream_open": True,
        "viewers": {"raw": 1, "annotated": 2, "sse": 3},
        "frames_in": 900,
        "frames_detected": 450,
        "frames_out": 890,
        "frames_sent": 2000,
        "bytes_sent": 12_345_678,
        "dropped": 10,
        "viewer_skipped": 4,
        "low_quality_frames": 0,
        "reconnects": 2,
        "stalls": 1,
        "corrupt": 0,
        "connect_failures": 0,
        "upstream_opens": 3,
        "decode_errors": 0,
        "detector_errors": 0,
        "viewers_served": 6,
        "viewers_rejected": 0,
        "viewer_timeouts": 0,
        "fps": {"in": 15.04, "detect": 7.5, "out": 14.96, "sent": 89.0},
        "inference_ms": {"p50": 31.25, "p95": 40.0, "p99": 45.0},
        "detect_ms": {"p50": 35.0, "p95": 44.0, "p99": 50.0},
        "latency_ms": {"p50": 48.04, "p95": 121.5, "p99": 150.0},
        "raw_latency_ms": {"p50": 2.0, "p95": 3.0, "p99": 4.0},
    }
    idle = {
        **front,
        "upstream_connected": False,
        "upstream_open": False,
        "viewers": {"raw": 0, "annotated": 0, "sse": 0},
        "fps": {"in": 0.0, "detect": 0.0, "out": 0.0, "sent": 0.0},
        "inference_ms": {"p50": None, "p95": None, "p99": None},
        "latency_ms": {"p50": None, "p95": None, "p99": None},
    }
    body: dict[str, Any] = {
        "viewers_total": 6,
        "max_viewers_total": 50,
        "cameras": {"front": front, "back_garden_camera": idle},
    }
    if process is not None:
        body["process"] = process
    return body


def table_row(table: str, camera: str) -> list[str]:
    rows = [line.split() for line in table.splitlines() if line.split()[:1] == [camera]]
    assert len(rows) == 1, table
    return rows[0]


def test_table_shows_each_cameras_columns() -> None:
    table = render_table(parse_stats(canned_stats()), "http://127.0.0.1:8000", 0.0)

    assert "http://127.0.0.1:8000" in table
    header = table_row(table, "camera")
    assert header == ["camera", "up", "in", "det", "out", "raw", "ann", "sse", "p50", "p95", "p50",
                      "dropped", "reconn", "stalls"]  # fmt: skip
    assert table_row(table, "front") == ["front", "yes", "15.0", "7.5", "15.0", "1", "2", "3", "48.0",
                                         "121.5", "31.2", "10", "2", "1"]  # fmt: skip
    assert table_row(table, "back_garden_camera")[1:8] == ["no", "0.0", "0.0", "0.0", "0", "0", "0"]
    assert table_row(table, "back_garden_camera")[8:11] == ["-", "-", "-"]


def test_columns_line_up_under_their_headers() -> None:
    lines = render_table(parse_stats(canned_stats()), "http://h", 0.0).splitlines()
    header = next(line for line in lines if line.startswith("camera"))
    for row in (line for line in lines if line.startswith(("front", "back_garden_camera"))):
        assert len(row) == len(header)
        # Right-aligned cells: every header's last character sits above its value's last character.
        ends = [match.end() - 1 for match in re.finditer(r"\S+", header)][1:]
        assert len(ends) == 13
        assert all(row[i] != " " and row[i + 1 : i + 2] in ("", " ") for i in ends), (header, row)


def test_server_line_shows_process_resources_or_dashes() -> None:
    without = render_table(parse_stats(canned_stats()), "http://h", 0.0)
    assert "cpu -  rss -  threads -  fds -  viewers 6/50" in without

    process = {"pid": 4242, "cpu_percent": 37.25, "rss_mb": 512.44, "threads": 17, "fds": 41}
    with_process = render_table(parse_stats(canned_stats(process)), "http://h", 0.0)
    assert "cpu 37.2 %  rss 512.4 MB  threads 17  fds 41  viewers 6/50" in with_process


def test_values_missing_from_an_older_or_newer_server_show_as_dashes() -> None:
    snapshot = parse_stats({"cameras": {"cam": {"fps": {"in": 3.0}, "viewers": "n/a"}}})

    row = table_row(render_table(snapshot, "http://h", 0.0), "cam")
    assert row == ["cam", "-", "3.0", *["-"] * 11]


@pytest.mark.parametrize("body", [[], {"cameras": []}, {"detail": "Not Found"}, "text"])
def test_a_body_that_is_not_stats_is_refused(body: Any) -> None:
    with pytest.raises(ValueError, match="expected a /stats object with a 'cameras' object"):
        parse_stats(body)


def test_json_line_has_every_row_field() -> None:
    line = render_json(parse_stats(canned_stats({"cpu_percent": 5.0, "rss_mb": 100.0})), "http://h", 12.5)

    assert "\n" not in line
    data = json.loads(line)
    assert data["time"] == 12.5
    assert data["server"] == {"viewers_total": 6, "max_viewers_total": 50, "cpu_percent": 5.0,
                              "rss_mb": 100.0, "threads": None, "fds": None}  # fmt: skip
    front = data["cameras"][0]
    assert front["id"] == "front"
    assert front["fps_detect"] == 7.5
    assert front["viewers_sse"] == 3
    assert front["latency_p95_ms"] == 121.5
    assert data["cameras"][1]["inference_p50_ms"] is None


@pytest.mark.parametrize(
    ("text", "url"),
    [
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("192.168.1.10:8000/", "http://192.168.1.10:8000"),
        ("https://cams.example/espdetect/stats", "https://cams.example/espdetect"),
    ],
)
def test_normalize_url(text: str, url: str) -> None:
    assert normalize_url(text) == url


def test_auth_for_token_or_basic() -> None:
    assert auth_for("s3cret", None, None) == ({"Authorization": "Bearer s3cret"}, None)
    headers, basic = auth_for(None, "admin", "pw")
    assert headers == {}
    assert basic is not None
    request = next(basic.auth_flow(httpx.Request("GET", "http://h/stats")))
    assert request.headers["Authorization"] == "Basic YWRtaW46cHc="
    assert auth_for(None, None, None) == ({}, None)
    with pytest.raises(ValueError, match="either --token or --user"):
        auth_for("t", "admin", "pw")
    with pytest.raises(ValueError, match="expected a password"):
        auth_for(None, "admin", None)


# -- against real sockets ---------------------------------------------------------------------


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port bound but not listening: connections are refused, and nobody else can take it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture
def live_server() -> Iterator[ServerThread]:
    with EmulatorThread(EmulatorConfig(fps=20.0, size=(320, 240), loop_frames=8)) as cam:
        settings = load_settings(
            None, dict(cameras=[CameraConfig(id="front", url=cam.stream_url)], grace_period=0.3)
        )
        server = ServerThread(settings, detector_factory=box_detectors([])).start()
        try:
            yield server
        finally:
            server.stop()


def test_once_against_a_running_server_with_a_viewer(
    live_server: ServerThread, capsys: pytest.CaptureFixture[str]
) -> None:
    with (
        httpx.Client(base_url=live_server.url, timeout=10.0) as client,
        client.stream("GET", "/cameras/front/detect") as annotated,
    ):
        reader = PartReader(annotated)  # kept: dropping its iterator would close the stream
        reader.read(1)
        wait_until(lambda: live_server.hub.camera("front").source_stats().connected, what="camera up")

        assert main(["monitor", live_server.url, "--once"]) == 0

    out = capsys.readouterr().out
    row = table_row(out, "front")
    assert row[1] == "yes"
    assert row[5:8] == ["0", "1", "0"]
    assert out.count("camera") == 1  # one table


def test_json_against_a_running_server(live_server: ServerThread, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["monitor", live_server.url, "--json", "--count", "2", "--interval", "0.05"]) == 0

    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    for line in lines:
        data = json.loads(line)
        assert data["url"] == live_server.url
        assert [cam["id"] for cam in data["cameras"]] == ["front"]
        assert data["server"]["max_viewers_total"] == live_server.settings.viewers.max_viewers_total


def test_once_on_an_unreachable_server_exits_1_with_the_reason(
    closed_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"http://127.0.0.1:{closed_port}"

    assert main(["monitor", url, "--once"]) == 1

    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"server not reachable at {url}:" in captured.err
    assert "refused" in captured.err.lower()


def test_json_reports_an_unreachable_server_as_an_error_line(
    closed_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["monitor", f"127.0.0.1:{closed_port}", "--json", "--once"]) == 1

    data = json.loads(capsys.readouterr().out)
    assert data["error"].startswith(f"server not reachable at http://127.0.0.1:{closed_port}:")


def test_an_http_error_status_is_reported(
    live_server: ServerThread, capsys: pytest.CaptureFixture[str]
) -> None:
    # A base URL where /stats is not the stats endpoint: the server answers 404.
    assert main(["monitor", f"{live_server.url}/nowhere", "--once"]) == 1

    assert "expected 200 for /stats, got 404 Not Found" in capsys.readouterr().err


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_is_redrawn_in_place_and_keeps_retrying(
    closed_port: int, live_server: ServerThread
) -> None:
    out, err = FakeTerminal(), io.StringIO()
    with httpx.Client(timeout=2.0) as client:
        assert monitor(client, live_server.url, MonitorOptions(interval=0.01, count=2), out, err) == 0
        down = FakeTerminal()
        unreachable = f"http://127.0.0.1:{closed_port}"
        assert monitor(client, unreachable, MonitorOptions(interval=0.01, count=3), down, err) == 1

    frames = out.getvalue().split("\x1b[H")
    assert frames[0] == "\x1b[2J"  # the screen is cleared once, then each table starts at the top
    assert len(frames) == 3
    assert all("front" in frame and frame.endswith("\x1b[J") for frame in frames[1:])
    assert down.getvalue().count("(retrying)") == 3
    assert err.getvalue() == ""


def test_ctrl_c_exits_0(closed_port: int) -> None:
    proc = subprocess.Popen(
        [*espdetect_command(), "monitor", f"http://127.0.0.1:{closed_port}", "--interval", "0.1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=restore_sigint,
    )
    try:
        assert proc.stdout is not None
        assert "server not reachable" in proc.stdout.readline()
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    assert "Traceback" not in stderr
