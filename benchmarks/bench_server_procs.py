"""Child processes of the server benchmarks: start, talk to, measure and always stop them.

Every child speaks the same line protocol on stdout (``WORD {json}``) and stops when its stdin
closes, so `ProcessGroup.close` (or the benchmark dying) never leaves one behind. CPU time is
read with psutil from the child's own counters (user + system, all threads).
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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import psutil

__all__ = ["CameraEvent", "Cameras", "Child", "CpuSample", "ProcessGroup"]

logger = logging.getLogger("bench_server")

HERE = Path(__file__).resolve().parent
PYTHON = sys.executable


class ChildFailed(Exception):
    """A child exited or did not answer in time."""


@dataclass(frozen=True)
class CpuSample:
    wall: float
    cpu: float

    @staticmethod
    def of(proc: psutil.Process) -> CpuSample:
        times = proc.cpu_times()
        return CpuSample(time.perf_counter(), times.user + times.system)

    def percent_since(self, earlier: CpuSample) -> float:
        """CPU use between two samples in % of one core."""
        return 100.0 * (self.cpu - earlier.cpu) / max(1e-9, self.wall - earlier.wall)


class Child:
    """One child process speaking the ``WORD {json}`` protocol."""

    def __init__(
        self, name: str, argv: Sequence[str], log_dir: Path, env: dict[str, str] | None = None
    ) -> None:
        self.name = name
        log_dir.mkdir(parents=True, exist_ok=True)
        self._log: TextIO = (log_dir / f"{name}.log").open("w", encoding="utf-8")
        child_env = dict(os.environ)
        child_env.update(env or {})
        child_env["PYTHONUNBUFFERED"] = "1"
        logger.debug("starting %s: %s", name, " ".join(argv))
        self.popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            bufsize=1,
            env=child_env,
            cwd=HERE.parent,
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
            if word.isupper() and rest.startswith(("{", "[")):
                try:
                    payload = json.loads(rest)
                except ValueError:
                    payload = None
                if payload is not None:
                    self.on_message(word, payload)
                    continue
            self._log.write(f"[stdout] {line}")
            self._log.flush()

    def on_message(self, word: str, payload: dict[str, Any]) -> None:
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


@dataclass(frozen=True)
class CameraEvent:
    t: float
    camera: str
    stream_clients: int
    streams_total: int


class Cameras(Child):
    """The emulated cameras (``bench_server_cameras.py``): URLs, stream-count events, stats."""

    def __init__(self, name: str, specs: list[dict[str, Any]], log_dir: Path) -> None:
        self.events: list[CameraEvent] = []
        self._changed = threading.Condition()
        super().__init__(name, [PYTHON, str(HERE / "bench_server_cameras.py"), json.dumps(specs)], log_dir)
        self.urls: dict[str, str] = {}

    def on_message(self, word: str, payload: dict[str, Any]) -> None:
        if word == "EVENT":
            with self._changed:
                self.events.append(CameraEvent(**payload))
                self._changed.notify_all()
            return
        super().on_message(word, payload)

    def ready(self, timeout: float = 120.0) -> dict[str, str]:
        self.urls = {k: str(v) for k, v in self.wait("READY", timeout).items()}
        return self.urls

    def clients(self, camera: str) -> int:
        with self._changed:
            for event in reversed(self.events):
                if event.camera == camera:
                    return event.stream_clients
        return 0

    def wait_event(self, camera: str, clients: int, after: float, timeout: float) -> CameraEvent | None:
        """The first event at or after ``after`` (Unix) where ``camera`` serves ``clients`` streams."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for event in self.events:
                    if event.camera == camera and event.t >= after and event.stream_clients == clients:
                        return event
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._changed.wait(min(left, 0.2))

    async def await_event(
        self, camera: str, clients: int, after: float, timeout: float
    ) -> CameraEvent | None:
        return await asyncio.to_thread(self.wait_event, camera, clients, after, timeout)

    def wait_clients(self, camera: str, clients: int, timeout: float) -> bool:
        """Wait until ``camera`` serves exactly ``clients`` streams now; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                latest = next((e for e in reversed(self.events) if e.camera == camera), None)
                if (latest.stream_clients if latest is not None else 0) == clients:
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 0.2))

    async def await_clients(self, camera: str, clients: int, timeout: float) -> bool:
        return await asyncio.to_thread(self.wait_clients, camera, clients, timeout)

    def max_clients(self, camera: str, since: float = 0.0) -> int:
        """The most streams ``camera`` served at once from ``since`` (Unix) on, counting the state then."""
        with self._changed:
            mine = [e for e in self.events if e.camera == camera]
        before = [e.stream_clients for e in mine if e.t < since][-1:]
        return max(before + [e.stream_clients for e in mine if e.t >= since], default=0)

    def stats(self, timeout: float = 10.0) -> dict[str, Any]:
        self.send("stats")
        return self.wait("STATS", timeout)


@dataclass
class ProcessGroup:
    """Children started by the benchmark; `close` stops them all, whatever happened."""

    log_dir: Path
    children: list[Child] = field(default_factory=list)

    def add(self, child: Child) -> Child:
        self.children.append(child)
        return child

    def cameras(self, name: str, specs: list[dict[str, Any]]) -> Cameras:
        cams = Cameras(name, specs, self.log_dir)
        self.children.append(cams)
        return cams

    def server(self, name: str, settings: dict[str, Any]) -> Child:
        argv = [PYTHON, str(HERE / "bench_server_runner.py"), "serve", json.dumps(settings)]
        return self.add(Child(name, argv, self.log_dir))

    def baseline(self, name: str, camera_url: str, generator: str) -> Child:
        argv = [
            PYTHON,
            str(HERE / "baseline_per_viewer.py"),
            "--camera",
            camera_url,
            "--generator",
            generator,
        ]
        return self.add(Child(name, argv, self.log_dir))

    def runner(self, name: str, args: list[str]) -> Child:
        return self.add(Child(name, [PYTHON, str(HERE / "bench_server_runner.py"), *args], self.log_dir))

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
