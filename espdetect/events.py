"""`EventEngine`: tracked detections of one camera become events — who came, when, a best picture.

An event is one label's presence in a camera's zones: "a person was at the door from 12:03:07
to 12:04:10". Its rules, applied per frame by `EventEngine.update`:

* **Counting.** A detection counts when its label is in ``labels``, its confidence is at least
  ``min_score`` and its *anchor* lies in a zone (``zones``; none means the whole frame). The
  anchor is the bottom centre of the box — where a person stands — so a person whose head is
  over the path but who stands on the lawn is on the lawn. A point on a zone's edge is inside.
* **Debounce.** An event starts when one track (one ``Detections.tracker_id``; without a
  tracker, the label) has counted in ``min_frames`` frames *in a row*: a frame in which it does
  not count starts its streak again, so one-off false detections never make an event. The
  event's ``start_time`` is the first frame of that streak.
* **One event per label.** While a label's event is active, every counting detection of that
  label feeds it, whatever its track id and without debounce: a person standing still whose
  detection flickers, or whose track id changes, stays one event; two people walking in
  together make one "person" event.
* **End.** An event ends at the first frame (or `EventEngine.tick`) at least ``end_timeout``
  seconds after a detection last fed it; its ``end_time`` is that last sighting, not the moment
  the timeout ran out.
* **Best picture.** Each event keeps its best moment: the highest ``confidence × box area``
  (area as a fraction of the frame) of the detections that fed it, with that box and score and
  the JPEG the caller's ``snapshot`` callable gave. The callable is invoked only when a frame
  beats the best by more than ``min_gain`` (10 %: the quality is at most 1, so an event takes a
  bounded number of pictures however long it lasts) and at most once per frame.
* **Updates.** ``start`` when an event starts, ``end`` when it ends, and in between ``update``
  when the best has improved, at most once per ``update_interval`` seconds.
* **Visits.** Events overlapping in time make one visit (``group_id``, the id of its first
  event): a new event joins the current visit while one of its events is active or until
  ``group_timeout`` seconds after the last one ended. Only the first ``start`` of a visit has
  ``notify`` set, so a person with a dog is one notification, not two.

Timestamps are the caller's, in seconds: pass the frames' Unix arrival time
(``Frame.arrival``) so that ``start_time`` and ``end_time`` are wall-clock times. One that runs
backwards (the clock was set back) is taken as the latest one seen, so events still end.

The engine is pure: no threads, no I/O, no clock of its own; one caller per camera.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from espdetect.constraints import (
    EVENT_END_TIMEOUT,
    EVENT_MIN_FRAMES,
    EVENT_SECONDS,
    MAX_CLASSES,
    UNIT,
)
from espdetect.detections import Detections
from espdetect.exceptions import ConfigurationError
from espdetect.motion import Polygon, check_polygons

__all__ = ["Event", "EventConfig", "EventEngine", "EventUpdate", "UpdateType", "check_labels"]

logger = logging.getLogger(__name__)

_LABEL = re.compile(r"[^/+#\x00-\x1f\x7f]{1,64}")

#: What happened to an event: it started, its best picture improved, or it ended.
UpdateType = Literal["start", "update", "end"]


def check_labels(value: object, name: str = "labels") -> tuple[str, ...]:
    """``value`` as a tuple of 1 to `MAX_CLASSES` non-empty labels without repeats.

    Example:
        >>> check_labels(["person", "car", "person"])
        ('person', 'car')
    """
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise ConfigurationError(f"expected {name} to be a list of labels, got {value!r}", field=name)
    if not 1 <= len(value) <= MAX_CLASSES:
        raise ConfigurationError(
            f"expected {name} to name 1 to {MAX_CLASSES} labels, got {len(value)}", field=name
        )
    for label in value:
        # Labels become MQTT topic levels and file names: no separators, wildcards or controls.
        if not isinstance(label, str) or not _LABEL.fullmatch(label):
            raise ConfigurationError(
                f"expected {name} to be class names of 1 to 64 characters without / + # or control "
                f"characters, got {label!r}",
                field=name,
            )
    return tuple(dict.fromkeys(value))  # without repeats, in the given order


@dataclass(frozen=True)
class EventConfig:
    """Which detections make events, and the windows that start, end and group them.

    Example:
        >>> config = EventConfig(labels=["person", "dog"], zones=[[(0, 0.5), (1, 0.5), (1, 1), (0, 1)]])
        >>> config.labels, config.min_frames
        (('person', 'dog'), 3)
    """

    #: Labels that make events (the model's class names).
    labels: Sequence[str] = ("person",)
    #: Least confidence of a detection that counts.
    min_score: float = 0.5
    #: Frames in a row a track must count in before its event starts.
    min_frames: int = 3
    #: Seconds without a counting detection after which an event ends.
    end_timeout: float = 5.0
    #: Polygons in normalised coordinates a detection's anchor must lie in; none: the whole frame.
    zones: Sequence[Polygon] = ()
    #: Seconds after a visit's last event ended during which a new event still joins the visit.
    group_timeout: float = 10.0
    #: Least seconds between two ``update`` records of one event.
    update_interval: float = 1.0
    #: How much better (a fraction) a moment must be than the best to replace it.
    min_gain: float = 0.1

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", check_labels(self.labels))
        object.__setattr__(self, "min_score", UNIT.check("min_score", self.min_score))
        object.__setattr__(self, "min_frames", EVENT_MIN_FRAMES.check("min_frames", self.min_frames))
        object.__setattr__(self, "end_timeout", EVENT_END_TIMEOUT.check("end_timeout", self.end_timeout))
        object.__setattr__(self, "zones", check_polygons(self.zones, "zones"))
        object.__setattr__(self, "group_timeout", EVENT_SECONDS.check("group_timeout", self.group_timeout))
        object.__setattr__(
            self, "update_interval", EVENT_SECONDS.check("update_interval", self.update_interval)
        )
        object.__setattr__(self, "min_gain", UNIT.check("min_gain", self.min_gain))


@dataclass(frozen=True)
class Event:
    """One label's presence in a camera's zones, as of one update (a new record per change).

    ``box`` is the pixel xyxy box of the best moment in a frame of ``frame_size`` (width,
    height); ``score`` its confidence. ``snapshot`` (the JPEG of that moment, when the caller
    gave one) stays out of `to_dict`.

    Example:
        >>> event = Event(id="e1", camera="door", label="person", score=0.9, box=(10, 20, 50, 120),
        ...               frame_size=(640, 480), start_time=100.0, best_time=101.0, group_id="e1")
        >>> event.to_dict()["box"], event.active
        ([10.0, 20.0, 50.0, 120.0], True)
    """

    id: str
    camera: str
    label: str
    score: float
    box: tuple[float, float, float, float]
    frame_size: tuple[int, int]
    start_time: float
    #: When the best moment was seen.
    best_time: float
    #: The visit this event belongs to (the id of the visit's first event).
    group_id: str
    #: The last sighting; None while the event is active.
    end_time: float | None = None
    snapshot: bytes | None = field(default=None, repr=False, compare=False)

    @property
    def active(self) -> bool:
        return self.end_time is None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form, without the snapshot's bytes."""
        return {
            "id": self.id,
            "camera": self.camera,
            "label": self.label,
            "score": round(self.score, 4),
            "box": [round(float(v), 1) for v in self.box],
            "frame_size": list(self.frame_size),
            "start_time": self.start_time,
            "end_time": self.end_time,
            "best_time": self.best_time,
            "group_id": self.group_id,
            "has_snapshot": self.snapshot is not None,
        }


