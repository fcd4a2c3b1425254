"""Camera sensor control pass-through: ``POST /cameras/{id}/control`` and ``GET /cameras/{id}/status``.

The firmware's control server (port 80 next to the stream's port 81) takes
``GET /control?var=NAME&val=N``. The server forwards only the variables the firmware knows,
with the ranges its sensor drivers accept (docs/esp32-camera-protocol.md §2), to the control
URL derived from the *configured* stream URL (`control_url_for`) or set per camera: nothing in a
request can make the server connect anywhere else. Offered only when authentication is
configured, or when ``camera_control = "on"`` says so explicitly.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, ConfigDict, model_validator

from espdetect.firmware import DRIVER_RANGES, SWITCH_VARIABLES, ControlVariable
from espdetect.server.auth import IDENTITY_SCOPE_KEY
from espdetect.server.camera import Camera
from espdetect.server.routes import CameraDep
from espdetect.server.settings import ServerSettings, control_url_for

__all__ = ["CONTROL_RANGES", "ControlRequest", "ControlVariable", "router", "split_credentials"]

logger = logging.getLogger(__name__)

#: Seconds to wait for the camera's control server.
CONTROL_TIMEOUT = 5.0

#: Accepted values of each variable, inclusive: the driver's ranges, switches as 0 or 1, and
#: two stricter bounds. framesize: the newest firmware's table (0..15; older generations stop at
#: 13 or 10 and answer 500, reported as 502); quality: lower is better, and below 4 the OV2640
#: produces broken frames.
CONTROL_RANGES: dict[str, tuple[int, int]] = {
    **{name: (0, 1) for name in SWITCH_VARIABLES},
    **DRIVER_RANGES,
    "framesize": (0, 15),
    "quality": (4, 63),
}


class ControlRequest(BaseModel):
    """One sensor setting to change.

    Example:
        >>> ControlRequest(var="framesize", val=8).val
        8
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    var: ControlVariable
    val: int

    @model_validator(mode="after")
    def _in_range(self) -> ControlRequest:
        low, high = CONTROL_RANGES[self.var]
        if not low <= self.val <= high:
            raise ValueError(f"val: expected {self.var} between {low} and {high}, got {self.val}")
        return self


def split_credentials(url: str) -> tuple[str, httpx.BasicAuth | None]:
    """``url`` without its ``user:password@`` part, and that part as httpx Basic auth.

    Example:
        >>> split_credentials("http://u:p@cam:8080")[0]
        'http://cam:8080'
    """
    parsed = httpx.URL(url)
    if not parsed.username and not parsed.password:
        return url, None
    return str(parsed.copy_with(username=None, password=None)), httpx.BasicAuth(
        parsed.username, parsed.password
    )


async def _enabled(request: Request) -> None:
    settings: ServerSettings = request.app.state.settings
    if not settings.camera_control_enabled:
        raise HTTPException(
            403,
            "camera control is off: configure authentication (auth_password_hash or auth_token_hash) "
            "or set camera_control = 'on'",
        )


router = APIRouter(dependencies=[Depends(_enabled)])


def _control_base(camera: Camera) -> str:
    return (camera.settings.control_url or control_url_for(camera.settings.url)).rstrip("/")


async def _camera_get(
    camera: Camera, path: str, params: dict[str, str | int] | None = None
) -> httpx.Response:
    url, auth = split_credentials(_control_base(camera) + path)
    try:
        # Plain http needs no CA bundle (loading it blocks the event loop for ~40 ms).
        tls = url.startswith("https://")
        async with httpx.AsyncClient(timeout=CONTROL_TIMEOUT, follow_redirects=False, verify=tls) as client:
            if auth is None:
                return await client.get(url, params=params)
            return await client.get(url, params=params, auth=auth)
    except httpx.TimeoutException:
        raise HTTPException(
            504,
            f"expected an answer from camera {camera.id!r}'s control server within "
            f"{CONTROL_TIMEOUT:g} s, got none",
        ) from None
    except httpx.TransportError as exc:
        raise HTTPException(
            502, f"expected to reach camera {camera.id!r}'s control server, got {type(exc).__name__}"
        ) from None


@router.post("/cameras/{camera_id}/control")
async def control(camera: CameraDep, change: ControlRequest, request: Request) -> dict[str, Any]:
    """Set one sensor variable on the camera (``GET /control?var=..&val=..`` on its control port)."""
    reply = await _camera_get(camera, "/control", {"var": change.var, "val": change.val})
    if reply.status_code != 200:
        raise HTTPException(
            502,
            f"expected camera {camera.id!r} to accept {change.var}={change.val}, "
            f"got HTTP {reply.status_code}",
        )
    identity = request.scope.get(IDENTITY_SCOPE_KEY)
    logger.info(
        "%s: control %s=%d by %s", camera.id, change.var, change.val, getattr(identity, "user", "anonymous")
    )
    return {"camera": camera.id, "var": change.var, "val": change.val}


@router.get("/cameras/{camera_id}/status")
async def status(camera: CameraDep) -> dict[str, Any]:
    """The camera's own ``/status``: sensor settings, framesize index and quality."""
    reply = await _camera_get(camera, "/status")
    if reply.status_code != 200:
        raise HTTPException(502, f"expected camera {camera.id!r}'s /status, got HTTP {reply.status_code}")
    try:
        body = reply.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise HTTPException(
            502, f"expected a JSON object from camera {camera.id!r}'s /status, got something else"
        )
    return {str(k): v for k, v in body.items() if isinstance(v, (int, float, str, bool))}
