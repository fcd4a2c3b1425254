"""Noise-aware measurement: a speed probe of the machine, honest intervals on few repeats, drift.

This machine's CPU speed drifts (about ±25 % over minutes, with no sign of it in ``/proc/stat``),
so one configuration's fps moves from repeat to repeat whatever it does. Three tools, the way
pyperf calibrates and hyperfine warns about outliers:

* `SpeedProbe`: a fixed workload (one detector on one fixed frame, a few calls) timed before and
  after every run of a sweep. Its calls per second are the machine's *speed index*; a run during
  which it moved more than a threshold is flagged (and measured again when asked).
* `log_t_interval`: a 95 % confidence interval for a ratio or rate from a few repeats, a
  Student-t interval on logarithms (a bootstrap over 3 repeats covers about 76 %, not 95 %);
  `t_quantile` is the quantile it needs, computed here so the core install needs no SciPy.
* `replay_alongside`: a replay and a companion (the baseline) sharing the machine turn by turn
  (frame by frame), so both see the same machine even when its speed
  changes within seconds (this one switches between two speeds about 1.6x apart every 1-6 s).
* `drift_summary`: how much the machine's speed moved during a sweep, as figures and a sentence.

Nothing here needs pandas: `drift_summary` reads the columns of whatever table it is given.

Example:
    >>> round(t_quantile(0.975, 2), 4)
    4.3027
    >>> iv = log_t_interval([1.02, 0.99, 1.01])
    >>> iv.contains(1.0), round(iv.half_width_pct, 1)
    (True, 3.7)
"""

from __future__ import annotations

import functools
import math
import statistics
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import psutil

from espdetect.detectors.base import Detector, DetectParams
from espdetect.frame import Frame
from espdetect.profiling.replay import ClipData, RunTrace

__all__ = [
    "DEFAULT_DRIFT_THRESHOLD",
    "Alongside",
    "DriftSummary",
    "Interval",
    "ProbeReading",
    "RunCost",
    "SpeedProbe",
    "drift",
    "drift_summary",
    "log_t_interval",
    "replay_alongside",
    "speed_index",
    "t_quantile",
]

#: Relative change of the speed index within one run above which the run is flagged (10 %).
DEFAULT_DRIFT_THRESHOLD = 0.10


def _t_cdf_from_zero(x: float, df: int, steps: int = 2000) -> float:
    """P(0 <= T <= x) for Student's t with ``df`` degrees of freedom (Simpson's rule, x >= 0)."""
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    grid = np.linspace(0.0, x, steps + 1)
    density = np.exp(log_norm - (df + 1) / 2 * np.log1p(grid * grid / df))
    weights = np.ones(steps + 1)
    weights[1:-1:2] = 4.0
    weights[2:-1:2] = 2.0
    return float(np.dot(weights, density) * (x / steps) / 3.0)


@functools.lru_cache(maxsize=128)
def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t distribution with ``df`` degrees of freedom.

    Exact closed forms for 1 and 2 degrees of freedom, else bisection on the distribution
    function (accurate to about 1e-9).

    Raises:
        ValueError: ``p`` outside (0, 1) or ``df`` below 1.

    Example:
        >>> [round(t_quantile(0.975, df), 3) for df in (1, 2, 4, 30)]
        [12.706, 4.303, 2.776, 2.042]
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"expected 0 < p < 1, got {p!r}")
    if df < 1:
        raise ValueError(f"expected df >= 1, got {df!r}")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    if df == 1:
        return math.tan(math.pi * (p - 0.5))
    if df == 2:
        return (2.0 * p - 1.0) / math.sqrt(2.0 * p * (1.0 - p))
    target = p - 0.5
    low, high = 0.0, 1.0
    while _t_cdf_from_zero(high, df) < target:
        high *= 2.0
    for _ in range(60):
        mid = (low + high) / 2.0
        if _t_cdf_from_zero(mid, df) < target:
            low = mid
        else:
            high = mid
    return (low + high) / 2.0


class Interval(NamedTuple):
    """A central value with its confidence interval (``low``, ``high``; NaN with fewer than 2 values).

    Example:
        >>> Interval(1.0, 0.96, 1.04, 3).contains(1.0)
        True
    """

    #: The geometric mean of the values.
    center: float
    low: float
    high: float
    #: How many values it rests on.
    n: int
    confidence: float = 0.95

    def contains(self, value: float) -> bool:
        """True when ``value`` lies inside the interval (False when there is none)."""
        return bool(self.low <= value <= self.high)

    @property
    def half_width_pct(self) -> float:
        """Half the interval's width in percent of its center: ``(high / low) ** 0.5 - 1``, x 100.

        On the log scale the interval is symmetric: ``center x/÷ (1 + half_width_pct / 100)``.
        """
        if not (self.low > 0 and math.isfinite(self.high)):
            return math.nan
        return (math.sqrt(self.high / self.low) - 1.0) * 100.0


