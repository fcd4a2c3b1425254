"""Where the server's time goes: ``py-spy record`` over a window, aggregated per thread role.

py-spy samples every Python thread of the server (``--nonblocking``, so the server is not
paused; 50 samples/s) and leaves out idle threads: a thread's *active share* is the fraction of
sampling instants it was running Python or native code called from Python (1.0: all the time;
a role with several threads, e.g. render, can exceed 1). Threads without Python frames (ONNX
Runtime's intra-op pool) are invisible to py-spy; their CPU is in the window's per-thread CPU
(`ThreadCpu`, role "native"). Per role, the most frequent leaf functions and the most frequent
innermost espdetect functions tell what the active time was spent on.
"""

from __future__ import annotations

import logging
import re
import subprocess
from collections import Counter
from pathlib import Path
from typing import Final

from benchmarks._engine.common import PY_SPY, thread_group
from benchmarks._engine.results import ThreadProfile

__all__ = ["PROFILED", "Recorder", "parse_raw", "start_record"]

logger = logging.getLogger(__name__)

RATE: Final = 50
_SAMPLES = re.compile(r"Samples: (\d+)")
_THREAD = re.compile(r"^thread \((\d+)\): (.*)$")
#: The configurations profiled, as (kind, cameras).
PROFILED: Final = (("sse", 1), ("sse", 4), ("annotated", 4))


class Recorder:
    """One ``py-spy record`` in the background; `wait` returns the number of sampling instants."""

    def __init__(self, pid: int, seconds: float, out: Path) -> None:
        assert PY_SPY is not None
        self.out = out
        argv = [PY_SPY, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds)))]
        argv += ["--rate", str(RATE), "--format", "raw", "--threads", "--nolineno", "--nonblocking"]
        self.popen = subprocess.Popen(
            [*argv, "--output", str(out)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )

    def wait(self, timeout: float) -> int:
        try:
            output, _ = self.popen.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            output, _ = self.popen.communicate()
        found = _SAMPLES.search(output or "")
        if found is None:
            logger.warning("py-spy record: %s", (output or "").strip()[-300:])
        return int(found.group(1)) if found else 0


def start_record(pid: int, seconds: float, out: Path | None) -> Recorder | None:
    """Start recording ``pid`` for ``seconds`` into ``out`` (None when py-spy is missing)."""
    if out is None or PY_SPY is None:
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    return Recorder(pid, seconds, out)


def _function(frame: str) -> str:
    """``name (file)`` of a collapsed-stack frame, the package path shortened."""
    return frame.strip()


def parse_raw(path: Path, instants: int, top: int = 8) -> list[ThreadProfile]:
    """Per thread role: active samples, active share, top leaf and innermost espdetect functions.

    Example of a line: ``thread (123): espdetect-detect_0;Thread.run (threading.py);... 42``.
    """
    samples: Counter[str] = Counter()
    leaves: dict[str, Counter[str]] = {}
    own: dict[str, Counter[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        stack, _, count_text = line.rpartition(" ")
        frames = stack.split(";")
        head = _THREAD.match(frames[0])
        if head is None or not count_text.isdigit():
            continue
        group, count = thread_group(head.group(2)), int(count_text)
        samples[group] += count
        leaves.setdefault(group, Counter())[_function(frames[-1])] += count
        mine = [f for f in frames[1:] if "espdetect/" in f or "espdetect\\" in f]
        own.setdefault(group, Counter())[_function(mine[-1]) if mine else "(no espdetect frame)"] += count
    out = []
    for group, n in samples.most_common():
        out.append(
            ThreadProfile(
                group=group,
                samples=n,
                active_share=round(n / max(1, instants), 3),
                top_functions=[(f, round(c / n, 3)) for f, c in leaves[group].most_common(top)],
                top_espdetect=[(f, round(c / n, 3)) for f, c in own[group].most_common(top)],
            )
        )
    return out
