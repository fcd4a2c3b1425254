"""Target 6: espdetect serving 10 viewers against Ultralytics' own streaming predict.

``YOLO(model).predict(source=<camera URL>, stream=True)`` runs in its own process
(`benchmarks._server.runner` ``ultralytics``), alternated with espdetect serving 10 annotated
viewers of the same 30 fps camera: **6a** per-viewer output fps, **6b** detections/s, **6c**
detections/s with ``stale=raw`` (camera ``fastraw``). The full run adds one window with both
running at once.
"""

from __future__ import annotations

import asyncio
import statistics
import time

from benchmarks._harness.procs import Child
from benchmarks._server.context import Bench
from benchmarks._server.plan import ESPDETECT_BOUNDARY, GRACE
from benchmarks._server.results import (
    Concurrent,
    HelperRun,
    ServerWindow,
    StreamSummary,
    UltralyticsResult,
    UltralyticsRound,
)
from benchmarks._server.windows import Env, close_viewers, open_viewers, run_helper, server_window

#: The espdetect cameras on the 30 fps camera: default stale=draw_last, and stale=raw.
CAMERAS = ("fast", "fastraw")


async def _serve_ten(bench: Bench, env: Env, camera: str) -> ServerWindow:
    await env.cameras.await_clients("fast", 0, GRACE + 10.0)
    viewers = await open_viewers(env, f"/cameras/{camera}/detect", 10, ESPDETECT_BOUNDARY, wait=60.0)
    await asyncio.sleep(2.0)
    window = await server_window(env, bench.plan.window, viewers)
    await close_viewers(env, viewers)
    return window


async def _round(bench: Bench, env: Env, yolo: Child) -> UltralyticsRound:
    await env.cameras.await_clients("fast", 0, GRACE + 10.0)
    theirs = await run_helper(yolo, bench.plan.window)
    fast = await _serve_ten(bench, env, "fast")
    raw = await _serve_ten(bench, env, "fastraw")
    rate = max(1e-9, theirs.rate)
    return UltralyticsRound(
        ultralytics=theirs,
        fast=fast,
        fastraw=raw,
        fast_detect_ratio=fast.detect_fps("fast") / rate,
        fast_output_ratio=(fast.viewer_fps_mean or 0.0) / rate,
        fastraw_detect_ratio=raw.detect_fps("fastraw") / rate,
        fastraw_output_ratio=(raw.viewer_fps_mean or 0.0) / rate,
    )


async def _concurrent(bench: Bench, env: Env, yolo: Child) -> Concurrent:
    await env.cameras.await_clients("fast", 0, GRACE + 10.0)
    viewers = await open_viewers(env, "/cameras/fast/detect", 10, ESPDETECT_BOUNDARY, wait=60.0)
    await asyncio.sleep(2.0)
    s0 = await env.poller.json("/stats")
    w0 = time.perf_counter()
    theirs = await run_helper(yolo, bench.plan.window)
    s1 = await env.poller.json("/stats")
    wall = time.perf_counter() - w0
    await close_viewers(env, viewers)
    detected = s1["cameras"]["fast"]["frames_detected"] - s0["cameras"]["fast"]["frames_detected"]
    return Concurrent(theirs, round(detected / wall, 3), detected / wall / max(1e-9, theirs.rate))


def _summary(rounds: list[UltralyticsRound], camera: str) -> StreamSummary:
    raw = camera == "fastraw"
    windows = [r.fastraw if raw else r.fast for r in rounds]
    return StreamSummary(
        detect_ratio=statistics.median(
            r.fastraw_detect_ratio if raw else r.fast_detect_ratio for r in rounds
        ),
        output_ratio=statistics.median(
            r.fastraw_output_ratio if raw else r.fast_output_ratio for r in rounds
        ),
        detect_fps=statistics.median(w.detect_fps(camera) for w in windows),
        viewer_fps=statistics.median(w.viewer_fps_mean or 0.0 for w in windows),
    )


async def ultralytics_section(bench: Bench, env: Env, yolo: Child) -> None:
    t_start = time.time()
    rounds = [await _round(bench, env, yolo) for _ in range(bench.plan.pairs)]
    concurrent = None if bench.plan.quick else await _concurrent(bench, env, yolo)
    summary = {camera: _summary(rounds, camera) for camera in CAMERAS}
    bench.results.ultralytics = UltralyticsResult(
        pairs=rounds,
        concurrent=concurrent,
        max_stream_clients_fast=env.cameras.max_clients("fast", since=t_start),
        summary=summary,
    )
    _targets(bench, [r.ultralytics for r in rounds], summary, concurrent)


def _targets(
    bench: Bench, theirs: list[HelperRun], summary: dict[str, StreamSummary], concurrent: Concurrent | None
) -> None:
    rate_u = statistics.median(t.rate for t in theirs)
    dl, raw = summary["fast"], summary["fastraw"]
    note = f"alternating windows of {bench.plan.window:g} s, {len(theirs)} rounds"
    if concurrent is not None:
        note += f"; both at once: {concurrent.ratio:.2f}x"
    bench.target(
        "6a",
        "end-to-end fps per viewer (10 viewers) / Ultralytics predict",
        f"{dl.output_ratio:.2f}x ({dl.viewer_fps:.1f} fps vs {rate_u:.2f}/s)",
        ">= 1.0x",
        dl.output_ratio >= 1.0,
        "annotated frames each of the 10 viewers received per second (default stale=draw_last)",
    )
    bench.target(
        "6b",
        "detections per s while serving 10 viewers / Ultralytics predict",
        f"{dl.detect_ratio:.3f}x ({dl.detect_fps:.2f}/s vs {rate_u:.2f}/s)",
        ">= 1.0x",
        dl.detect_ratio >= 1.0,
        note + "; default stale=draw_last renders every camera frame",
    )
    bench.target(
        "6c",
        "same with stale=raw (only frames with fresh boxes re-encoded)",
        f"{raw.detect_ratio:.3f}x ({raw.detect_fps:.2f}/s vs {rate_u:.2f}/s), "
        f"{raw.viewer_fps:.1f} fps per viewer",
        ">= 1.0x",
        raw.detect_ratio >= 1.0,
        "other frames are the camera's JPEG passed through",
    )
