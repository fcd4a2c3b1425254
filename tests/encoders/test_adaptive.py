from __future__ import annotations

import pytest

from espdetect.encoders.adaptive import AdaptiveQuality
from espdetect.exceptions import ConfigurationError


def test_starts_at_the_best_quality() -> None:
    q = AdaptiveQuality()

    assert (q.quality, q.level) == (80, 0)


def test_steps_down_after_enough_behind_observations() -> None:
    q = AdaptiveQuality(levels=(80, 60, 40), step_down_after=3, step_up_after=5)

    seen = [q.observe(behind=True) for _ in range(7)]

    assert seen == [80, 80, 60, 60, 60, 40, 40]
    assert q.steps_down == 2


def test_stops_at_the_lowest_level() -> None:
    q = AdaptiveQuality(levels=(80, 40), step_down_after=1, step_up_after=5)

    for _ in range(10):
        q.observe(True)

    assert q.quality == 40
    assert q.steps_down == 1


def test_steps_up_only_after_a_run_of_clear_observations() -> None:
    q = AdaptiveQuality(levels=(80, 60, 40), step_down_after=1, step_up_after=4)
    q.observe(True)
    q.observe(True)
    assert q.quality == 40

    seen = [q.observe(False) for _ in range(8)]

    assert seen == [40, 40, 40, 60, 60, 60, 60, 80]
    assert q.steps_up == 2
    assert q.observe(False) == 80  # already at the top


def test_a_single_behind_breaks_the_clear_run() -> None:
    q = AdaptiveQuality(levels=(80, 60), step_down_after=1, step_up_after=3)
    q.observe(True)

    for behind in (False, False, True, False, False):
        q.observe(behind)

    # The behind observation itself was counted (level 60 is already the floor) and reset the run.
    assert q.quality == 60
    assert q.observe(False) == 80


def test_alternating_load_does_not_flap() -> None:
    q = AdaptiveQuality(levels=(80, 60, 40), step_down_after=2, step_up_after=2)

    seen = {q.observe(i % 2 == 0) for i in range(50)}

    assert seen == {80}
    assert q.steps_down == q.steps_up == 0


def test_lag_thresholds_have_a_dead_band() -> None:
    q = AdaptiveQuality(levels=(80, 60), step_down_after=2, step_up_after=2, lag_high=0.5, lag_low=0.2)

    assert q.observe_lag(0.6) == 80
    assert q.observe_lag(0.3) == 80  # in the band: neither behind nor clear
    assert q.observe_lag(0.5) == 60  # second behind since the last clear one
    assert q.observe_lag(0.1) == 60
    assert q.observe_lag(0.3) == 60  # breaks the clear run
    assert q.observe_lag(0.2) == 60
    assert q.observe_lag(0.0) == 80


def test_reset_returns_to_the_best_quality_without_history() -> None:
    q = AdaptiveQuality(levels=(80, 60), step_down_after=2, step_up_after=2)
    q.observe(True)
    q.observe(True)
    q.observe(True)

    q.reset()

    assert q.quality == 80
    assert q.observe(True) == 80  # the earlier behind observations were forgotten


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"levels": ()}, "non-empty sequence", id="empty"),
        pytest.param({"levels": (60, 80)}, "strictly decreasing", id="increasing"),
        pytest.param({"levels": (80, 80)}, "strictly decreasing", id="repeated"),
        pytest.param({"levels": (120, 60)}, "from 1 to 100, got 120", id="quality"),
        pytest.param({"step_down_after": 0}, "expected step_down_after to be an integer from 1", id="down"),
        pytest.param({"step_up_after": -1}, "expected step_up_after to be an integer from 1", id="up"),
        pytest.param({"lag_high": 0.1, "lag_low": 0.2}, "lag_low < lag_high", id="lags"),
    ],
)
def test_rejects_bad_settings(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        AdaptiveQuality(**kwargs)  # type: ignore[arg-type]
