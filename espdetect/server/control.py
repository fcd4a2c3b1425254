"""Camera sensor control: ``POST /cameras/{id}/control``, ``GET /cameras/{id}/status`` and
``GET /cameras/{id}/sensor``.

The firmware's control server (port 80 next to the stream's port 81) takes
``GET /control?var=NAME&val=N``. The server forwards only the variables the firmware knows,
within `espdetect.firmware.CONTROL_RANGES`, to the control URL derived from the *configured*
stream URL (`control_url_for`) or set per camera: nothing in a request can make the server
connect anywhere else. A value the camera accepts becomes a desired setting that the camera's
`espdetect.server.sensor.SensorKeeper` applies again after every reconnection. Changing and
reading the camera are offered only when authentication is configured, or when
``camera_control = "on"`` says so explicitly; ``/sensor`` (what the server keeps) always.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, ConfigDict, model_validator

from espdetect.camera_control import (
    CameraControl,
    CameraControlError,
    ControlRefused,
    ControlTimeout,
    NotFirmwareError,
)
from espdetect.camera_control import split_credentials as split_credentials
from espdetect.firmware import CONTROL_RANGES as CONTROL_RANGES
from espdetect.firmware import ControlVariable
from espdetect.server.auth import IDENTITY_SCOPE_KEY
from espdetect.server.camera import Camera
from espdetect.server.routes import CameraDep
from espdetect.server.settings import ServerSettings, control_url_for
from espdetect.server.stats import to_json

__all__ = ["CONTROL_RANGES", "ControlRequest", "ControlVariable", "router", "split_credentials"]

logger = logging.getLogger(__name__)

#: Seconds to wait for the camera's control server.
CONTROL_TIMEOUT = 5.0


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


async def _enabled(request: Request) -> None:
    settings: ServerSettings = request.app.state.settings
    if not settings.camera_control_enabled:
        raise HTTPException(
            403,
            "camera control is off: configure authentication (auth_password_hash or auth_token_hash) "
            "or set camera_control = 'on'",
        )


router = APIRouter()
_Enabled = [Depends(_enabled)]
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "no configured camera has this id"}}


def _http_error(camera: Camera, exc: CameraControlError) -> HTTPException:
    """A failure of the camera's control server as the answer to the client."""
    if isinstance(exc, ControlTimeout):
        return HTTPException(
            504, f"expected an answer from camera {camera.id!r}'s control server: {exc.reason}"
        )
    if isinstance(exc, ControlRefused):
        return HTTPException(
            502,
            f"expected camera {camera.id!r} to accept {exc.variable}={exc.value}, got HTTP {exc.status_code}",
        )
    if isinstance(exc, NotFirmwareError):
        return HTTPException(502, f"expected camera {camera.id!r}'s control server, got: {exc.reason}")
    return HTTPException(502, f"expected to reach camera {camera.id!r}'s control server, got: {exc.reason}")


@router.post("/cameras/{camera_id}/control", dependencies=_Enabled)
async def control(camera: CameraDep, change: ControlRequest, request: Request) -> dict[str, Any]:
    """Set one sensor variable on the camera (``GET /control?var=..&val=..`` on its control port).

    The value also becomes one of the camera's desired sensor settings: applied again after
    every reconnection (a reboot) and, with a data directory, kept across restarts. A
    ``framesize`` number is kept as its size name once the camera's firmware generation is known.
    """
    try:
        await camera.sensor.change(change.var, change.val)
    except CameraControlError as exc:
        raise _http_error(camera, exc) from None
    identity = request.scope.get(IDENTITY_SCOPE_KEY)
    logger.info(
        "%s: control %s=%d by %s", camera.id, change.var, change.val, getattr(identity, "user", "anonymous")
    )
    return {"camera": camera.id, "var": change.var, "val": change.val}


@router.get("/cameras/{camera_id}/status", dependencies=_Enabled)
async def status(camera: CameraDep) -> dict[str, Any]:
    """The camera's own ``/status``: sensor settings, framesize index and quality."""
    base = camera.settings.control_url or control_url_for(camera.settings.url)
    try:
        async with CameraControl(base, timeout=CONTROL_TIMEOUT) as client:
            return dict(await client.status())
    except NotFirmwareError as exc:
        raise HTTPException(502, f"expected camera {camera.id!r}'s /status, got: {exc.reason}") from None
    except CameraControlError as exc:
        raise _http_error(camera, exc) from None


@router.get("/cameras/{camera_id}/sensor", responses=_NOT_FOUND)
async def sensor(camera: CameraDep) -> dict[str, Any]:
    """The camera's sensor settings as the server keeps them: desired (configured, with API changes
    over them), actual (its ``/status`` when last read), the firmware generation, when they were
    last applied after a connection, and what was refused or changed elsewhere (``counters``)."""
    body: dict[str, Any] = to_json(camera.sensor.report())
    return body
