"""`OnnxDetector` and the shared YOLO pre/post-processing in `espdetect.detectors._yolo`."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from espdetect.detectors import _yolo
from espdetect.detectors.base import DetectParams
from espdetect.detectors.models import MODEL_ENV_VAR, bundled_model_path
from espdetect.detectors.onnx import OnnxDetector, select_providers
from espdetect.exceptions import ConfigurationError, ModelLoadError

from ._compare import assert_same_boxes, dequantize

ULTRALYTICS_REASON = (
    "the comparison with Ultralytics needs ultralytics (pip install 'espdetect[ultralytics]')"
)


# --- helpers ---


def constant_model(
    path: Path,
    output: np.ndarray,
    *,
    input_shape: tuple[int | str, ...] = (1, 3, 640, 640),
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """An ONNX model whose output is always ``output``, whatever the image: a head with known boxes."""
    const = numpy_helper.from_array(output.astype(np.float32), "const")
    zero = numpy_helper.from_array(np.zeros((), np.float32), "zero")
    nodes = [
        helper.make_node("ReduceMax", ["images"], ["peak"], keepdims=0),
        helper.make_node("Mul", ["peak", "zero"], ["nothing"]),
        helper.make_node("Add", ["const", "nothing"], ["output0"]),
    ]
    graph = helper.make_graph(
        nodes,
        "constant",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(output.shape))],
        [const, zero],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return path


# --- fixtures ---


@pytest.fixture(scope="module")
def onnx_model(model_path: str) -> str:
    if Path(model_path).suffix.lower() != ".onnx":
        pytest.skip(f"needs an .onnx model: {MODEL_ENV_VAR} is {model_path}")
    return model_path


@pytest.fixture(scope="module")
def detector(onnx_model: str) -> OnnxDetector:
    return OnnxDetector(onnx_model)


@pytest.fixture(scope="module")
def images(sample_images: dict[str, Path]) -> dict[str, np.ndarray]:
    loaded: dict[str, np.ndarray] = {}
    for name, path in sample_images.items():
        image = cv2.imread(str(path))
        assert image is not None, path
        loaded[name] = image
    return loaded


@pytest.fixture(scope="module")
def bus(images: dict[str, np.ndarray]) -> np.ndarray:
    return images["bus"]


@pytest.fixture(scope="module")
def fp32_model(onnx_model: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return dequantize(onnx_model, tmp_path_factory.mktemp("fp32") / "yolov8n_fp32.onnx")


@pytest.fixture(scope="module")
def dynamic_model(fp32_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dynamic-input YOLOv8n export carrying the real model's (dequantized) weights."""
    pytest.importorskip("ultralytics", reason=ULTRALYTICS_REASON)
    import torch
    from ultralytics import YOLO  # type: ignore[attr-defined]

    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(fp32_model)).graph.initializer}
    yolo = YOLO("yolov8n.yaml")
    network: Any = cast(Any, yolo.model).fuse()
    state = network.state_dict()
    loaded = {key: torch.from_numpy(np.array(inits[key], np.float32)) for key in state if key in inits}
    # The DFL convolution is a fixed 0..15 ramp, identical in every YOLOv8.
    if not set(state) - set(loaded) <= {"model.22.dfl.conv.weight"}:
        pytest.skip(f"{MODEL_ENV_VAR} is not a YOLOv8n, so its weights do not fit yolov8n.yaml")
    network.load_state_dict(loaded, strict=False)
    network.names = {i: str(i) for i in range(80)}
    out = tmp_path_factory.mktemp("dynamic")
    # A model built from a .yaml is exported into the working directory.
    cwd = Path.cwd()
    os.chdir(out)
    try:
        exported = Path(yolo.export(format="onnx", dynamic=True, imgsz=640, simplify=False)).resolve()
    finally:
        os.chdir(cwd)
    assert exported.parent == out.resolve()
    return exported


# --- same boxes as Ultralytics ---


