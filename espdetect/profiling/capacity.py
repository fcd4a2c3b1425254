"""How many cameras this machine can serve: the real server against emulated cameras, K = 1, 2, ...

`measure_capacity` starts three things: one emulated ESP32-CAM in a child process
(`espdetect.profiling.capacity_camera`) that serves as many streams at once as there may be
cameras, ``espdetect serve`` in a child process with ``max_cameras`` cameras configured (all
reading that emulator, each over its own connection), and viewers in this process
(`espdetect.profiling.capacity_viewers`). It then adds cameras one at a time: camera K gets its
``viewers`` viewers, the run waits ``warmup`` seconds and measures ``seconds`` seconds from
``/stats`` deltas and what the viewers received, checks the `CapacityTargets`, and goes on to
K + 1 until a step fails or ``max_cameras`` passed. The answer is the largest K that held.

Why one server with every camera configured up front, rather than a server restarted with K
cameras at each step: a camera nobody watches holds no connection and does no work, so the
cameras not yet watched cost nothing; the model is loaded once; and the cameras already running
keep running while the next one joins, as on a box that gains cameras. Each stream of the
emulator starts at the first frame of the scene, so the cameras are staggered by the time
between their steps rather than all moving at once.

What is measured per step (each per camera, then the worst camera):

* output fps: what each viewer received per second (the slowest viewer); for detections-only
  viewers (server-sent events, one per model call) it is the frames the server read from the
  camera per second, since those viewers are sent detections, not frames;
* detections/s: model calls per second *while the camera needed the model*: one-second
  intervals in which the motion test saw motion, a tracked object kept the model running, or the
  camera waited for its turn on the model (every interval when motion gating is off). With
  motion gating a still camera needs no model calls, so the target is what the model delivers
  when it is needed, whatever the scene's activity; ``active_share`` is that share of the time;
* latency p95: camera frame's arrival at the server to its last byte read by the viewer;
* CPU % (the server process, 100 = one core), RSS, the cores busy on the whole machine, and the
  CPU of the load generator (emulator and viewers), which real cameras would not cost this box.

The scene decides the answer (`CameraLoad`): ``photos`` moves all the time (every camera needs
the model all the time: the worst case), ``yard`` is still most of the time
(`CameraLoad.from_activity` picks its still stretch for a given share of time with motion),
and a recorded clip replays what a real camera saw (`CameraLoad.from_clip`).

The CPU speed of a shared machine drifts (here by about +-25 % over minutes), so a step near a
target can pass on one run and fail on the next: every step carries its margin to the nearest
target, and `CapacityResult.text` says how close to the edge the answer was.

Example:
    >>> targets = CapacityTargets(target_fps=15, min_detections=2)
    >>> load = CameraLoad(fps=15, size=(640, 480))
    >>> result = measure_capacity(targets, load, out_dir="out/cap")  # doctest: +SKIP
    >>> result.capacity, result.bottleneck.stage  # doctest: +SKIP
    (3, 'model')
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import itertools
import json
import logging
import math
import os
import queue
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import IO, Any, Final, Literal

import psutil

from espdetect._async import run_blocking
from espdetect.exceptions import ConfigurationError, EspdetectError
from espdetect.profiling.capacity_viewers import StreamViewer, ViewerKind
from espdetect.stats import percentile

__all__ = [
    "CSV_COLUMNS",
    "Bottleneck",
    "CameraLoad",
    "CapacityResult",
    "CapacityRunFailed",
    "CapacityStep",
    "CapacityTargets",
    "ViewerKind",
    "ahold_capacity",
    "ameasure_capacity",
    "capacity_config_toml",
    "find_bottleneck",
    "hold_capacity",
    "measure_capacity",
    "write_capacity_config",
]

logger = logging.getLogger(__name__)

#: The stages `find_bottleneck` names.
Stage = Literal["model", "decode/encode", "network send", "camera input"]

#: Output fps counts as meeting ``target_fps`` down to this share of it: a camera's own clock and
#: the window's edges make a steady 15 fps stream read as 14.8 to 15.0.
FPS_TOLERANCE: Final = 0.95
#: The swing of this machine's CPU speed over minutes: a margin inside it may flip on a rerun.
CPU_DRIFT: Final = 0.25
#: The yard scene's seconds of motion per loop (walking in, out, and two people crossing) and of
#: stillness besides its first still stretch (standing 3 s, two empty gaps): see `YardScene`.
_YARD_MOVING_S: Final = 11.5
_YARD_OTHER_STILL_S: Final = 10.0
#: CPU of other processes (% of a core) from which a step says the machine was shared.
_BUSY_OTHERS: Final = 20.0
#: Seconds between two ``/stats`` samples inside a measured window.
_SAMPLE_EVERY: Final = 1.0
#: How long the server may take to start (the model loads first) and the emulator to pre-render.
_START_TIMEOUT: Final = 300.0
#: How long a new camera may take to deliver its first frames to the server.
_CONNECT_TIMEOUT: Final = 30.0
_URL_LINE: Final = re.compile(r"espdetect server: (http://[^\s/]+)/")
#: ``espdetect`` in a child that stops (SIGTERM to itself) once its stdin closes, so a server never
#: outlives a run that was killed.
_CLI: Final = """\
import os, signal, sys, threading
def _watch():
    for _ in sys.stdin:
        pass
    os.kill(os.getpid(), signal.SIGTERM)
