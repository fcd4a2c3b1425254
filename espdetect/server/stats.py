"""The typed statistics of ``/stats``, from which ``/metrics`` is produced too.

`CameraStats`, `ProcessStats` and `HubStats` are snapshots. Each field that Prometheus exports
says so in its metadata (`counter`, `gauge`): metric name, help text and the label its keys
or quantiles go under. `espdetect.server.metrics` reads that metadata, so a statistic is
declared once and appears under the same name in both places.

Everything is computed when asked from counters the pipeline and the hub already keep, so an
idle server does no statistics work beyond a cheap counter sample twice a second.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Final

import psutil

from espdetect.detectors.remote import RemoteState
from espdetect.server.camera import Camera, FrameCounts
from espdetect.server.event_service import EventCounters
from espdetect.server.hub import CameraHub
from espdetect.server.metric_spec import MetricSpec, counter, gauge
from espdetect.stats import Percentiles

__all__ = [
    "REMOTE_METRICS",
    "AuthStats",
    "CameraStats",
    "DetectorStats",
    "HubStats",
    "MetricSpec",
    "ProcessStats",
    "camera_stats",
    "counter",
    "detector_stats",
    "gauge",
    "hub_stats",
    "json_key",
    "process_stats",
]


def json_key(name: str) -> str:
    """A field name as a JSON key: a trailing ``_`` (``in_``, a Python keyword) dropped."""
    return name[:-1] if name.endswith("_") else name


def to_json(value: Any) -> Any:
    """A statistics snapshot as JSON-ready values (field names become keys, see `json_key`)."""
    if isinstance(value, FrameCounts | Percentiles):
        return {json_key(k): to_json(v) for k, v in value._asdict().items()}
    if is_dataclass(value) and not isinstance(value, type):
        return {json_key(f.name): to_json(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class CameraStats:
    """One camera's statistics (an entry of ``/stats``)."""

    upstream_connected: bool = field(metadata=gauge("1 while the camera connection is up."))
    #: Whether the pipeline holds the camera connection open (it may be reconnecting).
    upstream_open: bool
    viewers: Mapping[str, int] = field(metadata=gauge("Viewers watching now.", key_label="kind"))
    frames_in: int = field(metadata=counter("Frames received from the camera."))
    frames_detected: int = field(metadata=counter("Frames the detector processed."))
    frames_out: int = field(
        metadata=counter("Annotated frames rendered and encoded.", name="frames_rendered")
    )
    frames_sent: int = field(metadata=counter("MJPEG parts and SSE events handed to viewers."))
    bytes_sent: int = field(metadata=counter("Bytes handed to viewers."))
    dropped: int = field(
        metadata=counter("Camera frames never rendered because the renderer was busy.", name="frames_dropped")
    )
    viewer_skipped: int = field(
        metadata=counter("Frames viewers missed while busy with an older one.", name="viewer_frames_skipped")
    )
    #: Annotated parts sent at the lower JPEG quality tier.
    low_quality_frames: int
    reconnects: int = field(metadata=counter("Camera reconnections.", name="upstream_reconnects"))
    stalls: int = field(
        metadata=counter(
            "Camera stalls (no complete frame within the stall timeout).", name="upstream_stalls"
        )
    )
    corrupt: int = field(
        metadata=counter("Camera parts that were not complete JPEGs.", name="upstream_corrupt")
    )
    oversize: int = field(
        metadata=counter(
            "Camera parts dropped for exceeding the maximum part size.", name="upstream_oversize"
        )
    )
    length_mismatch: int = field(
        metadata=counter("Camera parts whose Content-Length was wrong.", name="upstream_length_mismatch")
    )
    #: Bytes between camera parts that belonged to no frame.
    garbage_bytes: int
    connect_failures: int = field(
        metadata=counter("Failed camera connection attempts.", name="upstream_connect_failures")
    )
    #: Times the camera connection was opened.
    upstream_opens: int
    decode_errors: int = field(metadata=counter("Frames that failed to decode."))
    detector_errors: int = field(metadata=counter("Model calls that failed."))
    motion_checks: int = field(metadata=counter("Frames the motion test looked at."))
    moving_frames: int = field(metadata=counter("Frames the motion test found moving."))
    gated_frames: int = field(
        metadata=counter(
            "Model calls saved: frames the motion test kept from the model.", name="model_calls_saved"
        )
    )
    keepalive_calls: int = field(metadata=counter("Model calls made because nothing had moved for a while."))
    motion_fraction: float | None = field(
        metadata=gauge("Share of the recently tested frames in which something moved.")
    )
    #: 1 while the model ran in the last seconds, 0 while the camera is idle (gated).
    detecting: bool = field(metadata=gauge("1 while the model runs for this camera, 0 while it is idle."))
    #: The motion test's time per frame.
    motion_ms: Percentiles
    stage_errors: int = field(
        metadata=counter("Times the camera's pipeline stopped on an unexpected error (then restarted).")
    )
    #: Viewers admitted over the camera's life.
    viewers_served: int
    viewers_rejected: int = field(metadata=counter("Viewers turned away by a limit."))
    viewer_timeouts: int = field(metadata=counter("Viewers dropped because a send stayed blocked."))
    sensor_applies: int = field(
        metadata=counter("Camera connections after which its sensor settings were applied and checked.")
    )
    sensor_values_set: int = field(metadata=counter("Sensor variables set on the camera through /control."))
    sensor_checks: int = field(
        metadata=counter("Comparisons of the camera's /status with its sensor settings.")
    )
    sensor_drift: int = field(
        metadata=counter(
            "Sensor variables found changed on the camera and set back.", name="sensor_drift_reverted"
        )
    )
    sensor_refused: int = field(
        metadata=counter("Sensor settings the camera or its firmware generation refused.")
    )
    sensor_unreachable: int = field(
        metadata=counter("Times the camera's control server could not be reached when needed.")
    )
    #: The camera's control server: unknown, ok, unreachable or none (no firmware control server).
    sensor_control: str
    #: The camera's firmware generation (learned or configured), None while unknown.
    firmware: str | None
    fps: FrameCounts = field(metadata=gauge("Frames per second over the stats window.", key_label="stage"))
    inference_ms: Percentiles = field(
        metadata=gauge("Model inference time percentiles.", key_label="quantile")
    )
    #: Decode + model call per detected frame.
    detect_ms: Percentiles
    latency_ms: Percentiles = field(
        metadata=gauge(
            "Frame arrival to last byte handed to the viewer's connection, percentiles.",
            key_label="quantile",
            labels=(("stream", "annotated"),),
        )
    )
    raw_latency_ms: Percentiles = field(
        metadata=gauge(
            "Frame arrival to last byte handed to the viewer's connection, percentiles.",
            name="latency_ms",
            key_label="quantile",
            labels=(("stream", "raw"),),
        )
    )


