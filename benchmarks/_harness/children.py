"""The child processes `benchmarks._harness.server` starts; not run by hand except to debug.

Sub-commands (each prints ``READY {json}`` once it can be measured, and stops when its stdin
closes, so nothing outlives a benchmark that died):

* ``cameras SPEC_JSON``: emulated cameras (`Emulator`, pre-rendered frames), one per
  `CameraSpec`. Prints ``READY {"name": "http://127.0.0.1:PORT/stream", ...}``; then
  ``EVENT {"t": unix, "camera": name, "stream_clients": n, "streams_total": m}`` each time the
  number of streams a camera serves changes (``t`` taken the moment the emulator counts it), and
  ``STATS {"t": unix, "cameras": {name: EmulatorStats fields}}`` in answer to ``stats`` on stdin.
* ``serve SETTINGS_JSON``: the espdetect server (`create_app` + `StreamingServer`) on an
  ephemeral port; ``READY {"url": ..., "pid": ..., "modules": {"torch": bool, ...}}`` comes
  after the lifespan, i.e. with the model loaded (``modules``: heavy runtimes imported by then).

Usage::

    python -m benchmarks._harness.children cameras '[{"name": "cam", "fps": 15, "size": [640, 480]}]'
    python -m benchmarks._harness.children serve '{"cameras": ["cam=http://127.0.0.1:8081/stream"]}'
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import sys
import threading
import time

from benchmarks._harness.procs import command_lines, emit, on_stdin_eof
from benchmarks._harness.server import CameraSpec
from espdetect.emulator import Emulator, EmulatorConfig, EmulatorStats


async def _watch(name: str, emu: Emulator) -> None:
    """Emit an EVENT each time ``emu``'s stream count changes."""
    last = -1
    while True:
        seen = last

        def changed(s: EmulatorStats, seen: int = seen) -> bool:
            return s.stream_clients != seen

        stats = await emu.wait_until(changed)
        last = stats.stream_clients
        emit(
            "EVENT",
            {
                "t": time.time(),
                "camera": name,
                "stream_clients": stats.stream_clients,
                "streams_total": stats.streams_total,
            },
        )


def _config(spec: CameraSpec) -> EmulatorConfig:
    return EmulatorConfig(
        fps=spec.fps,
        size=spec.size,
        quality=spec.quality,
        max_stream_clients=spec.max_stream_clients,
        scene=spec.scene,  # type: ignore[arg-type]  # checked by EmulatorConfig
        still_seconds=spec.still_seconds,
        stand_seconds=spec.stand_seconds,
        prerender=True,
    )


async def cameras(specs: list[CameraSpec]) -> None:
    emulators: dict[str, Emulator] = {}
    watchers: list[asyncio.Task[None]] = []
    loop = asyncio.get_running_loop()
    commands: asyncio.Queue[list[str] | None] = asyncio.Queue()

    def read_commands() -> None:
        for words in command_lines():
            loop.call_soon_threadsafe(commands.put_nowait, words)
        loop.call_soon_threadsafe(commands.put_nowait, None)

    try:
        for spec in specs:
            emu = Emulator(_config(spec), "127.0.0.1", spec.port)
            await emu.start()
            emulators[spec.name] = emu
        emit("READY", {name: emu.stream_url for name, emu in emulators.items()})
        watchers = [asyncio.create_task(_watch(name, emu)) for name, emu in emulators.items()]
        threading.Thread(target=read_commands, daemon=True).start()
        while (words := await commands.get()) is not None:
            if words[0] == "stats":
                stats = {n: dataclasses.asdict(e.stats) for n, e in emulators.items()}
                emit("STATS", {"t": time.time(), "cameras": stats})
    finally:
        for task in watchers:
            task.cancel()
        for emu in emulators.values():
            with contextlib.suppress(Exception):
                await emu.stop()


def serve(settings_json: str) -> int:
    from espdetect.server.app import StreamingServer, create_app
    from espdetect.server.settings import ServerSettings

    settings = ServerSettings(**json.loads(settings_json))

    def started(server: StreamingServer) -> None:
        # Which heavy runtimes the server imported by now (the model is loaded): extra keys,
        # read by bench_engine only.
        modules = {name: name in sys.modules for name in ("torch", "ultralytics", "onnxruntime", "openvino")}
        emit("READY", {"url": server.url, "pid": os.getpid(), "modules": modules})

    server = StreamingServer(create_app(settings), settings, host="127.0.0.1", port=0, on_started=started)

    def stop() -> None:
        server.should_exit = True

    on_stdin_eof(stop)
    server.run()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("cameras")
    p.add_argument("specs", help="JSON list of {name, fps, size, quality?, max_stream_clients?, port?}")
    p = sub.add_parser("serve")
    p.add_argument("settings", help="ServerSettings fields as JSON")
    args = parser.parse_args(argv)
    if args.command == "cameras":
        asyncio.run(cameras([CameraSpec.from_json(s) for s in json.loads(args.specs)]))
        return 0
    return serve(args.settings)


if __name__ == "__main__":
    sys.exit(main())
