"""The sensor variables of ESP32 CameraWebServer's ``/control`` and the values its driver takes.

One list for both ends of the wire: the emulator answers ``/control`` as the firmware does, and
the server's pass-through forwards only what the firmware knows (docs/esp32-camera-protocol.md §2).

Example:
    >>> "led_intensity" in CONTROL_VARIABLES, DRIVER_RANGES["quality"]
    (True, (0, 63))
"""

from __future__ import annotations

from typing import Literal, get_args

__all__ = [
    "CONTROL_VARIABLES",
    "DRIVER_RANGES",
    "LEGACY_FACE_VARIABLES",
    "SWITCH_VARIABLES",
    "ControlVariable",
]

#: ``/control?var=NAME`` of the 2020 and later sketches, in the order ``app_httpd.cpp`` tests them
#: (the 2019 sketch lacks ``led_intensity`` and has the face variables instead).
ControlVariable = Literal[
    "framesize",
    "quality",
    "contrast",
    "brightness",
    "saturation",
    "gainceiling",
    "colorbar",
    "awb",
    "agc",
    "aec",
    "hmirror",
    "vflip",
    "awb_gain",
    "agc_gain",
    "aec_value",
    "aec2",
    "dcw",
    "bpc",
    "wpc",
    "raw_gma",
    "lenc",
    "special_effect",
    "wb_mode",
    "ae_level",
    "led_intensity",
]
CONTROL_VARIABLES: tuple[ControlVariable, ...] = get_args(ControlVariable)

#: Face-recognition switches of the 2019 sketch (2.x kept only ``face_detect``).
LEGACY_FACE_VARIABLES = ("face_detect", "face_enroll", "face_recognize")

#: On/off variables. The driver takes any integer (non-zero is on).
SWITCH_VARIABLES: tuple[ControlVariable, ...] = (
    "colorbar",
    "awb",
    "agc",
    "aec",
    "hmirror",
    "vflip",
    "awb_gain",
    "aec2",
    "dcw",
    "bpc",
    "wpc",
    "raw_gma",
    "lenc",
)

#: Inclusive ranges outside which the OV2640 setters fail and the sketch answers 500.
#: ``framesize`` depends on the firmware generation and is checked against its enum table.
DRIVER_RANGES: dict[str, tuple[int, int]] = {
    "quality": (0, 63),
    "brightness": (-2, 2),
    "contrast": (-2, 2),
    "saturation": (-2, 2),
    "ae_level": (-2, 2),
    "special_effect": (0, 6),
    "wb_mode": (0, 4),
    "gainceiling": (0, 6),
    "agc_gain": (0, 30),
    "aec_value": (0, 1200),
    "led_intensity": (0, 255),
}
