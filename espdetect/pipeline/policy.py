"""`FramePolicy`: which frames of a camera get a model call, and what the others show.

`CameraPipeline`'s per-frame rules, kept apart from its event loop so that the profiler's fast
replay applies the very same rules to a clip frame by frame, on the clip's own arrival clock:

* **skip**: a frame is offered to the model when ``skip`` frames have passed since the last
  detected one (``"auto"``: whenever the detector is free, which the caller decides);
* **motion gating** (``motion``): an offered frame gets a model call when the motion test sees
  movement or a change of the whole scene, when a tracked object was last seen moving
  (``tracking``), or when no model call has run for ``keepalive`` seconds; otherwise it is
  gated (a still frame);
* **drawing**: a frame without fresh detections shows the last ones (``StaleMode.DRAW_LAST``),
  moved along their tracks with ``tracking``, or the camera's own JPEG (``StaleMode.RAW``, or
  nothing to draw); a still frame whose boxes would not move repeats the last picture, redrawn
  at least every ``still_refresh`` seconds.

Not thread-safe: one caller (the pipeline's event loop) makes the decisions; only the motion
test (`FramePolicy.motion`) may run on a worker thread.
"""

from __future__ import annotations

import math
from dataclasses import replace
from enum import Enum
from typing import NamedTuple

import numpy as np

from espdetect.detections import Detections
from espdetect.motion import MotionDetector, MotionResult
from espdetect.pipeline.config import PipelineConfig, StaleMode
from espdetect.pipeline.processor import DetectionResult, Rendered
from espdetect.tracking import Tracker

__all__ = ["CallReason", "Drawing", "FramePolicy"]


class CallReason(str, Enum):
    """Why motion gating let a frame through to the model, or ``GATED`` when it did not."""

    #: The motion test saw something move.
    MOVING = "moving"
    #: The whole scene changed at once (lighting, the camera moved): no motion to box, but new.
    SCENE_CHANGED = "scene_changed"
    #: Nothing moved, but a tracked object was last seen moving (its track needs the model).
    TRACK_MOVING = "track_moving"
    #: Nothing moved for ``keepalive`` seconds: a call confirms what stands still.
    KEEPALIVE = "keepalive"
    #: No model call.
    GATED = "gated"

    @property
    def call(self) -> bool:
        """Whether the frame gets a model call."""
        return self is not CallReason.GATED


class Drawing(NamedTuple):
    """What `FrameProcessor.render` is given for one frame."""

    #: The detections the frame shows (None: none yet, or the camera's JPEG in raw stale mode).
    detection: DetectionResult | None
    #: Boxes drawn instead of ``detection``'s own (the tracks' predicted boxes), or None.
    boxes: Detections | None
    #: Nothing to draw: forward the camera's JPEG (no decode, no encode).
    passthrough: bool
    #: The boxes the frame shows (``boxes``, else the newest detections), None before any.
    shown: Detections | None


class FramePolicy:
    """One camera's per-frame decisions, on a clock the caller gives (seconds, any origin).

    Example:
        >>> policy = FramePolicy(PipelineConfig(skip=1, motion=True, tracking=True))
        >>> if policy.offered(frame.seq):  # doctest: +SKIP
        ...     reason = policy.decide(policy.motion.detect(frame), t)
        ...     if reason.call:
        ...         latest = policy.called(frame.seq, t, processor.detect(frame))
        >>> drawing = policy.drawing(latest, fresh=True, t=t)  # doctest: +SKIP
    """

    def __init__(self, config: PipelineConfig) -> None:
        self.config = config
        self.motion = MotionDetector(config.motion_config)
        self.tracker = Tracker()
        self._last_call: float | None = None
        self._last_detected_seq: int | None = None
        self._drawn_at = -math.inf

    @property
    def last_detected_seq(self) -> int | None:
        """The sequence number of the frame the model last ran on successfully, None before."""
        return self._last_detected_seq

    @property
    def last_call(self) -> float | None:
        """When (the caller's clock) the model last ran, None before it has."""
        return self._last_call

    def update(self, config: PipelineConfig) -> None:
        """Apply ``config`` from the next frame (new motion settings may reset the background)."""
        self.config = config
        self.motion.update(config.motion_config)

    def reset(self) -> None:
        """Forget the scene (a new connection): background, tracks, the last call and picture."""
        self.motion.reset()
        self.tracker.reset()
        self._last_call = None
        self._last_detected_seq = None
        self._drawn_at = -math.inf

    def offered(self, seq: int) -> bool:
        """Whether the skip policy offers frame ``seq`` to the model (always with ``"auto"``)."""
        skip = self.config.skip
        last = self._last_detected_seq
        if skip == "auto" or last is None:
            return True
        # A sequence number going backwards is a new connection: start counting again.
        return seq - last >= skip or seq < last

    def decide(self, motion: MotionResult, t: float) -> CallReason:
        """Whether an offered frame arriving at ``t`` gets a model call, given its motion test."""
        if motion.moving:
            return CallReason.MOVING
        if motion.lighting:
            return CallReason.SCENE_CHANGED
        if self.config.tracking and self.tracker.moving(t):
            return CallReason.TRACK_MOVING
        if self._last_call is None or t - self._last_call >= self.config.keepalive:
            return CallReason.KEEPALIVE
        return CallReason.GATED

    def called(self, seq: int, t: float, result: DetectionResult | None) -> DetectionResult | None:
        """Record a model call on frame ``seq`` (None: it failed); the result, tracked when tracking."""
        self._last_call = t
        if result is None:
            return None
        self._last_detected_seq = seq
        if not self.config.tracking:
            return result
        return replace(result, detections=self.tracker.update(result.detections, t))

    def drawing(self, latest: DetectionResult | None, fresh: bool, t: float) -> Drawing:
        """What a frame arriving at ``t`` shows, given the newest detections and whether they are
        its own (``fresh``: computed on it, or not drawn before)."""
        raw_stale = self.config.stale is StaleMode.RAW and not fresh
        boxes = None
        if latest is not None and not fresh and not raw_stale and self.config.tracking:
            boxes = self.tracker.predict(t)
        shown = boxes if boxes is not None else latest.detections if latest is not None else None
        return Drawing(
            None if raw_stale else latest, boxes, raw_stale or shown is None or len(shown) == 0, shown
        )

    def repeats(
        self,
        previous: Rendered | None,
        latest: DetectionResult | None,
        drawing: Drawing,
        still: bool,
        t: float,
    ) -> bool:
        """Whether the last output picture may stand for a frame arriving at ``t``: the frame is
        ``still`` (gated by the motion test), it would show the same boxes in the same places,
        and the picture is younger than ``still_refresh``."""
        shown = drawing.shown
        return (
            still
            and previous is not None
            and previous.drawn is not None
            and shown is not None
            and previous.detection is latest
            and t - self._drawn_at < self.config.still_refresh
            and np.array_equal(previous.drawn.xyxy, shown.xyxy)
        )

    def drew(self, t: float) -> None:
        """Record that a new picture was drawn for a frame arriving at ``t``."""
        self._drawn_at = t
