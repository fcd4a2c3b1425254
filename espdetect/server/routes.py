"""The HTTP API: viewer page, camera list, streams, snapshots, detections, settings, stats, metrics.

Routes live in one `APIRouter` so authentication, CORS and other policies can be added by the
app factory (middleware, router dependencies) without touching them. Resources come from the
lifespan state (``request.state.hub``); nothing here is a module-level singleton.
"""

from __future__ import annotations

from importlib import resources
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import HTMLResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry
from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator

from espdetect.constraints import CAMERA_ID_PATTERN
from espdetect.exceptions import SlotClosed
from espdetect.mjpeg import format_timestamp
from espdetect.pipeline import StaleMode
from espdetect.server.camera import Camera, ViewerKind
from espdetect.server.errors import NoFrameAvailable, SafeJSONResponse
from espdetect.server.hub import CameraHub
from espdetect.server.settings import (
    Conf,
    EndTimeout,
    Fraction,
    Imgsz,
    Keepalive,
    MinFrames,
    MotionThreshold,
    Quality,
    StrictClassIds,
    StrictLabels,
    StrictMotionMasks,
    StrictSkip,
    StrictZones,
)
from espdetect.server.stats import hub_stats
from espdetect.server.streaming import (
    MJPEG_MEDIA_TYPE,
    SSE_MEDIA_TYPE,
    ViewerStream,
    annotated_mjpeg,
    detection_events,
    raw_mjpeg,
)

__all__ = ["SettingsPatch", "router"]

router = APIRouter()


# Dependencies are coroutines: FastAPI runs plain functions in a worker thread, a thread hop
# per request that costs more than the whole request under a burst of connections.
async def get_hub(request: Request) -> CameraHub:
    hub: CameraHub = request.state.hub
    return hub


HubDep = Annotated[CameraHub, Depends(get_hub)]
CameraId = Annotated[str, Path(pattern=CAMERA_ID_PATTERN, description="camera id from the configuration")]


async def get_camera(camera_id: CameraId, hub: HubDep) -> Camera:
    return hub.camera(camera_id)


async def get_first_camera(hub: HubDep) -> Camera:
    return hub.first()


CameraDep = Annotated[Camera, Depends(get_camera)]
FirstCameraDep = Annotated[Camera, Depends(get_first_camera)]


