"""`Detector`: turns an image into `Detections`; `DetectParams` and `ModelInfo` say how and with what.

A detector is the loaded model (expensive: weights, a runtime session) plus default
`DetectParams` (cheap: thresholds, class filter, input size). Callers may pass their own
params with each call, which is how one loaded model serves several cameras with different
thresholds: ``detector.detect(image, camera_params)``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Final, TypedDict

import numpy as np
from typing_extensions import Unpack

from espdetect.constraints import IMGSZ, MAX_DET, UNIT, Reduce, check_bgr_image, check_class_ids
from espdetect.detections import Detections
from espdetect.detectors.remote import RemoteState
from espdetect.exceptions import ConfigurationError, DetectorError, EspdetectError
from espdetect.frame import decode_jpeg, jpeg_size

__all__ = ["DetectKwargs", "DetectParams", "Detector", "ModelInfo", "RemoteState"]

#: Input size of a model that takes any size and says nothing about its own.
DEFAULT_IMGSZ: Final = 640


@dataclass(frozen=True)
class DetectParams:
    """How one detection call filters what the model finds.

    ``imgsz=None`` means the model's own input size; `Detector.check` resolves it.
    ``classes=None`` means every class.

    Example:
        >>> DetectParams(conf=0.4, classes=[2, 0]).classes
        (0, 2)
    """

    #: Minimum confidence of a kept box.
    conf: float = 0.25
    #: IoU above which NMS drops the weaker of two boxes of the same class.
    iou: float = 0.45
    #: Most boxes kept per image.
    max_det: int = 100
    #: Model input size in pixels (the long side after letterboxing); None: the model's own.
    imgsz: int | None = None
    #: Class ids to keep (stored sorted, as a tuple); None: all.
    classes: Sequence[int] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "conf", UNIT.check("conf", self.conf))
        object.__setattr__(self, "iou", UNIT.check("iou", self.iou))
        object.__setattr__(self, "max_det", MAX_DET.check("max_det", self.max_det))
        if self.imgsz is not None:
            object.__setattr__(self, "imgsz", IMGSZ.check("imgsz", self.imgsz))
        object.__setattr__(self, "classes", check_class_ids(self.classes))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values."""
        return {**asdict(self), "classes": None if self.classes is None else list(self.classes)}


class DetectKwargs(TypedDict, total=False):
    """`DetectParams` fields as keyword arguments (detector constructors, `open_detector`).

    Example:
        >>> DetectParams(**DetectKwargs(conf=0.5)).conf
        0.5
    """

    conf: float
    iou: float
    max_det: int
    imgsz: int | None
    classes: Sequence[int] | None


@dataclass(frozen=True)
class ModelInfo:
    """What a loaded model is and can do.

    Example:
        >>> ModelInfo("m.onnx", {0: "person"}, backend="onnxruntime", fixed_imgsz=640).default_imgsz
        640
    """

    #: The file or name it was loaded from.
    model: str
    #: Class id -> label.
    names: Mapping[int, str] = field(hash=False, repr=False)
    #: What runs it: "ultralytics", "onnxruntime", "openvino", or a test's own name.
    backend: str = "unknown"
    #: Where inference really runs ("cpu", "cuda:0"; an ONNX model may fall back to the CPU).
    device: str = "cpu"
    #: The only input size a fixed-shape export takes (its long side); None when any size works.
    fixed_imgsz: int | None = None
    #: Input sizes must be multiples of this.
    stride: int = 32
    #: Whether inference really runs in fp16 (an fp16 ONNX export does, even on a CPU).
    half: bool = False
    #: False for a randomly initialised architecture (.yaml): right cost, meaningless boxes.
    trained: bool = True
    #: True when the model runs in other processes or machines (`espdetect.ray.RayDetector`): the
    #: caller's CPU is free while a call waits, so several calls may be in flight at once.
    remote: bool = False

    @property
    def default_imgsz(self) -> int:
        """The input size used when none is asked for."""
        return self.fixed_imgsz if self.fixed_imgsz is not None else DEFAULT_IMGSZ

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values, with the number of classes instead of their names (see ``names``)."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "names"}
        return {**values, "classes": len(self.names)}


