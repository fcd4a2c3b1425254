from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from espdetect.cli import build_parser
from espdetect.emulator import Fault, FaultKind

# A child started from a background shell inherits SIGINT ignored; give it Python's usual handler.
_MAIN = (
    "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "from espdetect.cli import main; sys.exit(main(sys.argv[1:]))"
)


def test_parser_reads_emulate_options() -> None:
    args = build_parser().parse_args(
        [
            "emulate",
            "--size",
            "640x480",
            "--fault",
            "stall:seconds=3",
            "--fault",
            "drop_after:frames=50",
            "--firmware",
            "3.x",
            "--fps",
            "0",
            "--max-stream-clients",
            "2",
        ]
    )
    assert args.size == (640, 480)
    assert args.fault == [Fault(FaultKind.STALL, seconds=3.0), Fault(FaultKind.DROP_AFTER, frames=50)]
    assert (args.firmware, args.fps, args.max_stream_clients, args.port, args.host) == (
        "3.x",
        0.0,
        2,
        8080,
        "127.0.0.1",
    )


def test_parser_reads_scene_options() -> None:
    args = build_parser().parse_args(
        ["emulate", "--scene", "yard", "--noise", "3", "--brightness-ramp", "-20", "--still-seconds", "10"]
    )
    assert (args.scene, args.source, args.noise, args.brightness_ramp, args.still_seconds) == (
        "yard",
        None,
        3,
        -20.0,
        10.0,
    )
    plain = build_parser().parse_args(["emulate", "--source", "clip.mp4"])
    assert (plain.scene, plain.source, plain.noise, plain.brightness_ramp) == (
        "photos",
        Path("clip.mp4"),
        0,
        0.0,
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(["--fault", "explode"], "expected a fault kind", id="fault"),
        pytest.param(["--size", "640"], "expected WIDTHxHEIGHT", id="size"),
        pytest.param(["--scene", "garden"], "invalid choice: 'garden'", id="scene"),
        pytest.param(
            ["--scene", "yard", "--source", "x.mp4"], "not allowed with argument", id="scene+source"
        ),
        pytest.param(["--noise", "lots"], "invalid int value", id="noise"),
    ],
)
def test_bad_options_are_rejected(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["emulate", *argv])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_help_documents_the_fault_syntax(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["emulate", "--help"])
    out = capsys.readouterr().out
    assert "stall:seconds=3" in out and "refuse" in out and "PORT+1" in out


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_emulate_runs_until_interrupted(stop_signal: signal.Signals) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _MAIN, "emulate", "--port", "0", "--fps", "5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        urls: dict[str, str] = {}
        for line in proc.stdout:
            key, _, rest = line.strip().partition(":")
            if key in ("control", "stream", "capture"):
                urls[key] = rest.split()[0]
            if line.startswith("Press Ctrl-C"):
                break
        assert urls["stream"].endswith("/stream")
        with urllib.request.urlopen(urls["control"] + "status", timeout=10) as reply:
            assert json.loads(reply.read())["framesize"] == 5
        proc.send_signal(stop_signal)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "stopped" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(["--quality", "99"], "expected quality 0..63", id="quality"),
        pytest.param(
            ["--scene", "yard", "--noise", "300"], "expected noise to be an integer from 0", id="noise"
        ),
    ],
)
def test_emulate_reports_bad_config(argv: list[str], message: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _MAIN, "emulate", "--port", "0", *argv],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"espdetect emulate: {message}"), proc.stderr
    assert proc.stdout == ""


def test_emulate_serves_the_yard_with_sensor_effects() -> None:
    argv = ["emulate", "--port", "0", "--fps", "5", "--scene", "yard", "--noise", "3"]
    proc = subprocess.Popen(
        [sys.executable, "-c", _MAIN, *argv, "--brightness-ramp", "-20", "--still-seconds", "4"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line.strip())
            if line.startswith("Press Ctrl-C"):
                break
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "scene:   yard (first person after 4 s), noise 3 levels, brightness ramp -20" in lines, lines


def test_sensor_model_flag_makes_fps_a_cap() -> None:
    import argparse

    from espdetect.cli.emulate import _add_arguments

    parser = argparse.ArgumentParser()
    _add_arguments(parser)
    args = parser.parse_args(["--sensor-model", "ov2640"])
    assert args.sensor_model == "ov2640" and args.fps is None
    assert parser.parse_args([]).sensor_model == "ideal"
