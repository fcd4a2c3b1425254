"""`WebhookSink` against a real HTTP/1.1 receiver on 127.0.0.1 (anyio sockets + h11), in the test's loop.

The receiver records every request and answers as told: 200, an error status, no answer at all
(until the client gives up), or an endless body. Waits poll the sink's counters or the receiver's
records under a generous deadline. The sink's backoff is made tiny; only the Retry-After test
waits (the 1 s the receiver asks for).
"""

from __future__ import annotations

import doctest
import hashlib
import hmac
import itertools
import json
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Literal

import anyio
import h11
import pytest
from anyio.abc import SocketAttribute, SocketStream, TaskStatus
from pydantic import SecretStr

from espdetect.events import Event, EventUpdate, UpdateType
from espdetect.server import webhooks
from espdetect.server.notify import CountMessage, EventMessage
from espdetect.server.settings import WebhookSettings
from espdetect.server.webhooks import WebhookSink, verify_signature

NOW = 1_700_000_000.0
SECRET = "s3cret-key"
#: Generous bound on any wait for something the sink does promptly.
DEADLINE = 10.0


@dataclass(frozen=True)
class Reply:
    """How the receiver answers one request."""

    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b"ok"
    #: "hang": no answer until the client goes away; "flood": 200 with a body that never ends.
    mode: Literal["answer", "hang", "flood"] = "answer"


HANG = Reply(mode="hang")
FLOOD = Reply(mode="flood")


@dataclass(frozen=True)
class Received:
    target: str
    #: Header names in lower case.
    headers: dict[str, str]
    body: bytes
    #: ``anyio.current_time()`` when the request had arrived whole.
    at: float


def _bytes(data: bytes | None) -> bytes:
    assert data is not None
    return data


class Receiver:
    """A real HTTP/1.1 server on 127.0.0.1 and a free port, served by `serve` in a task group.

    It records each request, then answers with the next of ``replies``, or ``default`` when none
    are left.
    """

    def __init__(self, replies: Sequence[Reply] = (), default: Reply = Reply()) -> None:
        self.replies = deque(replies)
        self.default = default
        self.requests: list[Received] = []
        #: Requests whose client went away before an answer came.
        self.abandoned = 0
        #: Endless bodies the client stopped reading.
        self.floods_cut = 0
        self.port = 0
        self._scope = anyio.CancelScope()
        self._closed = anyio.Event()

    @property
    def url(self) -> str:
        assert self.port, "the receiver has no port before it serves"
        return f"http://127.0.0.1:{self.port}/hook"

    async def serve(self, *, task_status: TaskStatus[None]) -> None:
        try:
            with self._scope:
                listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
                async with listener:
                    self.port = listener.extra(SocketAttribute.local_port)
                    task_status.started()
                    await listener.serve(self._connection)
        finally:
            self._closed.set()

    async def stop(self) -> None:
        """Close the port (connections to it are then refused)."""
        self._scope.cancel()
        await self._closed.wait()

    async def _connection(self, stream: SocketStream) -> None:
        async with stream:
            conn = h11.Connection(h11.SERVER)
            try:
                while await self._exchange(stream, conn):
                    conn.start_next_cycle()
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass

    async def _next(self, stream: SocketStream, conn: h11.Connection) -> object:
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            conn.receive_data(await stream.receive())

    async def _exchange(self, stream: SocketStream, conn: h11.Connection) -> bool:
        """Serve one request; whether the connection may carry another."""
        request = await self._next(stream, conn)
        if isinstance(request, h11.ConnectionClosed):
            return False
        assert isinstance(request, h11.Request)
        body = b""
        while not isinstance(event := await self._next(stream, conn), h11.EndOfMessage):
            assert isinstance(event, h11.Data)
            body += event.data
        headers = {name.decode().lower(): value.decode() for name, value in request.headers}
        self.requests.append(Received(request.target.decode(), headers, body, anyio.current_time()))
        reply = self.replies.popleft() if self.replies else self.default
        if reply.mode == "hang":
            try:
                await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                self.abandoned += 1
            return False
        if reply.mode == "flood":
            await self._flood(stream, conn)
            return False
        head = h11.Response(
            status_code=reply.status, headers=[("Content-Length", str(len(reply.body))), *reply.headers]
        )
        await stream.send(
            _bytes(conn.send(head))
            + _bytes(conn.send(h11.Data(data=reply.body)))
            + _bytes(conn.send(h11.EndOfMessage()))
        )
        return conn.our_state is h11.DONE and conn.their_state is h11.DONE

    async def _flood(self, stream: SocketStream, conn: h11.Connection) -> None:
        await stream.send(_bytes(conn.send(h11.Response(status_code=200, headers=[]))))
        chunk = _bytes(conn.send(h11.Data(data=b"x" * 65536)))
        try:
            while True:
                await stream.send(chunk)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            self.floods_cut += 1


