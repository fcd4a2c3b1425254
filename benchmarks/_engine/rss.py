"""Section ``rss``: resident memory of ``espdetect serve`` with 1, 2 and 4 cameras, two backends.

Each measurement is a fresh ``espdetect serve`` (the command line, `CliServer`) with ``N``
emulated VGA cameras (15 fps, photo scene) configured and one annotated viewer on each. After
every viewer got a frame and a few seconds more, RSS is sampled every second for the window;
the steady figure is the min/median/max of the last samples. Backends alternate
(``onnxruntime`` then ``ultralytics`` for 1 camera, then for 2, then 4; the next repeat starts
with the other backend), both on the same ``.onnx`` file. Whether torch got into the server is
read from outside afterwards: ``libtorch`` mapped in ``/proc/PID/maps``.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from typing import Final, NamedTuple

from benchmarks._engine.common import MinMedMax, is_mapped, ratio
from benchmarks._engine.context import Bench
from benchmarks._engine.results import RssResult, RssRun, RssSummary
from benchmarks._harness.procs import CpuSample, MachineSample
from benchmarks._harness.server import Cameras, CameraSpec, CliServer, start_cameras
from benchmarks._harness.viewers import HttpPoller, Viewer
from benchmarks._server.plan import ESPDETECT_BOUNDARY, VGA

__all__ = ["BACKENDS", "COUNTS", "rss_section"]

logger = logging.getLogger(__name__)

BACKENDS: Final = ("onnxruntime", "ultralytics")
COUNTS: Final = (1, 2, 4)
#: `CliServer` names its first camera "cam"; the others are added as c1, c2, c3.
CAMERA_IDS: Final = ("cam", "c1", "c2", "c3")
FPS: Final = 15.0
#: Seconds between the viewers' first frames and the first RSS sample.
SETTLE: Final = 3.0
MB: Final = 2**20


def _order(repeat: int) -> list[tuple[int, str]]:
    """(cameras, backend) in the order measured: backends alternate, the first one flips each repeat."""
    backends = BACKENDS if repeat % 2 == 0 else BACKENDS[::-1]
    return [(n, backend) for n in COUNTS for backend in backends]


class _Serving(NamedTuple):
    """RSS samples over the window, and what the server did meanwhile."""

    samples: list[float]
    cpu_pct: float
    machine_cores_busy: float
    detect_fps: dict[str, float]
    out_fps: dict[str, float]
    viewer_fps: list[float]
    viewer_errors: int


async def _window(bench: Bench, server: CliServer, n: int) -> _Serving:
    """Serve one annotated viewer per camera; sample RSS once a second over the window."""
    poller = HttpPoller(server.url, timeout=60.0)
    viewers = [Viewer(server.url, f"/cameras/{cam}/detect", ESPDETECT_BOUNDARY) for cam in CAMERA_IDS[:n]]
    try:
        for viewer in viewers:
            await viewer.start()
        await asyncio.gather(*(v.wait_frame(60.0) for v in viewers))
        await asyncio.sleep(SETTLE)
        s0, c0, m0 = await poller.json("/stats"), CpuSample.of(server.ps), MachineSample.now()
        f0 = [v.frames for v in viewers]
        samples = []
        for _ in range(round(bench.plan.rss_window)):
            await asyncio.sleep(1.0)
            samples.append(round(server.ps.memory_info().rss / MB, 1))
        s1, c1, m1 = await poller.json("/stats"), CpuSample.of(server.ps), MachineSample.now()
        wall = c1.wall - c0.wall
        cams0, cams1 = s0["cameras"], s1["cameras"]

        def rate(cam: str, key: str) -> float:
            return round(float(cams1[cam][key] - cams0[cam][key]) / wall, 2)

        return _Serving(
            samples=samples,
            cpu_pct=round(c1.percent_since(c0), 1),
            machine_cores_busy=m1.cores_busy_since(m0),
            detect_fps={cam: rate(cam, "frames_detected") for cam in cams1},
            out_fps={cam: rate(cam, "frames_out") for cam in cams1},
            viewer_fps=[round((v.frames - f) / wall, 2) for v, f in zip(viewers, f0, strict=True)],
            viewer_errors=sum(1 for v in viewers if v.error),
        )
    finally:
        await asyncio.gather(*(v.close() for v in viewers))
        await poller.close()


async def _run(bench: Bench, cams: Cameras, n: int, backend: str, repeat: int) -> RssRun:
    urls = [cams.urls[f"v{i}"] for i in range(n)]
    args = ["--model", bench.model, "--backend", backend]
    for i, url in enumerate(urls[1:], start=1):
        args += ["--camera", f"{CAMERA_IDS[i]}={url}"]
    log = bench.group.log_dir / f"rss-{backend}-{n}cam-r{repeat}.log"
    t0 = time.perf_counter()
    server = await asyncio.to_thread(CliServer, urls[0], args, log)
    startup = time.perf_counter() - t0
    try:
        ready_mb = round(server.ps.memory_info().rss / MB, 1)
        served = await _window(bench, server, n)
        torch_mapped = is_mapped(server.ps.pid, "libtorch")
    finally:
        await asyncio.to_thread(server.terminate)
    # The next server must find the cameras free (each allows two stream clients).
    for i in range(n):
        await cams.await_clients(f"v{i}", 0, 10.0)
    run = RssRun(
        backend=backend,
        cameras=n,
        repeat=repeat,
        startup_s=round(startup, 1),
        rss_ready_mb=ready_mb,
        rss_samples_mb=served.samples,
        rss_last_mb=MinMedMax.of(served.samples[-bench.plan.rss_last :]),
        torch_mapped=torch_mapped,
        cpu_pct=served.cpu_pct,
        machine_cores_busy=served.machine_cores_busy,
        detect_fps=served.detect_fps,
        out_fps=served.out_fps,
        viewer_fps=served.viewer_fps,
        viewer_errors=served.viewer_errors,
    )
    logger.info(
        "rss %s %d camera(s), repeat %d: %.0f MB (ready %.0f MB), detect %s/s, torch mapped: %s",
        backend, n, repeat, run.rss_last_mb.median, ready_mb, sum(run.detect_fps.values()), torch_mapped,
    )  # fmt: skip
    return run


def summarise(runs: list[RssRun], backend: str) -> RssSummary:
    mine = [r for r in runs if r.backend == backend]
    by_count = {n: [r.rss_last_mb.median for r in mine if r.cameras == n] for n in COUNTS}
    rss = {n: round(statistics.median(v), 1) for n, v in by_count.items() if v}
    repeats = sorted({r.repeat for r in mine})

    def at(n: int, repeat: int) -> float:
        return next(r.rss_last_mb.median for r in mine if r.cameras == n and r.repeat == repeat)

    return RssSummary(
        backend=backend,
        rss_mb=rss,
        increment_2_mb=round(rss[2] - rss[1], 1),
        increment_4_mb=round((rss[4] - rss[1]) / 3, 1),
        increment_2_per_repeat=[round(at(2, k) - at(1, k), 1) for k in repeats],
        increment_4_per_repeat=[round((at(4, k) - at(1, k)) / 3, 1) for k in repeats],
        torch_mapped=any(r.torch_mapped for r in mine),
    )


async def rss_section(bench: Bench) -> None:
    specs = [CameraSpec(f"v{i}", FPS, VGA, max_stream_clients=2) for i in range(max(COUNTS))]
    cams = start_cameras(bench.group, "rss-cameras", specs)
    try:
        await asyncio.to_thread(cams.ready)
        runs = []
        for repeat in range(bench.plan.rss_repeats):
            for n, backend in _order(repeat):
                runs.append(await _run(bench, cams, n, backend, repeat))
    finally:
        bench.group.stop(cams)
    summary = {backend: summarise(runs, backend) for backend in BACKENDS}
    bench.results.rss = RssResult(runs, summary)
    _targets(bench, summary)


def _targets(bench: Bench, summary: dict[str, RssSummary]) -> None:
    ort, ul = summary["onnxruntime"], summary["ultralytics"]
    how = (
        f"espdetect serve, fresh per figure, N VGA 15 fps cameras with one annotated viewer each; "
        f"median over {bench.plan.rss_repeats} repeat(s) of the median of the last {bench.plan.rss_last} "
        f"1-s samples after {bench.plan.rss_window:g} s of serving, backends alternating"
    )
    bench.target(
        "rss-1",
        "RSS, .onnx model on onnxruntime, 1 camera + 1 annotated viewer",
        f"{ort.rss_mb[1]:.0f} MB (ultralytics backend: {ul.rss_mb[1]:.0f} MB, "
        f"{ratio(ort.rss_mb[1], ul.rss_mb[1]):.2f}x)",
        "<= 300 MB",
        ort.rss_mb[1] <= 300.0,
        how,
    )
    worst = max(ort.increment_2_mb, ort.increment_4_mb)
    bench.target(
        "rss-cam",
        "RSS per further camera on the same model (onnxruntime)",
        f"+{ort.increment_2_mb:.1f} MB (2-1), +{ort.increment_4_mb:.1f} MB ((4-1)/3); ultralytics "
        f"+{ul.increment_2_mb:.1f} / +{ul.increment_4_mb:.1f} MB",
        "<= +25 MB",
        worst <= 25.0,
        f"per repeat: 2-1 {ort.increment_2_per_repeat}, (4-1)/3 {ort.increment_4_per_repeat} MB; " + how,
    )
