"""Processes the server benchmarks measure, each started by `bench_server_procs`.

Sub-commands (each prints ``READY {json}`` once it can be measured, and stops when its stdin
closes, so nothing outlives a benchmark that died):

* ``serve SETTINGS_JSON``: the espdetect server (`create_app` + `StreamingServer`) on an
  ephemeral port; ``READY {"url": ...}`` comes after the lifespan, i.e. with every model loaded.
* ``model-only URL``: the reference rate. Grabs frames from the camera, decodes them, builds the
  detector exactly as the server does (`default_detector`), then on each ``run SECONDS`` line
  calls ``detect`` in a tight loop over those decoded frames and answers
  ``RESULT {"calls": n, "seconds": s, "inference_ms": [...]}``.
* ``ultralytics URL``: Ultralytics' own streaming loop. On each ``run SECONDS`` line it starts
  ``YOLO(model, task="detect").predict(source=URL, stream=True, imgsz=IMGSZ)``, lets a few
  results pass (connection and warm-up), counts results for SECONDS, closes the generator and
  answers ``RESULT {...}``.

Usage (by hand, for debugging)::

    python benchmarks/bench_server_runner.py serve '{"cameras": ["cam=http://127.0.0.1:8081/stream"]}'
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

MODEL_ENV = "ESPDETECT_MODEL"


def emit(kind: str, payload: object) -> None:
    sys.stdout.write(f"{kind} {json.dumps(payload)}\n")
    sys.stdout.flush()


def serve(settings_json: str) -> int:
    from espdetect.server.app import StreamingServer, create_app
    from espdetect.server.settings import ServerSettings

    settings = ServerSettings(**json.loads(settings_json))

    def started(server: StreamingServer) -> None:
        emit("READY", {"url": server.url, "pid": os.getpid()})

    server = StreamingServer(create_app(settings), settings, host="127.0.0.1", port=0, on_started=started)

    def stop_on_eof() -> None:
        for _ in sys.stdin:
            pass
        server.should_exit = True

    threading.Thread(target=stop_on_eof, daemon=True).start()
    server.run()
    return 0


def _commands(handle: Callable[[float], dict[str, Any]]) -> int:
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "quit":
            break
        if words[0] == "run" and len(words) == 2:
            emit("RESULT", handle(float(words[1])))
    return 0


def model_only(url: str, n_frames: int) -> int:
    from espdetect.server.app import default_detector
    from espdetect.server.settings import ServerSettings, parse_camera_spec
    from espdetect.sources.mjpeg_stream import MjpegStreamSource

    async def grab() -> list[Any]:
        async with MjpegStreamSource(url) as source:
            return [await source.read() for _ in range(n_frames)]

    frames = asyncio.run(grab())
    # Decoded as the server's detector loop does (reduce "auto" is 1 for VGA at imgsz 640).
    images = [frame.image() for frame in frames]
    settings = ServerSettings(cameras=[parse_camera_spec(f"cam={url}")])
    detector = default_detector(settings, settings.camera_settings()[0])
    for image in images[:3]:
        detector.detect(image)
    emit(
        "READY",
        {"frames": len(images), "size": list(images[0].shape[:2]), "imgsz": getattr(detector, "imgsz", None)},
    )

    def run(seconds: float) -> dict[str, Any]:
        inference: list[float] = []
        calls = 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            detections = detector.detect(images[calls % len(images)])
            calls += 1
            if detections.timings is not None:
                inference.append(detections.timings.inference_ms)
        elapsed = time.perf_counter() - start
        return {"calls": calls, "seconds": elapsed, "rate": calls / elapsed, "inference_ms": inference}

    return _commands(run)


def ultralytics_loop(url: str, imgsz: int, warmup: int) -> int:
    from ultralytics import YOLO  # type: ignore[attr-defined]

    model_path = os.environ.get(MODEL_ENV)
    if not model_path:
        raise SystemExit(f"expected ${MODEL_ENV} to name the model, got nothing")
    model: Any = YOLO(model_path, task="detect")
    emit("READY", {"model": os.path.basename(model_path), "imgsz": imgsz})

    def run(seconds: float) -> dict[str, Any]:
        results: Any = model.predict(source=url, stream=True, imgsz=imgsz, verbose=False)
        counted = 0
        inference: list[float] = []
        start: float | None = None
        seen = 0
        try:
            for result in results:
                seen += 1
                if seen == warmup:
                    start = time.perf_counter()
                    continue
                if start is None:
                    continue
                counted += 1
                inference.append(float(result.speed.get("inference") or 0.0))
                if time.perf_counter() - start >= seconds:
                    break
        finally:
            results.close()
        elapsed = time.perf_counter() - start if start is not None else 0.0
        return {
            "calls": counted,
            "seconds": elapsed,
            "rate": counted / elapsed if elapsed > 0 else 0.0,
            "inference_ms": inference,
        }

    return _commands(run)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve")
    p.add_argument("settings", help="ServerSettings fields as JSON")
    p = sub.add_parser("model-only")
    p.add_argument("url")
    p.add_argument("--frames", type=int, default=20)
    p = sub.add_parser("ultralytics")
    p.add_argument("url")
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    if args.command == "serve":
        return serve(args.settings)
    if args.command == "model-only":
        return model_only(args.url, args.frames)
    return ultralytics_loop(args.url, args.imgsz, args.warmup)


if __name__ == "__main__":
    sys.exit(main())
