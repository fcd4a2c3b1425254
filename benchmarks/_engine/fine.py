"""A drift-robust check of the 4-camera ratio: many short SSE windows, 1 and 4 cameras in turn.

This machine's speed drifts by a quarter or more within minutes (the same inference takes 60 ms
in one window and 110 ms in another), and other jobs come and go on it, so a handful of 20-s
window pairs can land on either side of a target by chance. Here pairs of short windows (5 s
after 2 s of settling; the cameras released in between, as in the main rounds) alternate
``1 4, 4 1, 1 4, ...`` so that each pair sees nearly the same machine; the median and quartiles
of many pair ratios, and of the pairs' inference-time ratios, tell whether 4 cameras cost
anything systematic. Pairs whose windows saw other processes use >= 0.1 core are also
summarised apart ("quiet" pairs).

Several servers can be compared pair by pair (``envs``): `cameras_run` runs the default server
next to one with ``threads = 1`` (ONNX Runtime's intra-op pool of one thread), which isolates
how much of a slowdown comes from the pool's threads being preempted by other work.
"""

from __future__ import annotations

import logging
import statistics
from typing import Final

from benchmarks._engine.cameras import CamEnv, espdetect_window
from benchmarks._engine.common import ratio
from benchmarks._engine.context import Bench
from benchmarks._engine.results import FinePair, FineResult

__all__ = ["QUIET", "SETTLE", "WINDOW", "fine_pairs", "summarise"]

logger = logging.getLogger(__name__)

WINDOW: Final = 5.0
SETTLE: Final = 2.0
#: Foreign load (cores) below which a pair counts as measured on a quiet machine.
QUIET: Final = 0.1


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return round(q1, 3), round(q2, 3), round(q3, 3)


async def _pair(bench: Bench, env: CamEnv, k: int) -> FinePair:
    order = (1, 4) if k % 2 == 0 else (4, 1)
    windows = {
        n: await espdetect_window(bench, env, "sse", n, 100 + k, timing=(SETTLE, WINDOW)) for n in order
    }
    one, four = windows[1], windows[4]
    return FinePair(
        first=order[0],
        sse_1=one.detect_fps_total,
        sse_4=four.detect_fps_total,
        ratio=ratio(four.detect_fps_total, one.detect_fps_total),
        inference_ms_1=one.inference_ms_mean,
        inference_ms_4=four.inference_ms_mean,
        event_loop_pct_1=one.server_threads_pct.get("event loop", 0.0),
        event_loop_pct_4=four.server_threads_pct.get("event loop", 0.0),
        foreign_cores=max(one.foreign_cores, four.foreign_cores),
    )


def summarise(label: str, pairs: list[FinePair]) -> FineResult:
    ratios = [p.ratio for p in pairs]
    slower = [
        ratio(p.inference_ms_4, p.inference_ms_1) for p in pairs if p.inference_ms_1 and p.inference_ms_4
    ]
    quiet = [p.ratio for p in pairs if p.foreign_cores < QUIET]
    q1, median, q3 = _quartiles(ratios)
    result = FineResult(
        server=label,
        window=WINDOW,
        settle=SETTLE,
        pairs=pairs,
        ratio_median=median,
        ratio_q1=q1,
        ratio_q3=q3,
        below_0_9=sum(1 for r in ratios if r < 0.9),
        inference_ratio_median=round(statistics.median(slower), 3) if slower else None,
        quiet_pairs=len(quiet),
        quiet_ratio_median=round(statistics.median(quiet), 3) if quiet else None,
        detect_fps_median=round(statistics.median(p.sse_1 for p in pairs), 3),
    )
    logger.info("fine pairs %s: median 4/1 %.3f (IQR %.3f-%.3f), %d of %d below 0.9, inference 4/1 %s, "
                "quiet pairs %d: %s", label, median, q1, q3, result.below_0_9, len(pairs),
                result.inference_ratio_median, len(quiet), result.quiet_ratio_median)  # fmt: skip
    return result


async def fine_pairs(bench: Bench, envs: dict[str, CamEnv], pairs: int) -> dict[str, FineResult]:
    """``pairs`` short window pairs on each server of ``envs``, the servers taking turns pair by pair."""
    done: dict[str, list[FinePair]] = {label: [] for label in envs}
    for k in range(pairs):
        for label, env in envs.items():
            done[label].append(await _pair(bench, env, k))
    return {label: summarise(label, found) for label, found in done.items()}
