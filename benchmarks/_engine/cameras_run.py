"""Section ``cameras`` as run: the rounds, the drift-robust pairs, the profiled windows, the verdicts.

The windows themselves are `benchmarks._engine.cameras` (see its docstring for the method);
the short window pairs `benchmarks._engine.fine`; py-spy `benchmarks._engine.profile`.
"""

from __future__ import annotations

import logging
import statistics
from dataclasses import dataclass

from benchmarks._engine.cameras import (
    FPS,
    CamEnv,
    decompose,
    espdetect_window,
    launch,
    launch_variant,
    run_round,
)
from benchmarks._engine.common import PY_SPY, is_mapped
from benchmarks._engine.context import Bench
from benchmarks._engine.fine import fine_pairs
from benchmarks._engine.profile import PROFILED, parse_raw
from benchmarks._engine.results import (
    CamerasResult,
    CamerasRound,
    CamWindow,
    FineResult,
    ProfileResult,
    ThreadProfile,
)

__all__ = ["cameras_section"]

logger = logging.getLogger(__name__)


async def profile_server(bench: Bench, env: CamEnv) -> ProfileResult | None:
    """Profiled 1- and 4-camera windows (diagnostic only: py-spy itself takes some CPU)."""
    if PY_SPY is None:
        logger.warning("py-spy is not installed (pip install py-spy): no profile")
        return None
    windows: dict[str, CamWindow] = {}
    threads: dict[str, list[ThreadProfile]] = {}
    for kind, n in PROFILED:
        label = f"{kind}-{n}"
        raw = bench.group.log_dir / f"py-spy-{label}.txt"
        env.last_record_samples = 0
        windows[label] = await espdetect_window(bench, env, kind, n, -2, record=raw)
        threads[label] = parse_raw(raw, env.last_record_samples) if raw.exists() else []
    return ProfileResult(
        windows=windows, threads=threads, raw_files=[f"logs/py-spy-{k}.txt" for k in windows]
    )


@dataclass
class _Measured:
    rounds: list[CamerasRound]
    fine: dict[str, FineResult]
    profile: ProfileResult | None
    torch_mapped: bool


async def _measure(bench: Bench, env: CamEnv, profile: bool) -> _Measured:
    """Warm-up, the rounds, the short pairs; when diagnosing (``profile`` or a ratio below 0.9)
    the short pairs also run on a ``threads = 1`` server, and profiled windows follow."""
    # Discarded: the first model calls of a fresh ONNX Runtime session are slow.
    await espdetect_window(bench, env, "sse", 4, -1)
    rounds = [await run_round(bench, env, k) for k in range(bench.plan.rounds)]
    diagnose = profile or statistics.median(r.sse_ratio for r in rounds) < 0.9
    envs = {"default": env}
    fine: dict[str, FineResult] = {}
    if bench.plan.fine_pairs:
        if diagnose:
            envs["threads=1"] = await launch_variant(bench, env, "espdetect-threads1", threads=1)
        try:
            fine = await fine_pairs(bench, envs, bench.plan.fine_pairs)
        finally:
            for label, other in envs.items():
                if label != "default":
                    await other.poller.close()
                    bench.group.stop(other.server)
        diagnose = diagnose or fine["default"].ratio_median < 0.9
    diagnosis = await profile_server(bench, env) if diagnose else None
    return _Measured(rounds, fine, diagnosis, is_mapped(env.server.process.pid, "libtorch"))


async def cameras_section(bench: Bench, profile: bool) -> None:
    env, modules = await launch(bench, bench.group.log_dir / "cameras.streams")
    try:
        camera_settings = await env.poller.json("/cameras/c0/settings")
        got = await _measure(bench, env, profile)
    finally:
        await env.poller.close()
        for child in (env.yolo, env.server, env.cameras):
            bench.group.stop(child)
    rounds = got.rounds
    bench.results.cameras = CamerasResult(
        fps=FPS,
        rounds=rounds,
        sse_ratio=round(statistics.median(r.sse_ratio for r in rounds), 3),
        annotated_ratio=round(statistics.median(r.annotated_ratio for r in rounds), 3),
        sse_vs_ultralytics=round(statistics.median(r.sse_vs_ultralytics for r in rounds), 3),
        annotated_vs_ultralytics=round(statistics.median(r.annotated_vs_ultralytics for r in rounds), 3),
        decomposition=[decompose(rounds, "sse"), decompose(rounds, "annotated")],
        server_modules=modules,
        torch_mapped_after=got.torch_mapped,
        camera_settings=camera_settings,
        fine=got.fine,
        profile=got.profile,
    )
    _ratio_targets(bench, bench.results.cameras)
    _other_targets(bench, bench.results.cameras)