def message(
    type: UpdateType = "start", *, event_id: str = "e1", snapshot: bytes | None = None
) -> EventMessage:
    event = Event(
        id=event_id,
        camera="door",
        label="person",
        score=0.9,
        box=(10, 20, 50, 120),
        frame_size=(640, 480),
        start_time=NOW,
        best_time=NOW,
        group_id=event_id,
        end_time=NOW + 5 if type == "end" else None,
        snapshot=snapshot,
    )
    return EventMessage.of(EventUpdate(type, event, notify=type == "start"))


def settings(
    *urls: str, retries: int = 3, timeout: float = 5.0, queue: int = 100, secret: str | None = None
) -> WebhookSettings:
    return WebhookSettings(
        webhook_urls=list(urls),
        webhook_retries=retries,
        webhook_timeout=timeout,
        webhook_queue=queue,
        webhook_secret=None if secret is None else SecretStr(secret),
    )


def fast(config: WebhookSettings) -> WebhookSink:
    """A sink whose waits between attempts are milliseconds."""
    return WebhookSink(config, backoff_base=0.001, backoff_max=0.01)


@asynccontextmanager
async def serving(*receivers: Receiver) -> AsyncIterator[None]:
    """The receivers serving (each on its port from here on); cancelled on the way out."""
    async with anyio.create_task_group() as tg:
        for receiver in receivers:
            await tg.start(receiver.serve)
        yield
        tg.cancel_scope.cancel()


@asynccontextmanager
async def running(sink: WebhookSink) -> AsyncIterator[WebhookSink]:
    """The sink delivering; cancelled on the way out."""
    async with anyio.create_task_group() as tg:
        await tg.start(sink.run)
        yield sink
        tg.cancel_scope.cancel()


async def until(predicate: Callable[[], bool], what: str) -> None:
    """Wait for ``predicate`` (set by sockets and tasks of this loop: nothing to await directly)."""
    try:
        with anyio.fail_after(DEADLINE):
            while not predicate():
                await anyio.sleep(0.005)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def deliveries(receiver: Receiver) -> list[str]:
    return [request.headers["x-espdetect-delivery"] for request in receiver.requests]


def hmac_of(secret: str, timestamp: str, body: bytes) -> str:
    """The signature as a receiver computes it, without espdetect."""
    return "sha256=" + hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


@pytest.mark.anyio
async def test_a_record_is_posted_byte_for_byte_with_its_headers() -> None:
    receiver = Receiver()
    sent = message("start", snapshot=b"\xff\xd8not-in-the-body")
    async with serving(receiver):
        sink = WebhookSink(settings(receiver.url), version="9.9.9")
        assert sink.stats().connected  # before any attempt
        sink.submit(sent)
        assert sink.stats().queued == 1
        async with running(sink):
            await until(lambda: sink.stats().delivered == 1, "the delivery")
    (request,) = receiver.requests
    assert request.body == sent.body
    assert request.target == "/hook"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == "espdetect/9.9.9"
    assert request.headers["x-espdetect-event"] == "start"
    assert request.headers["x-espdetect-delivery"] == "e1:start:1"
    assert "x-espdetect-signature" not in request.headers  # no secret, no signature
    assert "x-espdetect-timestamp" not in request.headers
    document = json.loads(request.body)
    assert document["id"] == "e1" and document["has_snapshot"] is True
    assert b"not-in-the-body" not in request.body
    stats = sink.stats()
    assert (stats.connected, stats.queued, stats.delivered, stats.retries, stats.failed) == (True, 0, 1, 0, 0)


def test_count_messages_and_announcements_are_not_sent() -> None:
    sink = WebhookSink(settings("http://127.0.0.1:9/hook"))
    sink.submit(CountMessage("door", "person", 2))
    sink.announce({"door": ["person"]})
    assert sink.stats().queued == 0


