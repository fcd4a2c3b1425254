"""The `Detector` interface: params checked against the model, per-call params, atomic updates."""

from __future__ import annotations

import numpy as np
import pytest

from espdetect.detections import Detections
from espdetect.detectors.base import Detector, DetectParams, ModelInfo
from espdetect.exceptions import ConfigurationError, DetectorError


class EchoDetector(Detector):
    """Returns no boxes and remembers the params of each call."""

    def __init__(self, info: ModelInfo) -> None:
        self._info = info
        self.params = self.check(DetectParams())
        self.seen: list[DetectParams] = []

    @property
    def info(self) -> ModelInfo:
        return self._info

    def _detect(self, image: np.ndarray, params: DetectParams) -> Detections:
        self.seen.append(params)
        return Detections.empty(self._info.names)


NAMES = {0: "person", 1: "car"}
IMAGE = np.zeros((48, 64, 3), np.uint8)


def test_params_are_checked_and_normalised() -> None:
    params = DetectParams(conf=1, classes=[1, 0, 1])
    assert params.conf == 1.0 and isinstance(params.conf, float)
    assert params.classes == (0, 1)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        pytest.param({"conf": 1.01}, "conf", id="conf"),
        pytest.param({"conf": True}, "conf", id="conf-bool"),
        pytest.param({"iou": float("nan")}, "iou", id="iou-nan"),
        pytest.param({"max_det": 0}, "max_det", id="max-det"),
        pytest.param({"imgsz": 100}, "imgsz", id="imgsz-step"),
        pytest.param({"imgsz": 2048}, "imgsz", id="imgsz-big"),
        pytest.param({"classes": []}, "classes", id="classes-empty"),
        pytest.param({"classes": [-1]}, "classes", id="classes-negative"),
        pytest.param({"classes": "0"}, "classes", id="classes-text"),
    ],
)
def test_bad_params_name_their_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        DetectParams(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


def test_check_resolves_the_size_for_the_model() -> None:
    dynamic = EchoDetector(ModelInfo("m", NAMES))
    fixed = EchoDetector(ModelInfo("m", NAMES, fixed_imgsz=320))
    assert dynamic.params.imgsz == 640 and fixed.params.imgsz == 320
    assert dynamic.check(DetectParams(imgsz=160)).imgsz == 160
    with pytest.raises(ConfigurationError, match="fixed input size, got 640") as info:
        fixed.check(DetectParams(imgsz=640))
    assert info.value.field == "imgsz"


def test_check_applies_the_model_stride_and_classes() -> None:
    p6 = EchoDetector(ModelInfo("m", NAMES, stride=64))
    with pytest.raises(ConfigurationError, match="multiple of this model's stride 64, got 96"):
        p6.check(DetectParams(imgsz=96))
    with pytest.raises(ConfigurationError, match=r"between 0 and 1 for this model, got \[2\]") as info:
        p6.check(DetectParams(classes=[0, 2]))
    assert info.value.field == "classes"


def test_update_is_all_or_nothing() -> None:
    det = EchoDetector(ModelInfo("m", NAMES))
    det.update(conf=0.4, classes=[1])
    before = det.params
    with pytest.raises(ConfigurationError):
        det.update(conf=0.9, classes=[5])
    assert det.params == before
    det.update(classes=None, imgsz=None)
    assert det.params.classes is None and det.params.imgsz == 640 and det.params.conf == 0.4


def test_each_call_may_bring_its_own_params() -> None:
    det = EchoDetector(ModelInfo("m", NAMES, fixed_imgsz=320))
    det.detect(IMAGE)
    det.detect(IMAGE, DetectParams(conf=0.7, classes=[0]))
    assert [p.conf for p in det.seen] == [0.25, 0.7]
    assert det.seen[1].imgsz == 320  # resolved for the model before the backend sees it
    with pytest.raises(ConfigurationError):
        det.detect(IMAGE, DetectParams(imgsz=640))


@pytest.mark.parametrize(
    "image",
    [
        pytest.param(np.zeros((48, 64), np.uint8), id="grey"),
        pytest.param(np.zeros((48, 64, 3), np.float32), id="float"),
        pytest.param(np.zeros((0, 64, 3), np.uint8), id="empty"),
        pytest.param([[0, 0, 0]], id="list"),
    ],
)
def test_detect_refuses_what_is_not_a_bgr_image(image: object) -> None:
    det = EchoDetector(ModelInfo("m", NAMES))
    with pytest.raises(ValueError, match=r"expected .*\(H, W, 3\) uint8 BGR image"):
        det.detect(image)  # type: ignore[arg-type]
    assert det.seen == []


def test_warmup_runs_at_the_model_size() -> None:
    det = EchoDetector(ModelInfo("m", NAMES, fixed_imgsz=320))
    det.warmup(2)
    assert len(det.seen) == 2
    with pytest.raises(ValueError, match="expected n >= 0"):
        det.warmup(-1)


class BrokenDetector(EchoDetector):
    """A backend whose runtime raises its own error type."""

    def _detect(self, image: np.ndarray, params: DetectParams) -> Detections:
        raise RuntimeError("CUDA out of memory")


def test_a_runtime_failure_is_a_detector_error_for_this_image() -> None:
    det = BrokenDetector(ModelInfo("m", NAMES))
    with pytest.raises(DetectorError, match="model 'm' failed: RuntimeError: CUDA out of memory") as info:
        det.detect(IMAGE)
    assert isinstance(info.value.__cause__, RuntimeError)
    with pytest.raises(ValueError, match="BGR image"):  # a caller's mistake stays what it is
        det.detect(np.zeros((4, 4), np.uint8))


def test_params_are_checked_once_per_object() -> None:
    det = EchoDetector(ModelInfo("m", NAMES, fixed_imgsz=320))
    params = DetectParams(conf=0.6)
    for _ in range(3):
        det.detect(IMAGE, params)
    assert [p.imgsz for p in det.seen] == [320, 320, 320]
    assert det.seen[0] is det.seen[2]  # the resolved params were reused, not rebuilt each call


class CornerDetector(EchoDetector):
    """One box over the image's bottom-right quarter, in the pixels of the image it was given."""

    def _detect(self, image: np.ndarray, params: DetectParams) -> Detections:
        self.seen.append(params)
        h, w = image.shape[:2]
        return Detections(
            xyxy=np.array([[w / 2, h / 2, w, h]], np.float32),
            confidence=np.array([0.9], np.float32),
            class_id=np.array([0]),
            names=self._info.names,
        )


@pytest.mark.parametrize("reduce", [1, 2, 4])
def test_detect_jpeg_gives_boxes_in_the_full_size_pixels(reduce: int) -> None:
    import simplejpeg

    detector = CornerDetector(ModelInfo("m", NAMES))
    jpeg = simplejpeg.encode_jpeg(np.full((240, 320, 3), 90, np.uint8), colorspace="BGR")
    strict = DetectParams(conf=0.6)
    found = detector.detect_jpeg(jpeg, strict, reduce)  # type: ignore[arg-type]
    np.testing.assert_allclose(found.xyxy, [[160, 120, 320, 240]])
    assert detector.seen[-1].conf == 0.6


def test_detect_jpeg_refuses_what_is_not_a_jpeg() -> None:
    from espdetect.exceptions import DecodeError

    with pytest.raises(DecodeError):
        CornerDetector(ModelInfo("m", NAMES)).detect_jpeg(b"\xff\xd8 not a jpeg", reduce=2)
