"""What each section of the engine benchmark measured, typed; engine.json is these, as JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from benchmarks._engine.common import MinMedMax, Plan
from benchmarks._harness.report import Spread
from benchmarks._server.results import TargetRow

__all__ = [
    "CamWindow",
    "CamerasResult",
    "CamerasRound",
    "Decomposition",
    "FinePair",
    "FineResult",
    "InstallResult",
    "Meta",
    "ProfileResult",
    "Results",
    "RssResult",
    "RssRun",
    "RssSummary",
    "TargetRow",
    "ThreadProfile",
    "UltraWindow",
]

# -- rss -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RssRun:
    """One fresh ``espdetect serve`` with ``cameras`` cameras, one annotated viewer each."""

    backend: str
    cameras: int
    repeat: int
    startup_s: float
    #: After the model loaded, before any viewer.
    rss_ready_mb: float
    #: Every sample of the serving window, 1 s apart.
    rss_samples_mb: list[float]
    #: The last samples (the steady figure).
    rss_last_mb: MinMedMax
    #: libtorch mapped into the server after serving (it imported torch at some point).
    torch_mapped: bool
    cpu_pct: float
    machine_cores_busy: float
    #: Fresh detections per second and annotated frames per second, per camera (``/stats`` deltas).
    detect_fps: dict[str, float]
    out_fps: dict[str, float]
    viewer_fps: list[float]
    viewer_errors: int


@dataclass(frozen=True)
class RssSummary:
    """One backend: the median over repeats of each camera count's steady RSS, and the increments."""

    backend: str
    rss_mb: dict[int, float]
    #: RSS2 - RSS1 and (RSS4 - RSS1) / 3, from the medians, and per repeat.
    increment_2_mb: float
    increment_4_mb: float
    increment_2_per_repeat: list[float]
    increment_4_per_repeat: list[float]
    torch_mapped: bool


@dataclass(frozen=True)
class RssResult:
    runs: list[RssRun]
    summary: dict[str, RssSummary]


# -- cameras ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CamWindow:
    """espdetect with ``cameras`` cameras, one viewer each (``kind``: "sse" or "annotated")."""

    kind: str
    cameras: int
    round: int
    seconds: float
    #: Fresh detections per second, summed over cameras: SSE events received in the window for
    #: kind "sse", ``/stats`` frames_detected for "annotated" (both recorded for both kinds).
    detect_fps_total: float
    sse_events_fps: dict[str, float]
    stats_detect_fps: dict[str, float]
    camera_in_fps: dict[str, float]
    #: Annotated frames per second each viewer received (kind "annotated").
    viewer_fps: list[float]
    #: From the SSE events of the window: mean decode + model call per detection, and the share
    #: of the window the detection thread spent in them (1.0: never idle).
    detect_ms_mean: float | None
    detector_busy_share: float | None
    #: The same events' own timings, means: ONNX Runtime's ``run``, pre- + post-processing, and
    #: the rest of detect_ms (JPEG decode, waits for the GIL between those steps).
    inference_ms_mean: float | None
    prepost_ms_mean: float | None
    rest_ms_mean: float | None
    server_cpu_pct: float
    #: % of a core per server thread role (event loop, detect, render, native, other python).
    server_threads_pct: dict[str, float]
    cameras_cpu_pct: float
    machine_cores_busy: float
    #: Busy cores not used by the server, the cameras or the benchmark's own process (viewers):
    #: other work on the shared machine during the window.
    foreign_cores: float
    rss_mb: float
    viewer_errors: int


@dataclass(frozen=True)
class UltraWindow:
    """Ultralytics' ``predict(source=<.streams file>, stream=True)`` on the same cameras."""

    round: int
    seconds: float
    results: int
    #: Results (one per stream frame) per second, summed over the streams.
    rate: float
    inference_ms: Spread
    #: The runner's CPU and the machine's over the whole run, stream opening and warm-up included.
    cpu_pct: float
    cameras_cpu_pct: float
    machine_cores_busy: float
    foreign_cores: float


@dataclass(frozen=True)
class CamerasRound:
    sse_1: CamWindow
    sse_4: CamWindow
    ultralytics_4: UltraWindow
    annotated_4: CamWindow
    annotated_1: CamWindow
    sse_ratio: float
    annotated_ratio: float
    sse_vs_ultralytics: float
    annotated_vs_ultralytics: float