class SettingsPatch(BaseModel):
    """Fields to change; omitted fields keep their value. ``classes: null`` means all classes.

    The fields are those of `espdetect.server.settings.CameraOptions`, with the same bounds
    (a test keeps the two lists equal), all optional, and strict: JSON's own types only (no
    ``"3"`` for 3, no ``true`` for 1; an integer is a number).

    Example:
        >>> SettingsPatch(conf=0.4, skip="auto").model_dump(exclude_unset=True)
        {'conf': 0.4, 'skip': 'auto'}
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    conf: Conf | None = None
    iou: Conf | None = None
    classes: StrictClassIds | None = None
    skip: StrictSkip | None = None
    quality: Quality | None = None
    imgsz: Imgsz | None = None
    # FastAPI validates the decoded JSON in Python mode, where a strict enum wants an instance.
    stale: Annotated[StaleMode, Field(strict=False)] | None = None
    motion: StrictBool | None = None
    motion_threshold: MotionThreshold | None = None
    motion_min_area: Fraction | None = None
    motion_masks: StrictMotionMasks | None = None
    keepalive: Keepalive | None = None
    tracking: StrictBool | None = None
    always_on: StrictBool | None = None
    labels: StrictLabels | None = None
    min_score: Conf | None = None
    min_frames: MinFrames | None = None
    end_timeout: EndTimeout | None = None
    zones: StrictZones | None = None

    @model_validator(mode="after")
    def _no_nulls(self) -> SettingsPatch:
        for name in sorted(self.model_fields_set - {"classes"}):
            if getattr(self, name) is None:
                raise ValueError(
                    f"{name}: expected a value, got null (only classes may be null: all classes)"
                )
        return self

    def changes(self) -> dict[str, Any]:
        return self.model_dump(exclude_unset=True)


def _settings_body(camera: Camera) -> dict[str, Any]:
    body: dict[str, Any] = camera.settings.model_dump(mode="json", exclude={"url", "control_url"})
    info = camera.detector.info
    body["quality_tiers"] = list(camera.quality_tiers)
    body["fixed_imgsz"] = info.fixed_imgsz
    body["model"] = info.to_dict()
    body["names"] = {str(k): v for k, v in info.names.items()}
    return body


def _peer(request: Request) -> str:
    client = request.client
    return f"{client.host}:{client.port}" if client else "unknown"


def _stream(request: Request, hub: CameraHub, camera: Camera, kind: ViewerKind) -> ViewerStream:
    # Admission (and its limit check) happens before any header is sent; the ticket is
    # released by the response whatever ends it.
    ticket = hub.admit(camera, kind, _peer(request))
    if kind is ViewerKind.RAW:
        body, media_type = (lambda send: raw_mjpeg(camera, ticket, send)), MJPEG_MEDIA_TYPE
    elif kind is ViewerKind.ANNOTATED:
        body, media_type = (lambda send: annotated_mjpeg(camera, ticket, send)), MJPEG_MEDIA_TYPE
    else:
        body, media_type = (lambda send: detection_events(camera, ticket, send)), SSE_MEDIA_TYPE
    return ViewerStream(
        body,
        ticket=ticket,
        media_type=media_type,
        shutdown=hub.shutdown,
        send_timeout=hub.settings.viewers.viewer_timeout,
    )


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def index() -> HTMLResponse:
    page = resources.files("espdetect.server").joinpath("static/index.html").read_text(encoding="utf-8")
    return HTMLResponse(page, headers={"Cache-Control": "no-cache"})


@router.get("/health")
async def health(hub: HubDep) -> dict[str, Any]:
    """Liveness: answers at once, whatever the cameras do. ``status`` stays ok while the process
    serves (a container is not restarted for a camera or a remote model); ``detector`` says
    ``degraded`` with the reason while a remote model (backend ray) does not answer."""
    body: dict[str, Any] = {"status": "ok", "cameras": len(hub.cameras), "viewers": hub.total_viewers}
    remote = hub.detector.remote_state()
    if remote is not None:
        body["detector"] = "ok" if remote.healthy else "degraded"
        if not remote.healthy:
            body["reason"] = f"Ray pool {remote.app}: {remote.reason}"
    return body


@router.get(
    "/ready",
    responses={503: {"description": "a camera that must run is not connected, or the remote model fails"}},
)
async def ready(hub: HubDep) -> Response:
    """Readiness: 200 when every camera that runs with no viewer (events, ``always_on``) is
    connected and the model answers (a remote one may not); 503 otherwise. Cameras that follow their
    viewers connect on demand: always ready."""
    cameras = {}
    for cam_id, cam in hub.cameras.items():
        unattended = hub.unattended(cam)
        connected = cam.source_stats().connected
        cameras[cam_id] = {
            "unattended": unattended,
            "connected": connected,
            "ready": connected or not unattended,
        }
    remote = hub.detector.remote_state()
    detector_ok = remote is None or remote.healthy
    ok = detector_ok and all(state["ready"] for state in cameras.values())
    body = {
        "status": "ready" if ok else "not ready",
        "events": hub.events is not None,
        "detector": {"ready": detector_ok, "reason": None if remote is None else remote.reason},
        "cameras": cameras,
    }
    return SafeJSONResponse(body, status_code=200 if ok else 503)


@router.get("/cameras")
async def cameras(hub: HubDep) -> list[dict[str, Any]]:
    """The configured cameras with their endpoint paths (camera URLs stay private)."""
    out = []
    for cam_id, cam in hub.cameras.items():
        base = f"/cameras/{cam_id}"
        out.append(
            {
                "id": cam_id,
                "upstream_connected": cam.source_stats().connected,
                "viewers": {kind.value: n for kind, n in cam.viewers.items()},
                "stream": f"{base}/stream",
                "detect": f"{base}/detect",
                "snapshot": f"{base}/snapshot",
                "detections": f"{base}/detections",
                "settings": f"{base}/settings",
            }
        )
    return out


@router.get("/cameras/{camera_id}/stream", response_class=Response)
async def raw_stream(request: Request, hub: HubDep, camera: CameraDep) -> ViewerStream:
    """The camera's MJPEG stream, JPEG bytes as the camera sent them."""
    return _stream(request, hub, camera, ViewerKind.RAW)


