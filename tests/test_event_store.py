"""EventStore: events and pictures that survive restarts, kill -9, bad ids and retention."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from espdetect.event_store import EventStore, StoredEvent, check_event_id, default_data_dir
from espdetect.events import Event, EventUpdate
from espdetect.exceptions import ConfigurationError, InvalidEventId, UnsupportedSchema

REPO = Path(__file__).resolve().parents[1]
SIZE = (320, 240)


def jpeg(seed: int = 0, size: tuple[int, int] = SIZE) -> bytes:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    ok, data = cv2.imencode(".jpg", image)
    assert ok
    return bytes(data)


def event(event_id: str = "e1", start: float = 100.0, camera: str = "door", **changes: Any) -> Event:
    base = Event(
        id=event_id,
        camera=camera,
        label="person",
        score=0.8,
        box=(40.0, 30.0, 120.0, 200.0),
        frame_size=SIZE,
        start_time=start,
        best_time=start,
        group_id=event_id,
    )
    return replace(base, **changes)


def finished(store: EventStore, event_id: str, start: float, *, seed: int = 0, **changes: Any) -> None:
    first = event(event_id, start, snapshot=jpeg(seed), **changes)
    store.apply(EventUpdate("start", first))
    store.apply(EventUpdate("end", replace(first, end_time=start + 5)))


def decodes(path: Path | None) -> bool:
    assert path is not None
    return cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR) is not None


def files(store: EventStore) -> set[str]:
    return {p.relative_to(store.snapshots).as_posix() for p in store.snapshots.rglob("*") if p.is_file()}


def test_round_trip_of_start_update_end(tmp_path: Path) -> None:
    with EventStore(tmp_path) as store:
        start = event(snapshot=jpeg(1))
        store.apply(EventUpdate("start", start, notify=True))
        assert store.get("e1") == StoredEvent(
            **{**start.to_dict(), "box": start.box, "frame_size": SIZE, "has_crop": True}
        )
        first_picture = store.snapshot_path("e1")
        assert first_picture is not None and first_picture.read_bytes() == jpeg(1)

        better = replace(start, score=0.95, box=(10.0, 10.0, 300.0, 230.0), best_time=102.0, snapshot=jpeg(2))
        store.apply(EventUpdate("update", better))
        store.apply(EventUpdate("end", replace(better, end_time=107.5)))
        stored = store.get("e1")
        assert stored is not None
        assert (stored.score, stored.box, stored.best_time, stored.end_time) == (
            0.95,
            (10.0, 10.0, 300.0, 230.0),
            102.0,
            107.5,
        )
        assert not stored.active and not stored.interrupted and stored.has_crop
        assert store.snapshot_path("e1") == first_picture and first_picture.read_bytes() == jpeg(2)
        crop = store.snapshot_path("e1", crop=True)
        assert decodes(crop)
        assert stored.to_dict()["has_snapshot"] is True
        assert files(store) == {"e1.jpg", "crop/e1.jpg"}
        assert store.get("nope") is None


def test_crop_is_the_box_with_a_margin_scaled_to_the_picture(tmp_path: Path) -> None:
    # The picture is half the frame's size: the box is scaled down with it.
    picture = jpeg(3, size=(SIZE[0] // 2, SIZE[1] // 2))
    with EventStore(tmp_path) as store:
        store.apply(EventUpdate("start", event(box=(100.0, 100.0, 200.0, 200.0), snapshot=picture)))
        path = store.snapshot_path("e1", crop=True)
        assert path is not None
        crop = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR)
        assert crop is not None
    assert crop.shape[:2] == (66, 66)  # 50 px box + 7.5 px on each side, rounded outwards


def test_pictures_that_do_not_decode_are_kept_without_a_crop(tmp_path: Path) -> None:
    with EventStore(tmp_path) as store:
        store.apply(EventUpdate("start", event(snapshot=jpeg(1))))
        assert store.snapshot_path("e1", crop=True) is not None
        store.apply(EventUpdate("update", event(snapshot=b"not a jpeg", best_time=101.0)))
        stored = store.get("e1")
        assert stored is not None and stored.has_snapshot and not stored.has_crop
        assert store.snapshot_path("e1", crop=True) is None
        assert files(store) == {"e1.jpg"}


def test_events_without_pictures(tmp_path: Path) -> None:
    with EventStore(tmp_path) as store:
        store.apply(EventUpdate("start", event()))
        stored = store.get("e1")
        assert stored is not None and not stored.has_snapshot
        assert store.snapshot_path("e1") is None and files(store) == set()


def test_list_filters_orders_and_pages(tmp_path: Path) -> None:
    with EventStore(tmp_path) as store:
        for i in range(10):
            camera = "door" if i % 2 else "yard"
            store.apply(EventUpdate("start", event(f"e{i}", start=100.0 + i // 2, camera=camera)))
        store.apply(EventUpdate("start", event("cat", start=103.0, camera="porch", label="cat")))

        everything = store.list()
        keys = [(e.start_time, e.id) for e in everything]
        assert keys == sorted(keys, reverse=True) and len(keys) == 11
        assert {e.id for e in store.list(camera="door")} == {"e1", "e3", "e5", "e7", "e9"}
        assert [e.id for e in store.list(label="cat")] == ["cat"]
        assert {e.start_time for e in store.list(after=101.0, before=103.0)} == {101.0, 102.0}
        assert len(store.list(limit=3)) == 3

        pages, cursor = [], None
        while page := store.list(limit=4, cursor=cursor):
            pages.append([e.id for e in page])
            cursor = page[-1].cursor
        assert [len(p) for p in pages] == [4, 4, 3]
        assert [i for page in pages for i in page] == [e.id for e in everything]


@pytest.mark.parametrize("limit", [0, 1001, -1])
def test_list_limit_is_bounded(tmp_path: Path, limit: int) -> None:
    with EventStore(tmp_path) as store, pytest.raises(ConfigurationError):
        store.list(limit=limit)


@pytest.mark.parametrize("cursor", ["", "abc", "1.0:", "1.0:../x", "x:e1"])
def test_bad_cursors_are_refused(tmp_path: Path, cursor: str) -> None:
    with EventStore(tmp_path) as store, pytest.raises(ConfigurationError) as caught:
        store.list(cursor=cursor)
    assert caught.value.field == "cursor"


def test_delete_removes_the_row_and_its_files(tmp_path: Path) -> None:
    with EventStore(tmp_path) as store:
        finished(store, "e1", 100.0)
        finished(store, "e2", 101.0)
        assert store.delete("e1") is True
        assert store.get("e1") is None and store.snapshot_path("e1") is None
        assert files(store) == {"e2.jpg", "crop/e2.jpg"}
        assert store.delete("e1") is False


BAD_IDS = ["../x", "..", ".", "a/b", "a\\b", "/etc/passwd", ".hidden", "x.", "", "a" * 129, "e1\n", 7, None]


@pytest.mark.parametrize("bad", BAD_IDS)
def test_ids_that_could_leave_the_snapshot_folder_are_refused(tmp_path: Path, bad: object) -> None:
    data = tmp_path / "data"
    outside = tmp_path / "x.jpg"
    outside.write_bytes(b"keep")
    with EventStore(data) as store:
        before = files(store)
        with pytest.raises(InvalidEventId):
            store.apply(EventUpdate("start", event(bad, snapshot=jpeg())))  # type: ignore[arg-type]
        for call in (store.get, store.delete, store.snapshot_path):
            with pytest.raises(InvalidEventId):
                call(bad)  # type: ignore[arg-type]
        assert files(store) == before and store.list() == []
    assert outside.read_bytes() == b"keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "x.jpg"]


def test_ids_the_engine_makes_are_accepted() -> None:
    for good in ["1700000000.123456-door-a1b2c3", "-1.000000-yard-000000", "e1", "a" * 128, "a..b"]:
        assert check_event_id(good) == good


def test_a_link_out_of_the_snapshot_folder_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "secret.jpg"
    target.write_bytes(b"secret")
    with EventStore(tmp_path / "data") as store:
        (store.snapshots / "e1.jpg").symlink_to(target)
        with pytest.raises(InvalidEventId):
            store.apply(EventUpdate("start", event(snapshot=jpeg())))
        with pytest.raises(InvalidEventId):
            store.snapshot_path("e1")
    assert target.read_bytes() == b"secret"


def test_prune_by_age_keeps_active_and_recent_events(tmp_path: Path) -> None:
    with EventStore(tmp_path) as store:
        finished(store, "old", 100.0)  # ends at 105
        finished(store, "recent", 900.0)  # ends at 905
        store.apply(EventUpdate("start", event("active", 50.0, snapshot=jpeg())))
        stats = store.prune(now=1000.0, max_age=600.0)
        assert (stats.by_age, stats.by_size, stats.deleted) == (1, 0, 1)
        assert stats.bytes_freed > len(jpeg()) and stats.bytes_used > 0
        assert {e.id for e in store.list()} == {"recent", "active"}
        assert "old.jpg" not in files(store)
        assert store.prune(now=1000.0, max_age=600.0).deleted == 0


def test_prune_by_size_deletes_oldest_finished_first_never_active(tmp_path: Path) -> None:
    with EventStore(tmp_path) as store:
        store.apply(EventUpdate("start", event("active", 10.0, snapshot=jpeg(9))))
        for i in range(6):
            finished(store, f"e{i}", 100.0 + i, seed=i)
        full = store.prune(now=0.0, max_bytes=None).bytes_used
        picture = len(jpeg())
        stats = store.prune(now=0.0, max_bytes=full - 2 * picture)
        # Each event also has a crop, so two deletions are enough for more than two pictures.
        assert stats.by_size == 2 and stats.bytes_used <= full - 2 * picture
        assert {e.id for e in store.list()} == {"active", "e2", "e3", "e4", "e5"}

        stats = store.prune(now=0.0, max_bytes=0)
        assert stats.by_size == 4 and [e.id for e in store.list()] == ["active"]
        assert files(store) == {"active.jpg", "crop/active.jpg"}


@pytest.mark.parametrize(("max_age", "max_bytes"), [(-1.0, None), (None, -1), (float("nan"), None)])
def test_prune_refuses_negative_limits(tmp_path: Path, max_age: float | None, max_bytes: int | None) -> None:
    with EventStore(tmp_path) as store, pytest.raises(ConfigurationError):
        store.prune(now=0.0, max_age=max_age, max_bytes=max_bytes)


def test_reopening_keeps_everything_and_closes_interrupted_events(tmp_path: Path) -> None:
    with EventStore(tmp_path) as store:
        finished(store, "done", 100.0)
        store.apply(EventUpdate("start", event("cut", 200.0, best_time=203.0, snapshot=jpeg(4))))
        before = store.get("done")
    with EventStore(tmp_path) as store:
        assert store.get("done") == before
        cut = store.get("cut")
        assert cut is not None and cut.interrupted and cut.end_time == 203.0 and not cut.active
        assert decodes(store.snapshot_path("cut"))
        assert store.integrity_check() == "ok"


def test_open_removes_temporary_and_orphaned_files(tmp_path: Path) -> None:
    with EventStore(tmp_path) as store:
        finished(store, "e1", 100.0)
        for stray in (".tmp-abc.part", "ghost.jpg", "crop/ghost.jpg", "crop/.tmp-x.part"):
            (store.snapshots / stray).write_bytes(b"partial")
        (store.snapshots / "notes.txt").write_text("not ours")
    with EventStore(tmp_path) as store:
        assert files(store) == {"e1.jpg", "crop/e1.jpg", "notes.txt"}


def test_a_picture_deleted_by_hand_is_no_longer_claimed(tmp_path: Path) -> None:
    with EventStore(tmp_path) as store:
        finished(store, "e1", 100.0)
        (store.snapshots / "e1.jpg").unlink()
    with EventStore(tmp_path) as store:
        stored = store.get("e1")
        assert stored is not None and not stored.has_snapshot and store.snapshot_path("e1") is None


def test_a_newer_schema_is_refused_clearly(tmp_path: Path) -> None:
    EventStore(tmp_path).close()
    with sqlite3.connect(tmp_path / "events.sqlite3") as db:
        db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(UnsupportedSchema, match=r"schema version 99.*upgrade espdetect") as caught:
        EventStore(tmp_path)
    assert (caught.value.found, caught.value.supported) == (99, 1)


def test_store_is_usable_from_another_thread(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with EventStore(tmp_path) as store, ThreadPoolExecutor(1) as pool:
        pool.submit(finished, store, "e1", 100.0).result()
        assert [e.id for e in store.list()] == ["e1"]


@pytest.mark.parametrize(
    ("platform", "env", "expected"),
    [
        ("linux", {"XDG_DATA_HOME": "/xdg"}, "/xdg/espdetect"),
        ("linux", {"XDG_DATA_HOME": "relative"}, "/home/u/.local/share/espdetect"),
        ("linux", {}, "/home/u/.local/share/espdetect"),
        ("darwin", {}, "/home/u/Library/Application Support/espdetect"),
        ("win32", {"LOCALAPPDATA": "/appdata"}, "/appdata/espdetect"),
        ("win32", {}, "/home/u/AppData/Local/espdetect"),
    ],
)
def test_default_data_dir(platform: str, env: dict[str, str], expected: str) -> None:
    assert default_data_dir(platform, env, Path("/home/u")).as_posix() == expected


CHILD = textwrap.dedent(
    """
    import sys
    from dataclasses import replace
    from pathlib import Path

    import cv2
    import numpy as np

    from espdetect.event_store import EventStore
    from espdetect.events import Event, EventUpdate

    def picture(i):
        image = np.random.default_rng(i).integers(0, 255, (240, 320, 3), dtype=np.uint8)
        return bytes(cv2.imencode(".jpg", image)[1])

    # Encoded beforehand so that the parent's kill lands in the store's writes, not in numpy.
    pictures = [picture(i) for i in range(16)]
    store = EventStore(Path(sys.argv[1]))
    i = 0
    while True:
        e = Event(id=f"e{i}", camera="door", label="person", score=0.5, box=(10, 10, 100, 200),
                  frame_size=(320, 240), start_time=float(i), best_time=float(i), group_id=f"e{i}",
                  snapshot=pictures[i % 8])
        store.apply(EventUpdate("start", e))
        e = replace(e, score=0.9, best_time=i + 0.5, snapshot=pictures[8 + i % 8])
        store.apply(EventUpdate("update", e))
        store.apply(EventUpdate("end", replace(e, end_time=i + 1.0)))
        print(e.id, flush=True)
        i += 1
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
@pytest.mark.parametrize("after", [5, 12])
def test_kill_9_loses_no_finished_event_and_corrupts_nothing(tmp_path: Path, after: int) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env, cwd=REPO
    )
    assert child.stdout is not None
    reported: list[str] = []
    try:
        while len(reported) < after:
            line = child.stdout.readline()
            assert line, f"the child stopped early (exit {child.poll()})"
            reported.append(line.strip())
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL

    with EventStore(tmp_path) as store:
        assert store.integrity_check() == "ok"
        listed = {e.id: e for e in store.list(limit=1000)}
        for event_id in reported:
            stored = listed[event_id]
            assert stored.end_time is not None and not stored.interrupted and stored.score == 0.9
            assert decodes(store.snapshot_path(event_id)) and decodes(
                store.snapshot_path(event_id, crop=True)
            )
        assert all(not e.active for e in listed.values())
        # Every file left is a picture of a listed event: no temporary file, no orphan.
        expected = {f"{i}.jpg" for i, e in listed.items() if e.has_snapshot}
        expected |= {f"crop/{i}.jpg" for i, e in listed.items() if e.has_crop}
        assert files(store) == expected
