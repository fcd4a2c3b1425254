"""Target 4: detection keeps up with the model alone, on a 30 fps camera (faster than the model).

The model-only rate (`benchmarks._server.runner` ``model-only``: the server's detector on decoded
camera frames in a tight loop) alternates with server windows (1 annotated viewer + an SSE
client). **4a** compares the annotated output fps, **4b** the fresh detections per second; the
SSE events' ``detect_ms`` tell how much of the time the detector was busy.
"""

from __future__ import annotations

import asyncio
import statistics
import time

from benchmarks._harness.procs import Child
from benchmarks._harness.viewers import EventViewer
from benchmarks._server.context import Bench
from benchmarks._server.plan import ESPDETECT_BOUNDARY, GRACE
from benchmarks._server.results import ModelRatePair, ModelRateResult
from benchmarks._server.windows import Env, close_viewers, open_viewers, run_helper, server_window


async def _pair(bench: Bench, env: Env, model: Child) -> ModelRatePair:
    window = bench.plan.window
    await env.cameras.await_clients("fast", 0, GRACE + 10.0)
    alone = await run_helper(model, window)
    viewers = await open_viewers(env, "/cameras/fast/detect", 1, ESPDETECT_BOUNDARY, wait=60.0)
    events = EventViewer(env.url, "/cameras/fast/detections")
    await events.start()
    await asyncio.sleep(2.0)
    t0 = time.time()
    served = await server_window(env, window, viewers)
    t1 = time.time()
    await events.close()
    await close_viewers(env, viewers)
    busy = sum(e.data["detect_ms"] for e in events.events if t0 <= e.received <= t1)
    return ModelRatePair(
        model_only=alone,
        server=served,
        detector_busy_share=round(busy / 1000 / (t1 - t0), 4),
        detect_ratio=served.detect_fps("fast") / alone.rate,
        output_ratio=(served.viewer_fps_mean or 0.0) / alone.rate,
    )


async def model_rate_section(bench: Bench, env: Env, model: Child) -> None:
    pairs = [await _pair(bench, env, model) for _ in range(bench.plan.pairs)]
    rate = statistics.median(p.model_only.rate for p in pairs)
    detect_ratio = statistics.median(p.detect_ratio for p in pairs)
    output_ratio = statistics.median(p.output_ratio for p in pairs)
    busy_share = statistics.median(p.detector_busy_share for p in pairs)
    detect_fps = statistics.median(p.server.detect_fps("fast") for p in pairs)
    output_fps = statistics.median(p.server.viewer_fps_mean or 0.0 for p in pairs)
    bench.results.model_rate = ModelRateResult(pairs, rate)
    bench.target(
        "4a",
        "annotated output fps / model-only rate (camera 30 fps)",
        f"{output_ratio:.2f}x ({output_fps:.1f} fps vs {rate:.2f}/s)",
        ">= 0.9x",
        output_ratio >= 0.9,
        "every camera frame is sent annotated with the newest boxes (draw_last)",
    )
    bench.target(
        "4b",
        "fresh detections per s / model-only rate (strict reading of 4)",
        f"{detect_ratio:.3f}x ({detect_fps:.2f}/s vs {rate:.2f}/s)",
        ">= 0.9x",
        detect_ratio >= 0.9,
        f"median of {len(pairs)} alternating pairs of {bench.plan.window:g} s windows, pair ratios "
        f"{', '.join(f'{p.detect_ratio:.2f}' for p in pairs)}; the detector was busy "
        f"{busy_share:.0%} of the time (sum of detect_ms from the SSE events / wall time)",
    )