@pytest.mark.parametrize("image_name", ["bus", "zidane"])
def test_same_boxes_as_ultralytics_on_the_same_file(
    detector: OnnxDetector, onnx_model: str, images: dict[str, np.ndarray], image_name: str
) -> None:
    pytest.importorskip("ultralytics", reason=ULTRALYTICS_REASON)
    from espdetect.detectors.ultralytics import UltralyticsDetector

    reference = UltralyticsDetector(onnx_model)
    image = images[image_name]

    assert_same_boxes(detector.detect(image), reference.detect(image))
    tight = DetectParams(conf=0.5, iou=0.3, classes=[0])
    assert_same_boxes(detector.detect(image, tight), reference.detect(image, tight))


def test_bus_has_persons_and_a_bus(detector: OnnxDetector, bus: np.ndarray) -> None:
    dets = detector.detect(bus)

    counts = dets.count_by_label()
    assert counts["person"] >= 3 and counts["bus"] >= 1
    assert (dets.confidence[dets.class_id == 0] > 0.8).sum() >= 3
    h, w = bus.shape[:2]
    assert (dets.xyxy >= 0).all() and (dets.xyxy[:, [0, 2]] <= w).all() and (dets.xyxy[:, [1, 3]] <= h).all()
    assert (np.diff(dets.confidence) <= 0).all()


def test_info_describes_the_model(detector: OnnxDetector, onnx_model: str) -> None:
    info = detector.info

    assert info.model == onnx_model
    assert (info.backend, info.device, info.fixed_imgsz, info.stride, info.half) == (
        "onnxruntime",
        "cpu",
        640,
        32,
        False,
    )
    assert len(info.names) == 80 and info.names[0] == "person" and info.names[5] == "bus"
    assert detector.params == DetectParams(imgsz=640)
    assert "OnnxDetector(" in repr(detector)


def test_detections_carry_stage_timings(detector: OnnxDetector, bus: np.ndarray) -> None:
    timings = detector.detect(bus).timings

    assert timings is not None
    assert timings.preprocess_ms > 0 and timings.inference_ms > 0 and timings.postprocess_ms > 0


# --- params ---


def test_conf_and_classes_per_call_leave_the_defaults_alone(detector: OnnxDetector, bus: np.ndarray) -> None:
    confident_persons = detector.detect(bus, DetectParams(conf=0.8, classes=[0]))
    only_bus = detector.detect(bus, DetectParams(classes=[5]))

    assert len(confident_persons) >= 3 and set(confident_persons.labels) == {"person"}
    assert (confident_persons.confidence >= 0.8).all()
    assert set(only_bus.labels) == {"bus"}
    assert {"person", "bus"} <= set(detector.detect(bus).labels)


def test_max_det_keeps_the_most_confident(detector: OnnxDetector, bus: np.ndarray) -> None:
    everything = detector.detect(bus)
    two = detector.detect(bus, DetectParams(max_det=2))

    np.testing.assert_array_equal(two.confidence, everything.confidence[:2])
    np.testing.assert_array_equal(two.xyxy, everything.xyxy[:2])


def test_update_changes_the_defaults(onnx_model: str, bus: np.ndarray) -> None:
    detector = OnnxDetector(onnx_model, conf=0.5)

    assert (detector.detect(bus).confidence >= 0.5).all()
    detector.update(classes=[5])
    assert set(detector.detect(bus).labels) == {"bus"}
    assert detector.params.conf == 0.5


def test_unknown_class_id_is_refused(detector: OnnxDetector, bus: np.ndarray) -> None:
    with pytest.raises(ConfigurationError) as info:
        detector.detect(bus, DetectParams(classes=[80]))
    assert info.value.field == "classes"


def test_fixed_size_model_refuses_another_imgsz(
    detector: OnnxDetector, onnx_model: str, bus: np.ndarray
) -> None:
    with pytest.raises(ConfigurationError, match="fixed input size") as at_load:
        OnnxDetector(onnx_model, imgsz=320)
    with pytest.raises(ConfigurationError) as per_call:
        detector.detect(bus, DetectParams(imgsz=320))

    assert at_load.value.field == per_call.value.field == "imgsz"
    assert len(detector.detect(bus, DetectParams(imgsz=640))) == len(detector.detect(bus))


@pytest.mark.parametrize(
    "bad", [np.zeros((64, 64), np.uint8), np.zeros((64, 64, 3), np.float32), np.zeros((0, 64, 3), np.uint8)]
)
def test_a_bad_image_is_a_value_error(detector: OnnxDetector, bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="uint8"):
        detector.detect(bad)


