"""Timing targets of the reliability work, measured against ``espdetect serve`` in a child process.

The tests (tests/server/test_reliability.py) assert the behaviour; this script measures how fast:

* **recovery**: the first frame a viewer gets once the camera is healthy again, after a reboot
  (refused connections), an HTML error page and a camera busy with another client (the source
  waits ``connect_timeout``, then retries with capped backoff). Target: <= 2 s.
* **stall detection**: from the last frame before a silent stall to the server noticing it
  (``stalls`` counter). Target: within the watchdog time (``stall_timeout``, 5 s by default).
* **/health under a viewer storm**: 200 simultaneous viewers against a limit of 5. Target:
  every ``/health`` answer within 100 ms; exactly 5 streams, the rest 503 + Retry-After.
* **slow viewer**: a viewer reading 1 KB/s next to three normal ones. Target: the others keep
  >= 95 % of their frame rate; the slow one is dropped after the viewer timeout.
* **SIGTERM with 20 viewers**: the process is gone within 2 s and the camera connection closed.
* **1000 abrupt viewers** (three rounds): server RSS / fds / asyncio tasks before and after
  (idle both times), with glibc's default allocator behaviour and with ``tune_malloc``.

Writes ``reliability.json`` and ``reliability.md`` to ``--out``.

Usage::

    python -m benchmarks.bench_reliability [--model M] [--repeats N] [--out benchmarks/results/reliability]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import httpx

from benchmarks._harness.report import jsonable, load_average, machine, markdown_table, utc_now, write_json
from benchmarks._harness.server import CliServer
from benchmarks._harness.viewers import Probe, open_response, request, watch
from espdetect.emulator import EmulatorConfig, EmulatorThread, Fault, FaultKind
from espdetect.stats import percentile

logger = logging.getLogger(__name__)


def wait_for(predicate: Callable[[], bool], timeout: float, step: float = 0.01) -> float:
    """Poll ``predicate``; the monotonic time it first held. Raises TimeoutError."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        time.sleep(step)
    raise TimeoutError(f"condition not met within {timeout} s")


def recovered(probe: Probe, healthy: float, timeout: float = 30.0) -> float:
    """Seconds from ``healthy`` (camera fine again) to the probe's next frame."""
    return wait_for(lambda: probe.first_after(healthy) is not None, timeout) - healthy


def all_seeing(probes: list[Probe]) -> Callable[[], bool]:
    return lambda: all(p.times for p in probes)


def stalls_above(client: httpx.Client, count: int) -> Callable[[], bool]:
    return lambda: stats(client)["stalls"] > count


def stats(client: httpx.Client) -> dict[str, Any]:
    cam: dict[str, Any] = client.get("/stats").json()["cameras"]["cam"]
    return cam


class Timing(NamedTuple):
    """How long something took over several trials (seconds or ms, as the key says)."""

    n: int
    min: float
    median: float
    p99: float
    max: float


def summary(values: list[float]) -> Timing:
    """`Timing` of at least one value.

    Example:
        >>> summary([1.0, 2.0, 4.0])
        Timing(n=3, min=1.0, median=2.0, p99=3.96, max=4.0)
    """
    median, p99 = percentile(values, 50), percentile(values, 99)
    assert median is not None and p99 is not None, "expected at least one value"
    return Timing(len(values), round(min(values), 3), median, p99, round(max(values), 3))


class Session:
    """One server process on one emulated camera, with a raw probe viewer when asked."""

    def __init__(
        self, model_args: list[str], extra: list[str], env: dict[str, str], log_dir: Path, name: str
    ) -> None:
        self.camera = EmulatorThread(
            EmulatorConfig(fps=15.0, size=(320, 240), loop_frames=30, prerender=True)
        )
        self.camera.start()
        self.server = CliServer(self.camera.stream_url, [*model_args, *extra], log_dir / f"{name}.log", env)
        self.client = httpx.Client(base_url=self.server.url, timeout=30.0)
        self.closing = threading.Event()

    def probe(self, path: str = "/cameras/cam/stream", *, leave: bool = False) -> Probe:
        """A viewer that stays until the session closes (with ``leave``: closes its stream then)."""
        return Probe(self.server.port, path, self.closing, self.closing if leave else None)

    def close(self) -> None:
        self.closing.set()
        self.client.close()
        self.server.kill()
        self.camera.stop()


