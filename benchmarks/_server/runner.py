"""Processes the server benchmark measures next to the server, each started by `benchmarks._server.launch`.

Sub-commands (each prints ``READY {json}`` once it can be measured, then on each ``run SECONDS``
line answers ``RESULT {"calls": n, "seconds": s, "rate": r, "inference_ms": [...]}``, and stops
when its stdin closes):

* ``model-only URL``: the reference rate. Grabs frames from the camera, decodes them, loads the
  model exactly as the server does (`default_detector` on the server's settings), then calls
  ``detect`` in a tight loop over those decoded frames.
* ``ultralytics URL``: Ultralytics' own streaming loop. Each run starts
  ``YOLO(model, task="detect").predict(source=URL, stream=True, imgsz=IMGSZ)``, lets a few
  results pass (connection and warm-up), counts results for SECONDS and closes the generator.

Usage (by hand, for debugging)::

    python -m benchmarks._server.runner model-only http://127.0.0.1:8081/stream
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks._harness.procs import command_lines, emit

MODEL_ENV = "ESPDETECT_MODEL"


def _serve_runs(run: Callable[[float], dict[str, Any]]) -> int:
    for words in command_lines():
        if words[0] == "run" and len(words) == 2:
            emit("RESULT", run(float(words[1])))
    return 0


def model_only(url: str, n_frames: int) -> int:
    from espdetect.server.app import default_detector
    from espdetect.server.settings import ServerSettings, parse_camera_spec
    from espdetect.sources.mjpeg_stream import MjpegStreamSource

    async def grab() -> list[np.ndarray]:
        async with MjpegStreamSource(url) as source:
            # Decoded as the server's detector does (reduce "auto" is 1 for VGA at imgsz 640).
            return [(await source.read()).image() for _ in range(n_frames)]

    images = asyncio.run(grab())
    settings = ServerSettings(cameras=[parse_camera_spec(f"cam={url}")])
    detector = default_detector(settings.detector)
    for image in images[:3]:
        detector.detect(image)
    emit("READY", {"frames": len(images), "size": list(images[0].shape[:2]), "imgsz": detector.params.imgsz})

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

    return _serve_runs(run)


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
        rate = counted / elapsed if elapsed > 0 else 0.0
        return {"calls": counted, "seconds": elapsed, "rate": rate, "inference_ms": inference}

    return _serve_runs(run)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("model-only")
    p.add_argument("url")
    p.add_argument("--frames", type=int, default=20)
    p = sub.add_parser("ultralytics")
    p.add_argument("url")
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args(argv)
    if args.command == "model-only":
        return model_only(args.url, args.frames)
    return ultralytics_loop(args.url, args.imgsz, args.warmup)


if __name__ == "__main__":
    sys.exit(main())
