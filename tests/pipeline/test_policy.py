"""FramePolicy: the per-frame rules of the pipeline (skip, motion gating, keep-alive, tracking).

The rules run inside `CameraPipeline` (test_gating.py drives them end to end)
and in the profiler's fast replay; here they are checked one decision at a time.
"""

from __future__ import annotations

import numpy as np
import pytest

from espdetect.detections import Detections
from espdetect.frame import Frame
from espdetect.motion import MotionResult
from espdetect.pipeline import DetectionResult, PipelineConfig, PipelineStats
from espdetect.pipeline.policy import CallReason, FramePolicy


def _motion(moving: bool, lighting: bool = False) -> MotionResult:
    boxes = np.array([[0, 0, 10, 10]], np.float32) if moving else np.zeros((0, 4), np.float32)
    return MotionResult(boxes, 0.1 if moving else 0.0, lighting, 0.2)


def test_the_gating_rule_in_order_of_its_reasons() -> None:
    policy = FramePolicy(PipelineConfig(skip=1, motion=True, keepalive=5.0, tracking=True))
    assert policy.decide(_motion(False), t=0.0) is CallReason.KEEPALIVE  # no call yet
    policy.called(0, 0.0, None)
    assert policy.decide(_motion(True), t=0.1) is CallReason.MOVING
    assert policy.decide(_motion(False, lighting=True), t=0.1) is CallReason.SCENE_CHANGED
    assert policy.decide(_motion(False), t=4.9) is CallReason.GATED
    assert not CallReason.GATED.call and CallReason.KEEPALIVE.call
    assert policy.decide(_motion(False), t=5.0) is CallReason.KEEPALIVE


def test_the_pipeline_counts_each_reason() -> None:
    stats = PipelineStats()
    for reason in CallReason:
        stats.count_motion(reason, 0.5)
    counts = (stats.motion_checks, stats.moving_frames, stats.gated_frames, stats.keepalive_calls)
    assert counts == (5, 2, 1, 1)  # a moving track's call is none of these
    assert stats.moved.mean() == pytest.approx(2 / 5)


def test_a_moving_track_gets_model_calls_only_with_tracking() -> None:
    def box(x: float) -> Detections:
        xyxy = np.array([[x, 0, x + 10, 10]], np.float32)
        return Detections(xyxy, np.array([0.9], np.float32), np.array([0]), {0: "thing"})

    for tracking in (False, True):
        policy = FramePolicy(PipelineConfig(skip=1, motion=True, keepalive=30.0, tracking=tracking))
        policy.tracker.update(box(0), 0.0)
        policy.tracker.update(box(5), 0.1)
        policy.called(1, 0.1, None)
        expected = CallReason.TRACK_MOVING if tracking else CallReason.GATED
        assert policy.decide(_motion(False), t=0.2) is expected


def _result(seq: int) -> DetectionResult:
    frame = Frame(seq=seq, source_id="test", jpeg=b"not decoded", arrival_mono=float(seq))
    return DetectionResult(frame, Detections.empty(), 0.0, 1, 0.0, 0.0)


def test_the_skip_policy_counts_from_the_last_detected_frame() -> None:
    policy = FramePolicy(PipelineConfig(skip=3))
    assert policy.offered(0)
    policy.called(0, 0.0, None)  # a failed call detects nothing: the next frame is offered
    assert policy.offered(1)
    assert policy.called(1, 1.0, _result(1)) is not None
    assert [policy.offered(s) for s in (2, 3, 4)] == [False, False, True]
    assert policy.offered(0)  # numbering restarted: a new connection
