from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from espdetect.detections import Detections
from espdetect.detectors.base import DetectParams
from espdetect.exceptions import ConfigurationError, ModelLoadError

pytest.importorskip("ultralytics", reason="UltralyticsDetector needs pip install 'espdetect[ultralytics]'")

from espdetect.detectors.ultralytics import UltralyticsDetector

#: An untrained architecture: builds offline, costs the same as YOLOv8n, boxes are noise.
UNTRAINED = "yolov8n.yaml"


@pytest.fixture(scope="module")
def detector(model_path: str) -> UltralyticsDetector:
    return UltralyticsDetector(model_path)


@pytest.fixture(scope="module")
def tiny_untrained() -> UltralyticsDetector:
    return UltralyticsDetector(UNTRAINED, imgsz=64)


@pytest.fixture
def bus(sample_images: dict[str, Path]) -> np.ndarray:
    image = cv2.imread(str(sample_images["bus"]))
    assert image is not None
    return image


@pytest.fixture
def ultralytics_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    # Ultralytics' logger does not propagate to the root logger that caplog listens on.
    ul_logger = logging.getLogger("ultralytics")
    ul_logger.addHandler(caplog.handler)
    try:
        yield caplog
    finally:
        ul_logger.removeHandler(caplog.handler)


def test_bus_has_a_bus_and_at_least_three_persons(detector: UltralyticsDetector, bus: np.ndarray) -> None:
    dets = detector.detect(bus)

    counts = dets.count_by_label()
    assert counts.get("bus", 0) >= 1
    assert counts.get("person", 0) >= 3
    h, w = bus.shape[:2]
    assert (dets.xyxy[:, [0, 2]] >= -1).all() and (dets.xyxy[:, [0, 2]] <= w + 1).all()
    assert (dets.xyxy[:, [1, 3]] >= -1).all() and (dets.xyxy[:, [1, 3]] <= h + 1).all()
    assert (dets.confidence >= detector.params.conf).all()


def test_zidane_has_at_least_two_persons(
    detector: UltralyticsDetector, sample_images: dict[str, Path]
) -> None:
    image = cv2.imread(str(sample_images["zidane"]))
    assert image is not None

    assert detector.detect(image).count_by_label().get("person", 0) >= 2


def test_detections_carry_stage_timings_and_names(detector: UltralyticsDetector, bus: np.ndarray) -> None:
    dets = detector.detect(bus)

    assert dets.timings is not None
    assert dets.timings.inference_ms > 0
    assert dets.timings.preprocess_ms > 0
    assert dets.timings.postprocess_ms >= 0
    assert dets.names[0] == "person" and dets.names[5] == "bus"
    assert dets.to_dict()["timings_ms"]["inference_ms"] > 0


def test_fixed_size_onnx_defaults_to_its_input_size(detector: UltralyticsDetector) -> None:
    if detector.info.fixed_imgsz is None:
        pytest.skip("ESPDETECT_MODEL has a dynamic input size")

    assert detector.params.imgsz == detector.info.fixed_imgsz
    assert detector.info.to_dict()["fixed_imgsz"] == detector.info.fixed_imgsz


def test_fixed_size_onnx_refuses_another_imgsz(detector: UltralyticsDetector, model_path: str) -> None:
    native = detector.info.fixed_imgsz
    if native is None:
        pytest.skip("ESPDETECT_MODEL has a dynamic input size")

    with pytest.raises(
        ConfigurationError, match=f"expected imgsz {native}: .* fixed input size, got 320"
    ) as info:
        detector.update(imgsz=320)
    assert info.value.field == "imgsz"
    with pytest.raises(ConfigurationError, match="fixed input size"):
        UltralyticsDetector(model_path, imgsz=320)
    with pytest.raises(ConfigurationError, match="fixed input size"):
        detector.detect(np.zeros((48, 64, 3), np.uint8), DetectParams(imgsz=320))
    detector.update(imgsz=native)
    assert detector.params.imgsz == native


def test_class_filter_applies_and_can_be_cleared(detector: UltralyticsDetector, bus: np.ndarray) -> None:
    try:
        detector.update(classes=[0])
        only_persons = detector.detect(bus)
        detector.update(conf=0.5)  # leaving classes out keeps the filter
        assert detector.params.classes == (0,)
    finally:
        detector.update(classes=None, conf=0.25)

    assert len(only_persons) >= 3
    assert set(only_persons.labels) == {"person"}
    assert "bus" in detector.detect(bus).labels


