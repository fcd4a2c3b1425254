"""Issue 14's figures for the Ray backend on this 2-core machine: two ingest servers sharing one Ray
Serve deployment against one local server, and a replica killed under them.

1. **Throughput**: 4 emulated cameras (`bench_capacity`'s load: the photos scene, always moving,
   VGA at 15 fps; one child process serves them all), one detections-only (SSE) subscriber per
   camera (decisions.md: multi-camera throughput is measured with detections-only subscribers).
   Every server runs with ``--no-motion``: every frame is a candidate for the model (the photos
   scene moves all the time anyway), ``skip`` stays ``auto`` (the model runs whenever it is free).

   * **A** (the baseline): one ``espdetect serve`` with the 4 cameras, the default local backend.
   * **B**: two ``espdetect serve --backend ray`` with 2 cameras each, sharing one deployment of 2
     replicas (1 CPU and 1 inference thread each) on a local Ray head with 2 CPUs.

   The Ray head and the deployment are started once, before the first round (their start-up is not
   measured), and stay up for the whole run: while A runs the replicas sit idle (their CPU is
   measured). A and B alternate, ``A B A B ...`` for ``--rounds`` rounds, one configuration at a
   time, so the machine's CPU drift (about +-25 %) hits both; each window is ``--warmup`` seconds
   after every camera had its first detection, then ``--seconds`` measured. Figure: total
   detections/s from ``/stats`` ``frames_detected`` deltas. B/A ratios: each B against the A
   before and after it (adjacent pairs), the verdict on their median. Target: >= 0.8. Also the
   mean batch size, remote and round-trip latency (``/stats`` ``detector.remote``) and the CPU of
   the servers, the replicas, the rest of Ray, the camera process and this process (psutil).
2. **Recovery**: B running with an annotated MJPEG viewer on ``b1/c0`` beside the subscribers; one
   replica process (``ServeReplica:<app>:detector``) killed with SIGKILL, ``--kills`` times (waiting
   for full recovery in between). Per camera, ``/stats`` polled every 0.1 s: the time from the kill
   to its first new detection and to the end of its longest stall (the verdict's figure). The time
   until a new replica process exists and until every server reports 2 replicas running again.
   Per stream (each SSE subscriber, the annotated viewer): what it received in the first 10 s
   after the kill, its longest gap, and whether it ended. Targets: detections resume within 10 s
   on every camera; no stream ends and the annotated viewer never pauses for more than 2 s.

The model is ``--model`` / ``$ESPDETECT_MODEL``, else the bundled one. Writes ``ray.json`` (every
figure, load averages at every window's start and end) and ``summary.md`` (targets with PASS/FAIL,
per-round and per-kill tables) into ``--out``; the servers' logs go to ``--logs`` (default: a
temporary folder, named at the end).

Usage::

    python -m benchmarks.bench_ray --out benchmarks/results/ray                 # about 10 min
    python -m benchmarks.bench_ray --out /tmp/ray --rounds 1 --seconds 10 --warmup 5 --kills 1
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import logging
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import psutil

from benchmarks._harness.procs import REPO_ROOT, MachineSample, ProcessGroup
from benchmarks._harness.report import load_average, markdown_table, start_run, utc_now, write_json
from benchmarks._harness.server import Cameras, CameraSpec, start_cameras
from benchmarks._harness.viewers import Probe
from benchmarks.bench_capacity import LOAD
from tests._ray import RayCluster

logger = logging.getLogger(__name__)

#: The Serve application both B servers share.
APP = "espdetect-bench-ray"
CAMERA_IDS = ("c0", "c1", "c2", "c3")
#: Which server serves which cameras in each configuration.
LAYOUT: Mapping[str, Sequence[tuple[str, Sequence[str]]]] = {
    "A": (("a", CAMERA_IDS),),
    "B": (("b1", CAMERA_IDS[:2]), ("b2", CAMERA_IDS[2:])),
}
TARGET_RATIO = 0.8
RESUME_WITHIN_S = 10.0
#: The annotated viewer must never go longer than this without a frame (it runs at 15 fps).
MAX_VIEWER_GAP_S = 2.0
#: Seconds a server may take to listen (B: joining the cluster, a few seconds on 2 busy cores).
START_TIMEOUT = 180.0
#: Seconds each kill is watched at least (the stream figures' window).
OBSERVE_S = 20.0
#: Seconds a kill may take to recover fully before the benchmark gives up on it.
RECOVERY_TIMEOUT = 120.0
POLL_S = 0.1

_URL_LINE = re.compile(r"espdetect server: (http://127\.0\.0\.1:\d+)/")
_SERVE = "import sys; from espdetect.cli import main; sys.exit(main())"


# -- the processes -------------------------------------------------------------------------------


class _Server:
    """``espdetect serve`` with some of the cameras; `wait_ready` returns once it listens."""

    def __init__(self, name: str, cameras: Mapping[str, str], extra: Sequence[str], work: Path) -> None:
        self.name = name
        self.cameras = list(cameras)
        args = ["serve", "--host", "127.0.0.1", "--port", "0", "--data-dir", str(work / "data" / name)]
        args += ["--no-events", "--no-motion", *extra]
        for cam_id, url in cameras.items():
            args += ["--camera", f"{cam_id}={url}"]
        env = {
            k: v for k, v in os.environ.items() if not k.startswith("ESPDETECT_") or k == "ESPDETECT_MODEL"
        }
        env.update(YOLO_OFFLINE="True", YOLO_AUTOINSTALL="False", RAY_USAGE_STATS_ENABLED="0")
        self.log_path = work / f"{name}.log"
        self._log = self.log_path.open("w", encoding="utf-8")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _SERVE, *args],
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env=env,
            cwd=REPO_ROOT,
        )
        self.ps = psutil.Process(self.proc.pid)
        self.url = ""
        self._listening = threading.Event()
        self.client: httpx.Client | None = None
        threading.Thread(target=self._drain, name=f"{name}-stdout", daemon=True).start()

    def _drain(self) -> None:
        for line in self.proc.stdout or ():
            match = _URL_LINE.search(line)
            if match and not self.url:
                self.url = match.group(1)
                self._listening.set()
        self._listening.set()  # it exited

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        if not self._listening.wait(timeout) or not self.url:
            raise RuntimeError(f"server {self.name} did not start within {timeout:g} s (see {self.log_path})")
        self.client = httpx.Client(base_url=self.url, timeout=10.0)

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def stats(self) -> dict[str, Any]:
        assert self.client is not None
        stats: dict[str, Any] = self.client.get("/stats").json()
        return stats

    def remote(self) -> dict[str, Any]:
        """``/stats`` ``detector.remote`` (empty for a local backend)."""
        remote: dict[str, Any] | None = self.stats()["detector"].get("remote")
        return remote or {}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                logger.warning("server %s did not stop within 30 s: killed", self.name)
                self.proc.kill()
                self.proc.wait()
        if self.client is not None:
            self.client.close()
        self._log.close()


class _Subscriber:
    """One detections-only viewer (``/cameras/{id}/detections``) on its own thread, reconnecting
    if the stream ends before ``closing`` is set (each such end is counted: a stream that stopped)."""

    def __init__(self, url: str, camera: str, closing: threading.Event) -> None:
        self.path = f"{url}/cameras/{camera}/detections"
        self.closing = closing
        self.lock = threading.Lock()
        self.events: list[float] = []
        self.keepalives: list[float] = []
        self.ends = 0
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._run, name=f"sse {camera}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        timeout = httpx.Timeout(10.0, read=40.0)
        while not self.closing.is_set():
            try:
                with httpx.stream("GET", self.path, timeout=timeout) as response:
                    if response.status_code != 200:
                        self.errors.append(f"HTTP {response.status_code}")
                    else:
                        for line in response.iter_lines():
                            now = time.monotonic()
                            with self.lock:
                                if line.startswith("data:"):
                                    self.events.append(now)
                                elif line.startswith(":"):
                                    self.keepalives.append(now)
            except httpx.HTTPError as exc:
                if not self.closing.is_set():
                    self.errors.append(repr(exc))
            if not self.closing.is_set():
                self.ends += 1
                self.closing.wait(0.5)

    def count(self) -> int:
        with self.lock:
            return len(self.events)

    def times(self, start: float, end: float) -> list[float]:
        with self.lock:
            return [t for t in self.events if start <= t < end]


def _replica_processes() -> list[psutil.Process]:
    marker = f"ServeReplica:{APP}:detector"
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if marker in " ".join(proc.info["cmdline"] or []):
                found.append(proc)
    return found


def _ray_processes(cluster: RayCluster) -> tuple[list[psutil.Process], list[psutil.Process]]:
    """(the replicas, every other process of the cluster: head, GCS, raylet, Serve controller...)."""
    replicas = _replica_processes()
    tree: list[psutil.Process] = []
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            words = proc.info["cmdline"] or []
            if "--head" in words and f"--port={cluster.port}" in words:
                tree = [proc, *proc.children(recursive=True)]
                break
    mine = {p.pid for p in replicas}
    return replicas, [p for p in tree if p.pid not in mine]


def _cpu_seconds(procs: Sequence[psutil.Process]) -> dict[int, float]:
    out: dict[int, float] = {}
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            out[proc.pid] = times.user + times.system
    return out


def _percent(before: Mapping[int, float], after: Mapping[int, float], wall: float) -> float:
    """CPU in % of one core of the processes measured at both ends."""
    used = sum(after[pid] - before[pid] for pid in after if pid in before)
    return round(100.0 * used / max(1e-9, wall), 1)


def _wait(condition: Callable[[], bool], timeout: float, what: str, every: float = 0.5) -> float:
    """Seconds until ``condition()`` held; `RuntimeError` after ``timeout``."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise RuntimeError(f"no {what} within {timeout:g} s")
        time.sleep(every)
    return round(time.monotonic() - start, 2)


