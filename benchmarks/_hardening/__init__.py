"""Sections of the hardening benchmark (`benchmarks.bench_hardening`), one module each.

A section is a `Section`: its name for ``--only``, the options it adds to the command line,
and a function that runs it and returns a `SectionResult` (its raw figures for
``hardening.json``, its target rows, its Markdown for ``hardening.md``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks._server.results import TargetRow

__all__ = ["Section", "SectionResult"]


@dataclass
class SectionResult:
    """What one section measured."""

    #: Every figure, as JSON-ready values (`benchmarks._harness.report.jsonable`).
    results: Any
    targets: list[TargetRow] = field(default_factory=list)
    #: Markdown lines for the section's part of ``hardening.md``.
    text: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Section:
    """One section of the benchmark.

    Example:
        >>> def run(args: argparse.Namespace, logs: Path) -> SectionResult:
        ...     return SectionResult({"ok": True})
        >>> Section("demo", "A demo", lambda parser: None, run).name
        'demo'
    """

    name: str
    title: str
    #: Adds the section's own options (prefixed with its name) to the command line.
    add_arguments: Callable[[argparse.ArgumentParser], None]
    #: Runs the section; ``logs`` is the folder for its child processes' logs.
    run: Callable[[argparse.Namespace, Path], SectionResult]
