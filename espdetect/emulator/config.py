"""`EmulatorConfig`: everything that defines one emulated ESP32-CAM, checked when built."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from espdetect.emulator.faults import Fault
from espdetect.emulator.framesizes import FIRMWARE_GENERATIONS, FirmwareGeneration, size_of_framesize
from espdetect.emulator.scene import (
    SCENES,
    STAND_SECONDS,
    STILL_SECONDS,
    YARD_FPS,
    SceneSource,
    check_sensor_effects,
)
from espdetect.emulator.sensor import SENSOR_MODELS, SensorModel
from espdetect.exceptions import ConfigurationError

__all__ = ["EmulatorConfig"]

_MAX_SIDE = 4096
_DEFAULT_TIMELINE_FPS = 15.0


@dataclass(frozen=True)
class EmulatorConfig:
    """Settings of an emulated camera.

    Example:
        >>> cfg = EmulatorConfig(fps=30.0, framesize=8)   # 640x480 in the 2.x enum
        >>> cfg.frame_size
        (640, 480)
        >>> EmulatorConfig(scene="yard", noise=4, brightness_ramp=-20.0).timeline_fps
        15.0
    """

    #: Frames per second of each stream; None streams as fast as the client reads (or, with
    #: ``sensor_model="ov2640"``, as fast as the model allows: then fps is only a cap).
    fps: float | None = 15.0
    #: Initial resolution as the firmware enum (for ``firmware``); overrides ``size`` when set.
    framesize: int | None = None
    #: Initial resolution (width, height) when ``framesize`` is None; any size is allowed.
    size: tuple[int, int] = (320, 240)
    #: Initial JPEG quality, 0..63, lower is better (as the firmware's ``quality``).
    quality: int = 12
    #: ``"photos"`` (moving sample photos), ``"yard"`` (people crossing a still yard, with ground
    #: truth: `~espdetect.emulator.scene.YardScene`) or a Path to a video file, image folder or image.
    scene: SceneSource = "photos"
    #: Firmware generation: framesize numbering, ``/status`` keys and stream framing.
    firmware: FirmwareGeneration = "2.x"
    #: Streams served at once; further ``/stream`` connections wait unanswered (the device: 1).
    max_stream_clients: int = 1
    #: Faults active from the start; see :class:`~espdetect.emulator.faults.FaultKind`.
    faults: tuple[Fault, ...] = ()
    #: Frames in one loop of the photo scene; the most frames taken from a video or folder.
    #: (The yard scene's loop follows from its timeline: ``still_seconds`` + ``stand_seconds`` +
    #: 18.5 s at ``fps``.)
    loop_frames: int = 90
    #: Yard scene: seconds of empty yard before the first person walks in.
    still_seconds: float = 12.0
    #: Yard scene: seconds the first person stands still between walking in and out.
    stand_seconds: float = 3.0
    #: Sensor noise on every scene: the most a pixel channel moves, in grey levels (0: off).
    noise: int = 0
    #: Brightness drift on every scene: grey levels added at mid-loop, rising from and falling back
    #: to 0 over one loop (negative: darker; 0: off). Slow only if the loop is long.
    brightness_ramp: float = 0.0
    #: Encode the whole first loop before accepting connections (steady speed from frame one).
    prerender: bool = False
    #: Seconds since "boot" at start: where X-Timestamp begins (a reboot restarts it at 0).
    uptime: float = 0.0
    #: A stream whose client stops reading is dropped after this long (esp_http_server: 5 s).
    send_timeout: float = 5.0
    #: ``"ideal"`` (every size at ``fps``, clean size changes) or ``"ov2640"``: frame rates per
    #: frame size and quality, and a few bad frames after a size change
    #: (`espdetect.emulator.sensor`); opt-in so existing benchmarks keep their rates.
    sensor_model: SensorModel = "ideal"

    def __post_init__(self) -> None:
        if self.firmware not in FIRMWARE_GENERATIONS:
            raise ConfigurationError(
                f"expected firmware to be one of {', '.join(FIRMWARE_GENERATIONS)}, got {self.firmware!r}"
            )
        if self.sensor_model not in SENSOR_MODELS:
            raise ConfigurationError(
                f"expected sensor_model to be one of {', '.join(SENSOR_MODELS)}, got {self.sensor_model!r}"
            )
        if self.fps is not None and not (self.fps > 0 and not math.isnan(self.fps)):
            raise ConfigurationError(f"expected fps > 0 or None (unlimited), got {self.fps!r}")
        if self.framesize is not None:
            try:
                size_of_framesize(self.framesize, self.firmware)
            except ValueError as exc:
                raise ConfigurationError(str(exc)) from None
        size = tuple(self.size)
        if len(size) != 2 or not all(isinstance(v, int) and 16 <= v <= _MAX_SIDE for v in size):
            raise ConfigurationError(
                f"expected size (width, height) in 16..{_MAX_SIDE} pixels, got {self.size!r}"
            )
        object.__setattr__(self, "size", size)
        if isinstance(self.quality, bool) or not 0 <= self.quality <= 63:
            raise ConfigurationError(f"expected quality 0..63 (lower is better), got {self.quality!r}")
        if isinstance(self.scene, str) and self.scene not in SCENES:
            object.__setattr__(self, "scene", Path(self.scene))
        if self.max_stream_clients < 1:
            raise ConfigurationError(f"expected max_stream_clients >= 1, got {self.max_stream_clients!r}")
        faults = tuple(self.faults)
        if not all(isinstance(f, Fault) for f in faults):
            raise ConfigurationError(f"expected faults to be Fault values, got {self.faults!r}")
        object.__setattr__(self, "faults", faults)
        if self.loop_frames < 1:
            raise ConfigurationError(f"expected loop_frames >= 1, got {self.loop_frames!r}")
        if not (math.isfinite(self.uptime) and self.uptime >= 0):
            raise ConfigurationError(f"expected uptime >= 0 seconds, got {self.uptime!r}")
        if not self.send_timeout > 0:
            raise ConfigurationError(f"expected send_timeout > 0 seconds, got {self.send_timeout!r}")
        object.__setattr__(self, "still_seconds", STILL_SECONDS.check("still_seconds", self.still_seconds))
        object.__setattr__(self, "stand_seconds", STAND_SECONDS.check("stand_seconds", self.stand_seconds))
        check_sensor_effects(self.noise, self.brightness_ramp)
        if self.scene == "yard" and self.fps is not None:
            # The yard's timeline is in seconds: its loop has (still_seconds + 21.5 s) x fps frames.
            YARD_FPS.check("fps", self.fps)

    @property
    def frame_size(self) -> tuple[int, int]:
        """The initial (width, height): from ``framesize`` when set, else ``size``."""
        if self.framesize is not None:
            return size_of_framesize(self.framesize, self.firmware)
        return self.size

    @property
    def timeline_fps(self) -> float:
        """The frame rate the yard scene's timeline is laid out at: ``fps``, or 15 when unlimited."""
        return _DEFAULT_TIMELINE_FPS if self.fps is None else self.fps

    @property
    def period(self) -> float:
        """Seconds between frames (0 when unlimited)."""
        return 0.0 if self.fps is None or math.isinf(self.fps) else 1.0 / self.fps
