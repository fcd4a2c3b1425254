"""`OnnxDetector`: YOLO detection on ONNX Runtime, without torch or Ultralytics.

Pre- and post-processing live in `espdetect.detectors._yolo` (numpy + OpenCV) and reproduce
what Ultralytics does for the same exported model, so the boxes match `UltralyticsDetector`'s
while the process stays free of PyTorch (hundreds of MB less memory, seconds less start-up).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state
from typing_extensions import Unpack

from espdetect.constraints import THREADS
from espdetect.detectors._yolo import InputSpec, ModelMetadata, NativeYoloDetector, parse_metadata
from espdetect.detectors.base import DetectKwargs, DetectParams, ModelInfo
from espdetect.detectors.models import resolve_model
from espdetect.exceptions import ConfigurationError, DetectorError, ModelLoadError

__all__ = ["OnnxDetector"]

logger = logging.getLogger(__name__)

#: What ONNX Runtime raises when a model cannot load or an inference fails.
_ORT_ERRORS: Final = (
    ort_state.Fail,
    ort_state.InvalidArgument,
    ort_state.NoSuchFile,
    ort_state.NoModel,
    ort_state.EngineError,
    ort_state.RuntimeException,
    ort_state.InvalidProtobuf,
    ort_state.ModelLoaded,
    ort_state.NotImplemented,
    ort_state.InvalidGraph,
    ort_state.EPFail,
    RuntimeError,
    MemoryError,
)

#: ONNX tensor type -> the numpy dtype fed to it.
_INPUT_DTYPES: Final[dict[str, np.dtype]] = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(float16)": np.dtype(np.float16),
}
_GPU_PROVIDERS: Final = ("TensorrtExecutionProvider", "CUDAExecutionProvider")

Provider = str | tuple[str, dict[str, Any]]


def _provider_name(provider: Provider) -> str:
    return provider if isinstance(provider, str) else provider[0]


def select_providers(device: str, available: Sequence[str]) -> tuple[list[Provider], int]:
    """ONNX Runtime execution providers for ``device``, best first, and the GPU index they use.

    ``"cpu"``; ``"cuda"``/``"cuda:N"`` (CUDA, CPU fallback); ``"tensorrt"``/``"tensorrt:N"``
    (TensorRT, CUDA and CPU fallbacks); ``"openvino"`` (OpenVINO EP, CPU fallback).

    Raises:
        ConfigurationError: an unknown device, or one whose provider this onnxruntime build
            lacks (``field="device"``; the message lists the providers it has).

    Example:
        >>> select_providers("cuda:1", ["CUDAExecutionProvider", "CPUExecutionProvider"])
        ([('CUDAExecutionProvider', {'device_id': 1}), 'CPUExecutionProvider'], 1)
    """
    text = device.strip().lower()
    kind, colon, index_text = text.partition(":")
    index = int(index_text) if index_text.isdigit() else 0
    cpu: Provider = "CPUExecutionProvider"
    wanted: list[Provider]
    if text == "cpu":
        wanted = [cpu]
    elif kind == "cuda" and (not colon or index_text.isdigit()):
        wanted = [("CUDAExecutionProvider", {"device_id": index}), cpu]
    elif kind == "tensorrt" and (not colon or index_text.isdigit()):
        wanted = [
            ("TensorrtExecutionProvider", {"device_id": index}),
            ("CUDAExecutionProvider", {"device_id": index}),
            cpu,
        ]
    elif text == "openvino":
        wanted = ["OpenVINOExecutionProvider", cpu]
    else:
        raise ConfigurationError(
            "expected device 'cpu', 'cuda', 'cuda:N', 'tensorrt', 'tensorrt:N' or 'openvino', "
            f"got {device!r}",
            field="device",
        )
    primary = _provider_name(wanted[0])
    if primary not in available:
        raise ConfigurationError(
            f"expected a device this onnxruntime build can run: device={device!r} needs {primary}, but the "
            f"available providers are {list(available)} (CUDA/TensorRT need onnxruntime-gpu, OpenVINO "
            "onnxruntime-openvino)",
            field="device",
        )
    return [p for p in wanted if _provider_name(p) in available], index


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0]


class OnnxDetector(NativeYoloDetector):
    """A YOLO ``.onnx`` export run by ONNX Runtime; never imports torch or Ultralytics.

    The model is ``model``, else ``$ESPDETECT_MODEL``, else the bundled COCO model. YOLOv8/YOLO11
    heads ``(1, 4 + nc, N)`` and end-to-end heads ``(1, K, 6)`` (YOLOv10/YOLO26) are decoded;
    class names, stride and task come from the Ultralytics metadata in the file. The model runs
    once in the constructor, so a file that is not a detection model fails here with
    `ModelLoadError` rather than on the first frame.

    **Input size.** A fixed-shape export takes only its own size (``imgsz=None`` picks it;
    another is refused with `ConfigurationError`); a dynamic one takes any multiple of the
    stride (default 640) and, like Ultralytics, gets the smallest stride-aligned rectangle.

    **Precision** comes from the file: an fp16 export is fed float16, fp32 and int8 (quantized
    inside, float input) exports float32.

    **Device** picks the execution providers (see `select_providers`); ``info.device`` says
    where inference really runs ("cpu" when ONNX Runtime fell back from CUDA).

    **Threads.** ``threads`` sets ONNX Runtime's intra-op threads (None: its default, one per
    physical core). ``session.run`` is thread-safe, so concurrent ``detect`` calls run in parallel.

    Example:
        >>> det = OnnxDetector("yolov8n.onnx", conf=0.4, threads=2)  # doctest: +SKIP
        >>> from espdetect.images import read_image  # doctest: +SKIP
        >>> det.detect(read_image("bus.jpg")).count_by_label()  # doctest: +SKIP
        {'person': 4, 'bus': 1}
    """

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        device: str = "cpu",
        threads: int | None = None,
        **params: Unpack[DetectKwargs],
    ) -> None:
        name = resolve_model(model)
        requested = DetectParams(**params)
        providers, gpu_index = select_providers(device, ort.get_available_providers())
        path = Path(name).expanduser()
        if not path.is_file():
            what = "a folder" if path.is_dir() else "no such file"
            raise ModelLoadError(name, f"expected an existing .onnx file, got {what} {str(path)!r}")
        self._name = name
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = THREADS.check("threads", threads)
        try:
            self._session: Any = ort.InferenceSession(str(path), options, providers=providers)
        except _ORT_ERRORS as exc:
            raise ModelLoadError(
                name,
                f"ONNX Runtime cannot load it as an ONNX model ({type(exc).__name__}: {_first_line(exc)})",
            ) from exc
        meta = parse_metadata(dict(self._session.get_modelmeta().custom_metadata_map))
        if meta.task is not None and meta.task != "detect":
            raise ModelLoadError(name, f"expected a detection model, got a {meta.task!r} model")
        self._input = self._input_spec(meta)
        self._input_name: str = self._session.get_inputs()[0].name
        self._output_names: list[str] = [self._session.get_outputs()[0].name]
        try:
            self._head = self.probe_head(meta)
        except (ValueError, DetectorError) as exc:
            raise ModelLoadError(name, str(exc)) from exc
        used = self._session.get_providers()[0]
        runs_on = f"cuda:{gpu_index}" if used in _GPU_PROVIDERS else "cpu"
        if _provider_name(providers[0]) != used:
            logger.warning(
                "model %r: %s could not start, running on %s", name, _provider_name(providers[0]), used
            )
        names = meta.names or {i: f"class{i}" for i in range(self._head.num_classes)}
        self._info = ModelInfo(
            model=name,
            names=names,
            backend="onnxruntime",
            device=runs_on,
            fixed_imgsz=self._input.fixed_imgsz,
            stride=self._input.stride,
            half=self._input.dtype == np.float16,
            trained=True,
        )
        logger.debug("loaded %r on ONNX Runtime %s (%s)", name, ort.__version__, used)
        self.params = self.check(requested)

    def _input_spec(self, meta: ModelMetadata) -> InputSpec:
        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            raise ModelLoadError(
                self._name, f"expected one image input, got {len(inputs)}: {[i.name for i in inputs]}"
            )
        shape = list(inputs[0].shape)
        dtype = _INPUT_DTYPES.get(inputs[0].type)
        if dtype is None:
            raise ModelLoadError(self._name, f"expected a float or float16 image input, got {inputs[0].type}")
        if len(shape) != 4 or (shape[1] not in (3, None) and not isinstance(shape[1], str)):
            raise ModelLoadError(
                self._name, f"expected a (1, 3, height, width) image input, got shape {shape}"
            )
        if isinstance(shape[0], int) and shape[0] != 1:
            raise ModelLoadError(
                self._name, f"expected batch size 1 or dynamic, got an input of shape {shape}"
            )
        h, w = shape[2], shape[3]
        fixed = isinstance(h, int) and isinstance(w, int)
        if not fixed and (isinstance(h, int) or isinstance(w, int)):
            raise ModelLoadError(
                self._name, f"expected height and width both fixed or both dynamic, got {shape}"
            )
        return InputSpec(fixed_hw=(h, w) if fixed else None, dtype=dtype, stride=meta.stride or 32)

    def _infer(self, tensor: np.ndarray) -> np.ndarray:
        try:
            output: np.ndarray = self._session.run(self._output_names, {self._input_name: tensor})[0]
        except _ORT_ERRORS as exc:
            raise DetectorError(self._name, f"{type(exc).__name__}: {_first_line(exc)}") from exc
        return output