def _fps(windows: list[CamWindow]) -> str:
    return f"{statistics.median(w.detect_fps_total for w in windows):.2f}/s"


def _ratio_targets(bench: Bench, res: CamerasResult) -> None:
    rounds = res.rounds
    how = (
        f"{len(rounds)} rounds of {bench.plan.window:g}-s windows (sse-1, sse-4, ultralytics-4, annotated-4, "
        f"annotated-1; reversed every other round) after {bench.plan.settle:g} s of warm-up each; 4 VGA "
        f"cameras at {FPS:g} fps; verdict on the median of the pair ratios"
    )
    sse_pairs = [r.sse_ratio for r in rounds]
    bench.target(
        "cams-sse",
        "4 cameras / 1 camera, total detections/s, SSE viewers (the target's figure)",
        f"{res.sse_ratio:.3f}x (pairs {sse_pairs}; {_fps([r.sse_4 for r in rounds])} vs "
        f"{_fps([r.sse_1 for r in rounds])})",
        ">= 0.9x",
        res.sse_ratio >= 0.9,
        how + "; detections = SSE events received",
    )
    fine = res.fine.get("default")
    if fine is not None:
        bench.target(
            "cams-sse-fine",
            "same, drift-robust check: short 1-/4-camera SSE window pairs",
            f"{fine.ratio_median:.3f}x (IQR {fine.ratio_q1:.3f}-{fine.ratio_q3:.3f}; {fine.below_0_9} of "
            f"{len(fine.pairs)} pairs below 0.9; inference time 4/1: {fine.inference_ratio_median}x; "
            f"{fine.quiet_pairs} quiet pairs: {fine.quiet_ratio_median}x)",
            ">= 0.9x",
            fine.ratio_median >= 0.9,
            f"{len(fine.pairs)} pairs of {fine.window:g}-s windows after {fine.settle:g} s each, "
            "order 1 4, 4 1, ...; quiet: other processes used < 0.1 core",
        )
    single = res.fine.get("threads=1")
    if fine is not None and single is not None:
        bench.target(
            "cams-sse-threads1",
            "diagnosis: the same short pairs on a server with threads = 1 (ONNX Runtime pool of one)",
            f"{single.ratio_median:.3f}x (IQR {single.ratio_q1:.3f}-{single.ratio_q3:.3f}; inference time "
            f"4/1: {single.inference_ratio_median}x); 1-camera detections/s {single.detect_fps_median:.2f} "
            f"vs {fine.detect_fps_median:.2f} on the default",
            "-",
            None,
            "pairs alternate between the two servers (default, threads=1), same cameras",
        )
    ann_pairs = [r.annotated_ratio for r in rounds]
    bench.target(
        "cams-annotated",
        "same with one annotated viewer per camera (beside the target)",
        f"{res.annotated_ratio:.3f}x (pairs {ann_pairs}; {_fps([r.annotated_4 for r in rounds])} vs "
        f"{_fps([r.annotated_1 for r in rounds])})",
        ">= 0.9x",
        res.annotated_ratio >= 0.9,
        "fresh detections from /stats frames_detected; every camera frame is also drawn and encoded",
    )


def _other_targets(bench: Bench, res: CamerasResult) -> None:
    rounds = res.rounds
    ultra = statistics.median(r.ultralytics_4.rate for r in rounds)
    bench.target(
        "cams-vs-ultralytics",
        "espdetect 4 cameras / Ultralytics predict on a .streams file of the 4 cameras",
        f"SSE {res.sse_vs_ultralytics:.3f}x, annotated {res.annotated_vs_ultralytics:.3f}x "
        f"(Ultralytics {ultra:.2f} results/s; pairs "
        f"{[r.sse_vs_ultralytics for r in rounds]} / {[r.annotated_vs_ultralytics for r in rounds]})",
        "- (reference; was 1/1.2 = 0.83x)",
        None,
        "Ultralytics' window sits between espdetect's sse-4 and annotated-4 windows of the same round; "
        "results/s summed over the 4 streams",
    )
    mapped = res.torch_mapped_after or bool(res.server_modules.get("torch"))
    bench.target(
        "no-torch",
        "torch imported by the onnxruntime server",
        f"sys.modules at READY: {res.server_modules}; "
        f"libtorch mapped after the run: {res.torch_mapped_after}",
        "not imported",
        not mapped,
        "the server child of this section (create_app + StreamingServer), backend auto on the .onnx file",
    )
