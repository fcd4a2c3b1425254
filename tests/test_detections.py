from __future__ import annotations

import json
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np
import pytest

from espdetect.detections import Detections, StageTimings, box_iou

NAMES = {0: "person", 1: "bicycle", 5: "bus"}


def make(
    xyxy: list[list[float]] | None = None,
    confidence: list[float] | None = None,
    class_id: list[int] | None = None,
    timings: StageTimings | None = None,
) -> Detections:
    xyxy = [[0, 0, 10, 10], [5, 5, 25, 45], [100, 50, 200, 150]] if xyxy is None else xyxy
    confidence = [0.9, 0.4, 0.75] if confidence is None else confidence
    class_id = [0, 5, 1] if class_id is None else class_id
    return Detections(
        xyxy=np.array(xyxy, np.float32),
        confidence=np.array(confidence, np.float32),
        class_id=np.array(class_id),
        names=NAMES,
        timings=timings,
    )


@pytest.mark.parametrize(
    ("kwargs", "outcome"),
    [
        pytest.param({}, nullcontext(), id="valid"),
        pytest.param(
            {"xyxy": np.zeros((2, 3))},
            pytest.raises(ValueError, match=r"xyxy must have shape \(N, 4\), got \(2, 3\)"),
            id="xyxy-3-cols",
        ),
        pytest.param(
            {"xyxy": np.zeros(4)},
            pytest.raises(ValueError, match=r"xyxy must have shape \(N, 4\), got \(4,\)"),
            id="xyxy-1d",
        ),
        pytest.param(
            {"xyxy": np.zeros((1, 2, 4))},
            pytest.raises(ValueError, match=r"xyxy must have shape \(N, 4\), got \(1, 2, 4\)"),
            id="xyxy-3d",
        ),
        pytest.param(
            {"xyxy": np.float32(3.0)},
            pytest.raises(ValueError, match=r"xyxy must have shape \(N, 4\), got \(\)"),
            id="xyxy-scalar",
        ),
        pytest.param(
            {"confidence": np.zeros(3)},
            pytest.raises(ValueError, match=r"confidence must have shape \(2,\), got \(3,\)"),
            id="confidence-length",
        ),
        pytest.param(
            {"confidence": np.zeros((2, 1))},
            pytest.raises(ValueError, match=r"confidence must have shape \(2,\), got \(2, 1\)"),
            id="confidence-2d",
        ),
        pytest.param(
            {"class_id": np.zeros(1)},
            pytest.raises(ValueError, match=r"class_id must have shape \(2,\), got \(1,\)"),
            id="class-id-length",
        ),
    ],
)
def test_validation(kwargs: dict[str, Any], outcome: AbstractContextManager[Any]) -> None:
    args: dict[str, Any] = {"xyxy": np.zeros((2, 4)), "confidence": np.zeros(2), "class_id": np.zeros(2)}
    args.update(kwargs)
    with outcome:
        d = Detections(**args)
        assert d.xyxy.dtype == np.float32
        assert d.confidence.dtype == np.float32
        assert d.class_id.dtype == np.int64


def test_accepts_lists_and_empty_inputs() -> None:
    d = Detections(xyxy=[[1, 2, 3, 4]], confidence=[0.5], class_id=[2])  # type: ignore[arg-type]
    assert d.xyxy.shape == (1, 4)
    e = Detections(xyxy=[], confidence=[], class_id=[])  # type: ignore[arg-type]
    assert e.xyxy.shape == (0, 4)
    assert len(e) == 0


def test_empty() -> None:
    d = Detections.empty(NAMES)
    assert len(d) == 0
    assert d.xyxy.shape == (0, 4)
    assert d.confidence.shape == (0,)
    assert d.class_id.shape == (0,)
    assert d.names == NAMES and d.names is not NAMES
    assert d.labels == []
    assert d.to_dict() == {"detections": []}
    assert len(d.filter(min_confidence=0.1, classes=[0])) == 0
    assert Detections.empty().names == {}


def test_mask_and_index_filtering() -> None:
    d = make()
    high = d[d.confidence > 0.5]
    assert high.labels == ["person", "bicycle"]
    assert high.names is d.names
    assert d[1].labels == ["bus"]
    assert d[np.int64(2)].labels == ["bicycle"]
    assert d[-1].labels == ["bicycle"]
    assert d[[2, 0]].labels == ["bicycle", "person"]
    assert d[np.array([0, 0])].labels == ["person", "person"]
    assert d[1:].labels == ["bus", "bicycle"]
    assert len(d[[]]) == 0
    assert len(d[np.zeros(3, bool)]) == 0
    np.testing.assert_array_equal(d[2].xyxy, [[100, 50, 200, 150]])


def test_index_keeps_timings() -> None:
    t = StageTimings(1.0, 2.0, 3.0)
    assert make(timings=t)[0].timings is t


