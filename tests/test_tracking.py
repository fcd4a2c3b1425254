"""Tracker: ids that follow objects, boxes that move between model calls, tracks that end."""

from __future__ import annotations

import numpy as np
import pytest

from espdetect.detections import Detections
from espdetect.exceptions import ConfigurationError
from espdetect.tracking import Tracker, TrackerConfig

NAMES = {0: "person", 2: "car"}


def ids(detections: Detections) -> list[int]:
    assert detections.tracker_id is not None
    return [int(i) for i in detections.tracker_id]


def dets(*boxes: tuple[float, float, float, float, int]) -> Detections:
    return Detections(
        xyxy=np.asarray([b[:4] for b in boxes], np.float32).reshape(-1, 4),
        confidence=np.full(len(boxes), 0.8, np.float32),
        class_id=np.asarray([b[4] for b in boxes], np.int64),
        names=NAMES,
    )


def test_an_object_keeps_its_id_while_it_moves() -> None:
    tracker = Tracker()
    seen = [
        ids(tracker.update(dets((100 + 10 * i, 100, 150 + 10 * i, 200, 0)), t=i * 0.1)) for i in range(10)
    ]
    assert seen == [[1]] * 10


def test_two_objects_get_two_ids_and_classes_never_swap() -> None:
    tracker = Tracker()
    first = tracker.update(dets((100, 100, 200, 200, 0), (120, 110, 220, 210, 2)), t=0.0)
    assert len(set(ids(first))) == 2
    second = tracker.update(dets((122, 110, 222, 210, 2), (102, 100, 202, 200, 0)), t=0.1)
    by_class = dict(zip(second.class_id.tolist(), ids(second), strict=True))
    assert by_class == dict(zip(first.class_id.tolist(), ids(first), strict=True))


def test_boxes_move_along_the_track_between_model_calls() -> None:
    tracker = Tracker(TrackerConfig(smoothing=1.0, horizon=1.0))
    tracker.update(dets((100, 100, 150, 200, 0)), t=0.0)
    tracker.update(dets((110, 100, 160, 200, 0)), t=0.1)  # 100 px/s to the right
    predicted = tracker.predict(t=0.3)
    np.testing.assert_allclose(predicted.xyxy[0], [130, 100, 180, 200], atol=1e-3)
    # No further than the horizon: a stopped object's box does not run away.
    np.testing.assert_allclose(tracker.predict(t=5.0).xyxy[0], [210, 100, 260, 200], atol=1e-3)
    assert predicted.tracker_id is not None and predicted.labels == ["person"]


def test_a_track_ends_after_the_model_misses_it_max_misses_times() -> None:
    tracker = Tracker(TrackerConfig(max_misses=2))
    tracker.update(dets((100, 100, 150, 200, 0)), t=0.0)
    tracker.update(dets(), t=0.1)
    tracker.update(dets(), t=0.2)
    assert len(tracker.tracks) == 1
    tracker.update(dets(), t=0.3)
    assert len(tracker.tracks) == 0


def test_tracks_do_not_age_without_model_calls() -> None:
    tracker = Tracker(TrackerConfig(max_misses=1))
    first = tracker.update(dets((100, 100, 150, 200, 2)), t=0.0)
    # A parked car: no model call for a minute (motion gating), then the keep-alive call sees it.
    later = tracker.update(dets((101, 100, 151, 200, 2)), t=60.0)
    assert later.tracker_id is not None and first.tracker_id is not None
    assert later.tracker_id.tolist() == first.tracker_id.tolist()


def test_moving_says_whether_a_track_is_still_moving() -> None:
    tracker = Tracker()
    tracker.update(dets((100, 100, 150, 200, 0)), t=0.0)
    assert not tracker.moving(0.05)
    tracker.update(dets((120, 100, 170, 200, 0)), t=0.1)
    assert tracker.moving(0.15)
    assert not tracker.moving(5.0)  # beyond the horizon: treated as stopped


def test_tracked_detections_carry_ids_in_json() -> None:
    tracker = Tracker()
    tracked = tracker.update(dets((1, 2, 30, 40, 0)), t=0.0)
    (box,) = tracked.to_dict()["detections"]
    assert box["track_id"] == int(tracked.tracker_id[0])  # type: ignore[index]
    assert tracked[0].tracker_id is not None  # indexing keeps the ids


def test_bad_settings_name_their_field() -> None:
    with pytest.raises(ConfigurationError) as info:
        TrackerConfig(match_iou=1.5)
    assert info.value.field == "match_iou"


def test_a_track_the_last_model_call_missed_is_not_drawn() -> None:
    tracker = Tracker(TrackerConfig(max_misses=3))
    tracker.update(dets((100, 100, 150, 200, 0), (300, 100, 350, 200, 2)), t=0.0)
    tracker.update(dets((300, 100, 350, 200, 2)), t=0.1)  # the person left
    predicted = tracker.predict(t=0.15)
    assert predicted.labels == ["car"] and len(tracker.tracks) == 2
