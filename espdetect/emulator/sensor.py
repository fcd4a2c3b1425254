"""The camera sensor's settings as CameraWebServer exposes them through ``/control`` and ``/status``.

The variable names, the keys and their order in ``/status`` follow the sketch's ``app_httpd.cpp``
of each firmware generation (docs/esp32-camera-protocol.md §2); the value ranges follow the
OV2640 driver where it rejects values. Only framesize, quality, hmirror, vflip and colorbar
change the emulated picture; the other variables are stored and reported.

**The OV2640 model** (``sensor_model="ov2640"``, opt-in: the default ``"ideal"`` sensor
streams at the configured fps whatever the size, and switches size cleanly). It adds:

* *A frame rate per frame size and JPEG quality.* A frame takes the longer of the sensor's
  frame time and the time its bytes need over Wi-Fi (the two overlap: ``fb_count`` 2):

  ==========================================  ==========  ==============================================
  sensor window (sizes)                       frames/s    source
  ==========================================  ==========  ==============================================
  UXGA (above 800x600: XGA, HD, SXGA, UXGA)   12.5        OV2640 datasheet: UXGA 15 fps at 24 MHz XCLK,
                                                          x 20/24 for the sketch's 20 MHz; matches
                                                          esp32-camera#347 (UXGA 12.5 fps, capture only)
  SVGA (above 400x296 up to 800x600)          25          datasheet: SVGA 30 fps at 24 MHz, x 20/24
  CIF (up to 400x296: QQVGA, QVGA, CIF...)    31          estimate: the datasheet's 60 fps x 20/24 would
                                                          be 50, but streams are reported at about
                                                          31 fps with 6-8 KB frames (arduino-esp32#10921)
  ==========================================  ==========  ==============================================

  Wi-Fi: 500 KB/s of JPEG (an estimate for the board's PCB antenna a few metres from the
  access point; esp-idf's iperf reaches several times that in ideal conditions). With the
  emulator's JPEG sizes this gives UXGA a few fps, SVGA about 10-20, VGA 20-25 and QVGA
  25-31 (the rates commonly reported; esp32-camera#37 reports VGA at 13 fps), and a lower
  ``quality`` number (bigger JPEGs) is slower once Wi-Fi is the limit.
* *Bad frames after a size change.* Users report garbled frames and frames of the old size
  for a few frames after ``framesize`` changes (the driver's second frame buffer still holds
  a frame of the old size; the sensor's first frames in the new window are garbled). After a
  change of size the next frames served are `OV2640_RESIZE_BAD_FRAMES`: one of the old size,
  then two of the new size with garbled entropy data (they still start with SOI and end with
  EOI, so a client cannot tell them from good frames by their framing; the counts are an
  estimate). They are counted on frames served, so a client that reads them on one
  connection gets good frames on the next.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Final, Literal, NamedTuple, get_args

from espdetect.emulator.framesizes import (
    FirmwareGeneration,
    framesize_for,
    nearest_framesize,
    size_of_framesize,
)
from espdetect.firmware import CONTROL_VARIABLES, DRIVER_RANGES, LEGACY_FACE_VARIABLES

__all__ = [
    "CONTROL_VARIABLES_BY_FIRMWARE",
    "OV2640_LINK_BYTES_PER_S",
    "OV2640_RESIZE_BAD_FRAMES",
    "SENSOR_MODELS",
    "BadFrame",
    "Sensor",
    "SensorModel",
    "SensorView",
    "ov2640_frame_interval",
]

#: ``"ideal"``: the configured fps at every size, clean size changes; ``"ov2640"``: the
#: OV2640 model of the module documentation.
SensorModel = Literal["ideal", "ov2640"]
SENSOR_MODELS: tuple[SensorModel, ...] = get_args(SensorModel)

#: JPEG bytes per second the modelled board gets over Wi-Fi (an estimate; see the module docs).
OV2640_LINK_BYTES_PER_S: Final = 500_000
#: The sensor's frames per second by window: (largest width, largest height, fps).
_OV2640_WINDOWS: Final = ((400, 296, 31.0), (800, 600, 25.0), (1600, 1200, 12.5))
#: What the frames right after a change of size are, in order.
OV2640_RESIZE_BAD_FRAMES: Final[tuple[Literal["stale", "garbled"], ...]] = ("stale", "garbled", "garbled")


def ov2640_frame_interval(size: tuple[int, int], jpeg_bytes: int) -> float:
    """Seconds between two frames of ``size`` and ``jpeg_bytes`` from the modelled OV2640 board.

    Example:
        >>> round(1 / ov2640_frame_interval((1600, 1200), 120_000), 1)   # Wi-Fi bound
        4.2
        >>> round(1 / ov2640_frame_interval((320, 240), 6_000), 1)       # sensor bound
        31.0
    """
    w, h = size
    fps = next((f for mw, mh, f in _OV2640_WINDOWS if w <= mw and h <= mh), _OV2640_WINDOWS[-1][2])
    return max(1.0 / fps, jpeg_bytes / OV2640_LINK_BYTES_PER_S)


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


class BadFrame(NamedTuple):
    """A frame the modelled OV2640 sends right after a change of size."""

    #: ``"stale"``: a whole frame of the old size; ``"garbled"``: new size, entropy data damaged.
    kind: Literal["stale", "garbled"]
    #: The picture setting to render it with (the old size for a stale frame).
    view: SensorView


class Sensor:
    """Mutable sensor state of one emulated camera.

    ``size`` may be one the firmware cannot produce (a video at its native resolution); then
    ``/status`` reports the nearest framesize until ``/control`` sets a real one.

    Example:
        >>> s = Sensor("2.x", size=(320, 240), quality=12)
        >>> s.set("framesize", 8), s.size
        (True, (640, 480))
    """

    def __init__(
        self,
        firmware: FirmwareGeneration,
        size: tuple[int, int],
        quality: int,
        model: SensorModel = "ideal",
    ) -> None:
        self.firmware: FirmwareGeneration = firmware
        self.model: SensorModel = model
        self.size = size
        self._bad: deque[BadFrame] = deque()
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
            old = self.view
            try:
                self.size = size_of_framesize(value, self.firmware)
            except ValueError:
                return False
            self.framesize = value
            if self.model == "ov2640" and self.size != old.size:
                self._bad = deque(
                    BadFrame(kind, old if kind == "stale" else self.view) for kind in OV2640_RESIZE_BAD_FRAMES
                )
            return True
        low, high = DRIVER_RANGES.get(variable, (-(2**31), 2**31 - 1))
        if not low <= value <= high:
            return False
        self.values[variable] = value
        return True

    def next_bad_frame(self) -> BadFrame | None:
        """The bad frame to serve next after a change of size (and consume it); None when settled."""
        if not self._bad:
            return None
        bad = self._bad.popleft()
        # Mirror, flip and quality changes since the size change apply to the garbled frames too.
        return bad if bad.kind == "stale" else bad._replace(view=self.view)

    def frame_interval(self, jpeg_bytes: int) -> float:
        """Seconds the sensor model needs per frame of ``jpeg_bytes`` at the current size (0: ideal)."""
        return ov2640_frame_interval(self.size, jpeg_bytes) if self.model == "ov2640" else 0.0

    def status(self) -> dict[str, int]:
        """The ``/status`` fields, in the firmware's order."""
        merged = {**_FIXED, **self.values, "framesize": self.framesize}
        return {key: merged[key] for key in _STATUS_KEYS[self.firmware]}

    def status_json(self) -> str:
        """``/status`` as the firmware prints it: one line, no spaces."""
        return "{" + ",".join(f'"{k}":{v}' for k, v in self.status().items()) + "}"
