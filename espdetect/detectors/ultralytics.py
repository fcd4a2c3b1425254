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
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, Final

import numpy as np

from espdetect.detections import Detections, StageTimings
from espdetect.detectors.base import Detector
from espdetect.exceptions import ConfigurationError, ModelLoadError

__all__ = ["DEFAULT_MODEL", "MODEL_ENV_VAR", "UltralyticsDetector", "resolve_model"]

logger = logging.getLogger(__name__)

#: The model used when neither the argument nor the environment names one (downloaded by Ultralytics).
DEFAULT_MODEL: Final = "yolov8n.pt"
#: Environment variable naming the model when the caller passes none.
MODEL_ENV_VAR: Final = "ESPDETECT_MODEL"

_AUTOINSTALL_ENV: Final = "YOLO_AUTOINSTALL"
_DEFAULT_IMGSZ: Final = 640
_MAX_IMGSZ: Final = 4096
_YAML_SUFFIXES: Final = (".yaml", ".yml")
_TRUTHY: Final = {"1", "true", "yes", "on", "y", "t"}

# Set before Ultralytics is first imported, which reads it into a module constant.
os.environ.setdefault(_AUTOINSTALL_ENV, "False")


class _Unset:
    """Marks an `update` argument the caller did not pass (``None`` means "all classes")."""

    def __repr__(self) -> str:
        return "UNSET"


_UNSET: Final = _Unset()


def resolve_model(model: str | Path | None) -> str:
    """The model to load: ``model`` if given, else ``$ESPDETECT_MODEL``, else ``yolov8n.pt``.

    Example:
        >>> resolve_model("weights/best.onnx")
        'weights/best.onnx'
    """
    if model is not None and str(model).strip():
        return str(model).strip()
    env = os.environ.get(MODEL_ENV_VAR, "").strip()
    return env or DEFAULT_MODEL


def _import_ultralytics() -> ModuleType:
    import ultralytics
    from ultralytics.utils import checks

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


def _validate_unit(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= float(value) <= 1.0:
        raise ConfigurationError(f"{name} must be a number between 0 and 1, got {value!r}")
    return float(value)


def _validate_max_det(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"max_det must be a positive integer, got {value!r}")
    return value


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
                f"expected an available CUDA device, got device={device!r} but torch sees no CUDA GPU"
            )
        index = int(text[5:]) if ":" in text else 0
        if index >= torch.cuda.device_count():
            raise ConfigurationError(
                f"expected a CUDA device index below {torch.cuda.device_count()}, got device={device!r}"
            )
        return f"cuda:{index}"
    raise ConfigurationError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")


