"""What each section of the server benchmark measured, typed; results.json is these, as JSON.

Field names are the keys of results.json (and of the CSV files), so they read like the old
dictionaries did. Percentile summaries are `Spread` (``n``, ``p50``, ``p95``, ``p99``, ``max``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from benchmarks._harness.report import Spread, jsonable
from benchmarks._server.plan import Plan

#: A server's own percentiles as ``/stats`` gives them (p50, p95, p99).
ServerPercentiles = dict[str, float | None]


@dataclass
class TargetRow:
    """One target: what was measured against what was asked, and the verdict (None: no goal)."""

    number: str
    name: str
    measured: str
    goal: str
    passed: bool | None
    note: str

    @property
    def verdict(self) -> str:
        return "-" if self.passed is None else ("PASS" if self.passed else "FAIL")

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "verdict": self.verdict}


def add_target(
    targets: list[TargetRow], number: str, name: str, measured: str, goal: str, passed: bool | None, note: str
) -> None:
    """Record one target's verdict in ``targets`` and log it (``passed`` None: a figure without a goal)."""
    row = TargetRow(number, name, measured, goal, passed, note)
    targets.append(row)
    logging.getLogger("benchmarks").info(
        "target %s %s: %s (target %s) -> %s", number, name, measured, goal, row.verdict
    )


# -- windows ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CameraWindow:
    """One camera's ``/stats`` counters over a window of an espdetect server."""

    frames_in: int
    frames_detected: int
    frames_out: int
    frames_sent: int
    detect_fps: float
    in_fps: float
    #: frames_detected / frames_in (None without camera frames).
    model_calls_per_frame: float | None
    #: The server's inference percentiles at the end of the window.
    inference_ms: ServerPercentiles


@dataclass(frozen=True)
class ServerWindow:
    """An espdetect server over one window: its CPU, its cameras' counters, its viewers' fps."""

    seconds: float
    cpu_pct: float
    model_calls_per_delivered_frame: float | None
    machine_cores_busy: float
    viewers: int
    viewer_fps_mean: float | None
    viewer_fps_min: float | None
    viewer_errors: int
    #: Cameras that received or rendered frames in the window.
    cameras: dict[str, CameraWindow]
    rss_bytes: int

    def detect_fps(self, camera: str) -> float:
        """``camera``'s detections per second (0.0 when it did nothing in the window)."""
        cam = self.cameras.get(camera)
        return 0.0 if cam is None else cam.detect_fps


@dataclass(frozen=True)
class HelperRun:
    """One ``run`` of a helper process (the model alone, or Ultralytics' predict loop)."""

    calls: int
    seconds: float
    rate: float
    inference_ms: Spread
    cpu_pct: float


# -- target 2 --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IdleResult:
    seconds: float
    cameras_configured: int
    cpu_pct: float
    machine_cores_busy: float
    streams_opened: dict[str, int]
    stream_clients_at_end: dict[str, int]
    server_upstream_open: list[str]
    threads: int
    tasks: int


# -- target 1 --------------------------------------------------------------------------------------


@dataclass
class GoneTrial:
    """One viewer disconnect: when ``/health`` first showed it gone (None: not within the timeout)."""

    #: First reply showing it gone, ms after the socket closed.
    upper_ms: float | None = None
    #: When the poll before that one was sent: the viewer may have gone any time after.
    lower_ms: float | None = None
    #: Median poll round trip (the resolution).
    poll_ms: float | None = None
    polls: int = 0
    #: Why the trial did not happen (the viewer got no frame).
    error: str | None = None


@dataclass
class LastViewerTrial(GoneTrial):
    """The last viewer of a camera left: also when its camera connection closed and its CPU work ended."""

    upstream_closed_ms: float | None = None
    cpu_busy_until_ms: float = 0.0
    inference_p99_ms: float | None = None
    cpu_allowed_ms: float = 0.0
    #: (seconds after the disconnect, % of a core) per sampling step.
    cpu_trace: list[tuple[float, float]] = field(default_factory=list)


