"""`ServerSettings`: the one schema of every server option, in sections.

One schema gives the TOML keys, the ``ESPDETECT_*`` environment variables, the command-line
flags of ``espdetect serve`` (`espdetect.cli.serve.add_server_options`) and the settings API:

* In TOML, options live in sections (``[detector]``, ``[defaults]``, ``[upstream]``, ``[viewers]``,
  ``[serving]``, ``[auth]``) and cameras in ``[[cameras]]`` tables; a section's key may also be
  written at the top level (``conf = 0.3``), as before sections existed.
* Every option has one environment variable named after it, whatever its section:
  ``ESPDETECT_CONF``, ``ESPDETECT_MAX_VIEWERS_TOTAL``, ``ESPDETECT_AUTH_TOKEN_HASH``...
  ``ESPDETECT_CAMERAS`` takes ``id=url,id=url`` or a JSON list of camera objects.
* `CameraOptions` are what each camera may set for itself; the ``[defaults]`` section gives
  every camera the values it does not set.

Precedence, highest first: explicit values (command line, ``create_app`` callers), environment
variables, the TOML file, the defaults. Option names are unique across sections.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Final, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from espdetect.camera_control import control_url_for as control_url_for
from espdetect.constraints import (
    CAMERA_ID_PATTERN,
    CLASS_ID,
    EVENT_END_TIMEOUT,
    EVENT_MIN_FRAMES,
    IMGSZ,
    JPEG_QUALITY,
    MAX_CLASSES,
    SKIP,
    THREADS,
    UNIT,
    Skip,
    check_camera_id,
    check_http_url,
    check_mqtt_url,
    check_skip,
)
from espdetect.detectors.factory import DetectorBackend
from espdetect.events import check_labels
from espdetect.exceptions import ConfigurationError
from espdetect.firmware import CONTROL_VARIABLES, check_control_value
from espdetect.framesizes import FirmwareGeneration, framesize_value, parse_framesize
from espdetect.mjpeg import DEFAULT_MAX_PART_SIZE
from espdetect.motion import THRESHOLD, check_polygons
from espdetect.pipeline.config import GRACE_PERIOD, KEEPALIVE, StaleMode
from espdetect.server.hosts import check_host_pattern

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

__all__ = [
    "ENV_PREFIX",
    "AuthSettings",
    "CameraConfig",
    "CameraControlMode",
    "CameraOptions",
    "ClassIds",
    "Conf",
    "DetectorSettings",
    "EndTimeout",
    "Imgsz",
    "Labels",
    "MinFrames",
    "MqttSettings",
    "Quality",
    "SensorValues",
    "ServerSettings",
    "ServingSettings",
    "SkipSetting",
    "StorageSettings",
    "StrictClassIds",
    "StrictLabels",
    "StrictMotionMasks",
    "StrictSkip",
    "StrictZones",
    "UpstreamSettings",
    "ViewerSettings",
    "WebhookSettings",
    "Zones",
    "control_url_for",
    "leaf_fields",
    "load_settings",
    "merge_sensor",
    "parse_camera_spec",
    "redact_url",
    "toml_value",
]

ENV_PREFIX: Final = "ESPDETECT_"

T = TypeVar("T")


def _split_list(value: object) -> object:
    """A list also as text: ``"a,b"`` or JSON ``'["a", "b"]'`` (environment variables, flags)."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


def _pydantic(check: Callable[[Any], T]) -> Callable[[Any], T]:
    """A check of `espdetect.constraints` as a pydantic validator: its `ConfigurationError` becomes
    the ``ValueError`` pydantic reports (with the check's message)."""

    def validate(value: Any) -> T:
        try:
            return check(value)
        except ConfigurationError as exc:
            raise ValueError(exc.message) from None

    return validate


#: A frame skip: an integer or ``"auto"`` (what the API takes).
_strict_skip = _pydantic(check_skip)
_imgsz = _pydantic(lambda value: IMGSZ.check("imgsz", value))
_http_url = _pydantic(check_http_url)
_mqtt_url = _pydantic(check_mqtt_url)
_labels = _pydantic(lambda value: list(check_labels(value)))