@dataclass(frozen=True)
class EventUpdate:
    """An event that started, improved or ended; ``notify`` on the first start of a visit only.

    Example:
        >>> event = Event(id="e1", camera="door", label="person", score=0.9, box=(10, 20, 50, 120),
        ...               frame_size=(640, 480), start_time=100.0, best_time=101.0, group_id="e1")
        >>> EventUpdate("start", event, notify=True).to_dict()["type"]
        'start'
    """

    type: UpdateType
    event: Event
    notify: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The event's fields with ``type`` and ``notify`` (an MQTT or webhook message)."""
        return {"type": self.type, **self.event.to_dict(), "notify": self.notify}


def new_event_id(start_time: float, camera: str) -> str:
    """A unique, sortable event id: the start time, the camera and a random suffix."""
    return f"{start_time:.6f}-{camera}-{secrets.token_hex(3)}"


@dataclass
class _Active:
    event: Event
    quality: float
    last_seen: float
    last_emitted: float
    #: Objects of the label counted in the last frame that had any.
    count: int = 1
    #: The best improved since the last record went out.
    pending: bool = False


@dataclass
class _Visit:
    id: str
    last_seen: float


@dataclass(frozen=True)
class _Sighting:
    """The best counting detection of one label in one frame."""

    quality: float
    score: float
    box: tuple[float, float, float, float]
    #: The tracks (or the label, without a tracker) that counted this frame.
    keys: tuple[int, ...]
    #: Detections of the label that counted this frame.
    count: int


