"""Errors of the server's domain, each mapped to an HTTP answer by `espdetect.server.app`, and
`SafeJSONResponse`, the JSON answer that carries them whatever a client sent."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, Final, Literal

from fastapi.responses import JSONResponse

from espdetect.exceptions import EspdetectError

__all__ = [
    "EventNotFound",
    "EventsOff",
    "NoFrameAvailable",
    "SafeJSONResponse",
    "UnknownCamera",
    "ViewerLimitReached",
    "ViewerTimedOut",
    "jsonable",
]

#: Nesting `jsonable` keeps; deeper containers become None.
MAX_DEPTH: Final = 32
# Integers with more bits become None: json.dumps refuses ints past 4300 digits (ValueError).
_MAX_INT_BITS: Final = 256


def _text(value: str) -> str:
    # A lone UTF-16 surrogate ("\ud800" is valid JSON) cannot be encoded as UTF-8: it goes back
    # as the six characters of its escape.
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def jsonable(value: object, depth: int = MAX_DEPTH) -> Any:
    r"""``value`` as something `json.dumps` always encodes into valid UTF-8 JSON.

    Strings lose lone surrogates (written as ``\\udXXX`` text), dictionary keys become strings,
    non-finite and huge numbers become None, other objects their type's name.

    Example:
        >>> jsonable({"\ud800": [float("nan"), 1, "ok"]})
        {'\\ud800': [None, 1, 'ok']}
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value) if value.bit_length() <= _MAX_INT_BITS else None
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        return _text(value)
    if depth <= 0:
        return None
    if isinstance(value, Mapping):
        return {_text(str(key)): jsonable(item, depth - 1) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(item, depth - 1) for item in value]
    return f"<{type(value).__name__}>"


class SafeJSONResponse(JSONResponse):
    r"""A JSON answer that cannot fail to render, for errors that may quote what a client sent.

    Example:
        >>> SafeJSONResponse({"detail": "got \ud800"}, status_code=422).body
        b'{"detail":"got \\\\ud800"}'
    """

    def render(self, content: Any) -> bytes:
        return json.dumps(
            jsonable(content), ensure_ascii=False, allow_nan=False, separators=(",", ":")
        ).encode("utf-8")


class UnknownCamera(EspdetectError, LookupError):
    """No configured camera has this id (404)."""

    def __init__(self, camera_id: str, known: list[str]) -> None:
        super().__init__(f"expected one of the configured cameras {known}, got {camera_id!r}")
        self.camera_id = camera_id
        self.known = known


class ViewerLimitReached(EspdetectError):
    """A new viewer would exceed the per-camera or the server-wide viewer limit (503)."""

    def __init__(self, scope: Literal["camera", "server", "event feed"], limit: int, camera_id: str) -> None:
        where = {"camera": f"camera {camera_id!r}", "server": "this server", "event feed": "the event feed"}[
            scope
        ]
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


class EventsOff(EspdetectError, LookupError):
    """The events API was asked for while events are off (404)."""

    def __init__(self) -> None:
        super().__init__(
            "expected events to be on for /events: set events = true, mqtt_url or webhook_urls "
            "(ESPDETECT_EVENTS=true)"
        )


class EventNotFound(EspdetectError, LookupError):
    """No stored event has this id, or it has no picture (404)."""

    def __init__(self, event_id: str, picture: bool = False) -> None:
        what = "a picture of event" if picture else "a stored event"
        super().__init__(f"expected {what} {event_id!r}, got none")
        self.event_id = event_id