def _skip(value: object) -> Skip:
    """A frame skip: an integer (also as text, from the environment or a flag) or ``"auto"``."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    return _strict_skip(value)


Conf = Annotated[float, Field(ge=UNIT.low, le=UNIT.high)]
Quality = Annotated[int, Field(ge=JPEG_QUALITY.low, le=JPEG_QUALITY.high)]
Imgsz = Annotated[
    int,
    AfterValidator(_imgsz),
    Field(json_schema_extra={"minimum": IMGSZ.low, "maximum": IMGSZ.high, "multipleOf": IMGSZ.step}),
]
# The API's request models are strict (no "3" for 3, no true for 1); settings from the environment
# and TOML come as text and take the lax types. Both are built from the same bounds.
StrictClassIds = Annotated[
    list[Annotated[int, Field(ge=CLASS_ID.low, le=CLASS_ID.high)]],
    Field(min_length=1, max_length=MAX_CLASSES),
]
ClassIds = Annotated[StrictClassIds, BeforeValidator(_split_list)]
_SKIP_SCHEMA = Annotated[int, Field(ge=SKIP.low, le=SKIP.high)] | Literal["auto"]
SkipSetting = Annotated[Skip, PlainValidator(_skip, json_schema_input_type=_SKIP_SCHEMA)]
StrictSkip = Annotated[Skip, PlainValidator(_strict_skip, json_schema_input_type=_SKIP_SCHEMA)]


def _point_lists(name: str) -> Callable[[Any], list[list[list[float]]]]:
    """Polygons as lists of [x, y] points (what the API takes); checked by the motion module."""
    return _pydantic(lambda value: [[list(p) for p in polygon] for polygon in check_polygons(value, name)])


_strict_masks = _point_lists("motion_masks")
_strict_zones = _point_lists("zones")


def _polygons(value: object, name: str = "motion_masks") -> list[list[list[float]]]:
    """Polygons also as JSON text (an environment variable, a flag)."""
    strict = _strict_zones if name == "zones" else _strict_masks
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else []
        except json.JSONDecodeError as exc:
            like = "[[[0, 0], [0.4, 0], [0.4, 0.1]]]"
            message = f"expected {name} as JSON polygons like {like}, got {value!r} ({exc})"
            raise ValueError(message) from None
    return strict(value)


def _zones(value: object) -> list[list[list[float]]]:
    return _polygons(value, "zones")


MotionThreshold = Annotated[int, Field(ge=THRESHOLD.low, le=THRESHOLD.high)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
Keepalive = Annotated[float, Field(ge=KEEPALIVE.low, le=KEEPALIVE.high)]
# Points as [x, y] lists (JSON's shape, what TOML and the API give) rather than tuples.
MotionMasks = Annotated[
    list[list[list[float]]],
    PlainValidator(_polygons, json_schema_input_type=list[list[tuple[float, float]]]),
]
StrictMotionMasks = Annotated[
    list[list[list[float]]],
    PlainValidator(_strict_masks, json_schema_input_type=list[list[tuple[float, float]]]),
]
HttpUrl = Annotated[str, PlainValidator(_http_url, json_schema_input_type=str)]
_POLYGONS_SCHEMA = list[list[tuple[float, float]]]
Zones = Annotated[list[list[list[float]]], PlainValidator(_zones, json_schema_input_type=_POLYGONS_SCHEMA)]
StrictZones = Annotated[
    list[list[list[float]]], PlainValidator(_strict_zones, json_schema_input_type=_POLYGONS_SCHEMA)
]
_LABELS_SCHEMA = Annotated[list[str], Field(min_length=1, max_length=MAX_CLASSES)]
StrictLabels = Annotated[list[str], PlainValidator(_labels, json_schema_input_type=_LABELS_SCHEMA)]
Labels = Annotated[StrictLabels, BeforeValidator(_split_list)]
MinFrames = Annotated[int, Field(ge=EVENT_MIN_FRAMES.low, le=EVENT_MIN_FRAMES.high)]
EndTimeout = Annotated[float, Field(ge=EVENT_END_TIMEOUT.low, le=EVENT_END_TIMEOUT.high)]
#: The model's runtime in the server: a local one, or "ray" (a Ray Serve deployment).
ServerBackend = DetectorBackend | Literal["ray"]
RayAddress = Annotated[str, Field(pattern=r"^(local|auto|(ray://)?[A-Za-z0-9.\-]+:[0-9]{1,5})$")]
RayAppName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_\-]{1,64}$")]
MqttUrl = Annotated[str, PlainValidator(_mqtt_url, json_schema_input_type=str)]


#: ``/control`` variables in the order the sensor settings are applied: the firmware's own, which
#: starts with the frame size (a size change may reset other registers).
_SENSOR_ORDER: Final[dict[str, int]] = {name: i for i, name in enumerate(CONTROL_VARIABLES)}


def _sensor_scalar(text: str) -> object:
    """A value of ``var=value`` text (an environment variable, a flag) as TOML would give it."""
    word = text.strip()
    if word.lower() in ("true", "false"):
        return word.lower() == "true"
    if word.lstrip("-").isdigit():
        return int(word)
    return word


def _sensor_values(value: object, where: str = "sensor") -> dict[str, int | str]:
    """Desired sensor settings: ``/control`` variable names to values, checked once.

    Switches take true/false or 0/1 (kept as 0/1), the other variables integers within
    `espdetect.firmware.CONTROL_RANGES`; ``framesize`` a size name or ``WxH`` (kept as the name),
    never a number: the firmware generations number sizes differently. Text (an environment
    variable, a flag) is a JSON object or ``var=value,var=value``.
    """
    if value is None:
        return {}
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            value = json.loads(text)
        else:
            pairs = [part.partition("=") for part in text.split(",") if part.strip()]
            bad = [name for name, sep, _ in pairs if not sep]
            if bad:
                raise ValueError(
                    f"{where}: expected var=value pairs like framesize=VGA,quality=10, got {text!r}"
                )
            value = {name.strip(): _sensor_scalar(raw) for name, _, raw in pairs}
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: expected a table of /control variables, got {value!r}")
    out: dict[str, int | str] = {}
    for name, raw in value.items():
        try:
            if name == "framesize":
                if isinstance(raw, bool) or not isinstance(raw, str):
                    raise ValueError(
                        f"expected framesize as a size name (QVGA, VGA, SVGA...) or WxH, got {raw!r} "
                        "(a number means different sizes on different firmware)"
                    )
                out[name] = parse_framesize(raw).name
            else:
                out[str(name)] = check_control_value(str(name), raw)
        except ValueError as exc:
            raise ValueError(f"{where}.{name} = {raw!r}: {exc}") from None
    return dict(sorted(out.items(), key=lambda item: _SENSOR_ORDER[item[0]]))


def merge_sensor(base: Mapping[str, int | str], top: Mapping[str, int | str]) -> dict[str, int | str]:
    """``top``'s sensor settings over ``base``'s, in the order they are applied.

    Example:
        >>> merge_sensor({"quality": 12, "hmirror": 1}, {"quality": 10, "framesize": "VGA"})
        {'framesize': 'VGA', 'quality': 10, 'hmirror': 1}
    """
    merged = {**base, **top}
    return dict(sorted(merged.items(), key=lambda item: _SENSOR_ORDER[item[0]]))


_SENSOR_SCHEMA = dict[str, int | bool | str]
#: Desired sensor settings, by ``/control`` variable (see `_sensor_values`).
SensorValues = Annotated[
    dict[str, int | str], PlainValidator(_sensor_values, json_schema_input_type=_SENSOR_SCHEMA)
]


_SECRET_QUERY_KEY = re.compile(r"(?i)(pass|pwd|secret|token|key|auth|sig)")


def redact_url(url: str) -> str:
    """``url`` fit for logs: the password and secret-looking query values replaced by ``***``.

    Example:
        >>> redact_url("http://admin:hunter2@cam.local:81/stream?token=abc&res=vga")
        'http://admin:***@cam.local:81/stream?token=***&res=vga'
    """
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        # Without a colon the whole userinfo may be a token: hide all of it.
        netloc = f"{user}:***@{hostport}" if colon and user else f"***@{hostport}"
    query = "&".join(
        f"{key}=***" if sep and _SECRET_QUERY_KEY.search(key) else item
        for item in parts.query.split("&")
        if item
        for key, sep, _ in [item.partition("=")]
    )
    return parts._replace(netloc=netloc, query=query).geturl()


#: Who may use ``POST /cameras/{id}/control``: "auth" - only when authentication is configured
#: (then only authenticated users); "on" - also without authentication; "off" - nobody.
CameraControlMode = Literal["auth", "on", "off"]

_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
_ORIGIN = re.compile(r"^https?://[^/\s?#]+$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DetectorSettings(_Section):
    """The model every camera shares (loaded once) and how it runs."""

    model: str | None = Field(
        default=None,
        description="weights: an .onnx file, an OpenVINO folder, or with espdetect[ultralytics] a .pt or "
        ".yaml; none: the COCO model bundled with espdetect",
    )
    backend: ServerBackend = Field(
        default="auto",
        description="runtime: auto (onnxruntime for .onnx, openvino for OpenVINO folders, "
        "ultralytics otherwise), onnxruntime, openvino, ultralytics, or ray: the model runs in a Ray "
        "Serve deployment (its replicas pick the runtime as auto does; needs espdetect[ray])",
    )
    device: str | None = Field(
        default=None, description="cpu, cuda, cuda:N (onnxruntime also tensorrt, openvino); none: cpu"
    )
    half: bool = Field(default=False, description="fp16 inference (ultralytics on CUDA only)")
    threads: Annotated[int, Field(ge=THREADS.low, le=THREADS.high)] | None = Field(
        default=None, description="CPU threads of one inference; none: the runtime's default (all cores)"
    )
    detect_slots: Annotated[int, Field(ge=1, le=64)] = Field(
        default=1,
        description="model calls running at once across all cameras: 1 on a CPU (one inference already "
        "uses every core), 2 may help a GPU; with backend ray at least one per camera",
    )
    ray_address: RayAddress = Field(
        default="local",
        description="backend ray: local (start Ray in the server), auto (join this machine's cluster), "
        "HOST:PORT of a head node, or ray://HOST:PORT (Ray Client)",
    )
    ray_app: RayAppName = Field(
        default="espdetect",
        description="backend ray: the Serve application; servers naming the same one share its replicas",
    )
    ray_replicas: Annotated[int, Field(ge=1, le=1024)] = Field(
        default=1, description="backend ray: replicas deployed when the application does not exist yet"
    )
    ray_max_batch_size: Annotated[int, Field(ge=1, le=256)] = Field(
        default=4, description="backend ray: most frames a replica runs in one batch"
    )
    ray_batch_wait: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        default=0.02,
        description="backend ray: seconds a replica waits for more frames before a batch runs (a camera's "
        "next frame follows its answer within a few ms)",
    )
    ray_cpus_per_replica: Annotated[float, Field(gt=0.0, le=1024.0)] = Field(
        default=1.0, description="backend ray: CPUs each replica reserves (its inference threads too)"
    )
    ray_gpus_per_replica: Annotated[float, Field(ge=0.0, le=64.0)] = Field(
        default=0.0, description="backend ray: GPUs each replica reserves (fractions share one)"
    )
    ray_timeout: Annotated[float, Field(gt=0.0, le=300.0)] = Field(
        default=2.0,
        description="backend ray: seconds a model call may take; then the frame is let go and the stream "
        "goes on with the last boxes",
    )


class CameraOptions(_Section):
    """Detection and stream options each camera may set for itself.

    Example:
        >>> CameraOptions(conf=0.4, skip="auto").conf
        0.4
    """

    conf: Conf = Field(default=0.25, description="minimum confidence of a detection, 0..1")
    iou: Conf = Field(default=0.45, description="NMS IoU threshold, 0..1")
    imgsz: Imgsz | None = Field(
        default=None,
        description="model input size, a multiple of 32; none: the model's own (640 when any size works)",
    )
    classes: ClassIds | None = Field(
        default=None, description="class ids to keep, e.g. [0, 2]; none: all classes"
    )
    skip: SkipSetting = Field(
        default="auto", description="detect every Nth frame, or auto: whenever the model is free"
    )
    stale: StaleMode = Field(
        default=StaleMode.DRAW_LAST,
        description="frames without fresh detections: draw_last (the last boxes) or raw (the camera's JPEG)",
    )
    quality: Quality = Field(default=80, description="JPEG quality of the annotated stream, 1..100")
    motion: bool = Field(
        default=True,
        description="run the model only when something moves (or a tracked object needs following), "
        "plus a keep-alive call; false: whenever the skip policy says",
    )
    motion_threshold: MotionThreshold = Field(
        default=25, description="grey levels a pixel must change by to count as motion, 1..255"
    )
    motion_min_area: Fraction = Field(
        default=0.002, description="smallest moving region counted, as a fraction of the frame"
    )
    motion_masks: MotionMasks = Field(
        default_factory=list,
        description="regions where motion never counts (a timestamp, a tree): polygons of [x, y] "
        "points from 0 to 1, e.g. [[[0, 0], [0.4, 0], [0.4, 0.08], [0, 0.08]]]",
    )
    keepalive: Keepalive = Field(
        default=30.0, description="seconds between model calls while nothing moves (confirms still objects)"
    )
    tracking: bool = Field(
        default=True,
        description="give boxes track ids and move them along their tracks between model calls",
    )
    always_on: bool = Field(
        default=False,
        description="keep the camera connected and detecting with no viewer (cameras run unattended "
        "anyway while events are on)",
    )
    labels: Labels = Field(
        default_factory=lambda: ["person"],
        description='events: the model\'s class names that make events, e.g. ["person", "car"]',
    )
    min_score: Conf = Field(default=0.5, description="events: least confidence of a detection that counts")
    min_frames: MinFrames = Field(
        default=3,
        description="events: frames in a row an object must be seen in a zone before its event starts",
    )
    end_timeout: EndTimeout = Field(
        default=5.0, description="events: seconds an object must be gone before its event ends"
    )
    zones: Zones = Field(
        default_factory=list,
        description="events: polygons of [x, y] points from 0 to 1 where an object's bottom centre must be "
        "(where it stands); empty: the whole frame",
    )


class CameraConfig(CameraOptions):
    """One camera: its id (used in URLs), its stream URL and the options it sets for itself.

    Options it does not set come from the server's ``[defaults]`` (see `resolved`).

    Example:
        >>> CameraConfig(id="front", url="http://192.168.4.1:81/stream", conf=0.4).conf
        0.4
    """

    id: Annotated[str, Field(pattern=CAMERA_ID_PATTERN)]
    url: HttpUrl
    #: Base URL of the camera's control server; None: derived from ``url`` (`control_url_for`).
    control_url: HttpUrl | None = None
    #: The camera's own sensor settings, over the server-wide ``[sensor]`` table.
    sensor: SensorValues = Field(default_factory=dict)
    #: The firmware generation, for when the camera's /status and frames cannot tell (None: learn it).
    firmware: FirmwareGeneration | None = None

    @model_validator(mode="before")
    @classmethod
    def _sensor_of_camera(cls, values: Any) -> Any:
        # Checked here so that the message names the camera (pydantic's location is its index).
        if isinstance(values, Mapping) and "sensor" in values:
            where = f"camera {values.get('id')!r}: sensor"
            return {**values, "sensor": _sensor_values(values["sensor"], where)}
        return values

    @field_validator("control_url")
    @classmethod
    def _control_url(cls, value: str | None) -> str | None:
        return None if value is None else value.rstrip("/")

    @property
    def options(self) -> CameraOptions:
        """This camera's options alone."""
        return CameraOptions.model_validate(self.model_dump(include=set(CameraOptions.model_fields)))

    def resolved(self, defaults: CameraOptions) -> CameraConfig:
        """This camera with every option it does not set taken from ``defaults``."""
        inherited = {
            name: getattr(defaults, name)
            for name in CameraOptions.model_fields
            if name not in self.model_fields_set
        }
        return self.model_copy(update=inherited)


