"""The firmware's ``framesize`` enum per generation: re-exported from `espdetect.framesizes`.

The tables live in the library (the server and the profiler translate size names with them);
this module keeps the emulator's imports working.
"""

from __future__ import annotations

from espdetect.framesizes import FIRMWARE_GENERATIONS as FIRMWARE_GENERATIONS
from espdetect.framesizes import FirmwareGeneration as FirmwareGeneration
from espdetect.framesizes import FrameSize as FrameSize
from espdetect.framesizes import framesize_for as framesize_for
from espdetect.framesizes import framesize_table as framesize_table
from espdetect.framesizes import nearest_framesize as nearest_framesize
from espdetect.framesizes import size_of_framesize as size_of_framesize

__all__ = [
    "FIRMWARE_GENERATIONS",
    "FirmwareGeneration",
    "FrameSize",
    "framesize_for",
    "framesize_table",
    "nearest_framesize",
    "size_of_framesize",
]
