"""Numbers of one replay: per-stage time percentiles, rates, model calls, latency, bytes, CPU, memory."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from types import TracebackType

import numpy as np
import psutil

from espdetect.profiling.replay import RunTrace
from espdetect.stats import Percentiles

__all__ = ["STAGES", "STAT_NAMES", "ResourceMonitor", "percentile_stats", "trace_metrics"]

#: Per-frame stages, in pipeline order. ``motion`` is the motion test of motion gating (no
#: calls without it); ``decode`` the (possibly reduced) decode for detection; ``render_decode``
#: the full-scale decode for drawing (free when detection already decoded the same frame at
#: full scale, or when the camera's JPEG is passed through).
STAGES = (
    "motion",
    "decode",
    "preprocess",
    "inference",
    "postprocess",
    "render_decode",
    "annotate",
    "encode",
)
#: Statistics reported for each timed quantity.
STAT_NAMES = ("mean", "p50", "p95", "p99")


def percentile_stats(name: str, samples: Sequence[float]) -> dict[str, float]:
    """``{name}_mean``, ``{name}_p50``, ``{name}_p95``, ``{name}_p99`` of ``samples`` (NaN if none).

    Example:
        >>> percentile_stats("x_ms", [1.0, 2.0, 3.0])["x_ms_p50"]
        2.0
    """
    values = [s for s in samples if not math.isnan(s)]
    out = {f"{name}_mean": float(np.mean(values)) if values else math.nan}
    for q, value in Percentiles.of(values)._asdict().items():
        out[f"{name}_{q}"] = math.nan if value is None else value
    return out


class ResourceMonitor:
    """Process CPU use and peak resident memory over a ``with`` block.

    CPU % is the process's user + system CPU time (``cpu_s``) over the wall time (200 % = two
    cores busy).
    ``background_cpu_percent`` is the CPU the rest of the machine used meanwhile (same scale):
    a measurement with much of it shared its cores with other work and is less trustworthy.
    Peak RSS is sampled every ``interval`` seconds by a daemon thread.

    Example:
        >>> with ResourceMonitor() as mon:
        ...     _ = sum(range(100_000))
        >>> mon.cpu_percent >= 0 and mon.rss_peak_mb > 0
        True
    """

    def __init__(self, interval: float = 0.05) -> None:
        if not interval > 0:
            raise ValueError(f"interval must be > 0 seconds, got {interval!r}")
        self.interval = interval
        self._process = psutil.Process()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._peak = 0
        self._cpu0 = 0.0
        self._t0 = 0.0
        self._busy0 = 0.0
        self.cpu_s = math.nan
        self.cpu_percent = math.nan
        self.background_cpu_percent = math.nan
        self.rss_peak_mb = math.nan
        self.wall_s = math.nan

    def _cpu(self) -> float:
        times = self._process.cpu_times()
        return float(times.user + times.system)

    @staticmethod
    def _busy() -> float:
        t = psutil.cpu_times()
        # guest time is already counted in user on Linux; idle and iowait are not work.
        return float(
            sum(getattr(t, name, 0.0) for name in ("user", "nice", "system", "irq", "softirq", "steal"))
        )

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._peak = max(self._peak, self._process.memory_info().rss)

    def __enter__(self) -> ResourceMonitor:
        self._peak = self._process.memory_info().rss
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, name="espdetect-rss", daemon=True)
        self._thread.start()
        self._cpu0 = self._cpu()
        self._busy0 = self._busy()
        self._t0 = time.perf_counter()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        wall = time.perf_counter() - self._t0
        cpu = self._cpu() - self._cpu0
        busy = self._busy() - self._busy0
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._peak = max(self._peak, self._process.memory_info().rss)
        self.wall_s = wall
        self.cpu_s = cpu
        self.cpu_percent = 100.0 * cpu / wall if wall > 0 else math.nan
        self.background_cpu_percent = max(0.0, 100.0 * (busy - cpu) / wall) if wall > 0 else math.nan
        self.rss_peak_mb = self._peak / (1024 * 1024)


def trace_metrics(trace: RunTrace, camera_fps: float) -> dict[str, float]:
    """Rates, model calls, motion gating, stage statistics, latency and output size of one replay.

    ``bandwidth_kbps`` is what a live viewer receives: output bytes per frame at the output
    frame rate, capped at ``camera_fps`` in fast mode (a live stream cannot outrun its camera).
    ``video_s`` is the camera time replayed (``frames_in / camera_fps``): model calls per minute
    are per minute of it, whatever the replay's own wall time.

    Example:
        >>> trace_metrics(trace, camera_fps=15.0)["fps_output"]  # doctest: +SKIP
        42.1
    """
    dets, renders = trace.detections, trace.renders
    wall = trace.wall_s
    out: dict[str, float] = {
        "frames_in": float(trace.frames_in),
        "frames_detected": float(len(dets)),
        "frames_out": float(len(renders)),
        "frames_dropped": float(max(0, trace.frames_in - len(renders))),
        "frames_skipped": float(sum(1 for r in renders if r.shown_seq != r.seq)),
        "wall_s": wall,
        "fps_processed": len(dets) / wall if wall > 0 else math.nan,
        "fps_output": len(renders) / wall if wall > 0 else math.nan,
        "fps_camera": camera_fps,
    }
    out.update(_gating(trace, camera_fps))
    samples: dict[str, list[float]] = {
        "motion": list(trace.gate.motion_ms),
        "decode": [d.decode_ms for d in dets],
        "preprocess": [d.preprocess_ms for d in dets],
        "inference": [d.inference_ms for d in dets],
        "postprocess": [d.postprocess_ms for d in dets],
        "render_decode": [r.decode_ms for r in renders],
        "annotate": [r.annotate_ms for r in renders],
        "encode": [r.encode_ms for r in renders],
    }
    for stage in STAGES:
        values = samples[stage]
        out.update(percentile_stats(f"{stage}_ms", values))
        total = float(np.nansum(values)) if values else 0.0
        if stage == "motion" and values:
            # A realtime replay keeps only the pipeline's most recent tests: scale by the count.
            total = float(np.nanmean(values)) * trace.gate.motion_checks
        out[f"{stage}_ms_per_frame"] = total / len(renders) if renders else math.nan
    out.update(percentile_stats("detect_ms", [d.detect_ms for d in dets]))
    out.update(percentile_stats("latency_ms", [r.latency_ms for r in renders]))
    out["latency_ms_max"] = max((r.latency_ms for r in renders), default=math.nan)
    bytes_per_frame = float(np.mean([r.nbytes for r in renders])) if renders else math.nan
    live_fps = out["fps_output"]
    if trace.mode == "fast" and camera_fps > 0:
        live_fps = min(live_fps, camera_fps)
    out["bytes_per_frame"] = bytes_per_frame
    out["bandwidth_kbps"] = bytes_per_frame * live_fps * 8 / 1000.0
    return out


def _gating(trace: RunTrace, camera_fps: float) -> dict[str, float]:
    """Model calls per minute of camera time and what motion gating did."""
    gate = trace.gate
    video_s = trace.frames_in / camera_fps if camera_fps > 0 else math.nan
    calls = len(trace.detections)
    return {
        "video_s": video_s,
        "model_calls_per_min": calls / video_s * 60.0 if video_s > 0 else math.nan,
        "motion_checks": float(gate.motion_checks),
        "moving_frames": float(gate.moving_frames),
        "keepalive_calls": float(gate.keepalive_calls),
        "gated_frames": float(gate.gated_frames),
        # Without motion gating nothing is kept from the model: 0, not "unknown".
        "gated_fraction": gate.gated_frames / gate.motion_checks if gate.motion_checks else 0.0,
    }
