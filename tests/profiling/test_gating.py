"""Motion gating and tracking as sweep axes: model calls, CPU per camera-hour, what viewers see."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("pandas", reason="profiling sweeps need pandas: pip install 'espdetect[profile]'")

import pandas as pd

from espdetect.pipeline import PipelineConfig
from espdetect.profiling.config import ProfileConfig, grid
from espdetect.profiling.replay import Mode
from espdetect.profiling.sweep import sweep

from ._squares import FPS, FRAMES, SQUARE, STEP, SquareFactory, write_square_clip

#: Columns this feature adds to every measured row.
NEW_COLUMNS = (
    "motion",
    "keepalive",
    "tracking",
    "video_s",
    "model_calls_per_min",
    "cpu_core_hours_per_camera_hour",
    "motion_checks",
    "moving_frames",
    "keepalive_calls",
    "gated_frames",
    "gated_fraction",
    "motion_ms_mean",
    "motion_ms_per_frame",
    "displayed_iou",
    "displayed_false_boxes_per_frame",
)
#: Frames of the still clip: 3 s at 15 fps.
STILL_FRAMES = 45


@pytest.fixture(scope="module")
def still_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One JPEG repeated for 3 s at 15 fps: nothing ever moves."""
    return write_square_clip(tmp_path_factory.mktemp("clips") / "still", frames=STILL_FRAMES, still=True)


def by_key(df: pd.DataFrame) -> dict[str, dict[str, Any]]:
    return {str(r["config_key"]): {str(k): v for k, v in r.items()} for r in df.to_dict("records")}


def shifted_iou(frames: int) -> float:
    """IoU of the square's box with itself ``frames`` frames later (it moves STEP px a frame)."""
    shift = STEP * frames
    return (SQUARE - shift) / (SQUARE + shift) if shift < SQUARE else 0.0


def test_a_sweep_over_motion_and_tracking_fills_the_new_columns(
    square_clip: Path, squares: SquareFactory, tmp_path: Path
) -> None:
    configs = grid(model="squares.pt", skip=2, motion=[False, True], tracking=[False, True])
    df = sweep(square_clip, configs, tmp_path, repeats=1, warmup=0, progress=False, detector_factory=squares)

    assert len(df) == 4 and set(df["status"]) == {"ok"} and set(df["accuracy_status"]) == {"ok"}
    assert sorted(zip(df["motion"], df["tracking"], strict=True)) == [
        (False, False),
        (False, True),
        (True, False),
        (True, True),
    ]
    for col in NEW_COLUMNS:
        assert col in df.columns, col
    assert df["video_s"].to_numpy() == pytest.approx([FRAMES / FPS] * 4, rel=1e-4)
    # Skip 2 on 30 frames: 15 model calls in 2 s of camera time, whatever the gating (it all moves).
    assert (df["frames_detected"] == FRAMES / 2).all()
    assert df["model_calls_per_min"].to_numpy() == pytest.approx([450.0] * 4, rel=1e-4)
    assert (df["cpu_core_hours_per_camera_hour"] > 0).all()
    assert df["displayed_iou"].between(0.0, 1.0).all()

    gated = df[df["motion"]]
    assert (gated["keepalive"] == PipelineConfig.keepalive).all()
    # Every offered frame is motion-tested; the first has no background yet (the keep-alive call).
    assert (gated["motion_checks"] == FRAMES / 2).all()
    assert (gated["moving_frames"] == FRAMES / 2 - 1).all() and (gated["keepalive_calls"] == 1).all()
    assert (gated["gated_frames"] == 0).all() and (gated["gated_fraction"] == 0).all()
    assert gated["motion_ms_mean"].notna().all()

    ungated = df[~df["motion"]]
    assert ungated["keepalive"].isna().all()  # it did nothing: not claimed
    assert (ungated[["motion_checks", "gated_frames", "gated_fraction"]] == 0).all().all()
    assert ungated["motion_ms_mean"].isna().all()


def test_on_a_still_clip_motion_gating_leaves_only_keepalive_calls(
    still_clip: Path, squares: SquareFactory, tmp_path: Path
) -> None:
    always = ProfileConfig(model="squares.pt", skip=1)
    gated = always.replace(motion=True, keepalive=1.0)
    df = sweep(still_clip, [always, gated], tmp_path, repeats=1, warmup=0, progress=False,
               detector_factory=squares)  # fmt: skip
    rows = by_key(df)

    assert rows[always.key]["frames_detected"] == STILL_FRAMES
    assert rows[always.key]["model_calls_per_min"] == pytest.approx(STILL_FRAMES / 3.0 * 60, rel=1e-4)
    row = rows[gated.key]
    # Keep-alive on the clip's clock: calls at 0 s, 1 s and 2 s of a 3 s clip, nothing else.
    assert row["moving_frames"] == 0
    assert row["frames_detected"] == row["keepalive_calls"] == math.ceil(3.0 / 1.0)
    assert row["gated_frames"] == STILL_FRAMES - 3
    assert row["gated_fraction"] == pytest.approx((STILL_FRAMES - 3) / STILL_FRAMES)
    assert row["model_calls_per_min"] == pytest.approx(60.0, rel=1e-4)
    # Nothing moved: the viewer loses nothing.
    assert row["displayed_recall"] == 1.0 and row["displayed_iou"] == 1.0
    assert row["frames_out"] == STILL_FRAMES


