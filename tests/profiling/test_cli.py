from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

pytest.importorskip("pandas", reason="profiling sweeps need pandas: pip install 'espdetect[profile]'")

import pandas as pd

from espdetect.cli import main
from espdetect.profiling.results import COLUMNS, load_results


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("ESPDETECT_"):
            monkeypatch.delenv(name)


def test_profile_cli_sweeps_reports_recommends_and_writes_a_server_config(
    square_clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], clean_env: None
) -> None:
    out = tmp_path / "out"
    toml = tmp_path / "serve.toml"
    code = main(
        [
            "profile", str(square_clip), "--grid", "skip=1,4 quality=50,80 imgsz=64",
            "--model", "yolov8n.yaml", "--grid", "model=yolov8n.yaml skip=2 imgsz=96",
            "--out", str(out), "--repeats", "1",
            "--warmup", "0", "--report", "--no-progress", "--write-config", str(toml),
            "--camera-url", "http://192.168.4.1:81/stream",
        ]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "Recommended: yolov8n.yaml@" in printed
    # The cost is announced before the sweep starts; the runner-up's margin after the pick.
    assert printed.index("estimate: 5 configurations x 1 repeats on 30 frames: about ") < printed.index(
        "Recommended"
    )
    assert "Runner-up: yolov8n.yaml@" in printed and "(one repeat: no interval)" in printed
    assert "no configuration meeting the constraints has a known displayed_recall" in printed
    df = load_results(out)
    assert list(df.columns) == list(COLUMNS) and len(df) == 5
    assert set(df["status"]) == {"ok"}
    assert set(df["accuracy_status"]) == {"n/a: untrained model (.yaml), speed only"}
    assert (out / "report.html").is_file() and (out / "results.parquet").is_file()
    assert not pd.read_parquet(out / "results.parquet").empty

    from espdetect.server.settings import load_settings

    loaded = load_settings(toml)
    assert loaded.detector.model == "yolov8n.yaml" and loaded.cameras[0].url == "http://192.168.4.1:81/stream"


def test_profile_cli_reports_bad_grids_and_missing_clips(
    square_clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["profile", str(square_clip), "--grid", "speed=1", "--out", str(tmp_path)]) == 2
    assert "expected AXIS=V1,V2" in capsys.readouterr().err
    assert main(["profile", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "expected a clip folder" in capsys.readouterr().err
    assert main(["profile", str(square_clip), "--out", str(tmp_path), "--write-config", "x.toml"]) == 2
    assert "--camera-url" in capsys.readouterr().err


def test_profile_cli_sweeps_motion_and_tracking_from_the_grid(
    square_clip: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    clean_env: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ._squares import SquareFactory

    # The package exports the function under the module's name: patch the module itself.
    detectors_module = sys.modules["espdetect.profiling.detectors"]
    monkeypatch.setattr(detectors_module, "default_factory", lambda device: SquareFactory())
    out = tmp_path / "out"
    toml = tmp_path / "serve.toml"
    code = main(
        [
            "profile", str(square_clip), "--grid", "model=squares.pt skip=2 motion=off,on tracker=off,on",
            "--out", str(out), "--repeats", "1", "--warmup", "0", "--no-progress",
            "--write-config", str(toml), "--camera-url", "http://192.168.4.1:81/stream",
        ]
    )  # fmt: skip
    assert code == 0
    df = load_results(out)
    assert sorted(df["config_key"].str.removeprefix("squares.pt@640-fp32-conf0.25-reduceauto-skip2-q80")) == [
        "",
        "-motion-keepalive30",
        "-motion-keepalive30-tracking",
        "-tracking",
    ]
    assert df["displayed_iou"].notna().all() and df["model_calls_per_min"].notna().all()
    assert "model calls/min" in capsys.readouterr().out
    text = toml.read_text()
    assert "motion = " in text and "tracking = " in text
    assert main(["profile", str(square_clip), "--grid", "motion=maybe", "--out", str(tmp_path / "x")]) == 2
    assert "valid motion value" in capsys.readouterr().err


def test_profile_cli_noise_flags_reach_the_sweep_and_the_drift_sentence_is_printed(
    square_clip: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    clean_env: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from espdetect.cli.profile import _DRIFT_THRESHOLD
    from espdetect.profiling.calibration import DEFAULT_DRIFT_THRESHOLD

    from ._squares import SquareFactory

    assert _DRIFT_THRESHOLD == DEFAULT_DRIFT_THRESHOLD
    detectors_module = sys.modules["espdetect.profiling.detectors"]
    monkeypatch.setattr(detectors_module, "default_factory", lambda device: SquareFactory())
    common = ["--repeats", "2", "--warmup", "0", "--no-progress", "--reference", "none"]
    grid = ["--grid", "model=squares.pt skip=1,2"]
    out = tmp_path / "a"
    code = main(["profile", str(square_clip), *grid, "--out", str(out), *common,
                 "--baseline", "skip=4", "--drift-threshold", "0.5", "--rerun-drifted"])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "The machine's speed (the probe:" in printed and "flagged (drift above 50 %)" in printed
    assert "fps_vs_baseline" in printed and "ci_low" in printed
    df = load_results(out)
    settings = df.attrs["environment"]["sweep"]
    assert settings["baseline"] == "squares.pt@640-fp32-conf0.25-reduceauto-skip4-q80"
    assert settings["drift_threshold"] == 0.5 and settings["rerun_drifted"] is True
    assert set(df["baseline_key"]) == {settings["baseline"]} and df["fps_vs_baseline"].notna().all()

    # A key of the grid, or none at all.
    key = "squares.pt@640-fp32-conf0.25-reduceauto-skip2-q80"
    assert (
        main(["profile", str(square_clip), *grid, "--out", str(tmp_path / "b"), *common, "--baseline", key])
        == 0
    )
    assert load_results(tmp_path / "b").attrs["environment"]["sweep"]["baseline"] == key
    assert (
        main(
            ["profile", str(square_clip), *grid, "--out", str(tmp_path / "c"), *common, "--baseline", "none"]
        )
        == 0
    )
    assert load_results(tmp_path / "c")["fps_vs_baseline"].isna().all()
    capsys.readouterr()
    assert (
        main(["profile", str(square_clip), *grid, "--out", str(tmp_path / "d"), "--baseline", "skip=1,2"])
        == 2
    )
    assert "expected --baseline to name one configuration, got 2" in capsys.readouterr().err
    assert (
        main(["profile", str(square_clip), *grid, "--out", str(tmp_path / "e"), "--drift-threshold", "-1"])
        == 2
    )
    assert "drift_threshold" in capsys.readouterr().err


def test_profile_cli_live_sweeps_camera_settings_and_writes_the_sensor_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], clean_env: None
) -> None:
    from espdetect.emulator import EmulatorConfig, EmulatorThread
    from espdetect.server.settings import load_settings

    out = tmp_path / "out"
    toml = tmp_path / "serve.toml"
    cfg = EmulatorConfig(fps=None, framesize=5, sensor_model="ov2640", loop_frames=20)
    with EmulatorThread(cfg) as emu:
        code = main(
            [
                "profile", "--live", emu.stream_url, "--control-url", emu.control_url,
                "--grid", "model=yolov8n.yaml imgsz=64 camera_framesize=QQVGA,QVGA camera_quality=10,30",
                "--seconds", "1", "--out", str(out), "--repeats", "1", "--warmup", "0",
                "--no-progress", "--write-config", str(toml),
            ]
        )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "camera settings" in printed and "QQVGA" in printed
    df = load_results(out)
    assert len(df) == 4 and set(df["camera_size"]) == {"160x120", "320x240"}
    sensor = load_settings(toml).cameras[0].sensor
    assert set(sensor) == {"framesize", "quality"} and sensor["framesize"] in ("QQVGA", "QVGA")
    assert "[cameras.sensor]" in toml.read_text()
