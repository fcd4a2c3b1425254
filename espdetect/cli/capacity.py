"""``espdetect capacity``: how many cameras this machine can serve, measured with the real server."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from espdetect.cli._command import Command
from espdetect.exceptions import ConfigurationError

if TYPE_CHECKING:
    from espdetect.profiling.capacity import CameraLoad, CapacityResult

__all__ = ["COMMAND", "run"]

_EPILOG = """\
How it works: one emulated ESP32-CAM (or a recorded clip replayed by it) serves every camera's
stream; 'espdetect serve' runs with --max-cameras cameras configured; camera K gets its viewers,
the run warms up, measures --seconds from /stats and the viewers, and goes on to K+1 until a
target fails. Detections-only viewers (--viewer-kind sse, the default) measure what the model
delivers without rendering competing for the CPU; annotated viewers add a decode, draw and
encode of every frame.

Output in --out: capacity.csv (one row per step), capacity.png (with matplotlib), capacity.json,
server.toml and logs/ (the run's own server settings and the children's stderr). The last line
printed is 'capacity: N cameras' (0 when even one camera misses a target).

examples:
  espdetect capacity --emulator --target-fps 15 --min-detections 2 --out out/capacity
  espdetect capacity --activity 0.25 --target-fps 15 --min-detections 2 --seconds 60 --out out/yard
  espdetect capacity --clip clips/door --target-fps 10 --max-latency-ms 500 --out out/door \\
      --set skip=auto --write-config server.toml
