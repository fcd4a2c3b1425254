"""Section ``cameras``: detections per second of 4 cameras against 1, and against Ultralytics.

One espdetect server (`start_server`: ``create_app`` + ``StreamingServer``, default settings:
``skip=auto``, ``detect_slots=1``, one model shared by every camera) with four emulated VGA
cameras at 30 fps; each camera alone already keeps the model busy. Alternating windows, each
round ``sse-1, sse-4, ultralytics-4, annotated-4, annotated-1``:

* **sse-N**: one ``/cameras/{id}/detections`` SSE client on each of N cameras; detections per
  second = SSE events received in the window, summed over the cameras (the verdict's figure);
* **annotated-N**: one ``/cameras/{id}/detect`` MJPEG viewer on each of N cameras; fresh
  detections per second from ``/stats`` ``frames_detected``. An SSE client per camera rides
  along (about 9 events/s in all) for the timing figures below;
* **ultralytics-4**: ``YOLO(model).predict(source=<.streams file of the 4 camera URLs>,
  stream=True)`` in its own process (`benchmarks._server.runner` ``ultralytics``), results per
  second summed over the streams (8 results, i.e. two batches, skipped as warm-up).

Before each window every camera has no client (espdetect's grace period has passed), so the
two programs never share a camera or the CPU. Every window records the server's CPU split by
thread role (event loop, detection thread, render threads, native threads such as ONNX
Runtime's pool: psutil per thread, named through ``py-spy dump``), the camera process's CPU and
the machine's busy cores, and from the SSE events the mean decode + model time per detection
and the share of the window the detection thread was busy, so that a 4-camera shortfall splits
into "the model got slower" (detect_ms up) and "the model sat idle" (busy share down).
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

import psutil

from benchmarks._engine.common import ThreadCpu, ratio
from benchmarks._engine.context import Bench
from benchmarks._engine.profile import start_record
from benchmarks._engine.results import (
    CamerasRound,
    CamWindow,
    Decomposition,
    UltraWindow,
)
from benchmarks._harness.procs import Child, CpuSample, MachineSample, module_argv
from benchmarks._harness.report import Spread
from benchmarks._harness.server import Cameras, CameraSpec, start_cameras, start_server
from benchmarks._harness.viewers import EventViewer, HttpPoller, Viewer
from benchmarks._server.plan import ESPDETECT_BOUNDARY, GRACE, VGA

__all__ = [
    "CAMERA_IDS",
    "FPS",
    "ROUND_ORDER",
    "CamEnv",
    "decompose",
    "espdetect_window",
    "launch",
    "run_round",
]

logger = logging.getLogger(__name__)

FPS: Final = 30.0
CAMERA_IDS: Final = ("c0", "c1", "c2", "c3")
RUNNER: Final = "benchmarks._server.runner"
#: Ultralytics batches one frame of every stream: two batches of four are its warm-up.
ULTRA_WARMUP: Final = 8
_SELF: Final = psutil.Process()
ROUND_ORDER: Final = ("sse-1", "sse-4", "ultralytics-4", "annotated-4", "annotated-1")


@dataclass
class CamEnv:
    """The processes of the section and the server's thread CPU meter."""

    cameras: Cameras
    server: Child
    url: str
    poller: HttpPoller
    threads: ThreadCpu
    yolo: Child
    #: Sampling instants of the last ``py-spy record`` (0: none).
    last_record_samples: int = 0


async def _cameras_idle(env: CamEnv) -> None:
    for cam in CAMERA_IDS:
        if not await env.cameras.await_clients(cam, 0, GRACE + 15.0):
            logger.warning("camera %s still has a client", cam)


async def _first_events(events: list[EventViewer], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while any(not e.events for e in events) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)


@dataclass(frozen=True)
class _Mark:
    """Everything read at one edge of a window."""

    stats: dict[str, Any]
    unix: float
    server: CpuSample
    cameras: CpuSample
    #: This process (the viewers) and the idle Ultralytics runner.
    others: tuple[CpuSample, CpuSample]
    machine: MachineSample
    threads: dict[int, float]
    frames: list[int]

    @staticmethod
    async def take(env: CamEnv, viewers: list[Viewer]) -> _Mark:
        stats = await env.poller.json("/stats")
        return _Mark(
            stats,
            time.time(),
            env.server.cpu(),
            env.cameras.cpu(),
            (CpuSample.of(_SELF), env.yolo.cpu()),
            MachineSample.now(),
            env.threads.times(),
            [v.frames for v in viewers],
        )

    def foreign_since(self, a: _Mark) -> float:
        """Busy cores of the machine not used by the processes of this section."""
        ours = self.server.percent_since(a.server) + self.cameras.percent_since(a.cameras)
        ours += sum(b.percent_since(x) for b, x in zip(self.others, a.others, strict=True))
        return round(self.machine.cores_busy_since(a.machine) - ours / 100.0, 2)


