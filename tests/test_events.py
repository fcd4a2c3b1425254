"""EventEngine: debounced starts, one event per presence, best pictures, visits that notify once."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import cv2
import numpy as np
import pytest

from espdetect.detections import Detections
from espdetect.events import Event, EventConfig, EventEngine, EventUpdate, _in_polygon, _single
from espdetect.exceptions import ConfigurationError

NAMES = {0: "person", 2: "car", 16: "dog"}
PERSON, CAR, DOG = 0, 2, 16
SIZE = (640, 480)
FPS = 5
#: A person standing in the lower middle of the frame (anchor at x 0.23, y 0.83).
STANDING = (100.0, 100.0, 200.0, 400.0)
#: Track id, class id, confidence, xyxy box.
Row = tuple[int, int, float, tuple[float, float, float, float]]


def dets(*rows: Row, tracked: bool = True) -> Detections:
    return Detections(
        xyxy=np.asarray([r[3] for r in rows], np.float32).reshape(-1, 4),
        confidence=np.asarray([r[2] for r in rows], np.float32),
        class_id=np.asarray([r[1] for r in rows], np.int64),
        names=NAMES,
        tracker_id=np.asarray([r[0] for r in rows], np.int64) if tracked else None,
    )


def person(track: int = 1, score: float = 0.9, box: tuple[float, float, float, float] = STANDING) -> Row:
    return (track, PERSON, score, box)


def engine(**options: Any) -> EventEngine:
    counter = itertools.count(1)
    return EventEngine("door", EventConfig(**options), make_id=lambda start, camera: f"e{next(counter)}")


def run(
    events: EventEngine,
    frames: Iterable[Sequence[Row]],
    *,
    start: float = 0.0,
    snapshot: Callable[[], bytes] | None = None,
) -> list[tuple[float, EventUpdate]]:
    """Feed one frame every 1/FPS seconds from ``start``; the updates with their frame's time."""
    out = []
    for i, rows in enumerate(frames):
        t = start + i / FPS
        out += [(t, u) for u in events.update(dets(*rows), timestamp=t, frame_size=SIZE, snapshot=snapshot)]
    return out


def kinds(updates: Iterable[tuple[float, EventUpdate]]) -> list[tuple[str, str]]:
    return [(u.type, u.event.label) for _, u in updates]


# --- debounce ---------------------------------------------------------------------------------


@pytest.mark.parametrize("min_frames", [1, 3, 5])
def test_an_event_starts_after_min_frames_in_a_row(min_frames: int) -> None:
    events = engine(min_frames=min_frames)
    assert run(events, [[person()]] * (min_frames - 1)) == []
    (t, update), *rest = run(events, [[person()]], start=(min_frames - 1) / FPS)
    assert rest == [] and update.type == "start" and t == pytest.approx((min_frames - 1) / FPS)
    assert update.event.start_time == 0.0  # the first frame of the streak, not the debounced one


@pytest.mark.parametrize(
    ("frames", "starts"),
    [
        pytest.param([[person()], [person()], [], [person()], [person()]], 0, id="a-gap-restarts-the-count"),
        pytest.param([[person(1)], [person(2)], [person(3)]], 0, id="each-id-counts-alone"),
        pytest.param([[person(1)], [person(1), person(2)], [person(1)]], 1, id="one-track-is-enough"),
    ],
)
def test_debounce_counts_one_track_in_a_row(frames: list[list[Row]], starts: int) -> None:
    assert kinds(run(engine(min_frames=3), frames)) == [("start", "person")] * starts


def test_without_a_tracker_the_label_is_the_track() -> None:
    events = engine(min_frames=2)
    first = events.update(dets(person(), tracked=False), timestamp=0.0, frame_size=SIZE)
    second = events.update(dets(person(), tracked=False), timestamp=0.2, frame_size=SIZE)
    assert first == [] and [u.type for u in second] == ["start"]


