"""Soak test: ``espdetect serve`` with the real model, churning viewers and camera faults, for minutes.

What runs:

* an emulated ESP32-CAM (in this process, ``EmulatorThread``);
* the server as a separate process (``espdetect serve`` with ``--model`` / ``$ESPDETECT_MODEL``),
  so its RSS, file descriptors and threads are its own;
* two *probe* viewers that stay connected the whole time (raw and annotated MJPEG): their frame
  times give fps, frame gaps and latency (receive time minus the part's X-Timestamp, which is
  the server's arrival time of the camera frame);
* ``--viewers`` churning viewers (annotated, raw or SSE at random) that each watch for 2-8 s,
  then leave (some with RST, some mid-frame) and come back at once;
* every ``--fault-every`` seconds a camera fault from the cycle stall, reboot (refused
  connections), corrupt, truncated, oversize, wrong Content-Length, HTML error page; outages
  last ``--outage`` seconds (the reboot its own 5 s), damaged-frame faults ``--damage`` seconds.
  After each, the recovery time is the first probe frame after the camera is healthy again.

Every ``--sample-every`` seconds one row goes to ``soak.csv``: server RSS, fds, threads,
asyncio tasks (from ``/stats``), viewers, camera connections, fps (server and probe), latency
(probe p50/p99 over the interval), ``/health`` answer time, counters. At the end the server gets
SIGTERM with the viewers attached (exit time measured). Writes ``soak.csv``, ``soak.png`` and
``summary.json`` to ``--out``. Flat lines are the expected result.

Usage::

    python -m benchmarks.soak --minutes 10 [--model M] [--out benchmarks/results/soak]
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import logging
import os
import random
import re
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks._harness.report import jsonable, load_average, machine, pyplot, utc_now, write_json
from benchmarks._harness.server import CliServer
from benchmarks._harness.viewers import Probe, reset, watch
from espdetect.emulator import EmulatorConfig, EmulatorThread, Fault, FaultKind
from espdetect.stats import percentile

logger = logging.getLogger(__name__)


@dataclass
class ChurnStats:
    sessions: int = 0
    rejected: int = 0
    errors: int = 0
    frames: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def churn(
    port: int,
    closing: threading.Event,
    rng: random.Random,
    stats: ChurnStats,
    churn_s: tuple[float, float],
) -> None:
    """One viewer slot: watch for a random while, leave abruptly or politely, come back.

    Once ``closing`` is set the slot keeps its current session (the server is about to get
    SIGTERM with viewers attached) and does not come back.
    """
    kinds = ["/cameras/cam/detect", "/cameras/cam/stream", "/cameras/cam/detections"]
    while not closing.is_set():
        path = rng.choices(kinds, weights=[5, 3, 2])[0]
        deadline = time.monotonic() + rng.uniform(*churn_s)

        def over(deadline: float = deadline) -> bool:
            return time.monotonic() >= deadline and not closing.is_set()

        try:
            seen, sock = watch(port, path, over)
        except OSError:
            if not closing.is_set():
                with stats.lock:
                    stats.errors += 1
            closing.wait(0.5)
            continue
        ending = rng.random()
        if ending < 0.4:
            reset(sock)
        else:
            sock.close()
        with stats.lock:
            stats.sessions += 1
            stats.frames += seen.parts
            if seen.status == 503:
                stats.rejected += 1
        if seen.status == 503:
            closing.wait(1.0)


# -- faults --------------------------------------------------------------------------------------


@dataclass
class FaultRun:
    name: str
    started: float
    #: When the camera was healthy again (faults cleared / reboot over).
    healthy: float = 0.0
    recovery_s: float | None = None
    max_gap_s: float = 0.0
    probe_fps: float = 0.0


def fault_cycle(outage: float, damage: float) -> list[tuple[str, list[Fault], float]]:
    return [
        ("stall", [Fault(FaultKind.STALL)], outage),
        ("reboot", [Fault(FaultKind.REFUSE, seconds=5.0)], 0.0),
        ("corrupt", [Fault(FaultKind.CORRUPT_JPEG, frames=3)], damage),
        ("truncated", [Fault(FaultKind.TRUNCATED_JPEG, frames=3)], damage),
        ("oversize", [Fault(FaultKind.OVERSIZE, frames=10)], damage),
        ("wrong_length", [Fault(FaultKind.WRONG_LENGTH, frames=4, delta=-500)], damage),
        (
            "html_error",
            [Fault(FaultKind.HTML_ERROR, status=503), Fault(FaultKind.DROP_AFTER, frames=0)],
            outage,
        ),
    ]


class FaultInjector(threading.Thread):
    """Every ``every`` seconds the next fault of the cycle, until ``stop`` or 15 s before ``end``."""

    def __init__(
        self, camera: EmulatorThread, cycle: list[tuple[str, list[Fault], float]], every: float,
        end: float, stop: threading.Event,
    ) -> None:  # fmt: skip
        super().__init__(name="faults", daemon=True)
        self.camera, self.cycle, self.every, self.end, self.stop = camera, cycle, every, end, stop
        self.runs: list[FaultRun] = []
        #: The fault active now ("" when none), for the sample rows.
        self.current = ""

    def run(self) -> None:
        next_fault = time.monotonic() + self.every
        for index in itertools.count():
            if self.stop.wait(max(0.0, next_fault - time.monotonic())) or time.monotonic() > self.end - 15.0:
                return
            name, faults, hold = self.cycle[index % len(self.cycle)]
            self.current = name
            logger.info("fault: %s", name)
            self.runs.append(self.inject(name, faults, hold))
            self.current = ""
            next_fault += self.every

    def inject(self, name: str, faults: list[Fault], hold: float) -> FaultRun:
        run = FaultRun(name, time.monotonic())
        self.camera.set_faults(faults)
        if name == "reboot":
            self.camera.wait_until(lambda s: s.refusing, timeout=10.0)
            self.camera.wait_until(lambda s: not s.refusing, timeout=60.0)
        else:
            self.stop.wait(hold)
        self.camera.set_faults([])
        run.healthy = time.monotonic()
        return run


# -- sampling and output ------------------------------------------------------------------------


def max_gap(times: list[float], start: float, end: float) -> float:
    points = [start, *[t for t in times if start <= t <= end], end]
    return max(b - a for a, b in itertools.pairwise(points)) if len(points) > 1 else end - start


COLUMNS = [
    "t_s", "rss_mb", "fds", "threads", "tasks", "cpu_percent", "viewers", "camera_connections",
    "fps_in", "fps_detect", "fps_out", "fps_sent", "probe_raw_fps", "probe_annotated_fps",
    "latency_raw_p50_ms", "latency_raw_p99_ms", "latency_annotated_p50_ms", "latency_annotated_p99_ms",
    "health_ms", "stats_ms", "reconnects", "stalls", "corrupt", "oversize", "length_mismatch",
    "connect_failures", "viewers_served", "viewers_rejected", "viewer_timeouts", "fault",
]  # fmt: skip
_COUNTERS = (
    "reconnects", "stalls", "corrupt", "oversize", "length_mismatch", "connect_failures", "viewers_served",
    "viewers_rejected", "viewer_timeouts",
)  # fmt: skip


def sample(
    t0: float,
    last: float,
    server: CliServer,
    client: httpx.Client,
    camera: EmulatorThread,
    probes: dict[str, Probe],
    fault: str,
) -> dict[str, Any]:
    """One row of soak.csv (see `COLUMNS`): the server's resources and counters, the probes' figures."""
    now = time.monotonic()
    started = time.perf_counter()
    health = client.get("/health")
    health_ms = (time.perf_counter() - started) * 1000.0
    health.raise_for_status()
    started = time.perf_counter()
    stats = client.get("/stats").json()
    stats_ms = (time.perf_counter() - started) * 1000.0
    cam = stats["cameras"]["cam"]
    row: dict[str, Any] = {
        "t_s": round(now - t0, 1),
        **{k: round(v, 1) for k, v in server.resources()._asdict().items()},
        "tasks": stats["process"]["tasks"],
        "viewers": stats["viewers_total"],
        "camera_connections": camera.stats.stream_clients,
    }
    for key in ("in", "detect", "out", "sent"):
        row[f"fps_{key}"] = cam["fps"][key]
    for name, probe in probes.items():
        times, latencies = probe.window(last, now)
        row[f"probe_{name}_fps"] = round(len(times) / max(1e-6, now - last), 2)
        row[f"latency_{name}_p50_ms"] = percentile(latencies, 50, digits=1)
        row[f"latency_{name}_p99_ms"] = percentile(latencies, 99, digits=1)
    row["health_ms"] = round(health_ms, 2)
    row["stats_ms"] = round(stats_ms, 2)
    row.update({key: cam[key] for key in _COUNTERS})
    row["fault"] = fault
    return row


_PANELS: list[tuple[str, list[tuple[str, str]]]] = [
    ("server RSS (MB)", [("rss_mb", "RSS")]),
    ("fds / threads / asyncio tasks", [("fds", "fds"), ("threads", "threads"), ("tasks", "tasks")]),
    ("fps", [
        ("fps_in", "camera in"), ("fps_detect", "detected"), ("fps_out", "annotated out"),
        ("probe_raw_fps", "raw probe"), ("probe_annotated_fps", "annotated probe"),
    ]),
    ("probe latency (ms)", [
        ("latency_raw_p50_ms", "raw p50"), ("latency_raw_p99_ms", "raw p99"),
        ("latency_annotated_p50_ms", "annotated p50"), ("latency_annotated_p99_ms", "annotated p99"),
    ]),
    ("viewers / camera connections", [("viewers", "viewers"), ("camera_connections", "camera")]),
    ("/health answer time (ms)", [("health_ms", "/health")]),
]  # fmt: skip


def plot(rows: list[dict[str, Any]], faults: list[FaultRun], t0: float, path: Path) -> None:
    plt = pyplot()
    t = [r["t_s"] / 60.0 for r in rows]
    fig, axes = plt.subplots(3, 2, figsize=(13, 10), sharex=True)
    for ax, (title, series) in zip(axes.flat, _PANELS, strict=True):
        for key, label in series:
            ax.plot(t, [r[key] if r[key] is not None else float("nan") for r in rows], label=label, lw=1.2)
        for run in faults:
            ax.axvspan((run.started - t0) / 60.0, (run.healthy - t0) / 60.0, color="tab:red", alpha=0.12)
        ax.set_title(title, fontsize=10)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    for ax in axes[2]:
        ax.set_xlabel("minutes (red: camera fault active)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def slope_per_hour(rows: list[dict[str, Any]], key: str) -> float | None:
    half = rows[len(rows) // 2 :]
    if len(half) < 3:
        return None
    x = np.array([r["t_s"] for r in half]) / 3600.0
    y = np.array([r[key] for r in half], dtype=float)
    return round(float(np.polyfit(x, y, 1)[0]), 2)


# -- main ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="run time (default 10)")
    parser.add_argument(
        "--model", default=os.environ.get("ESPDETECT_MODEL"), help="weights (default $ESPDETECT_MODEL)"
    )
    parser.add_argument("--viewers", type=int, default=20, help="churning viewers (default 20)")
    parser.add_argument("--churn", type=float, nargs=2, default=(2.0, 8.0), metavar=("MIN", "MAX"),
                        help="seconds each viewing session lasts (default 2 8)")  # fmt: skip
    parser.add_argument("--fault-every", type=float, default=60.0, help="seconds between faults (default 60)")
    parser.add_argument("--outage", type=float, default=10.0, help="seconds a stall / error page lasts (10)")
    parser.add_argument("--damage", type=float, default=20.0, help="seconds damaged-frame faults last (20)")
    parser.add_argument("--sample-every", type=float, default=5.0, help="seconds between samples (5)")
    parser.add_argument("--fps", type=float, default=15.0, help="camera frame rate (15)")
    parser.add_argument("--size", default="320x240", help="camera frame size (320x240, the firmware default)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/soak"), help="output folder")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--tune-malloc",
        action="store_true",
        help="run the server with tune_malloc (glibc allocator settings)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per sample request otherwise
    if not args.model:
        print("soak: needs --model or $ESPDETECT_MODEL (real weights)", file=sys.stderr)
        return 2
    width, height = (int(v) for v in args.size.split("x"))
    args.out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    log_dir = Path(tempfile.mkdtemp(prefix="espdetect-soak-"))
    config = EmulatorConfig(fps=args.fps, size=(width, height), loop_frames=60, prerender=True)
    with EmulatorThread(config) as camera:
        server = CliServer(
            camera.stream_url,
            ["--model", args.model, "--max-viewers", str(args.viewers + 10), "--max-viewers-total",
             str(args.viewers + 10), "--grace-period", "2"],
            log_dir / "server.log",
            {"ESPDETECT_TUNE_MALLOC": "true"} if args.tune_malloc else None,
        )  # fmt: skip
        try:
            return run(args, rng, camera, server, log_dir)
        finally:
            server.kill()


def _start_churn(
    args: argparse.Namespace, rng: random.Random, port: int, stop: threading.Event
) -> tuple[ChurnStats, list[threading.Thread]]:
    churn_stats = ChurnStats()
    churn_s = (args.churn[0], args.churn[1])
    churners = [
        threading.Thread(
            target=churn, args=(port, stop, random.Random(rng.random()), churn_stats, churn_s), daemon=True
        )
        for _ in range(args.viewers)
    ]
    for thread in churners:
        thread.start()
    return churn_stats, churners


def _sample_until(
    args: argparse.Namespace, end: float, t0: float, server: CliServer, client: httpx.Client,
    camera: EmulatorThread, probes: dict[str, Probe], faults: FaultInjector,
) -> list[dict[str, Any]]:  # fmt: skip
    """A row every ``--sample-every`` seconds until ``end``, each written to soak.csv at once."""
    rows: list[dict[str, Any]] = []
    with (args.out / "soak.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        last = t0
        while time.monotonic() < end:
            time.sleep(max(0.0, min(args.sample_every, end - time.monotonic())))
            row = sample(t0, last, server, client, camera, probes, faults.current)
            last = time.monotonic()
            rows.append(row)
            writer.writerow(row)
            f.flush()
            logger.info("t=%5.0fs %s", row["t_s"], _progress(row))
    return rows


def _recovery(faults: list[FaultRun], probe: Probe) -> None:
    """Each fault's recovery: the first raw-probe frame once the camera is healthy again."""
    for fault in faults:
        first = probe.first_after(fault.healthy)
        fault.recovery_s = None if first is None else round(first - fault.healthy, 3)
        fault.max_gap_s = round(max_gap(probe.times, fault.started, fault.healthy + 5.0), 3)
        times, _ = probe.window(fault.started, fault.healthy)
        fault.probe_fps = round(len(times) / max(1e-6, fault.healthy - fault.started), 2)


