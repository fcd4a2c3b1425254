"""Noise-aware measurement: t quantiles, interval coverage, the speed probe, drift flags and reruns."""

from __future__ import annotations

import itertools
import math
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from espdetect.detections import Detections
from espdetect.detectors.base import Detector, DetectParams
from espdetect.exceptions import ConfigurationError
from espdetect.profiling.calibration import (
    Replay,
    SpeedProbe,
    drift,
    drift_summary,
    log_t_interval,
    replay_alongside,
    speed_index,
    t_quantile,
)
from espdetect.profiling.config import ProfileConfig, grid
from espdetect.profiling.replay import ClipData, RunTrace, load_clip, replay

from ._squares import SquareDetector, write_square_clip


@pytest.mark.parametrize(
    ("p", "df", "expected"),
    [
        pytest.param(0.975, 1, 12.7062, id="df1"),
        pytest.param(0.975, 2, 4.3027, id="df2"),
        pytest.param(0.975, 3, 3.1824, id="df3"),
        pytest.param(0.975, 4, 2.7764, id="df4"),
        pytest.param(0.975, 9, 2.2622, id="df9"),
        pytest.param(0.975, 30, 2.0423, id="df30"),
        pytest.param(0.975, 200, 1.9719, id="df200"),
        pytest.param(0.995, 5, 4.0321, id="99%-df5"),
        pytest.param(0.95, 3, 2.3534, id="90%-df3"),
        pytest.param(0.025, 4, -2.7764, id="lower-tail"),
    ],
)
def test_t_quantiles_match_the_tables(p: float, df: int, expected: float) -> None:
    assert t_quantile(p, df) == pytest.approx(expected, abs=1e-4)


def test_t_quantile_refuses_what_has_none() -> None:
    with pytest.raises(ValueError, match="0 < p < 1"):
        t_quantile(1.0, 3)
    with pytest.raises(ValueError, match="df >= 1"):
        t_quantile(0.9, 0)


def test_log_t_interval_is_a_t_interval_on_logs() -> None:
    values = [10.0, 11.0, 10.5]
    iv = log_t_interval(values)
    logs = np.log(values)
    half = t_quantile(0.975, 2) * logs.std(ddof=1) / math.sqrt(3)
    assert iv.n == 3 and iv.confidence == 0.95
    assert iv.center == pytest.approx(math.exp(logs.mean()))
    assert (iv.low, iv.high) == pytest.approx((math.exp(logs.mean() - half), math.exp(logs.mean() + half)))
    assert iv.contains(10.5) and not iv.contains(20.0)
    assert iv.half_width_pct == pytest.approx((math.exp(half) - 1) * 100)
    # Values that are not finite and positive are left out; one value has no interval.
    one = log_t_interval([5.0, math.nan, 0.0, -1.0])
    assert one.n == 1 and one.center == pytest.approx(5.0) and math.isnan(one.low) and not one.contains(5.0)
    assert log_t_interval([]).n == 0 and math.isnan(log_t_interval([]).half_width_pct)


def _paired_repeats(
    rng: np.random.Generator, sets: int, repeats: int, ratio: float
) -> tuple[np.ndarray, np.ndarray]:
    """Simulated fps of a configuration and of the baseline run next to it, on a drifting machine.

    The machine's speed wanders by about ±25 % between repeats (a multiplicative random walk);
    within a pair it moves by about 2 % more, and every run has 2 % noise of its own.
    """
    machine = np.exp(np.cumsum(rng.normal(0.0, 0.15, (sets, repeats)), axis=1))
    within = np.exp(rng.normal(0.0, 0.02, (sets, repeats)))
    config = 30.0 * ratio * machine * within * np.exp(rng.normal(0.0, 0.02, (sets, repeats)))
    base = 30.0 * machine * np.exp(rng.normal(0.0, 0.02, (sets, repeats)))
    return config, base