# --- one event per presence -------------------------------------------------------------------


def test_a_person_standing_a_minute_is_one_event() -> None:
    events = engine(end_timeout=5.0)
    rng = np.random.default_rng(0)
    minute = [[person(score=float(rng.uniform(0.6, 0.9)))] for _ in range(60 * FPS)]
    updates = run(events, minute)
    assert kinds(updates).count(("start", "person")) == 1
    assert all(u.type in ("start", "update") for _, u in updates)
    last_seen = (len(minute) - 1) / FPS
    after = run(events, [[]] * (10 * FPS), start=last_seen + 1 / FPS)
    assert kinds(after) == [("end", "person")]
    t_end, end = after[0]
    assert end.event.end_time == last_seen
    assert 5.0 - 1e-9 <= t_end - last_seen <= 5.0 + 1 / FPS


@pytest.mark.parametrize(
    ("gap", "new_id", "events_made"),
    [
        pytest.param(2.0, False, 1, id="missing-2s"),
        pytest.param(4.0, True, 1, id="new-track-id-within-timeout"),
        pytest.param(1.0 / FPS, True, 1, id="id-switch-next-frame"),
        pytest.param(6.0, False, 2, id="gone-longer-than-timeout"),
    ],
)
def test_flicker_within_end_timeout_continues_the_event(gap: float, new_id: bool, events_made: int) -> None:
    events = engine(end_timeout=5.0)
    updates = run(events, [[person(1)]] * 10)
    back = 9 / FPS + gap
    updates += [(back, u) for u in events.tick(back - 0.01)]
    updates += run(events, [[person(2 if new_id else 1)]] * 10, start=back)
    assert kinds(updates).count(("start", "person")) == events_made
    assert kinds(updates).count(("end", "person")) == events_made - 1


def test_two_people_together_are_one_person_event() -> None:
    updates = run(engine(), [[person(1), person(2, box=(300, 100, 400, 400))]] * 20)
    assert kinds(updates) == [("start", "person")]


# --- what counts ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "min_score", "row", "starts"),
    [
        pytest.param(("person",), 0.5, (1, PERSON, 0.5, STANDING), True, id="score-at-minimum"),
        pytest.param(("person",), 0.5, (1, PERSON, 0.49, STANDING), False, id="score-below"),
        pytest.param(("person",), 0.5, (1, CAR, 0.9, STANDING), False, id="label-not-configured"),
        pytest.param(("person", "car"), 0.5, (1, CAR, 0.9, STANDING), True, id="second-label"),
        pytest.param(("person",), 0.0, (1, PERSON, 0.01, STANDING), True, id="min-score-zero"),
    ],
)
def test_labels_and_scores_filter(labels: tuple[str, ...], min_score: float, row: Row, starts: bool) -> None:
    updates = run(engine(labels=labels, min_score=min_score), [[row]] * 5)
    assert [u.type for _, u in updates] == (["start"] if starts else [])


LOWER_HALF = [(0.0, 0.5), (1.0, 0.5), (1.0, 1.0), (0.0, 1.0)]
LEFT_STRIP = [(0.0, 0.0), (0.1, 0.0), (0.1, 1.0), (0.0, 1.0)]
RIGHT_TRIANGLE = [(1.0, 0.0), (1.0, 1.0), (0.5, 1.0)]


