"""Targets 3 and 7: what extra viewers and cameras cost.

3. Annotated viewers of one 15 fps camera in alternating 1- and 50-viewer windows; with the
   default ``skip=auto`` the model runs flat out in both, so **3c** repeats it on a camera with
   ``skip=30`` (a fixed amount of model work). **3b**: model calls per camera frame (<= 1).
7. Server CPU, per-viewer fps and detections/s for 1, 10, 50, 100 viewers of one camera and for
   1, 2, 4, 8 cameras with one viewer each.
"""

from __future__ import annotations

import asyncio
import statistics

from benchmarks._harness.viewers import Viewer
from benchmarks._server.context import Bench
from benchmarks._server.plan import ESPDETECT_BOUNDARY, FIXED_SKIP, GRACE
from benchmarks._server.results import CpuRatio, ServerWindow
from benchmarks._server.windows import Env, close_viewers, open_viewers, server_window


async def one_vs_fifty(bench: Bench, env: Env, camera: str) -> dict[int, list[ServerWindow]]:
    """Windows with 1 and with 50 annotated viewers of ``camera``, alternating 1 50 50 1 ..."""
    plan = bench.plan
    path = f"/cameras/{camera}/detect"
    first = await open_viewers(env, path, 1, ESPDETECT_BOUNDARY, wait=60.0)
    await asyncio.sleep(2.0)
    windows: dict[int, list[ServerWindow]] = {1: [], 50: []}
    extra: list[Viewer] = []
    order = [1, 50, 50, 1] * ((plan.pairs + 1) // 2)
    for n in order[: 2 * plan.pairs]:
        if n == 50 and not extra:
            extra = await open_viewers(env, path, 49, ESPDETECT_BOUNDARY)
            await asyncio.sleep(2.0)
        elif n == 1 and extra:
            await close_viewers(env, extra)
            extra = []
            await asyncio.sleep(2.0)
        windows[n].append(await server_window(env, plan.window, first + extra))
    await close_viewers(env, first + extra)
    await env.cameras.await_clients(camera, 0, GRACE + 10.0)
    return windows


def _cpu_ratio(windows: dict[int, list[ServerWindow]]) -> CpuRatio:
    ratios = [b.cpu_pct / a.cpu_pct for a, b in zip(windows[1], windows[50], strict=False)]
    cpu1 = statistics.median(w.cpu_pct for w in windows[1])
    cpu50 = statistics.median(w.cpu_pct for w in windows[50])
    return CpuRatio(
        cpu_1=cpu1,
        cpu_50=cpu50,
        pair_ratios=[round(r, 4) for r in ratios],
        ratio=statistics.median(ratios),
        ratio_of_medians=cpu50 / cpu1,
        per_extra_viewer_pct=(cpu50 - cpu1) / 49,
    )


def cpu_targets(
    bench: Bench, auto: dict[int, list[ServerWindow]], fixed: dict[int, list[ServerWindow]]
) -> None:
    a, f = _cpu_ratio(auto), _cpu_ratio(fixed)
    bench.results.viewers_1_vs_50_summary = {"auto": a, "fixed": f}
    bench.target(
        "3a",
        "CPU of 50 annotated viewers / CPU of 1 (default skip=auto)",
        f"{a.ratio:.3f}x ({a.cpu_50:.1f} % vs {a.cpu_1:.1f} % of a core, ratio of medians "
        f"{a.ratio_of_medians:.2f}x)",
        "<= 1.25x",
        a.ratio <= 1.25,
        f"median of {len(a.pair_ratios)} alternating window pairs of {bench.plan.window:g} s, pair ratios "
        f"{', '.join(f'{r:.2f}' for r in a.pair_ratios)}; the model runs flat out in both",
    )
    bench.target(
        "3c",
        f"same with detection capped (skip={FIXED_SKIP}: 0.5 detections/s)",
        f"{f.ratio:.3f}x ({f.cpu_50:.1f} % vs {f.cpu_1:.1f} %, ratio of medians "
        f"{f.ratio_of_medians:.2f}x); "
        f"{f.per_extra_viewer_pct:.3f} % of a core per extra viewer",
        "<= 1.25x",
        f.ratio <= 1.25,
        f"pair ratios {', '.join(f'{r:.2f}' for r in f.pair_ratios)}; a fixed amount of model work "
        "makes the comparison insensitive to how much CPU the machine leaves the model",
    )


def calls_per_frame_target(bench: Bench) -> None:
    """3b, over every espdetect window of targets 3 and 7."""
    r = bench.results
    groups = [r.viewers_1_vs_50, r.viewers_1_vs_50_fixed, r.scaling_viewers, r.scaling_cameras]
    calls = [
        cam.model_calls_per_frame
        for section in groups
        for windows in (section or {}).values()
        for w in windows
        for cam in w.cameras.values()
        if cam.model_calls_per_frame is not None
    ]
    if calls:
        worst = max(calls)
        bench.target(
            "3b",
            "model calls per camera frame, any number of viewers",
            f"max {worst:.3f} over {len(calls)} camera-windows",
            "<= 1",
            worst <= 1.0,
            "/stats frames_detected / frames_in, 1 to 100 viewers, 1 to 8 cameras",
        )


async def _cameras_window(bench: Bench, env: Env, k: int) -> ServerWindow:
    """One viewer on each of the first ``k`` cameras."""
    per_camera: list[Viewer] = []
    for i in range(k):
        per_camera += await open_viewers(env, f"/cameras/c{i}/detect", 1, ESPDETECT_BOUNDARY, wait=0.0)
    await asyncio.gather(*(v.wait_frame(90.0) for v in per_camera))
    await asyncio.sleep(3.0)
    window = await server_window(env, bench.plan.window, per_camera)
    await close_viewers(env, per_camera)
    return window


async def scaling_section(bench: Bench, env: Env, windows_1_50: dict[int, list[ServerWindow]]) -> None:
    by_viewers = {1: windows_1_50.get(1, []), 50: windows_1_50.get(50, [])}
    for n in (10, 100):
        viewers = await open_viewers(env, "/cameras/c0/detect", n, ESPDETECT_BOUNDARY, wait=60.0)
        await asyncio.sleep(2.0)
        by_viewers[n] = [await server_window(env, bench.plan.window, viewers)]
        await close_viewers(env, viewers)
    bench.results.scaling_viewers = by_viewers

    by_cameras = {1: windows_1_50.get(1, [])}
    for k in bench.plan.scale_cameras[1:]:
        by_cameras[k] = [await _cameras_window(bench, env, k)]
    bench.results.scaling_cameras = by_cameras
    rows = [
        f"{n} {axis}: {statistics.median(w.cpu_pct for w in group):.0f} %"
        for axis, groups in (("viewers", by_viewers), ("cameras", by_cameras))
        for n, group in groups.items()
        if group
    ]
    bench.target(
        "7",
        "cost growth (CPU % of a core)",
        "; ".join(rows),
        "table and plot",
        None,
        "see scaling.csv / scaling.png",
    )