@pytest.mark.anyio
async def test_every_url_gets_every_record_with_one_delivery_id() -> None:
    first, second = Receiver(), Receiver()
    async with serving(first, second), running(WebhookSink(settings(first.url, second.url))) as sink:
        sink.submit(message("start"))
        sink.submit(message("update"))
        sink.submit(message("update"))
        await until(lambda: sink.stats().delivered == 6, "six deliveries")
    expected = ["e1:start:1", "e1:update:2", "e1:update:3"]  # two updates, two ids
    assert deliveries(first) == deliveries(second) == expected


@pytest.mark.anyio
async def test_each_attempt_is_signed_and_the_signature_verifies() -> None:
    receiver = Receiver([Reply(500)])
    ticks = itertools.count(int(NOW), 100)  # every reading of the clock is 100 s later
    async with serving(receiver):
        config = settings(receiver.url, secret=SECRET)
        sink = WebhookSink(config, clock=lambda: float(next(ticks)), backoff_base=0.001, backoff_max=0.01)
        async with running(sink):
            sink.submit(message("end"))
            await until(lambda: sink.stats().delivered == 1, "the delivery")
    first, second = receiver.requests
    assert first.body == second.body
    assert first.headers["x-espdetect-delivery"] == second.headers["x-espdetect-delivery"]
    assert first.headers["x-espdetect-timestamp"] == str(int(NOW))
    assert int(second.headers["x-espdetect-timestamp"]) > int(NOW)  # a fresh timestamp on the retry
    for request in (first, second):
        timestamp = request.headers["x-espdetect-timestamp"]
        signature = request.headers["x-espdetect-signature"]
        assert signature == hmac_of(SECRET, timestamp, request.body)
        assert verify_signature(SECRET, timestamp, request.body, signature, now=int(timestamp) + 10)
    timestamp = first.headers["x-espdetect-timestamp"]
    signature, body = first.headers["x-espdetect-signature"], first.body
    assert not verify_signature("wrong-key", timestamp, body, signature, now=NOW)
    assert not verify_signature(SECRET, timestamp, body + b" ", signature, now=NOW)
    assert not verify_signature(SECRET, str(int(NOW) + 1), body, signature, now=NOW)
    assert not verify_signature(SECRET, timestamp, body, signature, now=NOW + 301)  # a replay
    assert not verify_signature(SECRET, timestamp, body, signature, now=NOW - 301)  # from the future
    assert verify_signature(SECRET, timestamp, body, signature, now=NOW + 3600, tolerance=4000)


@pytest.mark.parametrize(
    ("timestamp", "signature"),
    [
        pytest.param("-1700000000", None, id="negative-timestamp"),
        pytest.param(" 1700000000", None, id="spaced-timestamp"),
        pytest.param("1" * 5000, None, id="huge-timestamp"),
        pytest.param("１７００００００００", None, id="non-ascii-digits"),
        pytest.param("1700000000", "sha256=zz", id="malformed-signature"),
        pytest.param("1700000000", "sha256=\udcff", id="unencodable-signature"),
        pytest.param("1700000000", "", id="empty-signature"),
    ],
)
def test_verify_signature_refuses_malformed_headers(timestamp: str, signature: str | None) -> None:
    body = b"{}"
    good = hmac_of(SECRET, "1700000000", body)
    assert verify_signature(SECRET, "1700000000", body, good, now=NOW)
    assert not verify_signature(SECRET, timestamp, body, good if signature is None else signature, now=NOW)


@pytest.mark.anyio
async def test_server_errors_are_retried_until_one_succeeds() -> None:
    receiver = Receiver([Reply(500), Reply(503), Reply(502)])
    async with serving(receiver), running(fast(settings(receiver.url, retries=3))) as sink:
        sink.submit(message())
        await until(lambda: sink.stats().delivered == 1, "the delivery")
    stats = sink.stats()
    assert (stats.delivered, stats.retries, stats.failed, stats.connected) == (1, 3, 0, True)
    assert deliveries(receiver) == ["e1:start:1"] * 4  # the same id on every attempt


@pytest.mark.anyio
async def test_a_client_error_fails_at_once_and_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    receiver = Receiver([Reply(400, body=b"bad signature")])
    async with serving(receiver):
        url = receiver.url.replace("127.0.0.1", "hook:hunter2@127.0.0.1")
        async with running(fast(settings(url, retries=5, secret=SECRET))) as sink:
            with caplog.at_level(logging.DEBUG):  # httpx and httpcore log too: no secrets there either
                sink.submit(message("start"))
                sink.submit(message("end"))
                await until(lambda: sink.stats().delivered == 1, "the second record")
    stats = sink.stats()
    assert (stats.failed, stats.retries, stats.delivered) == (1, 0, 1)
    assert deliveries(receiver) == ["e1:start:1", "e1:end:2"]  # no retry; the next record went out
    assert receiver.requests[0].headers["authorization"].startswith("Basic ")
    records = [r for r in caplog.records if r.name == webhooks.__name__ and r.levelno >= logging.WARNING]
    assert len(records) == 1
    assert "400" in records[0].getMessage() and "bad signature" in records[0].getMessage()
    assert "hunter2" not in caplog.text and SECRET not in caplog.text
    assert "hook:***@127.0.0.1" in caplog.text


