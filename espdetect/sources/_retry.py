"""Reconnect helpers shared by the network sources: capped backoff and rate-limited warnings."""

from __future__ import annotations

import logging
import random
import time

__all__ = ["Backoff", "RateLimitedLog"]


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