class UpstreamSettings(_Section):
    """The connections to the cameras."""

    grace_period: Annotated[float, Field(ge=GRACE_PERIOD.low, le=GRACE_PERIOD.high)] = Field(
        default=2.0, description="seconds the camera connection stays open after the last viewer leaves"
    )
    stall_timeout: Annotated[float, Field(gt=0.0, le=3600.0)] = Field(
        default=5.0, description="seconds without a complete camera frame before the connection is recycled"
    )
    connect_timeout: Annotated[float, Field(gt=0.0, le=300.0)] = Field(
        default=5.0,
        description="seconds to connect to a camera and get its reply head (a camera busy with another "
        "client accepts the connection and never answers)",
    )
    backoff_max: Annotated[float, Field(ge=0.1, le=300.0)] = Field(
        default=1.0,
        description="longest pause between camera reconnection attempts (capped backoff from 0.1 s)",
    )
    max_part_size: Annotated[int, Field(ge=1024, le=256 * 1024 * 1024)] = Field(
        default=DEFAULT_MAX_PART_SIZE,
        description="camera frames (JPEG parts) larger than this many bytes are dropped unread",
    )
    sensor_check_interval: Annotated[float, Field(ge=0.1, le=86400.0)] = Field(
        default=60.0,
        description="seconds between checks that a connected camera still has its sensor settings "
        "(changes made elsewhere are reverted); they are also applied on every connection",
    )


