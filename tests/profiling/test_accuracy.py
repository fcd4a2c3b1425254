from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pandas", reason="profiling sweeps need pandas: pip install 'espdetect[profile]'")

from espdetect.profiling.accuracy import BoxSet, MatchCounts, Reference, match_boxes, reference_ious
from espdetect.profiling.config import ProfileConfig, grid
from espdetect.profiling.results import ResultsStore
from espdetect.profiling.sweep import sweep

from ._squares import FPS, FRAMES, SquareFactory


def boxes(*rows: tuple[float, float, float, float, int, float]) -> BoxSet:
    arr = np.array(rows, np.float64).reshape(-1, 6)
    return BoxSet(arr[:, :4].astype(np.float32), arr[:, 4].astype(np.int64), arr[:, 5].astype(np.float32))


@pytest.mark.parametrize(
    ("pred", "ref", "expected"),
    [
        pytest.param(boxes((0, 0, 10, 10, 0, 0.9)), boxes((0, 0, 10, 10, 0, 1)), (1, 1, 1), id="same-box"),
        pytest.param(boxes((0, 0, 10, 10, 1, 0.9)), boxes((0, 0, 10, 10, 0, 1)), (0, 1, 1), id="other-class"),
        pytest.param(boxes((5, 0, 15, 10, 0, 0.9)), boxes((0, 0, 10, 10, 0, 1)), (0, 1, 1), id="iou-0.33"),
        pytest.param(boxes((2, 0, 12, 10, 0, 0.9)), boxes((0, 0, 10, 10, 0, 1)), (1, 1, 1), id="iou-0.67"),
        pytest.param(
            boxes((0, 0, 10, 10, 0, 0.5), (0, 0, 10, 10, 0, 0.9)),
            boxes((0, 0, 10, 10, 0, 1)),
            (1, 2, 1),
            id="duplicate-counts-once",
        ),
        pytest.param(boxes(), boxes((0, 0, 10, 10, 0, 1)), (0, 0, 1), id="nothing-predicted"),
        pytest.param(boxes((0, 0, 10, 10, 0, 0.9)), boxes(), (0, 1, 0), id="nothing-there"),
    ],
)
def test_match_boxes(pred: BoxSet, ref: BoxSet, expected: tuple[int, int, int]) -> None:
    counts = match_boxes(pred, ref)
    assert (counts.matched, counts.predicted, counts.reference) == expected


def test_the_most_confident_prediction_takes_the_best_match() -> None:
    ref = boxes((0, 0, 10, 10, 0, 1), (20, 0, 30, 10, 0, 1))
    pred = boxes((1, 0, 11, 10, 0, 0.6), (0, 0, 10, 10, 0, 0.9), (21, 0, 31, 10, 0, 0.8))
    assert match_boxes(pred, ref).matched == 2


@pytest.mark.parametrize(
    ("pred", "ref", "expected"),
    [
        pytest.param(boxes((0, 0, 10, 10, 0, 0.9)), boxes((0, 0, 10, 10, 0, 1)), [1.0], id="same-box"),
        pytest.param(boxes((5, 0, 15, 10, 0, 0.9)), boxes((0, 0, 10, 10, 0, 1)), [1 / 3], id="iou-below-0.5"),
        pytest.param(boxes((0, 0, 10, 10, 1, 0.9)), boxes((0, 0, 10, 10, 0, 1)), [0.0], id="other-class"),
        pytest.param(boxes(), boxes((0, 0, 10, 10, 0, 1)), [0.0], id="nothing-drawn"),
        pytest.param(boxes((0, 0, 10, 10, 0, 0.9)), boxes(), [], id="no-reference"),
        pytest.param(
            boxes((0, 0, 30, 10, 0, 0.9)),
            boxes((0, 0, 10, 10, 0, 1), (20, 0, 30, 10, 0, 1)),
            [1 / 3, 0.0],
            id="one-box-pairs-once",
        ),
        pytest.param(
            boxes((1, 0, 11, 10, 0, 0.5), (20, 0, 30, 10, 0, 0.9)),
            boxes((0, 0, 10, 10, 0, 1), (20, 0, 30, 10, 0, 1)),
            [9 / 11, 1.0],
            id="each-its-best",
        ),
    ],
)
def test_reference_ious_pair_one_to_one_within_a_class(
    pred: BoxSet, ref: BoxSet, expected: list[float]
) -> None:
    assert reference_ious(pred, ref).tolist() == pytest.approx(expected)


