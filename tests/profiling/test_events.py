"""Scoring events against a clip's true visits, replaying the event engine, and the yard clip."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path

import numpy as np
import pytest

from espdetect.detections import Detections
from espdetect.detectors.factory import open_detector
from espdetect.events import Event, EventConfig
from espdetect.profiling.events import (
    VISITS_FILE,
    ClipDetections,
    ClipEvent,
    EventScore,
    Visit,
    detect_clip,
    events_toml,
    load_visits,
    replay_events,
    save_visits,
    score_events,
    sweep_events,
    write_yard_clip,
)
from espdetect.profiling.replay import load_clip

DoesNotRaise = ExitStack
PERSON = "person"
#: The yard's near path as a zone: where the visitors' feet are (0.95, 0.97), not the far side's (0.80).
PATH = [(0.0, 0.85), (1.0, 0.85), (1.0, 1.0), (0.0, 1.0)]


def visit(start: float, end: float, label: str = PERSON) -> Visit:
    return Visit(label, start, end)


def event(start: float, end: float | None, label: str = PERSON, notified: float | None = None) -> ClipEvent:
    return ClipEvent(label, start, end, notified)


def counts(score: EventScore) -> tuple[int, int, int, int, int]:
    """(matched, missed, merged, duplicated, false events)."""
    return score.matched, score.missed, score.merged, score.duplicated, score.false_events


# --- score_events on hand-built cases -------------------------------------------------------------

TRUTH = (visit(10.0, 20.0), visit(40.0, 50.0))


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        pytest.param([event(10.2, 19.8), event(40.5, 50.0)], (2, 0, 0, 0, 0), id="one-each"),
        pytest.param([event(10.2, 19.8)], (1, 1, 0, 0, 0), id="missed"),
        pytest.param([], (0, 2, 0, 0, 0), id="no-events"),
        pytest.param([event(10.2, 13.0), event(15.0, 19.8), event(40.5, 50.0)], (2, 0, 0, 1, 0), id="split"),
        pytest.param([event(10.2, 19.8), event(40.5, 50.0), event(30.0, 32.0)], (2, 0, 0, 0, 1), id="false"),
        pytest.param([event(10.2, 49.0)], (1, 1, 1, 0, 0), id="merged"),
        pytest.param([event(10.2, None)], (1, 1, 1, 0, 0), id="never-ended"),
        pytest.param([event(10.2, 19.8, label="car")], (0, 2, 0, 0, 1), id="other-label"),
        # The second event overlaps the taken first visit and the free second one: it takes the free one.
        pytest.param([event(10.2, 19.8), event(19.0, 45.0)], (2, 0, 0, 0, 0), id="straddling"),
    ],
)
def test_counts(events: list[ClipEvent], expected: tuple[int, ...]) -> None:
    score = score_events(events, TRUTH, tolerance=1.0, duration=3600.0)
    assert counts(score) == expected
    assert score.events == len(events)
    assert score.visits == 2
    assert score.errors == expected[1] + expected[3] + expected[4]
    assert [m.event for m in score.matches] == sorted(events, key=lambda e: e.start)


@pytest.mark.parametrize(
    ("start", "end", "tolerance", "kind"),
    [
        pytest.param(21.0, 22.0, 1.0, "matched", id="starts-tolerance-after-end"),
        pytest.param(21.001, 22.0, 1.0, "false", id="starts-just-later"),
        pytest.param(8.0, 9.0, 1.0, "matched", id="ends-tolerance-before-start"),
        pytest.param(7.0, 8.999, 1.0, "false", id="ends-just-earlier"),
        pytest.param(20.0, 22.0, 0.0, "matched", id="touching-without-tolerance"),
        pytest.param(20.001, 22.0, 0.0, "false", id="apart-without-tolerance"),
        pytest.param(24.0, 26.0, 5.0, "matched", id="wide-tolerance"),
    ],
)
def test_tolerance_edges(start: float, end: float, tolerance: float, kind: str) -> None:
    score = score_events([event(start, end)], [visit(10.0, 20.0)], tolerance=tolerance)
    assert [m.kind for m in score.matches] == [kind]
    assert score.matches[0].visit == (visit(10.0, 20.0) if kind == "matched" else None)


def test_delays_rate_and_missed_visits() -> None:
    events = [event(10.5, 19.0, notified=10.8), event(39.0, 50.0, notified=39.3), event(60.0, 61.0)]
    truth = [visit(10.0, 20.0), visit(40.0, 50.0), visit(80.0, 85.0)]
    score = score_events(events, truth, duration=1800.0)
    assert score.start_delay.count == 2
    assert score.start_delay.mean == pytest.approx(-0.25)
    assert score.start_delay.max == pytest.approx(0.5)
    assert score.notify_delay.median == pytest.approx(0.05)
    assert score.events_per_hour == pytest.approx(6.0)
    assert score.false_per_hour == pytest.approx(2.0)
    assert score.missed_visits == (visit(80.0, 85.0),)
    assert "3 events for 3 visits: 2 matched, 1 missed" in score.summary()


def test_no_matches_give_nan_delays() -> None:
    score = score_events([event(1.0, 2.0)], [], duration=60.0)
    assert score.false_events == 1
    assert score.start_delay.count == 0 and math.isnan(score.start_delay.median)


def test_duration_defaults_to_the_latest_end() -> None:
    assert score_events([event(1.0, 30.0)], [visit(2.0, 20.0)]).duration_s == 30.0


def test_engine_events_are_accepted() -> None:
    engine_event = Event(
        id="e1", camera="door", label=PERSON, score=0.9, box=(1, 2, 3, 4), frame_size=(320, 240),
        start_time=10.2, best_time=11.0, group_id="e1", end_time=19.0,
    )  # fmt: skip
    score = score_events([engine_event], [visit(10.0, 20.0)])
    assert score.matched == 1
    assert score.matches[0].event == ClipEvent(PERSON, 10.2, 19.0)
    moved = ClipEvent.of(engine_event, offset=10.0, notified=10.5)
    assert (moved.start, moved.end, moved.notified) == pytest.approx((0.2, 9.0, 0.5))


@pytest.mark.parametrize(
    ("kwargs", "expectation"),
    [
        pytest.param({"tolerance": 0.0}, DoesNotRaise(), id="zero-tolerance"),
        pytest.param({"tolerance": -0.1}, pytest.raises(ValueError, match="tolerance"), id="negative"),
        pytest.param({"tolerance": math.inf}, pytest.raises(ValueError, match="tolerance"), id="inf"),
        pytest.param({"duration": 0.0}, pytest.raises(ValueError, match="duration"), id="no-duration"),
    ],
)
def test_score_arguments(kwargs: dict[str, float], expectation: AbstractContextManager[object]) -> None:
    with expectation:
        score_events([], TRUTH, **kwargs)


# --- the truth file -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(("", 1.0, 2.0), "label", id="empty-label"),
        pytest.param((PERSON, 2.0, 1.0), "end >= its start", id="backwards"),
        pytest.param((PERSON, math.nan, 1.0), "start", id="nan"),
        pytest.param((PERSON, 1.0, True), "end", id="bool"),
    ],
)
def test_bad_visits(args: tuple[object, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Visit(*args)  # type: ignore[arg-type]


def test_visits_round_trip_through_a_clip_folder(tmp_path: Path) -> None:
    visits = [visit(40.0, 50.25), visit(10.0, 20.0), visit(12.0, 15.5, label="dog")]
    written = save_visits(visits, tmp_path)
    assert written == tmp_path / VISITS_FILE
    assert written.read_text().splitlines()[:2] == ["label,start,end", "person,10.000,20.000"]
    assert load_visits(tmp_path) == tuple(sorted(visits, key=lambda v: v.start))
    assert load_visits(written) == load_visits(tmp_path)


def test_hand_written_visits_may_have_comments_and_notes(tmp_path: Path) -> None:
    file = tmp_path / "door.csv"
    file.write_text(
        "# the front door, 12 May\nLabel, Start, End, note\n\nperson, 3.5, 9, postman\n# lunch\ndog,20,21.5\n"
    )
    assert load_visits(file) == (visit(3.5, 9.0), visit(20.0, 21.5, label="dog"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("start,end,label\n", "header", id="header"),
        pytest.param("", "header", id="empty"),
        pytest.param("label,start,end\nperson,1\n", "line 2", id="short-row"),
        pytest.param("label,start,end\nperson,1,x\n", "line 2", id="not-a-number"),
        pytest.param("label,start,end\nperson,1,2\nperson,5,4\n", "line 3", id="backwards"),
    ],
)
def test_bad_truth_files_name_the_line(tmp_path: Path, text: str, message: str) -> None:
    file = tmp_path / "visits.csv"
    file.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_visits(file)


# --- replaying the engine on hand-made detections ---------------------------------------------------

FPS = 10.0
SIZE = (320, 240)


def person(box: Sequence[float], score: float = 0.9) -> Detections:
    return Detections(
        xyxy=np.array([box], np.float32),
        confidence=np.array([score], np.float32),
        class_id=np.array([0]),
        names={0: PERSON},
    )


def clip_of(frames: int, present: dict[int, Detections]) -> ClipDetections:
    """``frames`` frames at 10 fps, empty but for ``present``."""
    empty = Detections.empty({0: PERSON})
    return ClipDetections(
        "hand-made",
        SIZE,
        tuple(i / FPS for i in range(frames)),
        tuple(present.get(i, empty) for i in range(frames)),
    )


NEAR = (100.0, 60.0, 140.0, 230.0)  # feet at 230/240: on the path
FAR = (200.0, 90.0, 220.0, 190.0)  # feet at 190/240: off it
#: Someone near from frame 10 to 29 and from 60 to 79, someone far from 140 to 159 (of 170).
TWO_VISITS = clip_of(
    170,
    {
        **{i: person(NEAR) for i in [*range(10, 30), *range(60, 80)]},
        **{i: person(FAR) for i in range(140, 160)},
    },
)


def test_replay_debounces_and_ends() -> None:
    events = replay_events(TWO_VISITS, EventConfig(min_frames=3, end_timeout=1.0))
    assert [(e.start, e.end, e.notified) for e in events] == [
        pytest.approx((1.0, 2.9, 1.2)),
        pytest.approx((6.0, 7.9, 6.2)),
        pytest.approx((14.0, 15.9, 14.2)),
    ]


def test_replay_merges_visits_closer_than_the_end_timeout() -> None:
    events = replay_events(TWO_VISITS, EventConfig(end_timeout=5.0))
    assert [(e.start, e.end) for e in events] == [pytest.approx((1.0, 7.9)), pytest.approx((14.0, 15.9))]


def test_replay_zones_leave_the_far_side_out() -> None:
    events = replay_events(TWO_VISITS, EventConfig(end_timeout=1.0, zones=[PATH]))
    assert [e.start for e in events] == pytest.approx([1.0, 6.0])


def test_replay_every_other_frame_notifies_later() -> None:
    events = replay_events(TWO_VISITS, EventConfig(min_frames=3, end_timeout=1.0), every=2)
    assert events[0].start == pytest.approx(1.0)
    assert events[0].notified == pytest.approx(1.4)


def test_replay_without_tracking_gives_the_same_events_here() -> None:
    config = EventConfig(end_timeout=1.0)
    assert replay_events(TWO_VISITS, config, tracking=False) == replay_events(TWO_VISITS, config)


def test_replay_ends_what_is_still_going_at_the_last_frame() -> None:
    events = replay_events(clip_of(20, {i: person(NEAR) for i in range(10, 20)}), EventConfig(min_frames=1))
    assert [(e.start, e.end) for e in events] == [pytest.approx((1.0, 1.9))]


@pytest.mark.parametrize("every", [0, -1, 1.5, True])
def test_replay_every_must_be_a_frame_count(every: object) -> None:
    with pytest.raises(ValueError, match="every"):
        replay_events(TWO_VISITS, every=every)  # type: ignore[arg-type]


def test_clip_detections_need_one_time_per_frame() -> None:
    with pytest.raises(ValueError, match="one time per frame"):
        ClipDetections("x", SIZE, (0.0, 0.1), (Detections.empty(),))


def test_sweep_finds_the_settings_that_make_no_errors() -> None:
    truth = [visit(1.0, 2.9), visit(6.0, 7.9)]
    sweep = sweep_events(
        TWO_VISITS,
        truth,
        min_frames=[1, 3, 25],
        end_timeout=[1.0, 2.0, 3.0, 5.0],
        zones={"whole frame": [], "path": [PATH]},
    )
    assert len(sweep) == 2 * 3 * 4
    defaults = sweep.find(zones="whole frame", min_frames=3, end_timeout=5.0)
    assert counts(defaults.score) == (1, 1, 1, 0, 1)
    # Fewest errors; notifications within 0.5 s (min_frames=3, not 25: never); the middle timeout.
    best = sweep.best()
    assert (best.zones, best.config.min_frames, best.config.end_timeout) == ("path", 3, 2.0)
    assert counts(best.score) == (2, 0, 0, 0, 0)
    assert best.name == "path, min_frames=3, end_timeout=2"
    assert sweep.best(max_notify_delay=0.0).config.min_frames == 1
    with pytest.raises(LookupError, match="min_frames=4"):
        sweep.find(min_frames=4)


def test_sweep_table() -> None:
    pytest.importorskip("pandas")
    sweep = sweep_events(TWO_VISITS, [visit(1.0, 2.9)], end_timeout=[1.0, 5.0], every=[1, 2])
    table = sweep.to_frame()
    assert len(table) == 4
    assert {"zones", "min_frames", "end_timeout", "every", "missed", "duplicated", "false_events"} <= set(
        table.columns
    )
    assert table["events_per_hour"].iloc[0] == pytest.approx(3 * 3600 / 16.9)


def test_events_toml_loads_as_the_server_loads_it(tmp_path: Path) -> None:
    from espdetect.server.settings import load_settings

    config = EventConfig(labels=["person", "dog"], min_score=0.4, min_frames=2, end_timeout=2.5, zones=[PATH])
    text = events_toml(config, camera_id="door", url="http://192.168.4.1:81/stream")
    assert text.splitlines()[0] == "[[cameras]]"
    file = tmp_path / "events.toml"
    file.write_text(text + "\n")
    camera = load_settings(file).cameras[0]
    assert (camera.id, camera.url) == ("door", "http://192.168.4.1:81/stream")
    assert camera.labels == ["person", "dog"]
    assert (camera.min_score, camera.min_frames, camera.end_timeout) == (0.4, 2, 2.5)
    assert camera.zones == [[list(point) for point in PATH]]


# --- the yard clip ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def yard_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_yard_clip(tmp_path_factory.mktemp("clips") / "yard-events")


def test_yard_clip_truth_comes_from_the_scene(yard_clip: Path) -> None:
    clip = load_clip(yard_clip)
    assert clip.size == SIZE
    assert clip.fps == pytest.approx(10.0)
    truth = load_visits(yard_clip)
    # A visit, the crossing 3 s later (the near walker's part), the peek and the visit at dusk;
    # not the passer-by on the far side.
    assert [v.duration for v in truth] == pytest.approx([7.6, 4.5, 4.0, 7.6], abs=0.05)
    assert {v.label for v in truth} == {PERSON}
    gaps = [b.start - a.end for a, b in itertools.pairwise(truth)]
    assert 3.0 < gaps[0] < 5.0  # merged by the default end_timeout of 5 s
    assert all(gap > 6.0 for gap in gaps[1:])
    assert truth[-1].end < clip.duration_s


def test_yard_clip_is_the_same_every_time(yard_clip: Path, tmp_path: Path) -> None:
    again = write_yard_clip(tmp_path / "again")
    assert (again / "index.csv").read_bytes() == (yard_clip / "index.csv").read_bytes()
    assert load_clip(again).fingerprint == load_clip(yard_clip).fingerprint
    assert load_visits(again) == load_visits(yard_clip)
    with pytest.raises(FileExistsError):
        write_yard_clip(again)


@pytest.fixture(scope="module")
def yard_detections(yard_clip: Path) -> ClipDetections:
    # ESPDETECT_MODEL when set (CI), else the bundled model: both are the same int8 YOLOv8n.
    return detect_clip(yard_clip, open_detector(), progress=False)


@pytest.mark.timeout(600)
def test_defaults_merge_the_close_visits_and_report_the_passer_by(
    yard_clip: Path, yard_detections: ClipDetections
) -> None:
    truth = load_visits(yard_clip)
    score = score_events(
        replay_events(yard_detections, EventConfig()), truth, duration=yard_detections.duration_s
    )
    assert counts(score) == (3, 1, 1, 0, 1), score.summary()
    assert score.missed_visits == (truth[1],)


@pytest.mark.timeout(600)
def test_a_path_zone_and_a_shorter_timeout_find_each_visit_once(
    yard_clip: Path, yard_detections: ClipDetections
) -> None:
    truth = load_visits(yard_clip)
    tuned = EventConfig(zones=[PATH], end_timeout=2.0)
    score = score_events(replay_events(yard_detections, tuned), truth, duration=yard_detections.duration_s)
    assert counts(score) == (4, 0, 0, 0, 0), score.summary()
    assert score.notify_delay.max < 0.5
    # Too short a timeout splits the visit at dusk, where the model's confidence flickers.
    hasty = EventConfig(zones=[PATH], end_timeout=0.5)
    split = score_events(replay_events(yard_detections, hasty), truth, duration=yard_detections.duration_s)
    assert split.duplicated >= 1 and split.missed == 0, split.summary()


@pytest.mark.timeout(600)
def test_the_sweep_recommends_a_run_without_errors(yard_clip: Path, yard_detections: ClipDetections) -> None:
    sweep = sweep_events(
        yard_detections,
        load_visits(yard_clip),
        min_frames=[1, 3, 8],
        end_timeout=[0.5, 2.0, 5.0],
        zones={"whole frame": [], "path": [PATH]},
    )
    best = sweep.best()
    assert best.score.errors == 0, best.score.summary()
    assert best.zones == "path"
