"""`PipelineConfig`: how a camera's pipeline treats frames, replaceable while it runs."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from espdetect.constraints import DecodeReduce, FloatRange, Skip, check_decode_reduce, check_skip
from espdetect.exceptions import ConfigurationError

__all__ = ["GRACE_PERIOD", "PipelineConfig", "StaleMode"]

#: Seconds the source may stay open after the last subscriber leaves.
GRACE_PERIOD = FloatRange(0.0, 3600.0)


class StaleMode(str, Enum):
    """What the annotated stream shows on frames that got no fresh detection."""

    #: Draw the most recent detections (boxes do not flicker).
    DRAW_LAST = "draw_last"
    #: Forward the camera's JPEG untouched; boxes appear only on frames with fresh detections.
    RAW = "raw"


@dataclass(frozen=True)
class PipelineConfig:
    """Per-camera processing settings, replaceable at run time with `CameraPipeline.update`.

    Example:
        >>> PipelineConfig(skip=3, stale=StaleMode.RAW).skip
        3
    """

    #: Detect every Nth frame, or "auto": whenever the detector is free.
    skip: Skip = "auto"
    stale: StaleMode = StaleMode.DRAW_LAST
    #: Decode at 1/2, 1/4 or 1/8 scale for detection; "auto" picks the largest reduction that
    #: keeps the image at least as large as the detector's input size.
    decode_reduce: DecodeReduce = "auto"
    #: Seconds the source stays open after the last subscriber leaves.
    grace_period: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "skip", check_skip(self.skip))
        try:
            object.__setattr__(self, "stale", StaleMode(self.stale))
        except ValueError:
            choices = ", ".join(repr(m.value) for m in StaleMode)
            raise ConfigurationError(
                f"expected stale to be one of {choices}, got {self.stale!r}", field="stale"
            ) from None
        object.__setattr__(self, "decode_reduce", check_decode_reduce(self.decode_reduce))
        object.__setattr__(self, "grace_period", GRACE_PERIOD.check("grace_period", self.grace_period))