class EventEngine:
    """Events of one camera from its tracked detections (see the module's rules).

    Call `update` with each frame's detections (empty ones included) and `tick` when time
    passes without frames; both return the records to store and publish.

    Example:
        >>> engine = EventEngine("door", EventConfig(min_frames=1))
        >>> person = Detections(xyxy=np.array([[100, 50, 200, 400]], np.float32),
        ...                     confidence=np.array([0.9], np.float32), class_id=np.array([0]),
        ...                     names={0: "person"}, tracker_id=np.array([1]))
        >>> [(u.type, u.notify) for u in engine.update(person, timestamp=0.0, frame_size=(640, 480))]
        [('start', True)]
        >>> [u.type for u in engine.tick(10.0)]
        ['end']
    """

    def __init__(
        self,
        camera: str,
        config: EventConfig | None = None,
        *,
        make_id: Callable[[float, str], str] = new_event_id,
    ) -> None:
        self.camera = camera
        self.config = config or EventConfig()
        self._make_id = make_id
        self._zones = _zone_vertices(self.config.zones)
        self._active: dict[str, _Active] = {}
        #: (label, track) -> (frames in a row it counted, the time of the first).
        self._streaks: dict[tuple[str, int], tuple[int, float]] = {}
        self._visit: _Visit | None = None
        #: Labels counted in the last frame (what `hold` keeps alive).
        self._seen: set[str] = set()
        self._now = float("-inf")

    @property
    def active(self) -> tuple[Event, ...]:
        """The events going on, as of their last record."""
        return tuple(state.event for state in self._active.values())

    @property
    def counts(self) -> dict[str, int]:
        """Per configured label, the objects counted in the last frame that had any while its
        event is active, else 0 (what a presence sensor shows: on for exactly the event)."""
        return {
            label: self._active[label].count if label in self._active else 0 for label in self.config.labels
        }

    def update(
        self,
        detections: Detections,
        *,
        timestamp: float,
        frame_size: tuple[int, int],
        snapshot: Callable[[], bytes] | None = None,
    ) -> list[EventUpdate]:
        """Take one frame's (tracked) detections; ``snapshot`` encodes that frame when asked."""
        width, height = frame_size
        if width <= 0 or height <= 0:
            raise ValueError(f"expected a positive (width, height) frame size, got {frame_size!r}")
        now = self._advance(timestamp)
        updates = self._expire(now)
        sightings = self._sightings(detections, (width, height))
        self._count(sightings, now)
        self._seen = set(sightings)
        picture = _Once(snapshot)
        for label, sighting in sightings.items():
            state = self._active.get(label)
            if state is not None:
                self._feed(state, sighting, (width, height), now, picture)
            elif self._debounced(label, sighting):
                updates.append(self._start(label, sighting, (width, height), now, picture))
        updates.extend(self._flush(now))
        return updates

    def hold(self, timestamp: float) -> list[EventUpdate]:
        """A frame at ``timestamp`` in which nothing changed (motion gating let the model rest):
        the labels seen in the last frame are still there, so their events stay alive.

        Unlike `update`, a held frame never lengthens a debounce streak: a detection has to be
        confirmed by the model in ``min_frames`` frames before an event starts.
        """
        now = self._advance(timestamp)
        for label in self._seen:
            state = self._active.get(label)
            if state is not None:
                state.last_seen = now
                if self._visit is not None:
                    self._visit.last_seen = now
        return self._expire(now) + self._flush(now)

    def reconfigure(self, config: EventConfig, timestamp: float) -> list[EventUpdate]:
        """Use ``config`` from now on; the events of labels it no longer has end now.

        Debounce streaks start again (new zones or scores may count other detections).
        """
        now = self._advance(timestamp)
        self.config = config
        self._zones = _zone_vertices(config.zones)
        gone = [label for label in self._active if label not in config.labels]
        self._streaks.clear()
        self._seen = set()
        ended = []
        for label in gone:
            state = self._active.pop(label)
            state.last_seen = min(state.last_seen, now)
            ended.append(self._end(state))
        return ended

    def tick(self, timestamp: float) -> list[EventUpdate]:
        """Time passed without a frame: end the events that timed out, send pending updates.

        Debounce streaks are kept: no frame is not a frame without the object.
        """
        now = self._advance(timestamp)
        return self._expire(now) + self._flush(now)

    def end_all(self, timestamp: float) -> list[EventUpdate]:
        """End every active event now (the camera is removed or the engine stops)."""
        self._advance(timestamp)
        ended = [self._end(state) for state in self._active.values()]
        self._active.clear()
        self._streaks.clear()
        self._seen = set()
        return ended

    def _advance(self, timestamp: float) -> float:
        if timestamp < self._now:
            logger.debug(
                "%s: timestamp %.3f before %.3f, taken as the latter", self.camera, timestamp, self._now
            )
        self._now = max(self._now, float(timestamp))
        return self._now

    def _expire(self, now: float) -> list[EventUpdate]:
        timeout = self.config.end_timeout
        gone = [label for label, state in self._active.items() if now - state.last_seen >= timeout]
        return [self._end(self._active.pop(label)) for label in gone]

    def _end(self, state: _Active) -> EventUpdate:
        state.event = replace(state.event, end_time=state.last_seen)
        return EventUpdate("end", state.event)

    def _sightings(self, detections: Detections, frame_size: tuple[int, int]) -> dict[str, _Sighting]:
        """The best counting detection of each configured label, in the order of ``labels``."""
        config = self.config
        width, height = frame_size
        tracks = detections.tracker_id
        found: dict[str, list[tuple[float, float, tuple[float, float, float, float], int]]] = {}
        for i, label in enumerate(detections.labels):
            score = float(detections.confidence[i])
            if label not in config.labels or score < config.min_score:
                continue
            x1, y1, x2, y2 = (float(v) for v in detections.xyxy[i])
            if not self._in_zone((x1 + x2) / 2 / width, y2 / height):
                continue
            area = max(0.0, x2 - x1) * max(0.0, y2 - y1) / (width * height)
            key = -1 if tracks is None else int(tracks[i])
            found.setdefault(label, []).append((score * min(area, 1.0), score, (x1, y1, x2, y2), key))
        out: dict[str, _Sighting] = {}
        for label in config.labels:
            if label in found:
                quality, score, box, _ = max(found[label], key=lambda row: row[0])
                keys = tuple(sorted({row[3] for row in found[label]}))
                out[label] = _Sighting(quality, score, box, keys, len(found[label]))
        return out

    def _in_zone(self, x: float, y: float) -> bool:
        if not self._zones:
            return True
        # Boxes predicted along a track can leave the frame; their anchor stays on its edge.
        px, py = _single(min(max(x, 0.0), 1.0)), _single(min(max(y, 0.0), 1.0))
        return any(_in_polygon(px, py, zone) for zone in self._zones)

    def _count(self, sightings: dict[str, _Sighting], now: float) -> None:
        """Lengthen the streaks of the tracks that counted this frame; drop every other streak."""
        old = self._streaks
        streaks: dict[tuple[str, int], tuple[int, float]] = {}
        for label, sighting in sightings.items():
            for track in sighting.keys:
                frames, first = old.get((label, track), (0, now))
                streaks[label, track] = (frames + 1, first)
        self._streaks = streaks

    def _debounced(self, label: str, sighting: _Sighting) -> bool:
        need = self.config.min_frames
        return any(self._streaks[label, track][0] >= need for track in sighting.keys)

    def _start(
        self, label: str, sighting: _Sighting, frame_size: tuple[int, int], now: float, picture: _Once
    ) -> EventUpdate:
        streaks = [self._streaks[label, track] for track in sighting.keys]
        start = min(first for frames, first in streaks if frames >= self.config.min_frames)
        event_id = self._make_id(start, self.camera)
        visit = self._visit
        window = self.config.end_timeout + self.config.group_timeout
        notify = visit is None or now - visit.last_seen > window
        if notify:
            visit = self._visit = _Visit(event_id, now)
        assert visit is not None  # set above when there was none
        visit.last_seen = now
        event = Event(
            id=event_id,
            camera=self.camera,
            label=label,
            score=sighting.score,
            box=sighting.box,
            frame_size=frame_size,
            start_time=start,
            best_time=now,
            group_id=visit.id,
            snapshot=picture(),
        )
        self._active[label] = _Active(
            event, sighting.quality, last_seen=now, last_emitted=now, count=sighting.count
        )
        return EventUpdate("start", event, notify=notify)

    def _feed(
        self, state: _Active, sighting: _Sighting, frame_size: tuple[int, int], now: float, picture: _Once
    ) -> None:
        state.last_seen = now
        state.count = sighting.count
        if self._visit is not None:
            self._visit.last_seen = now
        if sighting.quality <= state.quality * (1.0 + self.config.min_gain):
            return
        # When encoding fails the previous picture stays: an older picture beats none.
        image = picture() or state.event.snapshot
        state.event = replace(
            state.event,
            score=sighting.score,
            box=sighting.box,
            frame_size=frame_size,
            best_time=now,
            snapshot=image,
        )
        state.quality = sighting.quality
        state.pending = True

    def _flush(self, now: float) -> list[EventUpdate]:
        """``update`` records for the events whose best improved, once ``update_interval`` has passed."""
        out = []
        for state in self._active.values():
            if state.pending and now - state.last_emitted >= self.config.update_interval:
                state.pending = False
                state.last_emitted = now
                out.append(EventUpdate("update", state.event))
        return out


