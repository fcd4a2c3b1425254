"""Target 5: latency the server adds (camera frame arrival to last byte at the viewer), minus inference.

A separate server with two cameras: a probe camera first measures the server's own detection
rate *now*; then a camera emulator is started at 3x that rate on a port reserved at start-up
(the server's second camera points to it). One parsing viewer records, for every part, when
its last byte was read and its ``X-Timestamp``; an SSE client records which frames the detector
ran on and their ``detect_ms``. `analyse` classifies every frame, `summarise` gives the figures.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Sequence
from typing import Any

from benchmarks._harness.procs import MachineSample
from benchmarks._harness.report import Spread
from benchmarks._harness.server import Cameras, CameraSpec, start_cameras
from benchmarks._harness.viewers import EventViewer, PartRecord, Viewer
from benchmarks._server.context import Bench
from benchmarks._server.plan import ESPDETECT_BOUNDARY, GRACE, VGA
from benchmarks._server.results import (
    Flatness,
    LatencyFrame,
    LatencyResult,
    MinMedianMax,
    ServerWindow,
    ThirdPercentiles,
    TimelinePoint,
)
from benchmarks._server.windows import Env, close_viewers, open_viewers, server_window, stop_env
from espdetect.stats import percentile


async def _probe(bench: Bench, env: Env) -> ServerWindow:
    """The server's detection rate right now, on the probe camera (it sets the camera's speed)."""
    probe = await open_viewers(env, "/cameras/probe/detect", 1, ESPDETECT_BOUNDARY, wait=60.0)
    await asyncio.sleep(3.0)
    probed = await server_window(env, bench.plan.window, probe)
    await close_viewers(env, probe)
    await env.cameras.await_clients("probe", 0, GRACE + 10.0)
    return probed


async def _timeline(env: Env, duration: float, t_start: float) -> list[TimelinePoint]:
    """The server's CPU, RSS, rates and own latency figures every 10 s (5 s in short runs)."""
    timeline: list[TimelinePoint] = []
    c_prev, m_prev = env.server.cpu(), MachineSample.now()
    s_prev = (await env.poller.json("/stats"))["cameras"]["lat"]
    step = 10.0 if duration >= 60 else 5.0
    while time.time() - t_start < duration:
        await asyncio.sleep(min(step, max(0.0, duration - (time.time() - t_start))))
        stats = (await env.poller.json("/stats"))["cameras"]["lat"]
        c_now, m_now = env.server.cpu(), MachineSample.now()
        wall = c_now.wall - c_prev.wall
        timeline.append(
            TimelinePoint(
                t=round(time.time() - t_start, 2),
                cpu_pct=round(c_now.percent_since(c_prev), 2),
                machine_cores_busy=m_now.cores_busy_since(m_prev),
                rss_mb=round(env.server.rss() / 2**20, 1),
                load_average_1min=round(os.getloadavg()[0], 2),
                in_fps=round((stats["frames_in"] - s_prev["frames_in"]) / wall, 3),
                detect_fps=round((stats["frames_detected"] - s_prev["frames_detected"]) / wall, 3),
                server_latency_ms=stats["latency_ms"],
                inference_ms=stats["inference_ms"],
            )
        )
        c_prev, m_prev, s_prev = c_now, m_now, stats
    return timeline


async def _measure(bench: Bench, env: Env, fps: float, probed: ServerWindow) -> None:
    viewer = Viewer(env.url, "/cameras/lat/detect", ESPDETECT_BOUNDARY, parse=True)
    events = EventViewer(env.url, "/cameras/lat/detections")
    await viewer.start()
    await events.start()
    env.viewers.append(viewer)
    await viewer.wait_frame(60.0)
    await asyncio.sleep(5.0)
    t_start = time.time()
    viewer.parts.clear()
    duration = bench.plan.latency_duration
    timeline = await _timeline(env, duration, t_start)
    t_end = time.time()
    final_stats = await env.poller.json("/stats")
    await events.close()
    frames = analyse(viewer.parts, [e.data for e in events.events], t_start, t_end)
    bench.results.latency = summarise(
        frames,
        fps,
        probed.cameras["probe"].detect_fps,
        duration,
        probe=probed,
        timeline=timeline,
        server_stats=final_stats["cameras"]["lat"],
        viewer_error=viewer.error,
    )
    bench.latency_frames = frames
    _targets(bench, bench.results.latency)


async def latency_section(bench: Bench) -> None:
    env = bench.envs["latency"]
    lat_cameras: Cameras | None = None
    try:
        probed = await _probe(bench, env)
        rate = probed.cameras["probe"].detect_fps
        fps = round(min(30.0, max(3.0, 3.0 * rate)), 1)
        spec = CameraSpec("lat", fps, VGA, port=bench.lat_port)
        lat_cameras = start_cameras(bench.group, "latency-camera", [spec])
        await asyncio.to_thread(lat_cameras.ready)
        await _measure(bench, env, fps, probed)
    finally:
        await stop_env(bench.group, env)
        if lat_cameras is not None:
            bench.group.stop(lat_cameras)