def recovery(model_args: list[str], log_dir: Path, repeats: int) -> dict[str, Any]:
    s = Session(model_args, ["--grace-period", "1"], {}, log_dir, "recovery")
    out: dict[str, Any] = {"settings": "defaults: stall_timeout 5 s, connect_timeout 5 s, backoff_max 1 s"}
    try:
        probe = s.probe()
        wait_for(lambda: len(probe.times) >= 10, 30.0)
        reboot, html, stall_detect, stall_recover = [], [], [], []
        for i in range(repeats):
            s.camera.set_faults([Fault(FaultKind.REFUSE, seconds=3.0 + 0.37 * i)])
            s.camera.wait_until(lambda st: st.refusing, timeout=10.0)
            s.camera.wait_until(lambda st: not st.refusing, timeout=30.0)
            back = time.monotonic()
            s.camera.set_faults([])
            reboot.append(recovered(probe, back))

            s.camera.set_faults(
                [Fault(FaultKind.HTML_ERROR, status=503), Fault(FaultKind.DROP_AFTER, frames=0)]
            )
            time.sleep(3.0 + 0.41 * i)
            back = time.monotonic()
            s.camera.set_faults([])
            html.append(recovered(probe, back))

            before = stats(s.client)["stalls"]
            s.camera.set_faults([Fault(FaultKind.STALL)])
            detected = wait_for(stalls_above(s.client, before), 30.0, step=0.05)
            last_frame = max(t for t in list(probe.times) if t <= detected)
            stall_detect.append(detected - last_frame)
            time.sleep(1.0 + 0.5 * i)
            back = time.monotonic()
            s.camera.set_faults([])
            stall_recover.append(recovered(probe, back))
            time.sleep(1.0)
        out["reboot_recovery_s"] = summary(reboot)
        out["html_error_recovery_s"] = summary(html)
        out["stall_detection_s"] = summary(stall_detect)
        out["stall_recovery_s"] = summary(stall_recover)
    finally:
        s.close()
    out["busy_camera_recovery_s"] = busy_camera(model_args, log_dir, repeats)
    return out


def busy_camera(model_args: list[str], log_dir: Path, repeats: int) -> Timing:
    """Another client holds the camera's only stream; it leaves after a while."""
    s = Session(model_args, ["--grace-period", "0.5"], {}, log_dir, "busy")
    results = []
    try:
        for i in range(repeats):
            with httpx.Client(timeout=30.0) as other, other.stream("GET", s.camera.stream_url) as held:
                chunks = held.iter_raw()  # kept: dropping the generator closes the stream
                next(chunks)
                probe = s.probe(leave=True)
                # Leave at different points of the server's connect-timeout / backoff cycle.
                time.sleep(2.0 + 2.3 * i)
                assert not probe.times, "the server got frames from a busy camera"
                held.close()
                left = time.monotonic()
            results.append(recovered(probe, left))
            s.closing.set()
            wait_for(lambda: s.client.get("/health").json()["viewers"] == 0, 30.0)
            s.camera.wait_stream_clients(0, timeout=30.0)
            s.closing = threading.Event()
    finally:
        s.close()
    return summary(results)


async def _storm(port: int, n: int) -> tuple[list[int], list[str], list[asyncio.StreamWriter]]:
    """``n`` viewers at once; each one's status, Retry-After, and its connection (left open)."""

    async def one() -> tuple[int, str, asyncio.StreamWriter]:
        _, writer, head = await open_response(f"http://127.0.0.1:{port}", "/cameras/cam/stream", 60.0)
        return head.status, head.headers.get("retry-after", ""), writer

    results = await asyncio.gather(*(one() for _ in range(n)))
    return [r[0] for r in results], [r[1] for r in results], [r[2] for r in results]


