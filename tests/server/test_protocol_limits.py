"""Request-head limits (`espdetect.server.protocol`) against a real server and raw sockets."""

from __future__ import annotations

import http.client
import json
import re
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress

import httpx
import psutil
import pytest

from espdetect.server.protocol import HeadLimitedProtocol, PendingGate
from espdetect.server.settings import ServingSettings

from .conftest import PartReader, ServerThread, wait_until

MIB = 1024 * 1024
#: Generous: the limits keep a flood to tens of kilobytes; this only catches buffering it.
RSS_BOUND = 50 * MIB
FILLER = b"A" * MIB


def _gate(server: ServerThread) -> PendingGate:
    cls = server.server.config.http_protocol_class
    assert isinstance(cls, type) and issubclass(cls, HeadLimitedProtocol)
    return cls.gate


@contextmanager
def _connect(server: ServerThread, timeout: float = 10.0) -> Iterator[socket.socket]:
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        yield sock


def _read_to_eof(sock: socket.socket) -> bytes:
    """Everything until the server closes (a reset after the answer counts as the close)."""
    out = bytearray()
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return bytes(out)
        if not chunk:
            return bytes(out)
        out += chunk


def _first_reply(sock: socket.socket) -> bytes:
    """The first reply's head (a kept-alive connection does not close after it)."""
    out = bytearray()
    while b"\r\n\r\n" not in out:
        chunk = sock.recv(65536)
        if not chunk:
            break
        out += chunk
    return bytes(out)


def _status(reply: bytes) -> int:
    assert reply.startswith(b"HTTP/1.1 "), reply[:80]
    return int(reply[9:12])


#: A head whose last header's value the floods below fill.
FLOOD_HEAD = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: "


def _send_flood(sock: socket.socket, total: int) -> int:
    """Sends a head with a ``total``-byte header, as far as the server lets it; the bytes sent."""
    sent = 0
    try:
        sock.sendall(FLOOD_HEAD)
        while sent < total:
            sock.sendall(FILLER[: min(MIB, total - sent)])
            sent += min(MIB, total - sent)
        sock.sendall(b"\r\n\r\n")
    except (ConnectionResetError, BrokenPipeError):
        pass
    return sent


def _get(path: str, *headers: bytes) -> bytes:
    return b"\r\n".join([f"GET {path} HTTP/1.1".encode(), b"Host: 127.0.0.1", *headers, b"", b""])


@pytest.fixture
def impatient(make_server: Callable[..., ServerThread]) -> ServerThread:
    return make_server(header_timeout=0.5)


@pytest.fixture
def capped(make_server: Callable[..., ServerThread]) -> ServerThread:
    # The default header timeout outlasts the test: the idle connections stay until closed.
    return make_server(max_pending_connections=4)


def test_a_1_mib_header_gets_431_and_a_close(server: ServerThread) -> None:
    with _connect(server) as sock:
        _send_flood(sock, MIB)
        reply = _read_to_eof(sock)
    assert _status(reply) == 431, reply
    assert b"connection: close" in reply


def test_a_64_mib_header_is_cut_off_unread_and_memory_stays_bounded(server: ServerThread) -> None:
    process = psutil.Process()
    before = process.memory_info().rss
    with _connect(server) as sock:
        sent = _send_flood(sock, 64 * MIB)
        reply = _read_to_eof(sock)
    # The server closed long before the end: the rest was refused by the reset, never read.
    assert sent < 64 * MIB
    assert reply == b"" or _status(reply) == 431
    assert process.memory_info().rss - before <= RSS_BOUND
    assert httpx.get(server.url + "/health", timeout=10.0).status_code == 200


def test_too_many_headers_get_431_and_the_limit_itself_passes(server: ServerThread) -> None:
    limit = ServingSettings().max_headers
    # The Host header counts: limit - 1 more make exactly the limit.
    at_limit = [f"X-H{i}: v".encode() for i in range(limit - 1)]
    with _connect(server) as sock:
        sock.sendall(_get("/health", *at_limit, b"X-Last: v"))
        assert _status(_read_to_eof(sock)) == 431
    with _connect(server) as sock:
        sock.sendall(_get("/health", *at_limit))
        assert _status(_first_reply(sock)) == 200


