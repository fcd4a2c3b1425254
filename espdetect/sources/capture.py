"""`CaptureSource`: frames by polling a camera's single-JPEG endpoint (ESP32 ``/capture``)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Literal
from urllib.parse import urlsplit

import httpx

from espdetect.exceptions import EndOfStream, SourceUnavailable
from espdetect.frame import Frame
from espdetect.mjpeg import DEFAULT_MAX_PART_SIZE, Part
from espdetect.sources._blocking import Pacer
from espdetect.sources._retry import Backoff, RateLimitedLog
from espdetect.sources.base import FrameSource

__all__ = ["CaptureSource"]

logger = logging.getLogger(__name__)


_Counter = Literal["connect_failures", "corrupt", "oversize", "stalls"]


class _CaptureFailed(Exception):
    def __init__(self, counter: _Counter, reason: str) -> None:
        super().__init__(reason)
        self.counter = counter
        self.reason = reason


class CaptureSource(FrameSource):
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
        >>> async def snap(url: str) -> Frame:  # doctest: +SKIP
        ...     async with CaptureSource(url, interval=0.5) as src:
        ...         return await src.read()
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
        super().__init__()
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"url must be an http(s) URL, got {url!r}")
        if not timeout > 0 or not connect_timeout > 0:
            raise ValueError(f"timeouts must be > 0 seconds, got {timeout!r} and {connect_timeout!r}")
        if max_size < 1:
            raise ValueError(f"max_size must be a positive number of bytes, got {max_size!r}")
        self.url = url
        # Never the user:password part of the URL: source ids end up in logs and metrics.
        self.source_id = source_id or parts.netloc.rpartition("@")[2]
        self.interval = interval
        self.max_size = max_size
        self.reconnect = reconnect
        self.backoff = Backoff(backoff_initial, backoff_max)
        self._timeout = httpx.Timeout(timeout, connect=connect_timeout)
        self._pacer = Pacer(interval) if interval is not None else None
        self._client = client
        self._owns_client = client is None
        self._lock = asyncio.Lock()
        self._closed = False
        self._failing = False
        self._next_seq = 0
        self._retry_log = RateLimitedLog(logger)

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
                    setattr(self.stats, exc.counter, getattr(self.stats, exc.counter) + 1)
                    self._failing = True
                    self.stats.connected = False
                    if not self.reconnect:
                        raise SourceUnavailable(self.url, exc.reason) from None
                    delay = self.backoff.next_delay()
                    self._retry_log.warning(
                        "%s: %s; retrying in %.2f s (attempt %d)",
                        self.source_id,
                        exc.reason,
                        delay,
                        self.backoff.attempt,
                    )
                    await asyncio.sleep(delay)
                    continue
                return self._frame(jpeg, timestamp)

    async def aclose(self) -> None:
        """Stop polling and close the HTTP client this source created."""
        self._closed = True
        self.stats.connected = False
        if self._owns_client and self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    def _frame(self, jpeg: bytes, timestamp: float | None) -> Frame:
        if self._failing:
            self._failing = False
            self.stats.reconnects += 1
            self.backoff.reset()
            self._retry_log.reset()
            logger.info("%s: capture works again", self.source_id)
        self.stats.connected = True
        frame = Frame(
            seq=self._next_seq,
            source_id=self.source_id,
            jpeg=jpeg,
            arrival=time.time(),
            arrival_mono=time.perf_counter(),
            camera_timestamp=timestamp,
        )
        self._next_seq += 1
        self.stats.frames += 1
        self.stats.bytes += len(jpeg)
        return frame

    async def _fetch(self) -> tuple[bytes, float | None]:
        if self._client is None:
            self._client = httpx.AsyncClient()
        try:
            async with self._client.stream("GET", self.url, timeout=self._timeout) as response:
                body = await self._read_limited(response)
                content_type = response.headers.get("content-type", "")
                if response.status_code != 200:
                    snippet = " ".join(body[:200].decode("utf-8", errors="replace").split())[:120]
                    raise _CaptureFailed(
                        "connect_failures", f"expected HTTP 200, got {response.status_code}: {snippet!r}"
                    )
                if content_type and not content_type.lower().startswith("image/"):
                    snippet = " ".join(body[:200].decode("utf-8", errors="replace").split())[:120]
                    raise _CaptureFailed(
                        "connect_failures", f"expected image/jpeg, got {content_type!r}: {snippet!r}"
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
