"""``espdetect emulate``: run an emulated ESP32-CAM until Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from pathlib import Path
from typing import TYPE_CHECKING

from espdetect.cli._command import Command

if TYPE_CHECKING:
    from espdetect.emulator.config import EmulatorConfig
    from espdetect.emulator.faults import Fault

__all__ = ["COMMAND", "run"]

_FAULT_HELP = """\
fault syntax: KIND[:KEY=VALUE[,KEY=VALUE]] (repeat --fault for several)
  stall[:frames=N,seconds=S]        after N frames (0), send nothing for S s (forever), socket open
  drop_after:frames=N               close each stream after N frames
  corrupt_jpeg[:frames=N]           flip bytes mid-image in every N-th frame (1)
  truncated_jpeg[:frames=N,size=B]  cut every N-th frame to B bytes (half)
  wrong_length[:frames=N,delta=D]   Content-Length off by D (+1000) in every N-th frame
  oversize[:frames=N,size=B]        pad every N-th frame to B bytes (6 MiB)
  html_error[:status=CODE]          answer /stream with an HTML error page (503)
  legacy_framing                    pre-2020 part order, no X-Timestamp / X-Framerate
  refuse[:frames=N,seconds=S]       reboot (after N stream frames, else at once): refuse for S s (5)
  slow[:rate=B]                     send the stream at B bytes/s (20000)
examples: --fault stall:seconds=3 --fault drop_after:frames=50 --fault refuse:seconds=5
"""


def _size(text: str) -> tuple[int, int]:
    w, sep, h = text.lower().partition("x")
    if not sep or not w.isdigit() or not h.isdigit():
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 640x480, got {text!r}")
    return (int(w), int(h))


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65534:
        raise argparse.ArgumentTypeError(
            f"expected 0 (any free port) or 1..65534 (stream on PORT+1), got {text!r}"
        )
    return int(text)


def _fault(text: str) -> Fault:
    from espdetect.emulator.faults import parse_fault

    try:
        return parse_fault(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument(
        "--port",
        type=_port,
        default=8080,
        help="control port; the stream is on PORT+1 (default 8080; 0: any)",
    )
    parser.add_argument(
        "--fps",
        type=float,
        default=None,
        help="frames per second; 0 for unlimited (default 15; with --sensor-model ov2640 a cap, "
        "default none)",
    )
    parser.add_argument(
        "--sensor-model",
        choices=("ideal", "ov2640"),
        default="ideal",
        help="ideal: --fps at every size (default); ov2640: the board's frame rate per frame size "
        "and quality, and a few bad frames after a framesize change",
    )
    parser.add_argument("--size", type=_size, default=(320, 240), help="frame size WxH (default 320x240)")
    parser.add_argument(
        "--framesize", type=int, default=None, help="frame size as the firmware enum (overrides --size)"
    )
    parser.add_argument(
        "--quality", type=int, default=12, help="JPEG quality 0..63, lower is better (default 12)"
    )
    parser.add_argument(
        "--firmware",
        choices=("legacy", "2.x", "3.x"),
        default="2.x",
        help="firmware generation: framesize numbering, /status keys, stream framing (default 2.x)",
    )
    _add_scene_arguments(parser)
    parser.add_argument(
        "--fault", type=_fault, action="append", default=[], metavar="SPEC", help="inject a fault (see below)"
    )
    parser.add_argument(
        "--max-stream-clients", type=int, default=1, help="streams served at once; others wait (default 1)"
    )


def _add_scene_arguments(parser: argparse.ArgumentParser) -> None:
    picture = parser.add_mutually_exclusive_group()
    picture.add_argument(
        "--scene",
        choices=("photos", "yard"),
        default="photos",
        help="built-in scene: photos (moving sample photos, the default) or yard (people walking "
        "across a still yard, after --still-seconds of nothing)",
    )
    picture.add_argument(
        "--source",
        type=Path,
        default=None,
        help="video file, image folder or image instead of a built-in scene",
    )
    parser.add_argument(
        "--still-seconds",
        type=float,
        default=12.0,
        help="yard scene: seconds of empty yard before the first person (default 12)",
    )
    parser.add_argument(
        "--stand-seconds",
        type=float,
        default=3.0,
        help="yard scene: seconds the first person stands still before walking on (default 3)",
    )
    parser.add_argument(
        "--noise",
        type=int,
        default=0,
        metavar="LEVELS",
        help="sensor noise: the most a pixel moves, in grey levels, 0..127 (default 0: off)",
    )
    parser.add_argument(
        "--brightness-ramp",
        type=float,
        default=0.0,
        metavar="LEVELS",
        help="brightness drift: grey levels added at mid-loop, back to 0 at the loop's end; "
        "negative darkens (default 0: off)",
    )


def _describe_scene(config: EmulatorConfig) -> str:
    text = str(config.scene)
    if config.scene == "yard":
        text += f" (first person after {config.still_seconds:g} s)"
    if config.noise:
        text += f", noise {config.noise} levels"
    if config.brightness_ramp:
        text += f", brightness ramp {config.brightness_ramp:+g}"
    return text


def run(args: argparse.Namespace) -> int:
    """Run the emulator until interrupted.

    Raises:
        ConfigurationError: a setting is out of range or the scene cannot be read.
        OSError: a port cannot be bound.
    """
    from espdetect.emulator import Emulator, EmulatorConfig

    fps = args.fps if args.fps is not None else (None if args.sensor_model == "ov2640" else 15.0)
    config = EmulatorConfig(
        fps=fps if fps else None,
        framesize=args.framesize,
        size=args.size,
        quality=args.quality,
        scene=args.source if args.source is not None else args.scene,
        firmware=args.firmware,
        max_stream_clients=args.max_stream_clients,
        faults=tuple(args.fault),
        still_seconds=args.still_seconds,
        stand_seconds=args.stand_seconds,
        noise=args.noise,
        brightness_ramp=args.brightness_ramp,
        prerender=True,
        sensor_model=args.sensor_model,
    )

    async def serve() -> None:
        async with Emulator(config, host=args.host, port=args.port) as emu:
            w, h = emu.frame_size
            rate = f"{config.fps:g} fps" if config.fps else "unlimited fps"
            if config.sensor_model != "ideal":
                rate += f", {config.sensor_model} sensor model"
            print(f"ESP32-CAM emulator ({config.firmware} firmware, {w}x{h}, {rate})")
            print(f"  control: {emu.control_url}/  status: {emu.status_url}")
            print(f"  stream:  {emu.stream_url}")
            print(f"  capture: {emu.capture_url}")
            print(f"  scene:   {_describe_scene(config)}")
            for fault in config.faults:
                print(f"  fault:   {fault}")
            stop = asyncio.Event()
            # SIGTERM (service managers, `kill`) stops as cleanly as Ctrl-C does.
            with contextlib.suppress(NotImplementedError, RuntimeError):
                asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
            print("Press Ctrl-C to stop.", flush=True)
            await stop.wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
    print("stopped")
    return 0


COMMAND = Command(
    name="emulate",
    help="run an emulated ESP32-CAM (CameraWebServer) with optional fault injection",
    description=(
        "Serve the ESP32-CAM CameraWebServer protocol: control server on PORT "
        "(/, /status, /control, /capture) and stream server on PORT+1 (/stream)."
    ),
    add_arguments=_add_arguments,
    run=run,
    epilog=_FAULT_HELP,
)