def log_t_interval(values: Iterable[float], confidence: float = 0.95) -> Interval:
    """The confidence interval of the geometric mean of positive ``values`` (rates or ratios).

    A Student-t interval on their logarithms: ``exp(mean ± t(n-1) x sd / sqrt(n))``. Honest at
    small n when the log values scatter normally around their mean (a run's fps is a product of
    the machine's speed and the configuration's cost); with 3 values ``t`` is 4.30, where a
    normal interval's 1.96 would cover only about 80 %. Values that are not finite and positive
    are left out.

    Example:
        >>> iv = log_t_interval([10.0, 11.0, 10.5])
        >>> round(iv.center, 2), round(iv.low, 2), round(iv.high, 2), iv.n
        (10.49, 9.25, 11.88, 3)
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"expected 0 < confidence < 1, got {confidence!r}")
    logs = [math.log(v) for v in values if isinstance(v, int | float) and math.isfinite(v) and v > 0]
    n = len(logs)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, confidence)
    mean = statistics.fmean(logs)
    if n == 1:
        return Interval(math.exp(mean), math.nan, math.nan, 1, confidence)
    half = t_quantile(0.5 + confidence / 2.0, n - 1) * statistics.stdev(logs) / math.sqrt(n)
    return Interval(math.exp(mean), math.exp(mean - half), math.exp(mean + half), n, confidence)


class ProbeReading(NamedTuple):
    """One reading of the speed probe."""

    #: Probe calls per second (1 / the median call time): higher is a faster machine.
    speed: float
    #: `time.perf_counter` when the reading ended.
    at: float


class SpeedProbe:
    """A fixed workload timed to index the machine's speed: ``detector`` on one image, ``calls`` times.

    The reading is ``1 / median call time`` (calls per second), so one call disturbed by
    something else does not move it; a slower machine reads lower. The workload never changes
    within a sweep, so readings compare across its runs: a run's fps divided by its speed index
    is the same for the same configuration however fast the machine was at the time.

    Example:
        >>> probe = SpeedProbe(detector, image, calls=5)  # doctest: +SKIP
        >>> probe.measure().speed  # doctest: +SKIP
        17.8
    """

    def __init__(
        self,
        detector: Detector,
        image: np.ndarray,
        params: DetectParams | None = None,
        *,
        calls: int = 5,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if calls < 1:
            raise ValueError(f"expected calls >= 1, got {calls}")
        self.detector = detector
        self.image = image
        self.params = params
        self.calls = calls
        self._clock = clock

    def measure(self) -> ProbeReading:
        """Run the workload now and return its speed."""
        times: list[float] = []
        for _ in range(self.calls):
            start = self._clock()
            self.detector.detect(self.image, self.params)
            times.append(self._clock() - start)
        median = statistics.median(times)
        return ProbeReading(1.0 / median if median > 0 else math.inf, self._clock())


def drift(before: float, after: float) -> float:
    """The relative change from ``before`` to ``after`` (``after / before - 1``; NaN if unknown).

    Example:
        >>> round(drift(20.0, 18.0), 3)
        -0.1
    """
    if not (before > 0 and math.isfinite(before) and math.isfinite(after)):
        return math.nan
    return after / before - 1.0


def speed_index(before: float, after: float) -> float:
    """A run's speed index: the geometric mean of the probe before and after it (NaN if unknown)."""
    if not (before > 0 and after > 0 and math.isfinite(before) and math.isfinite(after)):
        return math.nan
    return math.sqrt(before * after)


class RunCost(NamedTuple):
    """What one replay used: its own time, process CPU, other work's CPU and peak memory."""

    #: Seconds the replay ran (its own turns only, with `replay_alongside`).
    wall_s: float
    #: Process CPU seconds (user + system) meanwhile.
    cpu_s: float
    #: CPU the rest of the machine used meanwhile, percent of one core.
    background_cpu_percent: float
    #: Peak resident memory of the process, MiB (NaN when not measured).
    rss_peak_mb: float = math.nan

    @property
    def cpu_percent(self) -> float:
        """Process CPU over wall time x 100 (200 = two cores busy)."""
        return 100.0 * self.cpu_s / self.wall_s if self.wall_s > 0 else math.nan


def _machine_busy_s() -> float:
    t = psutil.cpu_times()
    return float(sum(getattr(t, name, 0.0) for name in ("user", "nice", "system", "irq", "softirq", "steal")))


