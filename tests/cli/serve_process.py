"""Starting ``espdetect serve`` / ``demo`` as a real process (shared by the CLI server tests)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

_URL_LINE = re.compile(r"espdetect server: (http://127\.0\.0\.1:\d+)/")


def espdetect_command() -> list[str]:
    script = Path(sys.executable).parent / "espdetect"
    return (
        [str(script)] if script.exists() else [sys.executable, "-c", "from espdetect.cli import main; main()"]
    )


def restore_sigint() -> None:
    """``preexec_fn``: a child of a background shell inherits SIGINT ignored; Ctrl-C tests need it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_and_wait_for_url(args: list[str]) -> tuple[subprocess.Popen[str], str]:
    """Start ``espdetect ARGS`` and return it with the server URL it printed once listening."""
    # Closed with the process object; the log is read only when the process fails.
    stderr = tempfile.TemporaryFile("w+")  # noqa: SIM115
    env = {**os.environ, "YOLO_OFFLINE": "True", "YOLO_AUTOINSTALL": "False"}
    proc = subprocess.Popen(
        [*espdetect_command(), *args],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env=env,
        preexec_fn=restore_sigint,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        match = _URL_LINE.search(line)
        if match:
            return proc, match.group(1)
    proc.wait(10)
    stderr.seek(0)
    raise AssertionError(
        f"espdetect exited with {proc.returncode} before listening:\n{stderr.read()[-3000:]}"
    )
