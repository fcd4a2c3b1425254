"""`ProfileConfig`: one point of a profiling sweep, and `grid` / `parse_grid` to build many.

A configuration is everything that changes how the server would process a camera: the model
file (and so its format), the detector input size, half precision, the confidence threshold,
reduced-scale decoding, the frame skip, the output JPEG quality, motion gating (with its
keep-alive) and tracking, and, for a live camera (`espdetect.profiling.live`), the camera's own
frame size and JPEG quality. Its ``key`` is stable across runs and machines, so results files
can be resumed and compared; settings left at their "off" value (the camera axes: "camera
unchanged") add nothing to it, so keys from before those settings existed still name the same
configuration.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

from espdetect.constraints import (
    IMGSZ,
    JPEG_QUALITY,
    UNIT,
    DecodeReduce,
    Skip,
    check_decode_reduce,
    check_skip,
)
from espdetect.detectors.base import DetectParams
from espdetect.exceptions import ConfigurationError
from espdetect.firmware import check_control_value
from espdetect.framesizes import parse_framesize
from espdetect.pipeline import PipelineConfig

__all__ = [
    "AXES",
    "CAMERA_AXES",
    "SETTING_COLUMNS",
    "CameraSetting",
    "DecodeReduce",
    "ModelFormat",
    "ProfileConfig",
    "default_model",
    "grid",
    "grid_from_text",
    "model_format",
    "parse_grid",
    "unique",
]

ModelFormat = Literal["pytorch", "onnx", "openvino", "torchscript", "tensorrt", "yaml", "other"]

#: Sweep axes a grid may vary, with the spellings ``parse_grid`` also accepts.
#: The results columns holding a configuration's settings (the model by its file name), in the
#: order tables and plot labels name them.
SETTING_COLUMNS: tuple[str, ...] = (
    "model_name",
    "imgsz",
    "half",
    "skip",
    "jpeg_quality",
    "conf",
    "decode_reduce",
    "motion",
    "keepalive",
    "tracking",
    "camera_framesize",
    "camera_quality",
    "label",
)
AXES: dict[str, tuple[str, ...]] = {
    "model": ("model", "models"),
    "imgsz": ("imgsz", "size"),
    "half": ("half", "fp16"),
    "skip": ("skip",),
    "jpeg_quality": ("jpeg_quality", "quality", "q"),
    "conf": ("conf", "confidence"),
    "decode_reduce": ("decode_reduce", "reduce"),
    "motion": ("motion",),
    "keepalive": ("keepalive", "keep_alive"),
    "tracking": ("tracking", "tracker", "track"),
    "camera_framesize": ("camera_framesize", "camera_size", "framesize"),
    "camera_quality": ("camera_quality", "camera_q"),
}
#: The axes that change the camera itself (a live camera only: `espdetect.profiling.live`).
CAMERA_AXES = ("camera_framesize", "camera_quality")

#: Axes whose values are true or false, and the words ``parse_grid`` reads as each.
_BOOL_AXES = ("half", "motion", "tracking")
_TRUE = ("1", "true", "yes", "on", "fp16")
_FALSE = ("0", "false", "no", "off", "fp32")

_YAML_SUFFIXES = (".yaml", ".yml")
_LABEL = re.compile(r"[A-Za-z0-9_]*")


class CameraSetting(NamedTuple):
    """The camera's own settings a configuration asks for; None: camera unchanged.

    Example:
        >>> CameraSetting("SVGA", 10).label, CameraSetting().label
        ('SVGA-q10', 'unchanged')
    """

    #: A frame size name (``QVGA``, ``SVGA``, ... as `espdetect.framesizes` names them).
    framesize: str | None = None
    #: The firmware's JPEG quality, 4..63, lower is better (not the output ``jpeg_quality``).
    quality: int | None = None

    @property
    def unchanged(self) -> bool:
        return self.framesize is None and self.quality is None

    @property
    def label(self) -> str:
        """A short readable name, safe as a folder name."""
        parts = [self.framesize or "", f"q{self.quality}" if self.quality is not None else ""]
        return "-".join(p for p in parts if p) or "unchanged"

    @property
    def size(self) -> tuple[int, int] | None:
        """(width, height) of the frame size; None when unchanged."""
        return parse_framesize(self.framesize).size if self.framesize is not None else None


def default_model() -> str:
    """The model a configuration uses when none is given: ``$ESPDETECT_MODEL`` or the bundled one.

    Example:
        >>> isinstance(default_model(), str)
        True
    """
    from espdetect.detectors.models import resolve_model

    return resolve_model(None)


def model_format(model: str) -> ModelFormat:
    """The runtime format a model file or name implies.

    Example:
        >>> model_format("yolov8n.onnx"), model_format("yolov8n_openvino_model/")
        ('onnx', 'openvino')
    """
    path = Path(model.rstrip("/\\"))
    suffix = path.suffix.lower()
    if suffix == ".pt":
        return "pytorch"
    if suffix == ".onnx":
        return "onnx"
    if suffix in _YAML_SUFFIXES:
        return "yaml"
    if suffix == ".torchscript":
        return "torchscript"
    if suffix == ".engine":
        return "tensorrt"
    if path.name.endswith("_openvino_model") or suffix == ".xml":
        return "openvino"
    return "other"


@dataclass(frozen=True)
class ProfileConfig:
    """One configuration of a sweep (a frozen value: hashable, usable as a dict key).

    Example:
        >>> cfg = ProfileConfig(model="yolov8n.yaml", imgsz=320, skip=2, jpeg_quality=50)
        >>> cfg.key
        'yolov8n.yaml@320-fp32-conf0.25-reduceauto-skip2-q50'
        >>> cfg.trained
        False
        >>> cfg.replace(motion=True, keepalive=10, tracking=True).key
        'yolov8n.yaml@320-fp32-conf0.25-reduceauto-skip2-q50-motion-keepalive10-tracking'
        >>> cfg.replace(label="b").key
        'yolov8n.yaml@320-fp32-conf0.25-reduceauto-skip2-q50-label_b'
        >>> cfg.replace(camera_framesize="800x600", camera_quality=10).key
        'yolov8n.yaml@320-fp32-conf0.25-reduceauto-skip2-q50-camSVGA-camq10'
    """

    #: Weights file (.pt, .onnx, OpenVINO folder) or a .yaml architecture (untrained: speed only).
    model: str = field(default_factory=default_model)
    #: Detector input size in pixels (the long side after letterboxing).
    imgsz: int = 640
    #: Half-precision inference (CUDA only; recorded as not applicable elsewhere).
    half: bool = False
    #: Detect on every Nth frame, or "auto" (whenever the detector is free at camera pace).
    skip: Skip = 1
    #: JPEG quality of the annotated output stream.
    jpeg_quality: int = 80
    #: Detection confidence threshold.
    conf: float = 0.25
    #: Decode at 1/2, 1/4, 1/8 scale for detection, or "auto" (as large as imgsz needs).
    decode_reduce: DecodeReduce = "auto"
    #: Motion gating: the model runs only on frames where something moves or a tracked object
    #: is still moving, plus a keep-alive call every ``keepalive`` seconds (`PipelineConfig.motion`).
    motion: bool = False
    #: Seconds between keep-alive model calls while nothing moves; only used with ``motion``.
    keepalive: float = PipelineConfig.keepalive
    #: Track boxes and move them along their tracks on frames without a model call
    #: (`PipelineConfig.tracking`); off: the last boxes stay where the model saw them.
    tracking: bool = False
    #: A name that tells otherwise identical configurations apart (letters, digits, ``_``):
    #: changes nothing in how frames are processed, only the key (``...-q80-label_b``), so one
    #: sweep can measure the same settings twice (how much do identical runs differ?).
    label: str = ""
    #: The camera's frame size, a name (``QVGA``) or ``WxH``, kept as its name; None: the
    #: camera as it is (live sweeps only: `espdetect.profiling.live`).
    camera_framesize: str | None = None
    #: The camera's JPEG quality (firmware ``quality``, 4..63, lower is better: a different
    #: setting from the output ``jpeg_quality``); None: the camera as it is.
    camera_quality: int | None = None

    def __post_init__(self) -> None:
        model = str(self.model).strip() if isinstance(self.model, str | Path) else self.model
        if not isinstance(model, str) or not model:
            raise ConfigurationError(
                f"expected model to be a non-empty path or name, got {self.model!r}", field="model"
            )
        object.__setattr__(self, "model", model)
        object.__setattr__(self, "imgsz", IMGSZ.check("imgsz", self.imgsz))
        if not isinstance(self.half, bool):
            raise ConfigurationError(f"expected half to be True or False, got {self.half!r}", field="half")
        skip: object = self.skip
        if isinstance(skip, str) and skip.strip().isdigit():
            skip = int(skip)
        object.__setattr__(self, "skip", check_skip(skip))
        object.__setattr__(self, "jpeg_quality", JPEG_QUALITY.check("jpeg_quality", self.jpeg_quality))
        object.__setattr__(self, "conf", UNIT.check("conf", self.conf))
        reduce: object = self.decode_reduce
        if isinstance(reduce, str) and reduce.strip().isdigit():
            reduce = int(reduce)
        object.__setattr__(self, "decode_reduce", check_decode_reduce(reduce))
        if not isinstance(self.label, str) or not _LABEL.fullmatch(self.label):
            raise ConfigurationError(
                f"expected label to be letters, digits or '_' (or empty), got {self.label!r}", field="label"
            )
        # The pipeline checks its own settings (motion, keepalive, tracking): one rule for both.
        object.__setattr__(self, "keepalive", self.pipeline_config().keepalive)
        if self.camera_framesize is not None:
            try:
                name = parse_framesize(str(self.camera_framesize)).name
            except ValueError as exc:
                raise ConfigurationError(str(exc), field="camera_framesize") from None
            object.__setattr__(self, "camera_framesize", name)
        if self.camera_quality is not None:
            quality: object = self.camera_quality
            if isinstance(quality, str) and quality.strip().isdigit():
                quality = int(quality)
            try:
                object.__setattr__(self, "camera_quality", check_control_value("quality", quality))
            except ValueError as exc:
                raise ConfigurationError(f"camera_quality: {exc}", field="camera_quality") from None

    @property
    def camera(self) -> CameraSetting:
        """The camera settings this configuration asks for (both None: camera unchanged)."""
        return CameraSetting(self.camera_framesize, self.camera_quality)

    def with_camera(self, camera: CameraSetting) -> ProfileConfig:
        """A copy asking for ``camera`` (None fields: unchanged)."""
        return dataclasses.replace(self, camera_framesize=camera.framesize, camera_quality=camera.quality)

    @property
    def model_name(self) -> str:
        """The model's file or folder name (what keys and plots show)."""
        return Path(self.model.rstrip("/\\")).name or self.model

    @property
    def model_format(self) -> ModelFormat:
        return model_format(self.model)

    @property
    def trained(self) -> bool:
        """False for a .yaml architecture: random weights, so its accuracy means nothing."""
        return self.model_format != "yaml"

    @property
    def key(self) -> str:
        """A stable, readable identifier (model file name, not its folder)."""
        precision = "fp16" if self.half else "fp32"
        # Off settings add nothing, so keys written before these settings existed still match;
        # keepalive means nothing without motion.
        gating = f"-motion-keepalive{self.keepalive:g}" if self.motion else ""
        tracking = "-tracking" if self.tracking else ""
        label = f"-label_{self.label}" if self.label else ""
        camera = f"-cam{self.camera_framesize}" if self.camera_framesize is not None else ""
        camera += f"-camq{self.camera_quality}" if self.camera_quality is not None else ""
        return (
            f"{self.model_name}@{self.imgsz}-{precision}-conf{self.conf:g}-reduce{self.decode_reduce}"
            f"-skip{self.skip}-q{self.jpeg_quality}{gating}{tracking}{camera}{label}"
        )

    @property
    def model_key(self) -> tuple[str, bool]:
        """What a loaded detector depends on: configurations sharing it share one detector."""
        return (self.model, self.half)

    def detect_params(self) -> DetectParams:
        """The detection params of this configuration (input size and confidence)."""
        return DetectParams(conf=self.conf, imgsz=self.imgsz)

    def pipeline_config(self) -> PipelineConfig:
        """The server pipeline settings of this configuration.

        Raises:
            ConfigurationError: ``motion``, ``keepalive`` or ``tracking`` out of range.
        """
        return PipelineConfig(
            skip=self.skip,
            decode_reduce=self.decode_reduce,
            motion=self.motion,
            keepalive=self.keepalive,
            tracking=self.tracking,
        )

    def as_dict(self) -> dict[str, object]:
        """Field values, for results rows and JSON."""
        return asdict(self)

    def replace(
        self,
        *,
        model: str | None = None,
        imgsz: int | None = None,
        half: bool | None = None,
        skip: Skip | None = None,
        jpeg_quality: int | None = None,
        conf: float | None = None,
        decode_reduce: DecodeReduce | None = None,
        motion: bool | None = None,
        keepalive: float | None = None,
        tracking: bool | None = None,
        label: str | None = None,
        camera_framesize: str | None = None,
        camera_quality: int | None = None,
    ) -> ProfileConfig:
        """A copy with the given fields changed (`with_camera` sets the camera ones back to None)."""
        return ProfileConfig(
            model=self.model if model is None else model,
            imgsz=self.imgsz if imgsz is None else imgsz,
            half=self.half if half is None else half,
            skip=self.skip if skip is None else skip,
            jpeg_quality=self.jpeg_quality if jpeg_quality is None else jpeg_quality,
            conf=self.conf if conf is None else conf,
            decode_reduce=self.decode_reduce if decode_reduce is None else decode_reduce,
            motion=self.motion if motion is None else motion,
            keepalive=self.keepalive if keepalive is None else keepalive,
            tracking=self.tracking if tracking is None else tracking,
            label=self.label if label is None else label,
            camera_framesize=self.camera_framesize if camera_framesize is None else camera_framesize,
            camera_quality=self.camera_quality if camera_quality is None else camera_quality,
        )