def _targets(bench: Bench, lat: LatencyResult) -> None:
    added = lat.added_ms
    p50, p99 = added.p50, added.p99
    bench.target(
        "5a",
        "added latency - inference (frames with own fresh boxes), p50",
        f"{p50:.1f} ms (n={added.n})",
        "<= 10 ms",
        p50 is not None and p50 <= 10,
        f"camera {lat.camera_fps:g} fps = 3x the detection rate probed just before "
        f"({lat.model_rate:.2f}/s); during the run {lat.detect_fps_during_run.median:.2f}/s",
    )
    bench.target(
        "5b",
        "added latency - inference, p99",
        f"{p99:.1f} ms",
        "<= 30 ms",
        p99 is not None and p99 <= 30,
        f"without frames held for their own detection: p99 {lat.added_excl_hold_ms.p99} ms; "
        f"{lat.held_frames} of {added.n} frames were held",
    )
    bench.target(
        "5c",
        f"latency flat over {lat.duration_s / 60:.1f} min",
        lat.flat.summary,
        "flat",
        lat.flat.flat,
        "first third against last third of the run; server RSS growth included",
    )


def analyse(
    parts: Sequence[PartRecord], events: Sequence[dict[str, Any]], t0: float, t1: float
) -> list[LatencyFrame]:
    """One row per annotated frame received between ``t0`` and ``t1``.

    ``latency_ms`` is the time the part's last byte was read minus its X-Timestamp (the server's
    arrival time of the camera frame; same clock, loopback). A frame is ``own`` when the detector
    ran on that very frame: an SSE event carries its timestamp and ``detect_ms``. What happened to
    an own frame is read off its latency, since the renderer either waits for the frame's boxes or
    gives up when the next camera frame arrives (``gap_ms`` later), or never waited:

    * ``fresh``: it left after its detection ended (latency >= detect_ms): drawn with its own
      boxes. ``added_ms`` subtracts ``detect_ms`` (the target's "minus inference");
    * ``held``: it left only after the next frame had arrived (gap_ms <= latency < detect_ms):
      drawn with the previous boxes after waiting for nothing. ``added_ms`` keeps the wait,
      ``added_excl_hold_ms`` subtracts ``gap_ms``;
    * otherwise it was rendered at once, like frames the detector did not take.
    """
    detect_ms = {round(float(e["timestamp"]) * 1e6): float(e["detect_ms"]) for e in events}
    stamped = [(p.received, p.timestamp) for p in parts if p.timestamp is not None and t0 <= p.received <= t1]
    stamped.sort(key=lambda p: p[1])
    out = []
    for i, (received, stamp) in enumerate(stamped):
        key = round(stamp * 1e6)
        # X-Timestamp and the SSE event round the same float differently by up to a microsecond.
        own = next((detect_ms[k] for k in (key, key - 1, key + 1) if k in detect_ms), None)
        gap_ms = (stamped[i + 1][1] - stamp) * 1000 if i + 1 < len(stamped) else None
        latency = (received - stamp) * 1000
        fresh = own is not None and latency >= own
        held = own is not None and not fresh and gap_ms is not None and latency >= gap_ms
        added = latency - own if fresh and own is not None else latency
        out.append(
            LatencyFrame(
                t=round(received - t0, 4),
                timestamp=stamp,
                latency_ms=round(latency, 3),
                own_detection=own is not None,
                fresh=fresh,
                held=held,
                detect_ms=None if own is None else round(own, 3),
                gap_ms=None if gap_ms is None else round(gap_ms, 3),
                added_ms=round(added, 3),
                added_excl_hold_ms=round(added - gap_ms if held and gap_ms is not None else added, 3),
            )
        )
    return out


def _flatness(added: list[float]) -> Flatness:
    third = max(1, len(added) // 3)
    first = ThirdPercentiles(percentile(added[:third], 50), percentile(added[:third], 99))
    last = ThirdPercentiles(percentile(added[-third:], 50), percentile(added[-third:], 99))
    if first.p50 is None or first.p99 is None or last.p50 is None or last.p99 is None:
        return Flatness(False, "n/a", first, last)
    flat = last.p50 <= first.p50 + 5.0 and last.p99 <= first.p99 + 15.0
    summary = (
        f"p50 {first.p50:.1f} -> {last.p50:.1f} ms, p99 {first.p99:.1f} -> {last.p99:.1f} ms "
        "(first -> last third)"
    )
    return Flatness(flat, summary, first, last)


def summarise(
    frames: list[LatencyFrame],
    fps: float,
    model_rate: float,
    duration: float,
    *,
    probe: ServerWindow,
    timeline: list[TimelinePoint],
    server_stats: dict[str, Any],
    viewer_error: str | None,
) -> LatencyResult:
    """The figures of the latency run (percentiles over all frames, flatness, the timeline)."""
    added = [f.added_ms for f in frames]
    detect = [p.detect_fps for p in timeline]
    return LatencyResult(
        camera_fps=fps,
        model_rate=model_rate,
        duration_s=duration,
        frames=len(frames),
        latency_ms=Spread.of([f.latency_ms for f in frames]),
        latency_not_own_ms=Spread.of([f.latency_ms for f in frames if not f.own_detection]),
        added_ms=Spread.of(added),
        added_excl_hold_ms=Spread.of([f.added_excl_hold_ms for f in frames]),
        held_frames=sum(1 for f in frames if f.held),
        own_frames=sum(1 for f in frames if f.own_detection),
        fresh_frames=sum(1 for f in frames if f.fresh),
        detect_ms=Spread.of([f.detect_ms for f in frames if f.detect_ms is not None]),
        flat=_flatness(added),
        detect_fps_during_run=MinMedianMax(min(detect), statistics.median(detect), max(detect)),
        probe=probe,
        timeline=timeline,
        server_stats=server_stats,
        viewer_error=viewer_error,
    )