def test_concurrent_calls_give_the_serial_result(
    detector: OnnxDetector, images: dict[str, np.ndarray]
) -> None:
    frames = [images["bus"], images["zidane"]] * 4
    serial = [detector.detect(frame) for frame in frames]

    with ThreadPoolExecutor(max_workers=4) as pool:
        parallel = list(pool.map(detector.detect, frames))

    for one, other in zip(serial, parallel, strict=True):
        np.testing.assert_array_equal(one.xyxy, other.xyxy)
        np.testing.assert_array_equal(one.class_id, other.class_id)


# --- other models ---


def test_dynamic_model_runs_at_two_sizes_like_ultralytics(
    dynamic_model: Path, images: dict[str, np.ndarray]
) -> None:
    from espdetect.detectors.ultralytics import UltralyticsDetector

    detector = OnnxDetector(dynamic_model)
    reference = UltralyticsDetector(dynamic_model)

    assert detector.info.fixed_imgsz is None and detector.params.imgsz == 640
    for imgsz in (320, 640):
        params = DetectParams(imgsz=imgsz)
        for image in images.values():
            assert_same_boxes(detector.detect(image, params), reference.detect(image, params))
    small, large = (detector.detect(images["bus"], DetectParams(imgsz=s)) for s in (320, 640))
    assert small.count_by_label() != large.count_by_label()  # really ran at two sizes


def test_fp16_model_is_fed_float16_and_finds_the_same_boxes(
    fp32_model: Path, images: dict[str, np.ndarray], tmp_path: Path
) -> None:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    fp16_path = tmp_path / "yolov8n_fp16.onnx"
    onnx.save(convert_float_to_float16(onnx.load(str(fp32_model)), keep_io_types=False), str(fp16_path))
    full, half = OnnxDetector(fp32_model), OnnxDetector(fp16_path)

    assert ort.InferenceSession(str(fp16_path)).get_inputs()[0].type == "tensor(float16)"
    assert half.info.half and not full.info.half
    assert half.info.names == full.info.names
    for image in images.values():
        assert_same_boxes(half.detect(image), full.detect(image), min_iou=0.98, conf_tol=0.01)


def test_dequantized_model_finds_what_the_int8_model_finds(
    detector: OnnxDetector, fp32_model: Path, images: dict[str, np.ndarray]
) -> None:
    full = OnnxDetector(fp32_model)

    for image in images.values():
        assert full.detect(image).count_by_label() == detector.detect(image).count_by_label()


def test_end_to_end_head_is_filtered_scaled_and_clipped(tmp_path: Path) -> None:
    rows = np.array(
        [
            [100, 180, 200, 280, 0.9, 2],  # image (100, 100, 200, 200): the letterbox pads 80 rows on top
            [-5, 60, 700, 600, 0.8, 0],  # spills out of the image: clipped
            [10, 90, 20, 100, 0.2, 1],  # under conf
            [300, 300, 400, 400, 0.5, 1],
        ],
        np.float32,
    )
    meta = {"names": "{0: 'a', 1: 'b', 2: 'c'}", "end2end": "True", "task": "detect", "stride": "32"}
    detector = OnnxDetector(constant_model(tmp_path / "e2e.onnx", rows[None], metadata=meta))
    image = np.zeros((480, 640, 3), np.uint8)

    dets = detector.detect(image)
    assert dets.labels == ["c", "a", "b"]
    np.testing.assert_allclose(dets.xyxy, [[100, 100, 200, 200], [0, 0, 640, 480], [300, 220, 400, 320]])
    np.testing.assert_allclose(dets.confidence, [0.9, 0.8, 0.5])
    assert detector.detect(image, DetectParams(classes=[1])).labels == ["b"]
    assert detector.detect(image, DetectParams(max_det=1)).labels == ["c"]
    assert len(detector.detect(image, DetectParams(conf=0.95))) == 0


def test_end_to_end_head_is_recognised_without_metadata(tmp_path: Path) -> None:
    rows = np.array([[100, 180, 200, 280, 0.9, 7]], np.float32)
    detector = OnnxDetector(constant_model(tmp_path / "e2e.onnx", rows[None]))

    dets = detector.detect(np.zeros((480, 640, 3), np.uint8))
    assert dets.labels == ["7"]
    np.testing.assert_allclose(dets.xyxy, [[100, 100, 200, 200]])


