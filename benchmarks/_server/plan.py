"""Durations, counts and fixed settings of the server benchmark."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final

from benchmarks.baseline_per_viewer import BOUNDARY as BASELINE_BOUNDARY
from espdetect.server.streaming import MJPEG_BOUNDARY as ESPDETECT_BOUNDARY

__all__ = [
    "BASELINE_BOUNDARY",
    "BUSY_PCT",
    "COUNTERS",
    "CPU_STEP",
    "ESPDETECT_BOUNDARY",
    "FIXED_SKIP",
    "GRACE",
    "VGA",
    "Plan",
]

VGA: Final = (640, 480)
#: The ``/stats`` camera counters a window takes the difference of.
COUNTERS: Final = ("frames_in", "frames_detected", "frames_out", "frames_sent")
#: The espdetect server's grace period (seconds the camera connection outlives the last viewer).
GRACE: Final = 2.0
#: CPU sampling step of the "work stopped" measure, and the use (% of a core) that counts as busy:
#: an inference takes most of a core even on a busy machine; rendering 15 fps VGA takes under 10 %.
CPU_STEP: Final = 0.05
BUSY_PCT: Final = 25.0
#: Frame skip of the "fixed" camera (15 fps): one detection every 2 s whatever the machine's load.
FIXED_SKIP: Final = 30


@dataclass(frozen=True)
class Plan:
    """Durations and counts; ``--quick`` takes about 7 minutes on a busy 2-core machine.

    Example:
        >>> Plan.make(quick=True, duration=None, baseline_viewers=None).window
        5.0
    """

    quick: bool
    #: Seconds of each measured window.
    window: float
    idle: float
    disconnect_trials: int
    last_viewer_trials: int
    #: Alternating window pairs per comparison.
    pairs: int
    latency_duration: float
    baseline_viewers: tuple[int, ...]
    baseline_disconnect_trials: int
    baseline_settle: float
    #: Camera counts of the scaling sweep.
    scale_cameras: tuple[int, ...]
    #: Also measure the baseline flavour without ``sleep(0)``.
    bare: bool

    @staticmethod
    def make(quick: bool, duration: float | None, baseline_viewers: int | None) -> Plan:
        if quick:
            plan = Plan(True, 5.0, 10.0, 30, 3, 2, 20.0, (1, 10), 3, 4.0, (1, 2, 4), False)
        else:
            plan = Plan(False, 15.0, 20.0, 100, 8, 4, 120.0, (1, 10, 50), 10, 12.0, (1, 2, 4, 8), True)
        if duration is not None:
            plan = replace(plan, latency_duration=duration)
        if baseline_viewers is not None:
            plan = replace(plan, baseline_viewers=(1, baseline_viewers))
        return plan
