"""`Tracker`: identities for detections, and where boxes are between two model calls.

A small SORT-style tracker on numpy: each track holds its last box, a velocity (per coordinate,
smoothed over matches) and counts of matches and misses. A model call's detections are matched
to the tracks' predicted boxes greedily by IoU within a class; a match continues a track, an
unmatched detection starts one, and a track that ``max_misses`` model calls in a row did not see
ends (its object left). Between model calls `Tracker.predict` moves every box along its
velocity, for at most ``horizon`` seconds after its last match, so a walking person's box walks
with them instead of staying where the last model call saw them.

Why not a library: the maintained trackers (supervision's ByteTrack, ``trackers``, ``norfair``)
bring scipy, matplotlib, PyAV or the GUI build of OpenCV, or pin numpy below 2 — hundreds of
megabytes on a Raspberry Pi for a few dozen lines that a handful of objects per camera need.

Tracks age only with model calls, not with time: when motion gating stops the model because
nothing moves, a parked car keeps its track and its id until a model call misses it.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Final

import numpy as np

from espdetect.constraints import FloatRange, IntRange
from espdetect.detections import Detections, box_iou

__all__ = ["Track", "Tracker", "TrackerConfig"]

_UNIT: Final = FloatRange(0.0, 1.0)
_MISSES: Final = IntRange(1, 1000)
_SECONDS: Final = FloatRange(0.0, 60.0)


@dataclass(frozen=True)
class TrackerConfig:
    """How detections become tracks.

    Example:
        >>> TrackerConfig(match_iou=0.2).match_iou
        0.2
    """

    #: Least IoU between a detection and a track's predicted box for the detection to continue it.
    match_iou: float = 0.25
    #: Model calls in a row that may miss a track before it ends.
    max_misses: int = 3
    #: Seconds after its last match that a track's box keeps moving along its velocity.
    horizon: float = 1.0
    #: Weight of the newest velocity measurement (the rest is the previous estimate).
    smoothing: float = 0.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "match_iou", _UNIT.check("match_iou", self.match_iou))
        object.__setattr__(self, "max_misses", _MISSES.check("max_misses", self.max_misses))
        object.__setattr__(self, "horizon", _SECONDS.check("horizon", self.horizon))
        object.__setattr__(self, "smoothing", _UNIT.check("smoothing", self.smoothing))


@dataclass(frozen=True)
class Track:
    """One tracked object as of its last match."""

    id: int
    class_id: int
    confidence: float
    #: xyxy box at ``time``.
    box: np.ndarray
    #: Pixels per second of each xyxy coordinate.
    velocity: np.ndarray
    #: When ``box`` was seen (seconds, the frames' arrival clock).
    time: float
    hits: int = 1
    misses: int = 0

    def box_at(self, t: float, horizon: float) -> np.ndarray:
        """Where the box is at ``t``, moved along the velocity for at most ``horizon`` seconds."""
        return self.box + self.velocity * min(max(0.0, t - self.time), horizon)


class Tracker:
    """Tracks for one camera. `update` with each model call's detections, `predict` in between.

    `update` and `predict` may run on different threads: the tracks are replaced as a whole.

    Example:
        >>> tracker = Tracker()
        >>> tracked = tracker.update(detections, t=frame.arrival_mono)  # doctest: +SKIP
        >>> tracked.tracker_id  # doctest: +SKIP
        array([1, 2])
        >>> tracker.predict(t=later_frame.arrival_mono).xyxy  # doctest: +SKIP
    """

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        self._tracks: tuple[Track, ...] = ()
        self._ids = itertools.count(1)
        self._names: Mapping[int, str] = {}
        self._lock = threading.Lock()

    @property
    def tracks(self) -> tuple[Track, ...]:
        """The live tracks (a snapshot)."""
        return self._tracks

    def moving(self, t: float) -> bool:
        """Whether any track was last seen moving, within the prediction horizon of ``t``."""
        return any(
            t - track.time < self.config.horizon and bool(np.abs(track.velocity).max() > 1.0)
            for track in self._tracks
        )

    def reset(self) -> None:
        """End every track (a new connection: the scene may have changed)."""
        with self._lock:
            self._tracks = ()

    def update(self, detections: Detections, t: float) -> Detections:
        """Match a model call's ``detections`` (taken at ``t``) to the tracks; they get track ids."""
        config = self.config
        with self._lock:
            tracks = self._tracks
            predicted = np.asarray([tr.box_at(t, config.horizon) for tr in tracks], np.float32).reshape(-1, 4)
            matches = _match(detections, tracks, predicted, config.match_iou)
            ids = np.zeros(len(detections), np.int64)
            kept: list[Track] = []
            for j, track in enumerate(tracks):
                i = matches.get(j)
                if i is not None:
                    updated = _continued(track, detections, i, t, config.smoothing)
                    kept.append(updated)
                    ids[i] = updated.id
                elif track.misses + 1 <= config.max_misses:
                    kept.append(replace(track, misses=track.misses + 1))
            matched = set(matches.values())
            for i in range(len(detections)):
                if i not in matched:
                    track = Track(
                        id=next(self._ids),
                        class_id=int(detections.class_id[i]),
                        confidence=float(detections.confidence[i]),
                        box=detections.xyxy[i].astype(np.float32),
                        velocity=np.zeros(4, np.float32),
                        time=t,
                    )
                    kept.append(track)
                    ids[i] = track.id
            self._tracks = tuple(kept)
            self._names = detections.names
        return detections.with_tracker_ids(ids)

    def predict(self, t: float) -> Detections:
        """The boxes of the last model call at ``t``, moved along their tracks, with their ids.

        Tracks the last model call missed are left out: drawing them would show an object the
        model no longer sees.
        """
        tracks = [tr for tr in self._tracks if tr.misses == 0]
        names = self._names
        if not tracks:
            return Detections.empty(names).with_tracker_ids(np.zeros(0, np.int64))
        return Detections(
            xyxy=np.asarray([tr.box_at(t, self.config.horizon) for tr in tracks], np.float32),
            confidence=np.asarray([tr.confidence for tr in tracks], np.float32),
            class_id=np.asarray([tr.class_id for tr in tracks], np.int64),
            names=names,
            tracker_id=np.asarray([tr.id for tr in tracks], np.int64),
        )


