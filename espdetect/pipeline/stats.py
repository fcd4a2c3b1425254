"""`PipelineStats`: what one camera's pipeline counted and timed."""

from __future__ import annotations

from dataclasses import dataclass, field

from espdetect.pipeline.policy import CallReason
from espdetect.stats import SampleWindow

__all__ = ["PipelineStats"]


@dataclass
class PipelineStats:
    """Counters and recent timing samples (milliseconds) of one pipeline.

    Example:
        >>> stats = PipelineStats()
        >>> stats.latency_ms.add(12.0)
        >>> stats.latency_ms.percentiles().p50
        12.0
    """

    #: Frames the source delivered.
    frames_in: int = 0
    #: Frames the model ran on.
    frames_detected: int = 0
    #: Annotated frames rendered and encoded.
    frames_out: int = 0
    #: Frames that reached the camera while the renderer was busy and were never rendered.
    dropped: int = 0
    #: Frames that could not be decoded (each counted once, whichever stage hit it).
    decode_errors: int = 0
    #: Model calls that failed.
    detector_errors: int = 0
    #: Times the source failed (other than by ending); current consumers' streams end.
    source_errors: int = 0
    #: Times the source was opened.
    upstream_opens: int = 0
    #: Times the stages stopped on an unexpected error (logged with its traceback; restarted).
    stage_errors: int = 0
    #: Frames the motion test looked at, found moving, and kept from the model (calls saved).
    motion_checks: int = 0
    moving_frames: int = 0
    gated_frames: int = 0
    #: Model calls made only because nothing had moved for the keep-alive interval.
    keepalive_calls: int = 0
    #: The motion test's time per frame.
    motion_ms: SampleWindow = field(default_factory=SampleWindow)
    #: 1 for each recently tested frame that moved, 0 for one that did not.
    moved: SampleWindow = field(default_factory=lambda: SampleWindow(size=150))
    #: The model's own time per call.
    inference_ms: SampleWindow = field(default_factory=SampleWindow)
    #: Decode + model call + box scaling per detected frame.
    detect_ms: SampleWindow = field(default_factory=SampleWindow)
    #: Frame arrival to annotated JPEG ready.
    latency_ms: SampleWindow = field(default_factory=SampleWindow)
    #: Decode + draw + encode per output frame.
    render_ms: SampleWindow = field(default_factory=SampleWindow)

    def count_motion(self, reason: CallReason, ms: float) -> None:
        """Count one motion-tested frame (the test took ``ms``) and the decision taken on it."""
        self.motion_checks += 1
        self.motion_ms.add(ms)
        moved = reason in (CallReason.MOVING, CallReason.SCENE_CHANGED)
        self.moved.add(1.0 if moved else 0.0)
        if moved:
            self.moving_frames += 1
        elif reason is CallReason.KEEPALIVE:
            self.keepalive_calls += 1
        elif reason is CallReason.GATED:
            self.gated_frames += 1