@dataclass(frozen=True)
class ProcessStats:
    """Resource use of the server process: what a leak would make grow, plus CPU %."""

    pid: int
    #: User + system time since the previous sample (100 = one core), over at least 0.5 s.
    cpu_percent: float
    rss_bytes: int = field(metadata=gauge("Resident memory of the process."))
    rss_mb: float
    fds: int = field(metadata=gauge("Open file descriptors.", name="open_fds"))
    threads: int
    #: asyncio tasks of the server's event loop.
    tasks: int = field(metadata=gauge("asyncio tasks in the server loop.", name="asyncio_tasks"))


@dataclass(frozen=True)
class AuthStats:
    """Password checks and the limits that turn guesses away before hashing (``auth`` in ``/stats``)."""

    checks: int = field(metadata=counter("Password hashes computed (slow by design).", name="auth_checks"))
    failures: int = field(metadata=counter("Password checks that failed.", name="auth_failures"))
    rejected_busy: int = field(
        metadata=counter(
            "Password checks refused (429): the check queue was full.", name="auth_rejected_busy"
        )
    )
    rejected_backoff: int = field(
        metadata=counter(
            "Password checks refused (429): the address was backing off.", name="auth_rejected_backoff"
        )
    )
    rejected_concurrent: int = field(
        metadata=counter(
            "Password checks refused (429): the address had one in flight.", name="auth_rejected_concurrent"
        )
    )
    #: Checks answered by an identical one already in flight from the same address (no hash).
    shared: int
    running: int = field(metadata=gauge("Password hashes running now.", name="auth_checks_running"))
    waiting: int = field(metadata=gauge("Password checks waiting for a turn.", name="auth_checks_waiting"))
    #: Client addresses remembered for their failures or refusals (bounded).
    clients: int = field(metadata=gauge("Client addresses with recent failures.", name="auth_clients"))