class ViewerSettings(_Section):
    """What viewers get and how many."""

    low_quality: Quality = Field(
        default=40, description="JPEG quality for annotated viewers that fall behind"
    )
    viewer_timeout: Annotated[float, Field(gt=0.0, le=3600.0)] = Field(
        default=10.0, description="seconds a viewer may block one send before it is disconnected"
    )
    send_buffer: Annotated[int, Field(ge=0, le=64 * 1024 * 1024)] = Field(
        default=256 * 1024,
        description="kernel send buffer of each viewer connection in bytes (0: the OS default, which lets "
        "a slow viewer fall seconds behind unnoticed)",
    )
    snapshot_timeout: Annotated[float, Field(gt=0.0, le=300.0)] = Field(
        default=5.0, description="seconds a snapshot waits for a frame when none is cached (then 503)"
    )
    max_viewers_per_camera: Annotated[int, Field(ge=1, le=100_000)] = Field(
        default=10, description="viewers per camera"
    )
    max_viewers_total: Annotated[int, Field(ge=1, le=100_000)] = Field(
        default=50, description="viewers on all cameras"
    )
    retry_after: Annotated[int, Field(ge=1, le=3600)] = Field(
        default=5, description="seconds sent in Retry-After when a limit turns a viewer away"
    )


class ServingSettings(_Section):
    """The HTTP server process."""

    stats_window: Annotated[float, Field(gt=0.0, le=300.0)] = Field(
        default=5.0, description="seconds of history behind the rates in /stats"
    )
    shutdown_timeout: Annotated[float, Field(gt=0.0, le=300.0)] = Field(
        default=1.0, description="seconds uvicorn waits for connections on shutdown before cancelling them"
    )
    access_log: bool = Field(default=False, description="log every HTTP request")
    tune_malloc: bool = Field(
        default=False,
        description="glibc only: return freed frame memory to the OS (two malloc arenas, fixed 128 KiB "
        "mmap threshold) so RSS stays flat over days; process-wide",
    )
    max_body_size: Annotated[int, Field(ge=1024, le=64 * 1024 * 1024)] = Field(
        default=1024 * 1024, description="requests with a larger body get 413"
    )
    max_header_size: Annotated[int, Field(ge=1024, le=1024 * 1024)] = Field(
        default=32 * 1024,
        description="bytes of a request's line and headers together; beyond: 431 (414 while still in the "
        "request line) and the connection closed unread",
    )
    max_headers: Annotated[int, Field(ge=1, le=10_000)] = Field(
        default=100, description="header lines of one request; beyond: 431"
    )
    header_timeout: Annotated[float, Field(gt=0.0, le=300.0)] = Field(
        default=10.0,
        description="seconds a connection may take to send a complete request head before it is closed",
    )
    max_pending_connections: Annotated[int, Field(ge=1, le=100_000)] = Field(
        default=256,
        description="connections waiting for a request head (new or idle kept-alive) at once; beyond: new "
        "connections get 503 and are closed (streaming viewers do not count)",
    )