def _values(value: object) -> list[object]:
    if isinstance(value, str | bytes | Path) or not isinstance(value, Sequence):
        return [value]
    out = list(value)
    if not out:
        raise ConfigurationError("every grid axis needs at least one value, got an empty list")
    return out


def _product(axes: Mapping[str, object]) -> list[ProfileConfig]:
    unknown = sorted(set(axes) - set(AXES))
    if unknown:
        raise ConfigurationError(f"expected grid axes among {', '.join(AXES)}, got {', '.join(unknown)}")
    names = list(AXES)
    columns = [_values(axes[name]) if name in axes else [None] for name in names]
    configs = []
    for combo in itertools.product(*columns):
        kwargs: dict[str, Any] = {n: v for n, v in zip(names, combo, strict=True) if v is not None}
        if "model" in kwargs:
            kwargs["model"] = str(kwargs["model"])
        configs.append(ProfileConfig(**kwargs))
    return unique(configs)


def grid(
    *,
    model: str | Path | Sequence[str | Path] | None = None,
    imgsz: int | Sequence[int] = 640,
    half: bool | Sequence[bool] = False,
    skip: Skip | Sequence[Skip] = 1,
    jpeg_quality: int | Sequence[int] = 80,
    conf: float | Sequence[float] = 0.25,
    decode_reduce: DecodeReduce | Sequence[DecodeReduce] = "auto",
    motion: bool | Sequence[bool] = False,
    keepalive: float | Sequence[float] = PipelineConfig.keepalive,
    tracking: bool | Sequence[bool] = False,
    camera_framesize: str | Sequence[str] | None = None,
    camera_quality: int | Sequence[int] | None = None,
) -> list[ProfileConfig]:
    """Every combination of the given axis values (a cartesian product), duplicates removed.

    Grids are lists: concatenate them with ``+`` to sweep different models over different sizes.
    Without motion, keepalive changes nothing: those combinations are one configuration. The
    camera axes (None: camera unchanged) need a live camera (`espdetect.profiling.live`).

    Example:
        >>> configs = grid(model="yolov8n.yaml", skip=[1, 2, 4, "auto"], imgsz=[320, 640])
        >>> len(configs), configs[0].skip, configs[-1].imgsz
        (8, 1, 640)
        >>> len(grid(model="m.onnx", motion=[False, True], keepalive=[10, 30], tracking=[False, True]))
        6
    """
    return _product(
        {
            "model": default_model() if model is None else model,
            "imgsz": imgsz,
            "half": half,
            "skip": skip,
            "jpeg_quality": jpeg_quality,
            "conf": conf,
            "decode_reduce": decode_reduce,
            "motion": motion,
            "keepalive": keepalive,
            "tracking": tracking,
            "camera_framesize": camera_framesize,
            "camera_quality": camera_quality,
        }
    )


