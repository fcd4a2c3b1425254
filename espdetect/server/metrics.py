"""Server statistics: per-camera snapshots for ``/stats`` and a Prometheus collector for ``/metrics``.

Everything is computed when asked from counters the pipeline and the hub already keep, so an
idle server does no statistics work beyond a cheap counter sample twice a second (`RateWindow`).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import psutil
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

if TYPE_CHECKING:
    from espdetect.server.hub import Camera, CameraHub

__all__ = [
    "HubCollector",
    "RateWindow",
    "camera_stats",
    "hub_stats",
    "make_registry",
    "percentiles",
    "process_stats",
]

_QUANTILES = (50, 95, 99)


class RateWindow:
    """Rates of several counters over the last ``seconds``, from periodic samples.

    Example:
        >>> w = RateWindow(5.0)
        >>> w.add(0.0, (0, 0)); w.add(1.0, (30, 10))
        >>> w.rates(2.0, (60, 20))
        (30.0, 10.0)
    """

    def __init__(self, seconds: float) -> None:
        if not seconds > 0:
            raise ValueError(f"seconds must be > 0, got {seconds!r}")
        self.seconds = seconds
        self._samples: deque[tuple[float, tuple[int, ...]]] = deque()

    def add(self, now: float, counters: tuple[int, ...]) -> None:
        self._samples.append((now, counters))
        # Keep one sample at or before the window start so the window is always covered.
        while len(self._samples) > 2 and self._samples[1][0] <= now - self.seconds:
            self._samples.popleft()

    def rates(self, now: float, current: tuple[int, ...]) -> tuple[float, ...]:
        """Per-second rate of each counter between the oldest sample in the window and ``current``."""
        if not self._samples:
            return tuple(0.0 for _ in current)
        start = self._samples[0]
        for sample in self._samples:
            if sample[0] > now - self.seconds:
                break
            start = sample
        if now - start[0] <= 0:
            return tuple(0.0 for _ in current)
        dt = now - start[0]
        return tuple(round(max(0, c - s) / dt, 2) for c, s in zip(current, start[1], strict=True))


def percentiles(samples: Iterable[float], qs: Sequence[int] = _QUANTILES) -> dict[str, float | None]:
    """``{"p50": ..., "p95": ..., "p99": ...}`` of ``samples`` (None each when there are none).

    Example:
        >>> percentiles([1.0, 2.0, 3.0])["p50"]
        2.0
    """
    arr = np.fromiter(samples, dtype=np.float64)
    if arr.size == 0:
        return {f"p{q}": None for q in qs}
    values = np.percentile(arr, qs)
    return {f"p{q}": round(float(v), 3) for q, v in zip(qs, values, strict=True)}


def _counters(camera: Camera) -> tuple[int, int, int, int]:
    stats = camera.pipeline.stats
    return (stats.frames_in, stats.frames_detected, stats.frames_out, camera.serve.frames_sent)


def camera_stats(camera: Camera, now: float | None = None) -> dict[str, Any]:
    """One camera's statistics as JSON-ready values (the ``/stats`` entry)."""
    now = time.monotonic() if now is None else now
    pipe = camera.pipeline.stats
    serve = camera.serve
    source = camera.source_stats()
    counters = _counters(camera)
    fps_in, fps_detect, fps_out, fps_sent = camera.rates.rates(now, counters)
    return {
        "upstream_connected": source.connected,
        "upstream_open": camera.pipeline.upstream_open,
        "viewers": {kind.value: n for kind, n in camera.viewers.items()},
        "frames_in": pipe.frames_in,
        "frames_detected": pipe.frames_detected,
        "frames_out": pipe.frames_out,
        "frames_sent": serve.frames_sent,
        "bytes_sent": serve.bytes_sent,
        "dropped": pipe.dropped,
        "viewer_skipped": serve.viewer_skipped,
        "low_quality_frames": serve.low_quality_frames,
        "reconnects": source.reconnects,
        "stalls": source.stalls,
        "corrupt": source.corrupt,
        "oversize": source.oversize,
        "length_mismatch": source.length_mismatch,
        "garbage_bytes": source.garbage_bytes,
        "connect_failures": source.connect_failures,
        "upstream_opens": pipe.upstream_opens,
        "decode_errors": pipe.decode_errors,
        "detector_errors": pipe.detector_errors,
        "viewers_served": serve.viewers_served,
        "viewers_rejected": serve.viewers_rejected,
        "viewer_timeouts": serve.viewer_timeouts,
        "fps": {"in": fps_in, "detect": fps_detect, "out": fps_out, "sent": fps_sent},
        "inference_ms": percentiles(pipe.inference_ms),
        "detect_ms": percentiles(pipe.detect_ms),
        "latency_ms": percentiles(serve.latency_ms),
        "raw_latency_ms": percentiles(serve.raw_latency_ms),
    }


_PROCESS = psutil.Process(os.getpid())


class _CpuMeter:
    """Process CPU % over the last >= 0.5 s, so clients polling /stats often do not skew it."""

    def __init__(self) -> None:
        self._wall = time.monotonic()
        self._cpu = self._cpu_seconds()
        self.percent = 0.0

    @staticmethod
    def _cpu_seconds() -> float:
        t = _PROCESS.cpu_times()
        return float(t.user + t.system)

    def sample(self) -> float:
        now = time.monotonic()
        if now - self._wall >= 0.5:
            cpu = self._cpu_seconds()
            self.percent = 100.0 * (cpu - self._cpu) / (now - self._wall)
            self._wall, self._cpu = now, cpu
        return self.percent


_CPU = _CpuMeter()


