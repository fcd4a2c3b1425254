"""`estimate_sweep`: what a sweep will cost on this machine, before it starts.

A sweep's time is mostly model calls: for every configuration and repeat, one per detected
frame of the clip (fewer with a larger skip), the same again for the baseline replayed alongside
it, a few for the speed probes around every run, and one per frame for the accuracy reference,
once. The estimate times a few calls of each model and input size the grid uses on a frame of
the clip (a second or two each), and the per-frame work that is not the model (decode, draw,
encode) on the same frame, then counts, adding `RUN_OVERHEAD_S` per run. In ``realtime`` mode
a run lasts as long as the clip.

It is an estimate: ``skip="auto"`` is counted as every second frame, motion gating as if
everything moved (the most it can cost), and the machine's speed may change while the sweep
runs; the sweep's own progress bar corrects it as runs finish.

Example:
    >>> est = estimate_sweep(clip, grid(skip=[1, 2, 4]), repeats=3)  # doctest: +SKIP
    >>> print(est.text)  # doctest: +SKIP
    3 configurations x 3 repeats on 151 frames: about 4.1 minutes on this machine ...
"""

from __future__ import annotations

import functools
import logging
import math
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from espdetect.annotate import Annotator
from espdetect.detections import Detections
from espdetect.detectors.base import Detector, DetectParams
from espdetect.encoders.jpeg import JpegEncoder
from espdetect.frame import decode_jpeg
from espdetect.profiling.config import ProfileConfig
from espdetect.profiling.detectors import DetectorCache, default_factory
from espdetect.profiling.replay import ClipData, load_clip

__all__ = ["AUTO_SKIP_ESTIMATE", "RUN_OVERHEAD_S", "SweepEstimate", "estimate_sweep"]

logger = logging.getLogger(__name__)

#: ``skip="auto"`` adapts to the machine; counted as detecting every second frame.
AUTO_SKIP_ESTIMATE = 2
#: Model calls timed per (model, input size) to estimate one call.
_TIMED_CALLS = 3
#: Seconds each measured run costs besides its frames: loading its settings, scoring its
#: detections against the reference, writing its rows, handing the machine over between the
#: run and its baseline. Measured on the 2-core test machine (notebook 03's default grid: 12
#: runs took 42 s longer than their frames and model calls).
RUN_OVERHEAD_S = 3.0


@dataclass(frozen=True)
class SweepEstimate:
    """What a sweep will cost (`estimate_sweep`)."""

    configurations: int
    repeats: int
    frames: int
    #: Measured runs: configurations x repeats (a baseline run alongside each counts in ``seconds``).
    runs: int
    #: Model calls in all: the configurations', the baseline's, the probes' and the reference's.
    model_calls: int
    #: Median seconds of one model call, per ``model@imgsz`` timed.
    call_seconds: dict[str, float]
    #: Seconds of the per-frame work besides the model (decode, draw, encode).
    frame_seconds: float
    #: The estimated total, in seconds.
    seconds: float

    @property
    def minutes(self) -> float:
        return self.seconds / 60.0

    @property
    def text(self) -> str:
        """One line: the grid, the estimate, and where the time goes."""
        calls = ", ".join(f"{key} {s * 1000:.0f} ms" for key, s in self.call_seconds.items())
        return (
            f"{self.configurations} configurations x {self.repeats} repeats on {self.frames} frames: "
            f"about {_duration(self.seconds)} on this machine ({self.model_calls} model calls at {calls} "
            "each, measured just now)"
        )


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} minutes"
    return f"{seconds / 3600:.1f} hours"


def _detected_frames(config: ProfileConfig, frames: int) -> int:
    skip = AUTO_SKIP_ESTIMATE if config.skip == "auto" else int(config.skip)
    return math.ceil(frames / max(1, skip))


def _time(work: Callable[[], object], calls: int, clock: Callable[[], float]) -> float:
    times = []
    for _ in range(calls):
        start = clock()
        work()
        times.append(clock() - start)
    return statistics.median(times)


