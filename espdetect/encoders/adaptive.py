"""`AdaptiveQuality`: lowers JPEG quality while viewers fall behind, raises it when they catch up."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from espdetect.constraints import JPEG_QUALITY, IntRange
from espdetect.exceptions import ConfigurationError

__all__ = ["AdaptiveQuality"]

_OBSERVATIONS = IntRange(1, 1_000_000)


class AdaptiveQuality:
    """A JPEG-quality ladder driven by counted load observations, with hysteresis.

    Each observation says whether a viewer was behind (a frame dropped for it, a send that
    overran its frame interval). ``step_down_after`` behind-observations since the last clear
    one move one step down the ladder; ``step_up_after`` consecutive clear observations move one
    step up. After any step both counts restart, so the quality moves at most one level per
    ``step_*_after`` observations and a load hovering at the threshold cannot make it flap.
    Stepping up needs more evidence than stepping down by default (recover slowly, back off fast).

    `observe_lag` turns a measured lag into an observation with two thresholds: at or above
    ``lag_high`` is behind, at or below ``lag_low`` is clear, and in between counts as neither
    (it only breaks a run of clear observations).

    Counting observations instead of reading a clock keeps it deterministic: the caller decides
    how often to observe (once per sent frame, say). Not thread-safe; use it from one thread or
    the event loop.

    Example:
        >>> q = AdaptiveQuality(levels=(80, 60, 40), step_down_after=2, step_up_after=3)
        >>> [q.observe(behind=True) for _ in range(2)]
        [80, 60]
        >>> [q.observe(behind=False) for _ in range(3)]
        [60, 60, 80]
    """

    def __init__(
        self,
        levels: Sequence[int] = (80, 60, 40),
        *,
        step_down_after: int = 3,
        step_up_after: int = 30,
        lag_high: float = 0.5,
        lag_low: float = 0.2,
    ) -> None:
        if isinstance(levels, str | bytes) or not levels:
            raise ConfigurationError(f"levels must be a non-empty sequence of JPEG qualities, got {levels!r}")
        checked = tuple(JPEG_QUALITY.check("levels", q) for q in levels)
        if any(a <= b for a, b in itertools.pairwise(checked)):
            raise ConfigurationError(f"levels must be strictly decreasing qualities, got {checked}")
        if not 0 <= lag_low < lag_high:
            raise ConfigurationError(
                f"expected 0 <= lag_low < lag_high, got lag_low={lag_low}, lag_high={lag_high}"
            )
        self.levels: tuple[int, ...] = checked
        self.step_down_after = _OBSERVATIONS.check("step_down_after", step_down_after)
        self.step_up_after = _OBSERVATIONS.check("step_up_after", step_up_after)
        self.lag_high = float(lag_high)
        self.lag_low = float(lag_low)
        self._index = 0
        self._behind = 0
        self._clear = 0
        #: How many times the quality went down / up since creation.
        self.steps_down = 0
        self.steps_up = 0

    @property
    def quality(self) -> int:
        """The JPEG quality to encode with now."""
        return self.levels[self._index]

    @property
    def level(self) -> int:
        """Index of `quality` in ``levels`` (0 is the best quality)."""
        return self._index

    def observe(self, behind: bool) -> int:
        """Count one observation; returns the quality to use from now on."""
        if behind:
            self._clear = 0
            self._behind += 1
            if self._behind >= self.step_down_after and self._index < len(self.levels) - 1:
                self._index += 1
                self.steps_down += 1
                self._behind = 0
        else:
            self._behind = 0
            self._clear += 1
            if self._clear >= self.step_up_after and self._index > 0:
                self._index -= 1
                self.steps_up += 1
                self._clear = 0
        return self.quality

    def observe_lag(self, lag: float) -> int:
        """Count one lag measurement in seconds (how far a viewer is behind the newest frame)."""
        if lag >= self.lag_high:
            return self.observe(True)
        if lag <= self.lag_low:
            return self.observe(False)
        self._clear = 0
        return self.quality

    def reset(self) -> None:
        """Back to the best quality with no history (e.g. when the last viewer leaves)."""
        self._index = self._behind = self._clear = 0

    def __repr__(self) -> str:
        return f"AdaptiveQuality(levels={self.levels}, quality={self.quality})"
