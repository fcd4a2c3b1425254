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

import asyncio
import contextlib
import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, Protocol, TypeVar

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from espdetect.encoders.adaptive import AdaptiveQuality
from espdetect.latest import SlotClosed
from espdetect.mjpeg import mjpeg_part
from espdetect.server.hub import Camera, ViewerTicket

__all__ = [
    "MJPEG_BOUNDARY",
    "MJPEG_MEDIA_TYPE",
    "SSE_MEDIA_TYPE",
    "SendBody",
    "ViewerStream",
    "ViewerTimedOut",
    "annotated_mjpeg",
    "detection_events",
    "raw_mjpeg",
    "with_timeout",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

MJPEG_BOUNDARY = "espdetectframe"
MJPEG_MEDIA_TYPE = f"multipart/x-mixed-replace; boundary={MJPEG_BOUNDARY}"
SSE_MEDIA_TYPE = "text/event-stream"
#: Seconds between SSE comments while no detections come (keeps proxies from closing the stream).
SSE_KEEPALIVE = 15.0
#: Seconds allowed for the final empty chunk that completes a response.
_FINISH_TIMEOUT = 1.0


class ViewerTimedOut(Exception):
    """One send to the viewer stayed blocked for the viewer timeout."""


class SendBody(Protocol):
    async def __call__(self, data: bytes) -> float:
        """Hand ``data`` to the connection; return the seconds it took. Raises `ViewerTimedOut`."""


Body = Callable[[SendBody], Coroutine[Any, Any, None]]


class ViewerStream(Response):
    """ASGI response streaming ``body`` to one viewer until it leaves, stalls, or the server stops.

    ``body`` gets a ``send(data) -> seconds`` callable and returns when the stream is complete.

    Example:
        >>> ticket = hub.admit(camera, ViewerKind.RAW, "127.0.0.1:5000")  # doctest: +SKIP
        >>> return ViewerStream(lambda send: raw_mjpeg(camera, ticket, send), ticket=ticket,
        ...                     media_type=MJPEG_MEDIA_TYPE, shutdown=hub.shutdown, send_timeout=10.0)
    """

    def __init__(
        self,
        body: Body,
        *,
        ticket: ViewerTicket,
        media_type: str,
        shutdown: asyncio.Event,
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
        reason = "error"
        tasks: list[asyncio.Task[None]] = []
        complete = False
        closing = False

        async def send_body(data: bytes) -> float:
            # Ends a producer that missed its cancellation (it would otherwise keep sending
            # into a closed connection, which uvicorn silently accepts).
            if closing:
                raise _StreamClosing
            start = time.perf_counter()
            await self._timed(send({"type": "http.response.body", "body": data, "more_body": True}))
            return time.perf_counter() - start

        try:
            head = {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
            await self._timed(send(head))

            producer = asyncio.create_task(self.produce(send_body), name=f"viewer-{self.ticket.id}")
            watcher = asyncio.create_task(_wait_disconnect(receive), name=f"viewer-{self.ticket.id}-rx")
            stopper = asyncio.create_task(_wait_event(self.shutdown), name=f"viewer-{self.ticket.id}-stop")
            tasks = [producer, watcher, stopper]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if watcher.done():
                reason = "client disconnected"
            elif producer.done():
                exc = None if producer.cancelled() else producer.exception()
                if isinstance(exc, ViewerTimedOut):
                    reason = "send timeout"
                elif exc is not None:
                    reason = f"error: {exc!r}"
                    logger.error("viewer %d: stream failed", self.ticket.id, exc_info=exc)
                else:
                    reason, complete = "stream ended", True
            else:
                reason, complete = "server shutdown", True
        except ViewerTimedOut:
            reason = "send timeout"
        except asyncio.CancelledError:
            reason = "cancelled"
            raise
        finally:
            closing = True
            try:
                for task in tasks:
                    task.cancel()
                if tasks:
                    await asyncio.gather(*tasks, return_exceptions=True)
                if complete:
                    # Ends the chunked body cleanly; uvicorn then closes the connection on shutdown.
                    with contextlib.suppress(Exception):
                        await with_timeout(
                            send({"type": "http.response.body", "body": b"", "more_body": False}),
                            _FINISH_TIMEOUT,
                        )
            finally:
                self.ticket.release(reason)

    async def _timed(self, awaitable: Awaitable[None]) -> None:
        try:
            await with_timeout(awaitable, self.send_timeout)
        except asyncio.TimeoutError:
            raise ViewerTimedOut from None


class _StreamClosing(Exception):
    """The response is being torn down; the producer must stop."""


if sys.version_info >= (3, 11):

    async def with_timeout(awaitable: Awaitable[T], seconds: float) -> T:
        """``await awaitable`` or raise TimeoutError after ``seconds``.

        `asyncio.timeout` rather than `asyncio.wait_for`: before Python 3.12, wait_for can
        swallow a cancellation that arrives just as the awaited operation completes, which
        would leave a stream running after its viewer left.
        """
        async with asyncio.timeout(seconds):
            return await awaitable

else:  # pragma: no cover - Python 3.10

    async def with_timeout(awaitable: Awaitable[T], seconds: float) -> T:
        return await asyncio.wait_for(awaitable, seconds)


async def _wait_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def _wait_event(event: asyncio.Event) -> None:
    await event.wait()


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
            camera.serve.raw_latency_ms.append((time.perf_counter() - frame.arrival_mono) * 1000.0)
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
            camera.serve.latency_ms.append((time.perf_counter() - arrival) * 1000.0)
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
            try:
                new_version, result = await with_timeout(pipe.detections.next_after(version), SSE_KEEPALIVE)
            except asyncio.TimeoutError:
                await send(b": keep-alive\n\n")
                continue
            except SlotClosed:
                return
            skipped = max(0, new_version - version - 1) if ticket.frames else 0
            version = new_version
            payload = json.dumps(result.to_dict(), separators=(",", ":"))
            event = f"id: {result.frame.seq}\ndata: {payload}\n\n".encode()
            await send(event)
            ticket.sent(len(event), skipped)