@pytest.mark.anyio
async def test_a_redirect_is_not_followed() -> None:
    receiver = Receiver([Reply(302, headers=(("Location", "/elsewhere"),))])
    async with serving(receiver), running(fast(settings(receiver.url))) as sink:
        sink.submit(message())
        await until(lambda: sink.stats().failed == 1, "the failure")
    assert [r.target for r in receiver.requests] == ["/hook"]
    assert sink.stats().retries == 0


@pytest.mark.anyio
async def test_a_record_fails_when_its_retries_are_used_up() -> None:
    receiver = Receiver(default=Reply(500))
    async with serving(receiver), running(fast(settings(receiver.url, retries=2))) as sink:
        sink.submit(message("start"))
        sink.submit(message("end"))
        await until(lambda: sink.stats().failed == 2, "both failures")
    stats = sink.stats()
    assert (stats.failed, stats.retries, stats.delivered, stats.connected) == (2, 4, 0, False)
    assert deliveries(receiver) == ["e1:start:1"] * 3 + ["e1:end:2"] * 3


@pytest.mark.anyio
async def test_a_stopped_receiver_is_retried_then_given_up() -> None:
    receiver = Receiver()
    async with serving(receiver):
        url = receiver.url
        await receiver.stop()  # connections to its port are refused now
        async with running(fast(settings(url, retries=2))) as sink:
            sink.submit(message())
            await until(lambda: sink.stats().failed == 1, "the failure")
    stats = sink.stats()
    assert (stats.failed, stats.retries, stats.connected, stats.queued) == (1, 2, False, 0)


@pytest.mark.anyio
async def test_a_url_httpx_cannot_use_fails_without_ending_the_deliveries() -> None:
    receiver = Receiver()
    async with serving(receiver):
        # Settings take it (a host and a scheme); httpx refuses the port.
        bad = "http://hook:hunter2@127.0.0.1:99999/hook?token=abc"
        async with running(fast(settings(bad, receiver.url))) as sink:
            sink.submit(message())
            await until(lambda: sink.stats().failed == 1 and sink.stats().delivered == 1, "both outcomes")
    assert sink.stats().retries == 0
    assert deliveries(receiver) == ["e1:start:1"]


@pytest.mark.anyio
async def test_a_receiver_that_never_answers_times_out_and_is_retried() -> None:
    receiver = Receiver([HANG])
    async with serving(receiver), running(fast(settings(receiver.url, timeout=0.2))) as sink:
        sink.submit(message())
        await until(lambda: sink.stats().delivered == 1, "the delivery")
    assert receiver.abandoned == 1  # the sink hung up on the first attempt
    assert sink.stats().retries == 1
    assert deliveries(receiver) == ["e1:start:1"] * 2


@pytest.mark.anyio
async def test_retry_after_of_a_429_is_honoured() -> None:
    receiver = Receiver([Reply(429, headers=(("Retry-After", "1"),))])
    async with serving(receiver), running(fast(settings(receiver.url))) as sink:
        sink.submit(message())
        await until(lambda: sink.stats().delivered == 1, "the delivery")
    first, second = receiver.requests
    # A lower bound only: the backoff alone would have waited about a millisecond.
    assert second.at - first.at >= 0.9
    assert sink.stats().retries == 1


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(None, None, id="absent"),
        pytest.param("3", 3.0, id="seconds"),
        pytest.param("0", 0.0, id="zero"),
        pytest.param("86400", 60.0, id="capped"),
        pytest.param("-5", 0.0, id="negative"),
        pytest.param("Tue, 14 Nov 2023 22:13:40 GMT", 20.0, id="http-date"),
        pytest.param("soon", None, id="garbage"),
        pytest.param("nan", None, id="nan"),
    ],
)
def test_retry_after_values(value: str | None, expected: float | None) -> None:
    assert webhooks._retry_after(value, now=NOW) == expected