def test_an_oversized_request_line_gets_414(server: ServerThread) -> None:
    with _connect(server) as sock:
        with suppress(ConnectionResetError, BrokenPipeError):
            sock.sendall(b"GET /health?" + b"q" * (64 * 1024) + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        reply = _read_to_eof(sock)
    assert _status(reply) == 414, reply[:200]


def test_a_malformed_request_line_gets_400(server: ServerThread) -> None:
    with _connect(server) as sock:
        sock.sendall(b"NOT AN HTTP REQUEST\r\n\r\n")
        assert _status(_read_to_eof(sock)) == 400


def test_a_slowloris_head_is_closed_after_the_header_timeout(impatient: ServerThread) -> None:
    with _connect(impatient) as half, _connect(impatient) as silent, _connect(impatient) as kept:
        half.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        # A blank line stops uvicorn's keep-alive timer without starting a request.
        kept.sendall(_get("/health"))
        assert _status(_first_reply(kept)) == 200
        kept.sendall(b"\r\n")
        # Closed without an answer, long before the sockets' own 10 s timeout.
        assert _read_to_eof(half) == b""
        assert _read_to_eof(silent) == b""
        assert b"HTTP/1.1" not in _read_to_eof(kept)
    wait_until(lambda: _gate(impatient).count == 0, what="no pending connections left")


def test_kept_alive_requests_start_each_head_afresh(server: ServerThread) -> None:
    limits = ServingSettings()
    # Each head is well within the limits; together they are far beyond both.
    headers = {f"X-H{i}": "v" * 300 for i in range(60)}
    assert sum(len(k) + len(v) for k, v in headers.items()) < limits.max_header_size
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10.0)
    try:
        for _ in range(5):
            conn.request("GET", "/health", headers=headers)
            response = conn.getresponse()
            assert response.status == 200
            response.read()
    finally:
        conn.close()


def test_pipelined_heads_and_a_body_larger_than_the_head_limit_pass(server: ServerThread) -> None:
    big = [f"X-H{i}: ".encode() + b"v" * 300 for i in range(60)]
    body = b'{"conf": 0.3}' + b" " * (64 * 1024)
    patch = (
        b"PATCH /cameras/cam/settings HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    # One send: several heads and a body arrive in the same reads.
    with _connect(server) as sock:
        sock.sendall(_get("/health", *big) * 3 + patch + _get("/health", b"Connection: close"))
        reply = _read_to_eof(sock)
    statuses = [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", reply)]
    assert statuses == [200, 200, 200, 200, 200], reply[:400]


def test_pending_connections_beyond_the_cap_are_refused_and_viewers_unaffected(
    capped: ServerThread,
) -> None:
    gate = _gate(capped)
    with (
        httpx.Client(base_url=capped.url, timeout=10.0) as client,
        client.stream("GET", "/cameras/cam/stream") as viewer,
    ):
        assert viewer.status_code == 200
        parts = PartReader(viewer)
        parts.read(1)
        wait_until(lambda: gate.count == 0, what="the viewer to be past its head")
        with ExitStack() as idle:
            for _ in range(gate.limit):
                idle.enter_context(_connect(capped))
            wait_until(lambda: gate.count == gate.limit, what="the idle connections to be counted")
            for _ in range(2):
                with _connect(capped) as extra:
                    assert _status(_read_to_eof(extra)) == 503
            assert len(parts.read(3)) == 3  # the viewer streams on
        wait_until(lambda: gate.count == 0, what="the idle connections to be released")
    assert httpx.get(capped.url + "/health", timeout=10.0).status_code == 200


def test_health_answers_while_four_clients_flood_64_mib_headers(server: ServerThread) -> None:
    stop = threading.Event()
    floods: list[int] = []

    def flood() -> None:
        while not stop.is_set():
            try:
                with _connect(server) as sock:
                    _send_flood(sock, 64 * MIB)
                    floods.append(1)
            except OSError:
                continue

    threads = [threading.Thread(target=flood, daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: len(floods) >= 8, what="the floods to be under way")
        with httpx.Client(base_url=server.url, timeout=10.0) as client:
            for _ in range(20):
                response = client.get("/health")
                assert response.status_code == 200
                assert json.loads(response.content)["status"] == "ok"
    finally:
        stop.set()
        for thread in threads:
            thread.join(10.0)
