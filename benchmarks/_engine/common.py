"""What the sections of the engine benchmark share: the plan, thread CPU, mapped libraries, ratios."""

from __future__ import annotations

import json
import logging
import shutil
import statistics
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, NamedTuple

import psutil

__all__ = [
    "PY_SPY",
    "VGA",
    "MinMedMax",
    "Plan",
    "ThreadCpu",
    "is_mapped",
    "median_or_none",
    "ratio",
    "thread_group",
    "thread_names",
]

logger = logging.getLogger(__name__)

VGA: Final = (640, 480)
#: ``py-spy`` next to this interpreter (``pip install py-spy``); None when it is not installed.
PY_SPY: Final = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")


@dataclass(frozen=True)
class Plan:
    """Durations and counts; ``--quick`` is the short form (about 8 minutes with ``install``).

    Example:
        >>> Plan.make(quick=True).rss_repeats
        1
    """

    quick: bool
    #: rss: seconds the viewers are served before RSS is read, samples (1 s apart) reported.
    rss_window: float
    rss_last: int
    rss_repeats: int
    #: cameras: seconds of each measured window, settling time before it, alternating rounds,
    #: and pairs of short windows of the drift-robust check (`benchmarks._engine.fine`).
    window: float
    settle: float
    rounds: int
    fine_pairs: int

    @staticmethod
    def make(quick: bool) -> Plan:
        if quick:
            return Plan(True, 12.0, 6, 1, 10.0, 3.0, 2, 4)
        return Plan(False, 20.0, 10, 2, 20.0, 4.0, 4, 8)


class MinMedMax(NamedTuple):
    """Minimum, median and maximum of some samples.

    Example:
        >>> MinMedMax.of([3.0, 1.0, 2.0])
        MinMedMax(min=1.0, median=2.0, max=3.0)
    """

    min: float
    median: float
    max: float

    @staticmethod
    def of(values: Sequence[float]) -> MinMedMax:
        return MinMedMax(round(min(values), 1), round(statistics.median(values), 1), round(max(values), 1))


def ratio(a: float, b: float) -> float:
    """``a / b`` to 3 decimals (0.0 when ``b`` is 0)."""
    return round(a / b, 3) if b else 0.0


def median_or_none(values: Sequence[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def is_mapped(pid: int, needle: str) -> bool:
    """Whether a file whose path contains ``needle`` is mapped into process ``pid`` (``/proc/PID/maps``).

    Unlike ``sys.modules`` this is read from outside, at any time: ``libtorch`` mapped means torch
    was imported at some point, whoever imported it.
    """
    try:
        with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace") as maps:
            return any(needle in line for line in maps)
    except OSError:
        return False


def thread_names(pid: int) -> dict[int, str]:
    """OS thread id -> Python thread name of every Python thread of ``pid`` (``py-spy dump --json``).

    Threads missing from the answer have no Python frame: native threads such as ONNX Runtime's
    intra-op pool. Empty when py-spy is not installed or cannot attach.
    """
    if PY_SPY is None:
        return {}
    try:
        done = subprocess.run(
            [PY_SPY, "dump", "--pid", str(pid), "--json"], capture_output=True, text=True, timeout=20
        )
        threads = json.loads(done.stdout) if done.returncode == 0 else []
    except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
        logger.warning("py-spy dump failed: %r", exc)
        return {}
    return {int(t["os_thread_id"]): str(t["thread_name"]) for t in threads if t.get("os_thread_id")}


def thread_group(name: str | None) -> str:
    """The role of a server thread from its Python name (None: a native thread).

    Example:
        >>> thread_group("espdetect-detect_0"), thread_group(None), thread_group("MainThread")
        ('detect', 'native', 'event loop')
    """
    if name is None:
        return "native"
    if name == "MainThread":
        return "event loop"
    if "-detect" in name:
        return "detect"
    if "-render" in name:
        return "render"
    return "other python"


class ThreadCpu:
    """CPU time of each thread of a process, to split a window's CPU by thread role.

    Example:
        >>> cpu = ThreadCpu(psutil.Process())
        >>> before = cpu.times()
        >>> sorted(cpu.by_group(before, cpu.times(), 1.0))  # doctest: +ELLIPSIS
        [...]
    """

    def __init__(self, process: psutil.Process) -> None:
        self.process = process
        self.names: dict[int, str] = {}

    def refresh_names(self) -> None:
        """Learn the names of the Python threads alive now (threads start lazily, so call it late)."""
        self.names.update(thread_names(self.process.pid))

    def times(self) -> dict[int, float]:
        """OS thread id -> user + system seconds."""
        try:
            return {t.id: t.user_time + t.system_time for t in self.process.threads()}
        except psutil.Error:
            return {}

    def by_group(
        self, before: Mapping[int, float], after: Mapping[int, float], wall: float
    ) -> dict[str, float]:
        """% of one core per thread role between two `times` (threads born in between count fully)."""
        out: dict[str, float] = {}
        for tid, seconds in after.items():
            group = thread_group(self.names.get(tid))
            out[group] = out.get(group, 0.0) + seconds - before.get(tid, 0.0)
        return {group: round(100.0 * s / max(1e-9, wall), 1) for group, s in sorted(out.items())}
