"""``espdetect capacity``: targets, scenes, the server config it writes, and small real runs.

The runs are real processes (the emulated camera, ``espdetect serve``, viewers), kept small:
QVGA at 5 fps, 2 cameras at most, a few seconds per step.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from espdetect.exceptions import ConfigurationError
from espdetect.profiling.capacity import (
    CSV_COLUMNS,
    CameraLoad,
    CapacityResult,
    CapacityStep,
    CapacityTargets,
    capacity_config_toml,
    find_bottleneck,
    write_capacity_config,
)
from espdetect.server.settings import load_settings
from tests.cli.cli_process import one_error_line, run_espdetect

# Windows long enough that a one-second stall of this VM does not halve a measured rate.
_SMALL = ("--fps", "5", "--size", "320x240", "--seconds", "4", "--warmup", "2")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # ESPDETECT_* variables beat the file in the server's loader (the model may stay).
    for name in list(os.environ):
        if name.startswith("ESPDETECT_") and name != "ESPDETECT_MODEL":
            monkeypatch.delenv(name)


def _step(cameras: int, **changes: object) -> CapacityStep:
    step = CapacityStep(
        cameras=cameras, viewers_per_camera=1, viewer_kind="sse", seconds=30.0, in_fps=15.0, out_fps=15.0,
        detections_per_s=3.0, detections_total_per_s=3.0 * cameras, latency_p95_ms=200.0, cpu_percent=150.0,
        rss_mb=300.0, machine_cores_busy=1.9, harness_cpu_percent=8.0, other_cpu_percent=32.0,
        motion_fraction=1.0, active_share=1.0,
        inference_ms_p50=110.0, detect_ms_p50=115.0, model_busy=0.345 * cameras, dropped_per_s=0.0,
        viewer_skipped_per_s=0.0, viewer_errors=0, passed=True, failing=None, reason=None,
        closest="detections/s", margin=0.5,
    )  # fmt: skip
    return replace(step, **changes)  # type: ignore[arg-type]


def _result(steps: list[CapacityStep], capacity: int) -> CapacityResult:
    return CapacityResult(
        targets=CapacityTargets(15, 2),
        load=CameraLoad(),
        steps=tuple(steps),
        capacity=capacity,
        bottleneck=find_bottleneck(steps, 15.0),
        max_cameras=8,
        server_options={"skip": "auto", "motion": True},
        model="yolov8n_int8.onnx",
    )


# -- targets and scenes ---------------------------------------------------------------------------


def test_margins_name_each_target_and_its_share() -> None:
    targets = CapacityTargets(target_fps=15, min_detections=2, max_latency_ms=500)
    margins = targets.margins(15.0, 1.5, 600.0)
    assert margins == {"output fps": 0.053, "detections/s": -0.25, "latency p95": -0.2}
    # No motion in the window: the detection target is not judged on nothing.
    assert "detections/s" not in targets.margins(15.0, None, 100.0)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        pytest.param({"target_fps": 0}, "target_fps", id="zero-fps"),
        pytest.param({"target_fps": 15, "min_detections": -1}, "min_detections", id="negative-detections"),
        pytest.param(
            {"target_fps": 15, "max_latency_ms": float("inf")}, "max_latency_ms", id="infinite-latency"
        ),
    ],
)
def test_targets_reject_bad_values(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        CapacityTargets(**kwargs)
    assert caught.value.field == field


@pytest.mark.parametrize("activity", [0.1, 0.25, 0.5])
def test_activity_picks_the_yard_still_stretch(activity: float) -> None:
    from espdetect.emulator.scene import YardScene

    load = CameraLoad.from_activity(activity, fps=15.0)
    assert load.scene == "yard"
    assert load.activity == pytest.approx(activity)
    # The loop the emulator will play is as long as the activity assumes.
    scene = YardScene(15.0, load.still_seconds, load.stand_seconds)
    assert scene.frame_count / 15.0 == pytest.approx(load.loop_seconds, abs=0.2)
    moving = sum(len(s) for s in scene.segments if s.moving)
    assert moving / scene.frame_count == pytest.approx(activity, abs=0.01)


def test_activity_between_the_yard_and_the_photos_is_refused() -> None:
    assert CameraLoad.from_activity(1.0).scene == "photos"
    with pytest.raises(ConfigurationError, match=r"at most 0\.53"):
        CameraLoad.from_activity(0.8)


def test_a_clip_becomes_the_scene(emulator_clip_head: Callable[[int], Path]) -> None:
    clip = emulator_clip_head(12)
    load = CameraLoad.from_clip(clip)
    assert load.size == (320, 240)
    assert load.loop_frames == 12
    assert Path(load.scene).name == "frames"


# -- the bottleneck and the server config ---------------------------------------------------------


def test_bottleneck_model_when_the_model_is_busy() -> None:
    steps = [
        _step(1),
        _step(2, model_busy=0.96, detections_per_s=1.6, passed=False, failing="detections/s", margin=-0.2),
    ]
    bottleneck = find_bottleneck(steps, 15.0)
    assert bottleneck is not None
    assert (bottleneck.stage, bottleneck.cameras) == ("model", 2)
    assert "busy 96 %" in bottleneck.evidence


def test_bottleneck_decode_encode_when_annotated_frames_are_dropped() -> None:
    steps = [_step(1, viewer_kind="annotated", dropped_per_s=6.0, out_fps=9.0, passed=False, margin=-0.37)]
    bottleneck = find_bottleneck(steps, 15.0)
    assert bottleneck is not None and bottleneck.stage == "decode/encode"


def test_bottleneck_decode_encode_when_rendering_leaves_the_model_idle() -> None:
    # No frame dropped, but the model slot was idle a quarter of the time while the CPU was full.
    step = _step(4, viewer_kind="annotated", model_busy=0.77, cpu_percent=193.0, passed=False, margin=-0.02)
    bottleneck = find_bottleneck([_step(1, viewer_kind="annotated"), step], 15.0)
    assert bottleneck is not None and bottleneck.stage == "decode/encode"
    assert "busy 77 %" in bottleneck.evidence


def test_bottleneck_camera_input_when_frames_do_not_arrive() -> None:
    bottleneck = find_bottleneck([_step(1, in_fps=10.0, out_fps=10.0, passed=False)], 15.0)
    assert bottleneck is not None and bottleneck.stage == "camera input"


def test_written_config_loads_in_the_server(
    clean_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("ESPDETECT_MODEL", raising=False)
    result = _result([_step(1), _step(2), _step(3, passed=False, failing="detections/s", margin=-0.1)], 2)
    path = write_capacity_config(result, tmp_path / "server.toml")
    text = path.read_text()
    assert "PLACEHOLDER" in text
    settings = load_settings(path)
    assert [c.id for c in settings.cameras] == ["cam1", "cam2"]
    assert settings.detector.model == "yolov8n_int8.onnx"
    assert settings.defaults.skip == "auto"


def test_no_config_for_zero_cameras(tmp_path: Path) -> None:
    result = _result([_step(1, passed=False, failing="output fps", margin=-0.5)], 0)
    with pytest.raises(ValueError, match="at least one camera"):
        write_capacity_config(result, tmp_path / "server.toml")


def test_unknown_server_option_is_refused() -> None:
    with pytest.raises(ConfigurationError) as caught:
        capacity_config_toml({"no_such_option": 1}, [])
    assert caught.value.field == "no_such_option"


def test_text_says_how_close_to_the_edge() -> None:
    result = _result(
        [_step(1, margin=0.4), _step(2, margin=0.1), _step(3, passed=False, margin=-0.05, reason="x")], 2
    )
    assert "inside the +-25 % drift" in result.text
    assert "a rerun may pass 3" in result.text
    assert "other processes used up to 32 %" in result.text


# -- real runs ------------------------------------------------------------------------------------


def test_capacity_run_writes_csv_config_and_last_line(clean_env: None, tmp_path: Path) -> None:
    out = tmp_path / "out"
    config = tmp_path / "server.toml"
    proc = run_espdetect(
        "capacity", "--emulator", "--target-fps", "5", "--min-detections", "0.2", "--max-cameras", "2",
        *_SMALL, "--out", str(out), "--write-config", str(config),
        timeout=110,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[-1] == "capacity: 2 cameras", proc.stdout
    with (out / "capacity.csv").open() as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert tuple(reader.fieldnames or ()) == CSV_COLUMNS
    assert [r["cameras"] for r in rows] == ["1", "2"]
    assert all(r["passed"] == "True" for r in rows)
    assert all(4.5 <= float(r["out_fps"]) <= 5.5 for r in rows)
    assert all(float(r["detections_per_s"]) > 0.2 for r in rows)
    assert float(rows[-1]["rss_mb"]) > 0
    assert float(rows[-1]["active_share"]) > 0.5  # the photos scene moves all the time
    summary = json.loads((out / "capacity.json").read_text())
    assert summary["capacity"] == 2
    # Nothing failed up to --max-cameras: the busiest stage is named, not a bottleneck.
    assert summary["bottleneck"].startswith("busiest stage at 2 cameras (no target failed): ")
    assert "every step up to --max-cameras 2 passed" in summary["text"]
    settings = load_settings(config)
    assert len(settings.cameras) == 2


def test_impossible_target_fails_at_one_camera(clean_env: None, tmp_path: Path) -> None:
    out = tmp_path / "out"
    config = tmp_path / "server.toml"
    proc = run_espdetect(
        "capacity", "--target-fps", "10", *_SMALL, "--max-cameras", "2", "--out", str(out),
        "--write-config", str(config),
        timeout=110,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "capacity: 0 cameras"
    assert "no server config written" in proc.stderr
    assert not config.exists()
    with (out / "capacity.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1
    assert rows[0]["passed"] == "False"
    assert rows[0]["failing"] == "output fps"
    assert "< 9.5" in rows[0]["reason"]


def test_activity_above_the_yard_is_one_error_line(tmp_path: Path) -> None:
    proc = run_espdetect("capacity", "--target-fps", "15", "--activity", "0.8", "--out", str(tmp_path))
    assert "at most 0.53" in one_error_line(proc, "capacity")