def test_the_paired_t_interval_covers_95_percent_at_3_repeats_by_simulation() -> None:
    rng = np.random.default_rng(2026)
    ratio = 0.8
    config, base = _paired_repeats(rng, 2000, 3, ratio)
    intervals = [log_t_interval(c / b) for c, b in zip(config, base, strict=True)]
    coverage = np.mean([iv.contains(ratio) for iv in intervals])
    assert 0.93 <= coverage <= 0.97, coverage
    # Pairing removes the machine's drift: the ratio's interval is narrow where raw fps's is not.
    paired_width = np.median([iv.half_width_pct for iv in intervals])
    raw_width = np.median([log_t_interval(c).half_width_pct for c in config])
    assert paired_width < 10.0 < raw_width
    # Why a t-interval: the normal quantile (1.96) at 3 repeats covers far less than 95 %.
    logs = np.log(config / base)
    half_z = 1.96 * logs.std(axis=1, ddof=1) / math.sqrt(3)
    z_coverage = np.mean(np.abs(logs.mean(axis=1) - math.log(ratio)) <= half_z)
    assert z_coverage < 0.85, z_coverage


def test_drift_and_speed_index() -> None:
    assert drift(20.0, 18.0) == pytest.approx(-0.1)
    assert speed_index(16.0, 25.0) == pytest.approx(20.0)
    assert math.isnan(drift(math.nan, 1.0)) and math.isnan(speed_index(0.0, 1.0))


class _Machine:
    """A machine whose speed the test sets: every detector call sleeps ``delay_s x factor``."""

    def __init__(self, delay_s: float, factor: float = 1.0, slow_from_call: int | None = None) -> None:
        self.delay_s = delay_s
        self.factor = factor
        self.slow_from_call = slow_from_call
        self.calls = 0


class _SlowSquares(SquareDetector):
    """The square detector on a `_Machine`: real detections, at the machine's speed."""

    def __init__(self, machine: _Machine) -> None:
        super().__init__()
        self.machine = machine

    def _detect(self, image: np.ndarray, params: DetectParams) -> Detections:
        machine = self.machine
        if machine.slow_from_call is not None and machine.calls == machine.slow_from_call:
            machine.factor *= 3.0
        machine.calls += 1
        time.sleep(machine.delay_s * machine.factor)
        return super()._detect(image, params)


def test_the_speed_probe_reads_calls_per_second_of_a_fixed_workload() -> None:
    machine = _Machine(0.004)
    probe = SpeedProbe(_SlowSquares(machine), np.zeros((48, 64, 3), np.uint8), calls=3)
    fast = probe.measure()
    machine.factor = 3.0
    slow = probe.measure()
    assert machine.calls == 6
    assert 0 < slow.speed < fast.speed <= 1 / 0.004 and slow.at > fast.at
    with pytest.raises(ValueError, match="calls >= 1"):
        SpeedProbe(_SlowSquares(machine), np.zeros((8, 8, 3), np.uint8), calls=0)


def test_drift_summary_of_a_table_without_probes_says_so() -> None:
    pd = pytest.importorskip("pandas")
    summary = drift_summary(pd.DataFrame({"status": ["ok"], "fps_output": [10.0]}))
    assert summary.runs == 0 and "unknown" in summary.sentence
    table = pd.DataFrame(
        {
            "status": ["ok", "ok", "ok", "n/a: half needs CUDA"],
            "speed_index": [10.0, 12.3, 11.0, math.nan],
            "drift": [0.01, -0.04, 0.2, math.nan],
            "drift_flag": [False, False, True, False],
        }
    )
    summary = drift_summary(table, threshold=0.1)
    assert (summary.runs, summary.flagged, summary.threshold) == (3, 1, 0.1)
    assert (summary.between_pct, summary.within_pct) == pytest.approx((23.0, 20.0))
    assert (summary.speed_min, summary.speed_max) == (10.0, 12.3)
    assert summary.sentence == (
        "The machine's speed (the probe: 10 to 12.3 calls/s) moved by up to 23 % between runs and "
        "20 % within one; 1 of 3 runs flagged (drift above 10 %)."
    )