class AuthSettings(_Section):
    """Authentication, sessions and cross-origin access (all off by default)."""

    auth_username: Annotated[str, Field(min_length=1, max_length=128)] = Field(
        default="admin", description="user name for HTTP Basic and the login form"
    )
    auth_password_hash: SecretStr | None = Field(
        default=None,
        description="hash of the password from `espdetect hash-password`; when this or auth_token_hash is "
        "set, every endpoint except /health needs credentials",
    )
    auth_token_hash: SecretStr | None = Field(
        default=None,
        description="SHA-256 (64 hex digits) of a bearer token, from `espdetect hash-password --token`",
    )
    session_secret: SecretStr | None = Field(
        default=None,
        description="key that signs session cookies; none: random per process (sessions end on restart)",
    )
    session_max_age: Annotated[float, Field(ge=60.0, le=30 * 86400.0)] = Field(
        default=12 * 3600.0, description="seconds a login session lasts"
    )
    cors_origins: Annotated[list[str], BeforeValidator(_split_list)] = Field(
        default_factory=list,
        description="origins (https://app.example:8443) a separate front end may call this API from; "
        "empty: CORS off; * allows any origin without credentials",
    )
    allowed_hosts: Annotated[list[str], BeforeValidator(_split_list)] = Field(
        default_factory=list,
        description="host names requests may name in Host besides IP addresses, localhost and this "
        "machine's names (DNS rebinding protection): cam.example, *.example for subdomains, * for any",
    )
    camera_control: CameraControlMode = Field(
        default="auth",
        description="who may change camera sensor settings (POST /cameras/{id}/control): auth (only "
        "authenticated users, when authentication is configured), on, off",
    )
    auth_workers: Annotated[int, Field(ge=0, le=64)] = Field(
        default=0,
        description="password checks (deliberately slow hashes) running at once; 0: one per CPU core",
    )
    auth_queue: Annotated[int, Field(ge=0, le=1024)] = Field(
        default=4,
        description="password checks waiting for a turn beyond the running ones; more get 429 at once "
        "(addresses without recent failures go first)",
    )
    auth_free_failures: Annotated[int, Field(ge=0, le=100)] = Field(
        default=3,
        description="wrong passwords a client address may send before it must back off (0.25 s, doubling "
        "with every further one; 429 until then)",
    )
    auth_backoff_max: Annotated[float, Field(ge=1.0, le=3600.0)] = Field(
        default=30.0, description="seconds: the longest back-off of an address after wrong passwords"
    )

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        out = []
        for origin in value:
            if origin != "*" and not _ORIGIN.match(origin):
                raise ValueError(f"expected origins like https://host:port (no path) or '*', got {origin!r}")
            out.append(origin.rstrip("/").lower())
        return out

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, value: list[str]) -> list[str]:
        return [check_host_pattern(host) for host in value]

    @field_validator("auth_token_hash")
    @classmethod
    def _token_hash(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        text = value.get_secret_value().strip().lower()
        if not _SHA256_HEX.match(text):
            raise ValueError(
                "expected the SHA-256 of the token as 64 hex digits (espdetect hash-password --token)"
            )
        return SecretStr(text)

    @field_validator("auth_password_hash")
    @classmethod
    def _password_hash(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        # Imported here: passwords imports nothing from settings, but keeps hashing in one place.
        from espdetect.server.passwords import check_password_hash_format

        check_password_hash_format(value.get_secret_value())
        return value

    @property
    def enabled(self) -> bool:
        """Whether requests need credentials (a password hash or a token hash is configured)."""
        return self.auth_password_hash is not None or self.auth_token_hash is not None


def _data_dir(value: object) -> Path | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str | Path):
        raise ValueError(f"expected data_dir to be a folder path, got {value!r}")
    return Path(value).expanduser()


class StorageSettings(_Section):
    """Where events, their pictures and changed camera settings are kept, and for how long."""

    data_dir: Annotated[Path | None, BeforeValidator(_data_dir)] = Field(
        default=None,
        description="folder of the event database and snapshots; none: the user's data directory "
        "(~/.local/share/espdetect on Linux)",
    )
    retain_days: Annotated[float, Field(ge=0.0, le=36500.0)] = Field(
        default=30.0, description="days finished events and their pictures are kept; 0: no age limit"
    )
    retain_mb: Annotated[int, Field(ge=0, le=10_000_000)] = Field(
        default=2000,
        description="megabytes events and pictures may take; the oldest finished go first; 0: no size limit",
    )


class MqttSettings(_Section):
    """Events to an MQTT broker, with Home Assistant discovery."""

    mqtt_url: MqttUrl | None = Field(
        default=None,
        description="broker to publish events to: mqtt://[user:password@]host[:port] (mqtts:// for TLS); "
        "turns events on",
    )
    mqtt_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$", max_length=128)] = Field(
        default="espdetect", description="first level of every topic: <prefix>/<camera>/events"
    )
    mqtt_client_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")] | None = Field(
        default=None, description="client id at the broker; none: espdetect-<host name>"
    )
    mqtt_discovery: bool = Field(
        default=True, description="announce cameras and labels to Home Assistant (MQTT discovery)"
    )
    mqtt_discovery_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]+$", max_length=64)] = Field(
        default="homeassistant", description="Home Assistant's discovery prefix"
    )
    mqtt_outbox: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        default=1000,
        description="messages kept for the broker while it is away; beyond, the oldest are dropped (counted)",
    )


