"""`OpenVinoDetector`: YOLO detection on Intel OpenVINO, without torch or Ultralytics.

Reads OpenVINO IR (``model.xml`` + ``.bin``, or an Ultralytics ``*_openvino_model/`` folder)
and ``.onnx`` files, and shares pre/post-processing with `OnnxDetector`
(`espdetect.detectors._yolo`). OpenVINO is optional: ``pip install 'espdetect[openvino]'``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, Final

import numpy as np
from typing_extensions import Unpack

from espdetect.constraints import THREADS
from espdetect.detectors._yolo import InputSpec, ModelMetadata, NativeYoloDetector, parse_metadata
from espdetect.detectors.base import DetectKwargs, DetectParams, ModelInfo
from espdetect.detectors.models import resolve_model
from espdetect.exceptions import ConfigurationError, DetectorError, ModelLoadError

__all__ = ["OpenVinoDetector"]

logger = logging.getLogger(__name__)

#: Files OpenVINO reads here: its own IR and ONNX.
_SUFFIXES: Final = (".xml", ".onnx")
#: Devices that schedule onto others rather than appearing in ``Core.available_devices``.
_VIRTUAL_DEVICES: Final = ("AUTO", "MULTI", "HETERO", "BATCH")
#: Devices whose inference precision can be pinned to f32.
_PRECISION_DEVICES: Final = ("CPU", "GPU")
#: What OpenVINO raises for a model it cannot read or compile, or an inference that fails.
_OV_ERRORS: Final = (RuntimeError, MemoryError, OSError)


def _import_openvino(model: str) -> tuple[ModuleType, ModuleType, ModuleType]:
    try:
        import openvino as ov  # type: ignore[import-untyped, import-not-found, unused-ignore]
        import openvino.properties as props  # type: ignore[import-untyped, import-not-found, unused-ignore]
        import openvino.properties.hint as hints  # type: ignore[import-untyped, import-not-found, unused-ignore]
    except ImportError as exc:
        raise ModelLoadError(
            model, f"OpenVINO is not installed ({exc}); install it with pip install 'espdetect[openvino]'"
        ) from None
    return ov, props, hints


def _model_file(name: str) -> Path:
    """The .xml or .onnx file ``name`` designates (a folder holds exactly one .xml)."""
    path = Path(name).expanduser()
    if path.is_dir():
        xmls = sorted(path.glob("*.xml"))
        if len(xmls) != 1:
            raise ModelLoadError(
                name, f"expected a folder holding one OpenVINO .xml model, found {len(xmls)} in {str(path)!r}"
            )
        return xmls[0]
    if not path.is_file():
        raise ModelLoadError(
            name, f"expected an existing .xml, .onnx file or OpenVINO folder, got no such path {name!r}"
        )
    if path.suffix.lower() not in _SUFFIXES:
        raise ModelLoadError(
            name, f"expected an OpenVINO .xml or an .onnx file, got a {path.suffix or 'suffix-less'} file"
        )
    return path


def check_device(device: str, available: Sequence[str]) -> str:
    """``device`` in OpenVINO's spelling ("CPU", "GPU.1", "AUTO:GPU,CPU") if this machine has it.

    Raises:
        ConfigurationError: a device OpenVINO does not see (``field="device"``).

    Example:
        >>> check_device("cpu", ["CPU", "GPU.0"])
        'CPU'
    """
    text = device.strip().upper()
    base = text.partition(":")[0]
    if base in _VIRTUAL_DEVICES:
        return text
    known = set(available) | {d.partition(".")[0] for d in available}
    if text not in known:
        raise ConfigurationError(
            f"expected an OpenVINO device this machine has ({', '.join(available) or 'none'}, or AUTO), "
            f"got {device!r}",
            field="device",
        )
    return text


def _read_sidecar(path: Path) -> dict[str, object]:
    """Ultralytics' ``metadata.yaml`` beside an IR file, or {} (absent, unreadable, no PyYAML)."""
    sidecar = path.parent / "metadata.yaml"
    if not sidecar.is_file():
        return {}
    try:
        import yaml  # type: ignore[import-untyped, unused-ignore]
    except ImportError:
        logger.warning("cannot read %s without PyYAML (pip install pyyaml): class names unknown", sidecar)
        return {}
    try:
        loaded = yaml.safe_load(sidecar.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        logger.warning("ignoring %s: %s", sidecar, exc)
        return {}
    return {str(k): v for k, v in loaded.items()} if isinstance(loaded, Mapping) else {}


def _metadata(ov_model: Any, path: Path) -> ModelMetadata:
    # ONNX metadata_props land in rt_info["framework"], also in IR converted from ONNX;
    # Ultralytics' own IR exports keep theirs in a metadata.yaml beside the .xml.
    raw: dict[str, object] = {}
    if ov_model.has_rt_info(["framework"]):
        framework = ov_model.get_rt_info(["framework"]).value
        if isinstance(framework, Mapping):
            raw = {str(k): str(v) for k, v in framework.items()}
    if not raw:
        raw = _read_sidecar(path)
    return parse_metadata(raw)


class _Requests(threading.local):
    """One infer request per thread: a request runs one inference at a time."""

    def __init__(self, compiled: Any) -> None:
        self.request: Any = compiled.create_infer_request()


def _compile_config(
    ov: ModuleType, props: ModuleType, hints: ModuleType, device: str, threads: int | None, half: bool
) -> dict[Any, Any]:
    """OpenVINO compile properties: the latency hint, the CPU threads, fp32 unless ``half``."""
    base_device = device.partition(".")[0]
    config: dict[Any, Any] = {hints.performance_mode: hints.PerformanceMode.LATENCY}
    if threads is not None:
        if base_device == "CPU":
            config[props.inference_num_threads] = threads
        else:
            logger.warning("threads=%d only applies to the CPU device, ignored on %s", threads, device)
    if not half and base_device in _PRECISION_DEVICES:
        config[hints.inference_precision] = ov.Type.f32
    return config


class OpenVinoDetector(NativeYoloDetector):
    """A YOLO model run by OpenVINO: IR (``.xml`` or an Ultralytics ``*_openvino_model/``) or ``.onnx``.

    Needs ``pip install 'espdetect[openvino]'``; without it the constructor raises
    `ModelLoadError`. The model is ``model``, else ``$ESPDETECT_MODEL``, else the bundled COCO
    model. Heads, input sizes and metadata are handled as in `OnnxDetector`, and the model runs
    once in the constructor so a bad model fails here.

    **Device** is an OpenVINO device: "CPU" (default), "GPU", "GPU.1", "NPU", "AUTO"...
    It is compiled with the LATENCY performance hint (one stream: the fastest single frame).
    ``threads`` caps the CPU plugin's inference threads (None: OpenVINO's choice).

    **Precision.** By default inference runs in fp32 on CPU and GPU, as ONNX Runtime does, so
    boxes match `OnnxDetector`'s; ``half=True`` lets OpenVINO use its faster default (bf16 on
    CPUs with AVX512-BF16/AMX, fp16 on GPUs), at some accuracy cost. ``info.half`` says which.

    **Threads.** Each calling thread gets its own infer request, so concurrent ``detect`` calls
    are safe (with LATENCY they share one stream, so they mostly queue).

    Example:
        >>> det = OpenVinoDetector("yolov8n_openvino_model/", conf=0.4)  # doctest: +SKIP
        >>> from espdetect.images import read_image  # doctest: +SKIP
        >>> det.detect(read_image("bus.jpg")).count_by_label()  # doctest: +SKIP
        {'person': 4, 'bus': 1}
    """

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        device: str = "CPU",
        threads: int | None = None,
        half: bool = False,
        **params: Unpack[DetectKwargs],
    ) -> None:
        name = resolve_model(model)
        requested = DetectParams(**params)
        if threads is not None:
            THREADS.check("threads", threads)
        ov, props, hints = _import_openvino(name)
        self._name = name
        path = _model_file(name)
        core = ov.Core()
        device_name = check_device(device, core.available_devices)
        try:
            ov_model = core.read_model(str(path))
        except _OV_ERRORS as exc:
            raise ModelLoadError(
                name, f"OpenVINO cannot read it ({type(exc).__name__}: {_last_line(exc)})"
            ) from exc
        meta = _metadata(ov_model, path)
        if meta.task is not None and meta.task != "detect":
            raise ModelLoadError(name, f"expected a detection model, got a {meta.task!r} model")
        self._input = self._input_spec(ov, ov_model, meta)
        base_device = device_name.partition(".")[0]
        config = _compile_config(ov, props, hints, device_name, threads, half)
        try:
            self._compiled: Any = core.compile_model(ov_model, device_name, config)
        except _OV_ERRORS as exc:
            raise ModelLoadError(
                name,
                f"OpenVINO cannot compile it for {device_name} ({type(exc).__name__}: {_last_line(exc)})",
            ) from exc
        self._requests = _Requests(self._compiled)
        try:
            self._head = self.probe_head(meta)
        except (ValueError, DetectorError) as exc:
            raise ModelLoadError(name, str(exc)) from exc
        names = meta.names or {i: f"class{i}" for i in range(self._head.num_classes)}
        self._info = ModelInfo(
            model=name,
            names=names,
            backend="openvino",
            device="cpu" if base_device == "CPU" else device_name.lower(),
            fixed_imgsz=self._input.fixed_imgsz,
            stride=self._input.stride,
            half=self._runs_half(ov, hints, half),
            trained=True,
        )
        logger.debug("loaded %r on OpenVINO %s (%s)", name, ov.get_version(), device_name)
        self.params = self.check(requested)

    def _input_spec(self, ov: ModuleType, ov_model: Any, meta: ModelMetadata) -> InputSpec:
        inputs = ov_model.inputs
        if len(inputs) != 1:
            raise ModelLoadError(self._name, f"expected one image input, got {len(inputs)}")
        shape = inputs[0].get_partial_shape()
        dims = [d.get_length() if d.is_static else None for d in shape] if shape.rank.is_static else []
        if len(dims) != 4 or dims[1] not in (3, None) or dims[0] not in (1, None):
            raise ModelLoadError(
                self._name, f"expected a (1, 3, height, width) image input, got shape {shape}"
            )
        element = inputs[0].get_element_type()
        if element not in (ov.Type.f32, ov.Type.f16):
            raise ModelLoadError(self._name, f"expected an f32 or f16 image input, got {element}")
        h, w = dims[2], dims[3]
        if (h is None) != (w is None):
            raise ModelLoadError(
                self._name, f"expected height and width both fixed or both dynamic, got {shape}"
            )
        fixed = None if h is None or w is None else (int(h), int(w))
        return InputSpec(fixed_hw=fixed, dtype=np.dtype(element.to_dtype()), stride=meta.stride or 32)

    def _runs_half(self, ov: ModuleType, hints: ModuleType, half: bool) -> bool:
        try:
            precision = self._compiled.get_property(hints.inference_precision)
        except _OV_ERRORS:
            # Virtual devices (AUTO...) may not report it; say what was asked for.
            return half
        return bool(precision in (ov.Type.f16, ov.Type.bf16))

    def _infer(self, tensor: np.ndarray) -> np.ndarray:
        request = self._requests.request
        try:
            request.infer({0: tensor}, share_inputs=True)
        except _OV_ERRORS as exc:
            raise DetectorError(self._name, f"{type(exc).__name__}: {_last_line(exc)}") from exc
        # A view of the request's buffer: valid until this thread's next inference, which comes
        # after postprocessing has copied out what it keeps.
        output: np.ndarray = request.get_output_tensor(0).data
        return output


def _last_line(exc: BaseException) -> str:
    # OpenVINO prefixes its messages with a stack of "Exception from file:line" lines.
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""
