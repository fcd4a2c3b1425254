"""`OpenVinoDetector`: same boxes as `OnnxDetector`, IR and ONNX inputs, errors."""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np
import pytest

from espdetect.detectors.base import DetectParams
from espdetect.detectors.onnx import OnnxDetector
from espdetect.detectors.openvino import OpenVinoDetector, check_device
from espdetect.exceptions import ConfigurationError, ModelLoadError

from ._compare import assert_same_boxes, dequantize

OPENVINO_REASON = "needs OpenVINO (pip install 'espdetect[openvino]')"


def constant_ir(folder: Path, output: np.ndarray, input_shape: list[int]) -> Path:
    """An OpenVINO IR in ``folder`` whose output is always ``output`` (-1 in ``input_shape``: dynamic)."""
    import openvino as ov
    import openvino.opset13 as ops

    image = ops.parameter(ov.PartialShape(input_shape), np.float32, name="images")
    peak = ops.reduce_max(image, reduction_axes=[0, 1, 2, 3], keep_dims=False)
    result = ops.add(ops.constant(output.astype(np.float32)), ops.multiply(peak, ops.constant(np.float32(0))))
    folder.mkdir(parents=True, exist_ok=True)
    ov.save_model(ov.Model([result], [image], "constant"), str(folder / "model.xml"))
    return folder


@pytest.fixture(scope="module")
def ov() -> ModuleType:
    module: ModuleType = pytest.importorskip("openvino", reason=OPENVINO_REASON)
    return module


@pytest.fixture(scope="module")
def onnx_model(model_path: str) -> str:
    if Path(model_path).suffix.lower() != ".onnx":
        pytest.skip(f"needs an .onnx model, got {model_path}")
    return model_path