def _mean(values: list[float]) -> float | None:
    return round(statistics.fmean(values), 2) if values else None


def _build_window(
    env: CamEnv,
    kind: str,
    ids: tuple[str, ...],
    rnd: int,
    edges: tuple[_Mark, _Mark],
    events: list[EventViewer],
) -> CamWindow:
    a, b = edges
    wall = b.server.wall - a.server.wall
    cams0, cams1 = a.stats["cameras"], b.stats["cameras"]

    def rate(cam: str, key: str) -> float:
        return round(float(cams1[cam][key] - cams0[cam][key]) / wall, 3)

    inside = {
        cam: [e for e in ev.events if a.unix <= e.received < b.unix]
        for cam, ev in zip(ids, events, strict=True)
    }
    records = [e.data for evs in inside.values() for e in evs]
    detect_ms = [float(d["detect_ms"]) for d in records]
    timings = [d["timings_ms"] for d in records if "timings_ms" in d]
    inference = [float(t["inference_ms"]) for t in timings]
    prepost = [float(t["preprocess_ms"]) + float(t["postprocess_ms"]) for t in timings]
    rest = [
        float(d["detect_ms"]) - sum(float(v) for v in d["timings_ms"].values())
        for d in records
        if "timings_ms" in d
    ]
    sse = {cam: round(len(evs) / wall, 3) for cam, evs in inside.items()}
    stats_fps = {cam: rate(cam, "frames_detected") for cam in ids}
    return CamWindow(
        kind=kind,
        cameras=len(ids),
        round=rnd,
        seconds=round(wall, 2),
        detect_fps_total=round(sum((sse if kind == "sse" else stats_fps).values()), 3),
        sse_events_fps=sse,
        stats_detect_fps=stats_fps,
        camera_in_fps={cam: rate(cam, "frames_in") for cam in ids},
        viewer_fps=[round((f1 - f0) / wall, 2) for f0, f1 in zip(a.frames, b.frames, strict=True)],
        detect_ms_mean=_mean(detect_ms),
        detector_busy_share=round(sum(detect_ms) / 1000.0 / wall, 3) if detect_ms else None,
        inference_ms_mean=_mean(inference),
        prepost_ms_mean=_mean(prepost),
        rest_ms_mean=_mean(rest),
        server_cpu_pct=round(b.server.percent_since(a.server), 1),
        server_threads_pct=env.threads.by_group(a.threads, b.threads, wall),
        cameras_cpu_pct=round(b.cameras.percent_since(a.cameras), 1),
        machine_cores_busy=b.machine.cores_busy_since(a.machine),
        foreign_cores=b.foreign_since(a),
        rss_mb=round(env.server.rss() / 2**20, 1),
        viewer_errors=sum(1 for e in events if e.error),
    )


async def espdetect_window(
    bench: Bench,
    env: CamEnv,
    kind: str,
    n: int,
    rnd: int,
    record: Path | None = None,
    timing: tuple[float, float] | None = None,
) -> CamWindow:
    """One measured window of ``n`` cameras with one ``kind`` viewer each ("sse" or "annotated").

    ``record``: also run ``py-spy record`` on the server over the window, into that file.
    ``timing``: (settle, window) seconds instead of the plan's.
    """
    settle, seconds = timing or (bench.plan.settle, bench.plan.window)
    ids = CAMERA_IDS[:n]
    await _cameras_idle(env)
    events = [EventViewer(env.url, f"/cameras/{cam}/detections") for cam in ids]
    viewers = [
        Viewer(env.url, f"/cameras/{cam}/detect", ESPDETECT_BOUNDARY) for cam in ids if kind == "annotated"
    ]
    try:
        for sse in events:
            await sse.start()
        for viewer in viewers:
            await viewer.start()
        await _first_events(events, 60.0)
        await asyncio.gather(*(v.wait_frame(60.0) for v in viewers))
        await asyncio.sleep(settle)
        # Threads start lazily: name them now that the window's threads exist.
        await asyncio.to_thread(env.threads.refresh_names)
        a = await _Mark.take(env, viewers)
        recorder = start_record(env.server.process.pid, seconds, record) if record else None
        await asyncio.sleep(seconds)
        b = await _Mark.take(env, viewers)
        if recorder is not None:
            env.last_record_samples = await asyncio.to_thread(recorder.wait, 60.0)
    finally:
        await asyncio.gather(*(e.close() for e in events), *(v.close() for v in viewers))
    window = _build_window(env, kind, ids, rnd, (a, b), events)
    errors = window.viewer_errors + sum(1 for v in viewers if v.error)
    window = replace(window, viewer_errors=errors)
    logger.info(
        "%s-%d round %d: %.2f detections/s (busy %s, detect %s ms), server %.0f %% %s, machine %.2f cores",
        kind, n, rnd, window.detect_fps_total, window.detector_busy_share, window.detect_ms_mean,
        window.server_cpu_pct, window.server_threads_pct, window.machine_cores_busy,
    )  # fmt: skip
    return window