threading.Thread(target=_watch, daemon=True).start()
from espdetect.cli import main
sys.exit(main())
"""


class CapacityRunFailed(EspdetectError):
    """The emulated camera or the server could not be started or stopped answering.

    ``log`` is the child's log file, which says why.
    """

    def __init__(self, what: str, reason: str, log: Path | None = None) -> None:
        self.what = what
        self.reason = reason
        self.log = log
        where = f" (see {log})" if log is not None else ""
        super().__init__(f"{what}: {reason}{where}")

    def __repr__(self) -> str:
        return f"CapacityRunFailed({self.what!r}, {self.reason!r}, log={self.log!r})"


def _cameras(n: int) -> str:
    return f"{n} camera" if n == 1 else f"{n} cameras"


# -- what is asked ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CapacityTargets:
    """What every camera must get for a step to pass.

    Example:
        >>> t = CapacityTargets(target_fps=15, min_detections=2)
        >>> t.fps_floor, t.describe()
        (14.25, 'output >= 15 fps, >= 2 detections/s')
    """

    #: Frames per second each viewer must get (met down to `FPS_TOLERANCE` of it).
    target_fps: float
    #: Model calls per second each camera must get while something moves; None: not checked.
    min_detections: float | None = None
    #: Worst camera's p95 latency (frame arrival to viewer) in milliseconds; None: not checked.
    max_latency_ms: float | None = None

    def __post_init__(self) -> None:
        for name in ("target_fps", "min_detections", "max_latency_ms"):
            value = getattr(self, name)
            if value is None and name != "target_fps":
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ConfigurationError(f"expected {name} > 0, got {value!r}", field=name)
            if not math.isfinite(value):
                raise ConfigurationError(f"expected a finite {name}, got {value!r}", field=name)

    @property
    def fps_floor(self) -> float:
        """The output fps that still counts as ``target_fps``."""
        return round(self.target_fps * FPS_TOLERANCE, 3)

    def describe(self) -> str:
        parts = [f"output >= {self.target_fps:g} fps"]
        if self.min_detections is not None:
            parts.append(f">= {self.min_detections:g} detections/s")
        if self.max_latency_ms is not None:
            parts.append(f"latency p95 <= {self.max_latency_ms:g} ms")
        return ", ".join(parts)

    def margins(
        self, out_fps: float, detections: float | None, latency_p95: float | None
    ) -> dict[str, float]:
        """Each checked target's relative margin: > 0 met (by that share), < 0 missed.

        A detection target with no measurement (no motion in the window) is left out.

        Example:
            >>> CapacityTargets(15, 2).margins(15.0, 1.5, None)
            {'output fps': 0.053, 'detections/s': -0.25}
        """
        out = {"output fps": round(out_fps / self.fps_floor - 1.0, 3)}
        if self.min_detections is not None and detections is not None:
            out["detections/s"] = round(detections / self.min_detections - 1.0, 3)
        if self.max_latency_ms is not None:
            worst = math.inf if latency_p95 is None else latency_p95
            out["latency p95"] = round(1.0 - worst / self.max_latency_ms, 3) if math.isfinite(worst) else -1.0
        return out


@dataclass(frozen=True)
class CameraLoad:
    """The emulated cameras: frame rate, size, JPEG quality and what they show.

    Example:
        >>> CameraLoad(fps=15, size=(640, 480)).describe()
        'photos scene (always moving), 640x480 at 15 fps'
        >>> load = CameraLoad.from_activity(0.25)
        >>> load.scene, load.still_seconds, round(load.activity, 2)
        ('yard', 24.5, 0.25)
    """

    fps: float = 15.0
    size: tuple[int, int] = (640, 480)
    #: JPEG quality as the camera's ``quality`` (0..63, lower is better).
    quality: int = 12
    #: ``"photos"`` (moving all the time), ``"yard"`` (still, then people walking) or a folder of
    #: pictures or a video file (a clip's ``frames/``).
    scene: str = "photos"
    #: Yard scene: seconds of empty yard at the start of each loop, and of a person standing.
    still_seconds: float = 12.0
    stand_seconds: float = 3.0
    #: Most frames taken from a folder or video (the photos scene's loop length).
    loop_frames: int = 90
    #: Sensor noise in grey levels (0: off).
    noise: int = 0

    def __post_init__(self) -> None:
        if not (self.fps > 0 and math.isfinite(self.fps)):
            raise ConfigurationError(f"expected camera fps > 0, got {self.fps!r}", field="fps")
        object.__setattr__(self, "size", (int(self.size[0]), int(self.size[1])))
        if self.scene not in ("photos", "yard") and not Path(self.scene).exists():
            raise ConfigurationError(
                f"expected scene 'photos', 'yard' or a folder or video, got {self.scene!r}", field="scene"
            )

    @classmethod
    def from_activity(cls, activity: float, **kwargs: Any) -> CameraLoad:
        """Cameras whose scene moves ``activity`` of the time: 1 the photos scene, at most 0.53
        the yard scene with its first still stretch chosen to match.

        Raises:
            ConfigurationError: ``activity`` is above 0.53 but below 1, or not in (0, 1].
        """
        if not 0 < activity <= 1:
            raise ConfigurationError(f"expected activity in (0, 1], got {activity!r}", field="activity")
        if activity == 1:
            return cls(scene="photos", **kwargs)
        stand = float(kwargs.pop("stand_seconds", 3.0))
        most = _YARD_MOVING_S / (_YARD_MOVING_S + _YARD_OTHER_STILL_S - 3.0 + stand)
        if activity > most:
            raise ConfigurationError(
                f"expected activity 1 (the photos scene) or at most {most:.2f} (the yard scene moves "
                f"at most that share of its loop), got {activity!r}",
                field="activity",
            )
        still = _YARD_MOVING_S / activity - (_YARD_MOVING_S + _YARD_OTHER_STILL_S - 3.0 + stand)
        return cls(scene="yard", still_seconds=round(max(0.0, still), 3), stand_seconds=stand, **kwargs)

    @classmethod
    def from_clip(cls, clip: str | Path, *, fps: float | None = None, **kwargs: Any) -> CameraLoad:
        """Cameras replaying a recorded clip (``espdetect record``): its frames, looped at its
        mean frame rate (or ``fps``), at its frame size unless ``size`` is given.

        Raises:
            ConfigurationError: ``clip`` is not a clip folder.
        """
        from espdetect.sources.clip import clip_info, frame_path, is_clip, load_clip_index

        if not is_clip(clip):
            raise ConfigurationError(
                f"expected a clip folder (espdetect record --out), got {clip}", field="clip"
            )
        rows = load_clip_index(clip)
        if not rows:
            raise ConfigurationError(f"expected frames in clip {clip}, got none", field="clip")
        if "size" not in kwargs:
            import cv2
            import numpy as np

            first = cv2.imdecode(np.fromfile(frame_path(clip, rows[0].seq), np.uint8), cv2.IMREAD_COLOR)
            if first is None:
                raise ConfigurationError(f"expected a decodable first frame in clip {clip}", field="clip")
            kwargs["size"] = (int(first.shape[1]), int(first.shape[0]))
        rate = fps or clip_info(clip).fps or 15.0
        frames = Path(clip) / "frames"
        return cls(fps=float(rate), scene=str(frames), loop_frames=min(len(rows), 1800), **kwargs)

    @property
    def activity(self) -> float | None:
        """The share of the scene's loop with motion: 1 for photos, None for a clip (unknown)."""
        if self.scene == "photos":
            return 1.0
        if self.scene == "yard":
            still = self.still_seconds + _YARD_OTHER_STILL_S - 3.0 + self.stand_seconds
            return _YARD_MOVING_S / (_YARD_MOVING_S + still)
        return None

    @property
    def loop_seconds(self) -> float:
        """Seconds before the scene repeats."""
        if self.scene == "yard":
            return self.still_seconds + _YARD_MOVING_S + _YARD_OTHER_STILL_S - 3.0 + self.stand_seconds
        return self.loop_frames / self.fps

    def describe(self) -> str:
        w, h = self.size
        if self.scene == "photos":
            what = "photos scene (always moving)"
        elif self.scene == "yard":
            share = (self.activity or 0.0) * 100
            what = f"yard scene (moving {share:.0f} % of a {self.loop_seconds:.0f} s loop)"
        else:
            what = f"clip {self.scene}"
        return f"{what}, {w}x{h} at {self.fps:.4g} fps"

    def emulator_json(self, streams: int) -> str:
        return json.dumps({**asdict(self), "size": list(self.size), "streams": streams})


