"""Header floods (issue 15): ``/health`` latency and the server's memory while clients send huge heads.

``espdetect serve`` (`CliServer`, default limits) on an emulated 30 fps VGA camera (a child
process) with one raw-stream viewer; ``/health`` is probed at a steady rate, a new connection
per request as a monitoring probe makes it, first with no flood, then while ``--flood-clients``
child processes each send a ``--flood-mib`` MiB header, reconnecting as soon as the server cuts
them off, for the whole window. Figures per phase: ``/health`` latency (p50/p99/max, errors),
the server's CPU and RSS (sampled every 50 ms), the viewer's throughput, and what the flood
clients managed (connections, bytes the kernel accepted, answers).

The flood clients run at ``nice 10``: on a real attack their CPU is not the server's machine's,
and on a 2-core machine unthrottled reconnect loops would measure CPU starvation instead.

Run as a child (started by the section; not by hand except to debug)::

    python -m benchmarks._hardening.flood PORT MIB
"""

from __future__ import annotations

import argparse
import http.client
import logging
import os
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from benchmarks._hardening import Section, SectionResult
from benchmarks._harness.procs import (
    Child,
    CpuSample,
    MachineSample,
    ProcessGroup,
    command_lines,
    emit,
    module_argv,
)
from benchmarks._harness.report import Spread, markdown_table
from benchmarks._harness.server import CameraSpec, CliServer, start_cameras
from benchmarks._motion.served import ViewerThread
from benchmarks._server.results import TargetRow, add_target

__all__ = ["FLOOD", "FloodTally", "Phase", "flood_section"]

logger = logging.getLogger(__name__)

MIB = 1024 * 1024
#: Issue 15's targets while four clients flood 64 MiB headers.
HEALTH_P99_MS = 100.0
RSS_GROWTH_MB = 50.0
#: A head whose last header's value the flood fills; it never ends before the flood does.
FLOOD_HEAD = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Flood: "
HOST = "127.0.0.1"
#: Seconds the floods run before the probe starts (every client connected and cut off a few times).
WARMUP = 1.0


# -- the flood client (a child process) ---------------------------------------------------------


@dataclass
class FloodTally:
    """What flood clients did: connections opened, header bytes the kernel took, answers read."""

    connections: int = 0
    bytes_sent: int = 0
    #: Connections that sent the whole header (the server read it all: the limits failed).
    completed: int = 0
    #: Status codes of the answers read after the server cut the flood off ("none": reset first).
    answers: dict[str, int] = field(default_factory=dict)

    def add(self, other: FloodTally) -> None:
        self.connections += other.connections
        self.bytes_sent += other.bytes_sent
        self.completed += other.completed
        self.answers = dict(Counter(self.answers) + Counter(other.answers))


def _answer(sock: socket.socket) -> str:
    try:
        sock.settimeout(2.0)
        head = sock.recv(64)
    except OSError:
        return "none"
    return head[9:12].decode("ascii", "replace") if head.startswith(b"HTTP/1.") else "none"


def _flood(port: int, size: int, stop: threading.Event, tally: FloodTally) -> None:
    chunk = b"A" * MIB
    while not stop.is_set():
        sent = 0
        try:
            with socket.create_connection((HOST, port), timeout=10.0) as sock:
                tally.connections += 1
                try:
                    sock.sendall(FLOOD_HEAD)
                    while sent < size and not stop.is_set():
                        part = min(MIB, size - sent)
                        sock.sendall(chunk[:part])
                        sent += part
                    if sent >= size:
                        sock.sendall(b"\r\n\r\n")
                        tally.completed += 1
                except OSError:
                    pass  # cut off: what the limits are for
                status = _answer(sock)
                tally.answers[status] = tally.answers.get(status, 0) + 1
        except OSError:
            time.sleep(0.01)  # refused: the server is gone or busy
        tally.bytes_sent += sent


