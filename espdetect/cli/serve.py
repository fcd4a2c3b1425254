"""``espdetect serve``: the detection server for one or more cameras, until Ctrl-C / SIGTERM."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from espdetect.cli._command import Command

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from pydantic.fields import FieldInfo

    from espdetect.detectors.base import Detector
    from espdetect.server.app import StreamingServer
    from espdetect.server.settings import ServerSettings

__all__ = [
    "COMMAND",
    "CONFIG_NAME",
    "CONFIG_VARIABLE",
    "add_server_options",
    "config_path",
    "describe",
    "exit_interrupted",
    "run",
    "serve_forever",
    "settings_from_args",
    "startup_warnings",
]

_EPILOG = """\
Every option can also be set by an ESPDETECT_<OPTION> environment variable (ESPDETECT_MODEL,
ESPDETECT_CONF, ESPDETECT_CAMERAS="front=http://...,back=http://...") or in a TOML file given
with --config (or ESPDETECT_CONFIG); command-line values win, then the environment, then the file.
Secrets (auth_password_hash, auth_token_hash, session_secret) have no flag: set them in the
environment or the file.

TOML example (sections as in the option groups above; a key may also stand at the top level):
  [detector]
  model = "yolov8n.onnx"

  [defaults]          # every camera, unless it sets its own
  conf = 0.3

  [viewers]
  max_viewers_total = 20

  [sensor]            # the cameras' own settings, applied on every connection (/control names)
  framesize = "VGA"   # a size name or WxH; quality 4..63 (lower is better), hmirror = true...

  [[cameras]]
  id = "front"
  url = "http://192.168.1.50:81/stream"
  conf = 0.5          # per camera: conf iou imgsz classes skip stale quality
  classes = [0]
  firmware = "2.x"    # optional (legacy, 2.x, 3.x): otherwise learned from the camera
  [cameras.sensor]    # this camera's sensor settings, over [sensor]
  quality = 10
