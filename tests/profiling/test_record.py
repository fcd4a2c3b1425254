from __future__ import annotations

import itertools
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from espdetect.cli import main
from espdetect.emulator import EmulatorConfig, EmulatorThread
from espdetect.exceptions import SourceUnavailable
from espdetect.profiling.record import record
from espdetect.profiling.replay import load_clip
from espdetect.sources import SyntheticSource, clip_info, load_clip_index


@pytest.fixture(scope="module")
def camera() -> Iterator[EmulatorThread]:
    with EmulatorThread(EmulatorConfig(fps=15.0, size=(320, 240))) as cam:
        yield cam


def test_cli_records_a_live_emulator_stream(
    camera: EmulatorThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "clip"
    code = main(["record", camera.stream_url, "--seconds", "1.5", "--out", str(out), "--no-progress"])
    assert code == 0
    assert f"into {out}" in capsys.readouterr().out
    info = clip_info(out)
    rows = load_clip_index(out)
    assert info.frames == len(rows) >= 10
    assert info.source == camera.stream_url
    assert rows[0].arrival_s == 0.0 and rows[-1].arrival_s < 1.5
    assert all(a.arrival_s < b.arrival_s for a, b in itertools.pairwise(rows))
    assert all(r.camera_timestamp is not None for r in rows)  # the ESP32 X-Timestamp header is kept
    clip = load_clip(out)
    assert clip.size == (320, 240) and 10 < clip.fps < 20
    # The bytes are the camera's own JPEGs, unchanged.
    assert all(f.jpeg.startswith(b"\xff\xd8") for f in clip.frames)


def test_cli_refuses_to_overwrite_a_clip(
    camera: EmulatorThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "clip"
    assert main(["record", camera.stream_url, "--seconds", "0.3", "--out", str(out), "--no-progress"]) == 0
    assert main(["record", camera.stream_url, "--seconds", "0.3", "--out", str(out), "--no-progress"]) == 2
    assert "existing clip" in capsys.readouterr().err


def test_record_a_finite_source_stops_at_its_end(tmp_path: Path) -> None:
    path = record(SyntheticSource(count=5, fps=50.0), 60.0, tmp_path / "syn", progress=False)
    assert clip_info(path).frames == 5


def test_record_a_dead_camera_says_so(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/stream"
    with pytest.raises(SourceUnavailable, match="expected frames to record, got none"):
        record(url, 1.0, tmp_path / "dead", progress=False, first_frame_timeout=0.5)