# -- what is measured ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CapacityStep:
    """One measured step: ``cameras`` cameras served at once (per camera figures: the worst camera)."""

    cameras: int
    viewers_per_camera: int
    viewer_kind: str
    seconds: float
    #: Frames per second the server read from the slowest camera.
    in_fps: float
    #: Frames (or, for detections-only viewers, camera frames read) per second of the slowest viewer.
    out_fps: float
    #: Model calls per second while the camera needed the model, the camera that got fewest
    #: (None: it never needed it in the window).
    detections_per_s: float | None
    #: Model calls per second, all cameras together (whether or not something moved).
    detections_total_per_s: float
    #: The worst camera's p95 latency, frame arrival at the server to its last byte at the viewer.
    latency_p95_ms: float | None
    #: The server process's CPU over the window, % of one core.
    cpu_percent: float
    rss_mb: float
    #: Cores busy on the whole machine (2.0: a 2-core machine saturated).
    machine_cores_busy: float
    #: CPU of the emulated camera and the viewers (this process), % of one core.
    harness_cpu_percent: float
    #: CPU of every other process on the machine, % of one core (other work on a shared machine:
    #: the figures of a step with much of it are lower than this machine's quiet capacity).
    other_cpu_percent: float
    #: ``/stats`` ``motion_fraction``, mean over cameras (share of motion-tested frames that moved).
    motion_fraction: float | None
    #: Share of the window's seconds in which the camera needed the model, mean over cameras.
    active_share: float
    #: Model call (inference) and decode + model call times, median, of the newest camera.
    inference_ms_p50: float | None
    detect_ms_p50: float | None
    #: Share of the time the model was busy: sum over cameras of calls/s x mean detect time.
    model_busy: float
    #: Camera frames the renderer had no time for, and frames viewers missed, per second in all.
    dropped_per_s: float
    viewer_skipped_per_s: float
    viewer_errors: int
    passed: bool
    #: The target that failed (the one missed by most), else None.
    failing: str | None
    #: Why the step failed, with the figures.
    reason: str | None
    #: The target closest to its limit and its relative margin (< 0: missed by that share).
    closest: str
    margin: float

    def summary(self) -> str:
        """One line, as ``espdetect capacity`` prints it."""
        det = "n/a" if self.detections_per_s is None else f"{self.detections_per_s:.2f}/s"
        lat = "n/a" if self.latency_p95_ms is None else f"{self.latency_p95_ms:.0f} ms"
        motion = (
            "" if self.motion_fraction is None else f", motion {self.active_share * 100:.0f} % of the time"
        )
        head = (
            f"{_cameras(self.cameras)}: out {self.out_fps:.1f} fps, "
            f"detections {det} (all cameras {self.detections_total_per_s:.1f}/s), p95 {lat}, "
            f"CPU {self.cpu_percent:.0f} %, RSS {self.rss_mb:.0f} MB{motion}"
        )
        if self.other_cpu_percent >= _BUSY_OTHERS:
            head += f", other processes {self.other_cpu_percent:.0f} %"
        if self.passed:
            return f"{head} - pass (closest: {self.closest} {self.margin * 100:+.0f} %)"
        return f"{head} - FAIL: {self.reason}"


#: The columns of ``capacity.csv``, in order (`CapacityStep` fields).
CSV_COLUMNS: Final = tuple(f.name for f in fields(CapacityStep))


@dataclass(frozen=True)
class Bottleneck:
    """The stage that limits, at the step it was judged on, with the figures that show it.

    Example:
        >>> Bottleneck("model", 4, "the model was busy 97 % of the time").text()
        'bottleneck at 4 cameras: model - the model was busy 97 % of the time'
    """

    stage: Stage
    cameras: int
    evidence: str
    #: False when no step failed: then ``stage`` is only the busiest one at the last step.
    limited: bool = True

    def text(self) -> str:
        if not self.limited:
            where = f"busiest stage at {_cameras(self.cameras)} (no target failed)"
            return f"{where}: {self.stage} - {self.evidence}"
        return f"bottleneck at {_cameras(self.cameras)}: {self.stage} - {self.evidence}"


