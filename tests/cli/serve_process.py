"""Starting ``espdetect serve`` / ``demo`` as a real process (shared by the CLI server tests)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import tempfile
import weakref
from collections.abc import Iterator
from typing import IO

from tests.cli.cli_process import espdetect_command

_URL_LINE = re.compile(r"espdetect server: (http://127\.0\.0\.1:\d+)/")
#: Each running process's stderr file, for `stderr_of`.
_STDERR: weakref.WeakKeyDictionary[subprocess.Popen[str], IO[str]] = weakref.WeakKeyDictionary()


def restore_sigint() -> None:
    """``preexec_fn``: a child of a background shell inherits SIGINT ignored; Ctrl-C tests need it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@contextlib.contextmanager
def running(args: list[str], *, unset: tuple[str, ...] = ()) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``espdetect ARGS`` running, with the server URL it printed once listening.

    On exit the process is killed if it still runs, and its pipes and log file are closed.
    ``unset`` names environment variables the process must not see (``ESPDETECT_MODEL``).
    """
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env.update(YOLO_OFFLINE="True", YOLO_AUTOINSTALL="False")
    with (
        tempfile.TemporaryFile("w+") as stderr,
        subprocess.Popen(
            [*espdetect_command(), *args],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=env,
            preexec_fn=restore_sigint,
        ) as proc,
    ):
        _STDERR[proc] = stderr
        try:
            yield proc, _wait_for_url(proc, stderr)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def stderr_of(proc: subprocess.Popen[str]) -> str:
    """What a process `running` started has written to stderr so far."""
    stderr = _STDERR[proc]
    stderr.flush()
    stderr.seek(0)
    return stderr.read()


def _wait_for_url(proc: subprocess.Popen[str], stderr: IO[str]) -> str:
    assert proc.stdout is not None
    for line in proc.stdout:
        match = _URL_LINE.search(line)
        if match:
            return match.group(1)
    proc.wait(10)
    stderr.seek(0)
    raise AssertionError(
        f"espdetect exited with {proc.returncode} before listening:\n{stderr.read()[-3000:]}"
    )