class _Turns:
    """Whose turn it is among replays in threads, and what each used while it held the turn."""

    def __init__(self, runs: int, turn_s: float, first: int) -> None:
        self._cond = threading.Condition()
        self._holder: int | None = first
        self.finished = [False] * runs
        #: Frames each replay has begun.
        self.frames = [0] * runs
        self._turn_s = turn_s
        self._since = self._cpu0 = self._busy0 = 0.0
        self.wall = [0.0] * runs
        self.cpu = [0.0] * runs
        self.busy = [0.0] * runs
        #: Seconds each replay waited for its turn after it had started.
        self.waited = [0.0] * runs

    def _start(self) -> None:
        self._cpu0 = time.process_time()
        self._busy0 = _machine_busy_s()
        self._since = time.perf_counter()

    def _stop(self, side: int) -> float:
        """End ``side``'s turn in the accounts; the moment its clock stopped."""
        now = time.perf_counter()
        self.wall[side] += now - self._since
        self.cpu[side] += time.process_time() - self._cpu0
        self.busy[side] += _machine_busy_s() - self._busy0
        return now

    def _next(self, side: int) -> int | None:
        n = len(self.finished)
        return next((i % n for i in range(side + 1, side + n + 1) if not self.finished[i % n]), None)

    def begin(self, side: int) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._holder == side)
            self._start()

    def maybe_pass(self, side: int) -> None:
        """Hand the turn on when ``side`` has held it for ``turn_s`` (between two frames)."""
        if time.perf_counter() - self._since < self._turn_s:
            return
        with self._cond:
            following = self._next(side)
            if following == side or following is None:
                return
            stopped = self._stop(side)
            self._holder = following
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._holder == side)
            self._start()
            # From its clock stopping to restarting: the accounting itself is nobody's time.
            self.waited[side] += self._since - stopped

    def end(self, side: int) -> None:
        with self._cond:
            self._stop(side)
            self.finished[side] = True
            self._holder = self._next(side)
            self._cond.notify_all()

    def cost(self, side: int) -> RunCost:
        wall, cpu = self.wall[side], self.cpu[side]
        background = max(0.0, 100.0 * (self.busy[side] - cpu) / wall) if wall > 0 else math.nan
        return RunCost(wall, cpu, background)


class _MainFinished(Exception):
    """The companion stops: the replay it kept company has ended."""


_MAIN, _COMPANION = 0, 1


@dataclass(frozen=True, eq=False)
class _TurnTakingClip(ClipData):
    """A clip whose every frame first offers the machine to the other replay."""

    turns: _Turns
    side: int

    def frame(self, index: int) -> Frame:
        self.turns.maybe_pass(self.side)
        if self.side == _COMPANION and self.turns.finished[_MAIN]:
            raise _MainFinished
        self.turns.frames[self.side] += 1
        return super().frame(index)


#: A replay of a clip (`espdetect.profiling.replay.replay` with its settings bound).
Replay = Callable[[ClipData], RunTrace]


class Alongside(NamedTuple):
    """What `replay_alongside` measured."""

    #: The main replay's trace (``wall_s``: its own turns only) and cost.
    trace: RunTrace
    cost: RunCost
    #: Frames per second of its own time the companion processed while the main replay ran
    #: (NaN when it finished none), or the exception it raised.
    companion_fps: float | Exception


