"""`ServerSettings`: every server option, from keyword arguments, ``ESPDETECT_*`` variables or a TOML file.

Precedence, highest first: explicit values (command line, ``create_app`` callers), environment
variables, the TOML file, the defaults. Per-camera values in the ``cameras`` list override the
server-wide detection and streaming values for that camera only.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from espdetect.exceptions import ConfigurationError
from espdetect.mjpeg import DEFAULT_MAX_PART_SIZE
from espdetect.pipeline import StaleMode

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

__all__ = [
    "CAMERA_ID_PATTERN",
    "CameraConfig",
    "CameraControlMode",
    "CameraSettings",
    "ClassIds",
    "Conf",
    "Quality",
    "ServerSettings",
    "SkipSetting",
    "check_imgsz",
    "control_url_for",
    "load_settings",
    "parse_camera_spec",
    "parse_skip",
    "redact_url",
]

#: What a camera id may look like (it appears in URLs, metric labels and logs).
CAMERA_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
_CAMERA_ID = re.compile(CAMERA_ID_PATTERN)

Conf = Annotated[float, Field(ge=0.0, le=1.0)]
Quality = Annotated[int, Field(ge=1, le=100)]
ClassIds = Annotated[list[Annotated[int, Field(ge=0)]], Field(max_length=1000)]


def parse_skip(value: object) -> int | Literal["auto"]:
    """A frame-skip setting: an integer >= 1 (also as text) or ``"auto"``.

    Example:
        >>> parse_skip("3"), parse_skip("auto")
        (3, 'auto')
    """
    if value == "auto":
        return "auto"
    number: object = value
    if isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
    if isinstance(number, int) and not isinstance(number, bool) and number >= 1:
        return number
    raise ValueError(f"expected an integer >= 1 or 'auto', got {value!r}")


SkipSetting = Annotated[
    int | Literal["auto"], PlainValidator(parse_skip, json_schema_input_type=int | Literal["auto"])
]


def check_imgsz(value: int) -> int:
    """``value`` if it is a model input size YOLO takes: a multiple of 32 within 32..1280."""
    if value % 32 != 0 or not 32 <= value <= 1280:
        raise ValueError(f"expected imgsz to be a multiple of 32 between 32 and 1280, got {value}")
    return value


def _check_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"expected an http(s) camera URL, got {value!r}")
    return value


def control_url_for(stream_url: str) -> str:
    """The base URL of a camera's control server (``/control``, ``/status``) from its stream URL.

    The firmware serves the stream on port 81 and everything else on port 80; the emulator
    (``Emulator(port=P)``) uses P and P+1 the same way. So an explicit stream port N maps to
    N-1, and a URL without a port keeps the scheme's default port. Credentials are kept.

    Example:
        >>> control_url_for("http://192.168.4.1:81/stream")
        'http://192.168.4.1:80'
        >>> control_url_for("https://cam.example/stream")
        'https://cam.example'
    """
    parts = urlsplit(stream_url)
    host = parts.netloc
    if parts.port is not None:
        host = host[: host.rfind(":")] + f":{max(1, parts.port - 1)}"
    return f"{parts.scheme}://{host}"


_SECRET_QUERY_KEY = re.compile(r"(?i)(pass|pwd|secret|token|key|auth|sig)")


def redact_url(url: str) -> str:
    """``url`` fit for logs: the password and secret-looking query values replaced by ``***``.

    Example:
        >>> redact_url("http://admin:hunter2@cam.local:81/stream?token=abc&res=vga")
        'http://admin:***@cam.local:81/stream?token=***&res=vga'
    """
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


class CameraConfig(BaseModel):
    """One camera: its id (used in URLs), its stream URL and optional per-camera overrides.

    Fields left as None take the server-wide value.

    Example:
        >>> CameraConfig(id="front", url="http://192.168.4.1:81/stream", conf=0.4).conf
        0.4
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[str, Field(pattern=CAMERA_ID_PATTERN)]
    url: str
    conf: Conf | None = None
    iou: Conf | None = None
    imgsz: int | None = None
    skip: SkipSetting | None = None
    stale: StaleMode | None = None
    quality: Quality | None = None
    classes: ClassIds | None = None
    #: Base URL of the camera's control server; None: derived from ``url`` (`control_url_for`).
    control_url: str | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _check_url(value)

    @field_validator("control_url")
    @classmethod
    def _control_url(cls, value: str | None) -> str | None:
        return None if value is None else _check_url(value).rstrip("/")

    @field_validator("imgsz")
    @classmethod
    def _imgsz(cls, value: int | None) -> int | None:
        return None if value is None else check_imgsz(value)


