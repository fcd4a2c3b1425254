"""The state the sections of the engine benchmark share: plan, model, processes, results, verdicts."""

from __future__ import annotations

import os
from dataclasses import dataclass

from benchmarks._engine.common import Plan
from benchmarks._engine.results import Results
from benchmarks._harness.procs import ProcessGroup
from benchmarks._server.results import add_target

__all__ = ["Bench"]


@dataclass
class Bench:
    """One run: what to measure, where child processes log, and what was measured so far."""

    plan: Plan
    #: The model file (absolute path).
    model: str
    group: ProcessGroup
    results: Results

    def target(
        self, number: str, name: str, measured: str, goal: str, passed: bool | None, note: str
    ) -> None:
        """Record one target's verdict (``passed`` None: a figure without a goal)."""
        add_target(self.results.targets, number, name, measured, goal, passed, note)

    def note_load(self, moment: str) -> None:
        """Keep the machine's load averages now (other jobs share it)."""
        self.results.meta.load_averages.append((moment, [round(x, 2) for x in os.getloadavg()]))
