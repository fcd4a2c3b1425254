"""The ``espdetect`` command line: one module per sub-command, each declaring a `Command`.

`main` turns the errors a user can fix (an `EspdetectError`, a ``pydantic.ValidationError``,
a port already in use) into one line on stderr, ``espdetect COMMAND: message``, and exit
status 2; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import sys
from collections.abc import Sequence

from espdetect.cli._command import Command
from espdetect.exceptions import EspdetectError

__all__ = ["EXIT_USER_ERROR", "build_parser", "main"]

logger = logging.getLogger(__name__)

#: Exit status after an error the user can fix (a bad option, setting or model, a busy port).
EXIT_USER_ERROR = 2

#: Sub-command modules, in the order ``--help`` lists them.
_COMMANDS = (
    "demo",
    "serve",
    "emulate",
    "detect",
    "export",
    "record",
    "profile",
    "capacity",
    "monitor",
    "health",
    "hash_password",
)


def build_parser() -> argparse.ArgumentParser:
    """The ``espdetect`` parser, with a sub-parser per installed sub-command module."""
    parser = argparse.ArgumentParser(
        prog="espdetect", description="Real-time object detection on ESP32-CAM video."
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _COMMANDS:
        try:
            module = importlib.import_module(f"espdetect.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"espdetect.cli.{name}":
                raise
            continue
        command = module.COMMAND
        if not isinstance(command, Command):
            raise TypeError(f"expected espdetect.cli.{name}.COMMAND to be a Command, got {command!r}")
        command.add_to(sub)
    return parser


def user_error_message(exc: BaseException) -> str | None:
    """The one line that tells the user what to fix, or None when ``exc`` is a bug.

    Example:
        >>> from espdetect.exceptions import ConfigurationError
        >>> user_error_message(ConfigurationError("expected quality 0..63, got 99", field="quality"))
        'expected quality 0..63, got 99'
        >>> user_error_message(KeyError("x")) is None
        True
        >>> user_error_message(ModuleNotFoundError("No module named 'cv2'", name="cv2"))[:16]
        'this needs OpenC'
    """
    if isinstance(exc, EspdetectError):
        message = str(exc)
    elif isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        # strerror without "[Errno 98]"; asyncio and the emulator put the address in it.
        message = f"{exc.strerror or exc}; choose another port with --port"
    elif isinstance(exc, ModuleNotFoundError) and exc.name == "cv2":
        # The server image installs the core less OpenCV, which only the emulator and the
        # video-file, webcam, RTSP, clip and synthetic sources use.
        message = (
            "this needs OpenCV, which this install leaves out (the server image does): "
            "pip install opencv-python-headless"
        )
    else:
        from pydantic import ValidationError

        if not isinstance(exc, ValidationError):
            return None
        message = "; ".join(
            f"{'.'.join(map(str, error['loc']))}: {error['msg']}" if error["loc"] else error["msg"]
            for error in exc.errors()
        )
    return " ".join(message.split()) or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose + 1, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.verbose < 2:
        # httpx logs every request (with its URL) at INFO: noise, and camera URLs may hold secrets.
        logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        message = user_error_message(exc)
        if message is None:
            raise
        logger.debug("espdetect %s failed", args.command, exc_info=True)
        print(f"espdetect {args.command}: {message}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