@router.get("/cameras/{camera_id}/detect", response_class=Response)
async def annotated_stream(request: Request, hub: HubDep, camera: CameraDep) -> ViewerStream:
    """MJPEG with the detections drawn in."""
    return _stream(request, hub, camera, ViewerKind.ANNOTATED)


@router.get("/cameras/{camera_id}/detections", response_class=Response)
async def detections(request: Request, hub: HubDep, camera: CameraDep) -> ViewerStream:
    """Server-sent events: one JSON object per processed frame."""
    return _stream(request, hub, camera, ViewerKind.SSE)


@router.get("/stream", response_class=Response)
async def first_raw_stream(request: Request, hub: HubDep, camera: FirstCameraDep) -> ViewerStream:
    """``/cameras/{first}/stream``."""
    return _stream(request, hub, camera, ViewerKind.RAW)


@router.get("/stream/detect", response_class=Response)
async def first_annotated_stream(request: Request, hub: HubDep, camera: FirstCameraDep) -> ViewerStream:
    """``/cameras/{first}/detect``."""
    return _stream(request, hub, camera, ViewerKind.ANNOTATED)


@router.get("/cameras/{camera_id}/snapshot", response_class=Response)
async def snapshot(hub: HubDep, camera: CameraDep, annotated: Annotated[bool, Query()] = False) -> Response:
    """The newest frame as one JPEG; waits for one (up to the snapshot timeout) when none is live."""
    timeout = hub.settings.viewers.snapshot_timeout
    try:
        with anyio.fail_after(timeout):
            jpeg, arrival = await _latest_jpeg(camera, annotated)
    except (TimeoutError, SlotClosed):
        raise NoFrameAvailable(camera.id, timeout) from None
    return Response(
        jpeg,
        media_type="image/jpeg",
        headers={"X-Timestamp": format_timestamp(arrival), "Cache-Control": "no-store"},
    )


async def _latest_jpeg(camera: Camera, annotated: bool) -> tuple[bytes, float]:
    pipe = camera.pipeline
    if annotated:
        rendered = camera.live_output()
        if rendered is None:
            async with pipe.subscribe("annotated"):
                _, rendered = await pipe.output.next_after(pipe.output.version)
        return rendered.jpeg, rendered.frame.arrival
    frame = camera.live_frame()
    if frame is None:
        async with pipe.subscribe("raw"):
            _, frame = await pipe.raw.next_after(pipe.raw.version)
    assert frame.jpeg is not None  # the pipeline encodes frames that come without bytes
    return frame.jpeg, frame.arrival


@router.get("/cameras/{camera_id}/settings")
async def get_settings(camera: CameraDep) -> dict[str, Any]:
    """The camera's effective settings, the JPEG quality tiers and the model's class names."""
    return _settings_body(camera)


@router.patch("/cameras/{camera_id}/settings")
async def patch_settings(hub: HubDep, camera: CameraDep, patch: SettingsPatch) -> dict[str, Any]:
    """Change settings at run time (validated; 422 says what was expected)."""
    hub.apply(camera, patch.changes())
    return _settings_body(camera)


@router.get("/stats")
async def stats(request: Request, hub: HubDep) -> dict[str, Any]:
    """Per-camera counters, rates and latency percentiles; password checks and their limits."""
    authenticator = getattr(request.app.state, "authenticator", None)
    return hub_stats(hub, authenticator.stats() if authenticator is not None else None).to_json()


@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus text format."""
    registry: CollectorRegistry = request.state.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