@dataclass(frozen=True)
class CapacityResult:
    """Every step measured, the answer and why it stops there."""

    targets: CapacityTargets
    load: CameraLoad
    steps: tuple[CapacityStep, ...]
    #: The largest number of cameras whose step passed, with every smaller step passing too.
    capacity: int
    bottleneck: Bottleneck | None
    max_cameras: int
    #: The server options the run used besides its cameras (what `write_capacity_config` writes).
    server_options: Mapping[str, object] = field(default_factory=dict)
    model: str | None = None

    @property
    def text(self) -> str:
        """What the run found, how close to the edge, and the bottleneck (several lines)."""
        lines = [
            f"targets: {self.targets.describe()} per camera; cameras: {self.load.describe()}; "
            f"viewers: {self.steps[0].viewers_per_camera if self.steps else 0} {self._kind()} per camera"
        ]
        passed = [s for s in self.steps if s.passed]
        failed = next((s for s in self.steps if not s.passed), None)
        last = self.step(self.capacity)
        if last is not None and passed:
            edge = (
                f"inside the +-{CPU_DRIFT * 100:.0f} % drift of this machine's CPU speed: a rerun may find "
                f"{self.capacity - 1}"
                if last.margin < CPU_DRIFT
                else f"outside the +-{CPU_DRIFT * 100:.0f} % drift of the CPU speed"
            )
            lines.append(
                f"{_cameras(self.capacity)} held with {last.margin * 100:+.0f} % on {last.closest} ({edge})"
            )
        if failed is not None:
            near = abs(failed.margin) < CPU_DRIFT
            lines.append(
                f"{_cameras(failed.cameras)} failed: {failed.reason} ({failed.margin * 100:+.0f} %"
                + (f"; inside the drift: a rerun may pass {failed.cameras})" if near else ")")
            )
        elif self.steps and self.capacity == self.max_cameras:
            lines.append(
                f"every step up to --max-cameras {self.max_cameras} passed: the capacity may be higher"
            )
        if self.bottleneck is not None:
            lines.append(self.bottleneck.text())
        others = max((s.other_cpu_percent for s in self.steps), default=0.0)
        if others >= _BUSY_OTHERS:
            lines.append(
                f"other processes used up to {others:.0f} % of a core during the steps: "
                "a quiet machine serves more"
            )
        return "\n".join(lines)

    def step(self, cameras: int) -> CapacityStep | None:
        """The step measured with ``cameras`` cameras, if any."""
        return next((s for s in self.steps if s.cameras == cameras), None)

    def _kind(self) -> str:
        kind = self.steps[0].viewer_kind if self.steps else "sse"
        return {"sse": "detections-only (SSE)", "annotated": "annotated MJPEG", "raw": "raw MJPEG"}[kind]

    def rows(self) -> list[dict[str, object]]:
        """One dict per step, keys `CSV_COLUMNS`."""
        return [asdict(step) for step in self.steps]

    def write_csv(self, path: str | Path) -> Path:
        """``capacity.csv``: one row per step (`CSV_COLUMNS`)."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(CSV_COLUMNS))
            writer.writeheader()
            for row in self.rows():
                writer.writerow({k: "" if v is None else v for k, v in row.items()})
        return target

    def plot(self, path: str | Path) -> Path:
        """Per-camera output fps, detections/s and latency against cameras, with the targets.

        Raises:
            MissingDependency: matplotlib is not installed (``espdetect[profile]``).
        """
        from espdetect.exceptions import MissingDependency

        try:
            import matplotlib
        except ModuleNotFoundError as exc:
            raise MissingDependency("matplotlib", "profile", "the capacity plot") from exc
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        k = [s.cameras for s in self.steps]
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
        colors = ["tab:green" if s.passed else "tab:red" for s in self.steps]
        panels = (
            ("output fps per camera (worst)", [s.out_fps for s in self.steps], self.targets.fps_floor),
            (
                "detections/s per camera while needed (worst)",
                [math.nan if s.detections_per_s is None else s.detections_per_s for s in self.steps],
                self.targets.min_detections,
            ),
            (
                "latency p95, ms (worst camera)",
                [math.nan if s.latency_p95_ms is None else s.latency_p95_ms for s in self.steps],
                self.targets.max_latency_ms,
            ),
        )
        for ax, (title, values, limit) in zip(axes, panels, strict=True):
            ax.plot(k, values, color="0.5", zorder=1)
            ax.scatter(k, values, c=colors, zorder=2)
            if limit is not None:
                ax.axhline(limit, color="tab:red", linestyle="--", linewidth=1, label="target")
                ax.legend(loc="best", fontsize=8)
            ax.set_ylim(bottom=0)
            ax.set_title(title, fontsize=10)
            ax.set_xlabel("cameras")
            ax.set_xticks(k)
        cpu = axes[2].twinx()
        cpu.plot(
            k, [s.cpu_percent for s in self.steps], color="tab:blue", linestyle=":", label="server CPU %"
        )
        cpu.set_ylim(0, max(200.0, *(s.cpu_percent for s in self.steps)) * 1.05)
        cpu.set_ylabel("server CPU % (dotted)", color="tab:blue", fontsize=8)
        fig.suptitle(f"capacity: {self.capacity} cameras ({self.load.describe()})", fontsize=11)
        fig.tight_layout()
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(target, dpi=110)
        plt.close(fig)
        return target


# -- figures from samples -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Sample:
    """One ``/stats`` answer and when it came (Unix time, mid-request)."""

    t: float
    stats: dict[str, Any]


@dataclass(frozen=True)
class _CameraFigures:
    in_fps: float
    out_fps: float
    detections_per_s: float | None
    detections_total_per_s: float
    latencies: list[float]
    detect_ms: list[float]
    active_share: float
    motion_fraction: float | None
    inference_ms_p50: float | None
    detect_ms_p50: float | None
    #: Mean decode + model call time (from the events; else the median of ``/stats``).
    detect_ms_mean: float | None
    dropped: int
    viewer_skipped: int
    viewer_timeouts: int
    errors: int


def _mean(values: Sequence[float]) -> float | None:
    clean = [v for v in values if not math.isnan(v)]
    return round(statistics.fmean(clean), 3) if clean else None


def _delta(first: Mapping[str, Any], last: Mapping[str, Any], key: str) -> int:
    return int(last.get(key) or 0) - int(first.get(key) or 0)


def _camera_figures(
    camera: str, samples: Sequence[_Sample], viewers: Sequence[StreamViewer], kind: str
) -> _CameraFigures:
    t0, t1 = samples[0].t, samples[-1].t
    span = max(1e-6, t1 - t0)
    first, last = samples[0].stats["cameras"][camera], samples[-1].stats["cameras"][camera]
    gating = _delta(first, last, "motion_checks") > 0
    active_time = 0.0
    active_calls = 0
    for a, b in itertools.pairwise(samples):
        before, after = a.stats["cameras"][camera], b.stats["cameras"][camera]
        # Active: the camera needed the model - something moved, the model ran for more than the
        # keep-alive (a tracked object moving), or no motion test ran at all (the camera was
        # waiting for its turn on the model). A still camera is tested at its frame rate.
        calls = _delta(before, after, "frames_detected")
        needed = (
            not gating
            or _delta(before, after, "motion_checks") == 0
            or _delta(before, after, "moving_frames") > 0
            or calls > _delta(before, after, "keepalive_calls")
        )
        if needed:
            active_time += b.t - a.t
            active_calls += calls
    in_fps = _delta(first, last, "frames_in") / span
    # Detections-only viewers get one event per model call: their "output" is the camera read.
    out_fps = in_fps if kind == "sse" else min((v.count(t0, t1) / span for v in viewers), default=0.0)
    latencies: list[float] = []
    detect_ms: list[float] = []
    for viewer in viewers:
        lat, det = viewer.window(t0, t1)
        latencies += lat
        detect_ms += det
    return _CameraFigures(
        in_fps=in_fps,
        out_fps=out_fps,
        detections_per_s=active_calls / active_time if active_time > 0 else None,
        detections_total_per_s=_delta(first, last, "frames_detected") / span,
        latencies=latencies,
        detect_ms=detect_ms,
        active_share=min(1.0, active_time / span),
        motion_fraction=last.get("motion_fraction"),
        inference_ms_p50=(last.get("inference_ms") or {}).get("p50"),
        detect_ms_p50=percentile(detect_ms, 50) if detect_ms else (last.get("detect_ms") or {}).get("p50"),
        detect_ms_mean=_mean(detect_ms) if detect_ms else (last.get("detect_ms") or {}).get("p50"),
        dropped=_delta(first, last, "dropped"),
        viewer_skipped=_delta(first, last, "viewer_skipped"),
        viewer_timeouts=_delta(first, last, "viewer_timeouts"),
        errors=sum(1 for v in viewers if v.error is not None),
    )


@dataclass(frozen=True)
class _Window:
    """What one measured window saw: per camera figures and the processes' resources."""

    cameras: dict[str, _CameraFigures]
    seconds: float
    cpu_percent: float
    rss_mb: float
    machine_cores_busy: float
    harness_cpu_percent: float
    viewers_per_camera: int
    kind: str
    viewer_errors: list[str]