# -- one configuration running -------------------------------------------------------------------


@dataclass
class _Rig:
    config: str
    servers: list[_Server]
    subscribers: dict[str, _Subscriber]
    viewer: Probe | None
    started_s: float

    def detected(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for server in self.servers:
            out.update({cam: c["frames_detected"] for cam, c in server.stats()["cameras"].items()})
        return out


@dataclass(frozen=True)
class _Setup:
    cluster: RayCluster
    cameras: Cameras
    urls: Mapping[str, str]
    work: Path
    ray_args: Sequence[str]


@contextlib.contextmanager
def _running(setup: _Setup, config: str, tag: str, *, viewer: bool = False) -> Iterator[_Rig]:
    """Configuration ``config``'s servers with a subscriber per camera (and with ``viewer`` an
    annotated viewer on the first camera), every camera detecting; all stopped on leaving."""
    closing = threading.Event()
    servers: list[_Server] = []
    subscribers: dict[str, _Subscriber] = {}
    probe: Probe | None = None
    start = time.monotonic()
    extra = list(setup.ray_args) if config == "B" else []
    try:
        for name, cams in LAYOUT[config]:
            servers.append(_Server(f"{tag}-{name}", {c: setup.urls[c] for c in cams}, extra, setup.work))
        for server in servers:
            server.wait_ready()
        if config == "B":
            _wait(lambda: all(s.remote().get("replicas_running") == 2 for s in servers), 60.0, "2 replicas")
        for server in servers:
            subscribers.update({c: _Subscriber(server.url, c, closing) for c in server.cameras})
        if viewer:
            probe = Probe(servers[0].port, f"/cameras/{servers[0].cameras[0]}/detect", closing)
        rig = _Rig(config, servers, subscribers, probe, 0.0)
        _wait(lambda: min(rig.detected().values()) > 0, 120.0, "detections on every camera")
        rig.started_s = round(time.monotonic() - start, 1)
        yield rig
    finally:
        closing.set()
        for server in servers:
            server.stop()
        for sub in subscribers.values():
            sub.thread.join(5.0)
        if probe is not None:
            probe.thread.join(5.0)
        for cam in setup.urls:  # the cameras are free again before the next configuration opens them
            setup.cameras.wait_clients(cam, 0, 10.0)


# -- throughput ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RemoteFigures:
    """A B server's view of the pool at the end of a window (counters: deltas over it)."""

    mean_batch_size: float | None
    queued: float | None
    replicas_running: int | None
    calls: int
    failures: int
    timeouts: int
    remote_ms: dict[str, float | None]
    round_trip_ms: dict[str, float | None]


@dataclass(frozen=True)
class Window:
    """One measured window of one configuration."""

    config: str
    round: int
    seconds: float
    #: Seconds from starting the servers to every camera's first detection (not measured).
    startup_s: float
    detections_per_s: float
    camera_detections_per_s: dict[str, float]
    #: Detection events the subscribers received per second (all cameras): a cross-check.
    sse_events_per_s: float
    #: Frames the server read per second from each camera.
    camera_in_fps: dict[str, float]
    detector_errors: int
    #: % of one core: servers, replicas, ray_other (head, GCS, raylet, Serve controller...),
    #: cameras (the emulator process), benchmark (this process: subscribers and polling).
    cpu_percent: dict[str, float]
    server_cpu_percent: dict[str, float]
    replica_cpu_percent: dict[str, float]
    machine_cores_busy: float
    #: The machine's busy CPU less all of the above, % of one core: other work on the machine
    #: (a window with more than ``--max-other`` is measured again).
    other_cpu_percent: float
    loadavg_start: float
    loadavg_end: float
    #: 1, or 2.. when the windows before it were disturbed by other work and measured again.
    attempt: int = 1
    remote: dict[str, RemoteFigures] = field(default_factory=dict)


def _delta(after: Mapping[str, Any], before: Mapping[str, Any], key: str) -> int:
    return int(after.get(key) or 0) - int(before.get(key) or 0)


def _measure(setup: _Setup, rig: _Rig, rnd: int, seconds: float) -> Window:
    # Long: one window, read at both ends (stats, CPU of five process groups, the machine).
    replicas, ray_other = _ray_processes(setup.cluster)
    groups = {
        "servers": [s.ps for s in rig.servers],
        "replicas": replicas,
        "ray_other": ray_other,
        "cameras": [setup.cameras.process],
        "benchmark": [psutil.Process()],
    }
    load0 = load_average()
    stats0 = {s.name: s.stats() for s in rig.servers}
    sse0 = {c: sub.count() for c, sub in rig.subscribers.items()}
    cpu0 = {g: _cpu_seconds(p) for g, p in groups.items()}
    machine0, t0 = MachineSample.now(), time.perf_counter()
    time.sleep(seconds)
    cpu1 = {g: _cpu_seconds(p) for g, p in groups.items()}
    machine1, t1 = MachineSample.now(), time.perf_counter()
    stats1 = {s.name: s.stats() for s in rig.servers}
    sse1 = {c: sub.count() for c, sub in rig.subscribers.items()}
    wall = t1 - t0
    per_cam: dict[str, float] = {}
    in_fps: dict[str, float] = {}
    errors = 0
    remote: dict[str, RemoteFigures] = {}
    for name, after in stats1.items():
        for cam, c1 in after["cameras"].items():
            c0 = stats0[name]["cameras"][cam]
            per_cam[cam] = round(_delta(c1, c0, "frames_detected") / wall, 3)
            in_fps[cam] = round(_delta(c1, c0, "frames_in") / wall, 2)
            errors += _delta(c1, c0, "detector_errors")
        r1, r0 = after["detector"].get("remote"), stats0[name]["detector"].get("remote")
        if r1 and r0:
            remote[name] = RemoteFigures(
                r1["mean_batch_size"], r1["queued"], r1["replicas_running"],
                _delta(r1, r0, "calls"), _delta(r1, r0, "failures"), _delta(r1, r0, "timeouts"),
                r1["remote_ms"], r1["round_trip_ms"],
            )  # fmt: skip
    server_pids = {s.ps.pid: s.name for s in rig.servers}
    cpu = {g: _percent(cpu0[g], cpu1[g], wall) for g in groups}
    cores = machine1.cores_busy_since(machine0)
    return Window(
        config=rig.config,
        round=rnd,
        seconds=round(wall, 2),
        startup_s=rig.started_s,
        detections_per_s=round(sum(per_cam.values()), 3),
        camera_detections_per_s=per_cam,
        sse_events_per_s=round(sum(sse1[c] - sse0[c] for c in sse1) / wall, 3),
        camera_in_fps=in_fps,
        detector_errors=errors,
        cpu_percent=cpu,
        server_cpu_percent={
            server_pids[pid]: _percent({pid: cpu0["servers"][pid]}, {pid: cpu1["servers"][pid]}, wall)
            for pid in cpu1["servers"]
            if pid in cpu0["servers"]
        },
        replica_cpu_percent={
            str(pid): _percent({pid: cpu0["replicas"][pid]}, {pid: cpu1["replicas"][pid]}, wall)
            for pid in cpu1["replicas"]
            if pid in cpu0["replicas"]
        },
        machine_cores_busy=cores,
        other_cpu_percent=round(max(0.0, cores * 100.0 - sum(cpu.values())), 1),
        loadavg_start=load0,
        loadavg_end=load_average(),
        remote=remote,
    )


def _wait_quiet(setup: _Setup, rig: _Rig, max_other: float, timeout: float) -> None:
    """Wait (at most ``timeout`` s) until other processes use at most ``max_other`` % of a core
    over 3 s: other work on the shared machine often comes in bursts."""
    deadline = time.monotonic() + timeout
    while (other := _measure(setup, rig, 0, 3.0).other_cpu_percent) > max_other:
        if time.monotonic() > deadline:
            logger.warning("other processes still use %.0f %% of a core: measuring anyway", other)
            return
        logger.info("other processes use %.0f %% of a core: waiting for a quieter machine", other)
        time.sleep(2.0)


def _window(setup: _Setup, config: str, rnd: int, args: argparse.Namespace) -> tuple[Window, list[Window]]:
    """The round's window of ``config``, and the windows measured before it that other work disturbed."""
    discarded: list[Window] = []
    with _running(setup, config, f"r{rnd}{config.lower()}") as rig:
        logger.info(
            "round %d %s: detecting after %.1f s; %g s warm-up", rnd, config, rig.started_s, args.warmup
        )
        time.sleep(args.warmup)
        for attempt in range(1, args.retries + 2):
            _wait_quiet(setup, rig, args.max_other, args.quiet_wait)
            window = replace(_measure(setup, rig, rnd, args.seconds), attempt=attempt)
            if window.other_cpu_percent <= args.max_other or attempt > args.retries:
                break
            logger.warning(
                "round %d %s: other processes used %.0f %% of a core (%.2f detections/s): measuring again",
                rnd, config, window.other_cpu_percent, window.detections_per_s,
            )  # fmt: skip
            discarded.append(window)
    batch = ", ".join(f"{n} batch {r.mean_batch_size}" for n, r in window.remote.items())
    logger.info(
        "round %d %s: %.2f detections/s (%s), CPU %s, other %.0f %%, machine %.2f cores, load %.2f -> %.2f%s",
        rnd, config, window.detections_per_s, window.camera_detections_per_s, window.cpu_percent,
        window.other_cpu_percent, window.machine_cores_busy, window.loadavg_start, window.loadavg_end,
        f"; {batch}" if batch else "",
    )  # fmt: skip
    return window, discarded


def adjacent_ratios(windows: Sequence[Window]) -> list[float]:
    """B/A of every neighbouring A and B window in run order (``A B A B``: 3 ratios).

    Example:
        >>> w = lambda c, d: Window(c, 1, 1.0, 0.0, d, {}, 0.0, {}, 0, {}, {}, {}, 0.0, 0.0, 0.0, 0.0)
        >>> adjacent_ratios([w("A", 10.0), w("B", 9.0), w("A", 8.0)])
        [0.9, 1.125]
    """
    out = []
    for first, second in itertools.pairwise(windows):
        if {first.config, second.config} == {"A", "B"}:
            a, b = (first, second) if first.config == "A" else (second, first)
            out.append(round(b.detections_per_s / max(1e-9, a.detections_per_s), 3))
    return out


# -- recovery ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CameraRecovery:
    """One camera around a kill (seconds from the kill)."""

    first_detection_s: float | None
    #: The longest stretch without a new detection from the kill to the end of the watch, and
    #: when it ended (None: still open when the watch ended).
    longest_stall_s: float
    stall_ended_s: float | None
    #: The same camera over the healthy seconds just before the kill: what is usual.
    longest_gap_before_s: float
    detections_per_s_before: float
    detections_per_s_10s_after: float
    #: The verdict: a first detection and no stall longer than `RESUME_WITHIN_S`.
    resumed_in_time: bool


@dataclass(frozen=True)
class StreamWatch:
    """What one viewer received around a kill."""

    kind: str
    received_in_10s: int
    #: Longest time without an event (SSE) or a frame (annotated) from the kill to the end of the watch.
    longest_gap_s: float | None
    #: Times the stream ended (the viewer had to reconnect) or failed during the watch.
    ended: int
    errors: list[str]


@dataclass(frozen=True)
class Kill:
    """One replica killed with SIGKILL under the running B servers."""

    index: int
    victim_pid: int
    replicas_before: list[int]
    cameras: dict[str, CameraRecovery]
    #: Seconds until a replica process that was not there before ran.
    new_replica_s: float | None
    #: Seconds until, with the new replica running, every server reported 2 replicas running.
    running_again_s: float | None
    #: Fewest replicas running any server reported while watched.
    replicas_running_min: int | None
    degraded_seen: bool
    timeouts: int
    failures: int
    streams: dict[str, StreamWatch]
    #: CPU of each replica for 5 s after recovery, % of one core (the new one serves too).
    replica_cpu_after: dict[str, float]
    watched_s: float
    loadavg_start: float
    loadavg_end: float


@dataclass
class _Timeline:
    """What the 0.1-s polls after a kill saw (times in seconds from the kill)."""

    t: list[float] = field(default_factory=list)
    detected: list[dict[str, int]] = field(default_factory=list)
    running: list[list[int | None]] = field(default_factory=list)
    healthy: list[bool] = field(default_factory=list)
    new_pid_at: float | None = None
    running_again_at: float | None = None


def _longest_gap(times: Sequence[float], end: float) -> tuple[float, float | None]:
    """(the longest gap among 0 (the kill), ``times`` and ``end``, the time it ended); the end is
    None when the longest gap is the last one, still open at ``end``.

    Example:
        >>> _longest_gap([0.5, 4.0, 4.5], 5.0)
        (3.5, 4.0)
        >>> _longest_gap([0.5], 5.0)
        (4.5, None)
    """
    points = [0.0, *sorted(t for t in times if 0.0 <= t <= end)]
    closed = [(round(b - a, 3), round(b, 3)) for a, b in itertools.pairwise(points)]
    gap, ended = max(closed, key=lambda g: g[0], default=(0.0, 0.0))
    tail = round(end - points[-1], 3)
    return (tail, None) if tail > gap else (gap, ended)


def _rises(
    times: Sequence[float], detected: Sequence[Mapping[str, int]], cam: str, before: int
) -> list[float]:
    """The poll times at which ``cam``'s ``frames_detected`` had grown since the previous poll."""
    rises = []
    last = before
    for t, seen in zip(times, detected, strict=True):
        if seen[cam] > last:
            rises.append(t)
        last = seen[cam]
    return rises


def _camera_recovery(
    timeline: _Timeline, cam: str, before: int, pre: tuple[list[float], list[dict[str, int]]], settle: float
) -> CameraRecovery:
    rises = _rises(timeline.t, timeline.detected, cam, before)
    stall, ended = _longest_gap(rises, timeline.t[-1] if timeline.t else 0.0)
    pre_t, pre_detected = pre
    pre_rises = _rises(pre_t, pre_detected, cam, pre_detected[0][cam] if pre_detected else 0)
    pre_count = pre_detected[-1][cam] - pre_detected[0][cam] if pre_detected else 0
    at_10 = next((d[cam] for t, d in zip(timeline.t, timeline.detected, strict=True) if t >= 10.0), before)
    first = round(rises[0], 3) if rises else None
    return CameraRecovery(
        first_detection_s=first,
        longest_stall_s=stall,
        stall_ended_s=ended,
        longest_gap_before_s=_longest_gap(pre_rises, settle)[0],
        detections_per_s_before=round(pre_count / max(1e-9, settle), 3),
        detections_per_s_10s_after=round((at_10 - before) / 10.0, 3),
        resumed_in_time=first is not None and ended is not None and stall <= RESUME_WITHIN_S,
    )


def _watch_detections(rig: _Rig, seconds: float) -> tuple[list[float], list[dict[str, int]]]:
    """``frames_detected`` of every camera polled every 0.1 s for ``seconds`` (times from the start)."""
    start = time.monotonic()
    times: list[float] = []
    detected: list[dict[str, int]] = []
    while (now := time.monotonic() - start) < seconds:
        times.append(round(now, 3))
        detected.append(rig.detected())
        time.sleep(max(0.0, POLL_S - (time.monotonic() - start - now)))
    return times, detected


def _poll_after_kill(rig: _Rig, killed_at: float, before_pids: set[int]) -> _Timeline:
    """Poll every server's ``/stats`` every 0.1 s (the replica processes every 0.5 s) until
    everything recovered and at least `OBSERVE_S` passed, or `RECOVERY_TIMEOUT`."""
    timeline = _Timeline()
    next_scan = 0.0
    pids_now = 2
    while True:
        now = time.monotonic() - killed_at
        if now >= next_scan:
            pids = {p.pid for p in _replica_processes()}
            pids_now = len(pids)
            if timeline.new_pid_at is None and pids - before_pids:
                timeline.new_pid_at = round(now, 3)
            next_scan = now + 0.5
        stats = [s.stats() for s in rig.servers]
        timeline.t.append(round(now, 3))
        detected: dict[str, int] = {}
        for st in stats:
            detected.update({cam: c["frames_detected"] for cam, c in st["cameras"].items()})
        timeline.detected.append(detected)
        running = [(st["detector"].get("remote") or {}).get("replicas_running") for st in stats]
        timeline.running.append(running)
        timeline.healthy.append(all(st["detector"].get("healthy", True) for st in stats))
        back = pids_now == 2 and all(r == 2 for r in running)
        if back and timeline.new_pid_at is not None and timeline.running_again_at is None:
            timeline.running_again_at = round(now, 3)
        recent = len(timeline.t) > 15 and all(
            timeline.detected[-1][c] > timeline.detected[-15][c] for c in detected
        )
        if (now >= OBSERVE_S and recent and timeline.running_again_at is not None) or now > RECOVERY_TIMEOUT:
            return timeline
        time.sleep(max(0.0, POLL_S - (time.monotonic() - killed_at - now)))


def _streams(
    rig: _Rig, killed_at: float, end: float, ended0: dict[str, int], reconnects0: int
) -> dict[str, StreamWatch]:
    out: dict[str, StreamWatch] = {}
    for cam, sub in rig.subscribers.items():
        times = [t - killed_at for t in sub.times(killed_at, killed_at + end)]
        out[f"sse {cam}"] = StreamWatch(
            "sse", sum(1 for t in times if t <= 10.0), _longest_gap(times, end)[0],
            sub.ends - ended0[cam], list(sub.errors),
        )  # fmt: skip
    if rig.viewer is not None:
        frames, _ = rig.viewer.window(killed_at, killed_at + end)
        times = [t - killed_at for t in frames]
        out["annotated c0"] = StreamWatch(
            "annotated", sum(1 for t in times if t <= 10.0), _longest_gap(times, end)[0],
            rig.viewer.reconnects - reconnects0, [],
        )  # fmt: skip
    return out


def _pool_ready(rig: _Rig) -> bool:
    return len(_replica_processes()) == 2 and all(
        s.remote().get("replicas_running") == 2 and s.remote().get("healthy") for s in rig.servers
    )


def _kill(rig: _Rig, index: int, settle: float) -> Kill:
    _wait(lambda: _pool_ready(rig), RECOVERY_TIMEOUT, "healthy pool of 2 replicas")
    load0 = load_average()
    pids = sorted(p.pid for p in _replica_processes())
    victim = pids[index % len(pids)]
    remote0 = [s.remote() for s in rig.servers]
    ended0 = {c: sub.ends for c, sub in rig.subscribers.items()}
    reconnects0 = rig.viewer.reconnects if rig.viewer is not None else 0
    pre = _watch_detections(rig, settle)
    before = rig.detected()
    killed_at = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    logger.info("kill %d: replica pid %d killed (of %s)", index + 1, victim, pids)
    timeline = _poll_after_kill(rig, killed_at, set(pids))
    watched = timeline.t[-1]
    remote1 = [s.remote() for s in rig.servers]
    cameras = {cam: _camera_recovery(timeline, cam, before[cam], pre, settle) for cam in before}
    streams = _streams(rig, killed_at, watched, ended0, reconnects0)
    replicas = _replica_processes()
    cpu0 = _cpu_seconds(replicas)
    time.sleep(5.0)
    cpu1 = _cpu_seconds(replicas)
    running = [r for rs in timeline.running for r in rs if r is not None]
    kill = Kill(
        index=index + 1,
        victim_pid=victim,
        replicas_before=pids,
        cameras=cameras,
        new_replica_s=timeline.new_pid_at,
        running_again_s=timeline.running_again_at,
        replicas_running_min=min(running, default=None),
        degraded_seen=not all(timeline.healthy),
        timeouts=sum(_delta(r1, r0, "timeouts") for r0, r1 in zip(remote0, remote1, strict=True)),
        failures=sum(_delta(r1, r0, "failures") for r0, r1 in zip(remote0, remote1, strict=True)),
        streams=streams,
        replica_cpu_after={
            f"{pid}{'' if pid in pids else ' (new)'}": _percent({pid: cpu0[pid]}, {pid: cpu1[pid]}, 5.0)
            for pid in cpu1
            if pid in cpu0
        },
        watched_s=watched,
        loadavg_start=load0,
        loadavg_end=load_average(),
    )
    logger.info(
        "kill %d: first detection %s s, longest stall %s s; new replica after %s s, 2 running again "
        "after %s s; streams (received in 10 s, longest gap s, ended) %s",
        kill.index, {c: r.first_detection_s for c, r in cameras.items()},
        {c: r.longest_stall_s for c, r in cameras.items()}, kill.new_replica_s, kill.running_again_s,
        {n: (s.received_in_10s, s.longest_gap_s, s.ended) for n, s in streams.items()},
    )  # fmt: skip
    return kill


# -- the report ----------------------------------------------------------------------------------


@dataclass
class Results:
    """Everything ``ray.json`` holds besides the run's metadata."""

    deploy_s: float | None = None
    #: The replica processes' nice values (Ray starts its workers at ``RAY_worker_niceness``).
    replica_nice: list[int] = field(default_factory=list)
    windows: list[Window] = field(default_factory=list)
    #: Windows other work disturbed (more than ``--max-other``), each measured again.
    discarded: list[Window] = field(default_factory=list)
    kills: list[Kill] = field(default_factory=list)
    error: str | None = None

    def ratios(self) -> list[float]:
        return adjacent_ratios(self.windows)

    def round_ratios(self) -> dict[int, float]:
        a = {w.round: w.detections_per_s for w in self.windows if w.config == "A"}
        b = {w.round: w.detections_per_s for w in self.windows if w.config == "B"}
        return {r: round(b[r] / max(1e-9, a[r]), 3) for r in sorted(a) if r in b}

    def median_ratio(self) -> float | None:
        ratios = self.ratios()
        return round(statistics.median(ratios), 3) if ratios else None

    def targets(self) -> list[tuple[str, str, str, bool]]:
        """(target, goal, measured, passed) per target of issue 14 measured here."""
        rows = []
        median = self.median_ratio()
        rows.append((
            "total detections/s, two servers on one shared Ray deployment vs one local server",
            f">= {TARGET_RATIO:g} x (median of the adjacent B/A ratios)",
            f"{median} (pairs: {', '.join(f'{r:.3f}' for r in self.ratios())})",
            median is not None and median >= TARGET_RATIO,
        ))  # fmt: skip
        b = [w for w in self.windows if w.config == "B"]
        least = min((min(w.camera_detections_per_s.values()) for w in b), default=None)
        rows.append(("every camera gets detections (B)", "> 0 detections/s on each of the 4",
                     f"least {least}/s", least is not None and least > 0))  # fmt: skip
        batches = [r.mean_batch_size or 0.0 for w in b for r in w.remote.values()]
        rows.append(("mean batch size, cameras contending (B)", "> 1 on both servers, every window",
                     f"{min(batches, default=0):.2f} to {max(batches, default=0):.2f}",
                     bool(batches) and min(batches) > 1.0))  # fmt: skip
        cams = [r for k in self.kills for r in k.cameras.values()]
        first = max((r.first_detection_s or float("inf") for r in cams), default=None)
        stall = max((r.longest_stall_s for r in cams), default=None)
        rows.append((f"detections resume after a killed replica ({len(self.kills)} kills)",
                     f"<= {RESUME_WITHIN_S:g} s on every camera: first detection, and no stall longer",
                     f"first detection after at most {first} s; longest stall {stall} s",
                     bool(cams) and all(r.resumed_in_time for r in cams)))  # fmt: skip
        streams = [s for k in self.kills for s in k.streams.values()]
        viewer_gap = max((s.longest_gap_s or 0.0 for s in streams if s.kind == "annotated"), default=None)
        ok = bool(streams) and all(s.ended == 0 and s.received_in_10s > 0 for s in streams)
        ok = ok and viewer_gap is not None and viewer_gap <= MAX_VIEWER_GAP_S
        rows.append(("the viewers' streams do not stop (killed replica)",
                     f"no stream ends; every stream receives in the 10 s after; annotated gap <= "
                     f"{MAX_VIEWER_GAP_S:g} s",
                     f"{sum(s.ended for s in streams)} ended; least received in 10 s "
                     f"{min((s.received_in_10s for s in streams), default=0)}; "
                     f"annotated longest gap {viewer_gap} s",
                     ok))  # fmt: skip
        return rows


def _mean(values: Sequence[float]) -> float | None:
    return round(statistics.fmean(values), 1) if values else None


def _round_table(results: Results) -> str:
    ratios = results.round_ratios()
    rows = []
    for w in results.windows:
        remote = list(w.remote.values())
        rows.append([
            w.round, w.config, f"{w.detections_per_s:.2f}",
            " / ".join(f"{v:.2f}" for v in w.camera_detections_per_s.values()),
            f"{ratios[w.round]:.3f}" if w.config == "B" and w.round in ratios else "",
            " / ".join(f"{r.mean_batch_size:.2f}" for r in remote if r.mean_batch_size is not None),
            " / ".join(f"{r.remote_ms.get('p50')}" for r in remote),
            " / ".join(f"{r.round_trip_ms.get('p50')}" for r in remote),
            " / ".join(f"{v:.0f}" for v in w.server_cpu_percent.values()),
            w.cpu_percent["replicas"], w.cpu_percent["ray_other"], w.cpu_percent["cameras"],
            w.cpu_percent["benchmark"], w.other_cpu_percent, f"{w.machine_cores_busy:.2f}",
            f"{w.loadavg_start} -> {w.loadavg_end}",
        ])  # fmt: skip
    return markdown_table(
        ["round", "config", "detections/s", "per camera", "B/A (round)", "mean batch", "remote ms p50",
         "round trip ms p50", "server CPU %", "replicas CPU %", "other Ray CPU %", "cameras CPU %",
         "benchmark CPU %", "other processes CPU %", "machine cores busy", "load average"],
        rows,
        align="rlrrrrrrrrrrrrrl",
    )  # fmt: skip


def _kill_table(results: Results) -> str:
    rows = []
    for k in results.kills:
        sse = [s for s in k.streams.values() if s.kind == "sse"]
        viewer = next((s for s in k.streams.values() if s.kind == "annotated"), None)
        rows.append([
            k.index,
            " / ".join(f"{r.first_detection_s}" for r in k.cameras.values()),
            " / ".join(f"{r.longest_stall_s}" for r in k.cameras.values()),
            " / ".join(f"{r.longest_gap_before_s}" for r in k.cameras.values()),
            " / ".join(f"{r.detections_per_s_before:.1f}" for r in k.cameras.values()),
            " / ".join(f"{r.detections_per_s_10s_after:.1f}" for r in k.cameras.values()),
            k.new_replica_s, k.running_again_s, k.replicas_running_min, k.timeouts, k.failures,
            "yes" if k.degraded_seen else "no",
            " / ".join(str(s.received_in_10s) for s in sse),
            max((s.longest_gap_s or 0 for s in sse), default=""),
            "" if viewer is None else viewer.received_in_10s, "" if viewer is None else viewer.longest_gap_s,
            sum(s.ended for s in k.streams.values()),
            ", ".join(f"{p} {v:.0f} %" for p, v in k.replica_cpu_after.items()),
        ])  # fmt: skip
    return markdown_table(
        ["kill", "first detection s (c0/c1/c2/c3)", "longest stall s", "longest gap before s",
         "detections/s before", "detections/s 10 s after", "new replica s", "2 running again s",
         "fewest running seen", "timeouts", "failures", "degraded seen", "SSE events in 10 s",
         "SSE longest gap s", "annotated frames in 10 s", "annotated longest gap s", "streams ended",
         "replica CPU after (5 s)"],
        rows,
        align="rlllllrrrrrlrrrrrl",
    )  # fmt: skip


def _disturbed(results: Results, max_other: float) -> str:
    """A sentence on the windows other work disturbed (measured again, or kept after the retries)."""
    again = "; ".join(
        f"round {w.round} {w.config} attempt {w.attempt}: other processes {w.other_cpu_percent:.0f} %, "
        f"{w.detections_per_s:.2f} detections/s"
        for w in results.discarded
    )
    kept = [f"round {w.round} {w.config}" for w in results.windows if w.other_cpu_percent > max_other]
    text = f"Windows in which other processes used more than {max_other:g} % of a core are measured again. "
    text += f"Measured again: {again}." if again else "None was."
    if kept:
        text += f" Still disturbed after the retries, and kept: {', '.join(kept)}."
    return text


def _summary(meta: Mapping[str, Any], args: argparse.Namespace, results: Results) -> str:
    # Long: the report's prose, then its three tables, in order.
    targets = markdown_table(
        ["target", "goal", "measured", "verdict"],
        [[t, goal, got, "PASS" if ok else "FAIL"] for t, goal, got, ok in results.targets()],
    )
    a = [w for w in results.windows if w.config == "A"]
    b = [w for w in results.windows if w.config == "B"]
    idle = _mean([w.cpu_percent["replicas"] for w in a])
    idle_other = _mean([w.cpu_percent["ray_other"] for w in a])
    parts = [
        "# Ray backend benchmark (issue 14)",
        "",
        f"{meta['date']} to {meta.get('finished')} ({meta.get('seconds')} s) on {meta['machine']} (load "
        f"average {meta['loadavg_start']} at start, {meta.get('loadavg_end')} at the end); model "
        f"`{meta['model']}`, Ray {meta.get('ray')}, ONNX Runtime {meta.get('onnxruntime')}.",
        "",
        f"Cameras: 4 x {LOAD.describe()}, emulated in one child process; one detections-only (SSE) "
        "subscriber per camera. Servers: `espdetect serve --no-motion` (every frame is a candidate; "
        "`skip=auto`: the model runs whenever it is free). **A**: one server with the 4 cameras, the local "
        "ONNX Runtime backend. **B**: two servers with 2 cameras each, `--backend ray` sharing the "
        f"application `{APP}`: 2 replicas, 1 CPU (1 inference thread) each, batches of up to "
        f"{args.max_batch_size} frames waiting {args.batch_wait:g} s, call timeout {args.ray_timeout:g} s, "
        "on a local Ray head with 2 CPUs. The head and the deployment were started once before the "
        f"rounds (deployment {results.deploy_s} s, not measured) and stayed up; A and B alternate "
        f"(`A B` x {args.rounds}), one at a time, each window {args.warmup:g} s after every camera's first "
        f"detection, then {args.seconds:g} s measured (`frames_detected` deltas from `/stats`).",
        "",
        f"While A ran, the idle replicas used {idle} % of a core and the rest of Ray (head, GCS, raylet, "
        f"Serve controller) {idle_other} % (mean over A windows): the cluster's idle cost is charged "
        "to A as well. Ray starts its workers, the replicas too, at nice "
        f"{', '.join(map(str, sorted(set(results.replica_nice))))} (`RAY_worker_niceness`), the servers at "
        f"nice {meta.get('nice')}: on a shared box, any other busy process takes the CPU before the "
        "model does.",
        "",
        "## Targets",
        "",
        targets,
        "",
        "## Throughput, round by round",
        "",
        f"B/A per adjacent pair, in run order: {', '.join(f'{r:.3f}' for r in results.ratios())}; "
        f"median {results.median_ratio()}. Mean detections/s: A {_mean([w.detections_per_s for w in a])}, "
        f"B {_mean([w.detections_per_s for w in b])}. CPU in % of one core over the window; for B, "
        "`server CPU`, `mean batch`, `remote ms` and `round trip ms` per server (b1 / b2).",
        "",
        _round_table(results),
        "",
        _disturbed(results, args.max_other),
        "",
        "## Recovery after a killed replica",
        "",
        "B running (4 cameras contending, an annotated MJPEG viewer on b1/c0 besides the subscribers); "
        "one replica process killed with SIGKILL per row, after the pool was healthy for "
        f"{args.settle:g} s (the `before` columns). Times in seconds from the kill, `/stats` polled every "
        "0.1 s; `longest stall`: the camera's longest stretch without a new detection from the kill on "
        "(the verdict's figure, with the first detection); `new replica`: a replica "
        "process that was not there before runs; `2 running again`: with it, every server's "
        "`replicas_running` is 2 (the servers ask Serve every 2 s). Streams watched for at least "
        f"{OBSERVE_S:g} s after the kill.",
        "",
        _kill_table(results),
        "",
    ]
    if results.error:
        parts += ["## The run stopped early", "", f"`{results.error}`", ""]
    return "\n".join(parts)


# -- the run -------------------------------------------------------------------------------------


def _deploy(setup: _Setup) -> float:
    """Deploy the application once (the first B server does it; then it stops), in seconds."""
    start = time.monotonic()
    server = _Server("deploy-b1", {c: setup.urls[c] for c in CAMERA_IDS[:2]}, setup.ray_args, setup.work)
    try:
        server.wait_ready()
        _wait(lambda: server.remote().get("replicas_running") == 2, 120.0, "2 replicas running")
    finally:
        server.stop()
    for cam in CAMERA_IDS[:2]:
        setup.cameras.wait_clients(cam, 0, 10.0)
    return round(time.monotonic() - start, 1)


def _measure_all(setup: _Setup, args: argparse.Namespace, results: Results) -> None:
    results.deploy_s = _deploy(setup)
    logger.info("deployment %s: 2 replicas running after %.1f s", APP, results.deploy_s)
    results.replica_nice = sorted(p.nice() for p in _replica_processes())
    logger.info("the replicas run at nice %s (this process: %d)", results.replica_nice, os.nice(0))
    for rnd in range(1, args.rounds + 1):
        for config in ("A", "B"):
            window, discarded = _window(setup, config, rnd, args)
            results.windows.append(window)
            results.discarded += discarded
    if args.kills:
        with _running(setup, "B", "recovery", viewer=True) as rig:
            time.sleep(args.warmup)
            for index in range(args.kills):
                results.kills.append(_kill(rig, index, args.settle))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="results folder")
    parser.add_argument(
        "--model", default=None, help="model file (default $ESPDETECT_MODEL, else the bundled)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="A B rounds (3)")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured seconds per window (30)")
    parser.add_argument("--warmup", type=float, default=10.0, help="warm-up seconds per window (10)")
    parser.add_argument("--kills", type=int, default=2, help="replicas killed one after another (2)")
    parser.add_argument("--settle", type=float, default=10.0, help="healthy seconds before each kill (10)")
    parser.add_argument(
        "--max-other",
        type=float,
        default=25.0,
        help="other processes' CPU (%% of a core) a window may see (25)",
    )
    parser.add_argument("--retries", type=int, default=2, help="re-measures of a disturbed window (2)")
    parser.add_argument(
        "--quiet-wait", type=float, default=60.0, help="seconds a window may wait for other work to stop (60)"
    )
    parser.add_argument("--max-batch-size", type=int, default=4, help="--ray-max-batch-size (4)")
    parser.add_argument("--batch-wait", type=float, default=0.02, help="--ray-batch-wait (0.02)")
    parser.add_argument("--ray-timeout", type=float, default=2.0, help="--ray-timeout (2)")
    parser.add_argument("--logs", type=Path, default=None, help="servers' logs (default: a temporary folder)")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    out: Path = args.out
    meta = start_run(out, args.model, args.verbose, "ray", "onnxruntime", "numpy", "psutil")
    meta.update(cpu_count=os.cpu_count(), nice=os.nice(0))
    work: Path = args.logs or Path(tempfile.mkdtemp(prefix="bench-ray-"))
    work.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    results = Results()
    specs = [CameraSpec(c, LOAD.fps, LOAD.size, scene=LOAD.scene, max_stream_clients=2) for c in CAMERA_IDS]
    cluster_dir: Path | None = None
    try:
        with ProcessGroup(work) as group, RayCluster(cpus=2) as cluster:
            cluster_dir = cluster.temp_dir
            cameras = start_cameras(group, "cameras", specs)
            ray_args = [
                "--backend", "ray", "--ray-address", cluster.address, "--ray-app", APP,
                "--ray-replicas", "2", "--ray-cpus-per-replica", "1",
                "--ray-max-batch-size", str(args.max_batch_size), "--ray-batch-wait", str(args.batch_wait),
                "--ray-timeout", str(args.ray_timeout),
            ]  # fmt: skip
            setup = _Setup(cluster, cameras, cameras.ready(), work, ray_args)
            _measure_all(setup, args, results)
    except Exception as exc:
        logger.exception("the run stopped early")
        results.error = f"{type(exc).__name__}: {exc}"
    meta.update(loadavg_end=load_average(), finished=utc_now(), seconds=round(time.monotonic() - began, 1))
    write_json(
        out / "ray.json",
        {
            "meta": meta,
            "command": " ".join(["python -m benchmarks.bench_ray", *(argv or sys.argv[1:])]),
            "cameras": f"4 x {LOAD.describe()}",
            "settings": {k: v for k, v in vars(args).items() if k not in ("out", "logs", "model", "verbose")},
            "app": APP,
            "median_ratio": results.median_ratio(),
            "adjacent_ratios": results.ratios(),
            "round_ratios": results.round_ratios(),
            "targets": [
                {"target": t, "goal": g, "measured": m, "passed": ok} for t, g, m, ok in results.targets()
            ],
            "deploy_s": results.deploy_s,
            "replica_nice": results.replica_nice,
            "windows": results.windows,
            "discarded_windows": results.discarded,
            "kills": results.kills,
            "error": results.error,
        },
    )
    (out / "summary.md").write_text(_summary(meta, args, results), encoding="utf-8")
    if cluster_dir is not None and results.error is None:
        shutil.rmtree(cluster_dir, ignore_errors=True)  # kept after a failure, for its logs
        cluster_dir = None
    logger.info("servers' logs in %s%s", work, "" if cluster_dir is None else f", Ray's in {cluster_dir}")
    print((out / "summary.md").read_text(encoding="utf-8"))
    return 0 if results.error is None and all(ok for *_, ok in results.targets()) else 1


if __name__ == "__main__":
    sys.exit(main())