def test_dynamic_input_follows_imgsz(tmp_path: Path) -> None:
    rows = np.array([[0, 0, 160, 160, 0.9, 0]], np.float32)  # end-to-end head, model-input pixels
    detector = OnnxDetector(constant_model(tmp_path / "dyn.onnx", rows[None], input_shape=(1, 3, "h", "w")))
    image = np.zeros((640, 640, 3), np.uint8)

    assert detector.info.fixed_imgsz is None and detector.params.imgsz == 640
    np.testing.assert_allclose(detector.detect(image, DetectParams(imgsz=320)).xyxy, [[0, 0, 320, 320]])
    np.testing.assert_allclose(detector.detect(image, DetectParams(imgsz=640)).xyxy, [[0, 0, 160, 160]])


def test_yolov8_head_without_metadata_gets_numbered_classes_and_class_aware_nms(tmp_path: Path) -> None:
    # Columns are candidate boxes: (cx, cy, w, h, score of class 0, score of class 1).
    boxes = np.array(
        [
            [100, 100, 40, 40, 0.9, 0.0],
            [102, 100, 40, 40, 0.8, 0.0],  # same class, IoU ~0.9 with the first: suppressed
            [101, 100, 40, 40, 0.0, 0.7],  # other class: kept
            [400, 400, 40, 40, 0.1, 0.2],  # under conf
            [300, 300, 40, 40, 0.0, 0.6],
            [500, 500, 20, 20, 0.3, 0.0],
            [200, 500, 20, 20, 0.0, 0.0],
            [500, 200, 20, 20, 0.0, 0.0],
        ],
        np.float32,
    )
    detector = OnnxDetector(constant_model(tmp_path / "v8.onnx", boxes.T[None]))
    dets = detector.detect(np.zeros((640, 640, 3), np.uint8))

    assert detector.info.names == {0: "class0", 1: "class1"}
    np.testing.assert_allclose(dets.confidence, [0.9, 0.7, 0.6, 0.3])
    assert dets.class_id.tolist() == [0, 1, 1, 0]
    np.testing.assert_allclose(dets.xyxy[0], [80, 80, 120, 120])


# --- load errors ---


def test_missing_file_and_folder_are_model_load_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no such file"):
        OnnxDetector(tmp_path / "absent.onnx")
    with pytest.raises(ModelLoadError, match="a folder"):
        OnnxDetector(tmp_path)


def test_a_file_that_is_not_onnx_is_a_model_load_error(tmp_path: Path) -> None:
    fake = tmp_path / "fake.onnx"
    fake.write_text("not a model")

    with pytest.raises(ModelLoadError, match="cannot load it as an ONNX model"):
        OnnxDetector(fake)


@pytest.mark.parametrize(
    ("output", "meta", "message"),
    [
        pytest.param(
            np.zeros((1, 116, 8400)), {"task": "segment"}, "got a 'segment' model", id="segment-task"
        ),
        pytest.param(np.zeros((1, 10)), {}, "detection output", id="rank-2"),
        pytest.param(np.zeros((1, 8400, 85)), {}, "YOLOv5-style", id="yolov5-layout"),
        pytest.param(
            np.zeros((1, 116, 8400)), {"names": "{0: 'a', 1: 'b'}"}, "not a detection head", id="channels"
        ),
    ],
)
def test_a_model_that_is_not_a_detector_is_a_model_load_error(
    tmp_path: Path, output: np.ndarray, meta: dict[str, str], message: str
) -> None:
    with pytest.raises(ModelLoadError, match=message):
        OnnxDetector(constant_model(tmp_path / "m.onnx", output, metadata=meta))


def test_an_input_that_is_not_an_image_is_a_model_load_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="image input"):
        OnnxDetector(constant_model(tmp_path / "m.onnx", np.zeros((1, 6, 100)), input_shape=(1, 640)))


def test_bad_device_is_a_configuration_error(onnx_model: str) -> None:
    with pytest.raises(ConfigurationError) as unknown:
        OnnxDetector(onnx_model, device="tpu")
    assert unknown.value.field == "device"
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(ConfigurationError, match="CPUExecutionProvider") as missing:
            OnnxDetector(onnx_model, device="cuda:0")
        assert missing.value.field == "device"