class UltralyticsDetector(Detector):
    """A YOLO model run by Ultralytics, returning `Detections` in the input image's pixels.

    The model is ``model``, else ``$ESPDETECT_MODEL``, else ``yolov8n.pt`` (which Ultralytics
    downloads on first use). Local ``.pt`` and ``.onnx`` files, OpenVINO export folders and
    ``.yaml`` architectures (an untrained network: right cost, meaningless boxes) are accepted.
    The model is loaded and run once in the constructor, so a bad model fails here with
    `ModelLoadError` rather than on the first frame.

    **Input size.** ``imgsz=None`` means the model's own size: the fixed input of an exported
    model (the shared ONNX file is fixed at 640), 640 for a model with dynamic input. An
    explicit ``imgsz`` different from a fixed input is refused with `ConfigurationError`
    instead of being silently ignored as Ultralytics would. ``detector.imgsz`` says what is used.

    **Half precision** is applied only on CUDA and only when the backend supports it; otherwise
    a warning is logged and ``half_applied`` is ``False``.

    **Threads.** ``detect`` is meant to be called from one worker thread at a time; calls are
    serialised by a lock, so concurrent use is safe but not parallel. ``update`` may be called
    from any thread (it never waits for a running inference); the new settings apply from the
    next ``detect``.

    Example:
        >>> det = UltralyticsDetector("yolov8n_int8.onnx", conf=0.4)  # doctest: +SKIP
        >>> det.detect(cv2.imread("bus.jpg")).count_by_label()  # doctest: +SKIP
        {'person': 4, 'bus': 1}
        >>> det.update(conf=0.6, classes=[0])  # doctest: +SKIP
    """

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        conf: float = 0.25,
        iou: float = 0.45,
        max_det: int = 100,
        imgsz: int | None = None,
        half: bool = False,
        device: str | None = "cpu",
        classes: Sequence[int] | None = None,
    ) -> None:
        self.model = resolve_model(model)
        self.conf = _validate_unit("conf", conf)
        self.iou = _validate_unit("iou", iou)
        self.max_det = _validate_max_det(max_det)
        if imgsz is not None and (
            isinstance(imgsz, bool) or not isinstance(imgsz, int) or not 32 <= imgsz <= _MAX_IMGSZ
        ):
            raise ConfigurationError(f"imgsz must be an integer between 32 and {_MAX_IMGSZ}, got {imgsz!r}")
        self.half_requested = bool(half)
        self._device_requested = _resolve_device(device)
        # Settings are swapped under a short lock so `update` (from the event loop) never waits
        # for an inference; the inference lock serialises the Ultralytics predictor itself.
        self._settings_lock = threading.Lock()
        self._infer_lock = threading.Lock()

        ultralytics = _import_ultralytics()
        _check_loadable(self.model)
        #: Whether the weights are trained (a ``.yaml`` architecture is randomly initialised).
        self.trained = Path(self.model).suffix.lower() not in _YAML_SUFFIXES
        if not self.trained:
            logger.warning(
                "model %r is an untrained architecture: its detections are meaningless, "
                "use it for speed measurements only",
                self.model,
            )
        self._half_arg = self.half_requested and self._device_requested.startswith("cuda")
        if self.half_requested and not self._half_arg:
            logger.warning(
                "half=True needs a CUDA device, got device=%r: running in full precision",
                self._device_requested,
            )

        default_cfg: dict[str, Any] = importlib.import_module("ultralytics.cfg").DEFAULT_CFG_DICT
        # Newer Ultralytics replaced `half` by `quantize`; pass whichever this version knows.
        self._precision_arg: dict[str, Any] = (
            {"quantize": 16 if self._half_arg else None}
            if "quantize" in default_cfg
            else {"half": self._half_arg}
        )
        try:
            self._yolo: Any = ultralytics.YOLO(self.model, task="detect")
            # The first predict builds the backend (ONNX session, OpenVINO model...), which is
            # where a corrupt export fails, and reveals whether the input size is fixed. A model
            # with dynamic input runs it at the smallest size, so this costs next to nothing.
            probe = self._yolo.predict(np.zeros((32, 32, 3), np.uint8), **self._predict_args(32, None))
        except Exception as exc:
            # Ultralytics appends multi-line advice; its first line states the problem.
            first_line = (str(exc).strip().splitlines() or [""])[0]
            raise ModelLoadError(self.model, f"{type(exc).__name__}: {first_line}") from exc

        if probe[0].boxes is None:
            raise ModelLoadError(self.model, f"expected a detection model, got a {self._yolo.task!r} model")
        backend = self._yolo.predictor.model
        #: The device the backend really runs on (an ONNX model may fall back to the CPU).
        self.device: str = _device_name(getattr(backend, "device", self._device_requested))
        #: Whether inference really runs in fp16.
        self.half_applied: bool = self._half_arg and bool(getattr(backend, "fp16", False))
        if self._half_arg and not self.half_applied:
            logger.warning(
                "model %r cannot run in fp16 on this backend: running in full precision", self.model
            )
        self.stride = max(32, int(getattr(backend, "stride", 32)))
        fixed = getattr(backend, "imgsz", None)
        #: (height, width) of a model with a fixed input size, None when the input is dynamic.
        self.fixed_imgsz: tuple[int, int] | None = (
            (int(fixed[0]), int(fixed[1]))
            if fixed is not None and not getattr(backend, "dynamic", False)
            else None
        )
        self.names: dict[int, str] = {int(k): str(v) for k, v in self._yolo.names.items()}
        self.imgsz: int = self._validate_imgsz(imgsz if imgsz is not None else self._native_imgsz)
        self.classes: list[int] | None = self._validate_classes(classes)

    @property
    def _native_imgsz(self) -> int:
        return max(self.fixed_imgsz) if self.fixed_imgsz is not None else _DEFAULT_IMGSZ

    def _validate_imgsz(self, value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigurationError(f"imgsz must be an integer, got {value!r}")
        if self.fixed_imgsz is not None:
            if value != self._native_imgsz:
                raise ConfigurationError(
                    f"model {self.model!r} has a fixed input size of {self._native_imgsz}, "
                    f"got imgsz={value}; use a .pt or .yaml model (or an export with dynamic input) "
                    "for other sizes"
                )
            return value
        if not self.stride <= value <= _MAX_IMGSZ or value % self.stride:
            raise ConfigurationError(
                f"imgsz must be a multiple of {self.stride} between {self.stride} and {_MAX_IMGSZ}, "
                f"got {value}"
            )
        return value

    def _validate_classes(self, value: object) -> list[int] | None:
        if value is None:
            return None
        if isinstance(value, str | bytes) or not isinstance(value, Sequence):
            raise ConfigurationError(f"classes must be a sequence of class ids or None, got {value!r}")
        if not value:
            raise ConfigurationError("classes must name at least one class id (or be None for all), got []")
        out: list[int] = []
        for c in value:
            if isinstance(c, bool) or not isinstance(c, int | np.integer) or int(c) not in self.names:
                raise ConfigurationError(
                    f"classes must be ids between 0 and {len(self.names) - 1}, got {c!r} in {list(value)!r}"
                )
            out.append(int(c))
        return out

    def _predict_args(self, imgsz: int, classes: list[int] | None) -> dict[str, Any]:
        return {
            "conf": self.conf,
            "iou": self.iou,
            "max_det": self.max_det,
            "imgsz": imgsz,
            "classes": classes,
            "device": self._device_requested,
            "verbose": False,
            **self._precision_arg,
        }

    def update(
        self,
        *,
        conf: float | None = None,
        iou: float | None = None,
        max_det: int | None = None,
        imgsz: int | _Unset | None = _UNSET,
        classes: Sequence[int] | _Unset | None = _UNSET,
    ) -> None:
        """Change detection settings; every value is checked before any is applied.

        Leave an argument out to keep its value. As in the constructor, ``imgsz=None`` means
        the model's own input size and ``classes=None`` means all classes.

        Raises:
            ConfigurationError: a value is out of range (nothing is changed then).

        Example:
            >>> detector.update(conf=0.5, classes=[0, 2])  # doctest: +SKIP
        """
        new_conf = self.conf if conf is None else _validate_unit("conf", conf)
        new_iou = self.iou if iou is None else _validate_unit("iou", iou)
        new_max_det = self.max_det if max_det is None else _validate_max_det(max_det)
        if isinstance(imgsz, _Unset):
            new_imgsz = self.imgsz
        else:
            new_imgsz = self._validate_imgsz(self._native_imgsz if imgsz is None else imgsz)
        new_classes = self.classes if isinstance(classes, _Unset) else self._validate_classes(classes)
        with self._settings_lock:
            self.conf, self.iou, self.max_det = new_conf, new_iou, new_max_det
            self.imgsz, self.classes = new_imgsz, new_classes

    def settings(self) -> dict[str, Any]:
        """The current settings, JSON-serialisable (for a server's GET/PATCH)."""
        with self._settings_lock:
            return {
                "model": self.model,
                "conf": self.conf,
                "iou": self.iou,
                "max_det": self.max_det,
                "imgsz": self.imgsz,
                "classes": None if self.classes is None else list(self.classes),
                "device": self.device,
                "half": self.half_applied,
                "fixed_imgsz": self.fixed_imgsz is not None,
                "trained": self.trained,
            }

    def detect(self, image: np.ndarray) -> Detections:
        """Detect objects in a BGR image; boxes are in ``image``'s pixels.

        Raises:
            ValueError: ``image`` is not an (H, W, 3) uint8 array.

        Example:
            >>> dets = detector.detect(np.zeros((480, 640, 3), np.uint8))  # doctest: +SKIP
            >>> dets.timings.inference_ms  # doctest: +SKIP
            131.2
        """
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3:
            got = (
                f"{image.dtype} array of shape {image.shape}"
                if isinstance(image, np.ndarray)
                else type(image)
            )
            raise ValueError(f"expected an (H, W, 3) uint8 BGR image, got {got}")
        if image.shape[2] != 3 or image.shape[0] == 0 or image.shape[1] == 0:
            raise ValueError(f"expected an (H, W, 3) uint8 BGR image, got shape {image.shape}")
        with self._settings_lock:
            args = self._predict_args(self.imgsz, self.classes)
        with self._infer_lock:
            result = self._yolo.predict(image, **args)[0]
        boxes = result.boxes
        speed = result.speed
        return Detections(
            xyxy=boxes.xyxy.cpu().numpy(),
            confidence=boxes.conf.cpu().numpy(),
            class_id=boxes.cls.cpu().numpy().astype(np.int64),
            names=self.names,
            timings=StageTimings(
                float(speed.get("preprocess") or 0.0),
                float(speed.get("inference") or 0.0),
                float(speed.get("postprocess") or 0.0),
            ),
        )

    def warmup(self, n: int = 1) -> None:
        """Run ``n`` detections on a blank frame so later calls see steady-state timings."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        blank = np.full((self.imgsz * 3 // 4, self.imgsz, 3), 114, np.uint8)
        for _ in range(n):
            self.detect(blank)

    def __repr__(self) -> str:
        return (
            f"UltralyticsDetector(model={self.model!r}, device={self.device!r}, imgsz={self.imgsz}, "
            f"conf={self.conf}, iou={self.iou}, half_applied={self.half_applied})"
        )
