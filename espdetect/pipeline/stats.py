"""`PipelineStats`: what one camera's pipeline counted and timed."""

from __future__ import annotations

from dataclasses import dataclass, field

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
    #: The model's own time per call.
    inference_ms: SampleWindow = field(default_factory=SampleWindow)
    #: Decode + model call + box scaling per detected frame.
    detect_ms: SampleWindow = field(default_factory=SampleWindow)
    #: Frame arrival to annotated JPEG ready.
    latency_ms: SampleWindow = field(default_factory=SampleWindow)
    #: Decode + draw + encode per output frame.
    render_ms: SampleWindow = field(default_factory=SampleWindow)
