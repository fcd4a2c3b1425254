"""The camera sensor's settings as CameraWebServer exposes them through ``/control`` and ``/status``.

The variable names, the keys and their order in ``/status`` follow the sketch's ``app_httpd.cpp``
of each firmware generation (docs/esp32-camera-protocol.md §2); the value ranges follow the
OV2640 driver where it rejects values. Only framesize, quality, hmirror, vflip and colorbar
change the emulated picture; the other variables are stored and reported.
"""

from __future__ import annotations

from dataclasses import dataclass

from espdetect.emulator.framesizes import (
    FirmwareGeneration,
    framesize_for,
    nearest_framesize,
    size_of_framesize,
)
from espdetect.firmware import CONTROL_VARIABLES, DRIVER_RANGES, LEGACY_FACE_VARIABLES

__all__ = ["CONTROL_VARIABLES_BY_FIRMWARE", "Sensor", "SensorView"]

# Values an AI-Thinker board with an OV2640 reports after the sketch's setup().
_DEFAULTS: dict[str, int] = {
    "brightness": 0,
    "contrast": 0,
    "saturation": 0,
    "sharpness": 0,
    "special_effect": 0,
    "wb_mode": 0,
    "awb": 1,
    "awb_gain": 1,
    "aec": 1,
    "aec2": 0,
    "ae_level": 0,
    "aec_value": 168,
    "agc": 1,
    "agc_gain": 0,
    "gainceiling": 0,
    "bpc": 0,
    "wpc": 1,
    "raw_gma": 1,
    "lenc": 1,
    "hmirror": 0,
    "vflip": 0,
    "dcw": 1,
    "colorbar": 0,
    "led_intensity": 0,
    "face_detect": 0,
    "face_enroll": 0,
    "face_recognize": 0,
}

_COMMON_VARIABLES = tuple(v for v in CONTROL_VARIABLES if v != "led_intensity")

#: The variables ``/control`` accepts, per firmware generation.
CONTROL_VARIABLES_BY_FIRMWARE: dict[FirmwareGeneration, frozenset[str]] = {
    "legacy": frozenset((*_COMMON_VARIABLES, *LEGACY_FACE_VARIABLES)),
    "2.x": frozenset((*CONTROL_VARIABLES, "face_detect")),
    "3.x": frozenset(CONTROL_VARIABLES),
}

_SENSOR_KEYS = (
    "brightness",
    "contrast",
    "saturation",
    "sharpness",
    "special_effect",
    "wb_mode",
    "awb",
    "awb_gain",
    "aec",
    "aec2",
    "ae_level",
    "aec_value",
    "agc",
    "agc_gain",
    "gainceiling",
    "bpc",
    "wpc",
    "raw_gma",
    "lenc",
)

# OV2640 register read-outs (DSP clock divider, clock control, PLL) and constants of the sketch:
# 20 MHz XCLK and PIXFORMAT_JPEG, which is 4 since esp32-camera v2.0.2 inserted YUV420.
_FIXED: dict[str, int] = {"0xd3": 8, "0x111": 0, "0x132": 9, "xclk": 20, "pixformat": 4}

# Since 2020 the sketch prints the values of _FIXED first and has an LED; 3.x dropped face detection.
_STATUS_KEYS_3X = (
    *_FIXED,
    "framesize",
    "quality",
    *_SENSOR_KEYS,
    "hmirror",
    "dcw",
    "colorbar",
    "led_intensity",
)

# The 2019 sketch printed vflip before hmirror and had no register keys, xclk or pixformat.
_STATUS_KEYS: dict[FirmwareGeneration, tuple[str, ...]] = {
    "legacy": (
        "framesize",
        "quality",
        *_SENSOR_KEYS,
        "vflip",
        "hmirror",
        "dcw",
        "colorbar",
        *LEGACY_FACE_VARIABLES,
    ),
    "2.x": (*_STATUS_KEYS_3X, "face_detect"),
    "3.x": _STATUS_KEYS_3X,
}


@dataclass(frozen=True)
class SensorView:
    """What the frame renderer needs from the sensor: one cache key per distinct picture."""

    size: tuple[int, int]
    quality: int
    hmirror: bool
    vflip: bool
    colorbar: bool


class Sensor:
    """Mutable sensor state of one emulated camera.

    ``size`` may be one the firmware cannot produce (a video at its native resolution); then
    ``/status`` reports the nearest framesize until ``/control`` sets a real one.

    Example:
        >>> s = Sensor("2.x", size=(320, 240), quality=12)
        >>> s.set("framesize", 8), s.size
        (True, (640, 480))
    """

    def __init__(self, firmware: FirmwareGeneration, size: tuple[int, int], quality: int) -> None:
        self.firmware: FirmwareGeneration = firmware
        self.size = size
        exact = framesize_for(size, firmware)
        self.framesize = exact if exact is not None else nearest_framesize(size, firmware)
        self.values = dict(_DEFAULTS)
        self.values["quality"] = quality

    @property
    def quality(self) -> int:
        return self.values["quality"]

    @property
    def view(self) -> SensorView:
        return SensorView(
            size=self.size,
            quality=self.quality,
            hmirror=bool(self.values["hmirror"]),
            vflip=bool(self.values["vflip"]),
            colorbar=bool(self.values["colorbar"]),
        )

    def set(self, variable: str, value: int) -> bool:
        """Apply ``/control?var=variable&val=value``; False where the firmware answers 500."""
        if variable not in CONTROL_VARIABLES_BY_FIRMWARE[self.firmware]:
            return False
        if variable == "framesize":
            try:
                self.size = size_of_framesize(value, self.firmware)
            except ValueError:
                return False
            self.framesize = value
            return True
        low, high = DRIVER_RANGES.get(variable, (-(2**31), 2**31 - 1))
        if not low <= value <= high:
            return False
        self.values[variable] = value
        return True

    def status(self) -> dict[str, int]:
        """The ``/status`` fields, in the firmware's order."""
        merged = {**_FIXED, **self.values, "framesize": self.framesize}
        return {key: merged[key] for key in _STATUS_KEYS[self.firmware]}

    def status_json(self) -> str:
        """``/status`` as the firmware prints it: one line, no spaces."""
        return "{" + ",".join(f'"{k}":{v}' for k, v in self.status().items()) + "}"