def _frame_seconds(clip: ClipData, clock: Callable[[], float]) -> float:
    """Decode, draw and encode of one clip frame: the replay's work besides the model."""
    jpeg = clip.frame(0).jpeg
    assert jpeg is not None
    encoder = JpegEncoder(quality=80)
    annotator = Annotator()

    def work() -> None:
        image = decode_jpeg(jpeg)
        encoder.encode(annotator.annotate(image, Detections.empty(), copy=False))

    work()
    return _time(work, _TIMED_CALLS, clock)


def estimate_sweep(
    clip: str | Path | ClipData,
    configs: Iterable[ProfileConfig],
    *,
    repeats: int = 3,
    mode: str = "fast",
    baseline: bool = True,
    reference: bool = True,
    probe_calls: int = 5,
    warmup: int = 2,
    detector_factory: Callable[[ProfileConfig], Detector] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> SweepEstimate:
    """Estimate how long `sweep` takes for ``configs`` on ``clip`` on this machine, now.

    Loads each model the grid uses (as the sweep will), times a few calls at each input size on
    the clip's first frame, and counts the calls the sweep makes (see the module's docstring).

    Args:
        clip, configs, repeats, mode, warmup, probe_calls: as given to `sweep`.
        baseline: whether runs are paired with a baseline (`sweep`'s default).
        reference: whether accuracy is measured (one reference pass over the clip).
        detector_factory: loads detectors (default: `default_factory` on the CPU); pass the one
            the sweep will use (a `DetectorCache`'s ``get``) so each model loads once.

    Example:
        >>> est = estimate_sweep("clips/desk", grid(skip=[1, 2]), repeats=3)  # doctest: +SKIP
        >>> round(est.minutes, 1)  # doctest: +SKIP
        2.4
    """
    data = clip if isinstance(clip, ClipData) else load_clip(clip)
    grid = list(configs)
    if not grid:
        raise ValueError("expected at least one configuration, got none")
    if repeats < 1:
        raise ValueError(f"expected repeats >= 1, got {repeats}")
    cache = DetectorCache(detector_factory or default_factory("cpu"))
    image = data.frame(0).image()
    call_s: dict[str, float] = {}
    for config in grid:
        key = f"{Path(config.model).name}@{config.imgsz}"
        if key in call_s:
            continue
        detector = cache.get(config)
        params = DetectParams(imgsz=config.imgsz, conf=config.conf)
        call_s[key] = _time(functools.partial(detector.detect, image, params), _TIMED_CALLS, clock)
    frame_s = _frame_seconds(data, clock)
    return _count(data, grid, call_s, frame_s, repeats, mode, baseline, reference, probe_calls, warmup)


def _count(
    clip: ClipData,
    grid: Sequence[ProfileConfig],
    call_s: dict[str, float],
    frame_s: float,
    repeats: int,
    mode: str,
    baseline: bool,
    reference: bool,
    probe_calls: int,
    warmup: int,
) -> SweepEstimate:
    frames = len(clip)
    total = 0.0
    calls = 0
    first = call_s[f"{Path(grid[0].model).name}@{grid[0].imgsz}"]
    for config in grid:
        one = call_s[f"{Path(config.model).name}@{config.imgsz}"]
        detected = _detected_frames(config, frames)
        run = clip.duration_s if mode == "realtime" else detected * one + frames * frame_s
        run += warmup * (one + frame_s)
        # The baseline takes turns with the run for as long as it lasts: twice the time.
        total += repeats * (run * (2 if baseline else 1) + 2 * probe_calls * first + RUN_OVERHEAD_S)
        calls += repeats * (detected * (2 if baseline else 1) + 2 * probe_calls + warmup)
    if reference:
        best = max(call_s.values())
        total += frames * (best + frame_s)
        calls += frames
    return SweepEstimate(
        configurations=len(grid),
        repeats=repeats,
        frames=frames,
        runs=len(grid) * repeats,
        model_calls=calls,
        call_seconds=call_s,
        frame_seconds=frame_s,
        seconds=total,
    )