@pytest.fixture(scope="module")
def fp32_model(onnx_model: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return dequantize(onnx_model, tmp_path_factory.mktemp("fp32") / "yolov8n_fp32.onnx")


@pytest.fixture(scope="module")
def images(sample_images: dict[str, Path]) -> dict[str, np.ndarray]:
    loaded: dict[str, np.ndarray] = {}
    for name, path in sample_images.items():
        image = cv2.imread(str(path))
        assert image is not None, path
        loaded[name] = image
    return loaded


@pytest.fixture(scope="module")
def fp32_pair(ov: ModuleType, fp32_model: Path) -> tuple[OpenVinoDetector, OnnxDetector]:
    return OpenVinoDetector(fp32_model), OnnxDetector(fp32_model)


@pytest.mark.parametrize("image_name", ["bus", "zidane"])
def test_same_boxes_as_onnxruntime_on_an_fp32_model(
    fp32_pair: tuple[OpenVinoDetector, OnnxDetector], images: dict[str, np.ndarray], image_name: str
) -> None:
    detector, reference = fp32_pair
    image = images[image_name]

    assert_same_boxes(detector.detect(image), reference.detect(image))
    tight = DetectParams(conf=0.5, classes=[0])
    assert_same_boxes(detector.detect(image, tight), reference.detect(image, tight))


def test_int8_model_finds_what_onnxruntime_finds(
    ov: ModuleType, onnx_model: str, images: dict[str, np.ndarray]
) -> None:
    # The int8 model quantizes activations at run time (DynamicQuantizeLinear + ConvInteger);
    # OpenVINO's integer kernels round differently from ONNX Runtime's, which moves scores by
    # ~0.01 (measured: IoU >= 0.98, confidence within 0.013), so this check is looser.
    detector, reference = OpenVinoDetector(onnx_model), OnnxDetector(onnx_model)

    assert detector.info.names == reference.info.names
    for image in images.values():
        assert_same_boxes(detector.detect(image), reference.detect(image), min_iou=0.95, conf_tol=0.03)


def test_info_describes_the_model(fp32_pair: tuple[OpenVinoDetector, OnnxDetector], fp32_model: Path) -> None:
    info = fp32_pair[0].info

    assert info.model == str(fp32_model)
    assert (info.backend, info.device, info.fixed_imgsz, info.stride, info.half) == (
        "openvino",
        "cpu",
        640,
        32,
        False,
    )
    assert info.names[0] == "person"
    assert "OpenVinoDetector(" in repr(fp32_pair[0])


def test_ir_file_gives_the_same_boxes_as_its_onnx_source(
    ov: ModuleType,
    fp32_pair: tuple[OpenVinoDetector, OnnxDetector],
    images: dict[str, np.ndarray],
    tmp_path: Path,
) -> None:
    source = fp32_pair[1].info.model
    xml = tmp_path / "yolov8n.xml"
    ov.save_model(ov.Core().read_model(source), str(xml), compress_to_fp16=False)

    from_xml, from_folder = OpenVinoDetector(xml), OpenVinoDetector(tmp_path)

    assert from_xml.info.names == fp32_pair[1].info.names  # ONNX metadata travels in the IR's rt_info
    for image in images.values():
        assert_same_boxes(from_xml.detect(image), fp32_pair[1].detect(image))
        assert_same_boxes(from_folder.detect(image), fp32_pair[1].detect(image))


def test_ultralytics_style_folder_reads_names_from_metadata_yaml(ov: ModuleType, tmp_path: Path) -> None:
    boxes = np.zeros((6, 8), np.float32)  # (4 + 2 classes, 8 candidates), one confident box
    boxes[:, 0] = [32, 32, 16, 16, 0.0, 0.9]
    folder = constant_ir(tmp_path / "tiny_openvino_model", boxes[None], [1, 3, 64, 64])
    (folder / "metadata.yaml").write_text(
        "task: detect\nstride: 32\nimgsz:\n- 64\n- 64\nnames:\n  0: cat\n  1: hot dog\n"
    )

    detector = OpenVinoDetector(folder)
    dets = detector.detect(np.zeros((64, 64, 3), np.uint8))

    assert detector.info.names == {0: "cat", 1: "hot dog"}
    assert detector.info.fixed_imgsz == 64
    assert dets.labels == ["hot dog"]
    np.testing.assert_allclose(dets.xyxy, [[24, 24, 40, 40]])


def test_dynamic_input_follows_imgsz(ov: ModuleType, tmp_path: Path) -> None:
    rows = np.array([[0, 0, 160, 160, 0.9, 0]], np.float32)  # end-to-end head, model-input pixels
    detector = OpenVinoDetector(constant_ir(tmp_path / "dyn", rows[None], [1, 3, -1, -1]))
    image = np.zeros((640, 640, 3), np.uint8)

    assert detector.info.fixed_imgsz is None
    np.testing.assert_allclose(detector.detect(image, DetectParams(imgsz=320)).xyxy, [[0, 0, 320, 320]])
    np.testing.assert_allclose(detector.detect(image, DetectParams(imgsz=640)).xyxy, [[0, 0, 160, 160]])


def test_half_lets_openvino_pick_its_low_precision(
    ov: ModuleType,
    fp32_model: Path,
    fp32_pair: tuple[OpenVinoDetector, OnnxDetector],
    images: dict[str, np.ndarray],
) -> None:
    detector = OpenVinoDetector(fp32_model, half=True)

    assert isinstance(detector.info.half, bool)  # True where the CPU has bf16 (AVX512-BF16/AMX)
    for image in images.values():
        assert detector.detect(image).count_by_label() == fp32_pair[1].detect(image).count_by_label()


def test_concurrent_calls_give_the_serial_result(
    fp32_pair: tuple[OpenVinoDetector, OnnxDetector], images: dict[str, np.ndarray]
) -> None:
    detector = fp32_pair[0]
    frames = [images["bus"], images["zidane"]] * 3
    serial = [detector.detect(frame) for frame in frames]

    with ThreadPoolExecutor(max_workers=3) as pool:
        parallel = list(pool.map(detector.detect, frames))

    for one, other in zip(serial, parallel, strict=True):
        np.testing.assert_array_equal(one.xyxy, other.xyxy)


def test_threads_and_device_are_checked(
    ov: ModuleType, fp32_model: Path, images: dict[str, np.ndarray]
) -> None:
    with pytest.raises(ConfigurationError) as threads:
        OpenVinoDetector(fp32_model, threads=0)
    with pytest.raises(ConfigurationError, match="CPU") as device:
        OpenVinoDetector(fp32_model, device="TPU")

    assert (threads.value.field, device.value.field) == ("threads", "device")
    assert len(OpenVinoDetector(fp32_model, threads=1, device="cpu").detect(images["bus"])) > 0


def test_device_names_are_normalised() -> None:
    assert check_device("cpu", ["CPU"]) == "CPU"
    assert check_device("gpu", ["CPU", "GPU.0", "GPU.1"]) == "GPU"
    assert check_device("GPU.1", ["CPU", "GPU.0", "GPU.1"]) == "GPU.1"
    assert check_device("auto:gpu,cpu", ["CPU"]) == "AUTO:GPU,CPU"
    with pytest.raises(ConfigurationError):
        check_device("GPU.2", ["CPU", "GPU.0"])


def test_bad_paths_are_model_load_errors(ov: ModuleType, tmp_path: Path) -> None:
    weights = tmp_path / "model.pt"
    weights.write_bytes(b"\x00")
    broken = tmp_path / "broken.xml"
    broken.write_text("<net>")
    empty = tmp_path / "empty_openvino_model"
    empty.mkdir()

    with pytest.raises(ModelLoadError, match="no such path"):
        OpenVinoDetector(tmp_path / "absent.xml")
    with pytest.raises(ModelLoadError, match=r"\.pt file"):
        OpenVinoDetector(weights)
    with pytest.raises(ModelLoadError, match="found 0"):
        OpenVinoDetector(empty)
    with pytest.raises(ModelLoadError, match="cannot read it"):
        OpenVinoDetector(broken)


def test_without_openvino_the_error_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # makes ``import openvino`` fail

    with pytest.raises(ModelLoadError, match=r"pip install 'espdetect\[openvino\]'"):
        OpenVinoDetector(tmp_path / "model.xml")