# Polls /health from its own process: in this one, the storm's own work would delay the answers.
_POLLER = """
import http.client, json, sys, time
port, seconds = int(sys.argv[1]), float(sys.argv[2])
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
out = []
end = time.monotonic() + seconds
while time.monotonic() < end:
    start = time.perf_counter()
    conn.request("GET", "/health")
    conn.getresponse().read()
    out.append((time.monotonic(), (time.perf_counter() - start) * 1000.0))
    time.sleep(0.02)
print(json.dumps(out))
"""


def viewer_storm(model_args: list[str], log_dir: Path) -> dict[str, Any]:
    """Two storms against a limit of 5, /health polled from another process throughout.

    ``cold``: 200 viewers at once on an idle server (the first 5 also start the camera
    connection and the model). ``full``: 5 viewers already streaming, then 195 more at once.
    """
    s = Session(model_args, ["--max-viewers", "5", "--max-viewers-total", "5"], {}, log_dir, "storm")
    out: dict[str, Any] = {}
    try:
        for phase, first in (("cold", 0), ("full", 5)):
            poller = subprocess.Popen(
                [sys.executable, "-c", _POLLER, str(s.server.port), "14"], stdout=subprocess.PIPE, text=True
            )
            time.sleep(2.0)

            async def scenario(first: int = first) -> tuple[float, list[int], list[str], int]:
                early = await _storm(s.server.port, first) if first else ([], [], [])
                await asyncio.sleep(3.0 if first else 0.0)
                start = time.monotonic()
                statuses, retries, writers = await _storm(s.server.port, 200 - first)
                await asyncio.sleep(5.0)  # streams running, refused connections kept open
                streaming: int = (await asyncio.to_thread(s.client.get, "/health")).json()["viewers"]
                for writer in [*early[2], *writers]:
                    writer.close()
                return start, [*early[0], *statuses], [*early[1], *retries], streaming

            storm_start, statuses, retries, streaming = asyncio.run(scenario())
            storm_end = time.monotonic()
            polled, _ = poller.communicate(timeout=60)
            samples: list[tuple[float, float]] = [(t, ms) for t, ms in json.loads(polled)]
            during = [ms for t, ms in samples if storm_start <= t <= storm_end]
            out[phase] = {
                "streams_200": statuses.count(200),
                "refused_503": statuses.count(503),
                "retry_after_values": sorted({r for r in retries if r}),
                "viewers_while_held": streaming,
                "health_ms_before": summary([ms for t, ms in samples if t < storm_start]),
                "health_ms_during": summary(during),
                "health_over_100ms": sum(1 for ms in during if ms > 100.0),
                # The slowest answers and when they came, in seconds after the storm began.
                "slowest": [
                    (round(t - storm_start, 2), round(ms, 1))
                    for t, ms in sorted(samples, key=lambda x: -x[1])
                    if storm_start <= t <= storm_end
                ][:5],
            }
            wait_for(lambda: s.client.get("/health").json()["viewers"] == 0, 30.0)
            s.camera.wait_stream_clients(0, timeout=30.0)
    finally:
        s.close()
    return out


