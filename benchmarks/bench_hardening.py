"""Hardening the HTTP surface (issue 15): what abuse of the server costs everyone else.

Sections (``--only``), one module each in ``benchmarks/_hardening``:

* ``flood``: ``espdetect serve`` while four clients send 64 MiB request headers, reconnecting as
  soon as they are cut off: ``/health`` latency and the server's RSS growth, against a quiet
  window of the same server (`benchmarks._hardening.flood`).
* ``guessing``: a correct, not yet cached login alone and while 40 concurrent wrong guesses run
  (from one address, and from 40 loopback addresses), on fresh servers with the real password
  hash; the delay is the median with the flood minus the median alone
  (`benchmarks._hardening.guessing`).

The model is ``--model`` / ``$ESPDETECT_MODEL``, else the bundled one. Writes
``hardening.json`` (every figure) and ``hardening.md`` (targets with PASS/FAIL, then each
section) into ``--out``.

Usage::

    python -m benchmarks.bench_hardening --out benchmarks/results/hardening   # a few minutes
    python -m benchmarks.bench_hardening --out /tmp/hardening --only flood --flood-requests 100
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks._hardening import Section
from benchmarks._hardening.flood import FLOOD
from benchmarks._hardening.guessing import GUESSING
from benchmarks._harness.report import (
    load_average,
    markdown_table,
    start_run,
    write_json,
)
from benchmarks._server.results import TargetRow

logger = logging.getLogger(__name__)

#: Every section, in the order they run; a new one is a module in _hardening and a line here.
SECTIONS: tuple[Section, ...] = (FLOOD, GUESSING)


def _sections(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    names = [section.name for section in SECTIONS]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, required=True, help="folder for hardening.json and hardening.md")
    parser.add_argument(
        "--only",
        type=_sections,
        default=names,
        help=f"comma-separated sections (default all: {','.join(names)})",
    )
    parser.add_argument("--model", default=None, help="model file (default $ESPDETECT_MODEL, else bundled)")
    parser.add_argument("-v", "--verbose", action="store_true")
    for section in SECTIONS:
        section.add_arguments(parser)
    args = parser.parse_args(argv)
    unknown = sorted(set(args.only) - set(names))
    if unknown or not args.only:
        parser.error(f"--only takes sections among {', '.join(names)}, got {args.only}")
    meta = start_run(args.out, args.model, args.verbose, "uvicorn", "httptools", "onnxruntime")
    logs = args.out / "logs"
    results: dict[str, Any] = {"meta": meta}
    targets: list[TargetRow] = []
    text: list[str] = []
    for section in SECTIONS:
        if section.name not in args.only:
            continue
        logger.info("section %s: %s", section.name, section.title)
        done = section.run(args, logs)
        results[section.name] = done.results
        targets += done.targets
        text += done.text
    meta["loadavg_end"] = load_average()
    results["targets"] = [row.to_json() for row in targets]
    write_json(args.out / "hardening.json", results)
    summary = [
        "# Hardening the HTTP surface",
        "",
        f"{meta['date']} on {meta['machine']}; model {meta['model']}; load average "
        f"{meta['loadavg_start']} at start, {meta['loadavg_end']} at the end.",
        "",
        markdown_table(
            ["", "target", "measured", "goal", "", "note"],
            [[t.number, t.name, t.measured, t.goal, t.verdict, t.note] for t in targets],
        ),
        "",
        *text,
    ]
    (args.out / "hardening.md").write_text("\n".join(summary), encoding="utf-8")
    print("\n".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
