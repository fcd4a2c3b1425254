"""Long-lived responses to viewers: MJPEG (raw and annotated) and server-sent detection events.

`ViewerStream` is a small ASGI response rather than a ``StreamingResponse`` over a generator,
because a stream must end for four reasons and tell them apart:

* the viewer went away: ``http.disconnect`` arrives on ``receive`` (watched concurrently, so
  it is noticed even while the stream waits for the next frame);
* the viewer stopped reading: one ``send`` stays blocked for ``send_timeout`` seconds;
* the server is stopping: the hub's shutdown event is set;
* the camera's pipeline closed.

Whatever the reason, the viewer's `ViewerTicket` is released in ``finally``, so viewer counts
are right after any number of aborted connections.

Each viewer reads the pipeline's `Latest` slots with its own version number: a slow viewer
skips frames for itself only. Annotated viewers whose sends fall behind move to a lower JPEG
quality tier (a per-viewer `AdaptiveQuality`); each tier is encoded at most once per frame, in a
worker thread, whatever the number of viewers on it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, Protocol

import anyio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from espdetect.encoders.adaptive import AdaptiveQuality
from espdetect.exceptions import EspdetectError, SlotClosed
from espdetect.mjpeg import mjpeg_part
from espdetect.server.camera import Camera
from espdetect.server.errors import ViewerTimedOut
from espdetect.server.hub import ViewerTicket

__all__ = [
    "MJPEG_BOUNDARY",
    "MJPEG_MEDIA_TYPE",
    "SSE_MEDIA_TYPE",
    "SendBody",
    "StreamTicket",
    "ViewerStream",
    "annotated_mjpeg",
    "detection_events",
    "raw_mjpeg",
]

logger = logging.getLogger(__name__)

MJPEG_BOUNDARY = "espdetectframe"
MJPEG_MEDIA_TYPE = f"multipart/x-mixed-replace; boundary={MJPEG_BOUNDARY}"
SSE_MEDIA_TYPE = "text/event-stream"
#: Seconds between SSE comments while no detections come (keeps proxies from closing the stream).
SSE_KEEPALIVE = 15.0
#: Seconds allowed for the final empty chunk that completes a response.
_FINISH_TIMEOUT = 1.0


class StreamTicket(Protocol):
    """A stream's admission: its id for logs, and ``release`` (idempotent) when it ends."""

    @property
    def id(self) -> int: ...

    def release(self, reason: str) -> None: ...


class SendBody(Protocol):
    async def __call__(self, data: bytes) -> float:
        """Hand ``data`` to the connection; return the seconds it took. Raises `ViewerTimedOut`."""


Body = Callable[[SendBody], Coroutine[Any, Any, None]]