def slow_viewer(model_args: list[str], log_dir: Path, window: float) -> dict[str, Any]:
    """Three viewers alone, then with a fourth reading 1 KB/s until the server drops it.

    Each viewer's frames are compared with the frames the camera delivered in the same time
    (``frames_in``), so a slower camera or a busy machine does not count against the server.
    """
    s = Session(model_args, [], {}, log_dir, "slow")
    closing = s.closing
    try:
        fast = [
            s.probe("/cameras/cam/stream"),
            s.probe("/cameras/cam/stream"),
            s.probe("/cameras/cam/detect"),
        ]
        wait_for(lambda: all(len(p.times) >= 10 for p in fast), 60.0)
        time.sleep(2.0)
        start, frames_start = time.monotonic(), stats(s.client)["frames_in"]
        time.sleep(window)
        base_end, frames_base_end = time.monotonic(), stats(s.client)["frames_in"]

        def slow() -> None:
            _, sock = watch(s.server.port, "/cameras/cam/stream", closing.is_set, rate=1024, timeout=10.0)
            sock.close()

        slow_start, frames_slow_start = time.monotonic(), stats(s.client)["frames_in"]
        threading.Thread(target=slow, daemon=True).start()
        before = stats(s.client)["viewer_timeouts"]
        dropped = wait_for(lambda: stats(s.client)["viewer_timeouts"] > before, 120.0, step=0.1)
        frames_dropped = stats(s.client)["frames_in"]
        base_share = [len(p.window(start, base_end)[0]) / (frames_base_end - frames_start) for p in fast]
        slow_share = [
            len(p.window(slow_start, dropped)[0]) / (frames_dropped - frames_slow_start) for p in fast
        ]
        ratios = [b and d / b for d, b in zip(slow_share, base_share, strict=True)]
        return {
            "viewer_timeout_s": 10.0,
            "baseline_fps": [round(len(p.window(start, base_end)[0]) / (base_end - start), 2) for p in fast],
            "fps_with_slow_viewer": [
                round(len(p.window(slow_start, dropped)[0]) / (dropped - slow_start), 2) for p in fast
            ],
            "camera_fps": [
                round((frames_base_end - frames_start) / (base_end - start), 2),
                round((frames_dropped - frames_slow_start) / (dropped - slow_start), 2),
            ],
            "share_of_camera_frames_alone": [round(x, 3) for x in base_share],
            "share_of_camera_frames_with_slow_viewer": [round(x, 3) for x in slow_share],
            "min_ratio": round(min(ratios), 3),
            "slow_viewer_dropped_after_s": round(dropped - slow_start, 2),
        }
    finally:
        s.close()


def sigterm(model_args: list[str], log_dir: Path, repeats: int) -> dict[str, Any]:
    exits = []
    closed = []
    for i in range(repeats):
        s = Session(
            model_args, ["--max-viewers", "20", "--max-viewers-total", "20"], {}, log_dir, f"sigterm{i}"
        )
        try:
            probes = [s.probe("/cameras/cam/stream" if k % 2 else "/cameras/cam/detect") for k in range(20)]
            wait_for(all_seeing(probes), 60.0)
            attached = s.client.get("/health").json()["viewers"]
            s.closing.set()
            exits.append(s.server.terminate())
            try:
                s.camera.wait_stream_clients(0, timeout=10.0)
                closed.append(True)
            except TimeoutError:
                closed.append(False)
            assert attached == 20, attached
        finally:
            s.close()
    return {"viewers_attached": 20, "exit_s": summary(exits), "camera_closed": all(closed)}


async def _abrupt(port: int, i: int) -> None:
    paths = ["/cameras/cam/stream", "/cameras/cam/detect", "/cameras/cam/detections"]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        mode = i % 4
        if mode == 0:
            writer.write(request(paths[i % 3])[:20])
        elif mode in (1, 2):
            writer.write(request(paths[i % 3]))
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30.0)
            if mode == 2 and "detections" not in paths[i % 3]:
                await asyncio.wait_for(reader.readuntil(b"\xff\xd8"), 30.0)
        sock = writer.get_extra_info("socket")
        if i % 2:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.transport.abort() if i % 2 else writer.close()


def abrupt_viewers(model_args: list[str], log_dir: Path, rounds: int = 3) -> dict[str, Any]:
    """``rounds`` x 1000 abrupt viewers, with the default allocator and with ``tune_malloc``."""
    return {
        "default": _abrupt_rounds(model_args, log_dir, rounds, {}),
        "tune_malloc": _abrupt_rounds(model_args, log_dir, rounds, {"ESPDETECT_TUNE_MALLOC": "true"}),
    }