def grid_from_text(text: str, *, models: Sequence[str] = ()) -> list[ProfileConfig]:
    """The grid a ``parse_grid`` string describes; ``models`` apply when the text names none.

    Example:
        >>> [c.skip for c in grid_from_text("skip=1,2 imgsz=320", models=["yolov8n.yaml"])]
        [1, 2]
    """
    axes: dict[str, object] = dict(parse_grid(text))
    if "model" not in axes:
        axes["model"] = list(models) if models else default_model()
    return _product(axes)


def unique(configs: Iterable[ProfileConfig]) -> list[ProfileConfig]:
    """The configurations in order with repeats removed; two models with one file name are refused."""
    seen: dict[str, ProfileConfig] = {}
    names: dict[str, str] = {}
    for cfg in configs:
        other = names.setdefault(cfg.model_name, cfg.model)
        if other != cfg.model:
            raise ConfigurationError(
                f"expected distinct file names for distinct models, got {other!r} and {cfg.model!r}"
            )
        seen.setdefault(cfg.key, cfg)
    return list(seen.values())


def _parse_value(axis: str, text: str) -> object:
    text = text.strip()
    try:
        if axis == "model":
            return text
        if axis == "camera_framesize":
            return parse_framesize(text).name
        if axis in _BOOL_AXES:
            low = text.lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError(text)
        if axis in ("skip", "decode_reduce") and text.lower() == "auto":
            return "auto"
        if axis in ("conf", "keepalive"):
            value = float(text)
            if not math.isfinite(value):
                raise ValueError(text)
            return value
        return int(text)
    except ValueError:
        raise ConfigurationError(f"expected a valid {axis} value, got {text!r}") from None


