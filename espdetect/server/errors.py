"""Errors of the server's domain, each mapped to an HTTP answer by `espdetect.server.app`."""

from __future__ import annotations

from typing import Literal

from espdetect.exceptions import EspdetectError

__all__ = ["NoFrameAvailable", "UnknownCamera", "ViewerLimitReached", "ViewerTimedOut"]


class UnknownCamera(EspdetectError, LookupError):
    """No configured camera has this id (404)."""

    def __init__(self, camera_id: str, known: list[str]) -> None:
        super().__init__(f"expected one of the configured cameras {known}, got {camera_id!r}")
        self.camera_id = camera_id
        self.known = known


class ViewerLimitReached(EspdetectError):
    """A new viewer would exceed the per-camera or the server-wide viewer limit (503)."""

    def __init__(self, scope: Literal["camera", "server"], limit: int, camera_id: str) -> None:
        where = f"camera {camera_id!r}" if scope == "camera" else "this server"
        super().__init__(f"expected at most {limit} viewers on {where}, and all {limit} places are taken")
        self.scope = scope
        self.limit = limit
        self.camera_id = camera_id


class NoFrameAvailable(EspdetectError):
    """A snapshot found no frame cached and none arrived within the snapshot timeout (503)."""

    def __init__(self, camera_id: str, timeout: float) -> None:
        super().__init__(f"expected a frame from camera {camera_id!r} within {timeout:g} s, got none")
        self.camera_id = camera_id
        self.timeout = timeout


class ViewerTimedOut(EspdetectError):
    """One send to a viewer stayed blocked for the viewer timeout (the viewer is dropped)."""

    def __init__(self, timeout: float) -> None:
        super().__init__(f"expected the viewer to take a part within {timeout:g} s, got a blocked send")
        self.timeout = timeout