class WebhookSettings(_Section):
    """Events POSTed as JSON to URLs of your own."""

    webhook_urls: Annotated[list[HttpUrl], BeforeValidator(_split_list)] = Field(
        default_factory=list,
        description="URLs each event record is POSTed to (JSON, as on MQTT); turns events on",
    )
    webhook_secret: SecretStr | None = Field(
        default=None,
        description="key of the X-Espdetect-Signature header: sha256=HMAC-SHA256(key, timestamp.body)",
    )
    webhook_timeout: Annotated[float, Field(gt=0.0, le=300.0)] = Field(
        default=5.0, description="seconds one POST may take"
    )
    webhook_retries: Annotated[int, Field(ge=0, le=100)] = Field(
        default=5, description="further attempts after a failed POST, 1 s apart and doubling (at most 60 s)"
    )
    webhook_queue: Annotated[int, Field(ge=1, le=100_000)] = Field(
        default=1000, description="records waiting per URL; beyond, the oldest are dropped (counted)"
    )


#: The sections of `ServerSettings`, by their TOML name.
SECTIONS: Final[dict[str, type[_Section]]] = {
    "detector": DetectorSettings,
    "defaults": CameraOptions,
    "upstream": UpstreamSettings,
    "viewers": ViewerSettings,
    "serving": ServingSettings,
    "auth": AuthSettings,
    "storage": StorageSettings,
    "mqtt": MqttSettings,
    "webhooks": WebhookSettings,
}
#: Top-level options (not in a section).
_TOP_LEVEL: Final = ("host", "port", "events", "sensor", "cameras")


