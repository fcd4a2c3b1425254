"""Child processes of the benchmarks: the line protocol (both ends), CPU and memory, always stopped.

A child prints ``WORD {json}`` lines on stdout (``READY {...}`` once it can be measured) and stops
when its stdin closes, so a benchmark that dies never leaves one behind. Children run as modules
(``python -m benchmarks.x``) with the repository root as working directory, which puts the
``benchmarks`` package on their path.

CPU is read with psutil from a process's own counters (user + system, all threads) and given in
% of one core; `MachineSample` gives what the whole machine used, in cores.

Example:
    >>> with ProcessGroup(Path("/tmp/logs")) as group:  # doctest: +SKIP
    ...     child = group.start("runner", module_argv("benchmarks._server.runner", "model-only", url))
    ...     child.wait("READY", 600.0)
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TextIO

import psutil

__all__ = [
    "PYTHON",
    "REPO_ROOT",
    "Child",
    "ChildFailed",
    "CpuSample",
    "MachineSample",
    "ProcessGroup",
    "Resources",
    "command_lines",
    "cpu_trace",
    "emit",
    "module_argv",
    "on_stdin_eof",
]

logger = logging.getLogger(__name__)

#: The repository root: children run from here so that ``python -m benchmarks.x`` finds the package.
REPO_ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


def module_argv(module: str, *args: str) -> list[str]:
    """The command line running ``module`` with this interpreter (start it with ``cwd=REPO_ROOT``).

    Example:
        >>> module_argv("benchmarks.baseline_per_viewer", "--camera", "http://cam/stream")[1:3]
        ['-m', 'benchmarks.baseline_per_viewer']
    """
    return [PYTHON, "-m", module, *args]


class ChildFailed(Exception):
    """A child exited or did not answer in time."""


# -- measuring processes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CpuSample:
    """A process's CPU time (user + system, all threads) at a moment (``perf_counter``).

    Example:
        >>> CpuSample(1.0, 0.5).percent_since(CpuSample(0.0, 0.0))
        50.0
    """

    wall: float
    cpu: float

    @staticmethod
    def of(proc: psutil.Process) -> CpuSample:
        times = proc.cpu_times()
        return CpuSample(time.perf_counter(), times.user + times.system)

    def percent_since(self, earlier: CpuSample) -> float:
        """CPU use between two samples in % of one core."""
        return 100.0 * (self.cpu - earlier.cpu) / max(1e-9, self.wall - earlier.wall)


@dataclass(frozen=True)
class MachineSample:
    """The whole machine's busy and total CPU time at a moment (all processes)."""

    wall: float
    busy: float
    total: float

    @staticmethod
    def now() -> MachineSample:
        t = psutil.cpu_times()
        total = sum(t)
        return MachineSample(time.perf_counter(), total - t.idle - getattr(t, "iowait", 0.0), total)

    def cores_busy_since(self, earlier: MachineSample) -> float:
        """Cores busy on the whole machine between the samples (2.0: a 2-core machine saturated)."""
        share = (self.busy - earlier.busy) / max(1e-9, self.total - earlier.total)
        return round(share * (psutil.cpu_count() or 1), 3)


class Resources(NamedTuple):
    """What a process holds now.

    Example:
        >>> Resources.of(psutil.Process()).threads >= 1
        True
    """

    rss_mb: float
    fds: float
    threads: float
    #: % of one core since the previous call for the same `psutil.Process` (0.0 the first time).
    cpu_percent: float

    @staticmethod
    def of(proc: psutil.Process) -> Resources:
        with proc.oneshot():
            return Resources(
                proc.memory_info().rss / 2**20,
                float(proc.num_fds()),
                float(proc.num_threads()),
                proc.cpu_percent(None),
            )


# -- the parent's end of the line protocol ---------------------------------------------------------


