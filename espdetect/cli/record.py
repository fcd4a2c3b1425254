"""``espdetect record``: save a few seconds of a camera or any source as a clip for profiling."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["register", "run"]


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected seconds > 0, got {text!r}")
    return value


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``record`` sub-command."""
    parser = subparsers.add_parser(
        "record",
        help="record a clip (original JPEG bytes + arrival times) from a camera or any source",
        description=(
            "Record SOURCE (an ESP32 stream URL, a capture URL, a video file, an image folder, "
            "a camera index or 'synthetic') into a clip folder that 'espdetect profile' replays."
        ),
    )
    parser.add_argument("source", metavar="URL|PATH", help="what to record (anything open_source accepts)")
    parser.add_argument(
        "--seconds", type=_positive, default=10.0, help="camera seconds to record (default 10)"
    )
    parser.add_argument("--out", required=True, type=Path, help="clip folder to create")
    parser.add_argument("--overwrite", action="store_true", help="replace a clip already in --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Record; print what was saved. Returns 0, or 2 when nothing could be recorded."""
    from espdetect.exceptions import EspdetectError
    from espdetect.profiling.record import record
    from espdetect.sources.clip import clip_info

    try:
        path = record(
            args.source, args.seconds, args.out, progress=not args.no_progress, overwrite=args.overwrite
        )
    except (EspdetectError, FileExistsError) as exc:
        print(f"espdetect record: {exc}", file=sys.stderr)
        return 2
    info = clip_info(path)
    fps = f"{info.fps:.1f} fps" if info.fps else "n/a fps"
    size = f"{info.bytes / 1e6:.2f} MB"
    print(f"recorded {info.frames} frames ({info.duration_s:.2f} s, {fps}, {size}) into {path}")
    return 0
