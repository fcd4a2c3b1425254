"""Emulated ESP32-CAMs for the server benchmarks, in a process of their own.

Run by `bench_server_procs.Cameras`, not by hand. Keeping the cameras out of both the server's
and the benchmark's process means their CPU is charged to neither, and a busy event loop in the
benchmark cannot delay frames.

Protocol (one JSON document per line on stdout, prefixed by a word):

* ``READY {"name": "http://127.0.0.1:PORT/stream", ...}`` once every emulator listens;
* ``EVENT {"t": unix, "camera": name, "stream_clients": n, "streams_total": m}`` each time the
  number of streams a camera serves changes (``t`` taken the moment the emulator counts it);
* ``STATS {"t": unix, "cameras": {name: EmulatorStats as a dict}}`` in answer to ``stats`` on stdin.

``quit`` on stdin, or stdin closing (the benchmark died), stops every emulator.

Usage::

    python benchmarks/bench_server_cameras.py '[{"name": "cam", "fps": 15, "size": [640, 480]}]'
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import sys
import threading
import time
from typing import Any

from espdetect.emulator import Emulator, EmulatorConfig, EmulatorStats


def emit(kind: str, payload: object) -> None:
    sys.stdout.write(f"{kind} {json.dumps(payload)}\n")
    sys.stdout.flush()


async def watch(name: str, emu: Emulator) -> None:
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


def read_stdin(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[str | None]) -> None:
    for line in sys.stdin:
        loop.call_soon_threadsafe(queue.put_nowait, line.strip())
    loop.call_soon_threadsafe(queue.put_nowait, None)


def config_of(spec: dict[str, Any]) -> EmulatorConfig:
    return EmulatorConfig(
        fps=float(spec["fps"]),
        size=(int(spec["size"][0]), int(spec["size"][1])),
        quality=int(spec.get("quality", 12)),
        max_stream_clients=int(spec.get("max_stream_clients", 1)),
        prerender=True,
    )


async def main(specs: list[dict[str, Any]]) -> None:
    emulators: dict[str, Emulator] = {}
    watchers: list[asyncio.Task[None]] = []
    try:
        for spec in specs:
            # An explicit port P serves the control page on P and the stream on P + 1.
            emu = Emulator(config_of(spec), "127.0.0.1", int(spec.get("port", 0)))
            await emu.start()
            emulators[str(spec["name"])] = emu
        emit("READY", {name: emu.stream_url for name, emu in emulators.items()})
        watchers = [asyncio.create_task(watch(name, emu)) for name, emu in emulators.items()]
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        threading.Thread(target=read_stdin, args=(asyncio.get_running_loop(), queue), daemon=True).start()
        while True:
            command = await queue.get()
            if command is None or command == "quit":
                return
            if command == "stats":
                emit(
                    "STATS",
                    {
                        "t": time.time(),
                        "cameras": {n: dataclasses.asdict(e.stats) for n, e in emulators.items()},
                    },
                )
    finally:
        for task in watchers:
            task.cancel()
        for emu in emulators.values():
            with contextlib.suppress(Exception):
                await emu.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("spec", help="JSON list of {name, fps, size, quality?, max_stream_clients?, port?}")
    asyncio.run(main(json.loads(parser.parse_args().spec)))