def _step(window: _Window, targets: CapacityTargets, camera_fps: float) -> CapacityStep:
    """Judge a window against the targets."""
    # Long: every figure of a step and its verdict come from one window, side by side.
    cams = list(window.cameras.values())
    newest = cams[-1]
    in_fps = min(c.in_fps for c in cams)
    out_fps = min(c.out_fps for c in cams)
    measured = [c.detections_per_s for c in cams if c.detections_per_s is not None]
    detections = min(measured) if measured else None
    latency = max((p for c in cams if (p := percentile(c.latencies, 95)) is not None), default=None)
    motion = [c.motion_fraction for c in cams if c.motion_fraction is not None]
    model_busy = sum(c.detections_total_per_s * (c.detect_ms_mean or 0.0) / 1000.0 for c in cams)
    margins = targets.margins(out_fps, detections, latency)
    worst = min(margins, key=lambda name: margins[name])
    # The output fps of a server that passed on every frame the camera sent sits at its ceiling:
    # it is no edge the CPU's drift can push over, so the closest target is another one.
    contested = {k: v for k, v in margins.items() if k != "output fps" or out_fps < 0.98 * camera_fps}
    closest = worst if margins[worst] < 0 or not contested else min(contested, key=lambda n: contested[n])
    failing: str | None = None
    reason: str | None = None
    if window.viewer_errors:
        failing, reason = (
            "viewers",
            f"{len(window.viewer_errors)} viewer(s) failed: {window.viewer_errors[0]}",
        )
    elif margins[worst] < 0:
        failing = worst
        reason = {
            "output fps": f"output {out_fps:.2f} fps < {targets.fps_floor:g} "
            f"({targets.target_fps:g} fps - 5 %)",
            "detections/s": f"{detections or 0.0:.2f} detections/s < {targets.min_detections or 0.0:g}",
            "latency p95": f"latency p95 {latency or math.inf:.0f} ms > {targets.max_latency_ms or 0.0:g} ms",
        }[worst]
    return CapacityStep(
        cameras=len(cams),
        viewers_per_camera=window.viewers_per_camera,
        viewer_kind=window.kind,
        seconds=round(window.seconds, 2),
        in_fps=round(in_fps, 3),
        out_fps=round(out_fps, 3),
        detections_per_s=None if detections is None else round(detections, 3),
        detections_total_per_s=round(sum(c.detections_total_per_s for c in cams), 3),
        latency_p95_ms=latency,
        cpu_percent=round(window.cpu_percent, 1),
        rss_mb=round(window.rss_mb, 1),
        machine_cores_busy=round(window.machine_cores_busy, 3),
        harness_cpu_percent=round(window.harness_cpu_percent, 1),
        other_cpu_percent=round(
            max(0.0, 100.0 * window.machine_cores_busy - window.cpu_percent - window.harness_cpu_percent), 1
        ),
        motion_fraction=round(statistics.fmean(motion), 3) if motion else None,
        active_share=round(statistics.fmean(c.active_share for c in cams), 3),
        inference_ms_p50=newest.inference_ms_p50,
        detect_ms_p50=newest.detect_ms_p50,
        model_busy=round(model_busy, 3),
        dropped_per_s=round(sum(c.dropped for c in cams) / max(1e-6, window.seconds), 3),
        viewer_skipped_per_s=round(sum(c.viewer_skipped for c in cams) / max(1e-6, window.seconds), 3),
        viewer_errors=len(window.viewer_errors),
        passed=failing is None,
        failing=failing,
        reason=reason,
        closest=closest,
        margin=margins[closest] if failing != "viewers" else -1.0,
    )


def find_bottleneck(steps: Sequence[CapacityStep], camera_fps: float) -> Bottleneck | None:
    """The stage that limits at the first failing step (else the last step), with its figures.

    * **camera input**: the server read fewer frames than the camera sends (reading and parsing
      the camera streams, or the event loop, fell behind);
    * **network send**: the server produced the frames but viewers received fewer (skipped sends);
    * **decode/encode**: annotated frames were dropped because the renderer (decode, draw, JPEG
      encode) had no time, or the model was not the busy one while the CPU was;
    * **model**: the single model slot was busy most of the time (calls/s x detect time),
      so more cameras only share the same calls.

    Example:
        >>> find_bottleneck([], 15.0) is None
        True
    """
    if not steps:
        return None
    failed = next((s for s in steps if not s.passed), None)
    step = failed or steps[-1]
    limited = failed is not None
    first = steps[0]
    slower = ""
    if step.inference_ms_p50 and first.inference_ms_p50:
        slower = (
            f"; one inference took {step.inference_ms_p50:.0f} ms (p50) against "
            f"{first.inference_ms_p50:.0f} ms with one camera"
        )
    busy = (
        f"the model was busy {step.model_busy * 100:.0f} % of the time "
        f"({step.detections_total_per_s:.1f} calls/s in all"
        + (f", decode + inference {step.detect_ms_p50:.0f} ms p50" if step.detect_ms_p50 else "")
        + ")"
    )
    cpu = f"server CPU {step.cpu_percent:.0f} %, machine {step.machine_cores_busy:.2f} cores busy"
    if step.in_fps < FPS_TOLERANCE * camera_fps:
        return Bottleneck(
            "camera input",
            step.cameras,
            f"the server read {step.in_fps:.1f} fps from the slowest camera, "
            f"which sends {camera_fps:g}; {cpu}",
            limited,
        )
    if step.viewer_kind != "sse" and step.viewer_skipped_per_s > 0.05 * step.cameras * camera_fps:
        return Bottleneck(
            "network send",
            step.cameras,
            f"viewers missed {step.viewer_skipped_per_s:.1f} frames/s while busy with older ones; "
            f"slowest viewer {step.out_fps:.1f} fps; {cpu}",
            limited,
        )
    # Annotated viewers: the renderer decodes, draws and encodes every frame on the same cores
    # (and the motion test waits for the same render threads). When the model slot was not
    # saturated, or frames were dropped, that work is what kept the model from more calls.
    rendering = step.viewer_kind == "annotated"
    if rendering and (step.dropped_per_s > 0.05 * step.cameras * camera_fps or step.model_busy < 0.8):
        return Bottleneck(
            "decode/encode",
            step.cameras,
            f"{busy} while the server used {step.cpu_percent:.0f} % CPU: decoding, drawing and encoding "
            f"every frame for the annotated viewers took the rest (renderer dropped "
            f"{step.dropped_per_s:.1f} camera frames/s); machine {step.machine_cores_busy:.2f} cores "
            f"busy{slower}",
            limited,
        )
    return Bottleneck("model", step.cameras, f"{busy}; {cpu}{slower}", limited)


# -- the processes ------------------------------------------------------------------------------


