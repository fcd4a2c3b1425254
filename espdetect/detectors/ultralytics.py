"""`UltralyticsDetector`: YOLO detection through the Ultralytics runtime (.pt, .onnx, OpenVINO, .yaml).

Ultralytics is imported lazily (it takes seconds and pulls in torch), and never allowed to
``pip install`` anything at run time: ``YOLO_AUTOINSTALL`` defaults to ``False`` here, so a
missing optional package is reported instead of silently installed into a running server.
Only an explicit ``YOLO_AUTOINSTALL=True`` in the environment opts back in.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
from pathlib import Path
from types import ModuleType
from typing import Any, Final

import numpy as np
from typing_extensions import Unpack

from espdetect.detections import Detections, StageTimings
from espdetect.detectors.base import DetectKwargs, Detector, DetectParams, ModelInfo
from espdetect.detectors.models import resolve_model
from espdetect.exceptions import ConfigurationError, DetectorError, ModelLoadError

__all__ = ["UltralyticsDetector", "import_ultralytics"]

logger = logging.getLogger(__name__)

_AUTOINSTALL_ENV: Final = "YOLO_AUTOINSTALL"
_YAML_SUFFIXES: Final = (".yaml", ".yml")
_TRUTHY: Final = {"1", "true", "yes", "on", "y", "t"}

# Set before Ultralytics is first imported, which reads it into a module constant.
os.environ.setdefault(_AUTOINSTALL_ENV, "False")


def import_ultralytics(model: str) -> ModuleType:
    """Ultralytics, never allowed to ``pip install`` anything unless ``YOLO_AUTOINSTALL`` says so.

    Raises:
        ModelLoadError: Ultralytics is not installed (``model`` is named in the message).
    """
    try:
        import ultralytics
        from ultralytics.utils import checks
    except ImportError as exc:
        raise ModelLoadError(
            model,
            f"Ultralytics is not installed ({exc}); install it with pip install 'espdetect[ultralytics]'",
        ) from None

    # Ultralytics may have been imported before this module set the default, in which case its
    # constant still says "install"; make the library follow the environment either way.
    allowed = os.environ.get(_AUTOINSTALL_ENV, "False").strip().lower() in _TRUTHY
    setattr(checks, "AUTOINSTALL", allowed)  # noqa: B010  (not re-exported, so typed as private)
    setattr(ultralytics.utils, "AUTOINSTALL", allowed)  # noqa: B010
    return ultralytics


def _check_loadable(model: str) -> None:
    """Fail fast, without touching the network, for a model that cannot possibly load."""
    path = Path(model).expanduser()
    if path.exists() or path.suffix.lower() in _YAML_SUFFIXES:
        # Ultralytics resolves bare .yaml names (yolov8n.yaml) from its own config folder.
        return
    if model.lower().startswith(("http://", "https://")):
        return
    from ultralytics.utils import ONLINE, SETTINGS
    from ultralytics.utils.downloads import GITHUB_ASSETS_NAMES

    bare_name = path.name == model
    if bare_name and (Path(SETTINGS["weights_dir"]) / model).exists():
        return
    if bare_name and model in GITHUB_ASSETS_NAMES:
        if not ONLINE:
            raise ModelLoadError(
                model,
                "it is not on this machine and cannot be downloaded (no internet connection)",
            )
        return
    raise ModelLoadError(model, f"expected an existing file or folder, got no such path {str(path)!r}")


def _device_name(device: object) -> str:
    text = str(device)
    return "cuda:0" if text == "cuda" else text


def _resolve_device(device: str | None) -> str:
    import torch

    if device is None:
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    text = device.strip().lower()
    if text == "cpu":
        return "cpu"
    if text == "cuda" or (text.startswith("cuda:") and text[5:].isdigit()):
        if not torch.cuda.is_available():
            raise ConfigurationError(
                f"expected an available CUDA device, got device={device!r} but torch sees no CUDA GPU",
                field="device",
            )
        index = int(text[5:]) if ":" in text else 0
        if index >= torch.cuda.device_count():
            raise ConfigurationError(
                f"expected a CUDA device index below {torch.cuda.device_count()}, got device={device!r}",
                field="device",
            )
        return f"cuda:{index}"
    raise ConfigurationError(f"expected device 'cpu', 'cuda' or 'cuda:N', got {device!r}", field="device")


#: What Ultralytics' runtimes raise when one inference fails (torch, ONNX Runtime, OpenVINO).
_RUNTIME_ERRORS: Final = (RuntimeError, MemoryError)


class UltralyticsDetector(Detector):
    """A YOLO model run by Ultralytics, returning `Detections` in the input image's pixels.

    Needs ``pip install espdetect[ultralytics]``. The model is ``model``, else
    ``$ESPDETECT_MODEL``, else the bundled COCO model. Local ``.pt`` and ``.onnx`` files,
    OpenVINO export folders, ``.yaml`` architectures (an untrained network: right cost,
    meaningless boxes) and names Ultralytics downloads (``yolov8n.pt``, with internet) are
    accepted. The model is loaded and run once in the constructor, so a bad model fails here
    with `ModelLoadError` rather than on the first frame.

    **Input size.** ``imgsz=None`` means the model's own size: the fixed input of an exported
    model, 640 for a model with dynamic input. A size a fixed-input model cannot take is
    refused with `ConfigurationError` instead of being silently ignored as Ultralytics would.

    **Half precision** is applied only on CUDA and only when the backend supports it; otherwise
    a warning is logged and ``info.half`` is ``False``.

    **Threads.** Calls are serialised by a lock (the Ultralytics predictor is not re-entrant),
    so concurrent use is safe but not parallel.

    Example:
        >>> det = UltralyticsDetector("yolov8n.pt", conf=0.4)  # doctest: +SKIP
        >>> from espdetect.images import read_image  # doctest: +SKIP
        >>> det.detect(read_image("bus.jpg")).count_by_label()  # doctest: +SKIP
        {'person': 4, 'bus': 1}
        >>> det.update(conf=0.6, classes=[0])  # doctest: +SKIP
    """

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        half: bool = False,
        device: str | None = "cpu",
        **params: Unpack[DetectKwargs],
    ) -> None:
        name = resolve_model(model)
        requested = DetectParams(**params)
        # Ultralytics first: without it (the core install) the advice to install it beats a
        # torch ImportError from the device check.
        ultralytics = import_ultralytics(name)
        device_arg = _resolve_device(device)
        self._infer_lock = threading.Lock()
        _check_loadable(name)
        trained = Path(name).suffix.lower() not in _YAML_SUFFIXES
        if not trained:
            logger.warning(
                "model %r is an untrained architecture: its detections are meaningless, "
                "use it for speed measurements only",
                name,
            )
        half_arg = bool(half) and device_arg.startswith("cuda")
        if half and not half_arg:
            logger.warning(
                "half=True needs a CUDA device, got device=%r: running in full precision", device_arg
            )
        default_cfg: dict[str, Any] = importlib.import_module("ultralytics.cfg").DEFAULT_CFG_DICT
        # Newer Ultralytics replaced `half` by `quantize`; pass whichever this version knows.
        precision: dict[str, Any] = (
            {"quantize": 16 if half_arg else None} if "quantize" in default_cfg else {"half": half_arg}
        )
        self._fixed_args: dict[str, Any] = {"device": device_arg, "verbose": False, **precision}
        try:
            self._yolo: Any = ultralytics.YOLO(name, task="detect")
            # The first predict builds the backend (ONNX session, OpenVINO model...), which is
            # where a corrupt export fails, and reveals whether the input size is fixed. A model
            # with dynamic input runs it at the smallest size, so this costs next to nothing.
            probe = self._yolo.predict(np.zeros((32, 32, 3), np.uint8), imgsz=32, **self._fixed_args)
        except Exception as exc:  # any failure to build the backend, whatever its type, is a load error
            # Ultralytics raises TypeError, AssertionError, ValueError... for unusable files, and
            # appends multi-line advice; its first line states the problem.
            first_line = (str(exc).strip().splitlines() or [""])[0]
            raise ModelLoadError(name, f"{type(exc).__name__}: {first_line}") from exc
        if probe[0].boxes is None:
            raise ModelLoadError(name, f"expected a detection model, got a {self._yolo.task!r} model")
        self._info = self._describe(name, device_arg, half_arg, trained)
        if half_arg and not self._info.half:
            logger.warning("model %r cannot run in fp16 on this backend: running in full precision", name)
        self.params = self.check(requested)

    def _describe(self, name: str, device: str, half: bool, trained: bool) -> ModelInfo:
        backend = self._yolo.predictor.model
        fixed = getattr(backend, "imgsz", None)
        dynamic = bool(getattr(backend, "dynamic", False))
        return ModelInfo(
            model=name,
            names={int(k): str(v) for k, v in self._yolo.names.items()},
            backend="ultralytics",
            # The device the backend really runs on (an ONNX model may fall back to the CPU).
            device=_device_name(getattr(backend, "device", device)),
            fixed_imgsz=max(int(fixed[0]), int(fixed[1])) if fixed is not None and not dynamic else None,
            stride=max(32, int(getattr(backend, "stride", 32))),
            half=half and bool(getattr(backend, "fp16", False)),
            trained=trained,
        )

    @property
    def info(self) -> ModelInfo:
        return self._info

    def _detect(self, image: np.ndarray, params: DetectParams) -> Detections:
        args = {
            "conf": params.conf,
            "iou": params.iou,
            "max_det": params.max_det,
            "imgsz": params.imgsz,
            "classes": None if params.classes is None else list(params.classes),
            **self._fixed_args,
        }
        try:
            with self._infer_lock:
                result = self._yolo.predict(image, **args)[0]
        except _RUNTIME_ERRORS as exc:
            raise DetectorError(self._info.model, f"{type(exc).__name__}: {exc}") from exc
        boxes = result.boxes
        speed = result.speed
        return Detections(
            xyxy=boxes.xyxy.cpu().numpy(),
            confidence=boxes.conf.cpu().numpy(),
            class_id=boxes.cls.cpu().numpy().astype(np.int64),
            names=self._info.names,
            timings=StageTimings(
                float(speed.get("preprocess") or 0.0),
                float(speed.get("inference") or 0.0),
                float(speed.get("postprocess") or 0.0),
            ),
        )

    def __repr__(self) -> str:
        info, p = self._info, self.params
        return (
            f"UltralyticsDetector(model={info.model!r}, device={info.device!r}, imgsz={p.imgsz}, "
            f"conf={p.conf}, iou={p.iou}, half={info.half})"
        )
