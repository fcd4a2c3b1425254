"""The state the sections of the server benchmark share: plan, processes, results, targets."""

from __future__ import annotations

from dataclasses import dataclass, field

from benchmarks._harness.procs import Child, ProcessGroup
from benchmarks._harness.server import Cameras
from benchmarks._server.plan import GRACE, Plan
from benchmarks._server.results import LatencyFrame, Results, add_target
from benchmarks._server.windows import Env


@dataclass
class Bench:
    """One run: what to measure, the processes started for it, and what was measured so far."""

    plan: Plan
    #: Target numbers to run (1 to 7).
    only: set[int]
    #: The model file (absolute path; the servers and helpers load it).
    model: str
    baseline_generator: str
    group: ProcessGroup
    results: Results
    #: Servers by role: "main", "latency", "baseline", "baseline-disconnect", "baseline-bare".
    envs: dict[str, Env] = field(default_factory=dict)
    #: Helper processes: "model" (the model alone), "ultralytics".
    helpers: dict[str, Child] = field(default_factory=dict)
    #: Camera processes by role: "main", "latency", "baseline".
    cameras: dict[str, Cameras] = field(default_factory=dict)
    #: Port pair reserved for the latency camera (started once the server's rate is known).
    lat_port: int = 0
    #: Every frame of the latency run (latency.csv; not in results.json).
    latency_frames: list[LatencyFrame] = field(default_factory=list)

    def target(
        self, number: str, name: str, measured: str, goal: str, passed: bool | None, note: str
    ) -> None:
        """Record one target's verdict (``passed`` None: a figure without a goal)."""
        add_target(self.results.targets, number, name, measured, goal, passed, note)

    def server_settings(self, cameras: list[object]) -> dict[str, object]:
        """`ServerSettings` of an espdetect server under test: defaults, but room for 200 viewers."""
        return {
            "cameras": cameras,
            "detector": {"model": self.model},
            "viewers": {"max_viewers_per_camera": 200, "max_viewers_total": 1000},
            "upstream": {"grace_period": GRACE},
        }