@pytest.mark.parametrize(
    ("zones", "box", "inside"),
    [
        pytest.param((), (0, 0, 40, 30), True, id="whole-frame-by-default"),
        # The box is mostly above the zone but its feet are in it.
        pytest.param([LOWER_HALF], (100, 0, 200, 260), True, id="anchor-in-box-mostly-out"),
        # The box's centre is in the zone, its feet are not.
        pytest.param(
            [[(0, 0), (1, 0), (1, 0.5), (0, 0.5)]], (100, 100, 200, 300), False, id="centre-in-anchor-out"
        ),
        pytest.param([LEFT_STRIP, RIGHT_TRIANGLE], (600, 100, 630, 400), True, id="second-zone"),
        pytest.param([LEFT_STRIP, RIGHT_TRIANGLE], (300, 100, 340, 400), False, id="between-zones"),
        pytest.param([LEFT_STRIP, RIGHT_TRIANGLE], (0, 100, 128, 400), True, id="anchor-on-edge"),
        pytest.param([LOWER_HALF], (100, 300, 200, 520), True, id="anchor-below-frame-clipped"),
    ],
)
def test_the_anchor_must_be_in_a_zone(
    zones: list[list[tuple[float, float]]], box: tuple[float, float, float, float], inside: bool
) -> None:
    updates = run(engine(zones=zones, min_frames=1), [[person(box=box)]])
    assert [u.type for _, u in updates] == (["start"] if inside else [])


@pytest.mark.parametrize("grid", [False, True], ids=["random", "grid"])
def test_zone_test_agrees_with_opencvs_point_polygon_test(grid: bool) -> None:
    # Vertices, edge midpoints and points a third along edges land on edges (or within float32
    # rounding of them); grid polygons add collinear and horizontal edges, and self-crossings.
    rng = np.random.default_rng(int(grid))
    on_edge = 0
    for _ in range(400):
        n = int(rng.integers(3, 9))
        polygon = rng.integers(0, 11, (n, 2)) / 10 if grid else rng.random((n, 2))
        zone = [(_single(x), _single(y)) for x, y in polygon]
        contour = np.asarray(zone, np.float32).reshape(-1, 1, 2)
        nxt = np.roll(polygon, -1, axis=0)
        points = np.concatenate(
            [
                rng.random((8, 2)),
                rng.integers(0, 11, (8, 2)) / 10,
                polygon,
                (polygon + nxt) / 2,
                polygon / 3 + nxt * 2 / 3,
            ]
        )
        for x, y in points:
            px, py = _single(x), _single(y)
            expected = cv2.pointPolygonTest(contour, (px, py), False)
            on_edge += expected == 0
            assert _in_polygon(px, py, zone) == (expected >= 0), (zone, (px, py), expected)
    assert on_edge > 400  # the edge cases were really exercised


# --- best picture and updates -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("min_gain", "moments", "calls", "best"),
    [
        # (score, box) per frame; quality = score × area.
        pytest.param(
            0.0,
            [
                (0.9, (0, 0, 100, 100)),
                (0.6, (0, 0, 100, 100)),
                (0.6, (0, 0, 200, 200)),
                (0.9, (0, 0, 100, 200)),
            ],
            2,
            2,
            id="larger-box-wins-over-higher-score",
        ),
        pytest.param(
            0.0,
            [(0.5, (0, 0, 100, 100)), (0.5, (0, 0, 100, 100)), (0.4, (0, 0, 100, 100))],
            1,
            0,
            id="equal-or-worse-never-encodes",
        ),
        pytest.param(
            0.1,
            [(0.50, (0, 0, 100, 100)), (0.54, (0, 0, 100, 100)), (0.56, (0, 0, 100, 100))],
            2,
            2,
            id="gain-must-exceed-min-gain",
        ),
    ],
)
def test_the_best_moment_is_kept_and_encoded_only_when_it_improves(
    min_gain: float, moments: list[tuple[float, tuple[float, float, float, float]]], calls: int, best: int
) -> None:
    events = engine(min_frames=1, min_gain=min_gain, update_interval=0.0)
    encoded: list[int] = []

    def snapshot() -> bytes:
        encoded.append(len(encoded))
        return f"jpeg{len(encoded)}".encode()

    run(events, [[person(score=s, box=b)] for s, b in moments], snapshot=snapshot)
    assert len(encoded) == calls
    (event,) = events.active
    assert event.score == pytest.approx(moments[best][0]) and event.box == moments[best][1]
    assert event.best_time == pytest.approx(best / FPS)
    assert event.snapshot == f"jpeg{calls}".encode()