@pytest.mark.parametrize("mode", ["fast", "realtime"])
def test_fast_and_realtime_replays_gate_the_same_frames(
    still_clip: Path, squares: SquareFactory, tmp_path: Path, mode: Mode
) -> None:
    # The fast replay applies FramePolicy, the realtime one CameraPipeline's own code: same rule.
    config = ProfileConfig(model="squares.pt", skip=1, motion=True, keepalive=1.0, tracking=True)
    df = sweep(still_clip, [config], tmp_path, mode=mode, repeats=1, warmup=0, progress=False,
               detector_factory=squares)  # fmt: skip
    row = df.iloc[0]
    assert row["status"] == "ok" and row["mode"] == mode
    assert row["frames_detected"] == row["keepalive_calls"] == 3
    assert row["moving_frames"] == 0 and row["motion_checks"] == row["gated_frames"] + 3
    assert row["displayed_iou"] == 1.0


def test_displayed_iou_is_one_for_the_reference_and_falls_with_stale_boxes(
    square_clip: Path, squares: SquareFactory, tmp_path: Path
) -> None:
    reference = ProfileConfig(model="squares.pt", skip=1, decode_reduce=1)
    stale = reference.replace(skip=4)
    df = sweep(square_clip, [reference, stale], tmp_path, repeats=1, warmup=0, progress=False,
               detector_factory=squares)  # fmt: skip
    rows = by_key(df)
    assert rows[reference.key]["displayed_iou"] == 1.0
    assert rows[reference.key]["displayed_false_boxes_per_frame"] == 0.0
    # Boxes 0..3 frames old on frames 0..27, then 0 and 1 frame old on frames 28 and 29.
    ages = [i % 4 for i in range(FRAMES)]
    expected = float(np.mean([shifted_iou(a) for a in ages]))
    assert rows[stale.key]["displayed_iou"] == pytest.approx(expected, abs=1e-3)
    assert rows[stale.key]["displayed_iou"] < rows[reference.key]["displayed_iou"]
    # Boxes two and three frames old overlap less than 0.5: drawn where nothing is.
    assert rows[stale.key]["displayed_false_boxes_per_frame"] == pytest.approx(
        sum(a >= 2 for a in ages) / FRAMES
    )


def test_tracking_keeps_boxes_on_an_object_moving_at_constant_speed(
    square_clip: Path, squares: SquareFactory, tmp_path: Path
) -> None:
    still_boxes = ProfileConfig(model="squares.pt", skip=2, decode_reduce=1)
    tracked = still_boxes.replace(tracking=True)
    df = sweep(square_clip, [still_boxes, tracked], tmp_path, repeats=1, warmup=0, progress=False,
               detector_factory=squares)  # fmt: skip
    rows = by_key(df)
    assert rows[still_boxes.key]["displayed_iou"] == pytest.approx((1.0 + shifted_iou(1)) / 2, abs=1e-3)
    # Same model calls; the boxes between them move with the square instead of staying behind.
    assert rows[tracked.key]["frames_detected"] == rows[still_boxes.key]["frames_detected"]
    assert rows[tracked.key]["displayed_iou"] > rows[still_boxes.key]["displayed_iou"] + 0.1
    assert rows[tracked.key]["stale_recall"] >= rows[still_boxes.key]["stale_recall"]


@pytest.mark.model
def test_real_model_on_the_emulator_clip_with_motion_and_tracking(
    model_path: str, tmp_path: Path, emulator_clip_head: Callable[[int], Path]
) -> None:
    short = emulator_clip_head(20)
    reference = ProfileConfig(model=model_path, imgsz=640, skip=1, decode_reduce=1)
    configs = [reference, *grid(model=model_path, skip=2, decode_reduce=1, motion=[False, True],
                                tracking=[False, True])]  # fmt: skip
    df = sweep(short, configs, tmp_path / "out", repeats=1, warmup=0, progress=False)
    assert (df["status"] == "ok").all() and (df["accuracy_status"] == "ok").all()
    for col in ("model_calls_per_min", "cpu_core_hours_per_camera_hour", "displayed_iou", "gated_fraction"):
        assert df[col].notna().all(), col
    rows = by_key(df)
    assert rows[reference.key]["displayed_iou"] == pytest.approx(1.0, abs=1e-3)
    ungated = df[~df["motion"]]["frames_detected"]
    assert (df[df["motion"]]["frames_detected"] <= ungated.min()).all()
    assert df["displayed_iou"].between(0.0, 1.0).all()