@pytest.mark.parametrize(
    ("min_confidence", "classes", "labels"),
    [
        pytest.param(None, None, ["person", "bus", "bicycle"], id="nothing"),
        pytest.param(0.75, None, ["person", "bicycle"], id="min-inclusive"),
        pytest.param(0.95, None, [], id="min-all-out"),
        pytest.param(None, [0, 1], ["person", "bicycle"], id="classes"),
        pytest.param(None, (5,), ["bus"], id="tuple"),
        pytest.param(None, [], [], id="no-classes"),
        pytest.param(0.5, [0, 5], ["person"], id="both"),
    ],
)
def test_filter(min_confidence: float | None, classes: list[int] | None, labels: list[str]) -> None:
    assert make().filter(min_confidence=min_confidence, classes=classes).labels == labels


def test_scaled() -> None:
    d = make(timings=StageTimings(1, 2, 3))
    assert d.scaled(1) is d
    s = d.scaled(2.5)
    np.testing.assert_allclose(s.xyxy, d.xyxy * 2.5)
    np.testing.assert_array_equal(s.confidence, d.confidence)
    np.testing.assert_array_equal(s.class_id, d.class_id)
    assert s.names == d.names and s.timings == d.timings
    assert s.xyxy.dtype == np.float32
    np.testing.assert_array_equal(d.xyxy[0], [0, 0, 10, 10])  # original untouched


def test_labels_fall_back_to_the_id() -> None:
    assert make(class_id=[0, 42, 5]).labels == ["person", "42", "bus"]
    assert make(class_id=[0, 42, 0]).count_by_label() == {"person": 2, "42": 1}


def test_to_dict_is_json_serialisable() -> None:
    timings = StageTimings(np.float32(1.23456), np.float64(10.5), 0.25)  # type: ignore[arg-type]
    d = make(timings=timings)
    out = d.to_dict()
    again = json.loads(json.dumps(out))
    assert again == out
    assert out["detections"][1] == {
        "xyxy": [5.0, 5.0, 25.0, 45.0],
        "confidence": 0.4,
        "class_id": 5,
        "label": "bus",
    }
    assert out["timings_ms"] == {"preprocess_ms": 1.235, "inference_ms": 10.5, "postprocess_ms": 0.25}
    assert "timings_ms" not in make().to_dict()


def test_stage_timings_total() -> None:
    assert StageTimings(1.0, 2.5, 0.5).total_ms == 4.0


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        pytest.param([[0, 0, 10, 10]], [[0, 0, 10, 10]], [[1.0]], id="identical"),
        pytest.param([[0, 0, 10, 10]], [[10, 10, 20, 20]], [[0.0]], id="touching-corner"),
        pytest.param([[0, 0, 10, 10]], [[20, 20, 30, 30]], [[0.0]], id="disjoint"),
        pytest.param([[0, 0, 10, 10]], [[5, 0, 15, 10]], [[50 / 150]], id="half-overlap"),
        pytest.param([[0, 0, 10, 10]], [[2, 2, 4, 4]], [[4 / 100]], id="contained"),
        pytest.param([[0, 0, 0, 0]], [[0, 0, 0, 0]], [[0.0]], id="degenerate"),
        pytest.param(
            [[0, 0, 10, 10], [0, 0, 20, 20]],
            [[0, 0, 10, 10], [10, 10, 20, 20], [0, 0, 5, 5]],
            [[1.0, 0.0, 0.25], [0.25, 0.25, 25 / 400]],
            id="pairwise",
        ),
    ],
)
def test_box_iou(a: list[list[float]], b: list[list[float]], expected: list[list[float]]) -> None:
    got = box_iou(np.array(a, np.float32), np.array(b, np.float32))
    assert got.shape == (len(a), len(b))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


def test_box_iou_is_symmetric_and_bounded() -> None:
    rng = np.random.default_rng(3)
    tl = rng.uniform(0, 100, (20, 2))
    a = np.hstack([tl, tl + rng.uniform(1, 50, (20, 2))]).astype(np.float32)
    tl = rng.uniform(0, 100, (15, 2))
    b = np.hstack([tl, tl + rng.uniform(1, 50, (15, 2))]).astype(np.float32)
    ab = box_iou(a, b)
    np.testing.assert_allclose(ab, box_iou(b, a).T, rtol=1e-6)
    assert ((ab >= 0) & (ab <= 1)).all()
    np.testing.assert_allclose(np.diag(box_iou(a, a)), 1.0, rtol=1e-6)


def test_box_iou_with_no_boxes() -> None:
    assert box_iou(np.zeros((0, 4)), np.zeros((3, 4))).shape == (0, 3)
    assert box_iou(np.zeros((2, 4)), np.zeros((0, 4))).shape == (2, 0)