def toml_value(value: object) -> str:
    """``value`` written as a TOML value, for config files the tools write from these settings.

    Raises:
        ConfigurationError: a value TOML cannot hold (not finite, or not a scalar or list).

    Example:
        >>> toml_value([1, 0.5, "a\\b", True])
        '[1, 0.5, "a\\\\b", true]'
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigurationError(f"expected a finite number, got {value!r}")
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value))  # JSON string escapes are valid TOML basic-string escapes
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise ConfigurationError(f"expected a TOML scalar or list, got {type(value).__name__}: {value!r}")


def leaf_fields() -> Iterator[tuple[str | None, str, FieldInfo]]:
    """(section or None, option name, its pydantic field) for every option, in schema order."""
    for name in _TOP_LEVEL:
        yield None, name, ServerSettings.model_fields[name]
    for section, model in SECTIONS.items():
        for name, info in model.model_fields.items():
            yield section, name, info


def _section_of() -> dict[str, str]:
    return {name: section for section, name, _ in leaf_fields() if section is not None}


def nest(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` with section options written at the top level moved into their section.

    Example:
        >>> nest({"conf": 0.3, "port": 9000, "viewers": {"retry_after": 2}})
        {'defaults': {'conf': 0.3}, 'port': 9000, 'viewers': {'retry_after': 2}}
    """
    owner = _section_of()
    out: dict[str, Any] = {}

    def put(section: str, key: str, value: Any) -> None:
        table = out.setdefault(section, {})
        if not isinstance(table, dict):
            raise ConfigurationError(f"expected [{section}] options once, got them twice", field=key)
        if key in table:
            raise ConfigurationError(
                f"expected {key} once, got it at the top level and in [{section}]", field=key
            )
        table[key] = value

    for key, value in values.items():
        if key in SECTIONS and isinstance(value, Mapping):
            for inner, inner_value in value.items():
                put(key, inner, inner_value)
        elif key in owner:
            put(owner[key], key, value)
        else:
            out[key] = value
    return out


def merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``, section by section (both nested)."""
    out = {key: dict(value) if isinstance(value, dict) else value for key, value in base.items()}
    for key, value in top.items():
        if key in SECTIONS and isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


class _FlatEnvironment(PydanticBaseSettingsSource):
    """``ESPDETECT_<OPTION>`` for every option, put into the option's section."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        raise NotImplementedError  # __call__ reads every option at once

    def __call__(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for _, name, _ in leaf_fields():
            raw = os.environ.get(ENV_PREFIX + name.upper())
            # An empty variable is an unset one, as compose files write them
            # (``ESPDETECT_AUTH_PASSWORD_HASH: ${HASH:-}``): the file or the default decides.
            if raw is not None and raw.strip():
                found[name] = raw
        return nest(found)


class _Nested(PydanticBaseSettingsSource):
    """Another source's values with flat options moved into their sections, so that sources
    merge section by section (an explicit ``model=`` beats ``ESPDETECT_MODEL``)."""

    def __init__(self, settings_cls: type[BaseSettings], inner: PydanticBaseSettingsSource) -> None:
        super().__init__(settings_cls)
        self.inner = inner

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        raise NotImplementedError  # __call__ takes the inner source's values at once

    def __call__(self) -> dict[str, Any]:
        return nest(self.inner())


class ServerSettings(BaseSettings):
    """Settings of ``espdetect serve`` and `create_app` (see the module documentation).

    Example:
        >>> s = ServerSettings(cameras=["front=http://192.168.4.1:81/stream"], conf=0.3)
        >>> s.cameras[0].id, s.defaults.conf, s.camera_settings()[0].conf
        ('front', 0.3, 0.3)
    """

    model_config = SettingsConfigDict(extra="forbid", validate_default=True, frozen=True)

    host: str = Field(default="127.0.0.1", description="interface the server listens on (0.0.0.0: all)")
    port: Annotated[int, Field(ge=0, le=65535)] = Field(
        default=8000, description="port the server listens on"
    )
    events: bool | None = Field(
        default=None,
        description="record events (and notify, when MQTT or webhooks are configured); none: on when an "
        "MQTT URL or a webhook is configured",
    )
    sensor: SensorValues = Field(
        default_factory=dict,
        description="camera sensor settings applied on every connection, by /control name: framesize "
        "(QVGA, VGA, SVGA... or WxH), quality (4..63, lower is better), brightness, hmirror... "
        "([sensor] in TOML, framesize=VGA,quality=10 here; [cameras.sensor] per camera)",
    )
    cameras: list[CameraConfig] = Field(
        default_factory=list,
        description="cameras: [[cameras]] tables in TOML; id=url,id=url or a JSON list in ESPDETECT_CAMERAS",
    )
    detector: DetectorSettings = Field(default_factory=DetectorSettings)
    defaults: CameraOptions = Field(default_factory=CameraOptions)
    upstream: UpstreamSettings = Field(default_factory=UpstreamSettings)
    viewers: ViewerSettings = Field(default_factory=ViewerSettings)
    serving: ServingSettings = Field(default_factory=ServingSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (_Nested(settings_cls, init_settings), _FlatEnvironment(settings_cls))

    @model_validator(mode="before")
    @classmethod
    def _nest(cls, values: Any) -> Any:
        return nest(values) if isinstance(values, Mapping) else values

    @field_validator("cameras", mode="before")
    @classmethod
    def _parse_cameras(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if not text:
                return []
            if text.startswith("["):
                return json.loads(text)
            value = [part for part in text.split(",") if part.strip()]
        if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
            return [
                parse_camera_spec(item, i) if isinstance(item, str) else item for i, item in enumerate(value)
            ]
        return value

    @model_validator(mode="after")
    def _unique_ids(self) -> ServerSettings:
        seen: set[str] = set()
        for cam in self.cameras:
            if cam.id in seen:
                raise ValueError(f"expected unique camera ids, got {cam.id!r} twice")
            seen.add(cam.id)
        return self

    @model_validator(mode="after")
    def _framesizes_the_firmware_has(self) -> ServerSettings:
        # Where the firmware is configured, a size it lacks is known now; else when it is learned.
        for cam in self.cameras:
            size = cam.sensor.get("framesize", self.sensor.get("framesize"))
            if cam.firmware is not None and size is not None:
                try:
                    framesize_value(str(size), cam.firmware)
                except ValueError as exc:
                    raise ValueError(f"camera {cam.id!r}: sensor.framesize = {size!r}: {exc}") from None
        return self

    @property
    def events_enabled(self) -> bool:
        """Whether events are recorded: ``events``, else whether MQTT or a webhook is configured."""
        if self.events is not None:
            return self.events
        return self.mqtt.mqtt_url is not None or bool(self.webhooks.webhook_urls)

    @property
    def data_dir(self) -> Path:
        """The data directory: ``data_dir``, else the user's data directory."""
        from espdetect.event_store import default_data_dir

        return self.storage.data_dir or default_data_dir()

    @property
    def camera_control_enabled(self) -> bool:
        """Whether ``POST /cameras/{id}/control`` is offered at all."""
        mode = self.auth.camera_control
        return mode == "on" or (mode == "auth" and self.auth.enabled)

    def camera_settings(self) -> list[CameraConfig]:
        """Each camera with the options it does not set taken from ``[defaults]`` and its sensor
        settings over the server-wide ``[sensor]``, in order."""
        return [
            cam.resolved(self.defaults).model_copy(update={"sensor": merge_sensor(self.sensor, cam.sensor)})
            for cam in self.cameras
        ]


def parse_camera_spec(spec: str, index: int = 0) -> CameraConfig:
    """A ``[ID=]URL`` command-line camera; the id defaults to ``cam`` (``cam2``, ... after the first).

    Example:
        >>> parse_camera_spec("front=http://192.168.4.1:81/stream").id
        'front'
        >>> parse_camera_spec("http://192.168.4.1:81/stream", index=1).id
        'cam2'
    """
    text = spec.strip()
    head, sep, tail = text.partition("=")
    if sep and "://" not in head:
        cam_id, url = head.strip(), tail.strip()
    else:
        cam_id, url = ("cam" if index == 0 else f"cam{index + 1}"), text
    return CameraConfig(id=check_camera_id(cam_id, "camera id"), url=check_http_url(url, "camera URL"))


def load_settings(
    config_file: str | Path | None = None, overrides: Mapping[str, Any] | None = None
) -> ServerSettings:
    """Settings from a TOML file, then ``ESPDETECT_*`` variables, then ``overrides`` (highest).

    The TOML file holds the sections of `ServerSettings`; cameras are ``[[cameras]]`` tables::

        [detector]
        model = "yolov8n.onnx"

        [defaults]
        conf = 0.3

        [[cameras]]
        id = "front"
        url = "http://192.168.1.50:81/stream"
        conf = 0.5
        classes = [0]

    Raises:
        ConfigurationError: the file is missing or not valid TOML.
        pydantic.ValidationError: a value is out of range or a key is unknown.

    Example:
        >>> load_settings(None, {"cameras": ["http://192.168.4.1:81/stream"]}).cameras[0].id
        'cam'
    """
    data: dict[str, Any] = {}
    if config_file is not None:
        path = Path(config_file)
        try:
            data = nest(tomllib.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise ConfigurationError(f"expected a TOML config file, got a missing path: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(f"expected valid TOML in {path}, got: {exc}") from None
    # Environment values beat the file, explicit values beat both.
    data = merge(data, _FlatEnvironment(ServerSettings)())
    data = merge(data, nest(overrides or {}))
    # The environment is merged above already: validate the values as they are, without sources.
    return ServerSettings.model_validate(data)
