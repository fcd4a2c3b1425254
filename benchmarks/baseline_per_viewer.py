"""The per-viewer design: a detection server written the way hand-rolled FastAPI scripts are.

This is the baseline of `benchmarks.bench_server`. It serves annotated MJPEG the way the common
recipe does (see docs/peers.md, section 5): every ``GET /detect`` returns a
``StreamingResponse`` over a generator that

1. opens **its own** connection to the camera (an `MjpegStreamSource`, i.e. httpx streaming
   plus espdetect's multipart parser, which keeps only the newest frames),
2. decodes each frame, runs the detector, draws and encodes **for this viewer alone**,
3. yields one multipart part per frame.

It uses the very classes the espdetect server uses (the detector from `open_detector`, so an
``.onnx`` model runs on ONNX Runtime as in the server; `Annotator`, `JpegEncoder`,
`MjpegStreamSource`, `mjpeg_part`), one model loaded at start-up and shared by all viewers (as a
module-level ``model = YOLO(...)`` would be), so the only difference from espdetect is the
architecture.

Three generator flavours exist, as in the wild:

* ``async`` (the default, what the benchmark measures): an ``async def`` generator that calls
  ``detector.detect()`` directly, so each inference blocks the event loop (every other viewer,
  every other request, and disconnect handling wait meanwhile), then ``await asyncio.sleep(0)``
  after each part, as vidgear's WebGear does, so the loop gets a turn once per frame;
* ``async-bare``: the same without the ``sleep(0)``. When the camera source has a frame buffered
  (it usually has: inference is slower than the camera) and the viewer has gone (uvicorn's
  ``send`` then returns at once), the generator never suspends, so Starlette's cancellation is
  never delivered: it keeps calling the model for nobody and starves the event loop;
* ``sync``: a plain generator that Starlette runs in its thread pool (``iterate_in_threadpool``),
  reading its camera through ``FrameSource.iter_frames``; the loop stays free, and viewers'
  inferences run in worker threads at once (ONNX Runtime allows concurrent calls).

``GET /stats`` returns counters (viewers now, model calls, frames read and sent, camera
connections opened): something the scripts lack, added only so the benchmark can observe them.

Usage::

    python -m benchmarks.baseline_per_viewer --camera http://127.0.0.1:8081/stream [--generator sync]

prints ``READY {"url": "http://127.0.0.1:PORT"}`` once it listens.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import uvicorn
from fastapi import FastAPI
from fastapi.responses import StreamingResponse

from benchmarks._harness.procs import emit, on_stdin_eof
from espdetect.annotate import Annotator
from espdetect.detectors import open_detector
from espdetect.encoders.jpeg import JpegEncoder
from espdetect.mjpeg import mjpeg_part
from espdetect.sources.mjpeg_stream import MjpegStreamSource

__all__ = ["BOUNDARY", "BaselineCounters", "Generator", "create_baseline_app", "main"]

BOUNDARY = "frame"
Generator = Literal["async", "async-bare", "sync"]


@dataclass
class BaselineCounters:
    """What the baseline did; read through ``GET /stats``."""

    viewers: int = 0
    viewers_total: int = 0
    upstream_opens: int = 0
    model_calls: int = 0
    frames_read: int = 0
    frames_sent: int = 0
    errors: int = 0
    inference_ms: deque[float] = field(default_factory=lambda: deque(maxlen=1000))
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, name: str, n: int = 1) -> None:
        # The sync flavour updates counters from worker threads.
        with self._lock:
            setattr(self, name, getattr(self, name) + n)

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "viewers": self.viewers,
                "viewers_total": self.viewers_total,
                "upstream_opens": self.upstream_opens,
                "model_calls": self.model_calls,
                "frames_read": self.frames_read,
                "frames_sent": self.frames_sent,
                "errors": self.errors,
                "inference_ms": list(self.inference_ms)[-50:],
                "t": time.time(),
            }


def create_baseline_app(
    camera_url: str,
    model: str | None = None,
    *,
    generator: Generator = "async",
    quality: int = 80,
) -> FastAPI:
    """The per-viewer server for one camera: ``GET /detect`` (annotated MJPEG) and ``GET /stats``.

    Example:
        >>> app = create_baseline_app("http://127.0.0.1:8081/stream")  # doctest: +SKIP
        >>> uvicorn.run(app, port=8000)  # doctest: +SKIP
    """
    detector = open_detector(model)
    annotator = Annotator()
    encoder = JpegEncoder(quality)
    counters = BaselineCounters()
    yield_to_loop = generator == "async"
    app = FastAPI(title="per-viewer baseline")

    def render(frame_image: np.ndarray) -> bytes:
        detections = detector.detect(frame_image)
        counters.add("model_calls")
        if detections.timings is not None:
            counters.inference_ms.append(detections.timings.inference_ms)
        return encoder.encode(annotator.annotate(frame_image, detections))

    async def frames_async() -> AsyncIterator[bytes]:
        counters.add("viewers")
        counters.add("viewers_total")
        source = MjpegStreamSource(camera_url)  # this viewer's own camera connection
        counters.add("upstream_opens")
        try:
            while True:
                frame = await source.read()
                counters.add("frames_read")
                # Blocking calls straight in the generator, as the recipe does.
                jpeg = render(frame.image())
                yield mjpeg_part(jpeg, frame.arrival, BOUNDARY)
                counters.add("frames_sent")
                if yield_to_loop:
                    await asyncio.sleep(0)
        except Exception:
            counters.add("errors")
            raise
        finally:
            counters.add("viewers", -1)
            await source.aclose()

    def frames_sync() -> Iterator[bytes]:
        counters.add("viewers")
        counters.add("viewers_total")
        counters.add("upstream_opens")
        frames = MjpegStreamSource(camera_url).iter_frames()
        try:
            for frame in frames:
                counters.add("frames_read")
                jpeg = render(frame.image())
                yield mjpeg_part(jpeg, frame.arrival, BOUNDARY)
                counters.add("frames_sent")
        except Exception:
            counters.add("errors")
            raise
        finally:
            counters.add("viewers", -1)
            frames.close()

    media_type = f"multipart/x-mixed-replace; boundary={BOUNDARY}"

    @app.get("/detect")
    async def detect_stream() -> StreamingResponse:
        content = frames_sync() if generator == "sync" else frames_async()
        return StreamingResponse(content, media_type=media_type)

    @app.get("/stats")
    async def stats() -> dict[str, Any]:
        return counters.as_dict()

    app.state.counters = counters
    app.state.detector = detector
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--camera", required=True, help="the camera's MJPEG stream URL")
    parser.add_argument("--model", default=None, help="weights (default $ESPDETECT_MODEL)")
    parser.add_argument("--generator", choices=("async", "async-bare", "sync"), default="async")
    parser.add_argument("--quality", type=int, default=80)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)

    app = create_baseline_app(args.camera, args.model, generator=args.generator, quality=args.quality)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(256)
    config = uvicorn.Config(app, log_config=None, access_log=False, timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)

    def stop() -> None:
        server.should_exit = True

    # The benchmark holds our stdin: when it goes away, so do we.
    on_stdin_eof(stop)
    port = sock.getsockname()[1]
    emit("READY", {"url": f"http://127.0.0.1:{port}"})
    server.run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
