from __future__ import annotations

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
