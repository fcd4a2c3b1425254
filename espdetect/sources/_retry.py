"""Reconnect helpers shared by the network sources: capped backoff and rate-limited warnings."""

from __future__ import annotations

import logging
import random
import time

__all__ = ["Backoff", "RateLimitedLog", "Retry"]


class Backoff:
    """Capped exponential backoff with jitter.

    The n-th delay (counting from 0) is ``min(maximum, initial * 2**n)`` shrunk by a random
    factor in ``[1 - jitter, 1]``, so it never exceeds ``maximum``: a camera that comes back is
    reached again within ``maximum`` seconds plus one connect. ``reset()`` after a good frame
    makes the next failure retry quickly again.

    Example:
        >>> b = Backoff(initial=0.1, maximum=2.0, jitter=0.0)
        >>> [b.next_delay() for _ in range(6)]
        [0.1, 0.2, 0.4, 0.8, 1.6, 2.0]
    """

    def __init__(
        self,
        initial: float = 0.1,
        maximum: float = 2.0,
        *,
        jitter: float = 0.5,
        rng: random.Random | None = None,
    ) -> None:
        if not initial > 0:
            raise ValueError(f"backoff_initial must be > 0 seconds, got {initial!r}")
        if not maximum >= initial:
            raise ValueError(f"backoff_max must be >= backoff_initial ({initial}), got {maximum!r}")
        if not 0.0 <= jitter <= 1.0:
            raise ValueError(f"jitter must be in [0, 1], got {jitter!r}")
        self.initial = initial
        self.maximum = maximum
        self.jitter = jitter
        self.attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        """The delay before the next attempt; each call counts one more failed attempt."""
        # Cap the exponent so 2**n cannot overflow after days of failures.
        base = min(self.maximum, self.initial * 2.0 ** min(self.attempt, 60))
        self.attempt += 1
        if self.jitter == 0.0:
            return base
        return base * (1.0 - self.jitter * self._rng.random())

    def reset(self) -> None:
        """Forget past failures (call after a success)."""
        self.attempt = 0


class RateLimitedLog:
    """Logs at WARNING at most once per ``interval`` seconds, at DEBUG in between.

    A camera that is off for an hour would otherwise fill the log with one warning per retry.
    The next warning says how many messages were demoted since the last one.
    """

    def __init__(self, logger: logging.Logger, interval: float = 30.0) -> None:
        self.logger = logger
        self.interval = interval
        self._last: float | None = None
        self._suppressed = 0

    def warning(self, msg: str, *args: object) -> None:
        now = time.monotonic()
        if self._last is None or now - self._last >= self.interval:
            if self._suppressed:
                msg += " (%d similar messages since the last warning)"
                args = (*args, self._suppressed)
            self.logger.warning(msg, *args)
            self._last = now
            self._suppressed = 0
        else:
            self._suppressed += 1
            self.logger.debug(msg, *args)

    def reset(self) -> None:
        """Make the next message a warning again (call after recovering)."""
        self._last = None
        self._suppressed = 0


class Retry:
    """What a network source does after a failed attempt: log why and wait a growing delay.

    ``action`` names what comes after the delay in the warning ("retrying", "reconnecting").

    Example:
        >>> retry = Retry(Backoff(0.1, 2.0, jitter=0.0), logging.getLogger("cam"), "retrying")
        >>> retry.next_delay("front", "connection refused")  # warns: front: connection refused; ...
        0.1
        >>> retry.reset()  # after a success
    """

    def __init__(self, backoff: Backoff, logger: logging.Logger, action: str) -> None:
        self.backoff = backoff
        self.action = action
        self._log = RateLimitedLog(logger)

    def next_delay(self, source_id: str, reason: str) -> float:
        """Log the failure (at WARNING at most every 30 s) and return the delay before the next attempt."""
        delay = self.backoff.next_delay()
        self._log.warning(
            "%s: %s; %s in %.2f s (attempt %d)", source_id, reason, self.action, delay, self.backoff.attempt
        )
        return delay

    def reset(self) -> None:
        """Forget the failures (call after a success): the next one retries quickly and warns."""
        self.backoff.reset()
        self._log.reset()
