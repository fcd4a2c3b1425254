"""``espdetect record``: save a few seconds of a camera or any source as a clip for profiling."""

from __future__ import annotations

import argparse
from pathlib import Path

from espdetect.cli._command import Command

__all__ = ["COMMAND", "run"]


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected seconds > 0, got {text!r}")
    return value


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="URL|PATH", help="what to record (anything open_source accepts)")
    parser.add_argument(
        "--seconds", type=_positive, default=10.0, help="camera seconds to record (default 10)"
    )
    parser.add_argument("--out", required=True, type=Path, help="clip folder to create")
    parser.add_argument("--overwrite", action="store_true", help="replace a clip already in --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Record; print what was saved.

    Raises:
        EspdetectError: nothing could be recorded, or ``--out`` holds a clip (without ``--overwrite``).
    """
    from espdetect.exceptions import ConfigurationError
    from espdetect.profiling.record import record
    from espdetect.sources.clip import clip_info

    try:
        path = record(
            args.source, args.seconds, args.out, progress=not args.no_progress, overwrite=args.overwrite
        )
    except FileExistsError as exc:
        raise ConfigurationError(f"{exc}; pass --overwrite to replace it", field="out") from None
    info = clip_info(path)
    fps = f"{info.fps:.1f} fps" if info.fps else "n/a fps"
    size = f"{info.bytes / 1e6:.2f} MB"
    print(f"recorded {info.frames} frames ({info.duration_s:.2f} s, {fps}, {size}) into {path}")
    return 0


COMMAND = Command(
    name="record",
    help="record a clip (original JPEG bytes + arrival times) from a camera or any source",
    description=(
        "Record SOURCE (an ESP32 stream URL, a capture URL, a video file, an image folder, "
        "a camera index or 'synthetic') into a clip folder that 'espdetect profile' replays."
    ),
    add_arguments=_add_arguments,
    run=run,
)