@dataclass(frozen=True)
class DisconnectResult:
    viewer_gone_ms: Spread
    viewer_gone_lower_bound_ms: Spread
    poll_round_trip_ms: Spread
    trials: int
    not_gone_within_5s: int
    last_viewer_to_upstream_closed_ms: Spread
    last_viewer_trials: list[LastViewerTrial]
    grace_period_s: float
    last_viewer_cpu_busy_until_ms: Spread


# -- targets 3 and 7 -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CpuRatio:
    """CPU of 50 viewers against 1, over alternating window pairs."""

    cpu_1: float
    cpu_50: float
    pair_ratios: list[float]
    #: Median of the pair ratios (the verdict's figure).
    ratio: float
    ratio_of_medians: float
    per_extra_viewer_pct: float


# -- target 4 --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelRatePair:
    model_only: HelperRun
    server: ServerWindow
    #: Sum of the SSE events' detect_ms over the window / its wall time.
    detector_busy_share: float
    detect_ratio: float
    output_ratio: float


@dataclass(frozen=True)
class ModelRateResult:
    pairs: list[ModelRatePair]
    model_only_rate: float


# -- target 6 --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UltralyticsRound:
    """Ultralytics' predict, then espdetect serving 10 viewers of ``fast`` and of ``fastraw``."""

    ultralytics: HelperRun
    fast: ServerWindow
    fastraw: ServerWindow
    fast_detect_ratio: float
    fast_output_ratio: float
    fastraw_detect_ratio: float
    fastraw_output_ratio: float


@dataclass(frozen=True)
class Concurrent:
    """Ultralytics and espdetect running at once on the same camera (full run only)."""

    ultralytics: HelperRun
    espdetect_detect_fps: float
    ratio: float


@dataclass(frozen=True)
class StreamSummary:
    """Medians over the rounds for one espdetect camera."""

    detect_ratio: float
    output_ratio: float
    detect_fps: float
    viewer_fps: float


@dataclass(frozen=True)
class UltralyticsResult:
    pairs: list[UltralyticsRound]
    concurrent: Concurrent | None
    max_stream_clients_fast: int
    #: "fast" (stale=draw_last) and "fastraw" (stale=raw).
    summary: dict[str, StreamSummary]


# -- target 5 --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LatencyFrame:
    """One annotated frame of the latency run (a row of latency.csv); see `latency.analyse`."""

    t: float
    timestamp: float
    latency_ms: float
    own_detection: bool
    fresh: bool
    held: bool
    detect_ms: float | None
    gap_ms: float | None
    added_ms: float
    added_excl_hold_ms: float


class MinMedianMax(NamedTuple):
    min: float
    median: float
    max: float


class ThirdPercentiles(NamedTuple):
    p50: float | None
    p99: float | None


@dataclass(frozen=True)
class Flatness:
    """First third of the run against the last (p50 within +5 ms, p99 within +15 ms)."""

    flat: bool
    summary: str
    first_third: ThirdPercentiles
    last_third: ThirdPercentiles


@dataclass(frozen=True)
class TimelinePoint:
    """The latency server over one step of the run."""

    t: float
    cpu_pct: float
    machine_cores_busy: float
    rss_mb: float
    load_average_1min: float
    in_fps: float
    detect_fps: float
    server_latency_ms: ServerPercentiles
    inference_ms: ServerPercentiles


@dataclass(frozen=True)
class LatencyResult:
    camera_fps: float
    #: The detection rate probed just before, which set the camera's speed (3x).
    model_rate: float
    duration_s: float
    frames: int
    latency_ms: Spread
    latency_not_own_ms: Spread
    added_ms: Spread
    added_excl_hold_ms: Spread
    held_frames: int
    own_frames: int
    fresh_frames: int
    detect_ms: Spread
    flat: Flatness
    detect_fps_during_run: MinMedianMax
    probe: ServerWindow
    timeline: list[TimelinePoint]
    #: The latency camera's entry of the server's ``/stats`` at the end.
    server_stats: dict[str, Any]
    viewer_error: str | None