def process_stats() -> dict[str, int | float]:
    """Resource use of the server process: what a leak would make grow, plus CPU %.

    ``tasks`` counts the asyncio tasks of the calling thread's running loop (0 outside one);
    ``cpu_percent`` is user + system time over the interval since the previous sample (100 = one core).
    """
    try:
        tasks = len(asyncio.all_tasks())
    except RuntimeError:
        tasks = 0
    try:
        fds = _PROCESS.num_fds()
    except (AttributeError, psutil.Error):  # not on Windows
        fds = -1
    rss = int(_PROCESS.memory_info().rss)
    return {
        "pid": _PROCESS.pid,
        "cpu_percent": round(_CPU.sample(), 1),
        "rss_bytes": rss,
        "rss_mb": round(rss / 2**20, 1),
        "fds": fds,
        "threads": threading.active_count(),
        "tasks": tasks,
    }


def hub_stats(hub: CameraHub) -> dict[str, Any]:
    """Statistics of every camera, server-wide viewer counts and process resources (``/stats``)."""
    now = time.monotonic()
    return {
        "viewers_total": hub.total_viewers,
        "max_viewers_total": hub.settings.max_viewers_total,
        "cameras": {cam_id: camera_stats(cam, now) for cam_id, cam in hub.cameras.items()},
        "process": process_stats(),
    }


_COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("frames_in", "frames_in", "Frames received from the camera."),
    ("frames_detected", "frames_detected", "Frames the detector processed."),
    ("frames_out", "frames_rendered", "Annotated frames rendered and encoded."),
    ("frames_sent", "frames_sent", "MJPEG parts and SSE events handed to viewers."),
    ("bytes_sent", "bytes_sent", "Bytes handed to viewers."),
    ("dropped", "frames_dropped", "Camera frames never rendered because the renderer was busy."),
    ("viewer_skipped", "viewer_frames_skipped", "Frames viewers missed while busy with an older one."),
    ("reconnects", "upstream_reconnects", "Camera reconnections."),
    ("stalls", "upstream_stalls", "Camera stalls (no complete frame within the stall timeout)."),
    ("corrupt", "upstream_corrupt", "Camera parts that were not complete JPEGs."),
    ("oversize", "upstream_oversize", "Camera parts dropped for exceeding the maximum part size."),
    ("length_mismatch", "upstream_length_mismatch", "Camera parts whose Content-Length was wrong."),
    ("connect_failures", "upstream_connect_failures", "Failed camera connection attempts."),
    ("decode_errors", "decode_errors", "Frames that failed to decode."),
    ("viewers_rejected", "viewers_rejected", "Viewers turned away by a limit."),
    ("viewer_timeouts", "viewer_timeouts", "Viewers dropped because a send stayed blocked."),
)


class HubCollector(Collector):
    """Prometheus collector reading a `CameraHub` at scrape time."""

    def __init__(self, hub: CameraHub) -> None:
        self.hub = hub

    def collect(self) -> Iterator[Metric]:
        stats = hub_stats(self.hub)
        cams: dict[str, dict[str, Any]] = stats["cameras"]
        connected = GaugeMetricFamily(
            "espdetect_upstream_connected", "1 while the camera connection is up.", labels=["camera"]
        )
        viewers = GaugeMetricFamily("espdetect_viewers", "Viewers watching now.", labels=["camera", "kind"])
        fps = GaugeMetricFamily(
            "espdetect_fps", "Frames per second over the stats window.", labels=["camera", "stage"]
        )
        inference = GaugeMetricFamily(
            "espdetect_inference_ms", "Model inference time percentiles.", labels=["camera", "quantile"]
        )
        latency = GaugeMetricFamily(
            "espdetect_latency_ms",
            "Frame arrival to last byte handed to the viewer's connection, percentiles.",
            labels=["camera", "stream", "quantile"],
        )
        counters = {
            key: CounterMetricFamily(f"espdetect_{name}", doc, labels=["camera"])
            for key, name, doc in _COUNTERS
        }
        for cam_id, cam in cams.items():
            connected.add_metric([cam_id], 1.0 if cam["upstream_connected"] else 0.0)
            for kind, n in cam["viewers"].items():
                viewers.add_metric([cam_id, kind], n)
            for stage, value in cam["fps"].items():
                fps.add_metric([cam_id, stage], value)
            for key, counter in counters.items():
                counter.add_metric([cam_id], cam[key])
            for q, value in cam["inference_ms"].items():
                if value is not None:
                    inference.add_metric([cam_id, _quantile_label(q)], value)
            for stream, key in (("annotated", "latency_ms"), ("raw", "raw_latency_ms")):
                for q, value in cam[key].items():
                    if value is not None:
                        latency.add_metric([cam_id, stream, _quantile_label(q)], value)
        total = GaugeMetricFamily("espdetect_viewers_total", "Viewers on all cameras.")
        total.add_metric([], stats["viewers_total"])
        process: dict[str, int | float] = stats["process"]
        yield GaugeMetricFamily(
            "espdetect_asyncio_tasks", "asyncio tasks in the server loop.", value=process["tasks"]
        )
        yield GaugeMetricFamily("espdetect_open_fds", "Open file descriptors.", value=process["fds"])
        yield GaugeMetricFamily(
            "espdetect_rss_bytes", "Resident memory of the process.", value=process["rss_bytes"]
        )
        yield connected
        yield viewers
        yield total
        yield fps
        yield inference
        yield latency
        yield from counters.values()


def _quantile_label(key: str) -> str:
    return str(int(key[1:]) / 100)


def make_registry(hub: CameraHub) -> CollectorRegistry:
    """A registry of its own for one app (several apps in one process never share metrics)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HubCollector(hub))
    return registry