def test_one_encode_per_frame_for_all_its_events() -> None:
    encoded: list[bytes] = []

    def snapshot() -> bytes:
        encoded.append(b"x")
        return b"x"

    events = engine(labels=["person", "dog"], min_frames=1)
    run(events, [[person(), (2, DOG, 0.8, (300, 300, 400, 400))]], snapshot=snapshot)
    assert len(events.active) == 2 and len(encoded) == 1
    assert all(e.snapshot == b"x" for e in events.active)


def test_updates_come_when_the_best_improves_at_most_once_per_interval() -> None:
    events = engine(min_frames=1, min_gain=0.0, update_interval=1.0)
    # Walking towards the camera: the box grows every frame for 4 s, then stays.
    growing = [[person(box=(100, 100, 150 + 10 * i, 200 + 10 * i))] for i in range(4 * FPS)]
    updates = run(events, growing + [[person(box=(100, 100, 340, 390))]] * (4 * FPS))
    times = [t for t, u in updates if u.type == "update"]
    assert 3 <= len(times) <= 4
    assert all(b - a >= 1.0 - 1e-9 for a, b in itertools.pairwise([0.0, *times]))
    assert times[-1] <= 4.0 + 1.0  # the last improvement goes out, then silence


def test_a_failing_snapshot_leaves_the_event_without_a_picture(caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> bytes:
        raise OSError("encoder gone")

    updates = run(engine(min_frames=1), [[person()]], snapshot=broken)
    assert [u.type for _, u in updates] == ["start"] and updates[0][1].event.snapshot is None
    assert "snapshot failed" in caplog.text


# --- visits -----------------------------------------------------------------------------------

DOG_ROW = (7, DOG, 0.8, (300.0, 300.0, 400.0, 420.0))


def test_a_person_with_a_dog_is_one_visit_and_one_notification() -> None:
    events = engine(labels=["person", "dog"], end_timeout=5.0)
    updates = run(events, [[person()]] * 5 + [[person(), DOG_ROW]] * 20)
    starts = [u for _, u in updates if u.type == "start"]
    assert [u.event.label for u in starts] == ["person", "dog"]
    assert [u.notify for u in starts] == [True, False]
    assert {u.event.group_id for u in starts} == {starts[0].event.id}
    ends = run(events, [[]] * (6 * FPS), start=5.0)
    assert sorted(kinds(ends)) == [("end", "dog"), ("end", "person")]
    assert not any(u.notify for _, u in ends)


@pytest.mark.parametrize(
    ("pause", "same_visit"),
    [
        pytest.param(3.0, True, id="dog-while-person-active"),
        pytest.param(5.0 + 8.0, True, id="within-group-timeout-after-end"),
        pytest.param(5.0 + 12.0, False, id="after-the-visit-ended"),
    ],
)
def test_a_later_event_joins_the_visit_only_within_group_timeout(pause: float, same_visit: bool) -> None:
    events = engine(labels=["person", "dog"], end_timeout=5.0, group_timeout=10.0, min_frames=1)
    first = run(events, [[person()]])
    later = events.tick(pause - 0.1)
    later += events.update(dets(DOG_ROW), timestamp=pause, frame_size=SIZE)
    (start,) = [u for u in later if u.type == "start"]
    assert start.notify is not same_visit
    assert (start.event.group_id == first[0][1].event.group_id) is same_visit


def test_a_second_visit_of_the_same_label_notifies_again() -> None:
    events = engine(end_timeout=5.0, group_timeout=10.0)
    one = run(events, [[person()]] * 10) + run(events, [[]] * (6 * FPS), start=2.0)
    two = run(events, [[person(9)]] * 10, start=60.0)
    starts = [u for _, u in one + two if u.type == "start"]
    assert [u.notify for u in starts] == [True, True]
    assert starts[0].event.group_id != starts[1].event.group_id


def test_end_all_ends_every_active_event() -> None:
    events = engine(labels=["person", "dog"], min_frames=1)
    run(events, [[person(), DOG_ROW]])
    ended = events.end_all(1.0)
    assert sorted(kinds((0.0, u) for u in ended)) == [("end", "dog"), ("end", "person")]
    assert all(u.event.end_time == 0.0 for u in ended) and events.active == ()


def test_a_clock_set_back_does_not_keep_events_alive() -> None:
    events = engine(min_frames=1, end_timeout=5.0)
    run(events, [[person()]], start=100.0)
    assert events.tick(50.0) == []  # taken as 100.0
    assert [u.type for u in events.tick(105.0)] == ["end"]


# --- configuration and records ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"labels": "person"}, "labels"),
        ({"labels": []}, "labels"),
        ({"labels": ["person", ""]}, "labels"),
        ({"labels": [0]}, "labels"),
        ({"min_score": 1.5}, "min_score"),
        ({"min_score": float("nan")}, "min_score"),
        ({"min_frames": 0}, "min_frames"),
        ({"min_frames": 2.0}, "min_frames"),
        ({"end_timeout": 0.0}, "end_timeout"),
        ({"end_timeout": -1.0}, "end_timeout"),
        ({"group_timeout": -1.0}, "group_timeout"),
        ({"update_interval": "1"}, "update_interval"),
        ({"min_gain": 2.0}, "min_gain"),
        ({"zones": [[(0, 0), (1, 0)]]}, "zones"),
        ({"zones": [[(0, 0), (1.5, 0), (1, 1)]]}, "zones"),
    ],
)
def test_configuration_errors_name_the_field(options: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        EventConfig(**options)
    assert info.value.field == field


def test_configuration_is_normalised() -> None:
    config = EventConfig(labels=["dog", "person", "dog"], zones=[[[0, 0], [1, 0], [1, 1]]])
    assert config.labels == ("dog", "person")
    assert config.zones == (((0.0, 0.0), (1.0, 0.0), (1.0, 1.0)),)


def test_frame_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="frame size"):
        engine().update(dets(person()), timestamp=0.0, frame_size=(0, 480))


