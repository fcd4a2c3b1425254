"""`HttpSource`: what the ESP32 HTTP sources (``/stream``, ``/capture``) share.

The URL check and default source id, the ``httpx`` client (borrowed or owned), reconnecting
with backoff, and the failures that make a source retry.
"""

from __future__ import annotations

from typing import Generic, TypeVar
from urllib.parse import urlsplit, urlunsplit

import httpx

from espdetect.sources._retry import Retry
from espdetect.sources.base import FrameSource

__all__ = ["AttemptFailed", "HttpSource", "snippet"]

K = TypeVar("K", bound=str)


class AttemptFailed(Exception, Generic[K]):
    """One attempt (a request, a connection) failed: ``kind`` says how, ``reason`` what happened.

    A source subclasses it with its own literal ``kind`` type, which decides what it counts.
    """

    def __init__(self, kind: K, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


def snippet(body: bytes) -> str:
    """The start of an error reply's body, whitespace collapsed, to quote in a log line.

    Example:
        >>> snippet(b"<html>\\n  <h1>503   Service Unavailable</h1>")
        '<html> <h1>503 Service Unavailable</h1>'
    """
    return " ".join(body[:200].decode("utf-8", errors="replace").split())[:120]


class HttpSource(FrameSource):
    """A source that reads a camera over HTTP(S) and, with ``reconnect``, retries failures.

    ``source_id`` defaults to the URL's ``host:port``, never its ``user:password``. The
    ``httpx`` client is the caller's (``client``, left open) or one made on first use and
    closed by `aclose`. ``retry`` paces and logs the attempts after a failure; its backoff is
    the source's ``backoff``.

    Raises:
        ValueError: ``url`` is not an http(s) URL.

    Example:
        >>> from espdetect.sources import CaptureSource
        >>> CaptureSource("http://admin:pw@192.168.4.1/capture").source_id
        '192.168.4.1'
    """

    def __init__(
        self,
        url: str,
        source_id: str | None,
        retry: Retry,
        *,
        client: httpx.AsyncClient | None,
        reconnect: bool,
    ) -> None:
        super().__init__()
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"url must be an http(s) URL, got {url!r}")
        self.url = url
        # Never the user:password part of the URL: source ids end up in logs and metrics.
        self.source_id = source_id or parts.netloc.rpartition("@")[2]
        self.reconnect = reconnect
        self.backoff = retry.backoff
        self._retry = retry
        self._client = client
        self._owns_client = client is None
        self._closed = False

    def describe(self) -> str:
        """The URL without its user:password part."""
        parts = urlsplit(self.url)
        return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))

    def _get_client(self) -> httpx.AsyncClient:
        if self._client is None:
            # A plain-http camera never uses TLS: skip loading the CA bundle, about 40 ms of
            # work that would block the event loop on every new camera connection.
            self._client = httpx.AsyncClient(verify=not self.url.startswith("http://"))
        return self._client

    async def aclose(self) -> None:
        """Stop reading and close the HTTP client if this source made it."""
        self._closed = True
        self.stats.connected = False
        if self._owns_client and self._client is not None:
            client, self._client = self._client, None
            await client.aclose()
