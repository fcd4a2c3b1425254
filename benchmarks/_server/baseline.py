"""The per-viewer baseline (`benchmarks.baseline_per_viewer`): reference figures, not targets.

CPU, per-viewer fps, viewers without a frame, model calls per second / per camera frame / per
delivered frame and camera connections for 1 and N viewers (3-base); for disconnects, how long
its generator took to stop and whether its camera connection closed (1-base); and what the
``async-bare`` flavour does once its viewers have gone (1-bare).
"""

from __future__ import annotations

import asyncio
import statistics
import time

from benchmarks._harness.procs import MachineSample
from benchmarks._harness.report import Spread
from benchmarks._harness.viewers import Viewer
from benchmarks._server.context import Bench
from benchmarks._server.plan import BASELINE_BOUNDARY
from benchmarks._server.results import (
    BareGenerator,
    BareTrial,
    BaselineDisconnects,
    BaselineResult,
    BaselineTrial,
    BaselineWindow,
)
from benchmarks._server.windows import Env, close_viewers, stop_env

#: The baseline's camera runs at 15 fps.
CAMERA_FPS = 15.0


async def baseline_window(env: Env, seconds: float) -> BaselineWindow:
    t0_unix = time.time()
    e0 = (await env.cameras.await_stats())["base"]
    s0 = await env.poller.json("/stats")
    c0, m0 = env.server.cpu(), MachineSample.now()
    f0 = [v.frames for v in env.viewers]
    await asyncio.sleep(seconds)
    c1, m1 = env.server.cpu(), MachineSample.now()
    f1 = [v.frames for v in env.viewers]
    s1 = await env.poller.json("/stats")
    e1 = (await env.cameras.await_stats())["base"]
    wall = c1.wall - c0.wall
    fps = [(b - a) / wall for a, b in zip(f0, f1, strict=True)]
    calls = s1["model_calls"] - s0["model_calls"]
    delivered = sum(b - a for a, b in zip(f0, f1, strict=True))
    errors = [v.error for v in env.viewers if v.error]
    return BaselineWindow(
        seconds=round(wall, 3),
        viewers=len(env.viewers),
        cpu_pct=round(c1.percent_since(c0), 2),
        machine_cores_busy=m1.cores_busy_since(m0),
        viewer_fps_mean=round(statistics.fmean(fps), 3),
        viewer_fps_min=round(min(fps), 3),
        viewer_fps_max=round(max(fps), 3),
        viewers_without_frames=sum(1 for x in fps if x == 0),
        viewer_errors=len(errors),
        errors=errors[:5],
        model_calls_per_s=round(calls / wall, 3),
        model_calls_per_camera_frame=round(calls / (wall * CAMERA_FPS), 3),
        model_calls_per_delivered_frame=round(calls / delivered, 4) if delivered else None,
        camera_connections_start=e0.stream_clients,
        camera_connections_end=e1.stream_clients,
        camera_connections_max=env.cameras.max_clients("base", since=t0_unix),
        camera_connections_opened=e1.streams_total - e0.streams_total,
        camera_requests_waiting_end=e1.stream_waiting,
        inference_ms=Spread.of(s1["inference_ms"]),
        rss_bytes=env.server.rss(),
    )


async def _windows(bench: Bench, env: Env, result: BaselineResult) -> None:
    """One window per viewer count, adding viewers to those already watching."""
    plan = bench.plan
    for n in plan.baseline_viewers:
        new = [
            Viewer(env.url, "/detect", BASELINE_BOUNDARY, connect_timeout=60.0)
            for _ in range(n - len(env.viewers))
        ]
        for v in new:
            await v.start()
        env.viewers.extend(new)
        # The baseline blocks its event loop during each inference: new viewers wait in turn.
        await asyncio.gather(*(v.wait_frame(max(30.0, n * 1.5)) for v in new))
        await asyncio.sleep(plan.baseline_settle)
        result.windows[n] = await baseline_window(env, max(plan.window, 10.0))


async def baseline_section(bench: Bench) -> None:
    result = BaselineResult(generator=bench.baseline_generator)
    bench.results.baseline = result
    if "baseline" in bench.envs:
        env = bench.envs["baseline"]
        try:
            await _windows(bench, env, result)
        finally:
            await stop_env(bench.group, env)
        _window_targets(bench, result)
    if "baseline-disconnect" in bench.envs:
        env = bench.envs["baseline-disconnect"]
        await env.cameras.await_clients("base", 0, 10.0)
        try:
            result.disconnect = await _disconnects(bench, env)
        finally:
            await stop_env(bench.group, env)
        if "baseline-bare" in bench.envs:
            env = bench.envs["baseline-bare"]
            await env.cameras.await_clients("base", 0, 10.0)
            try:
                result.bare_generator = await _bare_generator(env)
            finally:
                await stop_env(bench.group, env)
        _disconnect_targets(bench, result)


async def _viewer_gone(env: Env, expect: int, t0: float, timeout: float) -> float | None:
    """Milliseconds from ``t0`` (perf_counter) to a /stats reply counting ``expect`` viewers."""
    while time.perf_counter() - t0 < timeout:
        stats = await env.poller.json("/stats")
        if stats["viewers"] <= expect:
            return (time.perf_counter() - t0) * 1000
        await asyncio.sleep(0.01)
    return None


async def _one_viewer(env: Env) -> Viewer | str:
    """A viewer that got a frame, or why it got none (it is closed then)."""
    v = Viewer(env.url, "/detect", BASELINE_BOUNDARY)
    await v.start()
    env.viewers.append(v)
    if await v.wait_frame(30.0):
        return v
    await close_viewers(env, [v])
    return v.error or "no frame"