class _Child:
    """A child process: stdout lines to a queue (then drained), stderr to ``log``."""

    def __init__(self, name: str, argv: Sequence[str], log: Path, env: Mapping[str, str]) -> None:
        self.name = name
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        self._log_file: IO[str] = log.open("w", encoding="utf-8")
        logger.debug("starting %s: %s", name, " ".join(argv))
        self.popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log_file,
            text=True,
            env=dict(env),
        )
        self.process = psutil.Process(self.popen.pid)
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, name=f"{name}-stdout", daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def wait_line(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str]:
        """The first stdout line matching ``pattern``; `CapacityRunFailed` if it exits or times out."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CapacityRunFailed(self.name, f"not ready within {timeout:g} s", self.log)
            try:
                line = self._lines.get(timeout=min(left, 1.0))
            except queue.Empty:
                continue
            if line is None:
                self.popen.wait(10)
                reason = f"exited with status {self.popen.returncode}"
                last = self._last_log_line()
                raise CapacityRunFailed(self.name, f"{reason}: {last}" if last else reason, self.log)
            match = pattern.search(line)
            if match:
                return match
            if line.startswith("FAILED "):
                raise CapacityRunFailed(self.name, json.loads(line[7:]).get("error", line), self.log)

    def _last_log_line(self) -> str:
        self._log_file.flush()
        with contextlib.suppress(OSError):
            lines = [
                line.strip() for line in self.log.read_text(encoding="utf-8").splitlines() if line.strip()
            ]
            return lines[-1][:300] if lines else ""
        return ""

    def cpu_seconds(self) -> float:
        try:
            t = self.process.cpu_times()
            return float(t.user + t.system + t.children_user + t.children_system)
        except psutil.Error:
            return 0.0

    def rss_mb(self) -> float:
        try:
            return float(self.process.memory_info().rss) / 2**20
        except psutil.Error:
            return 0.0

    def stop(self, *, terminate: bool, timeout: float = 15.0) -> None:
        """Close stdin (the emulator's cue to leave), SIGTERM (the server's) when ``terminate`` or
        when closing stdin was not enough, and SIGKILL last."""
        if self.popen.poll() is None:
            with contextlib.suppress(OSError):
                if self.popen.stdin is not None:
                    self.popen.stdin.close()
            signals = (
                (signal.SIGTERM, signal.SIGKILL) if terminate else (None, signal.SIGTERM, signal.SIGKILL)
            )
            for sig in signals:
                if sig is not None and self.popen.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        self.popen.send_signal(sig)
                try:
                    self.popen.wait(timeout if sig is not signal.SIGKILL else None)
                    break
                except subprocess.TimeoutExpired:
                    continue
        with contextlib.suppress(OSError):
            if self.popen.stdin is not None:
                self.popen.stdin.close()
        self._log_file.close()


def _child_env(model: str | None) -> dict[str, str]:
    """This environment without ``ESPDETECT_*`` settings (they would beat the generated TOML),
    except the model; ``model`` replaces it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ESPDETECT_") or k == "ESPDETECT_MODEL"}
    if model is not None:
        env["ESPDETECT_MODEL"] = model
    env.update(PYTHONUNBUFFERED="1", YOLO_OFFLINE="True", YOLO_AUTOINSTALL="False")
    return env


# -- the server's settings ----------------------------------------------------------------------


def _sections(options: Mapping[str, object]) -> dict[str | None, dict[str, object]]:
    """Options by their section of the settings schema (None: top level).

    Raises:
        ConfigurationError: an option the server does not have.
    """
    from espdetect.server.settings import leaf_fields

    owner = {name: section for section, name, _ in leaf_fields()}
    out: dict[str | None, dict[str, object]] = {}
    for name, value in options.items():
        if name not in owner or name == "cameras":
            known = ", ".join(sorted(n for n in owner if n != "cameras"))
            raise ConfigurationError(f"expected a server option ({known}), got {name!r}", field=name)
        out.setdefault(owner[name], {})[name] = value
    return out


def capacity_config_toml(
    options: Mapping[str, object],
    cameras: Sequence[Mapping[str, object]],
    comments: Sequence[str] = (),
) -> str:
    """A server TOML file: ``options`` (flat option names) in their sections, then ``cameras``.

    Raises:
        ConfigurationError: an unknown option or a value TOML cannot hold.

    Example:
        >>> print(capacity_config_toml({"port": 0, "skip": 2}, [{"id": "cam1", "url": "http://h:81/stream"}]))
        port = 0
        <BLANKLINE>
        [defaults]
        skip = 2
        <BLANKLINE>
        [[cameras]]
        id = "cam1"
        url = "http://h:81/stream"
        <BLANKLINE>
    """
    from espdetect.server.settings import toml_value

    lines = [f"# {line}" if line else "#" for line in comments]
    sections = _sections(options)
    for name, value in sections.pop(None, {}).items():
        lines.append(f"{name} = {toml_value(value)}")
    for section, values in sections.items():
        lines += ["", f"[{section}]", *(f"{k} = {toml_value(v)}" for k, v in values.items())]
    for camera in cameras:
        lines += ["", "[[cameras]]"]
        for key, value in camera.items():
            if key.startswith("#"):
                lines.append(f"# {value}")
            else:
                lines.append(f"{key} = {toml_value(value)}")
    return "\n".join(lines).lstrip("\n") + "\n"


def write_capacity_config(
    result: CapacityResult,
    path: str | Path,
    *,
    cameras: int | None = None,
    url_template: str = "http://192.168.1.{n}:81/stream",
    first_host: int = 101,
) -> Path:
    """Write a server TOML for ``cameras`` (default: the capacity found) cameras, with the options
    the run measured; the camera URLs are placeholders to replace with your cameras' own.

    Raises:
        ValueError: no camera held the targets (capacity 0) and ``cameras`` was not given.

    Example:
        >>> write_capacity_config(result, "server.toml")  # doctest: +SKIP
        PosixPath('server.toml')
    """
    n = result.capacity if cameras is None else cameras
    if n < 1:
        raise ValueError("expected a capacity of at least one camera, got 0: no configuration to write")
    step = result.step(n)
    comments = [
        f"espdetect server configuration written by 'espdetect capacity' ({time.strftime('%Y-%m-%d %H:%M')})",
        f"{_cameras(n)} held: {result.targets.describe()} per camera",
        f"measured with {result.load.describe()}",
    ]
    if step is not None:
        det = "n/a" if step.detections_per_s is None else f"{step.detections_per_s:.2f}"
        comments.append(
            f"at {_cameras(n)}: out {step.out_fps:.1f} fps, {det} detections/s (worst camera), "
            f"server CPU {step.cpu_percent:.0f} %, RSS {step.rss_mb:.0f} MB"
        )
    if result.bottleneck is not None:
        comments.append(result.bottleneck.text())
    comments += ["", "The camera URLs below are PLACEHOLDERS: replace each with your camera's stream URL."]
    options: dict[str, object] = {"host": "127.0.0.1", "port": 8000}
    if result.model is not None:
        options["model"] = result.model
    options.update(result.server_options)
    cams = [
        {
            "#": "placeholder: replace with your camera's stream URL",
            "id": f"cam{i}",
            "url": url_template.format(n=first_host + i - 1),
        }
        for i in range(1, n + 1)
    ]
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(capacity_config_toml(options, cams, comments), encoding="utf-8")
    return target


# -- the run ------------------------------------------------------------------------------------


