"""`estimate_sweep` counts what a sweep will do (a fake clock times the calls)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import pytest

from espdetect.profiling.config import grid
from espdetect.profiling.estimate import RUN_OVERHEAD_S, SweepEstimate, estimate_sweep
from espdetect.profiling.replay import load_clip

from ._squares import SquareFactory


def clock_of(step: float) -> Callable[[], float]:
    """A fake clock that moves ``step`` seconds each time it is read."""
    ticks = itertools.count(0.0, step)
    return lambda: next(ticks)


def test_estimate_counts_the_sweeps_model_calls(square_clip: Path) -> None:
    configs = grid(model="squares.pt", skip=[1, 2])
    # Every timed call takes one tick of a fake clock: 10 ms.
    est = estimate_sweep(
        square_clip, configs, repeats=2, detector_factory=SquareFactory(), clock=clock_of(0.01)
    )
    assert est.configurations == 2 and est.repeats == 2 and est.frames == 30 and est.runs == 4
    assert est.call_seconds == {"squares.pt@640": pytest.approx(0.01)}
    # Per repeat: skip 1 detects 30 frames, skip 2 15; each twice (the baseline alongside), plus
    # 2 x 5 probe calls and 2 warm-up frames; then one reference pass over the 30 frames.
    assert est.model_calls == 2 * (30 * 2 + 10 + 2) + 2 * (15 * 2 + 10 + 2) + 30
    assert est.text.startswith("2 configurations x 2 repeats on 30 frames: about ")
    more = estimate_sweep(
        square_clip, configs, repeats=4, detector_factory=SquareFactory(), clock=clock_of(0.01)
    )
    alone = estimate_sweep(
        square_clip,
        configs,
        repeats=2,
        baseline=False,
        detector_factory=SquareFactory(),
        clock=clock_of(0.01),
    )

    def work(e: SweepEstimate) -> float:  # the part that scales with frames and calls
        return e.seconds - e.runs * RUN_OVERHEAD_S

    assert more.seconds > 1.8 * est.seconds and work(alone) < 0.7 * work(est)
    # In realtime mode every run lasts the clip (about 2 s), and its baseline alongside too.
    slow = estimate_sweep(
        square_clip,
        configs,
        repeats=2,
        mode="realtime",
        detector_factory=SquareFactory(),
        clock=clock_of(0.0),
    )
    duration = load_clip(square_clip).duration_s
    assert work(slow) == pytest.approx(2 * 2 * 2 * duration)