async def _disconnect_trial(env: Env, timeout: float) -> BaselineTrial:
    clients = env.cameras.clients("base")
    viewers = (await env.poller.json("/stats"))["viewers"]
    v = await _one_viewer(env)
    if isinstance(v, str):
        return BaselineTrial(error=v)
    t0_unix, t0 = time.time(), time.perf_counter()
    await close_viewers(env, [v])
    gone = await _viewer_gone(env, viewers, t0, timeout)
    event = await env.cameras.await_event("base", clients, t0_unix, timeout)
    return BaselineTrial(
        viewer_gone_ms=gone,
        upstream_closed_ms=None if event is None else (event.t - t0_unix) * 1000,
        camera_connections_after=env.cameras.clients("base"),
    )


async def _disconnects(bench: Bench, env: Env) -> BaselineDisconnects:
    timeout = 3.0 if bench.plan.quick else 10.0
    trials = [await _disconnect_trial(env, timeout) for _ in range(bench.plan.baseline_disconnect_trials)]
    closed = [t.upstream_closed_ms for t in trials if t.upstream_closed_ms is not None]
    return BaselineDisconnects(
        trials=trials,
        viewer_gone_ms=Spread.of([t.viewer_gone_ms for t in trials if t.viewer_gone_ms is not None]),
        closed_ms=Spread.of(closed),
        not_closed_within_s=timeout,
        not_closed=len(trials) - len(closed),
        camera_connections_left=env.cameras.clients("base"),
    )


async def _bare_trial(env: Env) -> BareTrial:
    v = await _one_viewer(env)
    if isinstance(v, str):
        return BareTrial(error=v)
    await close_viewers(env, [v])
    await asyncio.sleep(1.0)
    s0 = await env.poller.json("/stats")
    c0 = env.server.cpu()
    await asyncio.sleep(4.0)
    s1 = await env.poller.json("/stats")
    c1 = env.server.cpu()
    wall = c1.wall - c0.wall
    return BareTrial(
        seconds=round(wall, 3),
        viewers_counted=s1["viewers"],
        model_calls_per_s=round((s1["model_calls"] - s0["model_calls"]) / wall, 3),
        cpu_pct=round(c1.percent_since(c0), 2),
        camera_connections=env.cameras.clients("base"),
    )


async def _bare_generator(env: Env) -> BareGenerator:
    """Disconnects from the ``async-bare`` flavour, and what it does afterwards with nobody watching.

    Whether its generator gets stuck depends on whether a camera frame is buffered when the
    viewer leaves, so several viewers come and go one after the other.
    """
    trials = [await _bare_trial(env) for _ in range(3)]
    ok = [t for t in trials if t.error is None]
    last = ok[-1] if ok else None
    return BareGenerator(
        trials=trials,
        stuck_generators=max((t.viewers_counted for t in ok), default=0),
        model_calls_per_s_with_nobody_watching=None if last is None else last.model_calls_per_s,
        cpu_pct_with_nobody_watching=None if last is None else last.cpu_pct,
        camera_connections=None if last is None else last.camera_connections,
        viewers_counted=None if last is None else last.viewers_counted,
        seconds=None if last is None else last.seconds,
    )


def _disconnect_targets(bench: Bench, base: BaselineResult) -> None:
    disc = base.disconnect
    if disc is None:
        return
    gone, closed = disc.viewer_gone_ms, disc.closed_ms
    late = sum(1 for t in disc.trials if t.upstream_closed_ms is not None and t.upstream_closed_ms > 5000)
    bench.target(
        "1-base",
        "baseline: viewer disconnect -> its work stopped / camera connection closed",
        f"work stopped p50 {gone.p50} ms, max {gone.max} ms (n={gone.n}); camera connection "
        f"closed in {closed.n} of {len(disc.trials)} trials (max {closed.max} ms)",
        "(reference)",
        None,
        f"{late} of the closes came after 5 s, when the camera drops a stream nobody reads (its "
        f"5 s send timeout), not from the server; {disc.camera_connections_left} camera connections "
        "open after the trials; 'stopped' = the generator's finally ran (its /stats viewer count)",
    )
    bare = base.bare_generator
    if bare is not None and bare.model_calls_per_s_with_nobody_watching is not None:
        bench.target(
            "1-bare",
            "baseline without sleep(0): 3 viewers came and left, one at a time",
            f"{bare.viewers_counted} generators still running with nobody watching: "
            f"{bare.model_calls_per_s_with_nobody_watching} model calls/s, "
            f"{bare.cpu_pct_with_nobody_watching} % CPU, "
            f"{bare.camera_connections} camera connections",
            "(reference)",
            None,
            f"measured over {bare.seconds} s starting 1 s after the last viewer left",
        )


def _window_targets(bench: Bench, base: BaselineResult) -> None:
    windows = base.windows
    if 1 not in windows or len(windows) < 2:
        return
    n = max(windows)
    one, many = windows[1], windows[n]
    ratio = many.cpu_pct / max(1e-9, one.cpu_pct)
    per_frame_1 = one.cpu_pct / max(1e-9, one.viewer_fps_mean * 1)
    per_frame_n = many.cpu_pct / max(1e-9, many.viewer_fps_mean * n)
    bench.target(
        "3-base",
        f"baseline: CPU of {n} viewers / CPU of 1",
        f"{ratio:.2f}x ({many.cpu_pct:.0f} % vs {one.cpu_pct:.0f} %); fps per viewer "
        f"{many.viewer_fps_mean:.2f} vs {one.viewer_fps_mean:.2f}",
        "(reference)",
        None,
        f"CPU per delivered frame {per_frame_n:.1f} vs {per_frame_1:.1f} %-s; "
        f"{many.viewers_without_frames} of {n} viewers got no frame in the window; "
        f"{many.model_calls_per_camera_frame:.2f} model calls per camera frame",
    )