@pytest.mark.anyio
async def test_an_endless_answer_is_not_read_to_its_end() -> None:
    receiver = Receiver([FLOOD])
    async with serving(receiver), running(fast(settings(receiver.url))) as sink:
        sink.submit(message())
        await until(lambda: sink.stats().delivered == 1, "the delivery")
        await until(lambda: receiver.floods_cut == 1, "the sink to hang up")
    assert sink.stats().retries == 0


@pytest.mark.anyio
async def test_a_full_outbox_drops_its_oldest_records() -> None:
    receiver = Receiver()
    async with serving(receiver):
        sink = fast(settings(receiver.url, queue=2))
        for i in range(5):
            sink.submit(message(event_id=f"e{i}"))  # before run: nothing is sent yet
        stats = sink.stats()
        assert (stats.queued, stats.dropped) == (2, 3)
        async with running(sink):
            await until(lambda: sink.stats().delivered == 2, "two deliveries")
    assert deliveries(receiver) == ["e3:start:4", "e4:start:5"]
    assert sink.stats().queued == 0


@pytest.mark.anyio
async def test_order_is_kept_per_url_while_a_record_is_retried() -> None:
    receiver = Receiver([Reply(500), Reply(500)])
    async with serving(receiver), running(fast(settings(receiver.url))) as sink:
        sink.submit(message("start"))
        sink.submit(message("update"))
        sink.submit(message("end"))
        await until(lambda: sink.stats().delivered == 3, "three deliveries")
    assert deliveries(receiver) == ["e1:start:1"] * 3 + ["e1:update:2", "e1:end:3"]


@pytest.mark.anyio
async def test_a_url_that_hangs_does_not_delay_another() -> None:
    stuck, healthy = Receiver(default=HANG), Receiver()
    kinds: tuple[UpdateType, ...] = ("start", "update", "end")
    async with serving(stuck, healthy):
        async with running(fast(settings(stuck.url, healthy.url, timeout=60.0))) as sink:
            for kind in kinds:
                sink.submit(message(kind))
            await until(lambda: sink.stats().delivered == 3, "the healthy URL's deliveries")
            await until(lambda: len(stuck.requests) == 1, "the stuck URL's first request")
            # All three reached the healthy URL while the stuck one still holds its first request.
            assert stuck.abandoned == 0
            assert sink.stats().queued == 3  # the stuck URL's: one in flight, two waiting
        await until(lambda: stuck.abandoned == 1, "the stuck POST to be abandoned")
    assert deliveries(healthy) == ["e1:start:1", "e1:update:2", "e1:end:3"]
    assert deliveries(stuck) == ["e1:start:1"]


@pytest.mark.anyio
async def test_cancelling_run_ends_it_promptly_and_abandons_the_post_in_flight() -> None:
    stuck, down = Receiver(default=HANG), Receiver(default=Reply(503))
    done = anyio.Event()
    scope = anyio.CancelScope()

    async def run() -> None:
        with scope:
            await sink.run()
        done.set()

    async with anyio.create_task_group() as tg:
        await tg.start(stuck.serve)
        await tg.start(down.serve)
        # Long timeouts and backoff: only cancellation can end these waits soon.
        sink = WebhookSink(settings(stuck.url, down.url, timeout=300.0), backoff_base=60.0)
        tg.start_soon(run)
        sink.submit(message())
        await until(lambda: len(stuck.requests) == 1 and sink.stats().retries == 1, "both first attempts")
        with anyio.fail_after(5):  # generous: the contract is about one second, it takes milliseconds
            scope.cancel()
            await done.wait()
        await until(lambda: stuck.abandoned == 1, "the stuck receiver to see the POST abandoned")
        tg.cancel_scope.cancel()
    assert sink.stats().queued == 2  # both records held, for a later run


@pytest.mark.anyio
async def test_run_without_urls_waits_for_cancellation() -> None:
    sink = WebhookSink(settings())
    with anyio.move_on_after(0.05) as scope:
        await sink.run()
    assert scope.cancelled_caught
    sink.submit(message())
    assert sink.stats().queued == 0


def test_bad_backoff_is_refused() -> None:
    with pytest.raises(ValueError, match="backoff_base"):
        WebhookSink(settings(), backoff_base=2.0, backoff_max=1.0)


def test_docstring_examples_run() -> None:
    failures, tests = doctest.testmod(webhooks, optionflags=doctest.ELLIPSIS)
    assert tests > 0 and failures == 0
