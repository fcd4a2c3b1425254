"""`WebhookSink`: event records POSTed as JSON to URLs of your own (an `EventSink`).

Every `EventMessage` goes to every configured URL as ``POST <url>`` with the record's JSON as the
body (the same bytes as on MQTT) and these headers:

* ``Content-Type: application/json`` and ``User-Agent: espdetect/<version>``;
* ``X-Espdetect-Event``: the record's type, ``start``, ``update`` or ``end``;
* ``X-Espdetect-Delivery``: ``<event id>:<type>:<sequence>`` (the sequence counts this sink's
  records), the same on every attempt and every URL, so a receiver that sees it twice (a retry
  after its answer was lost) can skip the repeat;
* with ``webhook_secret`` set, ``X-Espdetect-Timestamp`` (Unix seconds of the attempt) and
  ``X-Espdetect-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>." + body)>``: the timestamp
  is inside the MAC so an old request cannot be replayed; receivers check both with
  `verify_signature`.

The picture is not in the body: the JSON says ``has_snapshot`` and gives the ``id``, and the JPEG
is at ``GET /events/{id}/snapshot.jpg`` on this server. `CountMessage` items are not sent.

Each URL has its own bounded outbox (``webhook_queue`` records besides the one being sent; when
full, the oldest is dropped and counted) and its own delivery task, so a URL that is down or
slow never delays the others.
Records go to one URL in order: one is retried until it succeeds or its retries are used up
before the next is sent. Connection errors, timeouts, 408, 429 and 5xx answers are retried
``webhook_retries`` times, after 1 s doubling to 60 s plus jitter (or the answer's Retry-After, at
most 60 s); other answers outside 2xx fail at once (redirects are not followed).
"""

from __future__ import annotations

import email.utils
import hashlib
import hmac
import itertools
import logging
import math
import random
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, NamedTuple
from urllib.parse import unquote, urlsplit

import anyio
import httpx
from anyio.abc import TaskStatus

import espdetect
from espdetect.server.notify import EventMessage, Notification, SinkStats
from espdetect.server.settings import WebhookSettings, redact_url

__all__ = ["WebhookSink", "verify_signature"]

logger = logging.getLogger(__name__)

#: Response bytes read before the connection is dropped: a receiver's answer is only a status,
#: and a hostile one must not make us buffer megabytes.
MAX_RESPONSE_BYTES: Final = 64 * 1024
#: Longest wait a Retry-After header can ask for.
RETRY_AFTER_MAX: Final = 60.0
#: How much of an error answer's body goes into the log line.
_EXCERPT: Final = 200
#: How long closing the HTTP client may hold up a cancelled `WebhookSink.run`.
_CLOSE_TIMEOUT: Final = 0.5
#: Answers worth trying again: the receiver timed out, is rate-limiting, or is broken for now.
_RETRY_STATUSES: Final = frozenset({408, 429})


def _sign(secret: bytes, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_signature(
    secret: str,
    timestamp: str,
    body: bytes,
    signature: str,
    *,
    tolerance: float = 300,
    now: float | None = None,
) -> bool:
    """Whether a webhook request is genuine: ``signature`` is ``secret``'s MAC of ``body`` at ``timestamp``.

    Pass the ``X-Espdetect-Timestamp`` and ``X-Espdetect-Signature`` headers and the raw request
    body (before any JSON parsing). The timestamp must lie within ``tolerance`` seconds of ``now``
    (default: the current time) either way, which turns away replays of old requests. The MAC is
    compared in constant time.

    Example:
        >>> body = b'{"type":"start","id":"e1"}'
        >>> mac = hmac.new(b"s3cret", b"1700000000." + body, "sha256").hexdigest()
        >>> verify_signature("s3cret", "1700000000", body, f"sha256={mac}", now=1700000060)
        True
        >>> verify_signature("s3cret", "1700000000", body, f"sha256={mac}", now=1700003600)
        False
        >>> verify_signature("s3cret", "1700000000", body + b" ", f"sha256={mac}", now=1700000060)
        False
    """
    # Digits only (no sign, no spaces) and short enough to be a time: int() of a huge string is slow.
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 15):
        return False
    current = time.time() if now is None else now
    if not abs(current - int(timestamp)) <= tolerance:
        return False
    expected = _sign(secret.encode("utf-8"), timestamp, body).encode("ascii")
    return hmac.compare_digest(expected, signature.encode("utf-8", "replace"))


