"""`CaptureSource`: frames by polling a camera's single-JPEG endpoint (ESP32 ``/capture``)."""

from __future__ import annotations

import asyncio
import logging
from typing import Literal

import httpx

from espdetect.exceptions import EndOfStream, SourceUnavailable
from espdetect.frame import Frame
from espdetect.mjpeg import DEFAULT_MAX_PART_SIZE, Part
from espdetect.sources._blocking import Pacer
from espdetect.sources._http import AttemptFailed, HttpSource, snippet
from espdetect.sources._retry import Backoff, Retry

__all__ = ["CaptureSource"]

logger = logging.getLogger(__name__)


_Counter = Literal["connect_failures", "corrupt", "oversize", "stalls"]


class _CaptureFailed(AttemptFailed[_Counter]):
    """A request that gave no frame; ``kind`` is the `SourceStats` counter it adds to."""


class CaptureSource(HttpSource):
    """Frames from repeated ``GET`` requests for one JPEG each (ESP32 ``/capture``).

    Slower than the stream (one request per frame, and the ESP32 lights its flash LED
    150 ms before each grab), but it works with several clients and through proxies that
    break long responses. Replies that are not a complete JPEG are never turned into frames:
    HTTP errors and non-image replies count as ``stats.connect_failures``, image replies
    that are not a complete JPEG as ``stats.corrupt``, oversized ones as ``stats.oversize``,
    read timeouts as ``stats.stalls``. Failures are retried with capped exponential backoff;
    ``stats.reconnects`` counts recoveries after a failure.

    Args:
        url: the capture URL, e.g. ``http://192.168.4.1/capture``.
        interval: minimum seconds between requests; None polls as fast as the camera answers.
        source_id: name used in frames and logs; defaults to the URL's host:port.
        timeout: seconds allowed for each reply.
        connect_timeout: seconds allowed to connect.
        max_size: replies larger than this are rejected.
        backoff_initial: first retry delay in seconds (doubles per failure).
        backoff_max: the largest retry delay in seconds.
        reconnect: when False, the first failure raises `SourceUnavailable`.
        client: an ``httpx.AsyncClient`` to use (not closed by this source).

    Example:
        >>> async def snapshots(url: str, n: int) -> list[Frame]:  # doctest: +SKIP
        ...     async with CaptureSource(url, interval=0.5) as src:  # at most 2 requests a second
        ...         return [await src.read() for _ in range(n)]
    """

    def __init__(
        self,
        url: str,
        *,
        interval: float | None = None,
        source_id: str | None = None,
        timeout: float = 5.0,
        connect_timeout: float = 5.0,
        max_size: int = DEFAULT_MAX_PART_SIZE,
        backoff_initial: float = 0.1,
        backoff_max: float = 2.0,
        reconnect: bool = True,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        retry = Retry(Backoff(backoff_initial, backoff_max), logger, "retrying")
        super().__init__(url, source_id, retry, client=client, reconnect=reconnect)
        if not timeout > 0 or not connect_timeout > 0:
            raise ValueError(f"timeouts must be > 0 seconds, got {timeout!r} and {connect_timeout!r}")
        if max_size < 1:
            raise ValueError(f"max_size must be a positive number of bytes, got {max_size!r}")
        self.interval = interval
        self.max_size = max_size
        self._timeout = httpx.Timeout(timeout, connect=connect_timeout)
        self._pacer = Pacer(interval) if interval is not None else None
        self._lock = asyncio.Lock()
        self._failing = False

    async def read(self) -> Frame:
        """Request frames until one is a complete JPEG.

        Raises:
            EndOfStream: the source was closed.
            SourceUnavailable: (reconnect=False) the request failed or the reply was not a JPEG.
        """
        async with self._lock:
            while True:
                if self._closed:
                    raise EndOfStream(f"{self.source_id}: source closed")
                if self._pacer is not None:
                    await self._pacer.wait()
                try:
                    jpeg, timestamp = await self._fetch()
                except _CaptureFailed as exc:
                    if self._closed:  # aclose() during the request: not the camera's fault
                        raise EndOfStream(f"{self.source_id}: source closed") from None
                    setattr(self.stats, exc.kind, getattr(self.stats, exc.kind) + 1)
                    self._failing = True
                    self.stats.connected = False
                    if not self.reconnect:
                        raise SourceUnavailable(self.url, exc.reason) from None
                    await asyncio.sleep(self._retry.next_delay(self.source_id, exc.reason))
                    continue
                return self._frame(jpeg, timestamp)

    def _frame(self, jpeg: bytes, timestamp: float | None) -> Frame:
        if self._failing:
            self._failing = False
            self.stats.reconnects += 1
            self._retry.reset()
            logger.info("%s: capture works again", self.source_id)
        self.stats.connected = True
        seq = self._count_frame(len(jpeg))
        return Frame(seq=seq, source_id=self.source_id, jpeg=jpeg, camera_timestamp=timestamp)

    async def _fetch(self) -> tuple[bytes, float | None]:
        try:
            async with self._get_client().stream("GET", self.url, timeout=self._timeout) as response:
                body = await self._read_limited(response)
                content_type = response.headers.get("content-type", "")
                if response.status_code != 200:
                    raise _CaptureFailed(
                        "connect_failures",
                        f"expected HTTP 200, got {response.status_code}: {snippet(body)!r}",
                    )
                if content_type and not content_type.lower().startswith("image/"):
                    raise _CaptureFailed(
                        "connect_failures", f"expected image/jpeg, got {content_type!r}: {snippet(body)!r}"
                    )
                part = Part({"x-timestamp": response.headers.get("x-timestamp", "")}, body)
                if not part.is_complete_jpeg:
                    raise _CaptureFailed(
                        "corrupt", f"expected a complete JPEG, got {len(body)} bytes of {content_type or '?'}"
                    )
                return body, part.timestamp
        except httpx.TimeoutException as exc:
            counter: _Counter = "connect_failures" if isinstance(exc, httpx.ConnectTimeout) else "stalls"
            raise _CaptureFailed(counter, f"timed out: {type(exc).__name__}") from exc
        except (httpx.TransportError, OSError) as exc:
            raise _CaptureFailed("connect_failures", f"request failed: {type(exc).__name__}: {exc}") from exc

    async def _read_limited(self, response: httpx.Response) -> bytes:
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_size:
            raise _CaptureFailed("oversize", f"expected at most {self.max_size} bytes, got {declared}")
        data = bytearray()
        async for chunk in response.aiter_raw():
            data += chunk
            if len(data) > self.max_size:
                raise _CaptureFailed("oversize", f"expected at most {self.max_size} bytes, got more")
        return bytes(data)
