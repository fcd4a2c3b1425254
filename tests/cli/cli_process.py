"""Running ``espdetect`` as a user does, in a process of its own (shared by the CLI tests)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path


def espdetect_command() -> list[str]:
    """The installed ``espdetect`` script, or the same entry point through this interpreter."""
    script = Path(sys.executable).parent / "espdetect"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from espdetect.cli import main; sys.exit(main())"]


def run_espdetect(
    *args: str, env: Mapping[str, str] | None = None, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``espdetect ARGS`` to completion; ``env`` is added to this process's environment."""
    return subprocess.run(
        [*espdetect_command(), *args],
        env={**os.environ, **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def one_error_line(proc: subprocess.CompletedProcess[str], command: str) -> str:
    """The single line a user error leaves on stderr; fails unless it is that and exit status 2."""
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"espdetect {command}: "), lines[0]
    return lines[0]