def _retry_after(value: str | None, now: float) -> float | None:
    """Seconds a Retry-After header asks for (delta seconds or an HTTP date), at most 60; None: none."""
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when.timestamp() - now
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), RETRY_AFTER_MAX)


class _Record(NamedTuple):
    delivery: str
    type: str
    body: bytes


class _Outcome(NamedTuple):
    ok: bool
    retry: bool
    #: What happened, for the log (no secrets).
    reason: str
    #: Seconds the receiver asked us to wait (Retry-After).
    wait: float | None = None


@dataclass(eq=False)
class _Target:
    #: The URL without ``user:password@`` (httpx logs the URLs it requests at INFO).
    url: str
    #: Basic auth from the URL's ``user:password@``.
    auth: httpx.BasicAuth | None
    #: The URL fit for logs.
    label: str
    outbox: deque[_Record]
    #: The URL's password and secret query values, kept out of log lines.
    secrets: tuple[str, ...] = ()
    #: The record being delivered (kept here, so a restarted `run` sends it first).
    current: _Record | None = None
    #: Set by `submit` while the worker waits for records.
    wake: anyio.Event | None = None
    #: The last attempt succeeded (for logging only changes of it).
    up: bool = True
    #: "Outbox full" was logged since it last emptied.
    full_logged: bool = False

    def scrub(self, text: str) -> str:
        """``text`` without the URL's secrets (exception messages may quote the URL)."""
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text