def replay_alongside(
    clip: ClipData, main: Replay, companion: Replay, *, turn_s: float = 0.0, companion_first: bool = False
) -> Alongside:
    """Run ``main`` on ``clip`` taking turns with ``companion``, and measure both over one window.

    The two run in threads of their own, one at a time: each hands the machine to the other
    between two frames once it has held it for ``turn_s`` seconds (0: after every frame). The
    companion replays the clip again and again until ``main`` ends, then stops at its next
    frame, so both see the same stretch of the machine's time, its speed changes included
    (turns are far shorter).
    ``main``'s trace and `RunCost` count only its own turns (its CPU and the machine's during
    them), so its fps, CPU % and per-frame latencies read as if it had run alone. The
    companion's frames per second of its own time over the same window is its fps (in fast
    mode every frame is an output frame: its ``fps_output``).

    Raises:
        Exception: what ``main`` raised (a companion's failure is returned instead).

    Example:
        >>> both = replay_alongside(clip, lambda c: replay(c, det, enc),  # doctest: +SKIP
        ...                         lambda c: replay(c, det, enc, skip=2))
        >>> trace_metrics(both.trace, clip.fps)["fps_output"] / both.companion_fps  # doctest: +SKIP
        0.52
    """
    turns = _Turns(2, turn_s, _COMPANION if companion_first else _MAIN)
    outcome: list[tuple[RunTrace, RunCost] | Exception] = [RuntimeError("the main replay did not run")]
    companion_outcome: list[float | Exception] = [math.nan]

    def run_main() -> None:
        turns.begin(_MAIN)
        try:
            trace = main(_TurnTakingClip(clip.path, clip.frames, clip.fingerprint, turns, _MAIN))
        except Exception as exc:  # raised in the caller's thread below
            outcome[0] = exc
            return
        finally:
            turns.end(_MAIN)
        # The replay's clock ran while it waited for its turns: count its own time only.
        trace.wall_s = max(0.0, trace.wall_s - turns.waited[_MAIN])
        outcome[0] = (trace, turns.cost(_MAIN))

    def run_companion() -> None:
        turns.begin(_COMPANION)
        try:
            while True:  # again and again until the main replay has ended
                companion(_TurnTakingClip(clip.path, clip.frames, clip.fingerprint, turns, _COMPANION))
        except _MainFinished:
            frames, wall = turns.frames[_COMPANION], turns.wall[_COMPANION]
            companion_outcome[0] = frames / wall if frames and wall > 0 else math.nan
        except Exception as exc:  # returned: the main replay's figures stand without it
            companion_outcome[0] = exc
        finally:
            turns.end(_COMPANION)

    threads = [
        threading.Thread(target=run_main, name="espdetect-replay-main"),
        threading.Thread(target=run_companion, name="espdetect-replay-companion"),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result = outcome[0]
    if isinstance(result, Exception):
        raise result
    return Alongside(result[0], result[1], companion_outcome[0])


class DriftSummary(NamedTuple):
    """How much the machine's speed moved during a sweep (`drift_summary`)."""

    #: Measured runs with a speed index.
    runs: int
    #: Largest speed index over the smallest, minus 1, in percent: the drift between runs.
    between_pct: float
    #: Largest relative change of the probe within one run, in percent.
    within_pct: float
    #: Runs whose probe moved more than ``threshold``.
    flagged: int
    #: The sweep's drift threshold (a fraction; NaN when unknown).
    threshold: float
    #: Smallest and largest speed index (probe calls per second).
    speed_min: float
    speed_max: float

    @property
    def sentence(self) -> str:
        """The summary in words, for reports and terminals."""
        if self.runs == 0:
            return (
                "No speed probe in these results (a sweep of schema version 2 or older, or "
                "probe_calls=0): how much the machine drifted is unknown."
            )
        above = f" (drift above {self.threshold * 100:.0f} %)" if math.isfinite(self.threshold) else ""
        flagged = f"{self.flagged} of {self.runs} runs flagged{above}"
        return (
            f"The machine's speed (the probe: {_speed(self.speed_min)} to {_speed(self.speed_max)} calls/s) "
            f"moved by up to {self.between_pct:.0f} % between runs and {self.within_pct:.0f} % "
            f"within one; {flagged}."
        )


def _speed(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


def _column(table: Any, name: str) -> list[Any]:
    if name not in table.columns:
        return []
    return list(table[name])


def drift_summary(results: Any, threshold: float | None = None) -> DriftSummary:
    """The speed-probe figures of a sweep's results table (one row per run) and a sentence.

    ``threshold`` defaults to the sweep's own (``results.attrs["environment"]``), else NaN.
    Runs that were not measured (``status`` other than ``ok``) are left out.

    Example:
        >>> print(drift_summary(load_results("out/sweep1")).sentence)  # doctest: +SKIP
        The machine's speed (the probe: 14.1 to 17.4 calls/s) moved by up to 23 % between runs
        and 4 % within one; 2 of 24 runs flagged (drift above 10 %).
    """
    n = len(results)
    status = _column(results, "status") or ["ok"] * n
    speeds = _column(results, "speed_index") or [math.nan] * n
    drifts = _column(results, "drift") or [math.nan] * n
    flags = _column(results, "drift_flag") or [False] * n
    rows = [
        (_number(s), _number(d), bool(f) if isinstance(f, bool | np.bool_) else False)
        for s, d, f, state in zip(speeds, drifts, flags, status, strict=True)
        if state == "ok" and _number(s) > 0
    ]
    if threshold is None:
        env: Mapping[str, Any] = getattr(results, "attrs", {}).get("environment") or {}
        threshold = _number((env.get("sweep") or {}).get("drift_threshold"))
    if not rows:
        return DriftSummary(0, math.nan, math.nan, 0, threshold, math.nan, math.nan)
    low = min(r[0] for r in rows)
    high = max(r[0] for r in rows)
    within = [abs(r[1]) for r in rows if math.isfinite(r[1])]
    return DriftSummary(
        runs=len(rows),
        between_pct=(high / low - 1.0) * 100.0,
        within_pct=max(within) * 100.0 if within else math.nan,
        flagged=sum(1 for r in rows if r[2]),
        threshold=threshold,
        speed_min=low,
        speed_max=high,
    )


def _number(value: object) -> float:
    """A finite number, or NaN for anything else (None, NA, text)."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | float | np.number):
        return math.nan
    number = float(value)
    return number if math.isfinite(number) else math.nan