def _child(argv: list[str]) -> int:
    """Flood until ``stop`` (or stdin closes), then print ``RESULT {FloodTally}``."""
    parser = argparse.ArgumentParser(prog="flood")
    parser.add_argument("port", type=int)
    parser.add_argument("mib", type=int)
    args = parser.parse_args(argv)
    os.nice(10)
    stop = threading.Event()
    tally = FloodTally()
    thread = threading.Thread(target=_flood, args=(args.port, args.mib * MIB, stop, tally), daemon=True)
    thread.start()
    emit("READY", {"pid": os.getpid()})
    for words in command_lines():
        if words[0] == "stop":
            break
    stop.set()
    thread.join(30.0)
    emit("RESULT", tally.__dict__)
    return 0


# -- measuring -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Phase:
    """One probed window: no flood, or ``floods`` clients flooding."""

    name: str
    floods: int
    seconds: float
    health_ms: Spread
    #: Probes that failed (no connection, no answer, or not 200).
    health_errors: int
    server_cpu_pct: float
    machine_cores_busy: float
    rss_before_mb: float
    rss_max_mb: float
    #: The peak over the phase (every 50 ms) minus the RSS at its start.
    rss_growth_mb: float
    viewer_kbytes_per_s: float
    flood: FloodTally | None


def _probe(port: int, requests: int, rate: float) -> tuple[list[float], int]:
    """``/health`` ``requests`` times at ``rate`` per second: latencies (ms) and failures."""
    latencies: list[float] = []
    errors = 0
    start = time.perf_counter()
    for i in range(requests):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        t0 = time.perf_counter()
        conn = http.client.HTTPConnection(HOST, port, timeout=10.0)
        try:
            conn.request("GET", "/health")
            response = conn.getresponse()
            response.read()
            ok = response.status == 200
        except (OSError, http.client.HTTPException):
            ok = False
        finally:
            conn.close()
        if ok:
            latencies.append((time.perf_counter() - t0) * 1000.0)
        else:
            errors += 1
    return latencies, errors


class _RssSampler(threading.Thread):
    """The server's RSS every ``step`` seconds while running."""

    def __init__(self, process: psutil.Process, step: float = 0.05) -> None:
        super().__init__(name="rss", daemon=True)
        self.process = process
        self.step = step
        self.peak = process.memory_info().rss
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(self.step):
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except psutil.Error:
                return

    def stop(self) -> int:
        self._halt.set()
        self.join(5.0)
        return int(self.peak)


def _phase(
    name: str,
    server: CliServer,
    viewer: ViewerThread,
    start_floods: Callable[[], list[Child]],
    args: argparse.Namespace,
) -> Phase:
    rss_before = server.ps.memory_info().rss
    sampler = _RssSampler(server.ps)
    sampler.start()
    floods = start_floods()
    if floods:
        time.sleep(WARMUP)
    cpu0, machine0, bytes0 = CpuSample.of(server.ps), MachineSample.now(), viewer.bytes
    latencies, errors = _probe(server.port, args.flood_requests, args.flood_rate)
    cpu1, machine1, bytes1 = CpuSample.of(server.ps), MachineSample.now(), viewer.bytes
    tally: FloodTally | None = None
    if floods:
        tally = FloodTally()
        for child in floods:
            child.send("stop")
        for child in floods:
            tally.add(FloodTally(**child.wait("RESULT", 60.0)))
    rss_peak = sampler.stop()
    seconds = cpu1.wall - cpu0.wall
    phase = Phase(
        name=name,
        floods=len(floods),
        seconds=round(seconds, 2),
        health_ms=Spread.of(latencies),
        health_errors=errors,
        server_cpu_pct=round(cpu1.percent_since(cpu0), 1),
        machine_cores_busy=machine1.cores_busy_since(machine0),
        rss_before_mb=round(rss_before / MIB, 1),
        rss_max_mb=round(rss_peak / MIB, 1),
        rss_growth_mb=round((rss_peak - rss_before) / MIB, 1),
        viewer_kbytes_per_s=round((bytes1 - bytes0) / seconds / 1000.0, 1),
        flood=tally,
    )
    logger.info(
        "%s: /health p50 %s ms p99 %s ms max %s ms, %d errors; RSS +%.1f MB; viewer %.0f kB/s",
        name, phase.health_ms.p50, phase.health_ms.p99, phase.health_ms.max, errors,
        phase.rss_growth_mb, phase.viewer_kbytes_per_s,
    )  # fmt: skip
    return phase