"""

#: The variable that names the settings file (or its folder) when --config does not.
CONFIG_VARIABLE = "ESPDETECT_CONFIG"
#: The settings file looked for in a folder given as --config or ESPDETECT_CONFIG.
CONFIG_NAME = "espdetect.toml"
#: Shorter flags kept from before the options came from the settings schema.
_ALIASES: dict[str, tuple[str, ...]] = {"max_viewers_per_camera": ("--max-viewers",)}
#: Options without a flag: the camera list has --camera; secrets stay off the command line
#: (other users of the machine can read it).
_NO_FLAG = frozenset({"cameras", "auth_password_hash", "auth_token_hash", "session_secret", "webhook_secret"})
#: What a nullable option's flag takes for "none" (classes: "all" reads better).
_NONE_WORDS = frozenset({"none", "all", ""})


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _is_bool(info: FieldInfo) -> bool:
    # ``bool | None`` (events: unset means "decide from the other settings") is a switch too.
    return info.annotation is bool or info.annotation == bool | None


def add_server_options(parser: argparse.ArgumentParser, *, default_port: str = "8000") -> None:
    """One flag per option of the settings schema, grouped by section (None when not given)."""
    from espdetect.server.settings import leaf_fields

    groups: dict[str | None, argparse._ArgumentGroup] = {}
    for section, name, info in leaf_fields():
        if name in _NO_FLAG:
            continue
        group = groups.get(section)
        if group is None:
            group = groups[section] = parser.add_argument_group(section or "network")
        default = default_port if name == "port" else info.get_default(call_default_factory=True)
        shown = "none" if default is None else default.value if isinstance(default, Enum) else default
        help_text = f"{info.description} (default {shown}; ESPDETECT_{name.upper()})".replace("%", "%%")
        flags = (_flag(name), *_ALIASES.get(name, ()))
        if _is_bool(info):
            group.add_argument(
                *flags, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        else:
            group.add_argument(*flags, dest=name, default=None, metavar=name.upper(), help=help_text)


def _flag_value(name: str, value: object) -> object:
    """A flag's text as the settings take it (a nullable option's "none" is None)."""
    from espdetect.server.settings import leaf_fields

    nullable = {n for _, n, info in leaf_fields() if not info.is_required() and info.default is None}
    if isinstance(value, str) and name in nullable and value.strip().lower() in _NONE_WORDS:
        return None
    return value


def settings_from_args(
    args: argparse.Namespace, extra: dict[str, Any] | None = None, config_file: str | Path | None = None
) -> ServerSettings:
    """Merge command-line options (highest) over the environment and the TOML file.

    Raises:
        ConfigurationError, pydantic.ValidationError: a bad value.
    """
    from espdetect.server.settings import leaf_fields, load_settings

    given = vars(args)
    overrides: dict[str, Any] = {
        name: _flag_value(name, given[name]) for _, name, _ in leaf_fields() if given.get(name) is not None
    }
    overrides.update(extra or {})
    return load_settings(config_file, overrides)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--camera",
        action="append",
        default=None,
        metavar="[ID=]URL",
        help="camera stream URL, e.g. front=http://192.168.4.1:81/stream (repeat for several; "
        "replaces the cameras of --config)",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help=f"TOML settings file, or a folder holding {CONFIG_NAME} (read when present)",
    )
    add_server_options(parser)


def describe(settings: ServerSettings, url: str) -> str:
    """What the server prints once it listens."""
    lines = [f"espdetect server: {url}/  (viewer page)"]
    for cam in settings.cameras:
        lines.append(
            f"  {cam.id}: {url}/cameras/{cam.id}/detect  (annotated)  {url}/cameras/{cam.id}/stream  (raw)"
        )
    lines.append(f"  stats: {url}/stats  metrics: {url}/metrics")
    lines.append("Press Ctrl-C to stop.")
    return "\n".join(lines)


def config_path(value: str | Path | None, environ: Mapping[str, str] = os.environ) -> Path | None:
    """The TOML file ``--config`` names, else ``ESPDETECT_CONFIG``; a folder means its
    ``espdetect.toml`` when there is one (the container's ``/config`` volume may be empty: the
    environment is enough).

    Example:
        >>> config_path(None, environ={}) is None
        True
    """
    value = value or environ.get(CONFIG_VARIABLE) or None
    if value is None:
        return None
    path = Path(value)
    if path.is_dir():
        inside = path / CONFIG_NAME
        return inside if inside.is_file() else None
    return path


def startup_warnings(settings: ServerSettings, config_file: Path | None) -> list[str]:
    """What a person starting the server should know: nothing to serve, or no password on a network.

    Example:
        >>> from espdetect.server.settings import load_settings
        >>> startup_warnings(load_settings(None, {"cameras": ["http://192.168.4.1:81/stream"]}), None)
        []
    """
    out = []
    if not settings.cameras:
        where = f"{config_file}" if config_file is not None else "a TOML file given with --config"
        out.append(
            "no camera configured: serving /health and the viewer page until one is. Configure cameras "
            f"with ESPDETECT_CAMERAS=front=http://CAMERA-ADDRESS:81/stream, [[cameras]] tables in {where}, "
            "or --camera [ID=]URL, then restart"
        )
    if not settings.auth.enabled and not _loopback(settings.host):
        out.append(
            f"listening on {settings.host}:{settings.port} without authentication: anyone who can reach "
            "this port can watch the cameras. Set auth_password_hash or auth_token_hash "
            "(espdetect hash-password prints one)"
        )
    return out


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host.lower() == "localhost"


def run(args: argparse.Namespace) -> int:
    """Load the settings and serve until interrupted."""
    from espdetect.server.settings import parse_camera_spec

    config_file = config_path(args.config)
    extra: dict[str, Any] = {}
    if args.camera:
        extra["cameras"] = [parse_camera_spec(spec, i) for i, spec in enumerate(args.camera)]
    settings = settings_from_args(args, extra, config_file)
    for warning in startup_warnings(settings, config_file):
        print(f"espdetect serve: {warning}", file=sys.stderr, flush=True)
    try:
        started = serve_forever(settings, lambda s: print(describe(settings, s.url), flush=True))
    except KeyboardInterrupt:
        exit_interrupted()
    return 0 if started else 1


def serve_forever(settings: ServerSettings, on_started: Callable[[StreamingServer], None]) -> bool:
    """Bind the port, load the model, then serve until stopped; whether the server started.

    The port and the model are checked before anything else happens, so a port in use or a model
    that cannot load (or cannot take a camera's settings) is one clear error, raised here.
    """
    from espdetect.server.app import StreamingServer, check_event_store, create_app, load_detector

    check_event_store(settings)
    loaded: list[Detector] = []
    server = StreamingServer(
        create_app(settings, detector_factory=lambda _: loaded[0]), settings, on_started=on_started
    )
    with server.bind() as sock:
        loaded.append(load_detector(settings))
        server.run(sockets=[sock])
    return server.started


def exit_interrupted() -> NoReturn:
    """Leave at once after Ctrl-C, once the server has closed every connection.

    uvicorn re-raises the interrupt after a complete shutdown; what would remain is the
    interpreter's teardown of PyTorch and friends, which alone takes seconds.
    """
    print("stopped", flush=True)
    logging.shutdown()
    sys.stderr.flush()
    os._exit(130)


COMMAND = Command(
    name="serve",
    help="serve raw and annotated MJPEG, detections, stats and a viewer page for ESP32 cameras",
    description="Run the espdetect server: one camera connection and one detection per frame, "
    "whatever the number of viewers.",
    add_arguments=_add_arguments,
    run=run,
    epilog=_EPILOG,
)