@dataclass(frozen=True)
class Sigterm:
    viewers_attached: int
    exit_s: float
    camera_closed: bool


def _sigterm(server: CliServer, client: httpx.Client, camera: EmulatorThread) -> Sigterm:
    """SIGTERM with the viewers still attached (they stop coming back, but stay until the end)."""
    viewers_at_exit = client.get("/health").json()["viewers"]
    exit_s = server.terminate()
    try:
        camera.wait_stream_clients(0, timeout=10.0)
    except TimeoutError:
        return Sigterm(viewers_at_exit, round(exit_s, 3), False)
    return Sigterm(viewers_at_exit, round(exit_s, 3), True)


def run(
    args: argparse.Namespace, rng: random.Random, camera: EmulatorThread, server: CliServer, log_dir: Path
) -> int:
    client = httpx.Client(base_url=server.url, timeout=30.0)
    idle_start = {**server.resources()._asdict(), "tasks": client.get("/stats").json()["process"]["tasks"]}
    stop = threading.Event()
    probes = {
        "raw": Probe(server.port, "/cameras/cam/stream", stop),
        "annotated": Probe(server.port, "/cameras/cam/detect", stop),
    }
    churn_stats, churners = _start_churn(args, rng, server.port, stop)
    t0 = time.monotonic()
    end = t0 + args.minutes * 60.0
    faults = FaultInjector(camera, fault_cycle(args.outage, args.damage), args.fault_every, end, stop)
    faults.start()
    rows = _sample_until(args, end, t0, server, client, camera, probes, faults)
    _recovery(faults.runs, probes["raw"])
    stop.set()
    sigterm = _sigterm(server, client, camera)
    for thread in [*churners, faults, *(p.thread for p in probes.values())]:
        thread.join(10.0)
    client.close()
    plot(rows, faults.runs, t0, args.out / "soak.png")
    summary = summarize(args, rows, faults.runs, probes, churn_stats, idle_start, sigterm, log_dir)
    write_json(args.out / "summary.json", summary)
    keys = ("start", "end", "drift_per_hour", "latency_ms", "recovery_s", "sigterm")
    print(json.dumps(jsonable({k: summary[k] for k in keys}), indent=2))
    return 0


