"""Events benchmark (the events issue's "done when"): MQTT latency, one event per visit, a broker
outage, a crash, and what events cost the server.

Everything is real and on this machine: emulated ESP32-CAMs on the yard scene (people walk in,
stand, leave, on a timeline) in a child process, the espdetect server in another with the real
model (``$ESPDETECT_MODEL``), Mosquitto, and an MQTT subscriber (aiomqtt) in this process, which
shares the server's clock: a record's ``best_time`` and ``end_time`` are frame arrival times
(Unix seconds) taken by the server, and the subscriber notes when each record reached it.

1. **latency**: one camera (VGA, 15 fps), a person who enters, stands still for ``--stand`` s
   (60) and leaves; then two people crossing. Start record received minus the arrival of the
   frame that completed the debounce (``best_time`` of the start record), against inference p99
   (``/stats``) + 250 ms; end record received minus the last sighting (``end_time``), against
   ``end_timeout`` (3 s here) + 1 s; and the person standing still must be exactly one event.
2. **outage**: two cameras with a short timeline; the broker stopped for at least 30 s while at
   least 5 events start; after it returns, every record must reach the subscriber (a persistent
   session, so nothing is lost on its side) and the store must hold each event once.
3. **crash**: ``espdetect serve`` killed with SIGKILL during events, then restarted on the same
   data directory: finished events listed with readable pictures; ``PRAGMA integrity_check``.
4. **cost**: the server with events off and on (MQTT on), one annotated viewer of a yard with two
   visits every ~20 s, in alternating
   windows (A B B A ...): server CPU, frame-to-viewer latency p50/p95 and detections/s, as
   on/off ratios with a t-interval over the pairs.

Usage::

    python -m benchmarks.bench_events --out benchmarks/results/events [--quick] [--only 1,2,3,4]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import platform
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import psutil
import simplejpeg

from benchmarks._harness.procs import Child, CpuSample, MachineSample, ProcessGroup
from benchmarks._harness.report import utc_now, versions, write_json
from benchmarks._harness.server import CameraSpec, CliServer, start_cameras, start_server
from benchmarks._harness.viewers import Viewer
from tests.mosquitto import Mosquitto, mosquitto_binary

logger = logging.getLogger(__name__)

VGA = (640, 480)
#: Seconds without a sighting that end an event here: shorter than the yard's 4-s gap between the
#: standing visit and the crossing, so that they are two events (the default 5 s joins them).
END_TIMEOUT = 3.0
START_MARGIN_MS = 250.0
END_MARGIN_S = 1.0


# -- the subscriber -------------------------------------------------------------------------


@dataclass
class Received:
    """One event record as the subscriber got it."""

    t: float
    record: dict[str, Any]


@dataclass
class Subscriber:
    """An MQTT client recording every event record (a persistent session: QoS 1, no clean start)."""

    url: str
    topic: str = "espdetect/+/events"
    client_id: str = "bench-events-subscriber"
    records: list[Received] = field(default_factory=list)
    connects: int = 0
    subscribed: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        host, port = self.url.removeprefix("mqtt://").rsplit(":", 1)
        while True:
            try:
                async with aiomqtt.Client(
                    host, int(port), identifier=self.client_id, clean_session=False
                ) as client:
                    self.connects += 1
                    await client.subscribe(self.topic, qos=1)
                    self.subscribed.set()
                    async for message in client.messages:
                        payload = message.payload
                        assert isinstance(payload, bytes | bytearray)
                        self.records.append(Received(time.time(), json.loads(payload)))
            except aiomqtt.MqttError:
                await asyncio.sleep(0.2)  # the broker is away: try again

    def of(self, kind: str) -> list[Received]:
        return [r for r in self.records if r.record["type"] == kind]


@contextlib.asynccontextmanager
async def subscribed(url: str, client_id: str) -> AsyncIterator[Subscriber]:
    sub = Subscriber(url, client_id=client_id)
    task = asyncio.create_task(sub.run())
    try:
        await asyncio.wait_for(sub.subscribed.wait(), 30)
        yield sub
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# -- helpers --------------------------------------------------------------------------------


def t_interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and 95 % t-interval of ``values`` (small n: Student's t, not a bootstrap)."""
    t95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, math.nan, math.nan
    half = t95.get(len(values) - 1, 2.0) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, mean - half, mean + half


