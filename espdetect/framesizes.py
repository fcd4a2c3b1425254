"""The firmware's ``framesize`` enum per firmware generation, and frame sizes by name.

esp32-camera renumbered ``framesize_t`` twice (see docs/esp32-camera-protocol.md §2), so the
number that ``/control?var=framesize&val=N`` takes and ``/status`` reports means a different
resolution depending on the firmware. Only the sizes an OV2640 can produce (up to UXGA) are
listed; larger enum values are rejected like the sensor driver rejects them. Settings name a
size (``VGA``, ``800x600``) and `framesize_value` turns it into one generation's number.

Example:
    >>> parse_framesize("vga").size, framesize_value("VGA", "3.x")
    ((640, 480), 10)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal, NamedTuple, get_args

__all__ = [
    "FIRMWARE_GENERATIONS",
    "FRAMESIZE_NAMES",
    "FirmwareGeneration",
    "FrameSize",
    "framesize_for",
    "framesize_table",
    "framesize_value",
    "nearest_framesize",
    "parse_framesize",
    "size_of_framesize",
]

#: ``"legacy"``: esp32-camera up to 2019 (Arduino core 1.0.0–1.0.4);
#: ``"2.x"``: 2020-03 up to esp32-camera v2.0.13 (Arduino 1.0.5–3.0.x);
#: ``"3.x"``: esp32-camera v2.0.14 and later (Arduino 3.1.0 and later).
FirmwareGeneration = Literal["legacy", "2.x", "3.x"]
FIRMWARE_GENERATIONS: tuple[FirmwareGeneration, ...] = get_args(FirmwareGeneration)


class FrameSize(NamedTuple):
    """One entry of the ``framesize_t`` enum."""

    #: The enum value as the firmware numbers it.
    value: int
    #: The enum name without the ``FRAMESIZE_`` prefix.
    name: str
    width: int
    height: int

    @property
    def size(self) -> tuple[int, int]:
        return (self.width, self.height)


#: Every frame size an OV2640 produces, in the order every generation numbers them: a
#: generation's enum is this list without the sizes it lacks, counted from 0.
_SIZES: dict[str, tuple[int, int]] = {
    "96X96": (96, 96),
    "QQVGA": (160, 120),
    "QQVGA2": (128, 160),
    "128X128": (128, 128),
    "QCIF": (176, 144),
    "HQVGA": (240, 176),
    "240X240": (240, 240),
    "QVGA": (320, 240),
    "320X320": (320, 320),
    "CIF": (400, 296),
    "HVGA": (480, 320),
    "VGA": (640, 480),
    "SVGA": (800, 600),
    "XGA": (1024, 768),
    "HD": (1280, 720),
    "SXGA": (1280, 1024),
    "UXGA": (1600, 1200),
}
#: Every size name any generation knows, smallest enum position first.
FRAMESIZE_NAMES: tuple[str, ...] = tuple(_SIZES)

# 2020-03 dropped QQVGA2 and inserted 96X96, 240X240, HVGA and HD; v2.0.14 inserted 128X128 and 320X320.
_LACKING: dict[FirmwareGeneration, frozenset[str]] = {
    "legacy": frozenset({"96X96", "128X128", "240X240", "320X320", "HVGA", "HD"}),
    "2.x": frozenset({"QQVGA2", "128X128", "320X320"}),
    "3.x": frozenset({"QQVGA2"}),
}

_TABLES: dict[str, dict[int, FrameSize]] = {
    firmware: {
        value: FrameSize(value, name, *_SIZES[name])
        for value, name in enumerate(name for name in _SIZES if name not in lacking)
    }
    for firmware, lacking in _LACKING.items()
}

_WXH = re.compile(r"^\s*(\d{1,5})\s*[xX×]\s*(\d{1,5})\s*$")


def _check_firmware(firmware: str) -> None:
    if firmware not in _TABLES:
        raise ValueError(
            f"expected firmware to be one of {', '.join(FIRMWARE_GENERATIONS)}, got {firmware!r}"
        )


def framesize_table(firmware: FirmwareGeneration) -> Mapping[int, FrameSize]:
    """The enum of one firmware generation, keyed by enum value.

    Example:
        >>> framesize_table("2.x")[8].size
        (640, 480)
    """
    _check_firmware(firmware)
    return _TABLES[firmware]


def size_of_framesize(framesize: int, firmware: FirmwareGeneration) -> tuple[int, int]:
    """``(width, height)`` of a framesize enum value; ValueError when the firmware has no such value.

    Example:
        >>> size_of_framesize(10, "3.x")
        (640, 480)
    """
    table = framesize_table(firmware)
    if framesize not in table:
        raise ValueError(
            f"expected a {firmware} framesize between {min(table)} and {max(table)}, got {framesize!r}"
        )
    return table[framesize].size


def framesize_for(size: tuple[int, int], firmware: FirmwareGeneration) -> int | None:
    """The enum value of an exact ``(width, height)``, or None if the firmware has no such size.

    Example:
        >>> framesize_for((320, 240), "legacy")
        4
    """
    for entry in framesize_table(firmware).values():
        if entry.size == tuple(size):
            return entry.value
    return None


def nearest_framesize(size: tuple[int, int], firmware: FirmwareGeneration) -> int:
    """The enum value whose size is closest to ``size`` (by pixel count, then aspect ratio).

    Used to report a framesize in ``/status`` when the emulator runs at a size the firmware
    cannot produce (a video at its native resolution, for instance).

    Example:
        >>> nearest_framesize((336, 252), "2.x")
        5
    """
    exact = framesize_for(size, firmware)
    if exact is not None:
        return exact
    w, h = size
    area = w * h
    aspect = w / h

    def distance(entry: FrameSize) -> tuple[float, float]:
        return (abs(entry.width * entry.height - area), abs(entry.width / entry.height - aspect))

    return min(framesize_table(firmware).values(), key=distance).value


def _allowed() -> str:
    return ", ".join(FRAMESIZE_NAMES)


def parse_framesize(text: str | tuple[int, int]) -> FrameSize:
    """A frame size given as a name (``QVGA``, ``vga``, ``96x96``) or ``WxH`` (``800x600``).

    The result's ``value`` is -1: the enum number depends on the generation (`framesize_value`).
    A number alone is refused, since its meaning differs between generations.

    Raises:
        ValueError: neither a known name nor the size of one; the message lists the names.

    Example:
        >>> parse_framesize("svga")
        FrameSize(value=-1, name='SVGA', width=800, height=600)
        >>> parse_framesize("1280x720").name
        'HD'
    """
    if isinstance(text, tuple):
        size = (int(text[0]), int(text[1]))
    else:
        if not isinstance(text, str):
            raise ValueError(f"expected a frame size name ({_allowed()}) or WxH, got {text!r}")
        name = text.strip().upper()
        if name in _SIZES:
            return FrameSize(-1, name, *_SIZES[name])
        match = _WXH.match(text)
        if match is None:
            hint = " (a number means different sizes on different firmware: use the name)"
            raise ValueError(
                f"expected a frame size name ({_allowed()}) or WxH, got {text!r}"
                + (hint if name.isdigit() else "")
            )
        size = (int(match[1]), int(match[2]))
    for name, wh in _SIZES.items():
        if wh == size:
            return FrameSize(-1, name, *wh)
    sizes = ", ".join(f"{w}x{h}" for w, h in _SIZES.values())
    raise ValueError(f"expected a frame size the OV2640 makes ({sizes}), got {size[0]}x{size[1]}")


def framesize_value(size: str | FrameSize, firmware: FirmwareGeneration) -> int:
    """The enum number of a frame size (a name, ``WxH`` or a `FrameSize`) in one generation.

    Raises:
        ValueError: the name is unknown, or this generation's firmware lacks the size (the
            message lists the sizes it has).

    Example:
        >>> framesize_value("QVGA", "legacy"), framesize_value("320x240", "3.x")
        (4, 6)
    """
    entry = size if isinstance(size, FrameSize) else parse_framesize(size)
    found = framesize_for(entry.size, firmware)
    if found is None:
        has = ", ".join(e.name for e in framesize_table(firmware).values())
        raise ValueError(f"expected a frame size that {firmware} firmware has ({has}), got {entry.name}")
    return found