def _match(
    detections: Detections, tracks: tuple[Track, ...], predicted: np.ndarray, least: float
) -> dict[int, int]:
    """Track index -> detection index, greedily by IoU (same class only, at least ``least``)."""
    if not tracks or not len(detections):
        return {}
    iou = box_iou(predicted, detections.xyxy)
    classes = np.asarray([tr.class_id for tr in tracks])
    iou[classes[:, None] != detections.class_id[None, :]] = -1.0
    matches: dict[int, int] = {}
    taken: set[int] = set()
    for flat in np.argsort(-iou, axis=None):
        j, i = divmod(int(flat), iou.shape[1])
        if iou[j, i] < least:
            break
        if j not in matches and i not in taken:
            matches[j] = i
            taken.add(i)
    return matches


def _continued(track: Track, detections: Detections, i: int, t: float, smoothing: float) -> Track:
    box = detections.xyxy[i].astype(np.float32)
    dt = t - track.time
    velocity = track.velocity
    if dt > 0:
        measured = (box - track.box) / dt
        # The first measurement is all there is to go on; later ones are blended with the estimate.
        velocity = measured if track.hits == 1 else (1.0 - smoothing) * velocity + smoothing * measured
    return replace(
        track,
        class_id=int(detections.class_id[i]),
        confidence=float(detections.confidence[i]),
        box=box,
        velocity=velocity.astype(np.float32),
        time=t,
        hits=track.hits + 1,
        misses=0,
    )
