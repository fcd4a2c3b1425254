"""``espdetect demo``: an emulated ESP32-CAM plus the server, ready in the browser."""

from __future__ import annotations

import argparse
import webbrowser
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from espdetect.emulator import EmulatorConfig
    from espdetect.server.app import StreamingServer

from espdetect.cli._command import Command
from espdetect.cli.serve import (
    add_server_options,
    describe,
    exit_interrupted,
    serve_forever,
    settings_from_args,
)

__all__ = ["COMMAND", "run"]


def _size(text: str) -> tuple[int, int]:
    w, sep, h = text.lower().partition("x")
    if not sep or not w.isdigit() or not h.isdigit():
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 640x480, got {text!r}")
    return (int(w), int(h))


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    cam = parser.add_argument_group("emulated camera")
    cam.add_argument("--fps", type=float, default=15.0, help="camera frames per second (default 15)")
    cam.add_argument("--size", type=_size, default=(640, 480), help="camera frame size WxH (default 640x480)")
    parser.add_argument("--open", action="store_true", help="open the viewer page in the default browser")
    add_server_options(parser)


def run(args: argparse.Namespace) -> int:
    """Run the emulator and the server until interrupted."""
    from espdetect.emulator import EmulatorConfig

    config = EmulatorConfig(fps=args.fps if args.fps > 0 else None, size=args.size, prerender=True)
    print("starting the emulated camera...", flush=True)
    try:
        return _serve(args, config)
    except KeyboardInterrupt:
        exit_interrupted()


def _serve(args: argparse.Namespace, config: EmulatorConfig) -> int:
    from espdetect.emulator import EmulatorThread

    with EmulatorThread(config, host="127.0.0.1", port=0) as camera:
        extra: dict[str, Any] = {"cameras": [f"cam={camera.stream_url}"]}
        settings = settings_from_args(args, extra)
        print(f"emulated ESP32-CAM: {camera.stream_url}; loading the model...", flush=True)

        def started(server: StreamingServer) -> None:
            print(describe(settings, server.url), flush=True)
            if args.open:
                webbrowser.open(f"{server.url}/")

        started_ok = serve_forever(settings, started)
    return 0 if started_ok else 1


COMMAND = Command(
    name="demo",
    help="start an emulated ESP32-CAM and the server, and print the viewer URL",
    description="Start an emulated ESP32-CAM (moving sample photos with people and a bus) on free "
    "ports and the espdetect server in front of it; open the printed URL in a browser.",
    add_arguments=_add_arguments,
    run=run,
)
