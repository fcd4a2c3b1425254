"""The emulated camera `espdetect.profiling.capacity` serves its cameras from (a child process).

One `Emulator` serving as many streams at once as the capacity run has cameras: every stream
starts at the first frame of the scene's loop, so cameras added one by one are staggered by the
time between their connections. The frames are pre-rendered, so serving one costs a lookup.

It prints ``READY {"stream_url": ..., "control_url": ..., "frame_size": [w, h]}``
once it listens (or ``FAILED {"error": ...}``), then runs until its stdin closes, so it never
outlives the run that started it. Run by hand only to debug::

    python -m espdetect.profiling.capacity_camera '{"fps": 15, "size": [640, 480], "streams": 4}'
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from pathlib import Path
from typing import Any

from espdetect.emulator import Emulator, EmulatorConfig
from espdetect.exceptions import EspdetectError

__all__ = ["config_from_json", "main"]


def config_from_json(data: dict[str, Any]) -> EmulatorConfig:
    """The emulator's configuration from the run's JSON description.

    Example:
        >>> config_from_json({"fps": 15, "size": [640, 480], "streams": 3}).max_stream_clients
        3
    """
    scene = data.get("scene", "photos")
    return EmulatorConfig(
        fps=float(data["fps"]),
        size=(int(data["size"][0]), int(data["size"][1])),
        quality=int(data.get("quality", 12)),
        scene=scene if scene in ("photos", "yard") else Path(scene),
        max_stream_clients=int(data["streams"]),
        loop_frames=int(data.get("loop_frames", 90)),
        still_seconds=float(data.get("still_seconds", 12.0)),
        stand_seconds=float(data.get("stand_seconds", 3.0)),
        noise=int(data.get("noise", 0)),
        prerender=True,
    )


def _emit(word: str, payload: dict[str, Any]) -> None:
    sys.stdout.write(f"{word} {json.dumps(payload)}\n")
    sys.stdout.flush()


async def _serve(config: EmulatorConfig) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def wait_for_eof() -> None:
        for _ in sys.stdin:
            pass
        loop.call_soon_threadsafe(stop.set)

    try:
        emulator = Emulator(config, host="127.0.0.1", port=0)
        await emulator.start()
    except (EspdetectError, OSError) as exc:
        _emit("FAILED", {"error": str(exc)})
        return
    try:
        _emit(
            "READY",
            {
                "stream_url": emulator.stream_url,
                "control_url": emulator.control_url,
                "frame_size": list(emulator.frame_size),
            },
        )
        threading.Thread(target=wait_for_eof, name="stdin-eof", daemon=True).start()
        await stop.wait()
    finally:
        await emulator.stop()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        config = config_from_json(json.loads(args[0]))
    except (EspdetectError, ValueError, KeyError) as exc:
        _emit("FAILED", {"error": str(exc)})
        return 2
    asyncio.run(_serve(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