def test_params_per_call_leave_the_defaults_alone(detector: UltralyticsDetector, bus: np.ndarray) -> None:
    persons = detector.detect(bus, DetectParams(conf=0.5, classes=[0]))

    assert set(persons.labels) == {"person"} and (persons.confidence >= 0.5).all()
    assert detector.params.classes is None and detector.params.conf == 0.25
    assert "bus" in detector.detect(bus).labels


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        pytest.param({"conf": 1.5}, "expected conf to be a number from 0 to 1, got 1.5", id="conf-high"),
        pytest.param({"iou": -0.1}, "expected iou to be a number from 0 to 1", id="iou-negative"),
        pytest.param(
            {"max_det": 0}, "expected max_det to be an integer from 1 to 10000, got 0", id="max-det"
        ),
        pytest.param({"classes": [0, 999]}, r"between 0 and 79 for this model, got \[999\]", id="class-id"),
        pytest.param({"classes": []}, "at least one class id", id="classes-empty"),
        pytest.param({"classes": "person"}, "list of class ids", id="classes-str"),
    ],
)
def test_update_rejects_bad_values_and_changes_nothing(
    tiny_untrained: UltralyticsDetector, changes: dict[str, object], message: str
) -> None:
    before = tiny_untrained.params

    valid_and_invalid: dict[str, object] = {"conf": 0.9, **changes}

    with pytest.raises(ConfigurationError, match=message) as info:
        tiny_untrained.update(**valid_and_invalid)  # type: ignore[arg-type]

    assert info.value.field == next(iter(changes))
    assert tiny_untrained.params == before


def test_dynamic_model_accepts_stride_multiples_only(tiny_untrained: UltralyticsDetector) -> None:
    assert tiny_untrained.info.fixed_imgsz is None

    with pytest.raises(
        ConfigurationError, match="expected imgsz to be a multiple of 32 from 32 to 1280, got 100"
    ):
        tiny_untrained.update(imgsz=100)
    tiny_untrained.update(imgsz=96)
    dets = tiny_untrained.detect(np.zeros((60, 80, 3), np.uint8))
    tiny_untrained.update(imgsz=None)  # the model's own size
    assert tiny_untrained.params.imgsz == 640
    tiny_untrained.update(imgsz=64)

    assert dets.timings is not None


def test_untrained_yaml_builds_and_runs_on_a_tiny_image(tiny_untrained: UltralyticsDetector) -> None:
    dets = tiny_untrained.detect(np.full((48, 64, 3), 114, np.uint8))

    assert isinstance(dets, Detections)
    assert dets.timings is not None and dets.timings.inference_ms > 0
    assert len(tiny_untrained.names) == 80
    assert tiny_untrained.info.trained is False
    assert tiny_untrained.info.device == "cpu" and tiny_untrained.info.backend == "ultralytics"
    tiny_untrained.warmup(2)


def test_untrained_yaml_warns_that_accuracy_is_meaningless(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="espdetect.detectors.ultralytics"):
        UltralyticsDetector(UNTRAINED, imgsz=32)

    assert "untrained" in caplog.text


def test_half_on_cpu_is_reported_not_applied(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="espdetect.detectors.ultralytics"):
        det = UltralyticsDetector(UNTRAINED, imgsz=32, half=True, device="cpu")

    assert det.info.half is False
    assert det.info.to_dict()["half"] is False
    assert "half=True needs a CUDA device" in caplog.text


def test_info_and_params_are_json_serialisable(tiny_untrained: UltralyticsDetector) -> None:
    info = json.loads(json.dumps(tiny_untrained.info.to_dict()))
    params = json.loads(json.dumps(tiny_untrained.params.to_dict()))

    assert info["model"] == UNTRAINED and info["classes"] == 80
    assert params["imgsz"] == 64
    assert params["classes"] is None


@pytest.mark.parametrize(
    "image",
    [
        pytest.param(np.zeros((48, 64), np.uint8), id="grey"),
        pytest.param(np.zeros((48, 64, 3), np.float32), id="float"),
        pytest.param(np.zeros((0, 64, 3), np.uint8), id="empty"),
    ],
)
def test_detect_rejects_non_bgr_images(tiny_untrained: UltralyticsDetector, image: np.ndarray) -> None:
    with pytest.raises(ValueError, match=r"expected a non-empty \(H, W, 3\) uint8 BGR image"):
        tiny_untrained.detect(image)