def test_ratios_without_denominator_are_nan() -> None:
    assert math.isnan(MatchCounts(0, 0, 0).recall) and math.isnan(MatchCounts(0, 0, 0).precision)
    assert MatchCounts(1, 2, 4).recall == 0.25 and MatchCounts(1, 2, 4).precision == 0.5


def test_reference_against_itself_is_perfect_and_skipping_shows_stale_boxes(
    square_clip: Path, squares: SquareFactory, tmp_path: Path
) -> None:
    reference = ProfileConfig(model="squares.pt", skip=1, decode_reduce=1)
    configs = [reference, reference.replace(skip=4), reference.replace(skip="auto")]
    df = sweep(square_clip, configs, tmp_path, repeats=1, progress=False, detector_factory=squares)
    rows = {r["config_key"]: r for r in df.to_dict("records")}

    same = rows[reference.key]
    assert (same["recall"], same["precision"], same["displayed_recall"], same["displayed_precision"]) == (
        1,
        1,
        1,
        1,
    )
    assert same["stale_frames"] == 0 and math.isnan(same["stale_recall"])
    assert same["reference_key"] == reference.key

    skipped = rows[reference.replace(skip=4).key]
    # Its own detections are exact; what viewers see between them lags the moving square.
    assert skipped["recall"] == 1.0
    assert skipped["displayed_recall"] < 1.0
    assert skipped["stale_frames"] == FRAMES - math.ceil(FRAMES / 4)
    assert skipped["stale_recall"] < skipped["displayed_recall"]
    # The square moves 8 px per frame: boxes one frame old match, older ones do not.
    assert skipped["displayed_recall"] == pytest.approx(2 * math.ceil(FRAMES / 4) / FRAMES)
    assert skipped["stale_age_ms_mean"] == pytest.approx(1000 / FPS * 2, rel=0.05)
    # Squares is fast: at camera pace the detector is always free, so "auto" detects every frame.
    assert rows[reference.replace(skip="auto").key]["displayed_recall"] == 1.0

    saved = list(ResultsStore(tmp_path).reference_dir.glob("*.json"))
    assert len(saved) == 1
    ref = Reference.load(saved[0])
    assert ref.key == reference.key and len(ref.boxes) == FRAMES


def test_the_reference_is_computed_once_and_reused(square_clip: Path, tmp_path: Path) -> None:
    first = SquareFactory()
    sweep(
        square_clip,
        grid(model="squares.pt", skip=[2]),
        tmp_path,
        repeats=1,
        progress=False,
        detector_factory=first,
    )
    # The reference (imgsz 640, reduce 1) and the configuration share one detector.
    assert len(first.calls) == 1
    path = next(ResultsStore(tmp_path).reference_dir.glob("*.json"))
    stamp = path.stat().st_mtime_ns
    second = SquareFactory()
    sweep(
        square_clip,
        grid(model="squares.pt", skip=[3]),
        tmp_path,
        repeats=1,
        progress=False,
        detector_factory=second,
    )
    assert path.stat().st_mtime_ns == stamp
    assert [c.skip for c in second.calls] == [3]


@pytest.mark.model
def test_real_model_reference_against_itself(
    model_path: str, tmp_path: Path, emulator_clip_head: Callable[[int], Path]
) -> None:
    short = emulator_clip_head(4)
    reference = ProfileConfig(model=model_path, imgsz=640, skip=1, decode_reduce=1)
    df = sweep(
        short, [reference, reference.replace(skip=2)], tmp_path / "out", repeats=1, warmup=0, progress=False
    )
    assert (df["status"] == "ok").all()
    rows = {r["config_key"]: r for r in df.to_dict("records")}
    assert rows[reference.key]["recall"] == 1.0
    assert rows[reference.key]["displayed_recall"] == 1.0
    assert rows[reference.key]["displayed_iou"] == pytest.approx(1.0, abs=1e-3)  # saved to 0.01 px
    ref = Reference.load(next(ResultsStore(tmp_path / "out").reference_dir.glob("*.json")))
    labels = {int(c) for b in ref.boxes.values() for c in b.class_id}
    assert 0 in labels  # the scene's people are found by the real COCO model
    assert rows[reference.replace(skip=2).key]["recall"] == 1.0
    assert rows[reference.replace(skip=2).key]["displayed_recall"] <= 1.0