async def _ultra_window(bench: Bench, env: CamEnv, rnd: int) -> UltraWindow:
    yolo = env.yolo
    await _cameras_idle(env)
    c0, k0, m0, o0, s0 = (
        yolo.cpu(),
        env.cameras.cpu(),
        MachineSample.now(),
        CpuSample.of(_SELF),
        env.server.cpu(),
    )
    yolo.send(f"run {bench.plan.window}")
    result = await yolo.await_message("RESULT", bench.plan.window + 180.0)
    c1, k1, m1, o1, s1 = (
        yolo.cpu(),
        env.cameras.cpu(),
        MachineSample.now(),
        CpuSample.of(_SELF),
        env.server.cpu(),
    )
    ours = c1.percent_since(c0) + k1.percent_since(k0) + o1.percent_since(o0) + s1.percent_since(s0)
    window = UltraWindow(
        round=rnd,
        seconds=round(float(result["seconds"]), 2),
        results=int(result["calls"]),
        rate=round(float(result["rate"]), 3),
        inference_ms=Spread.of(result["inference_ms"]),
        cpu_pct=round(c1.percent_since(c0), 1),
        cameras_cpu_pct=round(k1.percent_since(k0), 1),
        machine_cores_busy=m1.cores_busy_since(m0),
        foreign_cores=round(m1.cores_busy_since(m0) - ours / 100.0, 2),
    )
    logger.info("ultralytics-4 round %d: %.2f results/s, %.0f %% CPU", rnd, window.rate, window.cpu_pct)
    return window


async def run_round(bench: Bench, env: CamEnv, rnd: int) -> CamerasRound:
    """``sse-1, sse-4, ultralytics-4, annotated-4, annotated-1``, reversed every other round: each
    4-camera espdetect window has its 1-camera one and the Ultralytics window next to it, and a
    steady drift of the machine's speed favours neither side over two rounds."""
    windows: dict[str, CamWindow] = {}
    ultra: UltraWindow | None = None
    order = ROUND_ORDER if rnd % 2 == 0 else ROUND_ORDER[::-1]
    for label in order:
        if label == "ultralytics-4":
            ultra = await _ultra_window(bench, env, rnd)
            continue
        kind, _, n = label.partition("-")
        windows[label] = await espdetect_window(bench, env, kind, int(n), rnd)
    assert ultra is not None
    sse_1, sse_4 = windows["sse-1"], windows["sse-4"]
    annotated_1, annotated_4 = windows["annotated-1"], windows["annotated-4"]
    return CamerasRound(
        sse_1=sse_1,
        sse_4=sse_4,
        ultralytics_4=ultra,
        annotated_4=annotated_4,
        annotated_1=annotated_1,
        sse_ratio=ratio(sse_4.detect_fps_total, sse_1.detect_fps_total),
        annotated_ratio=ratio(annotated_4.detect_fps_total, annotated_1.detect_fps_total),
        sse_vs_ultralytics=ratio(sse_4.detect_fps_total, ultra.rate),
        annotated_vs_ultralytics=ratio(annotated_4.detect_fps_total, ultra.rate),
    )


def server_settings(bench: Bench, cams: Cameras, **detector: object) -> dict[str, object]:
    """The server's settings: defaults, the four cameras, the model (``detector``: more options)."""
    return {
        "cameras": [f"{cam}={cams.urls[cam]}" for cam in CAMERA_IDS],
        "detector": {"model": bench.model, **detector},
        "upstream": {"grace_period": GRACE},
    }