# -- the baseline ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BaselineWindow:
    """The baseline server over one window with a number of viewers."""

    seconds: float
    viewers: int
    cpu_pct: float
    machine_cores_busy: float
    viewer_fps_mean: float
    viewer_fps_min: float
    viewer_fps_max: float
    viewers_without_frames: int
    viewer_errors: int
    errors: list[str]
    model_calls_per_s: float
    model_calls_per_camera_frame: float
    model_calls_per_delivered_frame: float | None
    camera_connections_start: int
    camera_connections_end: int
    camera_connections_max: int
    camera_connections_opened: int
    camera_requests_waiting_end: int
    inference_ms: Spread
    rss_bytes: int


@dataclass(frozen=True)
class BaselineTrial:
    viewer_gone_ms: float | None = None
    upstream_closed_ms: float | None = None
    camera_connections_after: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class BaselineDisconnects:
    trials: list[BaselineTrial]
    viewer_gone_ms: Spread
    closed_ms: Spread
    not_closed_within_s: float
    not_closed: int
    camera_connections_left: int


@dataclass(frozen=True)
class BareTrial:
    """The ``async-bare`` flavour over 4 s, 1 s after a viewer left."""

    seconds: float = 0.0
    viewers_counted: int = 0
    model_calls_per_s: float = 0.0
    cpu_pct: float = 0.0
    camera_connections: int = 0
    error: str | None = None


@dataclass(frozen=True)
class BareGenerator:
    """What the ``async-bare`` flavour did with nobody watching (figures of the last trial)."""

    trials: list[BareTrial]
    stuck_generators: int
    model_calls_per_s_with_nobody_watching: float | None
    cpu_pct_with_nobody_watching: float | None
    camera_connections: int | None
    viewers_counted: int | None
    seconds: float | None


@dataclass
class BaselineResult:
    generator: str
    windows: dict[int, BaselineWindow] = field(default_factory=dict)
    disconnect: BaselineDisconnects | None = None
    bare_generator: BareGenerator | None = None


# -- the whole run ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScalingRow:
    """One row of scaling.csv and of the summary's scaling table."""

    server: str
    axis: str
    n: int
    windows: int
    cpu_pct: float | None
    cpu_pct_outside_model_est: float | None
    viewer_fps_mean: float | None
    viewer_fps_min: float | None
    detect_fps_per_camera: float | None
    model_calls_per_camera_frame: float | None
    machine_cores_busy: float | None
    viewer_errors: int


@dataclass
class Meta:
    started: str
    platform: str
    python: str
    cpus: int | None
    #: The file name only: results are committed, the path is this machine's.
    model: str
    ultralytics: str | None
    onnxruntime: str | None
    load_average_start: list[float]
    quick: bool
    only: list[int]
    command: str
    finished: str | None = None
    elapsed_s: float | None = None
    load_average_end: list[float] | None = None


@dataclass
class Results:
    """Everything results.json holds; sections that did not run stay None (and are left out)."""

    meta: Meta
    plan: Plan
    startup_s: float | None = None
    #: The READY messages of the helper processes (model-only, ultralytics).
    helpers: dict[str, dict[str, Any]] = field(default_factory=dict)
    idle: IdleResult | None = None
    disconnect: DisconnectResult | None = None
    viewers_1_vs_50: dict[int, list[ServerWindow]] | None = None
    viewers_1_vs_50_fixed: dict[int, list[ServerWindow]] | None = None
    viewers_1_vs_50_summary: dict[str, CpuRatio] | None = None
    scaling_viewers: dict[int, list[ServerWindow]] | None = None
    scaling_cameras: dict[int, list[ServerWindow]] | None = None
    model_rate: ModelRateResult | None = None
    ultralytics: UltralyticsResult | None = None
    latency: LatencyResult | None = None
    baseline: BaselineResult | None = None
    targets: list[TargetRow] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out = {k: jsonable(v) for k, v in self.__dict__.items() if v is not None and k != "targets"}
        out["targets"] = [t.to_json() for t in self.targets]
        return out