class WebhookSink:
    """Delivers event records to webhook URLs (see the module for the request format).

    `submit` queues and never blocks; `run` delivers until cancelled. Call `submit` from the event
    loop's thread. `stats` counts per delivery: a record sent to two URLs is delivered twice.
    ``backoff_base`` and ``backoff_max`` (seconds) shape the waits between attempts.

    Example:
        >>> from espdetect.events import Event, EventUpdate
        >>> event = Event(id="e1", camera="door", label="person", score=0.9, box=(1, 2, 3, 4),
        ...               frame_size=(640, 480), start_time=100.0, best_time=100.0, group_id="e1")
        >>> sink = WebhookSink(WebhookSettings(webhook_urls=["http://127.0.0.1:8123/api/webhook/door"]))
        >>> sink.submit(EventMessage.of(EventUpdate("start", event, notify=True)))
        >>> sink.stats().queued
        1

        Then, in a task group: ``await tg.start(sink.run)``.
    """

    name = "webhooks"

    def __init__(
        self,
        settings: WebhookSettings,
        *,
        version: str = espdetect.__version__,
        clock: Callable[[], float] = time.time,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
    ) -> None:
        if not 0 <= backoff_base <= backoff_max:
            raise ValueError(
                f"expected 0 <= backoff_base <= backoff_max, got {backoff_base!r} and {backoff_max!r}"
            )
        self._settings = settings
        self._version = version
        self._clock = clock
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        secret = settings.webhook_secret
        self._secret = None if secret is None else secret.get_secret_value().encode("utf-8")
        self._targets = [_target(url, settings.webhook_queue) for url in settings.webhook_urls]
        self._sequence = itertools.count(1)
        self._connected = True
        self._delivered = 0
        self._retries = 0
        self._failed = 0
        self._dropped = 0

    def announce(self, labels: Mapping[str, Sequence[str]]) -> None:
        """Webhooks need no announcement."""

    def submit(self, item: Notification) -> None:
        """Queue an event record for every URL (`CountMessage` items are ignored)."""
        if not isinstance(item, EventMessage) or not self._targets:
            return
        update = item.update
        record = _Record(f"{update.event.id}:{update.type}:{next(self._sequence)}", update.type, item.body)
        for target in self._targets:
            if len(target.outbox) == target.outbox.maxlen:
                self._dropped += 1  # the deque drops its oldest on append
                if not target.full_logged:
                    target.full_logged = True
                    logger.warning("webhook %s: outbox full, dropping the oldest records", target.label)
            target.outbox.append(record)
            if target.wake is not None:
                target.wake.set()

    def stats(self) -> SinkStats:
        """Counters now; ``connected``: the last attempt to any URL succeeded (True before any)."""
        queued = sum(len(t.outbox) + (t.current is not None) for t in self._targets)
        return SinkStats(
            connected=self._connected,
            queued=queued,
            delivered=self._delivered,
            retries=self._retries,
            failed=self._failed,
            dropped=self._dropped,
        )

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Deliver until cancelled; a cancelled POST is abandoned (the event store keeps the event)."""
        task_status.started()
        if not self._targets:
            await anyio.sleep_forever()
        client = httpx.AsyncClient(
            timeout=httpx.Timeout(self._settings.webhook_timeout),
            follow_redirects=False,
            headers={"User-Agent": f"espdetect/{self._version}"},
            # Plain http needs no CA bundle (loading it blocks the event loop for ~40 ms).
            verify=any(target.url.startswith("https://") for target in self._targets),
        )
        try:
            async with anyio.create_task_group() as tg:
                for target in self._targets:
                    tg.start_soon(self._work, client, target, name=f"webhook {target.label}")
        finally:
            # Shielded, but briefly: closing must not be cut short (unclosed sockets) nor hang.
            with anyio.CancelScope(shield=True) as scope:
                scope.deadline = anyio.current_time() + _CLOSE_TIMEOUT
                await client.aclose()

    async def _work(self, client: httpx.AsyncClient, target: _Target) -> None:
        while True:
            if target.current is None:
                while not target.outbox:
                    target.full_logged = False
                    target.wake = anyio.Event()
                    await target.wake.wait()
                target.current = target.outbox.popleft()
            await self._deliver(client, target, target.current)
            target.current = None

    async def _deliver(self, client: httpx.AsyncClient, target: _Target, record: _Record) -> None:
        """Try ``record`` until it succeeds, fails for good or its retries are used up."""
        retries = self._settings.webhook_retries
        for attempt in range(retries + 1):
            outcome = await self._attempt(client, target, record)
            self._connected = outcome.ok
            if outcome.ok:
                self._delivered += 1
                if not target.up:
                    target.up = True
                    logger.info("webhook %s: delivering again", target.label)
                return
            if not outcome.retry:
                self._failed += 1
                logger.warning(
                    "webhook %s: %s failed, not retried: %s", target.label, record.delivery, outcome.reason
                )
                return
            if attempt == retries:
                break
            self._retries += 1
            # One warning when a URL starts failing, not one per attempt while it stays down.
            level = logging.WARNING if target.up else logging.DEBUG
            target.up = False
            wait = outcome.wait if outcome.wait is not None else self._backoff(attempt)
            logger.log(level, "webhook %s: %s; retrying in %.1f s", target.label, outcome.reason, wait)
            await anyio.sleep(wait)
        self._failed += 1
        target.up = False
        logger.warning(
            "webhook %s: gave up on %s after %d attempts: %s",
            target.label,
            record.delivery,
            retries + 1,
            outcome.reason,
        )

    def _backoff(self, attempt: int) -> float:
        delay = min(self._backoff_max, self._backoff_base * 2.0 ** min(attempt, 64))
        # Jitter, so that receivers coming back are not hit by every sender at once.
        return delay + random.uniform(0.0, 0.1 * delay)

    async def _attempt(self, client: httpx.AsyncClient, target: _Target, record: _Record) -> _Outcome:
        timeout = self._settings.webhook_timeout
        try:
            # The whole exchange, not only each read: a receiver dripping bytes must not hold us.
            with anyio.fail_after(timeout):
                async with client.stream(
                    "POST", target.url, content=record.body, headers=self._headers(record), auth=target.auth
                ) as response:
                    excerpt = await _drain(response)
        except TimeoutError:
            return _Outcome(False, True, f"no answer within {timeout:g} s")
        except (httpx.HTTPError, OSError) as exc:
            if isinstance(exc, httpx.TimeoutException):
                return _Outcome(False, True, f"no answer within {timeout:g} s")
            return _Outcome(False, True, target.scrub(_describe(exc)))
        except Exception as exc:
            # A URL httpx cannot use (an invalid port) or a bug: retrying will not help, and one
            # record must not end the deliveries to every URL.
            return _Outcome(False, False, target.scrub(_describe(exc)))
        return self._judge(response, excerpt)

    def _judge(self, response: httpx.Response, excerpt: bytes) -> _Outcome:
        status = response.status_code
        reason = f"answered {status} {response.reason_phrase}".rstrip()
        if 200 <= status < 300:
            return _Outcome(True, False, reason)
        if status in _RETRY_STATUSES or status >= 500:
            return _Outcome(
                False, True, reason, _retry_after(response.headers.get("Retry-After"), self._clock())
            )
        if 300 <= status < 400:
            return _Outcome(False, False, f"{reason} (redirects are not followed: configure the final URL)")
        if excerpt:
            reason = f"{reason}: {excerpt.decode('utf-8', 'replace')!r}"
        return _Outcome(False, False, reason)

    def _headers(self, record: _Record) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "X-Espdetect-Event": record.type,
            "X-Espdetect-Delivery": record.delivery,
        }
        if self._secret is not None:
            # Signed per attempt: a retry long after the first attempt still has a fresh timestamp.
            timestamp = str(int(self._clock()))
            headers["X-Espdetect-Timestamp"] = timestamp
            headers["X-Espdetect-Signature"] = _sign(self._secret, timestamp, record.body)
        return headers


def _target(url: str, size: int) -> _Target:
    label = redact_url(url)
    raw = urlsplit(url)
    # The query values that redact_url hid, found by comparing its items with the original's.
    items = [item for item in raw.query.split("&") if item]
    hidden = [
        a.partition("=")[2] for a, b in zip(items, urlsplit(label).query.split("&"), strict=False) if a != b
    ]
    # Without a password, redact_url takes the user name for a token and hides it too.
    user_token = raw.username if raw.password is None else None
    found = {value for value in [raw.password, user_token, *hidden] if value}
    # Longest first, so that no shorter secret leaves part of a longer one in a message.
    secrets = tuple(sorted(found | {unquote(value) for value in found}, key=len, reverse=True))
    parsed = httpx.URL(url)
    auth = None
    if parsed.username or parsed.password:
        auth = httpx.BasicAuth(parsed.username, parsed.password)
        url = str(parsed.copy_with(username=None, password=None))
    return _Target(url, auth, label, deque(maxlen=size), secrets)


def _describe(exc: BaseException) -> str:
    # Connecting in a task group wraps the real error in an exception group: name the first one.
    while inner := getattr(exc, "exceptions", None):
        exc = inner[0]
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def _drain(response: httpx.Response) -> bytes:
    """Read at most `MAX_RESPONSE_BYTES` of the answer (then drop it); its first bytes for the log."""
    head = b""
    total = 0
    chunks = response.aiter_raw()
    async for chunk in chunks:
        if len(head) < _EXCERPT:
            head += chunk[: _EXCERPT - len(head)]
        total += len(chunk)
        if total >= MAX_RESPONSE_BYTES:
            break  # closing the response then closes the connection instead of reading on
    if isinstance(chunks, AsyncGenerator):
        await chunks.aclose()  # at once, rather than when the garbage collector finds it
    return head