def _abrupt_rounds(model_args: list[str], log_dir: Path, rounds: int, env: dict[str, str]) -> dict[str, Any]:
    s = Session(
        model_args,
        ["--grace-period", "0.5", "--max-viewers", "30", "--max-viewers-total", "30"],
        env,
        log_dir,
        "abrupt",
    )

    def idle() -> dict[str, float]:
        wait_for(lambda: s.client.get("/health").json()["viewers"] == 0, 60.0, step=0.1)
        s.camera.wait_stream_clients(0, timeout=60.0)
        time.sleep(1.0)
        tasks = float(s.client.get("/stats").json()["process"]["tasks"])
        return {**s.server.resources()._asdict(), "tasks": tasks}

    async def batches(count: int, batch: int) -> None:
        for first in range(0, count, batch):
            await asyncio.gather(
                *(_abrupt(s.server.port, i) for i in range(first, min(count, first + batch)))
            )

    try:
        asyncio.run(batches(1000, 50))  # warm-up: the model's first runs, worker threads, pools
        before = idle()
        states = [before]
        took = []
        for _ in range(rounds):
            start = time.perf_counter()
            asyncio.run(batches(1000, 50))
            took.append(time.perf_counter() - start)
            states.append(idle())
        after = states[-1]
        return {
            "connections_per_round": 1000,
            "seconds_per_round": [round(t, 2) for t in took],
            "rss_mb_after_each_round": [round(st["rss_mb"], 1) for st in states],
            "before": {k: round(v, 1) for k, v in before.items() if k != "cpu_percent"},
            "after": {k: round(v, 1) for k, v in after.items() if k != "cpu_percent"},
            "rss_growth_first_round_mb": round(states[1]["rss_mb"] - before["rss_mb"], 2),
            "rss_growth_mb": round(after["rss_mb"] - before["rss_mb"], 2),
        }
    finally:
        s.close()


class Row(NamedTuple):
    """One line of reliability.md."""

    what: str
    target: str
    measured: str
    met: bool


def _recovery_rows(rec: dict[str, Any]) -> list[Row]:
    rows = [
        Row(what, "<= 2 s", f"max {rec[key]['max']} s, median {rec[key]['median']} s", rec[key]["max"] <= 2.0)
        for key, what in (
            ("reboot_recovery_s", "recovery after a reboot (refused connections)"),
            ("html_error_recovery_s", "recovery after HTML error pages"),
            ("busy_camera_recovery_s", "recovery when the other client leaves a busy camera"),
            ("stall_recovery_s", "recovery after a stall ends"),
        )
    ]
    detect = rec["stall_detection_s"]
    # 0.5 s of slack: the watchdog checks twice a second.
    rows.append(
        Row(
            "stall detected after the last frame",
            "<= 5 s (watchdog)",
            f"max {detect['max']} s",
            detect["max"] <= 5.5,
        )
    )
    return rows


def _storm_rows(storm: dict[str, Any]) -> list[Row]:
    rows = []
    for phase, label in (
        ("cold", "200 viewers at once on an idle server"),
        ("full", "195 more on a full one"),
    ):
        during = storm[phase]["health_ms_during"]
        measured = f"max {during['max']} ms, p99 {during['p99']} ms ({during['n']} requests)"
        rows.append(Row(f"/health while {label} (limit 5)", "<= 100 ms", measured, during["max"] <= 100.0))
    cold = storm["cold"]
    rows.append(
        Row(
            "streams / 503 (with Retry-After) of 200 viewers",
            "5 / 195",
            f"{cold['streams_200']} / {cold['refused_503']}, Retry-After {cold['retry_after_values']}",
            cold["streams_200"] == 5 and cold["refused_503"] == 195,
        )
    )
    return rows