def test_providers_follow_the_device() -> None:
    every = [
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
        "OpenVINOExecutionProvider",
        "CPUExecutionProvider",
    ]

    assert select_providers("CPU", every) == (["CPUExecutionProvider"], 0)
    assert select_providers("cuda", every)[0][0] == ("CUDAExecutionProvider", {"device_id": 0})
    assert [p if isinstance(p, str) else p[0] for p in select_providers("tensorrt:1", every)[0]] == every[
        :2
    ] + every[3:]
    assert select_providers("tensorrt:1", every)[1] == 1
    assert select_providers("openvino", every)[0] == ["OpenVINOExecutionProvider", "CPUExecutionProvider"]
    with pytest.raises(ConfigurationError, match="cuda:N"):
        select_providers("cuda:x", every)


def test_threads_are_checked_and_applied(detector: OnnxDetector, onnx_model: str, bus: np.ndarray) -> None:
    with pytest.raises(ConfigurationError) as info:
        OnnxDetector(onnx_model, threads=0)
    assert info.value.field == "threads"

    single = OnnxDetector(onnx_model, threads=1).detect(bus)
    np.testing.assert_allclose(single.xyxy, detector.detect(bus).xyxy, atol=1e-3)


def test_no_model_means_the_bundled_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MODEL_ENV_VAR, raising=False)

    assert OnnxDetector().info.model == str(bundled_model_path())