# --- the sweep: real components, a detector whose speed the test controls ---------------------


def _sweep_on(machine: _Machine, clip: Path, out: Path, **kwargs: object) -> object:
    pytest.importorskip("pandas", reason="profiling sweeps need pandas: pip install 'espdetect[profile]'")
    from espdetect.profiling.sweep import sweep

    def factory(config: ProfileConfig) -> Detector:
        return _SlowSquares(machine)

    # Other work on the machine must not add measurements: the tests count detector calls.
    options: dict[str, object] = {"repeats": 1, "warmup": 0, "progress": False, "reference": None,
                                  "probe_calls": 3, "drift_threshold": 0.25, "busy_threshold": None,
                                  **kwargs}  # fmt: skip
    return sweep(clip, grid(model="squares.pt"), out, detector_factory=factory, **options)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_square_clip(tmp_path_factory.mktemp("clips") / "short", frames=10)


def test_a_run_during_which_the_machine_slowed_down_is_flagged(short_clip: Path, tmp_path: Path) -> None:
    # 3 calls set the probe up, 3 probe before the run: the machine slows down during the runs.
    machine = _Machine(0.003, slow_from_call=6 + 8)
    df = _sweep_on(machine, short_clip, tmp_path)
    row = df.iloc[0]  # type: ignore[attr-defined]
    assert row["status"] == "ok" and row["attempts"] == 1
    assert row["probe_after"] < row["probe_before"]
    assert row["drift"] == pytest.approx(row["probe_after"] / row["probe_before"] - 1)
    assert row["drift"] < -0.25 and bool(row["drift_flag"])
    assert row["speed_index"] == pytest.approx(math.sqrt(row["probe_before"] * row["probe_after"]))


def test_rerun_drifted_measures_again_and_keeps_the_steadiest(short_clip: Path, tmp_path: Path) -> None:
    machine = _Machine(0.003, slow_from_call=6 + 8)
    df = _sweep_on(machine, short_clip, tmp_path, rerun_drifted=True)
    row = df.iloc[0]  # type: ignore[attr-defined]
    # The first measurement drifted; the second ran on the (now steady) slow machine.
    assert row["attempts"] == 2
    assert not bool(row["drift_flag"]) and abs(row["drift"]) < 0.25
    env = df.attrs["environment"]["sweep"]  # type: ignore[attr-defined]
    assert env["rerun_drifted"] is True and env["drift_threshold"] == 0.25
    assert env["probe"] == {"model": "squares.pt", "imgsz": 640, "conf": 0.25, "frame": 0, "calls": 3}


def test_normalised_fps_and_the_baseline_ratio_take_the_machine_out(short_clip: Path, tmp_path: Path) -> None:
    pytest.importorskip("pandas", reason="profiling sweeps need pandas: pip install 'espdetect[profile]'")
    from espdetect.profiling.results import summarize

    machine = _Machine(0.01)

    def slow_down(row: dict[str, object]) -> None:
        machine.factor = 3.0  # between the first repeat and the second

    df = _sweep_on(machine, short_clip, tmp_path, repeats=2, on_result=slow_down)
    rows = df.sort_values("run_order")  # type: ignore[attr-defined]
    raw = rows["fps_output"].tolist()
    assert raw[1] < raw[0] / 2  # raw fps moves with the machine
    # The baseline (auto: the first configuration, here the only one) ran next to each run.
    assert set(rows["baseline_key"]) == {rows["config_key"].iloc[0]}
    assert rows["fps_vs_baseline"].tolist() == pytest.approx([1.0, 1.0], rel=0.25)
    summary = summarize(df).iloc[0]  # type: ignore[arg-type]
    assert summary["fps_output_norm_spread_pct"] < summary["fps_output_spread_pct"] / 2
    assert summary["n_repeats"] == 2 and summary["drifted_runs"] == 0
    assert (
        summary["fps_vs_baseline_ci_low"] <= summary["fps_vs_baseline"] <= summary["fps_vs_baseline_ci_high"]
    )