class CameraSettings(BaseModel):
    """The effective settings of one camera (server-wide values merged with its overrides).

    Example:
        >>> s = ServerSettings(cameras=[CameraConfig(id="a", url="http://h/stream", skip=2)])
        >>> s.camera_settings()[0].skip
        2
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    url: str
    conf: Conf
    iou: Conf
    imgsz: int | None
    skip: SkipSetting
    stale: StaleMode
    quality: Quality
    classes: ClassIds | None
    control_url: str | None = None


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
    if not _CAMERA_ID.match(cam_id):
        raise ConfigurationError(
            f"expected a camera id of 1-64 letters, digits, '_' or '-', got {cam_id!r} in {spec!r}"
        )
    try:
        _check_url(url)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
    return CameraConfig(id=cam_id, url=url)


class ServerSettings(BaseSettings):
    """Settings of ``espdetect serve`` and `create_app`.

    Every field can be set by an ``ESPDETECT_<FIELD>`` environment variable
    (``ESPDETECT_MODEL``, ``ESPDETECT_CONF``, ``ESPDETECT_MAX_VIEWERS_TOTAL``, ...).
    ``ESPDETECT_CAMERAS`` takes ``id=url,id=url`` or a JSON list of camera objects.

    Example:
        >>> s = ServerSettings(cameras=["front=http://192.168.4.1:81/stream"], conf=0.3)
        >>> s.cameras[0].id, s.camera_settings()[0].conf
        ('front', 0.3)
    """

    model_config = SettingsConfigDict(env_prefix="ESPDETECT_", extra="forbid", validate_default=True)

    #: Interface and port ``espdetect serve`` listens on.
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8000
    cameras: Annotated[list[CameraConfig], NoDecode] = Field(default_factory=list)

    # -- detection (per-camera overridable: conf, iou, imgsz, classes) --
    #: Weights: a .pt/.onnx file, an OpenVINO folder or a model name Ultralytics knows;
    #: None: ``yolov8n.pt`` (downloaded by Ultralytics on first use).
    model: str | None = None
    conf: Conf = 0.25
    iou: Conf = 0.45
    #: Model input size; None: the model's own (the fixed size of an export, else 640).
    imgsz: int | None = None
    half: bool = False
    #: Torch device ("cpu", "cuda:0", ...); None lets Ultralytics choose.
    device: str | None = None
    classes: ClassIds | None = None
    #: Model calls running at once across all cameras. One CPU inference already uses every
    #: core, so 1 is fastest there; on a GPU 2 can overlap one camera's pre/postprocessing
    #: with another's inference. Cameras take turns in the order they asked.
    detect_slots: Annotated[int, Field(ge=1, le=64)] = 1

    # -- pipeline and streams (per-camera overridable: skip, stale, quality) --
    skip: SkipSetting = "auto"
    stale: StaleMode = StaleMode.DRAW_LAST
    #: JPEG quality of the annotated stream.
    quality: Quality = 80
    #: The lower JPEG quality tier that annotated viewers with slow connections get.
    low_quality: Quality = 40
    #: Seconds the camera connection stays open after the last viewer leaves.
    grace_period: Annotated[float, Field(ge=0.0, le=3600.0)] = 2.0
    #: Seconds without a complete camera frame before the camera connection is recycled.
    stall_timeout: Annotated[float, Field(gt=0.0)] = 5.0
    #: Seconds to connect to a camera and get its reply head (a camera busy with another
    #: client accepts the connection and never answers: this bounds that wait).
    connect_timeout: Annotated[float, Field(gt=0.0, le=300.0)] = 5.0
    #: Longest pause between camera reconnection attempts (capped exponential backoff from
    #: 0.1 s); a camera that comes back is read again within this plus one connect.
    backoff_max: Annotated[float, Field(ge=0.1, le=300.0)] = 1.0
    #: Camera parts (JPEGs) larger than this are dropped unread; bounds memory per camera.
    max_part_size: Annotated[int, Field(ge=1024, le=256 * 1024 * 1024)] = DEFAULT_MAX_PART_SIZE

    # -- viewers --
    #: Seconds a viewer may block one send before it is disconnected.
    viewer_timeout: Annotated[float, Field(gt=0.0)] = 10.0
    #: Kernel send buffer of each viewer connection in bytes, set by `StreamingServer` (0: the
    #: OS default, which grows to megabytes and lets a slow viewer fall seconds behind unnoticed).
    send_buffer: Annotated[int, Field(ge=0, le=64 * 1024 * 1024)] = 256 * 1024
    #: Seconds a snapshot waits for a frame when none is cached (then 503).
    snapshot_timeout: Annotated[float, Field(gt=0.0)] = 5.0
    max_viewers_per_camera: Annotated[int, Field(ge=1)] = 10
    max_viewers_total: Annotated[int, Field(ge=1)] = 50
    #: Seconds sent in Retry-After when a limit turns a viewer away.
    retry_after: Annotated[int, Field(ge=1)] = 5
    #: Seconds of history behind the fps figures of /stats.
    stats_window: Annotated[float, Field(gt=0.0, le=300.0)] = 5.0
    #: Seconds uvicorn waits for connections on shutdown before cancelling them.
    shutdown_timeout: Annotated[float, Field(gt=0.0)] = 1.0
    access_log: bool = False
    #: glibc only: return freed frame memory to the OS (two malloc arenas, a fixed 128 KiB mmap
    #: threshold) so RSS stays flat over days; process-wide, so off unless the server owns the
    #: process (`StreamingServer` applies it).
    tune_malloc: bool = False
    #: Requests whose body is larger than this get 413 (settings and control bodies are tiny).
    max_body_size: Annotated[int, Field(ge=1024, le=64 * 1024 * 1024)] = 1024 * 1024

    # -- security (see espdetect.server.auth; all off by default) --
    #: User name for HTTP Basic and the login form.
    auth_username: Annotated[str, Field(min_length=1, max_length=128)] = "admin"
    #: Hash of the password (``espdetect hash-password``): ``pbkdf2_sha256$...`` or ``scrypt$...``.
    #: When this or ``auth_token_hash`` is set, every endpoint except /health needs credentials.
    auth_password_hash: SecretStr | None = None
    #: SHA-256 (64 hex digits) of a bearer token (``espdetect hash-password --token``).
    auth_token_hash: SecretStr | None = None
    #: Key that signs session cookies; None: a random key per process (sessions end on restart).
    session_secret: SecretStr | None = None
    #: Seconds a login session lasts.
    session_max_age: Annotated[float, Field(ge=60.0, le=30 * 86400.0)] = 12 * 3600.0
    #: Origins (``https://app.example:8443``) a separate front end may call this API from;
    #: empty: CORS off. ``*`` allows any origin without credentials.
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    #: Who may change camera sensor settings through ``POST /cameras/{id}/control``.
    camera_control: CameraControlMode = "auth"

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

    @field_validator("imgsz")
    @classmethod
    def _imgsz(cls, value: int | None) -> int | None:
        return None if value is None else check_imgsz(value)

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        out = []
        for origin in value:
            if origin != "*" and not _ORIGIN.match(origin):
                raise ValueError(f"expected origins like https://host:port (no path) or '*', got {origin!r}")
            out.append(origin.rstrip("/").lower())
        return out

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
    def auth_enabled(self) -> bool:
        """Whether requests need credentials (a password hash or a token hash is configured)."""
        return self.auth_password_hash is not None or self.auth_token_hash is not None

    @property
    def camera_control_enabled(self) -> bool:
        """Whether ``POST /cameras/{id}/control`` is offered at all."""
        return self.camera_control == "on" or (self.camera_control == "auth" and self.auth_enabled)

    @model_validator(mode="after")
    def _unique_ids(self) -> ServerSettings:
        seen: set[str] = set()
        for cam in self.cameras:
            if cam.id in seen:
                raise ValueError(f"expected unique camera ids, got {cam.id!r} twice")
            seen.add(cam.id)
        return self

    def camera_settings(self) -> list[CameraSettings]:
        """Each camera's effective settings, in configuration order."""
        return [
            CameraSettings(
                id=cam.id,
                url=cam.url,
                conf=self.conf if cam.conf is None else cam.conf,
                iou=self.iou if cam.iou is None else cam.iou,
                imgsz=self.imgsz if cam.imgsz is None else cam.imgsz,
                skip=self.skip if cam.skip is None else cam.skip,
                stale=self.stale if cam.stale is None else cam.stale,
                quality=self.quality if cam.quality is None else cam.quality,
                classes=self.classes if cam.classes is None else cam.classes,
                control_url=cam.control_url,
            )
            for cam in self.cameras
        ]


def load_settings(
    config_file: str | Path | None = None, overrides: Mapping[str, Any] | None = None
) -> ServerSettings:
    """Settings from a TOML file, then ``ESPDETECT_*`` variables, then ``overrides`` (highest).

    The TOML file holds the same keys as `ServerSettings`; cameras are ``[[cameras]]`` tables::

        model = "yolov8n.onnx"
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
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigurationError(f"expected a TOML config file, got a missing path: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(f"expected valid TOML in {path}, got: {exc}") from None
    # Environment values beat the file: read them alone, keep only what they set.
    from_env = ServerSettings()
    data.update(from_env.model_dump(include=from_env.model_fields_set))
    data.update(overrides or {})
    return ServerSettings(**data)
