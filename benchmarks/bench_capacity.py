"""How many 15 fps VGA cameras this machine serves (issue 13), twice, then held for minutes.

1. Two capacity runs (`espdetect.profiling.capacity.measure_capacity`, what ``espdetect capacity``
   runs): emulated 15 fps VGA cameras (the photos scene: always moving, so every camera needs the
   model all the time), one detections-only (SSE) viewer each, targets 15 fps output and
   >= 2 detections/s per camera. Target: the two answers agree within one camera.
2. The hold: that many cameras (the smaller answer) served for ``--hold-seconds`` (300), judged
   minute by minute against the same targets (`hold_capacity`). Target: every minute passes.
3. Beside it (``--no-annotated`` skips it): the same capacity run with annotated MJPEG viewers,
   where decoding, drawing and encoding every frame competes with the model.

The model is ``--model`` / ``$ESPDETECT_MODEL``, else the bundled one. Writes ``capacity.json``
(every figure), ``summary.md`` (targets with PASS/FAIL and per-step tables), and per run its
``capacity.csv``, ``capacity.png`` and ``logs/`` in ``run1/``, ``run2/``, ``hold/``, ``annotated/``.

Usage::

    python -m benchmarks.bench_capacity --out benchmarks/results/capacity      # about 15-20 min
    python -m benchmarks.bench_capacity --out /tmp/cap --seconds 10 --warmup 5 --hold-seconds 60 \\
        --no-annotated                                                          # a quick look
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks._harness.report import load_average, markdown_table, start_run, utc_now, write_json
from espdetect.exceptions import MissingDependency
from espdetect.profiling.capacity import (
    CameraLoad,
    CapacityResult,
    CapacityStep,
    CapacityTargets,
    hold_capacity,
    measure_capacity,
)

logger = logging.getLogger(__name__)

#: Issue 13's "done when": 15 fps VGA cameras, >= 2 detections/s and 15 fps output each.
TARGETS = CapacityTargets(target_fps=15.0, min_detections=2.0)
LOAD = CameraLoad(fps=15.0, size=(640, 480))


def _step_table(steps: Sequence[CapacityStep], first: str = "cameras") -> str:
    return markdown_table(
        [first, "out fps (worst)", "in fps", "detections/s (worst, while needed)", "detections/s all",
         "p95 ms", "server CPU %", "RSS MB", "machine cores", "harness CPU %", "other CPU %",
         "share needing the model", "inference p50 ms", "model busy", "verdict"],
        [[i, s.out_fps, s.in_fps, s.detections_per_s, s.detections_total_per_s, s.latency_p95_ms,
          s.cpu_percent, s.rss_mb, s.machine_cores_busy, s.harness_cpu_percent, s.other_cpu_percent,
          s.active_share,
          s.inference_ms_p50, s.model_busy,
          f"pass ({s.closest} {s.margin * 100:+.0f} %)" if s.passed else f"FAIL: {s.reason}"]
         for i, s in zip([str(s.cameras) for s in steps] if first == "cameras" else
                         [str(n + 1) for n in range(len(steps))], steps, strict=True)],
        align="rrrrrrrrrrrrrrl",
    )  # fmt: skip


def _save(result: CapacityResult, folder: Path) -> None:
    result.write_csv(folder / "capacity.csv")
    try:
        result.plot(folder / "capacity.png")
    except MissingDependency:
        logger.warning("no plot: matplotlib is not installed")


def _run(name: str, out: Path, args: argparse.Namespace, kind: str = "sse") -> tuple[CapacityResult, float]:
    logger.info("%s: capacity run with %s viewers", name, kind)
    start = time.monotonic()
    result = measure_capacity(
        TARGETS,
        LOAD,
        viewers=1,
        viewer_kind="annotated" if kind == "annotated" else "sse",
        max_cameras=args.max_cameras,
        seconds=args.seconds,
        warmup=args.warmup,
        out_dir=out / name,
        on_step=lambda step: logger.info("%s: %s", name, step.summary()),
    )
    took = time.monotonic() - start
    _save(result, out / name)
    logger.info("%s: capacity %d cameras (%.0f s)\n%s", name, result.capacity, took, result.text)
    return result, took


def _result_json(result: CapacityResult, took: float) -> dict[str, Any]:
    return {
        "capacity": result.capacity,
        "seconds": round(took, 1),
        "text": result.text,
        "bottleneck": None if result.bottleneck is None else asdict(result.bottleneck),
        "steps": result.rows(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="results folder")
    parser.add_argument(
        "--model", default=None, help="model file (default $ESPDETECT_MODEL, else the bundled)"
    )
    parser.add_argument("--seconds", type=float, default=30.0, help="measured seconds per step (30)")
    parser.add_argument("--warmup", type=float, default=10.0, help="warm-up seconds per step (10)")
    parser.add_argument("--max-cameras", type=int, default=8, help="most cameras tried (8)")
    parser.add_argument("--hold-seconds", type=float, default=300.0, help="the hold's length (300)")
    parser.add_argument("--hold-every", type=float, default=60.0, help="the hold's judged windows (60)")
    parser.add_argument("--no-annotated", action="store_true", help="skip the annotated-viewer run")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    out: Path = args.out
    meta = start_run(out, args.model, args.verbose, "onnxruntime", "numpy")
    began = time.monotonic()

    run1, took1 = _run("run1", out, args)
    run2, took2 = _run("run2", out, args)
    agree = abs(run1.capacity - run2.capacity) <= 1
    n = min(run1.capacity, run2.capacity)

    hold: list[CapacityStep] = []
    hold_took = 0.0
    if n >= 1:
        logger.info("hold: %d cameras for %g s", n, args.hold_seconds)
        start = time.monotonic()
        hold = hold_capacity(
            TARGETS,
            n,
            LOAD,
            seconds=args.hold_seconds,
            every=args.hold_every,
            warmup=args.warmup,
            out_dir=out / "hold",
            on_step=lambda step: logger.info("hold: %s", step.summary()),
        )
        hold_took = time.monotonic() - start
    held = bool(hold) and all(s.passed for s in hold)

    annotated: tuple[CapacityResult, float] | None = None
    if not args.no_annotated:
        annotated = _run("annotated", out, args, kind="annotated")

    meta.update(loadavg_end=load_average(), finished=utc_now(), seconds=round(time.monotonic() - began, 1))
    write_json(
        out / "capacity.json",
        {
            "meta": meta,
            "command": " ".join(["python -m benchmarks.bench_capacity", *(argv or sys.argv[1:])]),
            "targets": asdict(TARGETS),
            "cameras": LOAD.describe(),
            "run1": _result_json(run1, took1),
            "run2": _result_json(run2, took2),
            "agree_within_one": agree,
            "hold": {
                "cameras": n,
                "seconds": args.hold_seconds,
                "every": args.hold_every,
                "took": round(hold_took, 1),
                "held": held,
                "windows": [asdict(s) for s in hold],
            },
            "annotated": None if annotated is None else _result_json(*annotated),
        },
    )
    (out / "summary.md").write_text(
        _summary(meta, args, run1, run2, agree, n, hold, held, annotated), encoding="utf-8"
    )
    print((out / "summary.md").read_text(encoding="utf-8"))
    return 0 if agree and held else 1


def _summary(
    meta: dict[str, Any],
    args: argparse.Namespace,
    run1: CapacityResult,
    run2: CapacityResult,
    agree: bool,
    n: int,
    hold: list[CapacityStep],
    held: bool,
    annotated: tuple[CapacityResult, float] | None,
) -> str:
    worst = min((s.margin for s in hold), default=float("nan"))
    targets = markdown_table(
        ["target", "goal", "measured", "verdict"],
        [
            ["two capacity runs agree", "within one camera",
             f"{run1.capacity} and {run2.capacity} cameras", "PASS" if agree else "FAIL"],
            [f"{n} cameras served for {args.hold_seconds:g} s", "every minute passes",
             f"{sum(s.passed for s in hold)} of {len(hold)} windows passed "
             f"(smallest margin {worst * 100:+.0f} %)",
             "PASS" if held else "FAIL"],
        ],
    )  # fmt: skip
    parts = [
        "# Capacity benchmark",
        "",
        f"{meta['date']} to {meta['finished']} ({meta['seconds']:.0f} s) on {meta['machine']} "
        f"(load average {meta['loadavg_start']} at start, {meta['loadavg_end']} at the end); "
        f"model `{meta['model']}` (ONNX Runtime {meta.get('onnxruntime')}).",
        "",
        f"Cameras: {LOAD.describe()}, emulated in a child process. Targets per camera: "
        f"{TARGETS.describe()} (output met down to {TARGETS.fps_floor:g} fps). Each step: "
        f"{args.warmup:g} s warm-up, {args.seconds:g} s measured. One detections-only (SSE) viewer per "
        "camera: the model's throughput without rendering competing (see decisions.md); annotated "
        "viewers below. `harness CPU` is the emulated camera plus the viewers: CPU real cameras would "
        "not take from this 2-core machine, so the capacity is if anything underestimated. `other CPU` is "
        "every other process on the machine (other work shares it): steps with much of it measure less "
        "than the machine's quiet capacity.",
        "",
        "## Targets",
        "",
        targets,
        "",
    ]
    for name, result in (("Run 1", run1), ("Run 2", run2)):
        parts += [f"## {name}: {result.capacity} cameras", "", result.text.replace("\n", "  \n"), "",
                  _step_table(result.steps), ""]  # fmt: skip
    parts += [f"## Hold: {n} cameras for {args.hold_seconds:g} s, judged every {args.hold_every:g} s", ""]
    parts += [_step_table(hold, first="window") if hold else "(nothing held: the capacity was 0)", ""]
    if annotated is not None:
        result = annotated[0]
        parts += [
            f"## Beside it: annotated MJPEG viewers: {result.capacity} cameras",
            "",
            "Same cameras and targets, one annotated viewer per camera: every frame is decoded, drawn and "
            "encoded for the viewer, which takes CPU the model needs.",
            "",
            result.text.replace("\n", "  \n"),
            "",
            _step_table(result.steps),
            "",
        ]
    return "\n".join(parts)


if __name__ == "__main__":
    sys.exit(main())