def parse_grid(text: str) -> dict[str, list[object]]:
    """Parse ``"skip=1,2,4,auto imgsz=320,640 quality=50,80"`` into axis -> values.

    Axis names and their accepted spellings are in `AXES` (``quality`` for ``jpeg_quality``,
    ``reduce`` for ``decode_reduce``, ``tracker`` for ``tracking``...); ``half``, ``motion`` and
    ``tracking`` take on/off, true/false, yes/no or 1/0; ``camera_framesize`` takes size names
    or ``WxH``. Pass the result to `grid` as keyword arguments.

    Raises:
        ConfigurationError: an unknown axis, a malformed item or a bad value.

    Example:
        >>> parse_grid("skip=1,auto quality=50")
        {'skip': [1, 'auto'], 'jpeg_quality': [50]}
        >>> parse_grid("motion=off,on tracker=on keepalive=10")
        {'motion': [False, True], 'tracking': [True], 'keepalive': [10.0]}
        >>> parse_grid("camera_framesize=qvga,800x600 camera_quality=10")
        {'camera_framesize': ['QVGA', 'SVGA'], 'camera_quality': [10]}
    """
    aliases = {alias: axis for axis, names in AXES.items() for alias in names}
    out: dict[str, list[object]] = {}
    for item in text.replace(";", " ").split():
        name, sep, values = item.partition("=")
        axis = aliases.get(name.strip().lower())
        if not sep or axis is None:
            raise ConfigurationError(
                f"expected AXIS=V1,V2 with AXIS one of {', '.join(sorted(aliases))}, got {item!r}"
            )
        parsed = [_parse_value(axis, v) for v in values.split(",") if v.strip()]
        if not parsed:
            raise ConfigurationError(f"expected at least one value for {name}, got {item!r}")
        out.setdefault(axis, []).extend(parsed)
    return out