class Child:
    """One child process speaking the ``WORD {json}`` protocol; its stderr goes to ``log_dir/name.log``.

    Example:
        >>> argv = module_argv("benchmarks._server.runner", "model-only", url)
        >>> child = Child("runner", argv, Path("/tmp/logs"))  # doctest: +SKIP
        >>> child.send("run 5"); child.wait("RESULT", 60.0)["calls"]  # doctest: +SKIP
        42
    """

    def __init__(
        self, name: str, argv: Sequence[str], log_dir: Path, env: dict[str, str] | None = None
    ) -> None:
        self.name = name
        log_dir.mkdir(parents=True, exist_ok=True)
        self._log: TextIO = (log_dir / f"{name}.log").open("w", encoding="utf-8")
        child_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
        logger.debug("starting %s: %s", name, " ".join(argv))
        self.popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            bufsize=1,
            env=child_env,
            cwd=REPO_ROOT,
        )
        self.process = psutil.Process(self.popen.pid)
        self._replies: dict[str, queue.Queue[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, name=f"{name}-stdout", daemon=True)
        self._reader.start()

    def _queue(self, word: str) -> queue.Queue[dict[str, Any]]:
        with self._lock:
            return self._replies.setdefault(word, queue.Queue())

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            word, _, rest = line.strip().partition(" ")
            if word.isupper() and rest.startswith("{"):
                try:
                    payload = json.loads(rest)
                except ValueError:
                    payload = None
                if isinstance(payload, dict):
                    self.on_message(word, payload)
                    continue
            # Anything else a child prints is kept in its log.
            self._log.write(f"[stdout] {line}")
            self._log.flush()

    def on_message(self, word: str, payload: dict[str, Any]) -> None:
        """Called on the reader thread for each protocol line; queues it for `wait`."""
        self._queue(word).put(payload)

    def wait(self, word: str, timeout: float) -> dict[str, Any]:
        """The next ``word`` message; raises `ChildFailed` if the child exits or time runs out."""
        q = self._queue(word)
        deadline = time.monotonic() + timeout
        while True:
            try:
                return q.get(timeout=0.2)
            except queue.Empty:
                if self.popen.poll() is not None:
                    raise ChildFailed(
                        f"{self.name} exited with {self.popen.returncode} (see logs/{self.name}.log)"
                    ) from None
                if time.monotonic() > deadline:
                    raise ChildFailed(f"{self.name}: no {word} within {timeout:g} s") from None

    async def await_message(self, word: str, timeout: float) -> dict[str, Any]:
        return await asyncio.to_thread(self.wait, word, timeout)

    def send(self, line: str) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write(line + "\n")
        self.popen.stdin.flush()

    def cpu(self) -> CpuSample:
        return CpuSample.of(self.process)

    def rss(self) -> int:
        return int(self.process.memory_info().rss)

    def stop(self, timeout: float = 8.0) -> None:
        """Close stdin (the child's cue to leave), then SIGTERM, then SIGKILL."""
        if self.popen.poll() is None:
            try:
                if self.popen.stdin is not None:
                    self.popen.stdin.close()
            except OSError:
                pass
            for sig in (None, signal.SIGTERM, signal.SIGKILL):
                if sig is not None and self.popen.poll() is None:
                    self.popen.send_signal(sig)
                try:
                    self.popen.wait(timeout)
                    break
                except subprocess.TimeoutExpired:
                    continue
        self._reader.join(2.0)
        self._log.close()


async def cpu_trace(child: Child, seconds: float, step: float) -> list[tuple[float, float]]:
    """(seconds since start at the end of each interval, % of a core used in it), every ``step`` s."""
    out: list[tuple[float, float]] = []
    prev = child.cpu()
    start = prev.wall
    while prev.wall - start < seconds:
        await asyncio.sleep(step)
        now = child.cpu()
        out.append((now.wall - start, now.percent_since(prev)))
        prev = now
    return out


@dataclass
class ProcessGroup:
    """Children started by a benchmark; `close` stops them all, whatever happened.

    Example:
        >>> with ProcessGroup(Path("/tmp/logs")) as group:  # doctest: +SKIP
        ...     child = group.add(Child("x", argv, group.log_dir))
    """

    log_dir: Path
    children: list[Child] = field(default_factory=list)

    def add(self, child: Child) -> Child:
        self.children.append(child)
        return child

    def start(self, name: str, argv: Sequence[str]) -> Child:
        """Start and keep a child logging to ``log_dir/name.log``."""
        return self.add(Child(name, argv, self.log_dir))

    def stop(self, child: Child) -> None:
        child.stop()
        if child in self.children:
            self.children.remove(child)

    def close(self) -> None:
        for child in reversed(self.children):
            try:
                child.stop()
            except Exception:
                logger.exception("could not stop %s", child.name)
        self.children.clear()

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- the child's end of the line protocol ----------------------------------------------------------


def emit(word: str, payload: object) -> None:
    """Print one protocol line (``WORD {json}``) and flush it at once.

    Example:
        >>> emit("READY", {"url": "http://127.0.0.1:8000"})
        READY {"url": "http://127.0.0.1:8000"}
    """
    sys.stdout.write(f"{word} {json.dumps(payload)}\n")
    sys.stdout.flush()


def command_lines() -> Iterator[list[str]]:
    """The words of each stdin line (blank lines skipped) until ``quit`` or stdin closes."""
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "quit":
            return
        yield words


def on_stdin_eof(callback: Callable[[], None]) -> None:
    """Call ``callback`` (on a daemon thread) once stdin closes: the parent went away or said so."""

    def wait() -> None:
        for _ in sys.stdin:
            pass
        callback()

    threading.Thread(target=wait, name="stdin-eof", daemon=True).start()