def test_importing_and_detecting_never_loads_torch(onnx_model: str, sample_images: dict[str, Path]) -> None:
    code = textwrap.dedent(
        f"""
        import sys
        import cv2
        from espdetect.detectors.onnx import OnnxDetector

        dets = OnnxDetector({onnx_model!r}).detect(cv2.imread({str(sample_images["bus"])!r}))
        assert len(dets) > 0
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "ultralytics")))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# --- shared pre/post-processing ---


@pytest.mark.parametrize("auto", [False, True])
@pytest.mark.parametrize("hw", [(1080, 810), (720, 1280), (481, 641), (3, 1000), (100, 100), (333, 517)])
def test_letterbox_and_tensor_match_ultralytics(hw: tuple[int, int], auto: bool) -> None:
    pytest.importorskip("ultralytics", reason=ULTRALYTICS_REASON)
    from ultralytics.data.augment import LetterBox

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (*hw, 3), dtype=np.uint8)
    expected = LetterBox((320, 320), auto=auto, stride=32)(image=image)
    assert isinstance(expected, np.ndarray)

    plan = _yolo.plan_letterbox(hw, (320, 320), auto=auto)
    np.testing.assert_array_equal(_yolo.letterbox(image, plan), expected)
    spec = _yolo.InputSpec(fixed_hw=None if auto else (320, 320), dtype=np.dtype(np.float32))
    tensor, _ = _yolo.preprocess(image, spec, 320)
    np.testing.assert_array_equal(
        tensor[0], expected[..., ::-1].transpose(2, 0, 1).astype(np.float32) / np.float32(255)
    )


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_resize_linear_is_opencvs_inter_linear_bit_for_bit(channels: int) -> None:
    # Random sizes both ways, edges included (1-pixel sides, exact halves, enlargements).
    rng = np.random.default_rng(channels)
    sizes = [((480, 640), (240, 320)), ((1200, 1600), (480, 640)), ((240, 320), (480, 640)), ((1, 5), (2, 8))]
    sizes += [(tuple(rng.integers(1, 400, 2)), tuple(rng.integers(1, 400, 2))) for _ in range(60)]
    for (h, w), (out_h, out_w) in sizes:
        image = rng.integers(0, 256, (int(h), int(w), channels), dtype=np.uint8)

        ours = _yolo.resize_linear(image, int(out_w), int(out_h))

        theirs = cv2.resize(image, (int(out_w), int(out_h)), interpolation=cv2.INTER_LINEAR)
        np.testing.assert_array_equal(
            ours, theirs.reshape(ours.shape), err_msg=f"{(h, w)} -> {(out_h, out_w)}"
        )


@pytest.mark.parametrize("auto", [False, True])
@pytest.mark.parametrize("hw", [(1080, 810), (720, 1280), (481, 641), (3, 1000), (240, 320)])
def test_letterbox_is_opencvs_resize_and_border(hw: tuple[int, int], auto: bool) -> None:
    image = np.random.default_rng(0).integers(0, 256, (*hw, 3), dtype=np.uint8)
    plan = _yolo.plan_letterbox(hw, (320, 320), auto=auto)
    resized = cv2.resize(image, plan.resized_hw[::-1], interpolation=cv2.INTER_LINEAR)
    pad = (plan.top, plan.bottom, plan.left, plan.right)

    expected = cv2.copyMakeBorder(resized, *pad, cv2.BORDER_CONSTANT, value=(_yolo.PAD_VALUE,) * 3)

    np.testing.assert_array_equal(_yolo.letterbox(image, plan), expected)


def test_preprocess_feeds_float16_to_a_float16_input() -> None:
    spec = _yolo.InputSpec(fixed_hw=(64, 64), dtype=np.dtype(np.float16))

    tensor, plan = _yolo.preprocess(np.zeros((32, 64, 3), np.uint8), spec, 64)

    assert tensor.dtype == np.float16 and tensor.shape == (1, 3, 64, 64)
    assert (plan.top, plan.bottom, plan.resized_hw) == (16, 16, (32, 64))


@pytest.mark.parametrize("seed", range(5))
def test_postprocess_matches_ultralytics_nms(seed: int) -> None:
    pytest.importorskip("ultralytics", reason=ULTRALYTICS_REASON)
    import torch
    from ultralytics.utils.nms import non_max_suppression

    rng = np.random.default_rng(seed)
    n, nc = 2000, 5
    pred = np.empty((1, 4 + nc, n), np.float32)
    pred[0, :2] = rng.uniform(60, 580, (2, n))
    pred[0, 2:4] = rng.uniform(10, 110, (2, n))
    pred[0, 4:] = rng.uniform(0, 1, (nc, n)) ** 4
    plan = _yolo.plan_letterbox((640, 640), (640, 640))
    head = _yolo.HeadSpec(end2end=False, num_classes=nc)
    for params in (
        DetectParams(conf=0.3, iou=0.45),
        DetectParams(conf=0.5, iou=0.7, max_det=20, classes=[1, 3]),
    ):
        xyxy, conf, cls = _yolo.postprocess(pred, head, plan, params)
        classes = None if params.classes is None else list(params.classes)
        (expected,) = non_max_suppression(
            torch.from_numpy(pred), params.conf, params.iou, classes, max_det=params.max_det
        )
        np.testing.assert_allclose(xyxy, expected[:, :4].numpy(), atol=1e-4)
        np.testing.assert_array_equal(conf, expected[:, 4].numpy())
        np.testing.assert_array_equal(cls, expected[:, 5].numpy().astype(np.int64))


def test_nms_keeps_separate_and_drops_overlapping_boxes() -> None:
    boxes = np.array(
        [[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30], [0, 0, 0, 0], [0, 0, 0, 0]], np.float32
    )
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5], np.float32)

    assert _yolo.nms(boxes, scores, 0.5).tolist() == [0, 2, 3, 4]
    assert _yolo.nms(boxes, scores, 0.9).tolist() == [0, 1, 2, 3, 4]
    assert _yolo.nms(boxes, scores, 0.5, limit=2).tolist() == [0, 2]
    assert _yolo.nms(boxes[:0], scores[:0], 0.5).tolist() == []


def test_metadata_is_parsed_and_bad_entries_ignored() -> None:
    meta = _yolo.parse_metadata(
        {
            "names": "{0: 'person', 1: 'bicycle'}",
            "stride": "32",
            "imgsz": "[480, 640]",
            "task": "detect",
            "end2end": "False",
            "args": "{'dynamic': True, 'nms': False}",
        }
    )
    assert meta == _yolo.ModelMetadata(
        names={0: "person", 1: "bicycle"},
        stride=32,
        imgsz=(480, 640),
        task="detect",
        end2end=False,
        dynamic=True,
    )
    assert _yolo.parse_metadata({"names": "{0: 'a'", "stride": "x"}) == _yolo.ModelMetadata()
    assert _yolo.parse_metadata({"names": ["a", "b"], "args": "{'nms': True}"}).end2end is True
    assert _yolo.parse_metadata({"names": {0: "a"}, "stride": 32}).names == {0: "a"}
