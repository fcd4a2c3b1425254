"""`open_detector` / `choose_backend` and the lazy exports of `espdetect.detectors`."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import espdetect.detectors as detectors
from espdetect.detectors import DetectParams, OnnxDetector, open_detector
from espdetect.detectors.factory import choose_backend
from espdetect.detectors.models import MODEL_ENV_VAR
from espdetect.exceptions import ConfigurationError, ModelLoadError


@pytest.fixture(scope="module")
def onnx_model(model_path: str) -> str:
    if Path(model_path).suffix.lower() != ".onnx":
        pytest.skip(f"needs an .onnx model, got {model_path}")
    return model_path


def test_auto_picks_the_backend_from_the_file_type(tmp_path: Path) -> None:
    ir_folder = tmp_path / "yolov8n_openvino_model"
    ir_folder.mkdir()
    (ir_folder / "yolov8n.xml").write_text("<net/>")
    other_folder = tmp_path / "weights"
    other_folder.mkdir()

    assert choose_backend("models/best.onnx") == "onnxruntime"
    assert choose_backend("BEST.ONNX") == "onnxruntime"
    assert choose_backend(ir_folder / "yolov8n.xml") == "openvino"
    assert choose_backend(ir_folder) == "openvino"
    assert choose_backend(other_folder) == "ultralytics"
    assert choose_backend("yolov8n.pt") == "ultralytics"
    assert choose_backend("yolov8n.yaml") == "ultralytics"


def test_onnx_opens_on_onnxruntime_with_the_given_params(onnx_model: str) -> None:
    detector = open_detector(onnx_model, threads=1, conf=0.5, classes=[0])

    assert isinstance(detector, OnnxDetector)
    assert detector.info.backend == "onnxruntime"
    assert detector.params == DetectParams(conf=0.5, classes=[0], imgsz=640)


def test_no_model_means_the_environment_variable(onnx_model: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MODEL_ENV_VAR, onnx_model)

    assert open_detector().info.model == onnx_model


def test_half_is_ignored_for_onnxruntime(onnx_model: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="espdetect.detectors.factory"):
        detector = open_detector(onnx_model, half=True)

    assert detector.info.half is False
    assert "precision it was exported in" in caplog.text


def test_backend_can_be_forced(onnx_model: str) -> None:
    pytest.importorskip("openvino", reason="needs OpenVINO (pip install 'espdetect[openvino]')")

    detector = open_detector(onnx_model, backend="openvino", device="cpu", threads=1)

    assert detector.info.backend == "openvino"
    assert type(detector).__name__ == "OpenVinoDetector"


def test_ultralytics_backend_runs_the_same_file(onnx_model: str) -> None:
    pytest.importorskip("ultralytics", reason="needs ultralytics (pip install 'espdetect[ultralytics]')")

    detector = open_detector(onnx_model, backend="ultralytics", conf=0.4)

    assert detector.info.backend == "ultralytics"
    assert detector.params.conf == 0.4


def test_unknown_backend_and_device_are_configuration_errors(onnx_model: str) -> None:
    with pytest.raises(ConfigurationError) as backend:
        open_detector(onnx_model, backend="tensorflow")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError) as device:
        open_detector(onnx_model, device="tpu")

    assert (backend.value.field, device.value.field) == ("backend", "device")


def test_missing_onnx_file_is_a_model_load_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError):
        open_detector(tmp_path / "absent.onnx")


def test_package_exports_are_lazy_and_complete() -> None:
    assert detectors.OnnxDetector is OnnxDetector
    assert {"OnnxDetector", "OpenVinoDetector", "open_detector", "DetectorBackend"} <= set(detectors.__all__)
    with pytest.raises(AttributeError):
        _ = detectors.NoSuchDetector


def test_importing_the_package_loads_no_runtime() -> None:
    code = textwrap.dedent(
        """
        import sys
        import espdetect.detectors
        heavy = ("torch", "ultralytics", "onnxruntime", "openvino", "cv2")
        print(sorted(m for m in sys.modules if m.split(".")[0] in heavy))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_open_detector_on_onnx_never_loads_torch(onnx_model: str, sample_images: dict[str, Path]) -> None:
    code = textwrap.dedent(
        f"""
        import sys
        import cv2
        from espdetect.detectors import open_detector

        detector = open_detector({onnx_model!r})
        assert len(detector.detect(cv2.imread({str(sample_images["bus"])!r}))) > 0
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "ultralytics")))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