def _viewer_rows(slow: dict[str, Any], term: dict[str, Any]) -> list[Row]:
    return [
        Row(
            "others' frames (vs. the camera's) next to a 1 KB/s viewer",
            ">= 95 %",
            f"min {100 * slow['min_ratio']:.1f} %",
            slow["min_ratio"] >= 0.95,
        ),
        Row(
            "1 KB/s viewer dropped",
            "after the viewer timeout (10 s)",
            f"after {slow['slow_viewer_dropped_after_s']} s",
            True,
        ),
        Row(
            "SIGTERM with 20 viewers: process gone",
            "<= 2 s, camera closed",
            f"max {term['exit_s']['max']} s, camera closed: {term['camera_closed']}",
            term["exit_s"]["max"] <= 2.0 and term["camera_closed"],
        ),
    ]


def _abrupt_row(ab: dict[str, Any], label: str) -> Row:
    before, after = ab["before"], ab["after"]
    measured = (
        f"first 1000: {ab['rss_growth_first_round_mb']} MB, all: {ab['rss_growth_mb']} MB "
        f"(RSS after each: {ab['rss_mb_after_each_round']}); "
        f"fds {before['fds']:.0f} -> {after['fds']:.0f}; "
        f"tasks {before['tasks']:.0f} -> {after['tasks']:.0f}"
    )
    met = (
        ab["rss_growth_first_round_mb"] <= 20.0
        and ab["rss_growth_mb"] <= 20.0
        and after["fds"] <= before["fds"]
        and after["tasks"] <= before["tasks"]
    )
    what = f"RSS growth over {len(ab['seconds_per_round'])} x 1000 abrupt viewers ({label})"
    return Row(what, "<= 20 MB, fds and tasks back", measured, met)


def _targets(r: dict[str, Any]) -> list[Row]:
    """The rows of reliability.md, from the JSON-ready results."""
    return [
        *_recovery_rows(r["recovery"]),
        *_storm_rows(r["storm"]),
        *_viewer_rows(r["slow"], r["sigterm"]),
        _abrupt_row(r["abrupt"]["default"], "default allocator"),
        _abrupt_row(r["abrupt"]["tune_malloc"], "tune_malloc = true"),
    ]


def markdown(r: dict[str, Any]) -> str:
    rows = [[row.what, row.target, row.measured, "yes" if row.met else "NO"] for row in _targets(r)]
    lines = [
        "# Reliability timings",
        "",
        f"{r['when']} on {r['machine']}; model {r['model']}; load average {r['load_before']} before, "
        f"{r['load_after']} after (other jobs share this machine). Raw figures: reliability.json.",
        "",
        markdown_table(["what", "target", "measured", "met"], rows),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model",
        default=os.environ.get("ESPDETECT_MODEL"),
        help="weights (default $ESPDETECT_MODEL; else an untrained yolov8n.yaml at 160)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--slow-window", type=float, default=15.0, help="seconds of baseline fps before the slow viewer"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/reliability"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    model_args = ["--model", args.model] if args.model else ["--model", "yolov8n.yaml", "--imgsz", "160"]
    log_dir = Path(tempfile.mkdtemp(prefix="espdetect-reliability-"))
    result: dict[str, Any] = {
        "when": utc_now(),
        "machine": machine(),
        "model": Path(args.model).name if args.model else "yolov8n.yaml (untrained) at 160",
        "load_before": load_average(),
    }
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("recovery", lambda: recovery(model_args, log_dir, args.repeats)),
        ("storm", lambda: viewer_storm(model_args, log_dir)),
        ("slow", lambda: slow_viewer(model_args, log_dir, args.slow_window)),
        ("sigterm", lambda: sigterm(model_args, log_dir, args.repeats)),
        ("abrupt", lambda: abrupt_viewers(model_args, log_dir)),
    ]
    for name, step in steps:
        logger.info("%s ...", name)
        result[name] = jsonable(step())
        logger.info("%s: %s", name, json.dumps(result[name]))
    result["load_after"] = load_average()
    write_json(args.out / "reliability.json", result)
    (args.out / "reliability.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
