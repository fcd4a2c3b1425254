"""`EventStore`: events and their best pictures in a data directory, kept across restarts.

Layout of ``data_dir``:

* ``events.sqlite3`` — one row per event (stdlib `sqlite3`, WAL journal).
* ``snapshots/<id>.jpg`` — the event's best picture as the caller encoded it (the annotated
  frame); ``snapshots/crop/<id>.jpg`` — a crop of its best box. The crop lives in its own
  folder because any suffix made of id characters (``<id>-crop``) could be another event's id.

Durability. ``synchronous=FULL``: every commit is on disk before `EventStore.apply` returns, so
neither ``kill -9`` nor a power cut loses a finished event. Events are rare (a few a minute), so
the fsync per commit costs nothing that matters. A picture is written to a temporary file in
its folder, fsynced, renamed over ``<id>.jpg`` and the folder fsynced *before* the row that
points at it is committed: a crash in between leaves a file without a row (removed on the next
open), never a row without its file. Deletion goes the other way — row first, then files.

Restart. Opening a store removes temporary files and pictures without a row, and closes the
events that were active when the previous process stopped: their ``end_time`` becomes their
``best_time`` (the last moment known for sure; the object may have stayed longer) and
``interrupted`` is set. They are then finished events like any other: listed, pruned, shown.
Hence one process owns a data directory at a time.

Threads. One connection, guarded by a lock: any thread may call any method; calls run one at
a time. A write waits for fsyncs, so call from a worker thread, not from an event loop.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import logging
import os
import re
import sqlite3
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import numpy as np

from espdetect.constraints import EVENT_ID_PATTERN, EVENT_LIST_LIMIT
from espdetect.encoders.jpeg import JpegEncoder
from espdetect.events import Event, EventUpdate
from espdetect.exceptions import ConfigurationError, DecodeError, InvalidEventId, UnsupportedSchema
from espdetect.frame import decode_jpeg

__all__ = ["EventStore", "PruneStats", "StoredEvent", "check_event_id", "default_data_dir"]

logger = logging.getLogger(__name__)

#: The layout this code writes; a database with a higher ``user_version`` is refused.
SCHEMA_VERSION: Final = 1
DATABASE_NAME: Final = "events.sqlite3"
SNAPSHOTS: Final = "snapshots"
CROPS: Final = "crop"
#: Temporary pictures start with a dot, which no event id does: they never meet a real one.
_TEMP_PREFIX: Final = ".tmp-"
_EVENT_ID: Final = re.compile(EVENT_ID_PATTERN)
#: Space kept around the best box in its crop, as a fraction of the box's size on each side.
CROP_MARGIN: Final = 0.15
CROP_JPEG_QUALITY: Final = 90
_CROP_ENCODER: Final = JpegEncoder(CROP_JPEG_QUALITY)

_SCHEMA: Final = """
CREATE TABLE events (
    id TEXT PRIMARY KEY,
    camera TEXT NOT NULL,
    label TEXT NOT NULL,
    score REAL NOT NULL,
    x1 REAL NOT NULL, y1 REAL NOT NULL, x2 REAL NOT NULL, y2 REAL NOT NULL,
    frame_width INTEGER NOT NULL,
    frame_height INTEGER NOT NULL,
    start_time REAL NOT NULL,
    end_time REAL,
    best_time REAL NOT NULL,
    group_id TEXT NOT NULL,
    snapshot_sha256 TEXT,
    snapshot_bytes INTEGER NOT NULL DEFAULT 0,
    has_crop INTEGER NOT NULL DEFAULT 0,
    interrupted INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX events_by_start ON events (start_time, id);
CREATE INDEX events_by_camera ON events (camera, start_time, id);
"""

_UPSERT: Final = """
INSERT INTO events (id, camera, label, score, x1, y1, x2, y2, frame_width, frame_height,
                    start_time, end_time, best_time, group_id, snapshot_sha256, snapshot_bytes, has_crop)
VALUES (:id, :camera, :label, :score, :x1, :y1, :x2, :y2, :frame_width, :frame_height,
        :start_time, :end_time, :best_time, :group_id, :snapshot_sha256, :snapshot_bytes, :has_crop)
ON CONFLICT (id) DO UPDATE SET
    camera = excluded.camera, label = excluded.label, score = excluded.score,
    x1 = excluded.x1, y1 = excluded.y1, x2 = excluded.x2, y2 = excluded.y2,
    frame_width = excluded.frame_width, frame_height = excluded.frame_height,
    start_time = excluded.start_time, end_time = excluded.end_time, best_time = excluded.best_time,
    group_id = excluded.group_id, snapshot_sha256 = excluded.snapshot_sha256,
    snapshot_bytes = excluded.snapshot_bytes, has_crop = excluded.has_crop
"""


def check_event_id(value: object) -> str:
    """``value`` if it can name an event's files; `InvalidEventId` otherwise.

    Example:
        >>> check_event_id("1700000000.000000-door-a1b2c3")
        '1700000000.000000-door-a1b2c3'
    """
    if not isinstance(value, str) or not _EVENT_ID.fullmatch(value):
        raise InvalidEventId(value)
    return value


def default_data_dir(
    platform: str = sys.platform, env: Mapping[str, str] = os.environ, home: Path | None = None
) -> Path:
    """Where espdetect keeps its data by default: the user's data directory, per platform.

    ``$XDG_DATA_HOME/espdetect`` (else ``~/.local/share/espdetect``) on Linux and other Unixes,
    ``~/Library/Application Support/espdetect`` on macOS, ``%LOCALAPPDATA%\\espdetect`` on Windows.

    Example:
        >>> default_data_dir("linux", {"XDG_DATA_HOME": "/data"}).as_posix()
        '/data/espdetect'
    """
    home = Path.home() if home is None else home
    if platform == "win32":
        base = env.get("LOCALAPPDATA") or str(home / "AppData" / "Local")
        return Path(base) / "espdetect"
    if platform == "darwin":
        return home / "Library" / "Application Support" / "espdetect"
    xdg = env.get("XDG_DATA_HOME", "")
    # The XDG spec says a relative value is invalid and must be ignored.
    base_dir = Path(xdg) if xdg and Path(xdg).is_absolute() else home / ".local" / "share"
    return base_dir / "espdetect"


@dataclass(frozen=True)
class StoredEvent:
    """An event as stored: the fields of `espdetect.events.Event`, and what is on disk for it.

    Example:
        >>> stored = StoredEvent(id="e1", camera="door", label="person", score=0.9,
        ...                      box=(10.0, 20.0, 50.0, 120.0), frame_size=(640, 480),
        ...                      start_time=100.0, end_time=104.0, best_time=101.0, group_id="e1",
        ...                      has_snapshot=True)
        >>> stored.active, stored.to_dict()["has_snapshot"], stored.cursor
        (False, True, '100.0:e1')
    """

    id: str
    camera: str
    label: str
    score: float
    box: tuple[float, float, float, float]
    frame_size: tuple[int, int]
    start_time: float
    end_time: float | None
    best_time: float
    group_id: str
    has_snapshot: bool = False
    has_crop: bool = False
    #: Closed on open because the process stopped while it was active (``end_time`` is a lower bound).
    interrupted: bool = False

    @property
    def active(self) -> bool:
        return self.end_time is None

    @property
    def cursor(self) -> str:
        """Pass as ``cursor`` to `EventStore.list` for the events after this one."""
        return f"{self.start_time!r}:{self.id}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form, with the same keys as `Event.to_dict` and a few more."""
        return {
            "id": self.id,
            "camera": self.camera,
            "label": self.label,
            "score": round(self.score, 4),
            "box": [round(v, 1) for v in self.box],
            "frame_size": list(self.frame_size),
            "start_time": self.start_time,
            "end_time": self.end_time,
            "best_time": self.best_time,
            "group_id": self.group_id,
            "has_snapshot": self.has_snapshot,
            "has_crop": self.has_crop,
            "interrupted": self.interrupted,
        }


@dataclass(frozen=True)
class PruneStats:
    """What `EventStore.prune` deleted, and what the store holds afterwards.

    Example:
        >>> PruneStats(by_age=2, by_size=1, bytes_freed=90_000, bytes_used=400_000).deleted
        3
    """

    by_age: int
    by_size: int
    #: Bytes of pictures deleted (database pages are reused, not given back to the disk).
    bytes_freed: int
    #: Pictures and used database pages after pruning.
    bytes_used: int

    @property
    def deleted(self) -> int:
        return self.by_age + self.by_size


class EventStore:
    """Events and their pictures in ``data_dir``, surviving restarts and crashes (see the module).

    Example:
        >>> import tempfile
        >>> event = Event(id="e1", camera="door", label="person", score=0.9, box=(10, 20, 50, 120),
        ...               frame_size=(640, 480), start_time=100.0, best_time=101.0, group_id="e1")
        >>> with tempfile.TemporaryDirectory() as folder, EventStore(Path(folder)) as store:
        ...     store.apply(EventUpdate("start", event))
        ...     [(e.id, e.active) for e in store.list()]
        [('e1', True)]
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.snapshots = self.data_dir / SNAPSHOTS
        self.crops = self.snapshots / CROPS
        self.crops.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self.path = self.data_dir / DATABASE_NAME
        # Autocommit mode: transactions are explicit (`_transaction`), never opened implicitly.
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA busy_timeout = 5000")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = FULL")
            self._migrate()
            self._recover()
        except BaseException:
            self._db.close()
            raise

    def __enter__(self) -> EventStore:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the database (idempotent); later calls raise `sqlite3.ProgrammingError`."""
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _migrate(self) -> None:
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise UnsupportedSchema(str(self.path), version, SCHEMA_VERSION)
        if version == 0:
            with self._transaction() as db:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _recover(self) -> None:
        """Close what the last process left active; drop files a crash left without a row."""
        with self._transaction() as db:
            closed = db.execute(
                "UPDATE events SET end_time = best_time, interrupted = 1 WHERE end_time IS NULL"
            ).rowcount
        if closed:
            logger.warning("closed %d event(s) left active when espdetect last stopped", closed)
        rows = self._db.execute("SELECT id, snapshot_sha256, has_crop FROM events").fetchall()
        wanted = {row["id"] for row in rows if row["snapshot_sha256"] is not None}
        cropped = {row["id"] for row in rows if row["has_crop"]}
        self._remove_strays(self.snapshots, wanted)
        self._remove_strays(self.crops, cropped)
        # Only a hand outside espdetect removes a committed picture; the row then says so.
        missing = [i for i in wanted if not (self.snapshots / f"{i}.jpg").is_file()]
        missing_crops = [i for i in cropped if not (self.crops / f"{i}.jpg").is_file()]
        if missing or missing_crops:
            logger.warning("%d picture(s) of stored events are missing", len(missing) + len(missing_crops))
            with self._transaction() as db:
                db.executemany(
                    "UPDATE events SET snapshot_sha256 = NULL, snapshot_bytes = 0, has_crop = 0 WHERE id = ?",
                    [(i,) for i in missing],
                )
                db.executemany("UPDATE events SET has_crop = 0 WHERE id = ?", [(i,) for i in missing_crops])

    @staticmethod
    def _remove_strays(folder: Path, wanted: set[str]) -> None:
        for entry in folder.iterdir():
            stray = entry.name.startswith(_TEMP_PREFIX) or (
                entry.suffix == ".jpg" and entry.stem not in wanted
            )
            if stray and entry.is_file():
                logger.info("removing %s, left by an interrupted write", entry)
                entry.unlink(missing_ok=True)

    def _file(self, event_id: str, crop: bool) -> Path:
        """The picture's path, after making sure it cannot lie outside its folder."""
        folder = self.crops if crop else self.snapshots
        path = folder / f"{check_event_id(event_id)}.jpg"
        if path.resolve().parent != folder.resolve():  # a link pointing elsewhere
            raise InvalidEventId(event_id)
        return path

    def apply(self, update: EventUpdate) -> None:
        """Store an event's record (start, update or end); its new best picture is written first."""
        event = update.event
        with self._lock:
            previous = self._db.execute(
                "SELECT snapshot_sha256, snapshot_bytes, has_crop FROM events WHERE id = ?",
                (check_event_id(event.id),),
            ).fetchone()
            sha = previous["snapshot_sha256"] if previous else None
            size = previous["snapshot_bytes"] if previous else 0
            has_crop = bool(previous["has_crop"]) if previous else False
            stale_crop = False
            if event.snapshot is not None:
                digest = hashlib.sha256(event.snapshot).hexdigest()
                if digest != sha:
                    sha, size, has_crop = digest, *self._write_pictures(event)
                    stale_crop = not has_crop
            with self._transaction() as db:
                db.execute(_UPSERT, _row(event, sha, size, has_crop))
            if stale_crop:  # the crop of an older picture; the row no longer claims it
                self._file(event.id, crop=True).unlink(missing_ok=True)

    def _write_pictures(self, event: Event) -> tuple[int, bool]:
        """Write the picture and its crop; their total size and whether there is a crop."""
        assert event.snapshot is not None  # checked by the caller
        _write_atomically(self._file(event.id, crop=False), event.snapshot)
        crop = _crop(event)
        if crop is None:
            return len(event.snapshot), False
        _write_atomically(self._file(event.id, crop=True), crop)
        return len(event.snapshot) + len(crop), True

    def get(self, event_id: str) -> StoredEvent | None:
        """The stored event with this id, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM events WHERE id = ?", (check_event_id(event_id),)
            ).fetchone()
        return None if row is None else _stored(row)

    def list(
        self,
        *,
        camera: str | None = None,
        label: str | None = None,
        after: float | None = None,
        before: float | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> builtins.list[StoredEvent]:
        """Events newest first (by ``start_time``, then id), filtered; ``cursor`` continues a listing.

        ``after`` and ``before`` bound ``start_time`` (inclusive, exclusive); ``cursor`` is the
        `StoredEvent.cursor` of the last event of the previous page.
        """
        limit = EVENT_LIST_LIMIT.check("limit", limit)
        where, args = [], []
        for clause, value in (
            ("camera = ?", camera),
            ("label = ?", label),
            ("start_time >= ?", after),
            ("start_time < ?", before),
        ):
            if value is not None:
                where.append(clause)
                args.append(value)
        if cursor is not None:
            where.append("(start_time, id) < (?, ?)")
            args.extend(_parse_cursor(cursor))
        sql = "SELECT * FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY start_time DESC, id DESC LIMIT ?"
        with self._lock:
            rows = self._db.execute(sql, [*args, limit]).fetchall()
        return [_stored(row) for row in rows]

    def snapshot_path(self, event_id: str, crop: bool = False) -> Path | None:
        """The file of an event's best picture (or its crop), or None when it has none."""
        path = self._file(event_id, crop)
        with self._lock:
            row = self._db.execute(
                "SELECT snapshot_sha256, has_crop FROM events WHERE id = ?", (event_id,)
            ).fetchone()
        if row is None or row["snapshot_sha256"] is None or (crop and not row["has_crop"]):
            return None
        return path if path.is_file() else None

    def delete(self, event_id: str) -> bool:
        """Delete an event and its pictures; False when there was none.

        An active event comes back with the engine's next record of it.
        """
        check_event_id(event_id)
        with self._lock:
            return self._delete([event_id]) > 0

    def _delete(self, ids: builtins.list[str]) -> int:
        """Delete rows, then (after the commit) their files; how many rows there were."""
        with self._transaction() as db:
            count = sum(db.execute("DELETE FROM events WHERE id = ?", (i,)).rowcount for i in ids)
        for event_id in ids:
            self._file(event_id, crop=False).unlink(missing_ok=True)
            self._file(event_id, crop=True).unlink(missing_ok=True)
        return count

    def prune(self, now: float, max_age: float | None = None, max_bytes: int | None = None) -> PruneStats:
        """Delete finished events that ended over ``max_age`` seconds before ``now``, then the
        oldest finished ones until pictures and database fit in ``max_bytes``.

        Active events are never deleted, even when they alone exceed ``max_bytes``.
        """
        if max_age is not None and not max_age >= 0:
            raise ConfigurationError(f"expected max_age to be at least 0 s, got {max_age!r}", field="max_age")
        if max_bytes is not None and not max_bytes >= 0:
            raise ConfigurationError(
                f"expected max_bytes to be at least 0, got {max_bytes!r}", field="max_bytes"
            )
        with self._lock:
            old: builtins.list[tuple[str, int]] = []
            if max_age is not None:
                old = self._finished("end_time < ?", (now - max_age,))
                self._delete([i for i, _ in old])
            large = [] if max_bytes is None else self._over(max_bytes)
            self._delete([i for i, _ in large])
            freed = sum(size for _, size in old + large)
            stats = PruneStats(len(old), len(large), freed, self._bytes_used())
        if stats.deleted:
            logger.info(
                "pruned %d event(s) by age and %d by size, freeing %d bytes of pictures",
                stats.by_age,
                stats.by_size,
                stats.bytes_freed,
            )
        return stats

    def _finished(self, condition: str, args: tuple[float, ...] = ()) -> builtins.list[tuple[str, int]]:
        """(id, picture bytes) of finished events meeting ``condition``, oldest first."""
        rows = self._db.execute(
            f"SELECT id, snapshot_bytes FROM events WHERE end_time IS NOT NULL AND {condition} "
            "ORDER BY start_time, id",
            args,
        ).fetchall()
        return [(row["id"], row["snapshot_bytes"]) for row in rows]

    def _over(self, max_bytes: int) -> builtins.list[tuple[str, int]]:
        """The oldest finished events whose deletion brings the store within ``max_bytes``."""
        excess = self._bytes_used() - max_bytes
        if excess <= 0:
            return []
        count = self._db.execute("SELECT count(*) FROM events").fetchone()[0]
        # A deleted row frees its share of the database's pages (reused later, not given back).
        row_bytes = self._database_bytes() // max(count, 1)
        chosen = []
        for event_id, size in self._finished("1"):
            if excess <= 0:
                break
            chosen.append((event_id, size))
            excess -= size + row_bytes
        return chosen

    def _database_bytes(self) -> int:
        pages = self._db.execute("PRAGMA page_count").fetchone()[0]
        free = self._db.execute("PRAGMA freelist_count").fetchone()[0]
        return int((pages - free) * self._db.execute("PRAGMA page_size").fetchone()[0])

    def _bytes_used(self) -> int:
        """Pictures plus used database pages (the WAL, bounded by checkpoints, is left out)."""
        pictures = self._db.execute("SELECT coalesce(sum(snapshot_bytes), 0) FROM events").fetchone()[0]
        return int(pictures) + self._database_bytes()

    def integrity_check(self) -> str:
        """SQLite's ``PRAGMA integrity_check``: ``"ok"`` for a sound database."""
        with self._lock:
            return "\n".join(row[0] for row in self._db.execute("PRAGMA integrity_check"))


def _row(event: Event, sha: str | None, size: int, has_crop: bool) -> dict[str, Any]:
    x1, y1, x2, y2 = (float(v) for v in event.box)
    return {
        "id": event.id,
        "camera": event.camera,
        "label": event.label,
        "score": float(event.score),
        "x1": x1,
        "y1": y1,
        "x2": x2,
        "y2": y2,
        "frame_width": int(event.frame_size[0]),
        "frame_height": int(event.frame_size[1]),
        "start_time": float(event.start_time),
        "end_time": None if event.end_time is None else float(event.end_time),
        "best_time": float(event.best_time),
        "group_id": event.group_id,
        "snapshot_sha256": sha,
        "snapshot_bytes": size,
        "has_crop": int(has_crop),
    }


def _stored(row: sqlite3.Row) -> StoredEvent:
    return StoredEvent(
        id=row["id"],
        camera=row["camera"],
        label=row["label"],
        score=row["score"],
        box=(row["x1"], row["y1"], row["x2"], row["y2"]),
        frame_size=(row["frame_width"], row["frame_height"]),
        start_time=row["start_time"],
        end_time=row["end_time"],
        best_time=row["best_time"],
        group_id=row["group_id"],
        has_snapshot=row["snapshot_sha256"] is not None,
        has_crop=bool(row["has_crop"]),
        interrupted=bool(row["interrupted"]),
    )


def _parse_cursor(cursor: str) -> tuple[float, str]:
    time_text, _, event_id = cursor.partition(":")
    try:
        return float(time_text), check_event_id(event_id)
    except (ValueError, InvalidEventId):
        raise ConfigurationError(
            f"expected cursor to be an event's cursor ('start_time:id'), got {cursor!r}", field="cursor"
        ) from None


def _write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old file or the new, never a part."""
    fd, temp = tempfile.mkstemp(prefix=_TEMP_PREFIX, suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX; Windows cannot open a folder, nor needs to)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _crop(event: Event) -> bytes | None:
    """A JPEG of the best box with a margin, or None when the picture does not decode."""
    assert event.snapshot is not None  # checked by the caller
    try:
        # Strict, as every frame's decode is: a picture libjpeg calls corrupt gets no crop rather
        # than a crop of garbled pixels.
        image = decode_jpeg(event.snapshot)
    except DecodeError:
        logger.warning("%s: its picture does not decode; stored without a crop", event.id)
        return None
    height, width = image.shape[:2]
    # The picture may be smaller than the frame the box was found in (a reduced encode).
    sx, sy = width / event.frame_size[0], height / event.frame_size[1]
    x1, y1, x2, y2 = event.box
    mx, my = (x2 - x1) * CROP_MARGIN, (y2 - y1) * CROP_MARGIN
    left, top = max(0, int((x1 - mx) * sx)), max(0, int((y1 - my) * sy))
    right, bottom = min(width, int(np.ceil((x2 + mx) * sx))), min(height, int(np.ceil((y2 + my) * sy)))
    if right <= left or bottom <= top:
        return None
    return _CROP_ENCODER.encode(image[top:bottom, left:right])