def flood_section(args: argparse.Namespace, logs: Path) -> SectionResult:
    """The quiet phase, then the flood phase, against one server."""
    with ProcessGroup(logs) as group:
        cams = start_cameras(
            group, "flood-cameras", [CameraSpec("cam", 30.0, (640, 480), max_stream_clients=2)]
        )
        url = cams.ready()["cam"]
        server = CliServer(url, [], logs / "flood-server.log")
        viewer = ViewerThread(server.url + "/cameras/cam/stream")
        try:
            viewer.start()
            viewer.wait_bytes(1)

            def start_floods() -> list[Child]:
                argv = module_argv(__name__, str(server.port), str(args.flood_mib))
                floods = [group.start(f"flood-{i}", argv) for i in range(args.flood_clients)]
                for child in floods:
                    child.wait("READY", 60.0)
                return floods

            quiet = _phase("quiet", server, viewer, list, args)
            flooded = _phase("flood", server, viewer, start_floods, args)
        finally:
            viewer.stop()
            server.terminate()
    return _report([quiet, flooded], args)


def _report(phases: list[Phase], args: argparse.Namespace) -> SectionResult:
    quiet, flooded = phases
    targets: list[TargetRow] = []
    p99 = flooded.health_ms.p99
    add_target(
        targets,
        "F1",
        f"/health p99 while {flooded.floods} clients flood {args.flood_mib} MiB headers",
        f"{p99} ms (max {flooded.health_ms.max} ms, {flooded.health_errors} failed of {args.flood_requests}; "
        f"quiet: p99 {quiet.health_ms.p99} ms)",
        f"<= {HEALTH_P99_MS:g} ms, none failed",
        p99 is not None and p99 <= HEALTH_P99_MS and flooded.health_errors == 0,
        f"{args.flood_rate:g} requests/s, a new connection each",
    )
    add_target(
        targets,
        "F2",
        f"server RSS growth while {flooded.floods} clients flood {args.flood_mib} MiB headers",
        f"{flooded.rss_growth_mb} MB (peak {flooded.rss_max_mb} MB)",
        f"<= {RSS_GROWTH_MB:g} MB",
        flooded.rss_growth_mb <= RSS_GROWTH_MB,
        "sampled every 50 ms from the flood's start to its end",
    )
    tally = flooded.flood or FloodTally()
    table = markdown_table(
        ["phase", "floods", "s", "/health p50 ms", "p99 ms", "max ms", "failed", "server CPU %",
         "machine cores", "RSS before MB", "RSS peak MB", "viewer kB/s"],
        [[p.name, p.floods, p.seconds, p.health_ms.p50, p.health_ms.p99, p.health_ms.max, p.health_errors,
          p.server_cpu_pct, p.machine_cores_busy, p.rss_before_mb, p.rss_max_mb, p.viewer_kbytes_per_s]
         for p in phases],
        align="lrrrrrrrrrrr",
    )  # fmt: skip
    per_connection = tally.bytes_sent / max(1, tally.connections) / 1024
    text = [
        "## Header floods",
        "",
        table,
        "",
        f"Flood clients: {tally.connections} connections, {tally.bytes_sent / MIB:.0f} MiB taken by the "
        f"kernel ({per_connection:.0f} KiB per connection; the server reads at most its header limit "
        f"and resets the rest), {tally.completed} whole {args.flood_mib} MiB headers sent; answers "
        f"read: {dict(sorted(tally.answers.items()))}.",
        "",
    ]
    return SectionResult({"phases": phases}, targets, text)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("flood")
    group.add_argument(
        "--flood-requests", type=int, default=200, help="/health probes per phase (default 200)"
    )
    group.add_argument(
        "--flood-rate", type=float, default=20.0, help="/health probes per second (default 20)"
    )
    group.add_argument("--flood-clients", type=int, default=4, help="flooding clients (default 4)")
    group.add_argument("--flood-mib", type=int, default=64, help="MiB of each flooded header (default 64)")


FLOOD = Section("flood", "Header floods", _add_arguments, flood_section)


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
