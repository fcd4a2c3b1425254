"""Small statistics building blocks: percentiles, bounded sample windows, counter rates.

Shared by the pipeline, the server's ``/stats`` and ``/metrics``, the profiler and the
benchmarks, so a p95 means the same thing everywhere (numpy's linear interpolation).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from typing import Final, NamedTuple

import numpy as np

__all__ = ["Percentiles", "RateWindow", "SampleWindow", "percentile"]

#: Samples kept per timing window: enough for stable tails, bounded memory.
WINDOW_SAMPLES: Final = 1000


def percentile(values: Iterable[float], q: float, *, digits: int = 3) -> float | None:
    """The ``q``-th percentile of ``values`` (NaN ignored), rounded; None when there are none.

    Example:
        >>> percentile([1.0, 2.0, 3.0, 4.0], 50)
        2.5
    """
    arr = np.fromiter(values, dtype=np.float64)
    arr = arr[~np.isnan(arr)]
    if arr.size == 0:
        return None
    return round(float(np.percentile(arr, q)), digits)


class Percentiles(NamedTuple):
    """The median and the tail of some timings (None each when there were no samples).

    Example:
        >>> Percentiles.of([1.0, 2.0, 3.0]).p50
        2.0
    """

    #: Median.
    p50: float | None
    #: 95th percentile.
    p95: float | None
    #: 99th percentile.
    p99: float | None

    @classmethod
    def of(cls, values: Iterable[float]) -> Percentiles:
        arr = np.fromiter(values, dtype=np.float64)
        arr = arr[~np.isnan(arr)]
        if arr.size == 0:
            return cls(None, None, None)
        p50, p95, p99 = (round(float(v), 3) for v in np.percentile(arr, (50, 95, 99)))
        return cls(p50, p95, p99)

    def to_dict(self) -> dict[str, float | None]:
        return self._asdict()


class SampleWindow:
    """The most recent ``size`` samples of one timing (milliseconds, say).

    Example:
        >>> w = SampleWindow(size=2)
        >>> for v in (1.0, 2.0, 3.0): w.add(v)
        >>> list(w), w.percentiles().p50
        ([2.0, 3.0], 2.5)
    """

    def __init__(self, size: int = WINDOW_SAMPLES) -> None:
        self._values: deque[float] = deque(maxlen=size)

    def add(self, value: float) -> None:
        self._values.append(value)

    def percentiles(self) -> Percentiles:
        return Percentiles.of(self._values)

    def mean(self) -> float | None:
        """The mean of the samples (None when there are none)."""
        return round(sum(self._values) / len(self._values), 4) if self._values else None

    def __iter__(self) -> Iterator[float]:
        return iter(tuple(self._values))

    def __len__(self) -> int:
        return len(self._values)


class RateWindow:
    """Per-second rates of a group of counters over the last ``seconds``, from periodic samples.

    Example:
        >>> w = RateWindow(5.0)
        >>> w.add(0.0, (0, 0)); w.add(1.0, (30, 10))
        >>> w.rates(2.0, (60, 20))
        (30.0, 10.0)
    """

    def __init__(self, seconds: float) -> None:
        if not seconds > 0:
            raise ValueError(f"expected seconds > 0, got {seconds!r}")
        self.seconds = seconds
        self._samples: deque[tuple[float, tuple[float, ...]]] = deque()

    def add(self, now: float, counters: tuple[float, ...]) -> None:
        self._samples.append((now, counters))
        # Keep one sample at or before the window start so the window is always covered.
        while len(self._samples) > 2 and self._samples[1][0] <= now - self.seconds:
            self._samples.popleft()

    def rates(self, now: float, current: tuple[float, ...]) -> tuple[float, ...]:
        """Per-second rate of each counter between the oldest sample in the window and ``current``."""
        start: tuple[float, tuple[float, ...]] | None = None
        for sample in self._samples:
            if start is not None and sample[0] > now - self.seconds:
                break
            start = sample
        if start is None or now - start[0] <= 0:
            return tuple(0.0 for _ in current)
        dt = now - start[0]
        return tuple(round(max(0, c - s) / dt, 2) for c, s in zip(current, start[1], strict=True))
