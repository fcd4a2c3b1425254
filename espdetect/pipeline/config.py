"""`PipelineConfig`: how a camera's pipeline treats frames, replaceable while it runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from espdetect.constraints import DecodeReduce, FloatRange, Skip, check_decode_reduce, check_skip
from espdetect.exceptions import ConfigurationError
from espdetect.motion import MotionConfig

__all__ = ["GRACE_PERIOD", "KEEPALIVE", "STILL_REFRESH", "PipelineConfig", "StaleMode"]

#: Seconds the source may stay open after the last subscriber leaves.
GRACE_PERIOD = FloatRange(0.0, 3600.0)
#: Seconds between keep-alive model calls while nothing moves.
KEEPALIVE = FloatRange(0.5, 86400.0)
#: Seconds a still scene's annotated picture may be repeated before it is drawn again.
STILL_REFRESH = FloatRange(0.0, 3600.0)


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
    #: Run the model only when something moves (or a tracked object needs following), plus a
    #: keep-alive call every ``keepalive`` seconds; False: on every frame the skip policy takes.
    #: (The server turns it on for every camera by default.)
    motion: bool = False
    #: What counts as motion (thresholds, masks).
    motion_config: MotionConfig = field(default_factory=MotionConfig)
    #: Seconds between model calls while nothing moves, so a still object stays confirmed.
    keepalive: float = 30.0
    #: Give boxes track ids and move them along their tracks between model calls (else the last
    #: boxes stay where they were). (The server turns it on for every camera by default.)
    tracking: bool = False
    #: With ``motion``: while the motion test finds a frame unchanged and the boxes stay put, the
    #: annotated stream repeats its last picture (no decode, draw or encode) and draws a new one
    #: at least every ``still_refresh`` seconds, so slow changes still show. 0: draw every frame.
    still_refresh: float = 1.0

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
        object.__setattr__(self, "keepalive", KEEPALIVE.check("keepalive", self.keepalive))
        object.__setattr__(self, "still_refresh", STILL_REFRESH.check("still_refresh", self.still_refresh))
        if not isinstance(self.motion, bool):
            raise ConfigurationError(
                f"expected motion to be true or false, got {self.motion!r}", field="motion"
            )
        if not isinstance(self.tracking, bool):
            raise ConfigurationError(
                f"expected tracking to be true or false, got {self.tracking!r}", field="tracking"
            )