def test_records_serialise_to_json_without_the_picture() -> None:
    events = engine(min_frames=1)
    updates = run(events, [[person()]], snapshot=lambda: b"\xff\xd8jpeg") + [
        (9.0, u) for u in events.tick(9.0)
    ]
    start, end = (json.loads(json.dumps(u.to_dict())) for _, u in updates)
    required = {"type", "id", "camera", "label", "score", "box", "start_time", "end_time", "group_id"}
    assert required <= set(start) and "snapshot" not in start
    assert (start["type"], start["notify"], start["end_time"], start["has_snapshot"]) == (
        "start",
        True,
        None,
        True,
    )
    assert (end["type"], end["end_time"], end["camera"], end["box"]) == ("end", 0.0, "door", list(STANDING))
    assert start["id"] == end["id"] == start["group_id"]


def test_default_ids_are_unique_and_start_with_the_start_time() -> None:
    ids = set()
    for _ in range(50):
        events = EventEngine("door", EventConfig(min_frames=1))
        (update,) = events.update(dets(person()), timestamp=12.5, frame_size=SIZE)
        ids.add(update.event.id)
    assert len(ids) == 50 and all(i.startswith("12.500000-door-") for i in ids)


def test_events_are_immutable_records() -> None:
    events = engine(min_frames=1, min_gain=0.0, update_interval=0.0)
    (_, start), *_ = run(events, [[person(score=0.6)], [person(score=0.9)]])
    assert isinstance(start.event, Event) and start.event.score == pytest.approx(0.6)
    assert events.active[0].score == pytest.approx(0.9)