def _stats(values: list[float]) -> dict[str, float | None]:
    return {
        "p50": percentile(values, 50, digits=1),
        "p99": percentile(values, 99, digits=1),
        "max": percentile(values, 100, digits=1),
    }


def _progress(row: dict[str, Any]) -> str:
    return (
        f"rss={row['rss_mb']:.1f}MB fds={row['fds']:.0f} tasks={row['tasks']} viewers={row['viewers']} "
        f"fps in/out={row['fps_in']:.1f}/{row['fps_out']:.1f} "
        f"probes raw/annotated={row['probe_raw_fps']:.1f}/{row['probe_annotated_fps']:.1f} "
        f"health={row['health_ms']:.1f}ms {row['fault']}"
    )


_KEEP = (
    "rss_mb", "fds", "threads", "tasks", "viewers", "fps_in", "fps_detect", "fps_out", "probe_raw_fps",
    "probe_annotated_fps",
)  # fmt: skip


def _server_log(log_dir: Path) -> dict[str, Any]:
    log = (log_dir / "server.log").read_text(errors="replace").splitlines()
    warnings = [line for line in log if " WARNING " in line or " ERROR " in line]
    distinct = sorted({re.sub(r"\d+(\.\d+)?", "N", w.split(": ", 1)[-1]) for w in warnings})
    return {"lines": len(log), "warnings_and_errors": len(warnings), "distinct_warnings": distinct[:30]}


