"""Tuning events on a recorded clip: its true visits, the event engine replayed, and a score.

Three steps, each cheap to repeat:

1. **Truth.** The visits you want events for, in a CSV file beside the clip
   (``<clip>/visits.csv``, `VISITS_FILE`): one row per visit, ``label,start,end`` in seconds
   after the clip's first frame (further columns, such as a note, are ignored; ``#`` starts a
   comment line). Read it with `load_visits`, write it with `save_visits`.
2. **Detections, once.** `detect_clip` runs the detector on every frame of the clip, as the
   server does (`FrameProcessor.detect`: the same decode reduction and thresholds) and keeps
   the boxes (`ClipDetections`). This is the slow step; everything after it takes
   milliseconds per configuration.
3. **Events, many times.** `replay_events` feeds those detections, tracked by a fresh
   `Tracker` as the server tracks them, to an `EventEngine` with one `EventConfig`;
   `score_events` matches the events to the visits; `sweep_events` does both for a grid of
   ``min_frames`` x ``end_timeout`` x zones (`EventSweep`: a table, the best run).

**Matching.** An event and a visit *overlap* when they have the same label and their time
spans, the event's widened by ``tolerance`` seconds on each side, intersect. Events are taken in
order of their start; each one matches the earliest overlapping visit that no event matched yet.
An event whose overlapping visits are all taken is a *duplicate* (the visit was split into
several events: ``end_timeout`` too short), one that overlaps no visit is a *false event*. A
visit no event matched is *missed*; a missed visit that an event matched to another visit
overlaps is also *merged* (two visits became one event: ``end_timeout`` too long).

**Delays.** ``start_delay`` is an event's ``start_time`` (the first frame of its debounce
streak) minus its visit's start; ``notify_delay`` is when the event's ``start`` record came out
(the notification) minus the visit's start, which grows with ``min_frames``.

`write_yard_clip` writes a demo clip with its truth, built from the emulator's yard scene.

Example:
    >>> from espdetect.profiling.events import Visit, ClipEvent, score_events
    >>> truth = [Visit("person", 2.0, 8.0), Visit("person", 20.0, 25.0)]
    >>> events = [ClipEvent("person", 2.2, 7.9), ClipEvent("person", 8.5, 9.0),
    ...           ClipEvent("person", 40.0, 41.0)]
    >>> score = score_events(events, truth, duration=60.0)
    >>> score.matched, score.missed, score.duplicated, score.false_events
    (1, 1, 1, 1)
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
import math
import numbers
import statistics
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal

import cv2
import numpy as np

from espdetect.constraints import DecodeReduce
from espdetect.detections import Detections
from espdetect.detectors.base import Detector, DetectParams
from espdetect.encoders.jpeg import JpegEncoder
from espdetect.events import Event, EventConfig, EventEngine, EventUpdate
from espdetect.exceptions import MissingDependency
from espdetect.frame import Frame
from espdetect.motion import Polygon
from espdetect.pipeline.processor import FrameProcessor
from espdetect.profiling.replay import ClipData, load_clip
from espdetect.sources.clip import ClipWriter
from espdetect.tracking import Tracker

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from espdetect.emulator.scene import Segment, YardScene

__all__ = [
    "VISITS_FILE",
    "ClipDetections",
    "ClipEvent",
    "DelayStats",
    "EventMatch",
    "EventRun",
    "EventScore",
    "EventSweep",
    "MatchKind",
    "Visit",
    "detect_clip",
    "events_toml",
    "load_visits",
    "plot_event_timeline",
    "replay_events",
    "save_visits",
    "score_events",
    "sweep_events",
    "write_yard_clip",
]

logger = logging.getLogger(__name__)

#: The truth file's name inside a clip folder.
VISITS_FILE: Final = "visits.csv"
_COLUMNS: Final = ("label", "start", "end")

#: What became of one event: it matched a visit, repeated a matched one, or matched none.
MatchKind = Literal["matched", "duplicate", "false"]


@dataclass(frozen=True)
class Visit:
    """One true visit: ``label`` in view from ``start`` to ``end`` (seconds into the clip).

    Example:
        >>> Visit("person", 10.0, 18.5).duration
        8.5
    """

    label: str
    start: float
    end: float

    def __post_init__(self) -> None:
        if not isinstance(self.label, str) or not self.label.strip():
            raise ValueError(f"expected a visit's label to be a non-empty string, got {self.label!r}")
        for name in ("start", "end"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise ValueError(f"expected a visit's {name} to be a finite number of seconds, got {value!r}")
            object.__setattr__(self, name, float(value))
        if self.end < self.start:
            raise ValueError(
                f"expected a visit's end >= its start, got start {self.start} and end {self.end}"
            )

    @property
    def duration(self) -> float:
        return self.end - self.start


def _visits_path(path: str | Path) -> Path:
    target = Path(path)
    return target / VISITS_FILE if target.is_dir() else target


def load_visits(path: str | Path) -> tuple[Visit, ...]:
    """The visits in a truth CSV file, or in ``visits.csv`` of a clip folder, sorted by start.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a header other than ``label,start,end``, or a row that is not a visit
            (the message names the line).

    Example:
        >>> load_visits("clips/door")  # doctest: +SKIP
        (Visit(label='person', start=10.2, end=18.4), ...)
    """
    file = _visits_path(path)
    visits: list[Visit] = []
    with file.open(newline="", encoding="utf-8") as fh:
        rows = ((n, row) for n, row in enumerate(csv.reader(fh), start=1) if row and row[0].strip())
        rows = ((n, row) for n, row in rows if not row[0].lstrip().startswith("#"))
        first = next(rows, None)
        header = tuple(cell.strip().lower() for cell in first[1][:3]) if first else None
        if header != _COLUMNS:
            raise ValueError(f"{file}: expected the header {','.join(_COLUMNS)}, got {header!r}")
        for line, row in rows:
            try:
                label, start, end = (cell.strip() for cell in row[:3])
                visits.append(Visit(label, float(start), float(end)))
            except ValueError as exc:
                raise ValueError(
                    f"{file}, line {line}: expected label,start,end, got {row!r} ({exc})"
                ) from None
    return tuple(sorted(visits, key=lambda v: (v.start, v.end, v.label)))


def save_visits(visits: Iterable[Visit], path: str | Path) -> Path:
    """Write ``visits`` as a truth CSV file (``path``, or ``visits.csv`` in a clip folder).

    Example:
        >>> save_visits([Visit("person", 10.0, 18.5)], "clips/door")  # doctest: +SKIP
        PosixPath('clips/door/visits.csv')
    """
    file = _visits_path(path)
    with file.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(_COLUMNS)
        for visit in sorted(visits, key=lambda v: (v.start, v.end, v.label)):
            writer.writerow((visit.label, f"{visit.start:.3f}", f"{visit.end:.3f}"))
    return file


@dataclass(frozen=True)
class ClipEvent:
    """One event, in seconds into the clip: from ``start`` to ``end`` (None: never ended).

    ``notified`` is when its ``start`` record came out (None: unknown).

    Example:
        >>> ClipEvent("person", 10.2, 18.4, notified=10.4).duration
        8.2
    """

    label: str
    start: float
    end: float | None
    notified: float | None = None

    @property
    def duration(self) -> float:
        """Seconds from start to end (infinite while it has not ended)."""
        return math.inf if self.end is None else self.end - self.start

    @classmethod
    def of(cls, event: Event, *, offset: float = 0.0, notified: float | None = None) -> ClipEvent:
        """``event`` with its times made relative to the clip; ``offset`` is the clip's start in
        the event's clock (the Unix time of its first frame for events from the server).

        Example:
            >>> event = Event(id="e1", camera="door", label="person", score=0.9, box=(1, 2, 3, 4),
            ...               frame_size=(320, 240), start_time=1010.0, best_time=1011.0,
            ...               group_id="e1", end_time=1018.0)
            >>> ClipEvent.of(event, offset=1000.0)
            ClipEvent(label='person', start=10.0, end=18.0, notified=None)
        """
        end = None if event.end_time is None else event.end_time - offset
        return cls(
            event.label, event.start_time - offset, end, None if notified is None else notified - offset
        )


@dataclass(frozen=True)
class DelayStats:
    """Summary of a set of delays in seconds (NaN when there are none).

    Example:
        >>> DelayStats.of([0.2, 0.4, 1.2]).median
        0.4
    """

    count: int
    mean: float
    median: float
    max: float

    @classmethod
    def of(cls, values: Iterable[float]) -> DelayStats:
        data = list(values)
        if not data:
            return cls(0, math.nan, math.nan, math.nan)
        return cls(len(data), statistics.fmean(data), statistics.median(data), max(data))


@dataclass(frozen=True)
class EventMatch:
    """What one event was matched to: a ``visit`` (``matched`` or ``duplicate``) or none (``false``)."""

    event: ClipEvent
    visit: Visit | None
    kind: MatchKind


@dataclass(frozen=True)
class EventScore:
    """How a clip's events compare with its true visits (see the module's matching rules).

    Example:
        >>> score = score_events([ClipEvent("person", 1.0, 5.0)], [Visit("person", 0.8, 5.2)], duration=3600)
        >>> score.matched, score.events_per_hour, score.errors
        (1, 1.0, 0)
    """

    events: int
    visits: int
    #: Visits matched by an event (one event each).
    matched: int
    #: Visits no event matched.
    missed: int
    #: Missed visits covered by an event matched to another visit (two visits made one event).
    merged: int
    #: Extra events of already matched visits.
    duplicated: int
    #: Events that overlap no visit.
    false_events: int
    #: Seconds of clip the events come from (for the rates).
    duration_s: float
    #: Event start minus visit start, over the matched visits.
    start_delay: DelayStats
    #: Start record (notification) minus visit start, over the matched visits whose events know it.
    notify_delay: DelayStats
    #: One per event, in order of start.
    matches: tuple[EventMatch, ...]
    missed_visits: tuple[Visit, ...]

    @property
    def events_per_hour(self) -> float:
        return self.events * 3600.0 / self.duration_s if self.duration_s > 0 else math.nan

    @property
    def false_per_hour(self) -> float:
        return self.false_events * 3600.0 / self.duration_s if self.duration_s > 0 else math.nan

    @property
    def errors(self) -> int:
        """Missed visits, duplicated and false events: every notification too many or too few."""
        return self.missed + self.duplicated + self.false_events

    def summary(self) -> str:
        """One line: the counts and the median delays."""
        return (
            f"{self.events} events for {self.visits} visits: {self.matched} matched, {self.missed} missed "
            f"({self.merged} merged), {self.duplicated} duplicated, {self.false_events} false; "
            f"{self.events_per_hour:.0f} events/h; median start delay {self.start_delay.median:+.2f} s, "
            f"notification {self.notify_delay.median:+.2f} s"
        )


def _overlaps(event: ClipEvent, visit: Visit, tolerance: float) -> bool:
    end = math.inf if event.end is None else event.end
    return (
        event.label == visit.label and event.start - tolerance <= visit.end and end + tolerance >= visit.start
    )


def score_events(
    events: Iterable[ClipEvent | Event],
    truth: Iterable[Visit],
    *,
    tolerance: float = 1.0,
    duration: float | None = None,
) -> EventScore:
    """Match ``events`` to the true visits and count what went right and wrong.

    ``events`` are `ClipEvent`s, or `Event`s whose times are already seconds into the clip.
    ``tolerance`` widens each event by that many seconds on both sides before looking for
    overlaps (annotations are not frame-exact). ``duration`` is the clip's length in seconds,
    for the rates; None: the latest end of a visit or event.

    Raises:
        ValueError: a negative or non-finite tolerance, or a duration that is not positive.

    Example:
        >>> truth = [Visit("person", 2.0, 8.0)]
        >>> score_events([ClipEvent("person", 8.9, 9.5)], truth, tolerance=1.0).matched
        1
        >>> score_events([ClipEvent("person", 9.1, 9.5)], truth, tolerance=1.0).false_events
        1
    """
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"expected tolerance >= 0 seconds, got {tolerance!r}")
    found = sorted(
        (e if isinstance(e, ClipEvent) else ClipEvent.of(e) for e in events),
        key=lambda e: (e.start, math.inf if e.end is None else e.end),
    )
    visits = sorted(truth, key=lambda v: (v.start, v.end))
    if duration is None:
        ends = [v.end for v in visits] + [e.end if e.end is not None else e.start for e in found]
        duration = max(ends, default=0.0)
    elif not (math.isfinite(duration) and duration > 0):
        raise ValueError(f"expected a positive clip duration in seconds, got {duration!r}")
    taken: dict[int, ClipEvent] = {}
    matches: list[EventMatch] = []
    for event in found:
        near = [i for i, visit in enumerate(visits) if _overlaps(event, visit, tolerance)]
        free = [i for i in near if i not in taken]
        if free:
            taken[free[0]] = event
            matches.append(EventMatch(event, visits[free[0]], "matched"))
        elif near:
            matches.append(EventMatch(event, visits[near[0]], "duplicate"))
        else:
            matches.append(EventMatch(event, None, "false"))
    missed = [visit for i, visit in enumerate(visits) if i not in taken]
    merged = [v for v in missed if any(_overlaps(e, v, tolerance) for e in taken.values())]
    pairs = [(visits[i], event) for i, event in sorted(taken.items())]
    return EventScore(
        events=len(found),
        visits=len(visits),
        matched=len(taken),
        missed=len(missed),
        merged=len(merged),
        duplicated=sum(m.kind == "duplicate" for m in matches),
        false_events=sum(m.kind == "false" for m in matches),
        duration_s=float(duration),
        start_delay=DelayStats.of(e.start - v.start for v, e in pairs),
        notify_delay=DelayStats.of(e.notified - v.start for v, e in pairs if e.notified is not None),
        matches=tuple(matches),
        missed_visits=tuple(missed),
    )


@dataclass(frozen=True, eq=False)
class ClipDetections:
    """The detector's boxes for every frame of a clip (untracked), with the frames' times.

    Example:
        >>> cache = detect_clip("clips/door", detector)  # doctest: +SKIP
        >>> len(cache), cache.duration_s  # doctest: +SKIP
        (562, 56.1)
    """

    #: The clip's folder name.
    name: str
    #: (width, height) of the frames.
    frame_size: tuple[int, int]
    #: Each frame's arrival, seconds after the first frame.
    times: tuple[float, ...]
    detections: tuple[Detections, ...]
    # (every, tracking) -> the detections the engine gets: tracking does not depend on the
    # event settings, so a sweep tracks each frame selection once.
    _fed: dict[tuple[int, bool], tuple[tuple[float, Detections], ...]] = field(
        default_factory=dict, init=False, repr=False
    )

    def __post_init__(self) -> None:
        if len(self.times) != len(self.detections):
            raise ValueError(
                f"expected one time per frame's detections, got {len(self.times)} times "
                f"and {len(self.detections)} detections"
            )

    def __len__(self) -> int:
        return len(self.times)

    @property
    def duration_s(self) -> float:
        return self.times[-1] - self.times[0] if self.times else 0.0

    def fed(self, every: int = 1, tracking: bool = True) -> tuple[tuple[float, Detections], ...]:
        """(time, detections) of every ``every``-th frame, tracked by a fresh `Tracker` when
        ``tracking``: what `replay_events` gives the engine (computed once per argument pair)."""
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"expected every to be a whole number of frames >= 1, got {every!r}")
        key = (every, bool(tracking))
        out = self._fed.get(key)
        if out is None:
            tracker = Tracker() if tracking else None
            rows = []
            for i in range(0, len(self), every):
                t, found = self.times[i], self.detections[i]
                rows.append((t, tracker.update(found, t) if tracker is not None else found))
            out = self._fed[key] = tuple(rows)
        return out


def detect_clip(
    clip: ClipData | str | Path,
    detector: Detector,
    *,
    params: DetectParams | None = None,
    decode_reduce: DecodeReduce = "auto",
    progress: bool = True,
) -> ClipDetections:
    """Run ``detector`` on every frame of ``clip`` (a `ClipData` or a clip folder), once.

    ``params`` default to the detector's own; their ``conf`` is the floor of every later
    ``min_score`` (a box the detector dropped cannot count).

    Example:
        >>> cache = detect_clip("clips/door", open_detector())  # doctest: +SKIP
    """
    from tqdm.auto import tqdm

    data = clip if isinstance(clip, ClipData) else load_clip(clip)
    processor = FrameProcessor(detector, None, JpegEncoder(), params=params, decode_reduce=decode_reduce)
    times: list[float] = []
    found: list[Detections] = []
    started = time.perf_counter()
    for i in tqdm(range(len(data)), desc=f"detecting {data.path.name}", unit="frame", disable=not progress):
        frame = data.frame(i)
        found.append(processor.detect(frame).detections)
        times.append(data.frames[i].arrival_s)
    logger.info("%s: detected %d frames in %.1f s", data.path.name, len(found), time.perf_counter() - started)
    return ClipDetections(data.path.name, data.size, tuple(times), tuple(found))


def replay_events(
    detections: ClipDetections,
    config: EventConfig | None = None,
    *,
    every: int = 1,
    tracking: bool = True,
) -> tuple[ClipEvent, ...]:
    """The events an `EventEngine` with ``config`` makes of a clip's detections.

    The detections of every ``every``-th frame are tracked (``tracking``: by a new `Tracker`,
    as the server does) and given to the engine at the frame's time, as if the model ran on
    those frames only: ``every=3`` on a 15 fps clip is a model that keeps up with 5 fps.
    Events still going at the last frame end there.

    Example:
        >>> events = replay_events(cache, EventConfig(min_frames=2, end_timeout=2.0))  # doctest: +SKIP
        >>> events[0]  # doctest: +SKIP
        ClipEvent(label='person', start=2.3, end=10.5, notified=2.4)
    """
    ids = itertools.count(1)
    engine = EventEngine(detections.name, config, make_id=lambda start, camera: f"{camera}-{next(ids)}")
    notified: dict[str, float] = {}
    out: list[ClipEvent] = []

    def take(updates: list[EventUpdate], t: float) -> None:
        for update in updates:
            if update.type == "start":
                notified[update.event.id] = t
            elif update.type == "end":
                out.append(ClipEvent.of(update.event, notified=notified.get(update.event.id)))

    for t, found in detections.fed(every, tracking):
        take(engine.update(found, timestamp=t, frame_size=detections.frame_size), t)
    if len(detections):
        last = detections.times[-1]
        take(engine.end_all(last), last)
    return tuple(sorted(out, key=lambda e: e.start))


@dataclass(frozen=True)
class EventRun:
    """One configuration replayed over a clip: its events and their score.

    ``zones`` is the name the zones were given in `sweep_events`.
    """

    zones: str
    config: EventConfig
    every: int
    events: tuple[ClipEvent, ...]
    score: EventScore

    @property
    def name(self) -> str:
        """The settings that vary in a sweep, as text."""
        name = f"{self.zones}, min_frames={self.config.min_frames}, end_timeout={self.config.end_timeout:g}"
        return name + (f", every={self.every}" if self.every != 1 else "")


@dataclass(frozen=True)
class EventSweep:
    """The runs of `sweep_events`, in the order of the grid.

    Example:
        >>> sweep = sweep_events(cache, truth, min_frames=[1, 3], end_timeout=[2.0, 5.0])  # doctest: +SKIP
        >>> sweep.best().name  # doctest: +SKIP
        'whole frame, min_frames=3, end_timeout=2'
    """

    runs: tuple[EventRun, ...]

    def __len__(self) -> int:
        return len(self.runs)

    def __iter__(self) -> Iterator[EventRun]:
        return iter(self.runs)

    def find(
        self,
        *,
        zones: str | None = None,
        min_frames: int | None = None,
        end_timeout: float | None = None,
        every: int | None = None,
    ) -> EventRun:
        """The first run with the given settings (those not given may be anything).

        Raises:
            LookupError: no run has them.
        """
        for run in self.runs:
            if (
                (zones is None or run.zones == zones)
                and (min_frames is None or run.config.min_frames == min_frames)
                and (end_timeout is None or run.config.end_timeout == end_timeout)
                and (every is None or run.every == every)
            ):
                return run
        wanted = {"zones": zones, "min_frames": min_frames, "end_timeout": end_timeout, "every": every}
        given = ", ".join(f"{k}={v!r}" for k, v in wanted.items() if v is not None)
        raise LookupError(f"expected a run with {given}, got none among {len(self.runs)} runs")

    def best(self, *, max_notify_delay: float = 0.5) -> EventRun:
        """The run to recommend: the fewest errors (missed, duplicated and false), then

        * the highest ``min_frames`` whose notifications all come at most ``max_notify_delay``
          seconds after their visits start (any, when none does): the most protection from
          one-off false detections that a short clip may not show;
        * the middle one of the ``end_timeout`` values left (the lower of two middles): the
          most margin both ways, from dropouts that split a visit and gaps that merge two;
        * the first zones, then ``every``, in the order of the sweep.

        Raises:
            LookupError: the sweep has no runs.

        Example:
            >>> sweep.best(max_notify_delay=1.0).config.min_frames  # doctest: +SKIP
            5
        """
        if not self.runs:
            raise LookupError("expected runs to choose from, got an empty sweep")
        fewest = min(run.score.errors for run in self.runs)
        left = [run for run in self.runs if run.score.errors == fewest]
        prompt = [run for run in left if _within(run.score.notify_delay, max_notify_delay)]
        left = prompt or left
        frames = max(run.config.min_frames for run in left)
        left = [run for run in left if run.config.min_frames == frames]
        first = left[0]
        left = [run for run in left if run.zones == first.zones and run.every == first.every]
        timeouts = sorted({run.config.end_timeout for run in left})
        middle = timeouts[(len(timeouts) - 1) // 2]
        return next(run for run in left if run.config.end_timeout == middle)

    def to_frame(self) -> pd.DataFrame:
        """One row per run: its settings, counts, rate and delays (needs pandas: ``[profile]``).

        Delays are in seconds: ``start_delay_s`` and ``notify_delay_s`` medians,
        ``notify_delay_max_s`` the latest notification. Rows are in the order of the sweep.

        Example:
            >>> sweep.to_frame().sort_values(["errors", "notify_delay_s"]).head()  # doctest: +SKIP
        """
        try:
            import pandas as pd
        except ModuleNotFoundError as exc:
            raise MissingDependency("pandas", "profile", "EventSweep.to_frame") from exc
        rows = []
        for run in self.runs:
            score = run.score
            rows.append(
                {
                    "zones": run.zones,
                    "min_frames": run.config.min_frames,
                    "end_timeout": run.config.end_timeout,
                    "every": run.every,
                    "events": score.events,
                    "visits": score.visits,
                    "matched": score.matched,
                    "missed": score.missed,
                    "merged": score.merged,
                    "duplicated": score.duplicated,
                    "false_events": score.false_events,
                    "errors": score.errors,
                    "events_per_hour": score.events_per_hour,
                    "start_delay_s": score.start_delay.median,
                    "notify_delay_s": score.notify_delay.median,
                    "notify_delay_max_s": score.notify_delay.max,
                }
            )
        return pd.DataFrame(rows)


def _within(delays: DelayStats, limit: float) -> bool:
    return delays.count == 0 or delays.max <= limit


def sweep_events(
    detections: ClipDetections,
    truth: Iterable[Visit],
    *,
    min_frames: Sequence[int] = (3,),
    end_timeout: Sequence[float] = (5.0,),
    zones: Mapping[str, Sequence[Polygon]] | None = None,
    every: Sequence[int] = (1,),
    base: EventConfig | None = None,
    tracking: bool = True,
    tolerance: float = 1.0,
) -> EventSweep:
    """Replay and score every combination of named ``zones`` (default: ``{"whole frame": []}``),
    ``min_frames``, ``end_timeout`` and ``every``; the other settings come from ``base``.

    Raises:
        ConfigurationError: a setting out of range (`EventConfig`'s checks).

    Example:
        >>> path = [(0, 0.8), (1, 0.8), (1, 1), (0, 1)]
        >>> sweep = sweep_events(cache, truth, min_frames=[1, 3, 5], end_timeout=[1.0, 5.0],
        ...                      zones={"whole frame": [], "path": [path]})  # doctest: +SKIP
        >>> len(sweep)  # doctest: +SKIP
        12
    """
    visits = tuple(truth)
    named = dict(zones) if zones is not None else {"whole frame": ()}
    start = base or EventConfig()
    runs: list[EventRun] = []
    for (name, polygons), frames, timeout, step in itertools.product(
        named.items(), min_frames, end_timeout, every
    ):
        config = replace(start, min_frames=frames, end_timeout=timeout, zones=polygons)
        events = replay_events(detections, config, every=step, tracking=tracking)
        score = score_events(events, visits, tolerance=tolerance, duration=detections.duration_s)
        runs.append(EventRun(name, config, step, events, score))
    return EventSweep(tuple(runs))


def events_toml(config: EventConfig, *, camera_id: str, url: str) -> str:
    """``config``'s event settings as a ``[[cameras]]`` table of the server's TOML config
    (``labels``, ``min_score``, ``min_frames``, ``end_timeout``, ``zones``: the per-camera
    setting names), for the camera ``camera_id`` at ``url``.

    Example:
        >>> print(events_toml(EventConfig(end_timeout=2.0), camera_id="door", url="http://cam:81/stream"))
        [[cameras]]
        id = "door"
        url = "http://cam:81/stream"
        labels = ["person"]
        min_score = 0.5
        min_frames = 3
        end_timeout = 2.0
        zones = []
    """
    # JSON strings and arrays of numbers are valid TOML; floats keep their point (2.0, not 2).
    zones = [[[float(x), float(y)] for x, y in polygon] for polygon in config.zones]
    return "\n".join(
        [
            "[[cameras]]",
            f"id = {json.dumps(camera_id)}",
            f"url = {json.dumps(url)}",
            f"labels = {json.dumps(list(config.labels))}",
            f"min_score = {float(config.min_score)!r}",
            f"min_frames = {int(config.min_frames)}",
            f"end_timeout = {float(config.end_timeout)!r}",
            f"zones = {json.dumps(zones)}",
        ]
    )


_KIND_COLORS: Final = {"matched": "tab:green", "duplicate": "tab:orange", "false": "tab:red"}


def plot_event_timeline(
    truth: Sequence[Visit], runs: Sequence[EventRun], *, duration: float | None = None
) -> Figure:
    """The true visits on the top row and each run's events below, coloured by what they
    matched (green: a visit, orange: a duplicate, red: nothing), with a tick where each event's
    notification came; a visit missed by any run is hatched. Needs matplotlib (``[profile]``).

    Example:
        >>> defaults = sweep.find(min_frames=3, end_timeout=5.0)  # doctest: +SKIP
        >>> plot_event_timeline(truth, [defaults, sweep.best()])  # doctest: +SKIP
    """
    try:
        from matplotlib.figure import Figure
        from matplotlib.patches import Patch
    except ModuleNotFoundError as exc:
        raise MissingDependency("matplotlib", "profile", "plot_event_timeline") from exc

    end = duration if duration is not None else max((r.score.duration_s for r in runs), default=0.0)
    fig = Figure(figsize=(10, 1.2 + 0.45 * (len(runs) + 1)), layout="constrained")
    ax = fig.add_subplot()
    missed = {visit for run in runs for visit in run.score.missed_visits}
    for visit in truth:
        ax.broken_barh(
            [(visit.start, visit.duration)],
            (0.6, 0.8),
            color="tab:blue",
            alpha=0.6,
            hatch="//" if visit in missed else None,
        )
    for row, run in enumerate(runs, start=1):
        for match in run.score.matches:
            event = match.event
            width = (end if event.end is None else event.end) - event.start
            ax.broken_barh(
                [(event.start, max(width, 0.05))], (row + 0.6, 0.8), color=_KIND_COLORS[match.kind]
            )
            if event.notified is not None:
                ax.plot([event.notified], [row + 1.0], marker="|", color="black", markersize=12)
    names = ["visits", *(run.name for run in runs)]
    ax.set_yticks([i + 1.0 for i in range(len(names))], names)
    ax.set_ylim(len(names) + 0.5, 0.5)
    ax.set_xlim(0, end)
    ax.set_xlabel("seconds into the clip   (| : notification)")
    legend = [Patch(color="tab:blue", alpha=0.6, label="visit")]
    legend += [Patch(color=color, label=kind) for kind, color in _KIND_COLORS.items()]
    ax.legend(handles=legend, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=4, frameon=False)
    return fig


# ---------------------------------------------------------------------------------------------
# The demo clip: the emulator's yard scene cut into a timeline of visits.

# A person is on the near path when their feet (box bottom) are below this fraction of the frame
# height: the yard's near walkers have theirs at 0.95 and 0.97, the far one at 0.80.
_PATH_FEET: Final = 0.88
# A person counts as in view when at least this share of their box is inside the frame.
_IN_VIEW: Final = 0.5
_SIZE: Final = (320, 240)
# The sensor's JPEG quality (ESP32 scale, lower is better), as in the recorded clips in data/.
_SENSOR_QUALITY: Final = 12
# Daylight: a little noise. Dusk: more noise and a scene darkened by up to _DUSK_RAMP grey levels,
# darkest while the person stands (_DUSK_STILL_S puts the visit in the middle of the ramp's loop),
# where the model's confidence flickers around 0.5.
_DAY_NOISE: Final = 3
_DAY_STILL_S: Final = 4.0
_DUSK_NOISE: Final = 6
_DUSK_RAMP: Final = -148.0
_DUSK_STILL_S: Final = 13.0


@dataclass(frozen=True)
class _Shot:
    """One clip frame: frame ``index`` of ``scene``, or an empty frame with ``paste`` (a box of
    frame ``index``: the far walker alone) copied onto it."""

    scene: str
    index: int
    paste: tuple[int, int, int, int] | None = None
    base: int = 0


def write_yard_clip(out_dir: str | Path, *, fps: float = 10.0, overwrite: bool = False) -> Path:
    """Write the demo clip for event tuning into ``out_dir``, with its truth in ``visits.csv``.

    56 seconds of the emulator's yard (`espdetect.emulator.scene.YardScene`, 320x240, its
    sensor noise and JPEG quality 12) cut into a timeline: a man walks in, stands and leaves;
    3 s later two men cross; a passer-by walks on the far side of the yard and turns
    back; a man peeks in and goes back; at dusk (a darker, noisier picture where the model's
    confidence flickers) a man walks in, stands and leaves. Frames arrive exactly ``1/fps``
    apart. Every frame is built the same way on every run.

    The truth comes from the scene's construction, not from a model: it lists the visits to
    the yard's near path - the runs of frames in which a person whose feet are on it (below
    0.88 of the frame height; the far side of the yard is at 0.80) has at least half of their
    box in view - with ``label`` "person". The passer-by on the far side is not a visit: the
    demo wants a zone to leave him out.

    Raises:
        FileExistsError: ``out_dir`` already holds a clip and ``overwrite`` is False.

    Example:
        >>> clip = write_yard_clip("clips/yard-events")  # doctest: +SKIP
        >>> len(load_visits(clip))  # doctest: +SKIP
        4
    """
    from espdetect.emulator.cache import jpeg_quality
    from espdetect.emulator.scene import Scene, SensorEffects, YardScene

    day_yard = YardScene(fps, _DAY_STILL_S)
    dusk_yard = YardScene(fps, _DUSK_STILL_S)
    yards = {"day": day_yard, "dusk": dusk_yard}
    scenes: dict[str, Scene] = {
        "day": SensorEffects(day_yard, _DAY_NOISE),
        "dusk": SensorEffects(dusk_yard, _DUSK_NOISE, _DUSK_RAMP),
    }
    shots = _yard_timeline(day_yard, dusk_yard, fps)
    quality = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality(_SENSOR_QUALITY)]
    path = Path(out_dir)
    on_path: list[bool] = []
    with ClipWriter(path, source=f"espdetect yard event clip ({fps:g} fps)", overwrite=overwrite) as writer:
        for seq, shot in enumerate(shots):
            scene = scenes[shot.scene]
            if shot.paste is None:
                image = scene.render(shot.index, _SIZE)
                people = yards[shot.scene].boxes(shot.index, _SIZE, clip=False)
            else:
                image = scene.render(shot.base, _SIZE).copy()
                x1, y1, x2, y2 = shot.paste
                image[y1:y2, x1:x2] = scene.render(shot.index, _SIZE)[y1:y2, x1:x2]
                people = _far(yards[shot.scene].boxes(shot.index, _SIZE, clip=False))
            on_path.append(any(_visitor(box) for box in people))
            ok, buf = cv2.imencode(".jpg", image, quality)
            if not ok:  # pragma: no cover - OpenCV always encodes a valid BGR image
                raise RuntimeError(f"OpenCV failed to encode yard clip frame {seq}")
            t = seq / fps
            writer.write(Frame(seq, path.name, buf.tobytes(), arrival=t, arrival_mono=t))
    visits = [Visit("person", first / fps, last / fps) for first, last in _runs(on_path)]
    save_visits(visits, path)
    logger.info("wrote %s: %d frames, %d visits", path, len(shots), len(visits))
    return path


def _visitor(box: np.ndarray) -> bool:
    w, h = _SIZE
    x1, y1, x2, y2 = (float(v) for v in box)
    area = (x2 - x1) * (y2 - y1)
    seen = max(0.0, min(x2, w) - max(x1, 0.0)) * max(0.0, min(y2, h) - max(y1, 0.0))
    return area > 0 and seen / area >= _IN_VIEW and y2 >= _PATH_FEET * h


def _far(boxes: np.ndarray) -> np.ndarray:
    """The boxes of people off the near path (the far walker)."""
    return boxes[boxes[:, 3] < _PATH_FEET * _SIZE[1]]


def _runs(flags: Sequence[bool]) -> list[tuple[int, int]]:
    """(first, last) index of each run of True."""
    out: list[tuple[int, int]] = []
    first: int | None = None
    for i, flag in enumerate([*flags, False]):
        if flag and first is None:
            first = i
        elif not flag and first is not None:
            out.append((first, i - 1))
            first = None
    return out


def _yard_timeline(day: YardScene, dusk: YardScene, fps: float) -> list[_Shot]:
    segments = {s.name: s for s in day.segments}
    dusk_segments = {s.name: s for s in dusk.segments}

    def empty(scene: str, seconds: float, first: int, stop: int) -> list[_Shot]:
        # Frames of an empty stretch, repeated as needed (their noise differs frame to frame).
        count = max(1, round(seconds * fps))
        return [_Shot(scene, first + k % (stop - first)) for k in range(count)]

    def frames(scene: str, *names: str) -> list[_Shot]:
        table = segments if scene == "day" else dusk_segments
        return [_Shot(scene, i) for name in names for i in range(table[name].start, table[name].stop)]

    still, gap = segments["still"], segments["still-2"]
    visit = frames("day", "enter", "standing", "leave")
    peek = frames("day", "enter")
    dusk_still, dusk_gap = dusk_segments["still"], dusk_segments["still-2"]
    return [
        *empty("day", 2.0, still.start, still.stop),
        *visit,
        # Shorter than the default end_timeout: the two visits make one event unless it is shortened.
        *empty("day", 3.0, still.start, still.stop),
        *frames("day", "crossing"),
        *empty("day", 6.0, gap.start, gap.stop),
        *_passer_by(day, segments["crossing"], gap),
        *empty("day", 6.0, gap.start, gap.stop),
        *peek,
        *reversed(peek[:-1]),
        # Dusk: the last frames of its first still stretch, darkening toward the visit.
        *empty("dusk", 6.0, dusk_still.stop - round(6.0 * fps), dusk_still.stop),
        *frames("dusk", "enter", "standing", "leave"),
        *empty("dusk", 2.0, dusk_gap.start, dusk_gap.stop),
    ]


def _passer_by(day: YardScene, crossing: Segment, empty: Segment) -> list[_Shot]:
    """The far walker of the crossing alone: from where he enters until the near walker would
    cover him, pasted onto an empty frame, then the same way back."""
    out: list[_Shot] = []
    for index in range(crossing.start, crossing.stop):
        boxes = day.boxes(index, _SIZE)
        far = _far(boxes)
        if not len(far):
            if out:
                break
            continue
        near = boxes[boxes[:, 3] >= _PATH_FEET * _SIZE[1]]
        box = far[0]
        if any(_intersects(box, other) for other in near):
            break
        x1, y1, x2, y2 = (int(v) for v in box)
        out.append(_Shot("day", index, (x1, y1, x2, y2), empty.start + len(out) % len(empty)))
    return [*out, *reversed(out[:-1])]


def _intersects(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3])
