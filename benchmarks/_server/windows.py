"""Viewers opened and closed on a server, and what one measured window of a server gives."""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from benchmarks._harness.procs import Child, MachineSample, ProcessGroup
from benchmarks._harness.report import Spread
from benchmarks._harness.server import Cameras
from benchmarks._harness.viewers import HttpPoller, Viewer
from benchmarks._server.plan import COUNTERS
from benchmarks._server.results import CameraWindow, HelperRun, ServerWindow


@dataclass
class Env:
    """One server (espdetect or the baseline) with its cameras and the viewers open on it."""

    cameras: Cameras
    server: Child
    url: str
    poller: HttpPoller
    viewers: list[Viewer] = field(default_factory=list)


async def open_viewers(env: Env, path: str, n: int, boundary: str, wait: float = 20.0) -> list[Viewer]:
    """``n`` counting viewers of ``path``; returns once each got a frame or ``wait`` s passed."""
    viewers = [Viewer(env.url, path, boundary) for _ in range(n)]
    for v in viewers:
        await v.start()
    env.viewers.extend(viewers)
    await asyncio.gather(*(v.wait_frame(wait) for v in viewers))
    return viewers


async def close_viewers(env: Env, viewers: Sequence[Viewer]) -> None:
    await asyncio.gather(*(v.close() for v in viewers))
    for v in viewers:
        if v in env.viewers:
            env.viewers.remove(v)


async def stop_env(group: ProcessGroup, env: Env) -> None:
    """Close the viewers and the poller, and stop the server."""
    await close_viewers(env, list(env.viewers))
    await env.poller.close()
    group.stop(env.server)


def _camera_window(before: dict[str, Any], after: dict[str, Any], wall: float) -> CameraWindow:
    delta = {k: int(after[k] - before[k]) for k in COUNTERS}
    return CameraWindow(
        **delta,
        detect_fps=round(delta["frames_detected"] / wall, 3),
        in_fps=round(delta["frames_in"] / wall, 3),
        model_calls_per_frame=(
            round(delta["frames_detected"] / delta["frames_in"], 4) if delta["frames_in"] else None
        ),
        inference_ms=after["inference_ms"],
    )


async def server_window(env: Env, seconds: float, viewers: Sequence[Viewer]) -> ServerWindow:
    """CPU, camera counters and per-viewer fps of an espdetect server over ``seconds``."""
    s0 = await env.poller.json("/stats")
    c0, m0 = env.server.cpu(), MachineSample.now()
    f0 = [v.frames for v in viewers]
    await asyncio.sleep(seconds)
    s1 = await env.poller.json("/stats")
    c1, m1 = env.server.cpu(), MachineSample.now()
    f1 = [v.frames for v in viewers]
    wall = c1.wall - c0.wall
    cams = {
        cam: _camera_window(s0["cameras"][cam], after, wall)
        for cam, after in s1["cameras"].items()
        # Only the cameras that worked in the window (the others have no viewer).
        if after["frames_in"] != s0["cameras"][cam]["frames_in"]
        or after["frames_out"] != s0["cameras"][cam]["frames_out"]
    }
    fps = [(b - a) / wall for a, b in zip(f0, f1, strict=True)]
    delivered = sum(b - a for a, b in zip(f0, f1, strict=True))
    detected = sum(c.frames_detected for c in cams.values())
    return ServerWindow(
        seconds=round(wall, 3),
        cpu_pct=round(c1.percent_since(c0), 2),
        model_calls_per_delivered_frame=round(detected / delivered, 4) if delivered else None,
        machine_cores_busy=m1.cores_busy_since(m0),
        viewers=len(viewers),
        viewer_fps_mean=round(statistics.fmean(fps), 3) if fps else None,
        viewer_fps_min=round(min(fps), 3) if fps else None,
        viewer_errors=sum(1 for v in viewers if v.error),
        cameras=cams,
        rss_bytes=env.server.rss(),
    )


async def run_helper(child: Child, seconds: float) -> HelperRun:
    """Let a `benchmarks._server.runner` child run for ``seconds``; its figures and CPU."""
    c0 = child.cpu()
    child.send(f"run {seconds}")
    result = await child.await_message("RESULT", seconds + 120.0)
    return HelperRun(
        calls=int(result["calls"]),
        seconds=float(result["seconds"]),
        rate=float(result["rate"]),
        inference_ms=Spread.of(result["inference_ms"]),
        cpu_pct=round(child.cpu().percent_since(c0), 2),
    )