def summarize(
    args: argparse.Namespace,
    rows: list[dict[str, Any]],
    faults: list[FaultRun],
    probes: dict[str, Probe],
    churned: ChurnStats,
    idle_start: dict[str, float],
    sigterm: Sigterm,
    log_dir: Path,
) -> dict[str, Any]:
    # One literal: the summary.json document, key by key (it is long, not complicated).
    first, last = rows[min(1, len(rows) - 1)], rows[-1]
    quiet = [r for r in rows if not r["fault"]]
    return {
        "when": utc_now(),
        "machine": machine(),
        "load_average_at_end": load_average(),
        "settings": {
            "minutes": args.minutes,
            "viewers": args.viewers,
            "churn_s": list(args.churn),
            "fault_every_s": args.fault_every,
            "camera": f"{args.size} at {args.fps} fps",
            "model": Path(args.model).name,
            "tune_malloc": args.tune_malloc,
        },
        "idle_before": {k: round(v, 1) for k, v in idle_start.items()},
        "start": {k: first[k] for k in _KEEP},
        "end": {k: last[k] for k in _KEEP},
        "drift_per_hour": {k: slope_per_hour(rows, k) for k in ("rss_mb", "fds", "threads", "tasks")},
        "fps_outside_faults": {
            k: round(float(np.mean([r[k] for r in quiet])), 2) if quiet else None
            for k in ("fps_in", "fps_detect", "fps_out", "probe_raw_fps", "probe_annotated_fps")
        },
        "latency_ms": {
            "raw": _stats(probes["raw"].latencies),
            "annotated": _stats(probes["annotated"].latencies),
        },
        "health_ms": _stats([r["health_ms"] for r in rows]),
        "recovery_s": {f"{i}:{f.name}": f.recovery_s for i, f in enumerate(faults)},
        "faults": [
            {
                "name": f.name,
                "held_s": round(f.healthy - f.started, 2),
                "recovery_s": f.recovery_s,
                "max_frame_gap_s": f.max_gap_s,
                "probe_fps_during": f.probe_fps,
            }
            for f in faults
        ],
        "counters_at_end": {k: last[k] for k in _COUNTERS},
        "churn": {
            "sessions": churned.sessions,
            "frames": churned.frames,
            "rejected_503": churned.rejected,
            "connect_errors": churned.errors,
        },
        "probe_reconnects": {name: p.reconnects for name, p in probes.items()},
        "sigterm": sigterm,
        "server_log": _server_log(log_dir),
    }


if __name__ == "__main__":
    sys.exit(main())