class ViewerStream(Response):
    """ASGI response streaming ``body`` to one viewer until it leaves, stalls, or the server stops.

    ``body`` gets a ``send(data) -> seconds`` callable and returns when the stream is complete.
    The body, a watcher of the client's disconnect and a watcher of the server's shutdown run
    in one task group; whichever finishes first decides why the stream ended and cancels the
    other two.

    Example:
        >>> ticket = hub.admit(camera, ViewerKind.RAW, "127.0.0.1:5000")  # doctest: +SKIP
        >>> return ViewerStream(lambda send: raw_mjpeg(camera, ticket, send), ticket=ticket,
        ...                     media_type=MJPEG_MEDIA_TYPE, shutdown=hub.shutdown, send_timeout=10.0)
    """

    def __init__(
        self,
        body: Body,
        *,
        ticket: StreamTicket,
        media_type: str,
        shutdown: anyio.Event,
        send_timeout: float,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        # Response.__init__ is skipped: it would add a Content-Length for an empty body.
        self.produce = body
        self.ticket = ticket
        self.shutdown = shutdown
        self.send_timeout = send_timeout
        self.status_code = 200
        self.media_type = media_type
        self.background = None
        self.init_headers(
            {
                "Cache-Control": "no-store, no-cache, must-revalidate",
                "Pragma": "no-cache",
                "X-Accel-Buffering": "no",
                **(headers or {}),
            }
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        reason, complete = "error", False
        try:
            head = {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
            await self._timed(send(head))
            reason, complete = await self._stream(receive, send)
        except ViewerTimedOut:
            reason = "send timeout"
        except OSError:
            reason = "client disconnected"
        except anyio.get_cancelled_exc_class():
            reason = "cancelled"
            raise
        finally:
            try:
                if complete:
                    # Ends the chunked body cleanly; uvicorn then closes the connection on shutdown.
                    with anyio.move_on_after(_FINISH_TIMEOUT, shield=True), contextlib.suppress(OSError):
                        await send({"type": "http.response.body", "body": b"", "more_body": False})
            finally:
                self.ticket.release(reason)

    async def _stream(self, receive: Receive, send: Send) -> tuple[str, bool]:
        """Run the body and the two watchers; (why the stream ended, whether to end it cleanly)."""
        outcome: list[tuple[str, bool]] = []

        async def send_body(data: bytes) -> float:
            start = time.perf_counter()
            await self._timed(send({"type": "http.response.body", "body": data, "more_body": True}))
            return time.perf_counter() - start

        async with anyio.create_task_group() as group:

            def finish(reason: str, complete: bool) -> None:
                if not outcome:
                    outcome.append((reason, complete))
                group.cancel_scope.cancel()

            async def produce() -> None:
                try:
                    await self.produce(send_body)
                except ViewerTimedOut:
                    finish("send timeout", False)
                except OSError:  # the transport failed under a send: the viewer is gone
                    finish("client disconnected", False)
                except EspdetectError as exc:  # the camera's pipeline is closed or stopped
                    logger.error("viewer %d: stream failed: %s", self.ticket.id, exc)
                    finish(f"error: {exc}", False)
                else:
                    finish("stream ended", True)

            async def watch_disconnect() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                finish("client disconnected", False)

            async def watch_shutdown() -> None:
                await self.shutdown.wait()
                finish("server shutdown", True)

            group.start_soon(produce, name=f"viewer-{self.ticket.id}")
            group.start_soon(watch_disconnect, name=f"viewer-{self.ticket.id}-rx")
            group.start_soon(watch_shutdown, name=f"viewer-{self.ticket.id}-stop")
        return outcome[0]

    async def _timed(self, awaitable: Awaitable[None]) -> None:
        try:
            with anyio.fail_after(self.send_timeout):
                await awaitable
        except TimeoutError:
            raise ViewerTimedOut(self.send_timeout) from None


def _behind(send_s: float, interval_s: float, skipped: int) -> bool:
    """Whether a viewer is falling behind: it missed frames, or one send took over half a frame interval."""
    return skipped > 0 or (interval_s > 0 and send_s > 0.5 * interval_s)


async def raw_mjpeg(camera: Camera, ticket: ViewerTicket, send: SendBody) -> None:
    """The camera's own JPEG bytes, one multipart part per frame, until the pipeline closes."""
    pipe = camera.pipeline
    # One version back: the current frame goes out at once when the camera is already read.
    back = 1 if camera.live_frame() is not None else 0
    async with pipe.subscribe("raw"):
        version = pipe.raw.version - back
        while True:
            try:
                new_version, frame = await pipe.raw.next_after(version)
            except SlotClosed:
                return
            skipped = max(0, new_version - version - 1) if ticket.frames else 0
            version = new_version
            assert frame.jpeg is not None  # the pipeline encodes frames that come without bytes
            part = mjpeg_part(frame.jpeg, frame.arrival, MJPEG_BOUNDARY)
            await send(part)
            camera.serve.raw_latency_ms.add((time.perf_counter() - frame.arrival_mono) * 1000.0)
            ticket.sent(len(part), skipped)


async def annotated_mjpeg(camera: Camera, ticket: ViewerTicket, send: SendBody) -> None:
    """Annotated frames (encoded once per frame and quality tier), until the pipeline closes."""
    pipe = camera.pipeline
    back = 1 if camera.live_output() is not None else 0
    tiers = AdaptiveQuality(camera.quality_tiers)
    interval = 0.0
    last_arrival: float | None = None
    async with pipe.subscribe("annotated"):
        version = pipe.output.version - back
        while True:
            try:
                new_version, rendered = await pipe.output.next_after(version)
            except SlotClosed:
                return
            steps = new_version - version
            skipped = max(0, steps - 1) if ticket.frames else 0
            version = new_version
            arrival = rendered.frame.arrival_mono
            if last_arrival is not None and arrival > last_arrival and steps > 0:
                step = (arrival - last_arrival) / steps
                interval = step if interval == 0.0 else 0.8 * interval + 0.2 * step
            last_arrival = arrival
            if tiers.levels != camera.quality_tiers:
                tiers = AdaptiveQuality(camera.quality_tiers)
            quality = tiers.quality
            if rendered.quality is None or quality == rendered.quality or rendered.image is None:
                jpeg = rendered.jpeg
            else:
                jpeg = await camera.encoded(rendered, quality)
                camera.serve.low_quality_frames += 1
            part = mjpeg_part(jpeg, rendered.frame.arrival, MJPEG_BOUNDARY)
            took = await send(part)
            camera.serve.latency_ms.add((time.perf_counter() - arrival) * 1000.0)
            ticket.sent(len(part), skipped)
            before = tiers.quality
            if tiers.observe(_behind(took, interval, skipped)) != before:
                logger.info(
                    "viewer %d (%s): JPEG quality %d -> %d (send %.0f ms, interval %.0f ms, %d skipped)",
                    ticket.id,
                    camera.id,
                    before,
                    tiers.quality,
                    took * 1000.0,
                    interval * 1000.0,
                    skipped,
                )


async def detection_events(camera: Camera, ticket: ViewerTicket, send: SendBody) -> None:
    """One server-sent event per processed frame: ``data:`` holds `DetectionResult.to_dict` as JSON."""
    pipe = camera.pipeline
    await send(b"retry: 2000\n\n")
    async with pipe.subscribe("detections"):
        version = pipe.detections.version
        while True:
            with anyio.move_on_after(SSE_KEEPALIVE) as wait:
                try:
                    new_version, result = await pipe.detections.next_after(version)
                except SlotClosed:
                    return
            if wait.cancelled_caught:
                await send(b": keep-alive\n\n")
                continue
            skipped = max(0, new_version - version - 1) if ticket.frames else 0
            version = new_version
            payload = json.dumps(result.to_dict(), separators=(",", ":"))
            event = f"id: {result.frame.seq}\ndata: {payload}\n\n".encode()
            await send(event)
            ticket.sent(len(event), skipped)
