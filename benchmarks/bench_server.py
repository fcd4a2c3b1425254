"""Server benchmarks of the "Production server" issue: espdetect against the per-viewer design.

Everything runs on this machine against emulated ESP32-CAMs (VGA 640x480, the photo scene) with
the real model (``$ESPDETECT_MODEL``, fixed 640 input). Each measured program runs in a process
of its own so its CPU time can be read with psutil (user + system, all threads):

* cameras: `benchmarks._harness.children` ``cameras`` (one process, several `Emulator` instances);
* the espdetect server: `benchmarks._harness.children` ``serve`` (`create_app` + `StreamingServer`);
* the baseline: `benchmarks.baseline_per_viewer` (one camera connection, one inference and one
  encode per viewer, inside the request's async generator);
* the model alone, and Ultralytics' own ``predict(stream=True)``: `benchmarks._server.runner`.

Viewers are raw asyncio sockets in this process. The machine has 2 cores and is shared with other
work, so every comparison is made within one run, with the two sides measured in alternating
windows (A B B A ...), and the machine-wide CPU use of each window is recorded next to it.

Targets (see benchmarks/README.md for the methods, and the summary this writes):

1. viewer disconnect -> its server-side work stopped (p99 <= 100 ms); last viewer gone ->
   camera connection closed (<= grace period + 100 ms);
2. no viewers: no camera connection, server CPU <= 0.5 % of a core;
3. 50 annotated viewers cost <= 1.25x the CPU of 1; model calls per camera frame <= 1;
4. annotated output >= 0.9x the model-only rate with a 30 fps camera (and, strictly, detections);
5. latency added by the server (frame arrival to last byte received) minus inference:
   p50 <= 10 ms, p99 <= 30 ms, flat over the run (camera at 3x the model's rate);
6. end-to-end fps against Ultralytics' own streaming predict while serving 10 viewers: >= 1.0x;
7. cost against the number of viewers (1, 10, 50, 100) and cameras (1, 2, 4, 8).

Usage::

    python -m benchmarks.bench_server --out benchmarks/results/server [--quick] [--only 1,3,5]
        [--duration SECONDS] [--baseline-viewers N] [--baseline-generator async|async-bare|sync]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import platform
import sys
import time
from pathlib import Path

import psutil

from benchmarks._harness.procs import ProcessGroup
from benchmarks._harness.report import utc_now, versions
from benchmarks._server.baseline import baseline_section
from benchmarks._server.context import Bench
from benchmarks._server.disconnect import disconnect_section
from benchmarks._server.idle import idle_section
from benchmarks._server.latency import latency_section
from benchmarks._server.launch import launch
from benchmarks._server.model_rate import model_rate_section
from benchmarks._server.plan import Plan
from benchmarks._server.report import write_outputs
from benchmarks._server.results import Meta, Results, ServerWindow
from benchmarks._server.viewers_cost import calls_per_frame_target, cpu_targets, one_vs_fifty, scaling_section
from benchmarks._server.vs_ultralytics import ultralytics_section
from benchmarks._server.windows import stop_env

logger = logging.getLogger(__name__)

ALL_TARGETS = frozenset(range(1, 8))


async def main_server_sections(bench: Bench) -> None:
    """Targets 2, 1, 3, 7, 4 and 6, in that order, on the main espdetect server."""
    env, only, results = bench.envs["main"], bench.only, bench.results
    try:
        if 2 in only:
            await idle_section(bench, env)
        if 1 in only:
            await disconnect_section(bench, env)
        windows_1_50: dict[int, list[ServerWindow]] = {}
        if only & {3, 7}:
            windows_1_50 = await one_vs_fifty(bench, env, "c0")
        if 3 in only:
            results.viewers_1_vs_50 = windows_1_50
            results.viewers_1_vs_50_fixed = await one_vs_fifty(bench, env, "fixed")
            cpu_targets(bench, windows_1_50, results.viewers_1_vs_50_fixed)
        if 7 in only:
            await scaling_section(bench, env, windows_1_50)
        if 3 in only:
            calls_per_frame_target(bench)
        if 4 in only:
            await model_rate_section(bench, env, bench.helpers["model"])
        if 6 in only:
            await ultralytics_section(bench, env, bench.helpers["ultralytics"])
    finally:
        for child in bench.helpers.values():
            bench.group.stop(child)
        await stop_env(bench.group, env)


async def run(bench: Bench, out: Path) -> None:
    """Every selected section; the processes are stopped and the outputs written whatever happens."""
    started = time.time()
    try:
        await launch(bench)
        if bench.only & {1, 2, 3, 4, 6, 7}:
            await main_server_sections(bench)
        if 5 in bench.only:
            await latency_section(bench)
        if bench.only & {1, 3, 7}:
            await baseline_section(bench)
    finally:
        bench.group.close()
        meta = bench.results.meta
        meta.finished = utc_now()
        meta.elapsed_s = round(time.time() - started, 1)
        meta.load_average_end = list(os.getloadavg())
        write_outputs(out, bench.results, bench.latency_frames)


def make_meta(model: str, plan: Plan, only: set[int]) -> Meta:
    found = versions("ultralytics", "onnxruntime")
    return Meta(
        started=utc_now(),
        platform=platform.platform(),
        python=platform.python_version(),
        cpus=psutil.cpu_count(),
        model=Path(model).name,
        ultralytics=found["ultralytics"],
        onnxruntime=found["onnxruntime"],
        load_average_start=list(os.getloadavg()),
        quick=plan.quick,
        only=sorted(only),
        command=" ".join(["python -m benchmarks.bench_server", *sys.argv[1:]]),
    )


def parse_only(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected target numbers such as 1,3,5, got {text!r}") from None
    if not values or any(v not in ALL_TARGETS for v in values):
        raise argparse.ArgumentTypeError(f"expected target numbers between 1 and 7, got {text!r}")
    return values


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/server"))
    parser.add_argument("--quick", action="store_true", help="short windows and few trials (about 7 minutes)")
    parser.add_argument("--only", type=parse_only, default=None, help="targets to run, e.g. 1,3,5")
    parser.add_argument("--duration", type=float, default=None, help="seconds of the latency run (target 5)")
    parser.add_argument(
        "--baseline-viewers", type=int, default=None, help="viewers of the baseline's big window"
    )
    parser.add_argument("--baseline-generator", choices=("async", "async-bare", "sync"), default="async")
    parser.add_argument("--model", default=os.environ.get("ESPDETECT_MODEL"), help="default $ESPDETECT_MODEL")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    if not args.model or not Path(args.model).exists():
        parser.error(
            f"expected --model or $ESPDETECT_MODEL to name an existing model file, got {args.model!r}"
        )
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # The children (servers, helpers) find the model through the environment too.
    model = os.environ["ESPDETECT_MODEL"] = str(Path(args.model).resolve())
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(message)s",
        datefmt="%H:%M:%S",
    )
    args.out.mkdir(parents=True, exist_ok=True)
    plan = Plan.make(args.quick, args.duration, args.baseline_viewers)
    only = set(args.only) if args.only else set(ALL_TARGETS)
    bench = Bench(
        plan=plan,
        only=only,
        model=model,
        baseline_generator=args.baseline_generator,
        group=ProcessGroup(args.out / "logs"),
        results=Results(meta=make_meta(model, plan, only), plan=plan),
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(bench, args.out))
    return 0 if bench.results.targets else 1


if __name__ == "__main__":
    sys.exit(main())