@dataclass(frozen=True)
class DetectorStats:
    """The model every camera shares, and the pool it runs in with backend ray (``detector``)."""

    backend: str
    model: str
    device: str
    healthy: bool = field(
        metadata=gauge(
            "1 while model calls are answered (a remote pool may fail; a local model is 1).",
            name="detector_healthy",
        )
    )
    #: Why not healthy (the last failed call), else None.
    reason: str | None
    #: The Ray pool as this server sees it (backend ray), else None.
    remote: RemoteState | None


#: The `RemoteState` fields ``/metrics`` exports (labelled with the Ray application).
REMOTE_METRICS: Final[dict[str, MetricSpec]] = {
    "replicas_running": MetricSpec(
        "gauge", "ray_replicas_running", "Replicas of the Ray detector pool running."
    ),
    "in_flight": MetricSpec("gauge", "ray_in_flight", "Model calls of this server waiting for the Ray pool."),
    "queued": MetricSpec("gauge", "ray_queued", "Requests waiting in the answering replica (recent mean)."),
    "mean_batch_size": MetricSpec("gauge", "ray_mean_batch_size", "Frames per replica batch (recent mean)."),
    "calls": MetricSpec("counter", "ray_calls", "Model calls sent to the Ray pool."),
    "failures": MetricSpec(
        "counter", "ray_failures", "Model calls to the Ray pool that failed or timed out."
    ),
    "timeouts": MetricSpec("counter", "ray_timeouts", "Model calls to the Ray pool that timed out."),
    "remote_ms": MetricSpec(
        "gauge", "ray_remote_ms", "Time in the replica per call (batch wait, decode, model).", "quantile"
    ),
    "round_trip_ms": MetricSpec(
        "gauge", "ray_round_trip_ms", "Call to answer, as the server sees it.", "quantile"
    ),
}


@dataclass(frozen=True)
class HubStats:
    """What ``/stats`` answers."""

    viewers_total: int = field(metadata=gauge("Viewers on all cameras."))
    max_viewers_total: int
    cameras: Mapping[str, CameraStats]
    process: ProcessStats
    detector: DetectorStats
    auth: AuthStats | None = None
    #: Events and where they go, while events are on.
    events: EventCounters | None = None

    def to_json(self) -> dict[str, Any]:
        result: dict[str, Any] = to_json(self)
        return result


def camera_stats(camera: Camera, now: float | None = None) -> CameraStats:
    """One camera's statistics now."""
    now = time.monotonic() if now is None else now
    pipe = camera.pipeline.stats
    serve = camera.serve
    source = camera.source_stats()
    sensor = camera.sensor.counters
    return CameraStats(
        upstream_connected=source.connected,
        upstream_open=camera.pipeline.upstream_open,
        viewers={kind.value: n for kind, n in camera.viewers.items()},
        frames_in=pipe.frames_in,
        frames_detected=pipe.frames_detected,
        frames_out=pipe.frames_out,
        frames_sent=serve.frames_sent,
        bytes_sent=serve.bytes_sent,
        dropped=pipe.dropped,
        viewer_skipped=serve.viewer_skipped,
        low_quality_frames=serve.low_quality_frames,
        reconnects=source.reconnects,
        stalls=source.stalls,
        corrupt=source.corrupt,
        oversize=source.oversize,
        length_mismatch=source.length_mismatch,
        garbage_bytes=source.garbage_bytes,
        connect_failures=source.connect_failures,
        upstream_opens=pipe.upstream_opens,
        decode_errors=pipe.decode_errors,
        detector_errors=pipe.detector_errors,
        stage_errors=pipe.stage_errors,
        motion_checks=pipe.motion_checks,
        moving_frames=pipe.moving_frames,
        gated_frames=pipe.gated_frames,
        keepalive_calls=pipe.keepalive_calls,
        motion_fraction=pipe.moved.mean(),
        detecting=_detecting(camera),
        motion_ms=pipe.motion_ms.percentiles(),
        viewers_served=serve.viewers_served,
        viewers_rejected=serve.viewers_rejected,
        viewer_timeouts=serve.viewer_timeouts,
        sensor_applies=sensor.applies,
        sensor_values_set=sensor.values_set,
        sensor_checks=sensor.checks,
        sensor_drift=sensor.drift,
        sensor_refused=sensor.refused,
        sensor_unreachable=sensor.unreachable,
        sensor_control=camera.sensor.control_state,
        firmware=camera.sensor.generation,
        fps=FrameCounts._make(camera.rates.rates(now, camera.counts())),
        inference_ms=pipe.inference_ms.percentiles(),
        detect_ms=pipe.detect_ms.percentiles(),
        latency_ms=serve.latency_ms.percentiles(),
        raw_latency_ms=serve.raw_latency_ms.percentiles(),
    )


