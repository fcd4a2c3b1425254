from __future__ import annotations

import logging
import random

import pytest

from espdetect.sources._retry import Backoff, RateLimitedLog, Retry


def test_backoff_doubles_up_to_the_cap_and_resets() -> None:
    b = Backoff(0.1, 2.0, jitter=0.0)
    assert [b.next_delay() for _ in range(7)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0])
    b.reset()
    assert b.next_delay() == pytest.approx(0.1)


def test_jitter_never_exceeds_the_cap() -> None:
    b = Backoff(0.1, 2.0, jitter=0.5, rng=random.Random(1))
    delays = [b.next_delay() for _ in range(200)]
    assert max(delays) <= 2.0
    assert min(delays[10:]) >= 1.0
    assert len(set(delays[10:])) > 100  # jittered, so retries of many clients spread out


@pytest.mark.parametrize(
    ("initial", "maximum", "jitter"),
    [
        pytest.param(0.0, 1.0, 0.5, id="zero-initial"),
        pytest.param(1.0, 0.5, 0.5, id="max-below-initial"),
        pytest.param(0.1, 1.0, 1.5, id="jitter"),
    ],
)
def test_rejects_bad_settings(initial: float, maximum: float, jitter: float) -> None:
    with pytest.raises(ValueError, match="got"):
        Backoff(initial, maximum, jitter=jitter)


def test_rate_limited_log_demotes_repeats(caplog: pytest.LogCaptureFixture) -> None:
    log = RateLimitedLog(logging.getLogger("espdetect.test"), interval=3600)
    caplog.set_level(logging.DEBUG, logger="espdetect.test")
    for i in range(3):
        log.warning("retry %d", i)
    log.reset()
    log.warning("retry %d", 3)
    levels = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert levels == [
        (logging.WARNING, "retry 0"),
        (logging.DEBUG, "retry 1"),
        (logging.DEBUG, "retry 2"),
        (logging.WARNING, "retry 3"),
    ]


def test_retry_warns_with_the_delay_and_attempt_then_resets(caplog: pytest.LogCaptureFixture) -> None:
    retry = Retry(Backoff(0.1, 2.0, jitter=0.0), logging.getLogger("espdetect.test"), "reconnecting")
    caplog.set_level(logging.DEBUG, logger="espdetect.test")

    delays = [retry.next_delay("cam", "refused") for _ in range(2)]
    retry.reset()

    assert delays == pytest.approx([0.1, 0.2])
    assert retry.backoff.attempt == 0
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, "cam: refused; reconnecting in 0.10 s (attempt 1)"),
        (logging.DEBUG, "cam: refused; reconnecting in 0.20 s (attempt 2)"),
    ]
