"""Events survive a ``kill -9`` of the server: the real model on the yard scene, a real process."""

from __future__ import annotations

import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import simplejpeg

from espdetect.emulator import EmulatorConfig, EmulatorThread
from tests.cli.serve_process import running

from .conftest import wait_until


@pytest.fixture
def yard() -> Iterator[EmulatorThread]:
    # A person every ~20 s: enters, stands 2 s, leaves; 4 s later two people cross.
    config = EmulatorConfig(fps=10.0, size=(320, 240), scene="yard", still_seconds=1.0, stand_seconds=2.0)
    with EmulatorThread(config) as cam:
        yield cam


def _serve_args(camera_url: str, data_dir: Path) -> list[str]:
    return [
        "serve",
        "--camera",
        f"cam={camera_url}",
        "--port",
        "0",
        "--events",
        "--data-dir",
        str(data_dir),
        "--min-frames",
        "2",
        "--end-timeout",
        "1.5",
    ]


def _events(url: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = httpx.get(f"{url}/events", params={"limit": 1000}, timeout=10).json()[
        "events"
    ]
    return found


@pytest.mark.timeout(240)
def test_kill_9_loses_no_finished_event_and_corrupts_nothing(yard: EmulatorThread, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with running(_serve_args(yard.stream_url, data_dir)) as (proc, url):
        # Two finished events, and a third going on, when the process dies.
        wait_until(lambda: sum(e["end_time"] is not None for e in _events(url)) >= 2, 120, "two finished")
        wait_until(lambda: any(e["end_time"] is None for e in _events(url)), 60, "an active event")
        before = {e["id"]: e for e in _events(url)}
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finished = {i: e for i, e in before.items() if e["end_time"] is not None}
    with sqlite3.connect(data_dir / "events.sqlite3") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with running(_serve_args(yard.stream_url, data_dir)) as (_, url):
        after = {e["id"]: e for e in _events(url)}
        for event_id, event in finished.items():
            assert after[event_id]["end_time"] == event["end_time"]
            picture = httpx.get(f"{url}/events/{event_id}/snapshot.jpg", timeout=10)
            assert picture.status_code == 200
            assert simplejpeg.decode_jpeg(picture.content).shape == (240, 320, 3)
        # The one cut short is closed on restart, marked as interrupted, its picture kept.
        cut = [i for i, e in before.items() if e["end_time"] is None]
        assert cut and all(after[i]["interrupted"] and after[i]["end_time"] is not None for i in cut)
