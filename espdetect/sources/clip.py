"""Recorded clips: a folder of the original JPEG bytes plus their arrival times, and replay.

Layout of a clip folder::

    clip.json           metadata: source, created, frames, duration_s, bytes
    index.csv           seq,arrival_s,camera_timestamp,bytes   (arrival_s relative to the first frame)
    frames/000000.jpg   the JPEG bytes exactly as received, one file per row of index.csv

``index.csv`` is written row by row as frames arrive, so a recording cut short by a crash is
still readable; ``clip.json`` is written by ``ClipWriter.close()``.
"""

from __future__ import annotations

import asyncio
import csv
import functools
import json
import logging
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import IO, Literal, NamedTuple

import cv2

from espdetect.exceptions import EndOfStream, SourceUnavailable
from espdetect.frame import Frame
from espdetect.sources._blocking import BlockingCall, ThreadedSource

__all__ = [
    "INDEX_COLUMNS",
    "ClipIndexRow",
    "ClipInfo",
    "ClipPace",
    "ClipSource",
    "ClipWriter",
    "clip_info",
    "frame_path",
    "is_clip",
    "load_clip_index",
]

logger = logging.getLogger(__name__)

INDEX_COLUMNS = ("seq", "arrival_s", "camera_timestamp", "bytes")
_INDEX = "index.csv"
_META = "clip.json"
_FRAMES = "frames"
_FORMAT = "espdetect-clip"

#: ``"realtime"`` reproduces the recorded arrival times; ``"fast"`` replays as fast as read.
ClipPace = Literal["realtime", "fast"]


class ClipIndexRow(NamedTuple):
    """One row of ``index.csv``."""

    seq: int
    #: Seconds after the first frame's arrival.
    arrival_s: float
    #: The camera's own timestamp, when it sent one.
    camera_timestamp: float | None
    #: Size of the frame file.
    bytes: int


@dataclass(frozen=True)
class ClipInfo:
    """What ``clip.json`` says about a clip (or what its index implies when that is missing)."""

    path: Path
    source: str | None
    #: ISO 8601 UTC time the recording started.
    created: str | None
    frames: int
    #: Arrival time of the last frame after the first, in seconds.
    duration_s: float
    bytes: int

    @property
    def fps(self) -> float | None:
        """Average frame rate of the recording (None for fewer than two frames)."""
        if self.frames < 2 or self.duration_s <= 0:
            return None
        return (self.frames - 1) / self.duration_s


def frame_path(clip: str | Path, seq: int) -> Path:
    """Where frame ``seq`` of a clip is stored."""
    return Path(clip) / _FRAMES / f"{seq:06d}.jpg"


def is_clip(path: str | Path) -> bool:
    """Whether ``path`` is a clip folder (it holds an ``index.csv``)."""
    return (Path(path) / _INDEX).is_file()