class _Rig:
    """The emulated camera, the server and the viewers of one run (async context manager)."""

    def __init__(
        self,
        load: CameraLoad,
        max_cameras: int,
        viewers: int,
        kind: ViewerKind,
        options: Mapping[str, object],
        model: str | None,
        work_dir: Path,
    ) -> None:
        self.load = load
        self.max_cameras = max_cameras
        self.viewers_per_camera = viewers
        self.kind: ViewerKind = kind
        self.options = dict(options)
        self.model = model
        self.work_dir = work_dir
        self.camera: _Child | None = None
        self.server: _Child | None = None
        self.url = ""
        self.viewers: dict[str, list[StreamViewer]] = {}
        self._client: Any = None

    async def __aenter__(self) -> _Rig:
        try:
            await self._start()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _start(self) -> None:
        import httpx

        env = _child_env(self.model)
        logs = self.work_dir / "logs"
        self.camera = _Child(
            "camera",
            [
                sys.executable,
                "-m",
                "espdetect.profiling.capacity_camera",
                self.load.emulator_json(self.max_cameras),
            ],
            logs / "camera.log",
            env,
        )
        match = await asyncio.to_thread(
            self.camera.wait_line, re.compile(r"^READY (\{.*\})$"), _START_TIMEOUT
        )
        ready = json.loads(match.group(1))
        options: dict[str, object] = {
            **self.options,
            "host": "127.0.0.1",
            "port": 0,
            "events": False,
            "data_dir": str(self.work_dir / "data"),
            "max_viewers_per_camera": max(10, self.viewers_per_camera),
            "max_viewers_total": max(50, self.viewers_per_camera * self.max_cameras + 10),
        }
        cameras = [
            {"id": f"cam{i}", "url": f"{ready['stream_url']}?camera={i}", "control_url": ready["control_url"]}
            for i in range(1, self.max_cameras + 1)
        ]
        config = self.work_dir / "server.toml"
        config.write_text(
            capacity_config_toml(options, cameras, ["written by espdetect capacity for its own run"]), "utf-8"
        )
        self.server = _Child(
            "server", [sys.executable, "-c", _CLI, "serve", "--config", str(config)], logs / "server.log", env
        )
        self.url = (await asyncio.to_thread(self.server.wait_line, _URL_LINE, _START_TIMEOUT)).group(1)
        self._client = httpx.AsyncClient(base_url=self.url, timeout=10.0)

    async def aclose(self) -> None:
        for viewers in self.viewers.values():
            for viewer in viewers:
                await viewer.close()
        if self._client is not None:
            await self._client.aclose()
        if self.server is not None:
            await asyncio.to_thread(self.server.stop, terminate=True)
        if self.camera is not None:
            await asyncio.to_thread(self.camera.stop, terminate=False)

    async def stats(self) -> _Sample:
        before = time.time()
        try:
            response = await self._client.get("/stats")
            response.raise_for_status()
        except Exception as exc:
            assert self.server is not None
            raise CapacityRunFailed("server", f"GET /stats failed: {exc!r}", self.server.log) from exc
        return _Sample((before + time.time()) / 2, response.json())

    async def add_camera(self) -> str:
        """Open the next camera's viewers; return its id once the server reads its frames."""
        camera = f"cam{len(self.viewers) + 1}"
        viewers = [StreamViewer(self.url, camera, self.kind) for _ in range(self.viewers_per_camera)]
        self.viewers[camera] = viewers
        for viewer in viewers:
            await viewer.start()
        deadline = time.monotonic() + _CONNECT_TIMEOUT
        for viewer in viewers:
            await viewer.wait_connected(max(0.1, deadline - time.monotonic()))
        while time.monotonic() < deadline:
            stats = (await self.stats()).stats["cameras"].get(camera, {})
            if stats.get("frames_in", 0) > 0 or any(v.error for v in viewers):
                break
            await asyncio.sleep(0.25)
        return camera

    def _cpu(self) -> tuple[float, float, float]:
        assert self.server is not None and self.camera is not None
        me = psutil.Process().cpu_times()
        return (
            time.perf_counter(),
            self.server.cpu_seconds(),
            self.camera.cpu_seconds() + me.user + me.system,
        )

    async def measure(self, seconds: float) -> _Window:
        """Sample ``/stats`` every second for ``seconds`` and collect what the viewers got."""
        assert self.server is not None
        cpu0 = self._cpu()
        machine0 = psutil.cpu_times()
        samples = [await self.stats()]
        start = time.monotonic()
        ticks = max(1, round(seconds / _SAMPLE_EVERY))
        for i in range(1, ticks + 1):
            await asyncio.sleep(max(0.0, start + i * seconds / ticks - time.monotonic()))
            samples.append(await self.stats())
        cpu1 = self._cpu()
        machine1 = psutil.cpu_times()
        wall = max(1e-6, cpu1[0] - cpu0[0])
        busy = _busy(machine1) - _busy(machine0)
        total = sum(machine1) - sum(machine0)
        figures = {
            camera: _camera_figures(camera, samples, viewers, self.kind)
            for camera, viewers in self.viewers.items()
        }
        errors = [f"{v.camera}: {v.error}" for viewers in self.viewers.values() for v in viewers if v.error]
        return _Window(
            cameras=figures,
            seconds=samples[-1].t - samples[0].t,
            cpu_percent=100.0 * (cpu1[1] - cpu0[1]) / wall,
            rss_mb=self.server.rss_mb(),
            machine_cores_busy=(busy / total if total > 0 else 0.0) * (psutil.cpu_count() or 1),
            harness_cpu_percent=100.0 * (cpu1[2] - cpu0[2]) / wall,
            viewers_per_camera=self.viewers_per_camera,
            kind=self.kind,
            viewer_errors=errors,
        )


def _busy(t: Any) -> float:
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


def _check_run(
    load: CameraLoad, viewers: int, max_cameras: int, seconds: float, warmup: float, kind: str
) -> None:
    if kind not in ("sse", "annotated", "raw"):
        raise ConfigurationError(
            f"expected viewer kind sse, annotated or raw, got {kind!r}", field="viewer_kind"
        )
    if viewers < 1:
        raise ConfigurationError(f"expected at least 1 viewer per camera, got {viewers}", field="viewers")
    if not 1 <= max_cameras <= 64:
        raise ConfigurationError(f"expected max cameras 1..64, got {max_cameras}", field="max_cameras")
    if not seconds >= 2:
        raise ConfigurationError(
            f"expected at least 2 measured seconds per step, got {seconds!r}", field="seconds"
        )
    if not warmup >= 0:
        raise ConfigurationError(f"expected warm-up seconds >= 0, got {warmup!r}", field="warmup")
    if load.scene == "yard" and seconds < load.loop_seconds:
        raise ConfigurationError(
            f"expected --seconds of at least the yard scene's loop "
            f"({load.loop_seconds:.0f} s at this activity), "
            f"so every step sees its share of motion; got {seconds:g}",
            field="seconds",
        )


@contextlib.contextmanager
def _work_dir(out_dir: str | Path | None) -> Iterator[Path]:
    if out_dir is not None:
        path = Path(out_dir)
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="espdetect-capacity-") as tmp:
        yield Path(tmp)