class Decomposition(NamedTuple):
    """Why 4 cameras detect more or less than 1 (medians over rounds of one viewer kind).

    Detections/s = busy share / mean detect time, so the 4/1 ratio is the product of
    ``busy_ratio`` (the detection thread idle between turns?) and ``speed_ratio`` (each call
    slower because other work took CPU?). CPU in % of a core: ``model`` is the detection thread
    plus native threads (ONNX Runtime's pool), ``other`` the event loop, render threads and the rest.
    """

    kind: str
    busy_1: float | None
    busy_4: float | None
    busy_ratio: float | None
    detect_ms_1: float | None
    detect_ms_4: float | None
    speed_ratio: float | None
    #: Parts of detect_ms (see `CamWindow`): ONNX Runtime's run, and the rest outside it.
    inference_ms_1: float | None
    inference_ms_4: float | None
    outside_ms_1: float | None
    outside_ms_4: float | None
    model_cpu_1: float
    model_cpu_4: float
    other_cpu_1: float
    other_cpu_4: float
    machine_cores_1: float
    machine_cores_4: float
    foreign_cores_1: float
    foreign_cores_4: float


@dataclass(frozen=True)
class ThreadProfile:
    """py-spy samples of one server thread role: how often it was running, and where."""

    group: str
    samples: int
    active_share: float
    #: (function, share of this role's active samples), the most frequent leaf functions first.
    top_functions: list[tuple[str, float]]
    #: The same for the innermost espdetect function of each sample.
    top_espdetect: list[tuple[str, float]]


@dataclass(frozen=True)
class ProfileResult:
    """``py-spy record`` of the server during one 1-camera and one 4-camera SSE window."""

    windows: dict[str, CamWindow]
    threads: dict[str, list[ThreadProfile]]
    raw_files: list[str]


@dataclass(frozen=True)
class FinePair:
    """One pair of short SSE windows (``first``: the camera count measured first)."""

    first: int
    sse_1: float
    sse_4: float
    ratio: float
    inference_ms_1: float | None
    inference_ms_4: float | None
    event_loop_pct_1: float
    event_loop_pct_4: float
    #: The larger of the two windows' foreign load (other processes), in cores.
    foreign_cores: float


@dataclass(frozen=True)
class FineResult:
    """Many short 1-/4-camera SSE window pairs on one server (see `benchmarks._engine.fine`)."""

    #: "default", or the detector option that differs (e.g. "threads=1").
    server: str
    window: float
    settle: float
    pairs: list[FinePair]
    ratio_median: float
    ratio_q1: float
    ratio_q3: float
    below_0_9: int
    #: Median over pairs of (mean inference ms with 4 cameras) / (with 1).
    inference_ratio_median: float | None
    #: Pairs measured while other processes used < 0.1 core, and their median ratio.
    quiet_pairs: int
    quiet_ratio_median: float | None
    #: Median 1-camera detections/s (how fast this server is at all).
    detect_fps_median: float


@dataclass(frozen=True)
class CamerasResult:
    fps: float
    rounds: list[CamerasRound]
    sse_ratio: float
    annotated_ratio: float
    sse_vs_ultralytics: float
    annotated_vs_ultralytics: float
    #: The server child's READY: heavy runtimes imported once the model was loaded.
    decomposition: list[Decomposition]
    server_modules: dict[str, bool]
    torch_mapped_after: bool
    #: ``GET /cameras/c0/settings`` of the server measured: its effective per-camera defaults.
    camera_settings: dict[str, Any] = field(default_factory=dict)
    #: By server: "default", and "threads=1" when the diagnosis ran.
    fine: dict[str, FineResult] = field(default_factory=dict)
    profile: ProfileResult | None = None


# -- install ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InstallResult:
    python: str
    install_s: float
    install_ok: bool
    site_packages_mb: float
    #: (distribution, MB of its installed files), largest first.
    top_packages: list[tuple[str, float]]
    distributions: int
    torch_import_fails: bool
    torch_import_error: str
    espdetect_imports: bool
    espdetect_import_error: str
    #: The bundled model loaded and run once in the fresh venv: backend, or the error.
    smoke: str


# -- the run ---------------------------------------------------------------------------------------


@dataclass
class Meta:
    started: str
    platform: str
    python: str
    cpus: int | None
    model: str
    versions: dict[str, str | None]
    load_average_start: list[float]
    quick: bool
    only: list[str]
    command: str
    #: The commit checked out, and how many files of the working tree differed from it (others'
    #: uncommitted work is measured too: the servers run the tree as it is).
    git_commit: str = ""
    git_changed_files: int = 0
    finished: str = ""
    elapsed_s: float = 0.0
    load_average_end: list[float] = field(default_factory=list)
    #: (moment, the 1/5/15-minute load averages) at each section's start and end.
    load_averages: list[tuple[str, list[float]]] = field(default_factory=list)


@dataclass
class Results:
    meta: Meta
    plan: Plan
    rss: RssResult | None = None
    cameras: CamerasResult | None = None
    install: InstallResult | None = None
    targets: list[TargetRow] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        from benchmarks._harness.report import jsonable

        out: dict[str, Any] = jsonable(self)
        out["targets"] = [t.to_json() for t in self.targets]
        return out
