"""Start every process the selected targets need, all at once, and wait until all are ready.

Servers that are not being measured yet sit idle (no camera connection, no work), so starting
them early only saves wall time: each loads the model, which takes a while on a busy machine.
"""

from __future__ import annotations

import asyncio
import logging
import time

from benchmarks._harness.procs import Child, module_argv
from benchmarks._harness.server import Cameras, CameraSpec, free_port_pair, start_cameras, start_server
from benchmarks._harness.viewers import HttpPoller
from benchmarks._server.context import Bench
from benchmarks._server.plan import FIXED_SKIP, VGA
from benchmarks._server.windows import Env

logger = logging.getLogger(__name__)

RUNNER = "benchmarks._server.runner"
BASELINE = "benchmarks.baseline_per_viewer"
#: The cameras each server (or helper) uses, by its role.
_CAMERAS_OF = {"main": "main", "latency": "latency", "baseline": "baseline"}


def _start_cameras(bench: Bench) -> dict[str, Cameras]:
    only, group = bench.only, bench.group
    cams: dict[str, Cameras] = {}
    if only & {1, 2, 3, 4, 6, 7}:
        specs = [
            CameraSpec(f"c{i}", 15, VGA, max_stream_clients=2) for i in range(max(bench.plan.scale_cameras))
        ]
        specs.append(CameraSpec("fixed", 15, VGA, max_stream_clients=2))
        # Three stream clients: espdetect, Ultralytics, and a spare for OpenCV's probe.
        specs.append(CameraSpec("fast", 30, VGA, max_stream_clients=3))
        cams["main"] = start_cameras(group, "main-cameras", specs)
    if 5 in only:
        cams["latency"] = start_cameras(group, "probe-camera", [CameraSpec("probe", 15, VGA)])
    if only & {1, 3, 7}:
        spec = CameraSpec("base", 15, VGA, max_stream_clients=256)
        cams["baseline"] = start_cameras(group, "baseline-cameras", [spec])
    return cams


def _start_main(bench: Bench, cams: Cameras) -> dict[str, Child]:
    urls, group = cams.urls, bench.group
    cameras: list[object] = [f"{cam}={url}" for cam, url in urls.items() if cam != "fixed"]
    cameras.append({"id": "fixed", "url": urls["fixed"], "skip": FIXED_SKIP})
    if 6 in bench.only:
        # The same 30 fps camera, passing the camera's JPEG through on frames without fresh boxes.
        cameras.append({"id": "fastraw", "url": urls["fast"], "stale": "raw"})
    pending = {"main": start_server(group, "espdetect", bench.server_settings(cameras))}
    if 4 in bench.only:
        pending["model"] = group.start("model-only", module_argv(RUNNER, "model-only", urls["fast"]))
    if 6 in bench.only:
        pending["ultralytics"] = group.start("ultralytics", module_argv(RUNNER, "ultralytics", urls["fast"]))
    return pending


def _start_baselines(bench: Bench, url: str) -> dict[str, Child]:
    def baseline(name: str, generator: str) -> Child:
        return bench.group.start(name, module_argv(BASELINE, "--camera", url, "--generator", generator))

    pending = {}
    if bench.only & {3, 7}:
        pending["baseline"] = baseline("baseline", bench.baseline_generator)
    if 1 in bench.only:
        pending["baseline-disconnect"] = baseline("baseline-disconnect", bench.baseline_generator)
        if bench.plan.bare:
            pending["baseline-bare"] = baseline("baseline-bare", "async-bare")
    return pending


async def launch(bench: Bench) -> None:
    cams = _start_cameras(bench)
    await asyncio.gather(*(asyncio.to_thread(c.ready) for c in cams.values()))
    pending: dict[str, Child] = {}
    if "main" in cams:
        pending |= _start_main(bench, cams["main"])
    if "latency" in cams:
        bench.lat_port = free_port_pair()
        cameras: list[object] = [
            f"probe={cams['latency'].urls['probe']}",
            f"lat=http://127.0.0.1:{bench.lat_port + 1}/stream",
        ]
        pending["latency"] = start_server(bench.group, "espdetect-latency", bench.server_settings(cameras))
    if "baseline" in cams:
        pending |= _start_baselines(bench, cams["baseline"].urls["base"])
    logger.info("starting %s (each server loads the model once)", ", ".join(pending))
    t0 = time.perf_counter()
    ready = await asyncio.gather(*(c.await_message("READY", 600.0) for c in pending.values()))
    bench.results.startup_s = round(time.perf_counter() - t0, 1)
    for (key, child), info in zip(pending.items(), ready, strict=True):
        if key in ("model", "ultralytics"):
            bench.helpers[key] = child
            bench.results.helpers[key] = info
            continue
        cameras_of = _CAMERAS_OF.get(key, "baseline")
        bench.envs[key] = Env(cams[cameras_of], child, info["url"], HttpPoller(info["url"], timeout=60.0))
    bench.cameras = cams
    logger.info("all started in %.0f s", bench.results.startup_s)