async def ameasure_capacity(
    targets: CapacityTargets,
    load: CameraLoad | None = None,
    *,
    viewers: int = 1,
    viewer_kind: ViewerKind = "sse",
    max_cameras: int = 8,
    start_cameras: int = 1,
    seconds: float = 30.0,
    warmup: float = 10.0,
    model: str | None = None,
    server_options: Mapping[str, object] | None = None,
    out_dir: str | Path | None = None,
    on_step: Callable[[CapacityStep], None] | None = None,
) -> CapacityResult:
    """Async `measure_capacity` (for code already running an event loop)."""
    load = load or CameraLoad(fps=targets.target_fps)
    options = dict(server_options or {})
    _sections(options)  # unknown options fail before anything starts
    _check_run(load, viewers, max_cameras, seconds, warmup, viewer_kind)
    if not 1 <= start_cameras <= max_cameras:
        raise ConfigurationError(
            f"expected start cameras 1..{max_cameras}, got {start_cameras}", field="start_cameras"
        )
    steps: list[CapacityStep] = []
    with _work_dir(out_dir) as work:
        async with _Rig(load, max_cameras, viewers, viewer_kind, options, model, work) as rig:
            for k in range(1, max_cameras + 1):
                await rig.add_camera()
                if k < start_cameras:
                    continue
                logger.debug("capacity: %d camera(s), warming up %g s", k, warmup)
                await asyncio.sleep(warmup)
                step = _step(await rig.measure(seconds), targets, load.fps)
                logger.debug("capacity: %s", step.summary())
                steps.append(step)
                if on_step is not None:
                    on_step(step)
                if not step.passed:
                    break
    capacity = 0
    for step in steps:
        if not step.passed:
            break
        capacity = step.cameras
    if start_cameras > 1 and steps and not steps[0].passed:
        capacity = 0  # below start_cameras nothing was measured: claim nothing
    return CapacityResult(
        targets=targets,
        load=load,
        steps=tuple(steps),
        capacity=capacity,
        bottleneck=find_bottleneck(steps, load.fps),
        max_cameras=max_cameras,
        server_options=options,
        # What the server loaded: the model given, else $ESPDETECT_MODEL (None: the bundled one).
        model=model or os.environ.get("ESPDETECT_MODEL") or None,
    )


def measure_capacity(
    targets: CapacityTargets,
    load: CameraLoad | None = None,
    *,
    viewers: int = 1,
    viewer_kind: ViewerKind = "sse",
    max_cameras: int = 8,
    start_cameras: int = 1,
    seconds: float = 30.0,
    warmup: float = 10.0,
    model: str | None = None,
    server_options: Mapping[str, object] | None = None,
    out_dir: str | Path | None = None,
    on_step: Callable[[CapacityStep], None] | None = None,
) -> CapacityResult:
    """Serve 1, 2, ... cameras with the real server until a target fails; the largest K that held.

    Args:
        targets: what every camera must get.
        load: the emulated cameras (default: the photos scene, VGA, at ``targets.target_fps``).
        viewers: viewers per camera, all of ``viewer_kind``: ``"sse"`` (detections only, the
            default: no rendering competes with the model), ``"annotated"`` or ``"raw"`` MJPEG.
        max_cameras: the most cameras tried (all are configured in the server from the start).
        start_cameras: the first step measured (the cameras below it run, unmeasured).
        seconds, warmup: each step is measured for ``seconds`` after ``warmup`` seconds.
        model: the model file (default: ``$ESPDETECT_MODEL``, else the bundled model).
        server_options: server options by name (``{"skip": 2, "imgsz": 320}``), as in its TOML.
        out_dir: where the server's settings and the children's logs go (default: a temporary
            folder, removed afterwards).
        on_step: called with each step once measured.

    Raises:
        ConfigurationError: a bad argument or server option.
        CapacityRunFailed: the emulated camera or the server did not start (the log says why).

    Example:
        >>> result = measure_capacity(CapacityTargets(15, min_detections=2), max_cameras=6)  # doctest: +SKIP
        >>> print(result.text)  # doctest: +SKIP
    """
    return run_blocking(
        ameasure_capacity(
            targets,
            load,
            viewers=viewers,
            viewer_kind=viewer_kind,
            max_cameras=max_cameras,
            start_cameras=start_cameras,
            seconds=seconds,
            warmup=warmup,
            model=model,
            server_options=server_options,
            out_dir=out_dir,
            on_step=on_step,
        )
    )


async def ahold_capacity(
    targets: CapacityTargets,
    cameras: int,
    load: CameraLoad | None = None,
    *,
    seconds: float = 300.0,
    every: float = 60.0,
    viewers: int = 1,
    viewer_kind: ViewerKind = "sse",
    warmup: float = 10.0,
    model: str | None = None,
    server_options: Mapping[str, object] | None = None,
    out_dir: str | Path | None = None,
    on_step: Callable[[CapacityStep], None] | None = None,
) -> list[CapacityStep]:
    """Async `hold_capacity`."""
    load = load or CameraLoad(fps=targets.target_fps)
    options = dict(server_options or {})
    _sections(options)
    _check_run(load, viewers, cameras, every, warmup, viewer_kind)
    windows = max(1, round(seconds / every))
    steps: list[CapacityStep] = []
    with _work_dir(out_dir) as work:
        async with _Rig(load, cameras, viewers, viewer_kind, options, model, work) as rig:
            for _ in range(cameras):
                await rig.add_camera()
            await asyncio.sleep(warmup)
            for _ in range(windows):
                step = _step(await rig.measure(seconds / windows), targets, load.fps)
                steps.append(step)
                if on_step is not None:
                    on_step(step)
    return steps


def hold_capacity(
    targets: CapacityTargets,
    cameras: int,
    load: CameraLoad | None = None,
    *,
    seconds: float = 300.0,
    every: float = 60.0,
    viewers: int = 1,
    viewer_kind: ViewerKind = "sse",
    warmup: float = 10.0,
    model: str | None = None,
    server_options: Mapping[str, object] | None = None,
    out_dir: str | Path | None = None,
    on_step: Callable[[CapacityStep], None] | None = None,
) -> list[CapacityStep]:
    """Serve ``cameras`` cameras for ``seconds`` and judge every ``every`` seconds against the
    targets: whether a capacity holds for longer than the steps that found it.

    Example:
        >>> steps = hold_capacity(CapacityTargets(15, min_detections=2), cameras=3)  # doctest: +SKIP
        >>> all(s.passed for s in steps)  # doctest: +SKIP
        True
    """
    return run_blocking(
        ahold_capacity(
            targets,
            cameras,
            load,
            seconds=seconds,
            every=every,
            viewers=viewers,
            viewer_kind=viewer_kind,
            warmup=warmup,
            model=model,
            server_options=server_options,
            out_dir=out_dir,
            on_step=on_step,
        )
    )