def test_missing_file_is_a_model_load_error(tmp_path: Path) -> None:
    missing = tmp_path / "weights" / "best.pt"

    with pytest.raises(ModelLoadError, match="no such path") as info:
        UltralyticsDetector(missing)

    assert info.value.model == str(missing)
    assert "--model PATH" in str(info.value)


def test_unknown_bare_name_fails_without_trying_to_download() -> None:
    with pytest.raises(ModelLoadError, match=r"no such path 'nonexistent_model_xyz\.pt'"):
        UltralyticsDetector("nonexistent_model_xyz.pt")


def test_offline_yolov8n_pt_is_a_model_load_error() -> None:
    from ultralytics.utils import ONLINE, SETTINGS

    if ONLINE:
        pytest.skip("this machine could download yolov8n.pt")
    if (Path(SETTINGS["weights_dir"]) / "yolov8n.pt").exists() or Path("yolov8n.pt").exists():
        pytest.skip("yolov8n.pt is already on this machine")

    with pytest.raises(ModelLoadError, match="cannot be downloaded") as info:
        UltralyticsDetector("yolov8n.pt")

    assert info.value.model == "yolov8n.pt"


def test_without_a_model_the_bundled_one_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ESPDETECT_MODEL", raising=False)

    det = UltralyticsDetector()

    assert Path(det.info.model).name == "yolov8n_int8.onnx"
    assert det.info.fixed_imgsz == 640 and len(det.names) == 80


def test_corrupt_onnx_file_is_a_model_load_error(tmp_path: Path) -> None:
    corrupt = tmp_path / "broken.onnx"
    corrupt.write_bytes(b"\x08\x07 not a protobuf" * 64)

    with pytest.raises(ModelLoadError, match=r"broken\.onnx"):
        UltralyticsDetector(corrupt)


def test_unknown_device_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="expected device 'cpu', 'cuda' or 'cuda:N', got 'tpu'"):
        UltralyticsDetector(UNTRAINED, device="tpu")


def test_cuda_without_a_gpu_is_a_configuration_error() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")

    with pytest.raises(ConfigurationError, match="no CUDA GPU"):
        UltralyticsDetector(UNTRAINED, device="cuda:0")


def test_ultralytics_autoinstall_is_turned_off(
    monkeypatch: pytest.MonkeyPatch, ultralytics_log: pytest.LogCaptureFixture
) -> None:
    from ultralytics.utils import checks

    # As if Ultralytics had been imported before espdetect, with its default of installing.
    monkeypatch.setattr(checks, "AUTOINSTALL", True)
    monkeypatch.delenv("YOLO_AUTOINSTALL", raising=False)
    UltralyticsDetector(UNTRAINED, imgsz=32)

    assert getattr(checks, "AUTOINSTALL") is False  # noqa: B009  (not re-exported, typed as private)
    check_requirements = checks.check_requirements
    assert check_requirements("espdetect-no-such-package-xyz>=1") is False  # type: ignore[no-untyped-call]
    assert "AutoUpdate disabled" in ultralytics_log.text


def test_a_classification_model_is_a_model_load_error() -> None:
    with pytest.raises(ModelLoadError, match=r"yolov8n-cls\.yaml"):
        UltralyticsDetector("yolov8n-cls.yaml")


def test_imgsz_out_of_range_is_refused_before_loading() -> None:
    with pytest.raises(
        ConfigurationError, match="expected imgsz to be a multiple of 32 from 32 to 1280, got 8"
    ):
        UltralyticsDetector("nonexistent_model_xyz.pt", imgsz=8)


def test_openvino_folder_without_openvino_fails_instead_of_installing(
    tmp_path: Path, ultralytics_log: pytest.LogCaptureFixture
) -> None:
    import importlib.util

    if importlib.util.find_spec("openvino") is not None:
        pytest.skip("openvino is installed")
    folder = tmp_path / "yolov8n_openvino_model"
    folder.mkdir()
    (folder / "yolov8n.xml").write_text("<net/>")
    (folder / "yolov8n.bin").write_bytes(b"\0" * 16)

    with pytest.raises(ModelLoadError, match="openvino"):
        UltralyticsDetector(folder)

    assert "AutoUpdate disabled" in ultralytics_log.text