#: A camera whose model ran within this many seconds counts as detecting (else idle).
_DETECTING_WITHIN: Final = 2.0


def _detecting(camera: Camera) -> bool:
    last = camera.pipeline.last_model_call
    return (
        camera.pipeline.upstream_open and last is not None and time.perf_counter() - last < _DETECTING_WITHIN
    )


class _CpuMeter:
    """Process CPU % over the last >= 0.5 s, so clients polling /stats often do not skew it."""

    def __init__(self, process: psutil.Process) -> None:
        self._process = process
        self._wall = time.monotonic()
        self._cpu = self._cpu_seconds()
        self.percent = 0.0

    def _cpu_seconds(self) -> float:
        t = self._process.cpu_times()
        return float(t.user + t.system)

    def sample(self) -> float:
        now = time.monotonic()
        if now - self._wall >= 0.5:
            cpu = self._cpu_seconds()
            self.percent = 100.0 * (cpu - self._cpu) / (now - self._wall)
            self._wall, self._cpu = now, cpu
        return self.percent


_PROCESS: Final = psutil.Process(os.getpid())
_CPU: Final = _CpuMeter(_PROCESS)


def process_stats() -> ProcessStats:
    """Resource use of this process; ``tasks`` counts the running loop's asyncio tasks (0 outside one)."""
    try:
        tasks = len(asyncio.all_tasks())
    except RuntimeError:
        tasks = 0
    try:
        fds = _PROCESS.num_fds()
    except (AttributeError, psutil.Error):  # not on Windows
        fds = -1
    rss = int(_PROCESS.memory_info().rss)
    return ProcessStats(
        pid=_PROCESS.pid,
        cpu_percent=round(_CPU.sample(), 1),
        rss_bytes=rss,
        rss_mb=round(rss / 2**20, 1),
        fds=fds,
        threads=threading.active_count(),
        tasks=tasks,
    )


def detector_stats(hub: CameraHub) -> DetectorStats:
    """The shared model and, with backend ray, its pool's state."""
    info = hub.detector.info
    remote = hub.detector.remote_state()
    healthy = remote is None or remote.healthy
    return DetectorStats(
        backend=info.backend,
        model=info.model,
        device=info.device,
        healthy=healthy,
        reason=None if remote is None else remote.reason,
        remote=remote,
    )


def hub_stats(hub: CameraHub, auth: AuthStats | None = None) -> HubStats:
    """Statistics of every camera, server-wide viewer counts and process resources (``/stats``)."""
    now = time.monotonic()
    return HubStats(
        viewers_total=hub.total_viewers,
        max_viewers_total=hub.settings.viewers.max_viewers_total,
        cameras={cam_id: camera_stats(cam, now) for cam_id, cam in hub.cameras.items()},
        process=process_stats(),
        detector=detector_stats(hub),
        auth=auth,
        events=hub.events.stats() if hub.events is not None else None,
    )
