from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request

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


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(["--fault", "explode"], "expected a fault kind", id="fault"),
        pytest.param(["--size", "640"], "expected WIDTHxHEIGHT", id="size"),
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


def test_emulate_reports_bad_config() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _MAIN, "emulate", "--port", "0", "--quality", "99"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("espdetect emulate: expected quality 0..63"), proc.stderr
    assert proc.stdout == ""