async def get_json(url: str, path: str, **params: Any) -> Any:
    async with httpx.AsyncClient(base_url=url, timeout=30.0) as client:
        response = await client.get(path, params=params)
        response.raise_for_status()
        return response.json()


async def wait_for(predicate: Any, timeout: float, what: str) -> float:
    """Await until ``predicate()`` (sync) holds; the seconds it took. Raises TimeoutError."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.1)
    return time.monotonic() - start


@contextlib.contextmanager
def broker(folder: Path) -> Iterator[Mosquitto]:
    folder.mkdir(parents=True, exist_ok=True)
    mq = Mosquitto(folder, persistence=True)
    mq.start()
    try:
        yield mq
    finally:
        mq.stop()


def server_settings(camera_urls: dict[str, str], data_dir: Path, **extra: Any) -> dict[str, Any]:
    return {
        "cameras": [f"{name}={url}" for name, url in camera_urls.items()],
        "model": os.environ["ESPDETECT_MODEL"],
        "data_dir": str(data_dir),
        **extra,
    }


# -- 1. latency and the person standing still ---------------------------------------------


async def latency_section(group: ProcessGroup, work: Path, stand: float) -> dict[str, Any]:
    cams = start_cameras(
        group,
        "yard-camera",
        [CameraSpec("door", 15.0, VGA, scene="yard", still_seconds=5.0, stand_seconds=stand)],
    )
    urls = cams.ready()
    with broker(work / "broker-latency") as mq:
        async with subscribed(mq.url, "bench-latency") as sub:
            settings = server_settings(urls, work / "data-latency", mqtt_url=mq.url, end_timeout=END_TIMEOUT)
            server = start_server(group, "server-latency", settings)
            url = server.wait("READY", 600.0)["url"]
            # One loop of the timeline: the standing visit, then the crossing (two ends).
            loop = 5.0 + 2.5 + stand + 3.0 + 4.0 + 6.0 + 3.0
            await wait_for(lambda: len(sub.of("end")) >= 2, loop + 60.0, "two events to end")
            stats = (await get_json(url, "/stats"))["cameras"]["door"]
            stored = (await get_json(url, "/events", limit=100))["events"]
            group.stop(server)
    group.stop(cams)
    starts = [(r.t - r.record["best_time"]) * 1000.0 for r in sub.of("start")]
    ends = [r.t - r.record["end_time"] for r in sub.of("end")]
    inference_p99 = stats["inference_ms"]["p99"]
    detect_p99 = stats["detect_ms"]["p99"]
    first = sorted(stored, key=lambda e: e["start_time"])[0]
    standing_events = [
        e
        for e in stored
        if e["start_time"] < first["end_time"] and (e["end_time"] or math.inf) > first["start_time"]
    ]
    return {
        "camera": {"size": VGA, "fps": 15.0, "scene": "yard", "stand_seconds": stand},
        "inference_ms": stats["inference_ms"],
        "detect_ms": stats["detect_ms"],
        "start_latency_ms": [round(v, 1) for v in starts],
        "start_target_ms": round(inference_p99 + START_MARGIN_MS, 1),
        "start_within_target": all(v <= inference_p99 + START_MARGIN_MS for v in starts),
        "start_minus_detect_p99_ms": [round(v - detect_p99, 1) for v in starts],
        "end_after_last_sighting_s": [round(v, 3) for v in ends],
        "end_target_s": END_TIMEOUT + END_MARGIN_S,
        "end_within_target": all(v <= END_TIMEOUT + END_MARGIN_S for v in ends),
        "first_visit_duration_s": round(first["end_time"] - first["start_time"], 2),
        "events_overlapping_the_standing_visit": len(standing_events),
        "events_stored": len(stored),
        "records_received": len(sub.records),
    }


# -- 2. the broker away while events happen --------------------------------------------------


async def outage_section(group: ProcessGroup, work: Path, down: float) -> dict[str, Any]:
    specs = [
        CameraSpec("gate", 10.0, (320, 240), scene="yard", still_seconds=1.0, stand_seconds=1.0),
        CameraSpec("yard", 10.0, (320, 240), scene="yard", still_seconds=6.0, stand_seconds=1.0),
    ]
    cams = start_cameras(group, "outage-cameras", specs)
    urls = cams.ready()
    with broker(work / "broker-outage") as mq:
        async with subscribed(mq.url, "bench-outage") as sub:
            settings = server_settings(
                urls, work / "data-outage", mqtt_url=mq.url, end_timeout=1.5, min_frames=2
            )
            server = start_server(group, "server-outage", settings)
            url = server.wait("READY", 600.0)["url"]
            await wait_for(lambda: len(sub.of("end")) >= 1, 120.0, "a first event")
            before_ids = {r.record["id"] for r in sub.records}
            stopped = time.time()
            mq.stop()
            started_while_down: list[str] = []

            async def count_started() -> int:
                events = (await get_json(url, "/events", after=stopped, limit=1000))["events"]
                started_while_down[:] = [e["id"] for e in events]
                return len(events)

            while time.time() - stopped < down or await count_started() < 5:
                await asyncio.sleep(1.0)
                if time.time() - stopped > down + 120.0:
                    break
            await count_started()
            mq.start()
            back = time.time()
            # Everything that started while it was away, ended too, then every record delivered.
            await asyncio.sleep(10.0)
            stored = (await get_json(url, "/events", after=stopped - 60.0, limit=1000))["events"]
            expected = {e["id"] for e in stored if e["start_time"] >= stopped} | set(started_while_down)
            ended = {e["id"] for e in stored if e["end_time"] is not None}

            def delivered() -> bool:
                got = {r.record["id"] for r in sub.of("start")}
                got_end = {r.record["id"] for r in sub.of("end")}
                return expected <= got and (expected & ended) <= got_end

            took = await wait_for(delivered, 120.0, "the records held back")
            mqtt_stats = (await get_json(url, "/stats"))["events"]["sinks"]["mqtt"]
            stored = (await get_json(url, "/events", after=stopped - 60.0, limit=1000))["events"]
            group.stop(server)
    group.stop(cams)
    stored_ids = [e["id"] for e in stored]

    # Records made while the broker was away (a start or update at its best_time, an end once
    # end_timeout had passed after the last sighting) reached the subscriber this long after it
    # returned: the sink's reconnect back-off, then its outbox in order.
    def made_at(record: dict[str, Any]) -> float:
        if record["type"] == "end":
            return float(record["end_time"]) + 1.5
        return float(record["best_time"])

    held = [r.t - back for r in sub.records if made_at(r.record) < back and r.t >= back]
    sink_reconnected = min((r.t - back for r in sub.records if r.t >= back), default=None)
    received_starts = [r.record["id"] for r in sub.of("start") if r.record["id"] in expected]
    return {
        "broker_down_s": round(back - stopped, 1),
        "events_started_while_down": len(set(started_while_down)),
        "events_expected": len(expected),
        "all_delivered": True,
        "held_back_records": len(held),
        "held_back_records_arrived_within_s": round(max(held), 2) if held else None,
        "first_record_after_return_s": round(sink_reconnected, 2) if sink_reconnected is not None else None,
        "waited_for_delivery_s": round(took + 10.0, 1),
        "start_records_received": len(received_starts),
        "duplicate_start_records": len(received_starts) - len(set(received_starts)),
        "stored_ids_unique": len(stored_ids) == len(set(stored_ids)),
        "stored_in_window": len([e for e in stored if e["id"] in expected]),
        "mqtt_sink": mqtt_stats,
        "events_before_outage": len(before_ids),
    }


# -- 3. kill -9 --------------------------------------------------------------------------


async def crash_section(group: ProcessGroup, work: Path) -> dict[str, Any]:
    cams = start_cameras(
        group,
        "crash-camera",
        [CameraSpec("cam", 10.0, (320, 240), scene="yard", still_seconds=1.0, stand_seconds=2.0)],
    )
    url = cams.ready()["cam"]
    data_dir = work / "data-crash"
    args = ["--events", "--data-dir", str(data_dir), "--min-frames", "2", "--end-timeout", "1.5"]
    server = CliServer(url, args, work / "crash-server.log")
    try:
        events: list[dict[str, Any]] = []

        async def finished() -> int:
            events[:] = (await get_json(server.url, "/events", limit=1000))["events"]
            return sum(e["end_time"] is not None for e in events)

        while await finished() < 3 or all(e["end_time"] is not None for e in events):
            await asyncio.sleep(0.3)
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(10)
    finally:
        server.kill()
    with sqlite3.connect(data_dir / "events.sqlite3") as db:
        integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
    again = CliServer(url, args, work / "crash-restart.log")
    try:
        after = {e["id"]: e for e in (await get_json(again.url, "/events", limit=1000))["events"]}
        readable = 0
        async with httpx.AsyncClient(base_url=again.url, timeout=30.0) as client:
            for e in events:
                if e["end_time"] is None:
                    continue
                picture = await client.get(f"/events/{e['id']}/snapshot.jpg")
                if picture.status_code == 200 and simplejpeg.decode_jpeg(picture.content).size:
                    readable += 1
    finally:
        again.terminate()
    group.stop(cams)
    finished_before = [e for e in events if e["end_time"] is not None]
    return {
        "finished_before_kill": len(finished_before),
        "active_at_kill": len(events) - len(finished_before),
        "finished_listed_after_restart": sum(e["id"] in after for e in finished_before),
        "finished_with_readable_picture": readable,
        "interrupted_closed_on_restart": sum(
            after.get(e["id"], {}).get("interrupted", False) for e in events if e["end_time"] is None
        ),
        "integrity_check": integrity,
    }


# -- 4. what events cost ---------------------------------------------------------------------


@dataclass
class CostWindow:
    events: bool
    cpu_percent: float
    machine_cores_busy: float
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    detections_per_s: float
    event_records: int


async def _cost_window(
    group: ProcessGroup, work: Path, camera_url: str, mq: Mosquitto, events: bool, seconds: float, index: int
) -> CostWindow:
    extra: dict[str, Any] = {"end_timeout": 1.5, **({"mqtt_url": mq.url} if events else {})}
    settings = server_settings({"cam": camera_url}, work / f"data-cost-{index}", **extra)
    server: Child = start_server(group, f"server-cost-{index}", settings)
    url = server.wait("READY", 600.0)["url"]
    viewer = Viewer(url, "/cameras/cam/detect", "espdetectframe", parse=False)
    await viewer.start()
    try:
        await asyncio.sleep(5.0)  # warm-up: connection, first model calls, tracker
        before = await get_json(url, "/stats")
        cpu0, m0 = CpuSample.of(server.process), MachineSample.now()
        await asyncio.sleep(seconds)
        cpu1, m1 = CpuSample.of(server.process), MachineSample.now()
        after = await get_json(url, "/stats")
    finally:
        await viewer.close()
        group.stop(server)
    cam0, cam1 = before["cameras"]["cam"], after["cameras"]["cam"]
    records = 0
    if after.get("events"):
        e0, e1 = before["events"], after["events"]
        records = sum(e1[k] - e0[k] for k in ("started", "updated", "ended"))
    return CostWindow(
        events=events,
        cpu_percent=round(cpu1.percent_since(cpu0), 2),
        machine_cores_busy=m1.cores_busy_since(m0),
        latency_p50_ms=cam1["latency_ms"]["p50"],
        latency_p95_ms=cam1["latency_ms"]["p95"],
        detections_per_s=round((cam1["frames_detected"] - cam0["frames_detected"]) / seconds, 3),
        event_records=records,
    )


async def cost_section(group: ProcessGroup, work: Path, pairs: int, seconds: float) -> dict[str, Any]:
    # The yard on a short timeline: two visits every ~20 s, so events start, improve and end
    # (records, pictures, the store, MQTT) while the viewer watches.
    spec = CameraSpec(
        "cam", 15.0, VGA, max_stream_clients=2, scene="yard", still_seconds=1.0, stand_seconds=1.0
    )
    cams = start_cameras(group, "cost-camera", [spec])
    camera_url = cams.ready()["cam"]
    windows: list[CostWindow] = []
    with broker(work / "broker-cost") as mq:
        order = [False, True, True, False] * ((pairs + 1) // 2)
        for i, events in enumerate(order[: 2 * pairs]):
            windows.append(await _cost_window(group, work, camera_url, mq, events, seconds, i))
            logger.info("cost window %d (events %s): %s", i, events, windows[-1])
    group.stop(cams)
    off = [w for w in windows if not w.events]
    on = [w for w in windows if w.events]

    def ratios(attr: str) -> dict[str, float]:
        values = [
            getattr(b, attr) / getattr(a, attr) for a, b in zip(off, on, strict=True) if getattr(a, attr)
        ]
        mean, low, high = t_interval(values)
        return {
            "mean": round(mean, 3),
            "ci95_low": round(low, 3),
            "ci95_high": round(high, 3),
            "n": len(values),
        }

    return {
        "windows": windows,
        "seconds_per_window": seconds,
        "on_over_off": {
            "cpu_percent": ratios("cpu_percent"),
            "latency_p50_ms": ratios("latency_p50_ms"),
            "latency_p95_ms": ratios("latency_p95_ms"),
            "detections_per_s": ratios("detections_per_s"),
        },
    }


# -- main ---------------------------------------------------------------------------------


async def run(out: Path, only: set[int], quick: bool) -> dict[str, Any]:
    # Sections run alone update a results file that holds the others (meta: the last run; each
    # section says when it was measured).
    previous = out / "events.json"
    results: dict[str, Any] = json.loads(previous.read_text()) if previous.is_file() else {}
    results |= {
        "meta": {
            "started": utc_now(),
            "platform": platform.platform(),
            "cpus": psutil.cpu_count(),
            "model": Path(os.environ["ESPDETECT_MODEL"]).name,
            "versions": versions("onnxruntime", "aiomqtt"),
            "quick": quick,
            "command": " ".join(["python -m benchmarks.bench_events", *sys.argv[1:]]),
        }
    }
    with tempfile.TemporaryDirectory(prefix="bench-events-") as folder, ProcessGroup(out / "logs") as group:
        work = Path(folder)
        sections: dict[int, tuple[str, Callable[[], Awaitable[dict[str, Any]]]]] = {
            1: ("latency", lambda: latency_section(group, work, 10.0 if quick else 60.0)),
            2: ("outage", lambda: outage_section(group, work, 10.0 if quick else 30.0)),
            3: ("crash", lambda: crash_section(group, work)),
            4: ("cost", lambda: cost_section(group, work, 1 if quick else 3, 10.0 if quick else 30.0)),
        }
        for number, (name, section) in sections.items():
            if number in only:
                started = time.time()
                try:
                    results[name] = await section()
                except Exception as exc:  # one section failing still leaves the others' figures
                    logger.exception("section %s failed", name)
                    results[name] = {"error": repr(exc)}
                results[name + "_elapsed_s"] = round(time.time() - started, 1)
                results[name + "_measured"] = utc_now()
                write_json(out / "events.json", results)
    results["meta"]["finished"] = utc_now()
    write_json(out / "events.json", results)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/events"))
    parser.add_argument("--only", default="1,2,3,4", help="sections: 1 latency, 2 outage, 3 crash, 4 cost")
    parser.add_argument("--quick", action="store_true", help="short stand, outage and windows (a smoke run)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if "ESPDETECT_MODEL" not in os.environ:
        parser.error("set ESPDETECT_MODEL to the model file (the real COCO model: accuracy matters here)")
    if mosquitto_binary() is None:
        parser.error("needs the mosquitto broker (Debian: apt-get install mosquitto)")
    only = {int(part) for part in args.only.split(",") if part.strip()}
    results = asyncio.run(run(args.out, only, args.quick))
    print(json.dumps({k: v for k, v in results.items() if k != "meta"}, indent=1, default=str)[:4000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