def _single(value: float) -> float:
    """``value`` rounded to float32, as zones and anchors were when OpenCV tested them.

    Both sides of a test rounding alike keeps a point that is on an edge in decimal (an anchor
    at 0.3 against an edge typed as 0.3) exactly on it.
    """
    return float(np.float32(value))


def _zone_vertices(zones: Sequence[Polygon]) -> list[tuple[tuple[float, float], ...]]:
    return [tuple((_single(x), _single(y)) for x, y in zone) for zone in zones]


def _in_polygon(x: float, y: float, polygon: Sequence[tuple[float, float]]) -> bool:
    """Whether (x, y) is inside ``polygon`` or on its edge, by the even-odd rule.

    OpenCV's ``pointPolygonTest(..., measureDist=False) >= 0`` without OpenCV: the same walk
    over the edges, counting those that cross the ray to the right of the point, and returning
    at once when the point is a vertex or on an edge, with OpenCV's float32 rounding, so the two
    agree on points on and next to edges too (checked on random and grid-aligned polygons).

    Example:
        >>> square = [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)]
        >>> _in_polygon(0.5, 0.5, square), _in_polygon(1.0, 0.25, square), _in_polygon(1.5, 0.5, square)
        (True, True, False)
    """
    inside = False
    x0, y0 = polygon[-1]
    for x1, y1 in polygon:
        if (y0 <= y and y1 <= y) or (y0 > y and y1 > y) or (x0 < x and x1 < x):
            # This edge cannot cross the ray; the point may still lie on it (a vertex, or along
            # a horizontal edge).
            if y == y1 and (x == x1 or (y == y0 and min(x0, x1) <= x <= max(x0, x1))):
                return True
        else:
            # Differences rounded to float32 as OpenCV's are (exactly: the operands are float32),
            # so that a point within rounding of an edge counts as on it there too.
            cross = _single(y - y0) * _single(x1 - x0) - _single(x - x0) * _single(y1 - y0)
            if cross == 0:
                return True
            # A crossing to the right of the point has this sign for an upward edge, the other
            # for a downward one.
            if (cross > 0) != (y1 < y0):
                inside = not inside
        x0, y0 = x1, y1
    return inside


class _Once:
    """Calls ``snapshot`` at most once (one encode per frame, shared by its events)."""

    def __init__(self, snapshot: Callable[[], bytes] | None) -> None:
        self._snapshot = snapshot
        self._called = False
        self._image: bytes | None = None

    def __call__(self) -> bytes | None:
        if not self._called and self._snapshot is not None:
            self._called = True
            try:
                self._image = self._snapshot()
            except Exception:
                # The event matters more than its picture: it goes on without one.
                logger.warning("snapshot failed; the event keeps its previous picture", exc_info=True)
        return self._image
