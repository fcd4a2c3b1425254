"""Every bound a setting must respect, written once.

The library checks (detectors, pipeline, encoders, profiling configurations) call these
functions; the server's settings and API models build their pydantic fields from the same
ranges, so a value accepted in one place is accepted everywhere. Checks raise
`ConfigurationError` naming the setting (``field``) and saying what was expected.

Model-specific limits (class ids below the model's class count, the fixed input size of an
export, the network stride) are checked by the detector, which knows its model.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final, Literal, NamedTuple
from urllib.parse import urlsplit

import numpy as np

from espdetect.exceptions import ConfigurationError

__all__ = [
    "CAMERA_ID_PATTERN",
    "CLASS_ID",
    "EVENT_END_TIMEOUT",
    "EVENT_ID_PATTERN",
    "EVENT_LIST_LIMIT",
    "EVENT_MIN_FRAMES",
    "EVENT_SECONDS",
    "IMGSZ",
    "JPEG_QUALITY",
    "MAX_CLASSES",
    "MAX_DET",
    "REDUCE_CHOICES",
    "SKIP",
    "THREADS",
    "UNIT",
    "DecodeReduce",
    "FloatRange",
    "IntRange",
    "Reduce",
    "Skip",
    "check_bgr_image",
    "check_camera_id",
    "check_class_ids",
    "check_decode_reduce",
    "check_http_url",
    "check_mqtt_url",
    "check_skip",
]


class IntRange(NamedTuple):
    """Integers from ``low`` to ``high`` inclusive, multiples of ``step``.

    Example:
        >>> IMGSZ.check("imgsz", 320)
        320
    """

    low: int
    high: int
    step: int = 1

    def describe(self) -> str:
        if self.step == 1:
            return f"an integer from {self.low} to {self.high}"
        return f"a multiple of {self.step} from {self.low} to {self.high}"

    def check(self, name: str, value: object) -> int:
        """``value`` as an int if it is in range; `ConfigurationError` otherwise (``bool`` too)."""
        if (
            isinstance(value, bool | np.bool_)
            or not isinstance(value, int | np.integer)
            or not self.low <= int(value) <= self.high
            or int(value) % self.step
        ):
            raise ConfigurationError(f"expected {name} to be {self.describe()}, got {value!r}", field=name)
        return int(value)


class FloatRange(NamedTuple):
    """Finite numbers from ``low`` to ``high`` inclusive."""

    low: float
    high: float

    def describe(self) -> str:
        return f"a number from {self.low:g} to {self.high:g}"

    def check(self, name: str, value: object) -> float:
        """``value`` as a float if it is in range; `ConfigurationError` otherwise (``bool`` too)."""
        if (
            isinstance(value, bool | np.bool_)
            or not isinstance(value, int | float | np.integer | np.floating)
            or not self.low <= float(value) <= self.high  # also refuses NaN
        ):
            raise ConfigurationError(f"expected {name} to be {self.describe()}, got {value!r}", field=name)
        return float(value)


#: Confidence and IoU thresholds.
UNIT: Final = FloatRange(0.0, 1.0)
#: Model input size in pixels (the long side after letterboxing). YOLO needs multiples of 32.
IMGSZ: Final = IntRange(32, 1280, 32)
#: Most detections kept per image.
MAX_DET: Final = IntRange(1, 10_000)
#: JPEG quality of encoded output.
JPEG_QUALITY: Final = IntRange(1, 100)
#: Detect every Nth frame.
SKIP: Final = IntRange(1, 10_000)
#: CPU threads of one inference.
THREADS: Final = IntRange(1, 1024)
#: A class id (the model's own class count is checked by the detector).
CLASS_ID: Final = IntRange(0, 9_999)
#: Most class ids in one ``classes`` filter.
MAX_CLASSES: Final = 1_000

#: Process every Nth frame (an int in `SKIP`), or "auto": detect whenever the detector is free.
Skip = int | Literal["auto"]
#: Scale divisor for reduced-scale JPEG decoding.
Reduce = Literal[1, 2, 4, 8]
#: A reduction, or "auto": the largest that keeps the image at least the model's input size.
DecodeReduce = Reduce | Literal["auto"]
REDUCE_CHOICES: Final[tuple[int, ...]] = (1, 2, 4, 8)

#: What a camera id may look like (it appears in URLs, metric labels and logs).
CAMERA_ID_PATTERN: Final = r"^[A-Za-z0-9_-]{1,64}$"
_CAMERA_ID: Final = re.compile(CAMERA_ID_PATTERN)


def check_skip(value: object, name: str = "skip") -> Skip:
    """A frame-skip setting: an integer in `SKIP`, or ``"auto"``.

    Example:
        >>> check_skip(3), check_skip("auto")
        (3, 'auto')
    """
    if value == "auto":
        return "auto"
    if isinstance(value, str):
        raise ConfigurationError(
            f"expected {name} to be {SKIP.describe()} or 'auto', got {value!r}", field=name
        )
    try:
        return SKIP.check(name, value)
    except ConfigurationError:
        raise ConfigurationError(
            f"expected {name} to be {SKIP.describe()} or 'auto', got {value!r}", field=name
        ) from None


def check_decode_reduce(value: object, name: str = "decode_reduce") -> DecodeReduce:
    """1, 2, 4, 8 or ``"auto"``."""
    if value == "auto":
        return "auto"
    if isinstance(value, bool) or value not in REDUCE_CHOICES:
        raise ConfigurationError(f"expected {name} to be 1, 2, 4, 8 or 'auto', got {value!r}", field=name)
    return value  # type: ignore[return-value]  # narrowed by the membership test above


def check_class_ids(value: object, name: str = "classes") -> tuple[int, ...] | None:
    """None (all classes) or a non-empty sequence of class ids, as a sorted tuple without repeats.

    Example:
        >>> check_class_ids([2, 0, 2])
        (0, 2)
    """
    if value is None:
        return None
    if isinstance(value, str | bytes) or not isinstance(value, Sequence | np.ndarray):
        raise ConfigurationError(
            f"expected {name} to be a list of class ids or None, got {value!r}", field=name
        )
    if len(value) == 0:
        raise ConfigurationError(
            f"expected {name} to name at least one class id (or None for all), got []", field=name
        )
    if len(value) > MAX_CLASSES:
        raise ConfigurationError(
            f"expected at most {MAX_CLASSES} class ids in {name}, got {len(value)}", field=name
        )
    return tuple(sorted({CLASS_ID.check(name, c) for c in value}))


def check_http_url(value: object, name: str = "url") -> str:
    """``value`` if it is an absolute http(s) URL with a host.

    Example:
        >>> check_http_url("http://192.168.4.1:81/stream")
        'http://192.168.4.1:81/stream'
    """
    text = value.strip() if isinstance(value, str) else None
    try:
        parts = urlsplit(text) if text else None
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"expected {name} to be an http(s) URL, got {value!r}", field=name)
    return text  # type: ignore[return-value]  # not None when parts is set


def check_mqtt_url(value: object, name: str = "mqtt_url") -> str:
    """``value`` if it is ``mqtt://[user[:password]@]host[:port]`` (``mqtts://`` for TLS), no path.

    Example:
        >>> check_mqtt_url("mqtt://user:secret@broker.lan:1883")
        'mqtt://user:secret@broker.lan:1883'
    """
    text = value.strip() if isinstance(value, str) else None
    try:
        parts = urlsplit(text) if text else None
        port = parts.port if parts is not None else None
    except ValueError:
        parts = port = None
    if (
        parts is None
        or parts.scheme not in ("mqtt", "mqtts")
        or not parts.hostname
        or parts.path not in ("", "/")
        or parts.query
        or port == 0
    ):
        like = "mqtt://[user:password@]host[:port]"
        shown = "<hidden>" if parts is not None and parts.password else repr(value)
        raise ConfigurationError(f"expected {name} like {like}, got {shown}", field=name)
    return text  # type: ignore[return-value]  # not None when parts is set


def check_camera_id(value: object, name: str = "camera id") -> str:
    """``value`` if it is 1-64 letters, digits, ``_`` or ``-`` (safe in URLs, labels and logs)."""
    if not isinstance(value, str) or not _CAMERA_ID.match(value):
        raise ConfigurationError(
            f"expected {name} to be 1-64 letters, digits, '_' or '-', got {value!r}", field=name
        )
    return value


def check_bgr_image(image: object) -> np.ndarray:
    """``image`` if it is a non-empty (H, W, 3) uint8 array; `ValueError` saying what it is otherwise."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"expected an (H, W, 3) uint8 BGR image, got {type(image).__name__}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
        raise ValueError(
            f"expected a non-empty (H, W, 3) uint8 BGR image, got {image.dtype} of shape {image.shape}"
        )
    return image


#: Frames in a row an object must be seen before its event starts (debounce).
EVENT_MIN_FRAMES: Final = IntRange(1, 1000)
#: Seconds an object may be gone before its event ends (above 0: an event outlives its frame).
EVENT_END_TIMEOUT: Final = FloatRange(0.1, 3600.0)
#: Seconds of the other event windows (grouping a visit, the pace of updates).
EVENT_SECONDS: Final = FloatRange(0.0, 3600.0)
#: What a stored event id may look like: it names snapshot files, so no separator and no leading
#: or trailing dot (no ``..``, no hidden or temporary file, no name Windows would trim).
EVENT_ID_PATTERN: Final = r"^[A-Za-z0-9_-](?:[A-Za-z0-9._-]{0,126}[A-Za-z0-9_-])?$"
#: Events one listing returns at most (a page).
EVENT_LIST_LIMIT: Final = IntRange(1, 1000)