"""


def _size(text: str) -> tuple[int, int]:
    w, sep, h = text.lower().partition("x")
    if not sep or not w.isdigit() or not h.isdigit():
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 640x480, got {text!r}")
    return (int(w), int(h))


def _option(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` with VALUE read as TOML (``2``, ``false``, ``[0, 2]``) or else as text."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on 3.10 only
        import tomli as tomllib

    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE such as skip=2, got {text!r}")
    try:
        parsed: object = tomllib.loads(f"v = {value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value.strip()
    return key.strip().replace("-", "_"), parsed


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    # Long: one flat list of the command's options, in the order --help shows them.
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--clip", type=Path, default=None, metavar="DIR", help="replay a recorded clip as every camera"
    )
    source.add_argument("--emulator", action="store_true", help="emulated cameras (the default)")
    parser.add_argument("--target-fps", type=float, required=True, help="output fps every viewer must get")
    parser.add_argument(
        "--min-detections",
        type=float,
        default=None,
        metavar="D",
        help="model calls/s each camera must get while moving",
    )
    parser.add_argument(
        "--max-latency-ms", type=float, default=None, metavar="L", help="worst camera's p95 latency"
    )
    parser.add_argument("--viewers", type=int, default=1, metavar="V", help="viewers per camera (1)")
    parser.add_argument(
        "--viewer-kind",
        choices=("sse", "annotated", "raw"),
        default="sse",
        help="what viewers watch: sse (detections only, default), annotated or raw MJPEG",
    )
    parser.add_argument("--max-cameras", type=int, default=8, metavar="K", help="most cameras tried (8)")
    parser.add_argument("--start-cameras", type=int, default=1, metavar="K", help="first step measured (1)")
    parser.add_argument(
        "--seconds", type=float, default=30.0, metavar="S", help="measured seconds per step (30)"
    )
    parser.add_argument(
        "--warmup", type=float, default=10.0, help="seconds before each step is measured (10)"
    )
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    camera = parser.add_argument_group("cameras")
    camera.add_argument(
        "--fps", type=float, default=None, help="camera fps (default: --target-fps; a clip: its own)"
    )
    camera.add_argument("--size", type=_size, default=None, help="frame size WxH (640x480; a clip: its own)")
    camera.add_argument(
        "--quality", type=int, default=12, help="camera JPEG quality 0..63, lower is better (12)"
    )
    scene = camera.add_mutually_exclusive_group()
    scene.add_argument(
        "--scene", choices=("photos", "yard"), default=None, help="photos (always moving, default) or yard"
    )
    scene.add_argument(
        "--activity",
        type=float,
        default=None,
        metavar="A",
        help="share of time with motion: 1 (photos) or up to 0.53 (the yard scene, still the rest)",
    )
    server = parser.add_argument_group("server")
    server.add_argument(
        "--model", default=None, help="model file (default $ESPDETECT_MODEL, else the bundled one)"
    )
    server.add_argument(
        "--set",
        dest="options",
        type=_option,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a server option as in its TOML, e.g. --set skip=2 --set motion=false (repeatable)",
    )
    server.add_argument(
        "--write-config",
        type=Path,
        default=None,
        metavar="FILE",
        help="write a server TOML for the cameras found",
    )


def _load(args: argparse.Namespace) -> CameraLoad:
    from espdetect.profiling.capacity import CameraLoad

    extra: dict[str, Any] = {"quality": args.quality}
    if args.size is not None:
        extra["size"] = args.size
    if args.clip is not None:
        if args.scene is not None or args.activity is not None:
            raise ConfigurationError("expected --clip without --scene or --activity (the clip is the scene)")
        return CameraLoad.from_clip(args.clip, fps=args.fps, **extra)
    fps = args.fps if args.fps is not None else args.target_fps
    if args.activity is not None:
        return CameraLoad.from_activity(args.activity, fps=fps, **extra)
    return CameraLoad(fps=fps, scene=args.scene or "photos", **extra)


def _write_outputs(result: CapacityResult, out: Path) -> None:
    from espdetect.exceptions import MissingDependency

    csv_path = result.write_csv(out / "capacity.csv")
    payload = {
        "capacity": result.capacity,
        "targets": result.targets.describe(),
        "cameras": result.load.describe(),
        "bottleneck": None if result.bottleneck is None else result.bottleneck.text(),
        "text": result.text,
        "steps": result.rows(),
    }
    (out / "capacity.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(f"results: {csv_path} (and capacity.json)")
    if not result.steps:
        return
    try:
        print(f"plot: {result.plot(out / 'capacity.png')}")
    except MissingDependency:
        print("plot: not drawn (needs matplotlib: pip install 'espdetect[profile]')")


def run(args: argparse.Namespace) -> int:
    """Measure, print one line per step and the answer; 0, or 1 when --write-config had nothing to write.

    Raises:
        EspdetectError: a bad option, clip or model, or a server that did not start.
    """
    from espdetect.profiling.capacity import CapacityTargets, measure_capacity, write_capacity_config

    targets = CapacityTargets(args.target_fps, args.min_detections, args.max_latency_ms)
    load = _load(args)
    print(
        f"measuring: {load.describe()}; {targets.describe()} per camera; up to {args.max_cameras} cameras",
        flush=True,
    )
    result = measure_capacity(
        targets,
        load,
        viewers=args.viewers,
        viewer_kind=args.viewer_kind,
        max_cameras=args.max_cameras,
        start_cameras=args.start_cameras,
        seconds=args.seconds,
        warmup=args.warmup,
        model=args.model,
        server_options=dict(args.options),
        out_dir=args.out,
        on_step=lambda step: print(step.summary(), flush=True),
    )
    print(result.text)
    _write_outputs(result, args.out)
    status = 0
    if args.write_config is not None:
        if result.capacity < 1:
            print("espdetect capacity: no server config written (not even one camera held)", file=sys.stderr)
            status = 1
        else:
            path = write_capacity_config(result, args.write_config)
            print(
                f"server config: {path}  (the camera URLs are placeholders: edit them, "
                f"then espdetect serve --config {path})"
            )
    print(f"capacity: {result.capacity} cameras", flush=True)
    return status


COMMAND = Command(
    name="capacity",
    help="how many cameras this machine can serve: the real server against emulated cameras",
    description=(
        "Drive the espdetect server against 1, 2, ... emulated cameras (or replays of a recorded clip) "
        "with V viewers each until a target fails; write capacity.csv and a plot and print the "
        "largest number of cameras that held."
    ),
    add_arguments=_add_arguments,
    run=run,
    epilog=_EPILOG,
)
