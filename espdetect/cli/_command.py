"""`Command`: how a sub-command module declares itself to ``espdetect``'s parser.

Each sub-command module exposes one ``COMMAND``; `espdetect.cli.build_parser` adds a
sub-parser for it, so no module repeats the ``add_parser`` / ``set_defaults`` boilerplate::

    def _add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("source", help="what to record")
        parser.add_argument("--out", required=True, type=Path, help="clip folder to create")


    def run(args: argparse.Namespace) -> int:
        ...
        return 0


    COMMAND = Command(
        name="record",
        help="record a clip from a camera",  # its line in ``espdetect --help``
        description="Record SOURCE into a clip folder that 'espdetect profile' replays.",
        add_arguments=_add_arguments,
        run=run,
    )

``run`` returns the exit status. It need not catch user errors: `espdetect.cli.main` turns an
`EspdetectError` (``ConfigurationError``, ``ModelLoadError``...), a ``pydantic.ValidationError``
or a port already in use into one line on stderr, ``espdetect NAME: message``, and exit
status 2. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import TypeAlias

__all__ = ["Command", "Subparsers", "ultralytics_logs_to_stderr"]

#: What ``ArgumentParser.add_subparsers`` returns (subscriptable only for type checkers).
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


@dataclass(frozen=True)
class Command:
    """One ``espdetect`` sub-command: its name, its help texts, its options and what it runs.

    Attributes:
        name: the word typed after ``espdetect``.
        help: one line for the command list of ``espdetect --help``.
        description: what ``espdetect NAME --help`` says first.
        add_arguments: adds the command's positional arguments and options to its parser.
        run: runs the command with the parsed arguments; returns the exit status.
        epilog: text shown after the options, as written (syntax tables, examples); with an
            epilog the description is shown as written too.
    """

    name: str
    help: str
    description: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    epilog: str | None = None

    def add_to(self, subparsers: Subparsers) -> argparse.ArgumentParser:
        """Add this command's sub-parser, which calls `run` (as ``args.func``) once parsed."""
        parser = subparsers.add_parser(
            self.name,
            help=self.help,
            description=self.description,
            epilog=self.epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter if self.epilog else argparse.HelpFormatter,
        )
        self.add_arguments(parser)
        parser.set_defaults(func=self.run)
        return parser


def ultralytics_logs_to_stderr() -> ModuleType | None:
    """Ultralytics with its log lines moved to stderr, or None when it is not installed.

    Ultralytics logs to stdout, which would mix its progress lines into what a command prints
    for a pipe (``detect --json``, the path ``export`` prints). Like the detector, it is never
    allowed to ``pip install`` anything at run time unless ``YOLO_AUTOINSTALL`` says so.
    """
    os.environ.setdefault("YOLO_AUTOINSTALL", "False")
    try:
        import ultralytics
    except ImportError:
        return None
    # The interpreter's own stderr: a replaced sys.stderr (a test's capture) may be closed later.
    for handler in logging.getLogger("ultralytics").handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream in (sys.stdout, sys.__stdout__):
            handler.setStream(sys.__stderr__ or sys.stderr)
    return ultralytics
