"""The sensor variables of ESP32 CameraWebServer's ``/control`` and the values its driver takes.

One list for both ends of the wire: the emulator answers ``/control`` as the firmware does, and
the server forwards only what the firmware knows (docs/esp32-camera-protocol.md §2), within
`CONTROL_RANGES` (the one place espdetect's accepted values are defined). It also tells the
firmware generations apart from what ``/status`` reports (`generation_from_status`).

Example:
    >>> "led_intensity" in CONTROL_VARIABLES, DRIVER_RANGES["quality"], CONTROL_RANGES["quality"]
    (True, (0, 63), (4, 63))
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal, get_args

from espdetect.framesizes import FIRMWARE_GENERATIONS, FirmwareGeneration, framesize_table

__all__ = [
    "CONTROL_RANGES",
    "CONTROL_VARIABLES",
    "DRIVER_RANGES",
    "LEGACY_FACE_VARIABLES",
    "SWITCH_VARIABLES",
    "ControlVariable",
    "check_control_value",
    "control_variables",
    "generation_from_status",
    "reported_variables",
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

#: Accepted values of each variable, inclusive, wherever espdetect sends one (the control
#: pass-through, the configured sensor settings, the profiler): the driver's ranges, switches as
#: 0 or 1, and two stricter bounds. framesize: the newest firmware's table (0..15; older
#: generations stop at 13 or 10 and answer 500); quality: lower is better, and below 4 the
#: OV2640 produces broken frames.
CONTROL_RANGES: Final[dict[str, tuple[int, int]]] = {
    **{name: (0, 1) for name in SWITCH_VARIABLES},
    **DRIVER_RANGES,
    "framesize": (0, max(framesize_table("3.x"))),
    "quality": (4, 63),
}


def check_control_value(variable: str, value: object) -> int:
    """``value`` of a ``/control`` variable as the number to send; switches also take True/False.

    Raises:
        ValueError: an unknown variable, a value of the wrong type or outside `CONTROL_RANGES`;
            the message gives the allowed range.

    Example:
        >>> check_control_value("hmirror", True), check_control_value("quality", 10)
        (1, 10)
    """
    if variable not in CONTROL_RANGES:
        raise ValueError(
            f"expected one of the firmware's variables ({', '.join(CONTROL_VARIABLES)}), got {variable!r}"
        )
    low, high = CONTROL_RANGES[variable]
    if isinstance(value, bool):
        if variable not in SWITCH_VARIABLES:
            raise ValueError(f"expected {variable} as an integer between {low} and {high}, got {value!r}")
        return int(value)
    if not isinstance(value, int) or not low <= value <= high:
        switch = " (or true/false)" if variable in SWITCH_VARIABLES else ""
        raise ValueError(f"expected {variable} between {low} and {high}{switch}, got {value!r}")
    return value


def control_variables(generation: FirmwareGeneration) -> frozenset[ControlVariable]:
    """The `CONTROL_VARIABLES` the generation's ``/control`` accepts (the 2019 sketch had no LED).

    Example:
        >>> "led_intensity" in control_variables("legacy")
        False
    """
    if generation == "legacy":
        return frozenset(v for v in CONTROL_VARIABLES if v != "led_intensity")
    return frozenset(CONTROL_VARIABLES)


def reported_variables(generation: FirmwareGeneration) -> frozenset[ControlVariable]:
    """The `CONTROL_VARIABLES` the generation's ``/status`` reports (no ``vflip`` since 2020).

    A variable it does not report can be set but not read back.

    Example:
        >>> sorted(set(CONTROL_VARIABLES) - reported_variables("2.x"))
        ['vflip']
    """
    if generation == "legacy":
        return control_variables("legacy")
    return frozenset(v for v in CONTROL_VARIABLES if v != "vflip")


def _status_int(status: Mapping[str, object], key: str) -> int | None:
    value = status.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def generation_from_status(
    status: Mapping[str, object], frame_size: tuple[int, int] | None
) -> FirmwareGeneration | None:
    """The firmware generation, from its ``/status`` and the size of a frame it streams at the
    ``framesize`` that status reports; None when they cannot tell.

    The 2019 sketch reports its face recognition switches (``face_enroll``, ``face_recognize``)
    and ``vflip`` but no ``led_intensity``; the later ones differ only in the enum's numbering,
    so the frame size decides, unless both tables give the same size (0 and 1) or no frame was
    seen (``frame_size`` None).

    Example:
        >>> generation_from_status({"framesize": 5, "quality": 10, "led_intensity": 0}, (320, 240))
        '2.x'
        >>> generation_from_status({"framesize": 1, "led_intensity": 0}, (160, 120)) is None
        True
    """
    framesize = _status_int(status, "framesize")
    if framesize is None:
        return None
    if (
        "face_enroll" in status
        or "face_recognize" in status
        or ("vflip" in status and "led_intensity" not in status)
    ):
        return "legacy"
    if frame_size is None:
        return None
    size = (int(frame_size[0]), int(frame_size[1]))
    matches = [
        g
        for g in FIRMWARE_GENERATIONS
        if g != "legacy" and (entry := framesize_table(g).get(framesize)) is not None and entry.size == size
    ]
    return matches[0] if len(matches) == 1 else None
