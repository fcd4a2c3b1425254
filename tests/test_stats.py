from __future__ import annotations

import pytest

from espdetect.stats import Percentiles, RateWindow, SampleWindow, percentile


def test_rates_over_the_window() -> None:
    window = RateWindow(2.0)
    for t in range(10):
        window.add(float(t), (t * 30, t * 10))
    # From the sample at the window start (t=7) to now (t=9.5).
    assert window.rates(9.5, (285, 95)) == (30.0, 10.0)


def test_rates_keep_one_sample_before_the_window() -> None:
    window = RateWindow(1.0)
    window.add(0.0, (0,))
    window.add(10.0, (100,))
    assert window.rates(10.5, (105,)) == (10.0,)


def test_rates_without_samples_or_time_are_zero() -> None:
    window = RateWindow(5.0)
    assert window.rates(1.0, (10, 20)) == (0.0, 0.0)
    window.add(1.0, (10, 20))
    assert window.rates(1.0, (10, 20)) == (0.0, 0.0)


def test_counters_never_give_negative_rates() -> None:
    window = RateWindow(5.0)
    window.add(0.0, (10,))
    assert window.rates(1.0, (5,)) == (0.0,)


def test_window_memory_is_bounded() -> None:
    window = RateWindow(1.0)
    for i in range(10_000):
        window.add(i * 0.5, (i,))
    assert len(window._samples) <= 4


def test_window_must_be_positive() -> None:
    with pytest.raises(ValueError, match="expected seconds > 0"):
        RateWindow(0.0)


def test_percentiles() -> None:
    values = [float(v) for v in range(1, 101)]
    p = Percentiles.of(values)
    assert p.p50 == pytest.approx(50.5)
    assert p.p95 == pytest.approx(95.05)
    assert p.p99 == pytest.approx(99.01)
    assert Percentiles.of([]) == Percentiles(None, None, None)
    assert p.to_dict() == {"p50": 50.5, "p95": 95.05, "p99": 99.01}


def test_one_percentile_ignores_nan_and_rounds() -> None:
    assert percentile([1.0, float("nan"), 2.0], 50) == 1.5
    assert percentile([], 50) is None
    assert percentile([1 / 3], 50, digits=2) == 0.33


def test_sample_window_keeps_the_newest() -> None:
    window = SampleWindow(size=3)
    for v in range(10):
        window.add(float(v))
    assert list(window) == [7.0, 8.0, 9.0]
    assert len(window) == 3
    assert window.percentiles().p50 == 8.0
