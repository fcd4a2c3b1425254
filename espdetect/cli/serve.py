"""``espdetect serve``: the detection server for one or more cameras, until Ctrl-C / SIGTERM."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from espdetect.server.settings import ServerSettings

__all__ = ["add_server_options", "describe", "exit_interrupted", "register", "run", "settings_from_args"]

_EPILOG = """\
Every option can also be set by an ESPDETECT_<NAME> environment variable (ESPDETECT_MODEL,
ESPDETECT_CONF, ESPDETECT_CAMERAS="front=http://...,back=http://...") or in a TOML file given
with --config (or ESPDETECT_CONFIG); command-line values win, then the environment, then the file.

TOML example:
  model = "yolov8n.onnx"
  conf = 0.3
  max_viewers_total = 20

  [[cameras]]
  id = "front"
  url = "http://192.168.1.50:81/stream"
  conf = 0.5          # per camera: conf iou imgsz skip stale quality classes
  classes = [0]

  [[cameras]]
  id = "garage"
  url = "http://192.168.1.51:81/stream"
"""


def _skip(text: str) -> int | str:
    if text == "auto":
        return text
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise argparse.ArgumentTypeError(f"expected an integer >= 1 or 'auto', got {text!r}")


def _classes(text: str) -> list[int] | str:
    if text.strip().lower() in ("", "all", "none"):
        return "all"
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated class ids such as 0,2, got {text!r}"
        ) from None


def add_server_options(parser: argparse.ArgumentParser, *, default_port: str = "8000") -> None:
    """Options shared by ``serve`` and ``demo`` (None when not given, so lower layers apply)."""
    net = parser.add_argument_group("network")
    net.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1)")
    net.add_argument("--port", type=int, default=None, help=f"port to listen on (default {default_port})")
    det = parser.add_argument_group("detection")
    det.add_argument(
        "--model", default=None, help="weights: .pt/.onnx file or OpenVINO folder (default yolov8n.pt)"
    )
    det.add_argument("--conf", type=float, default=None, help="confidence threshold 0..1 (default 0.25)")
    det.add_argument("--iou", type=float, default=None, help="NMS IoU threshold 0..1 (default 0.45)")
    det.add_argument(
        "--imgsz", type=int, default=None, help="model input size, multiple of 32 (default: the model's)"
    )
    det.add_argument("--half", action="store_true", default=None, help="fp16 inference (CUDA only)")
    det.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    det.add_argument(
        "--classes", type=_classes, default=None, help="class ids to keep, e.g. 0,2, or all (default all)"
    )
    det.add_argument(
        "--skip", type=_skip, default=None, help="detect every Nth frame, or auto (default auto)"
    )
    det.add_argument(
        "--stale",
        choices=("draw_last", "raw"),
        default=None,
        help="frames without fresh boxes: draw the last boxes or send the camera JPEG (default draw_last)",
    )
    det.add_argument(
        "--detect-slots",
        type=int,
        default=None,
        help="model calls at once across all cameras (default 1: best on a CPU)",
    )
    out = parser.add_argument_group("streams")
    out.add_argument("--quality", type=int, default=None, help="annotated JPEG quality 1..100 (default 80)")
    out.add_argument(
        "--low-quality", type=int, default=None, help="JPEG quality for viewers falling behind (default 40)"
    )
    out.add_argument(
        "--grace-period",
        type=float,
        default=None,
        help="seconds the camera stays open after the last viewer (2)",
    )
    out.add_argument("--max-viewers", type=int, default=None, help="viewers per camera (default 10)")
    out.add_argument(
        "--max-viewers-total", type=int, default=None, help="viewers on all cameras (default 50)"
    )
    out.add_argument(
        "--viewer-timeout", type=float, default=None, help="drop a viewer whose send blocks this long (10 s)"
    )
    out.add_argument("--access-log", action="store_true", default=None, help="log every HTTP request")


_OPTION_FIELDS = {
    "host": "host",
    "port": "port",
    "model": "model",
    "conf": "conf",
    "iou": "iou",
    "imgsz": "imgsz",
    "half": "half",
    "device": "device",
    "skip": "skip",
    "stale": "stale",
    "detect_slots": "detect_slots",
    "quality": "quality",
    "low_quality": "low_quality",
    "grace_period": "grace_period",
    "max_viewers": "max_viewers_per_camera",
    "max_viewers_total": "max_viewers_total",
    "viewer_timeout": "viewer_timeout",
    "access_log": "access_log",
}


def settings_from_args(
    args: argparse.Namespace, extra: dict[str, Any] | None = None, config_file: str | Path | None = None
) -> ServerSettings:
    """Merge command-line options (highest) over the environment and the TOML file.

    Raises:
        ConfigurationError, pydantic.ValidationError: a bad value.
    """
    from espdetect.server.settings import load_settings

    overrides: dict[str, Any] = {
        field: getattr(args, option)
        for option, field in _OPTION_FIELDS.items()
        if getattr(args, option) is not None
    }
    classes = getattr(args, "classes", None)
    if classes is not None:
        overrides["classes"] = None if classes == "all" else classes
    overrides.update(extra or {})
    return load_settings(config_file, overrides)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``serve`` sub-command."""
    parser = subparsers.add_parser(
        "serve",
        help="serve raw and annotated MJPEG, detections, stats and a viewer page for ESP32 cameras",
        description="Run the espdetect server: one camera connection and one detection per frame, "
        "whatever the number of viewers.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--camera",
        action="append",
        default=None,
        metavar="[ID=]URL",
        help="camera stream URL, e.g. front=http://192.168.4.1:81/stream (repeat for several; "
        "replaces the cameras of --config)",
    )
    parser.add_argument("--config", type=Path, default=None, metavar="FILE", help="TOML settings file")
    add_server_options(parser)
    parser.set_defaults(func=run)


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


def run(args: argparse.Namespace) -> int:
    """Load the settings and serve until interrupted."""
    from pydantic import ValidationError

    from espdetect.exceptions import ConfigurationError
    from espdetect.server.app import StreamingServer, create_app
    from espdetect.server.settings import parse_camera_spec

    config_file = args.config or os.environ.get("ESPDETECT_CONFIG") or None
    try:
        extra: dict[str, Any] = {}
        if args.camera:
            extra["cameras"] = [parse_camera_spec(spec, i) for i, spec in enumerate(args.camera)]
        settings = settings_from_args(args, extra, config_file)
    except (ConfigurationError, ValidationError) as exc:
        print(f"espdetect serve: {exc}")
        return 2
    if not settings.cameras:
        print(
            "espdetect serve: expected at least one camera (--camera [ID=]URL, ESPDETECT_CAMERAS or --config)"
        )
        return 2
    server = StreamingServer(
        create_app(settings), settings, on_started=lambda s: print(describe(settings, s.url), flush=True)
    )
    try:
        server.run()
    except KeyboardInterrupt:
        exit_interrupted()
    return 0 if server.started else 1


def exit_interrupted() -> NoReturn:
    """Leave at once after Ctrl-C, once the server has closed every connection.

    uvicorn re-raises the interrupt after a complete shutdown; what would remain is the
    interpreter's teardown of PyTorch and friends, which alone takes seconds.
    """
    print("stopped", flush=True)
    logging.shutdown()
    sys.stderr.flush()
    os._exit(130)