def load_clip_index(path: str | Path) -> list[ClipIndexRow]:
    """The rows of a clip's ``index.csv``.

    Raises:
        SourceUnavailable: the index is missing or malformed.

    Example:
        >>> rows = load_clip_index("data/clips/desk")  # doctest: +SKIP
        >>> rows[0].arrival_s  # doctest: +SKIP
        0.0
    """
    index = Path(path) / _INDEX
    try:
        with index.open(newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None or tuple(h.strip() for h in header[: len(INDEX_COLUMNS)]) != INDEX_COLUMNS:
                raise SourceUnavailable(
                    str(index), f"expected header {','.join(INDEX_COLUMNS)}, got {header!r}"
                )
            rows = []
            for line_no, row in enumerate(reader, start=2):
                if not row:
                    continue
                try:
                    seq, arrival, camera, size = row[:4]
                    rows.append(
                        ClipIndexRow(int(seq), float(arrival), float(camera) if camera else None, int(size))
                    )
                except ValueError:
                    raise SourceUnavailable(
                        str(index), f"line {line_no}: expected {','.join(INDEX_COLUMNS)} values, got {row!r}"
                    ) from None
    except OSError as exc:
        raise SourceUnavailable(
            str(index), f"expected a readable clip index, got {exc.strerror or exc}"
        ) from None
    return rows


def clip_info(path: str | Path) -> ClipInfo:
    """Metadata of a clip: from ``clip.json``, or derived from ``index.csv`` when that is absent.

    Raises:
        SourceUnavailable: the folder is not a readable clip.

    Example:
        >>> clip_info("data/clips/desk").frames  # doctest: +SKIP
        300
    """
    folder = Path(path)
    meta_path = folder / _META
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            return ClipInfo(
                path=folder,
                source=meta.get("source"),
                created=meta.get("created"),
                frames=int(meta["frames"]),
                duration_s=float(meta["duration_s"]),
                bytes=int(meta.get("bytes", 0)),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("%s: unreadable (%s); deriving the metadata from the index", meta_path, exc)
    rows = load_clip_index(folder)
    return ClipInfo(
        path=folder,
        source=None,
        created=None,
        frames=len(rows),
        duration_s=rows[-1].arrival_s if rows else 0.0,
        bytes=sum(r.bytes for r in rows),
    )


class ClipWriter:
    """Records frames into a clip folder, keeping their JPEG bytes unchanged.

    Frames without JPEG bytes (decoded video) are encoded at ``jpeg_quality``. ``write()``
    does blocking disk I/O; from async code call it through ``asyncio.to_thread``.

    Args:
        path: the clip folder (created when missing).
        source: recorded in ``clip.json`` (a URL or a description).
        overwrite: replace an existing clip in ``path`` instead of refusing.
        jpeg_quality: quality for frames that carry no JPEG bytes.

    Raises:
        FileExistsError: ``path`` already holds a clip and ``overwrite`` is False.

    Example:
        >>> with ClipWriter("clips/run1", source="http://cam:81/stream") as w:  # doctest: +SKIP
        ...     for frame in SyntheticSource(count=10).iter_frames():
        ...         w.write(frame)
    """

    def __init__(
        self, path: str | Path, *, source: str | None = None, overwrite: bool = False, jpeg_quality: int = 90
    ) -> None:
        self.path = Path(path)
        if is_clip(self.path) and not overwrite:
            raise FileExistsError(f"expected a new or empty folder, got an existing clip at {self.path}")
        self.source = source
        self.jpeg_quality = jpeg_quality
        frames_dir = self.path / _FRAMES
        frames_dir.mkdir(parents=True, exist_ok=True)
        if overwrite:
            for old in frames_dir.glob("*.jpg"):
                old.unlink()
            (self.path / _META).unlink(missing_ok=True)
        self._index: IO[str] | None = (self.path / _INDEX).open("w", newline="", encoding="utf-8")
        self._csv = csv.writer(self._index, lineterminator="\n")
        self._csv.writerow(INDEX_COLUMNS)
        self._index.flush()
        self._created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self._t0: float | None = None
        self._last_arrival = 0.0
        self._bytes = 0
        self.frames = 0
        self._info: ClipInfo | None = None

    def write(self, frame: Frame) -> None:
        """Append one frame (its bytes, arrival time and camera timestamp)."""
        if self._index is None:
            raise ValueError(f"expected an open ClipWriter, got one already closed ({self.path})")
        jpeg = frame.jpeg
        if jpeg is None:
            ok, buf = cv2.imencode(".jpg", frame.image(), [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
            if not ok:  # pragma: no cover - OpenCV always encodes a valid BGR image
                raise RuntimeError(f"OpenCV failed to encode frame {frame.seq}")
            jpeg = bytes(buf.tobytes())
        if self._t0 is None:
            self._t0 = frame.arrival_mono
        seq = self.frames
        frame_path(self.path, seq).write_bytes(jpeg)
        arrival = max(0.0, frame.arrival_mono - self._t0)
        camera = "" if frame.camera_timestamp is None else repr(float(frame.camera_timestamp))
        self._csv.writerow((seq, f"{arrival:.6f}", camera, len(jpeg)))
        self._index.flush()
        self.frames += 1
        self._bytes += len(jpeg)
        self._last_arrival = arrival

    def close(self) -> ClipInfo:
        """Finish the index and write ``clip.json``. Safe to call more than once."""
        if self._info is not None:
            return self._info
        if self._index is not None:
            self._index.close()
            self._index = None
        duration = round(self._last_arrival, 6)
        meta = {
            "format": _FORMAT,
            "version": 1,
            "source": self.source,
            "created": self._created,
            "frames": self.frames,
            "duration_s": duration,
            "bytes": self._bytes,
        }
        tmp = self.path / (_META + ".tmp")
        tmp.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, self.path / _META)
        self._info = ClipInfo(self.path, self.source, self._created, self.frames, duration, self._bytes)
        return self._info

    def __enter__(self) -> ClipWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class ClipSource(ThreadedSource[bytes | None]):
    """Replays a recorded clip with the original JPEG bytes and camera timestamps.

    ``pace="realtime"`` sleeps so that frames come out with the recorded spacing (a consumer
    that falls behind gets the overdue frames at once, so the total duration is kept);
    ``pace="fast"`` replays as fast as the files are read. Each replayed frame gets a fresh
    ``arrival`` and a ``seq`` that keeps increasing across loops. ``read()`` raises
    `EndOfStream` after the last frame (without ``loop``) or once closed, and `SourceUnavailable`
    when a frame file listed in the index is missing.

    Args:
        path: the clip folder.
        pace: ``"fast"`` or ``"realtime"``.
        loop: start again after the last frame.
        source_id: name used in frames; defaults to the folder name.

    Raises:
        SourceUnavailable: ``path`` is not a clip folder.

    Example:
        >>> async def replay(path: str) -> int:  # doctest: +SKIP
        ...     async with ClipSource(path, pace="realtime") as src:
        ...         return len([f async for f in src])
    """

    def __init__(
        self,
        path: str | Path,
        *,
        pace: ClipPace = "fast",
        loop: bool = False,
        source_id: str | None = None,
    ) -> None:
        folder = Path(path)
        if not is_clip(folder):
            raise SourceUnavailable(str(folder), f"expected a clip folder with {_INDEX}, got none")
        if pace not in ("realtime", "fast"):
            raise ValueError(f"pace must be 'realtime' or 'fast', got {pace!r}")
        super().__init__(source_id or folder.name or str(folder))
        self.path = folder
        self.pace = pace
        self.loop = loop
        self._rows: list[ClipIndexRow] | None = None
        self._index_call: BlockingCall[list[ClipIndexRow]] = BlockingCall()
        self._position = 0
        self._t0: float | None = None
        self._loop_offset = 0.0

    def load_index(self) -> list[ClipIndexRow]:
        """The clip's index rows (read once, blocking)."""
        if self._rows is None:
            self._rows = load_clip_index(self.path)
        return self._rows

    async def _read(self) -> Frame:
        while True:
            self._check_open()
            rows = self._rows if self._rows is not None else await self._index_call.run(self.load_index)
            if self._position >= len(rows):
                if not self.loop or not rows:
                    raise EndOfStream(f"{self.source_id}: all {len(rows)} frames replayed")
                if self.stats.frames == 0:
                    raise SourceUnavailable(
                        str(self.path), "expected complete JPEG frames, got none in the clip"
                    )
                self._position = 0
                self._loop_offset += _loop_length(rows)
            row = rows[self._position]
            if self.pace == "realtime":
                await self._wait_until(row.arrival_s)
            path = frame_path(self.path, row.seq)
            jpeg = await self._call.run(functools.partial(_read_frame, path))
            self._position += 1
            if jpeg is None:
                raise SourceUnavailable(str(path), "expected the readable frame file listed in index.csv")
            if not (jpeg[:2] == b"\xff\xd8" and jpeg.rstrip(b"\x00\r\n")[-2:] == b"\xff\xd9"):
                self.stats.corrupt += 1
                logger.warning("%s: skipped %s: not a complete JPEG", self.source_id, path.name)
                continue
            if len(jpeg) != row.bytes:
                self.stats.length_mismatch += 1
            seq = self._count_frame(len(jpeg))
            return Frame(seq=seq, source_id=self.source_id, jpeg=jpeg, camera_timestamp=row.camera_timestamp)

    async def _wait_until(self, arrival_s: float) -> None:
        now = time.perf_counter()
        if self._t0 is None:
            self._t0 = now - arrival_s
        delay = self._t0 + self._loop_offset + arrival_s - now
        if delay > 0:
            await asyncio.sleep(delay)


def _loop_length(rows: list[ClipIndexRow]) -> float:
    """Time from the first frame of one replay to the first of the next: duration plus one gap."""
    duration = rows[-1].arrival_s - rows[0].arrival_s
    gap = duration / (len(rows) - 1) if len(rows) > 1 else 1.0 / 30.0
    return duration + gap


def _read_frame(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None
