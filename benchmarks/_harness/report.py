"""Writing benchmark results: percentile summaries, JSON, CSV, Markdown tables, plots, run metadata.

Results are dataclasses and NamedTuples; `jsonable` turns them (nested in dicts and lists) into
JSON-ready values, so every script writes its files the same way. Percentiles come from
`espdetect.stats`, so a p99 here means what it means in ``/stats`` and the profiler.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import json
import logging
import math
import os
import platform
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

from espdetect.stats import Percentiles

__all__ = [
    "Spread",
    "jsonable",
    "load_average",
    "machine",
    "markdown_table",
    "pyplot",
    "utc_now",
    "versions",
    "write_csv",
    "write_json",
]


class Spread(NamedTuple):
    """How many values, their median, tail and maximum (None each when there are none).

    Example:
        >>> Spread.of([1.0, 2.0, 3.0, 10.0])
        Spread(n=4, p50=2.5, p95=8.95, p99=9.79, max=10.0)
    """

    n: int
    p50: float | None
    p95: float | None
    p99: float | None
    max: float | None

    @staticmethod
    def of(values: Sequence[float]) -> Spread:
        p = Percentiles.of(values)
        clean = [v for v in values if not math.isnan(v)]
        return Spread(len(values), p.p50, p.p95, p.p99, round(max(clean), 3) if clean else None)


def jsonable(value: Any) -> Any:
    """``value`` as JSON-ready values: dataclasses and NamedTuples become objects, keys strings.

    Example:
        >>> jsonable({1: Spread.of([2.0])})
        {'1': {'n': 1, 'p50': 2.0, 'p95': 2.0, 'p99': 2.0, 'max': 2.0}}
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple) and hasattr(value, "_asdict"):
        return {k: jsonable(v) for k, v in value._asdict().items()}
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: Path, value: Any, *, indent: int = 2) -> None:
    """``value`` (see `jsonable`) as indented JSON, ending with a newline."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(jsonable(value), indent=indent, default=str) + "\n", encoding="utf-8")


def write_csv(path: Path, rows: Sequence[Any], fieldnames: Sequence[str] | None = None) -> None:
    """One CSV row per item (a mapping or a dataclass); nothing is written without rows.

    Example:
        >>> write_csv(Path("/tmp/x.csv"), [{"a": 1, "b": 2}])  # doctest: +SKIP
    """
    if not rows:
        return
    dicts = [r if isinstance(r, Mapping) else jsonable(r) for r in rows]
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(fieldnames or dicts[0]))
        writer.writeheader()
        writer.writerows(dicts)


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]], align: str = "") -> str:
    """A Markdown table; ``align`` has one letter per column, ``r`` right-aligns it (default left).

    Example:
        >>> print(markdown_table(["a", "n"], [["x", 1]], align="lr"))
        | a | n |
        | --- | ---: |
        | x | 1 |
    """
    rules = ["---:" if i < len(align) and align[i] == "r" else "---" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(rules) + " |"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def pyplot() -> ModuleType:
    """``matplotlib.pyplot`` drawing to files only (the Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def utc_now() -> str:
    """The time now, ISO 8601 in UTC to the second."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def machine() -> str:
    """The platform and its CPU count, as the reports print it."""
    return f"{platform.platform()}, {os.cpu_count()} CPUs"


def load_average() -> float:
    """The 1-minute load average: how busy the shared machine was (other jobs run on it)."""
    return round(os.getloadavg()[0], 2)


def versions(*modules: str) -> dict[str, str | None]:
    """``module.__version__`` of each module that imports (None for one that does not).

    Example:
        >>> versions("json")["json"] is not None
        True
    """
    found: dict[str, str | None] = {}
    for name in modules:
        try:
            found[name] = str(__import__(name).__version__)
        except (ImportError, AttributeError):
            found[name] = None
    return found


def start_run(out: Path, model: str | None, verbose: bool, *modules: str) -> dict[str, Any]:
    """Logging, ``$ESPDETECT_MODEL`` and the output folder of a benchmark run; the run's metadata.

    ``model`` (a ``--model`` option) overrides ``$ESPDETECT_MODEL`` for this process and its
    children; ``modules`` are the packages whose versions the report names.
    """
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if model:
        os.environ["ESPDETECT_MODEL"] = model
    out.mkdir(parents=True, exist_ok=True)
    chosen = os.environ.get("ESPDETECT_MODEL")
    return {
        "date": utc_now(),
        "machine": machine(),
        "loadavg_start": load_average(),
        "model": Path(chosen).name if chosen else "bundled",
        **versions(*modules),
    }
