"""An emulated ESP32-CAM running the CameraWebServer sketch, with fault injection.

Example:
    >>> from espdetect.emulator import Emulator, EmulatorConfig, Fault, FaultKind
    >>> async def main() -> None:
    ...     cfg = EmulatorConfig(fps=15.0, size=(320, 240), faults=(Fault(FaultKind.DROP_AFTER, frames=10),))
    ...     async with Emulator(cfg, host="127.0.0.1", port=0) as emu:
    ...         print(emu.stream_url)
"""

from __future__ import annotations

from espdetect.emulator.config import EmulatorConfig as EmulatorConfig
from espdetect.emulator.faults import Fault as Fault
from espdetect.emulator.faults import FaultKind as FaultKind
from espdetect.emulator.faults import parse_fault as parse_fault
from espdetect.emulator.framesizes import FirmwareGeneration as FirmwareGeneration
from espdetect.emulator.framesizes import framesize_table as framesize_table
from espdetect.emulator.framesizes import size_of_framesize as size_of_framesize
from espdetect.emulator.server import Emulator as Emulator
from espdetect.emulator.server import EmulatorStats as EmulatorStats
from espdetect.emulator.thread import EmulatorThread as EmulatorThread

__all__ = [
    "Emulator",
    "EmulatorConfig",
    "EmulatorStats",
    "EmulatorThread",
    "Fault",
    "FaultKind",
    "FirmwareGeneration",
    "framesize_table",
    "parse_fault",
    "size_of_framesize",
]