class Detector(ABC):
    """Finds objects in a BGR image. ``detect`` blocks; run it off the event loop.

    Implementations provide `info` and `_detect`, which receives a checked image and params
    resolved for the model (``imgsz`` set); they fill ``Detections.timings``. Calls from
    several threads at once must be safe (serialised is fine). ``params`` is replaced as a
    whole, never mutated, so reading it from any thread is safe.

    Example:
        >>> detector = OnnxDetector("yolov8n.onnx")  # doctest: +SKIP
        >>> detector.detect(image).count_by_label()  # the detector's own params  # doctest: +SKIP
        {'person': 4, 'bus': 1}
        >>> detector.detect(image, DetectParams(conf=0.8, classes=[0]))  # this call's  # doctest: +SKIP
    """

    #: The params ``detect`` uses when the caller passes none (resolved for the model).
    params: DetectParams
    _last_checked: tuple[DetectParams, DetectParams] | None = None

    @property
    @abstractmethod
    def info(self) -> ModelInfo:
        """The loaded model's capabilities."""

    @abstractmethod
    def _detect(self, image: np.ndarray, params: DetectParams) -> Detections:
        """Run the model on a checked image with params resolved by `check`."""

    @property
    def names(self) -> Mapping[int, str]:
        """Class id -> label of the model."""
        return self.info.names

    def check(self, params: DetectParams) -> DetectParams:
        """``params`` resolved for this model: ``imgsz`` set, class ids and size checked.

        Raises:
            ConfigurationError: a class id the model does not have, or an input size the model
                cannot take (``field`` says which).
        """
        info = self.info
        imgsz = info.default_imgsz if params.imgsz is None else params.imgsz
        if info.fixed_imgsz is not None and imgsz != info.fixed_imgsz:
            raise ConfigurationError(
                f"expected imgsz {info.fixed_imgsz}: model {info.model!r} was exported with a fixed input "
                f"size, got {imgsz}; use a model with dynamic input for other sizes",
                field="imgsz",
            )
        if imgsz % info.stride:
            raise ConfigurationError(
                f"expected imgsz to be a multiple of this model's stride {info.stride}, got {imgsz}",
                field="imgsz",
            )
        if params.classes is not None and info.names:
            bad = [c for c in params.classes if c not in info.names]
            if bad:
                raise ConfigurationError(
                    f"expected class ids between 0 and {len(info.names) - 1} for this model, got {bad}",
                    field="classes",
                )
        return params if imgsz == params.imgsz else replace(params, imgsz=imgsz)

    def update(self, **changes: Unpack[DetectKwargs]) -> DetectParams:
        """Change the default params; every value is checked before any is applied.

        Leave an argument out to keep its value; ``imgsz=None`` is the model's own size and
        ``classes=None`` all classes.

        Raises:
            ConfigurationError: a value out of range (nothing is changed then).

        Example:
            >>> detector.update(conf=0.5, classes=[0, 2])  # doctest: +SKIP
        """
        self.params = self.check(replace(self.params, **changes))
        return self.params

    def resolve(self, params: DetectParams | None) -> DetectParams:
        """``params`` checked for this model (`check`), or the detector's own when None."""
        if params is None:
            return self.params
        # FrameProcessor passes the same checked params every frame: check each object once.
        last = self._last_checked
        resolved = last[1] if last is not None and last[0] is params else self.check(params)
        self._last_checked = (params, resolved)
        return resolved

    def detect(self, image: np.ndarray, params: DetectParams | None = None) -> Detections:
        """Detect objects in ``image`` (H, W, 3 BGR uint8); boxes in that image's pixels.

        Raises:
            ValueError: ``image`` is not a non-empty (H, W, 3) uint8 array.
            ConfigurationError: ``params`` do not fit the model (see `check`).
            DetectorError: the runtime failed on this image.
        """
        resolved = self.resolve(params)
        checked = check_bgr_image(image)
        try:
            return self._detect(checked, resolved)
        except EspdetectError:
            raise
        except Exception as exc:  # a backend's runtime raises its own types: this image failed, not the model
            raise DetectorError(self.info.model, f"{type(exc).__name__}: {exc}") from exc

    def detect_jpeg(self, jpeg: bytes, params: DetectParams | None = None, reduce: Reduce = 1) -> Detections:
        """Detect objects in a JPEG, decoded at 1/``reduce`` scale; boxes in the JPEG's full-size pixels.

        A local detector decodes here and calls `detect`; a remote one (``info.remote``) sends
        the bytes, a tenth of the decoded image, and the replica decodes them.

        Raises:
            DecodeError: the bytes are not a complete JPEG.
            ConfigurationError, DetectorError: as `detect`.

        Example:
            >>> detector.detect_jpeg(open("bus.jpg", "rb").read(), reduce=2)  # doctest: +SKIP
        """
        image = decode_jpeg(jpeg, reduce)
        detections = self.detect(image, params)
        if reduce == 1:
            return detections
        size = jpeg_size(jpeg)
        assert size is not None  # decode_jpeg refuses a reduced decode without a frame header
        return detections.scaled(size[0] / image.shape[1])

    def remote_state(self) -> RemoteState | None:
        """How the backend that runs the model elsewhere is doing; None for a local detector."""
        return None

    def warmup(self, n: int = 1) -> None:
        """Run ``n`` detections on a blank frame so later calls see steady-state timings."""
        if n < 0:
            raise ValueError(f"expected n >= 0, got {n}")
        size = self.params.imgsz or self.info.default_imgsz
        blank = np.full((size * 3 // 4, size, 3), 114, np.uint8)
        for _ in range(n):
            self.detect(blank)

    def close(self) -> None:  # noqa: B027  (optional: most runtimes free themselves)
        """Release the runtime's resources; the detector is unusable afterwards."""