def test_without_probe_or_baseline_the_columns_are_empty(short_clip: Path, tmp_path: Path) -> None:
    machine = _Machine(0.0)
    df = _sweep_on(machine, short_clip, tmp_path, probe_calls=0, baseline=None)
    row = df.iloc[0]  # type: ignore[attr-defined]
    assert row["status"] == "ok" and row["baseline_key"] == "" and not bool(row["drift_flag"])
    for col in (
        "probe_before",
        "speed_index",
        "drift",
        "baseline_fps_output",
        "fps_vs_baseline",
        "fps_output_norm",
    ):
        assert math.isnan(row[col]), col
    assert machine.calls == 10  # the one run, nothing else
    with pytest.raises(ConfigurationError, match="drift_threshold"):
        _sweep_on(machine, short_clip, tmp_path / "x", drift_threshold=-0.1)


# --- replaying alongside a companion ------------------------------------------------------


class _Named(_SlowSquares):
    """Logs which thread called it, to see the two replays take turns."""

    def __init__(self, machine: _Machine, log: list[str]) -> None:
        super().__init__(machine)
        self.log = log

    def _detect(self, image: np.ndarray, params: DetectParams) -> Detections:
        self.log.append(threading.current_thread().name)
        return super()._detect(image, params)


def _replay_with(detector: Detector) -> Replay:
    from espdetect.encoders.jpeg import JpegEncoder

    return lambda clip: replay(clip, detector, JpegEncoder(quality=80), warmup=0)


def test_two_replays_take_turns_frame_by_frame_and_each_counts_its_own_time(short_clip: Path) -> None:
    clip = load_clip(short_clip)
    log: list[str] = []
    slow, fast = _Named(_Machine(0.006), log), _Named(_Machine(0.002), log)
    started = time.perf_counter()
    both = replay_alongside(clip, _replay_with(slow), _replay_with(fast))
    elapsed = time.perf_counter() - started
    assert len(both.trace.renders) == len(clip) == 10
    # One frame each in turn: the threads alternate on (nearly) every call.
    switches = sum(a != b for a, b in itertools.pairwise(log))
    assert switches >= 2 * len(clip) - 3 and set(log) == {
        "espdetect-replay-main",
        "espdetect-replay-companion",
    }
    # Each side's time is its own: together they fit in the time the two took.
    assert isinstance(both.companion_fps, float)
    companion_s = log.count("espdetect-replay-companion") / both.companion_fps
    assert both.trace.wall_s + companion_s <= elapsed and both.trace.wall_s <= both.cost.wall_s
    assert both.cost.cpu_s >= 0 and both.cost.background_cpu_percent >= 0
    main_fps = len(both.trace.renders) / both.trace.wall_s
    assert both.companion_fps > main_fps


def test_with_longer_turns_the_quicker_companion_replays_the_clip_again(short_clip: Path) -> None:
    clip = load_clip(short_clip)
    log: list[str] = []
    slow, quick = _replay_with(_Named(_Machine(0.01), log)), _replay_with(_Named(_Machine(0.001), log))
    both = replay_alongside(clip, slow, quick, turn_s=0.03, companion_first=True)
    assert len(both.trace.renders) == len(clip)
    assert log[0] == "espdetect-replay-companion"
    assert log.count("espdetect-replay-companion") > len(clip)  # it went round the clip again
    assert log.count("espdetect-replay-main") == len(clip)


def test_a_failing_main_replay_raises_and_a_failing_companion_is_reported(short_clip: Path) -> None:
    clip = load_clip(short_clip)
    good = _replay_with(SquareDetector())

    def broken(clip: ClipData) -> RunTrace:
        raise RuntimeError("no such model")

    with pytest.raises(RuntimeError, match="no such model"):
        replay_alongside(clip, broken, good)
    both = replay_alongside(clip, good, broken)
    assert isinstance(both.companion_fps, RuntimeError) and len(both.trace.renders) == len(clip)
