from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

pytest.importorskip("pandas", reason="profiling sweeps need pandas: pip install 'espdetect[profile]'")

import pandas as pd

from espdetect.profiling.config import ProfileConfig
from espdetect.profiling.recommend import recommend
from espdetect.profiling.server_config import write_server_config

settings = pytest.importorskip("espdetect.server.settings")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # ESPDETECT_* variables beat the file in the server's loader.
    for name in list(os.environ):
        if name.startswith("ESPDETECT_"):
            monkeypatch.delenv(name)


def test_written_config_loads_in_the_server(clean_env: None, tmp_path: Path) -> None:
    results = pd.DataFrame(
        [
            {
                "config_key": "k", "mode": "fast", "status": "ok", "model": "weights/best.onnx", "imgsz": 640,
                "half": False, "skip": "3", "jpeg_quality": 55, "conf": 0.4, "decode_reduce": "2",
                "fps_output": 12.5, "latency_ms_p95": 180.0, "displayed_recall": 0.875,
            }
        ]
    )  # fmt: skip
    rec = recommend(results, target_fps=10)
    path = write_server_config(
        rec, tmp_path / "espdetect.toml", camera_url="http://192.168.4.1:81/stream", port=8123
    )
    loaded = settings.load_settings(path)
    assert (loaded.detector.model, loaded.defaults.conf, loaded.defaults.imgsz) == (
        "weights/best.onnx",
        0.4,
        640,
    )
    assert (loaded.detector.half, loaded.defaults.skip, loaded.defaults.quality) == (False, 3, 55)
    assert loaded.port == 8123
    assert [(c.id, c.url) for c in loaded.cameras] == [("cam", "http://192.168.4.1:81/stream")]
    text = path.read_text()
    assert "displayed_recall 0.875" in text
    assert "[detector]" in text and "[defaults]" in text
    if "decode_reduce" not in {name for _, name, _ in settings.leaf_fields()}:
        assert "# decode_reduce = 2" in text


def test_auto_skip_and_strings_round_trip(clean_env: None, tmp_path: Path) -> None:
    config = ProfileConfig(model='C:\\models\\my "best".pt', skip="auto", half=True)
    path = write_server_config(
        config, tmp_path / "c.toml", camera_url="http://cam.local/stream", camera_id="front"
    )
    loaded = settings.load_settings(path)
    assert loaded.detector.model == 'C:\\models\\my "best".pt'
    assert loaded.defaults.skip == "auto" and loaded.detector.half is True
    assert loaded.cameras[0].id == "front"


def test_an_unmet_recommendation_is_not_written(tmp_path: Path) -> None:
    results = pd.DataFrame(
        [{"config_key": "k", "mode": "fast", "status": "ok", "model": "m.pt", "imgsz": 640, "half": False,
          "skip": "1", "jpeg_quality": 80, "conf": 0.25, "decode_reduce": "auto", "fps_output": 2.0,
          "latency_ms_p95": 500.0, "displayed_recall": 1.0}]
    )  # fmt: skip
    with pytest.raises(ValueError, match="ok=False"):
        write_server_config(
            recommend(results, target_fps=10), tmp_path / "x.toml", camera_url="http://c/stream"
        )


def _row(**changes: object) -> dict[str, object]:
    row: dict[str, object] = {
        "config_key": "k", "mode": "fast", "status": "ok", "model": "m.onnx", "imgsz": 640, "half": False,
        "skip": "2", "jpeg_quality": 80, "conf": 0.25, "decode_reduce": "auto", "fps_output": 15.0,
        "latency_ms_p95": 100.0, "displayed_recall": 0.9, "displayed_iou": 0.8, "motion": False,
        "keepalive": math.nan, "tracking": False, "model_calls_per_min": 450.0,
        "cpu_core_hours_per_camera_hour": 0.25,
    }  # fmt: skip
    row.update(changes)
    return row


def test_swept_motion_and_tracking_are_written_and_load(clean_env: None, tmp_path: Path) -> None:
    results = pd.DataFrame(
        [
            _row(config_key="a"),
            _row(config_key="b", motion=True, keepalive=12.0, tracking=True, displayed_recall=0.95),
        ]
    )
    rec = recommend(results, target_fps=10)
    assert rec.config is not None and rec.config.motion
    path = write_server_config(rec, tmp_path / "gated.toml", camera_url="http://cam.local/stream")
    loaded = settings.load_settings(path)
    assert (loaded.defaults.motion, loaded.defaults.keepalive, loaded.defaults.tracking) == (True, 12.0, True)
    text = path.read_text()
    assert "model_calls_per_min 450.0" in text and "cpu_core_hours_per_camera_hour 0.250" in text

    # Swept and measured best off: off is written, so the server runs what was measured.
    results.loc[1, "displayed_recall"] = 0.5
    off = write_server_config(
        recommend(results, target_fps=10), tmp_path / "off.toml", camera_url="http://c/s"
    )
    loaded = settings.load_settings(off)
    assert (loaded.defaults.motion, loaded.defaults.tracking) == (False, False)
    assert "keepalive =" not in off.read_text()


def test_motion_and_tracking_not_swept_are_left_to_the_server_and_said_so(
    clean_env: None, tmp_path: Path
) -> None:
    rec = recommend(pd.DataFrame([_row()]), target_fps=10)
    path = write_server_config(rec, tmp_path / "plain.toml", camera_url="http://cam.local/stream")
    text = path.read_text()
    assert "# motion: measured off, not swept; the server's default applies" in text
    assert "# tracking: measured off, not swept; the server's default applies" in text
    loaded = settings.load_settings(path)
    defaults = settings.CameraOptions()
    assert (loaded.defaults.motion, loaded.defaults.tracking) == (defaults.motion, defaults.tracking)