async def launch_variant(bench: Bench, env: CamEnv, name: str, **detector: object) -> CamEnv:
    """Another server on the same cameras with other detector options (idle until viewed)."""
    server = start_server(bench.group, name, server_settings(bench, env.cameras, **detector))
    url = str((await server.await_message("READY", 600.0))["url"])
    return CamEnv(
        env.cameras, server, url, HttpPoller(url, timeout=60.0), ThreadCpu(server.process), env.yolo
    )


async def launch(bench: Bench, streams: Path) -> tuple[CamEnv, dict[str, bool]]:
    """Cameras, then the server and the Ultralytics runner (each loads the model) at once."""
    specs = [CameraSpec(cam, FPS, VGA, max_stream_clients=3) for cam in CAMERA_IDS]
    cams = start_cameras(bench.group, "cameras", specs)
    urls = await asyncio.to_thread(cams.ready)
    # Ultralytics reads a ``.streams`` file as one source per line, batched together.
    streams.write_text("".join(f"{urls[cam]}\n" for cam in CAMERA_IDS), encoding="utf-8")
    server = start_server(bench.group, "espdetect", server_settings(bench, cams))
    argv = module_argv(RUNNER, "ultralytics", str(streams), "--warmup", str(ULTRA_WARMUP))
    yolo = bench.group.start("ultralytics", argv)
    ready: dict[str, Any]
    ready, _ = await asyncio.gather(server.await_message("READY", 600.0), yolo.await_message("READY", 600.0))
    poller = HttpPoller(ready["url"], timeout=60.0)
    env = CamEnv(cams, server, ready["url"], poller, ThreadCpu(server.process), yolo)
    return env, {str(k): bool(v) for k, v in ready.get("modules", {}).items()}


#: Thread roles whose CPU is the model's (the detection thread and ONNX Runtime's native pool).
MODEL_ROLES: Final = frozenset({"detect", "native"})


def _med(values: list[float | None]) -> float | None:
    clean = [v for v in values if v is not None]
    return round(statistics.median(clean), 3) if clean else None


def _cpu(w: CamWindow, model: bool) -> float:
    return sum(v for k, v in w.server_threads_pct.items() if (k in MODEL_ROLES) == model)


def decompose(rounds: list[CamerasRound], kind: str) -> Decomposition:
    """The medians behind the 4/1 ratio of ``kind`` (see `Decomposition`)."""
    ones = [r.sse_1 if kind == "sse" else r.annotated_1 for r in rounds]
    fours = [r.sse_4 if kind == "sse" else r.annotated_4 for r in rounds]
    busy_1, busy_4 = _med([w.detector_busy_share for w in ones]), _med([w.detector_busy_share for w in fours])
    ms_1, ms_4 = _med([w.detect_ms_mean for w in ones]), _med([w.detect_ms_mean for w in fours])

    def outside(w: CamWindow) -> float | None:
        return (
            None
            if w.detect_ms_mean is None or w.inference_ms_mean is None
            else w.detect_ms_mean - w.inference_ms_mean
        )

    return Decomposition(
        kind=kind,
        busy_1=busy_1,
        busy_4=busy_4,
        busy_ratio=ratio(busy_4, busy_1) if busy_1 and busy_4 else None,
        detect_ms_1=ms_1,
        detect_ms_4=ms_4,
        speed_ratio=ratio(ms_1, ms_4) if ms_1 and ms_4 else None,
        inference_ms_1=_med([w.inference_ms_mean for w in ones]),
        inference_ms_4=_med([w.inference_ms_mean for w in fours]),
        outside_ms_1=_med([outside(w) for w in ones]),
        outside_ms_4=_med([outside(w) for w in fours]),
        model_cpu_1=round(statistics.median(_cpu(w, True) for w in ones), 1),
        model_cpu_4=round(statistics.median(_cpu(w, True) for w in fours), 1),
        other_cpu_1=round(statistics.median(_cpu(w, False) for w in ones), 1),
        other_cpu_4=round(statistics.median(_cpu(w, False) for w in fours), 1),
        machine_cores_1=round(statistics.median(w.machine_cores_busy for w in ones), 2),
        machine_cores_4=round(statistics.median(w.machine_cores_busy for w in fours), 2),
        foreign_cores_1=round(statistics.median(w.foreign_cores for w in ones), 2),
        foreign_cores_4=round(statistics.median(w.foreign_cores for w in fours), 2),
    )
