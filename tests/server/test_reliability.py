"""Faults the server survives: hostile cameras (emulator faults, scripted sockets) and hostile viewers.

Every test asserts behaviour (recovered, counted, bounded, nothing leaked) with generous safety
timeouts; how fast things happen is measured by benchmarks/bench_reliability.py and soak.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from espdetect.emulator import EmulatorThread, Fault, FaultKind
from espdetect.emulator.faults import corrupt_jpeg, pad_jpeg, truncate_jpeg
from espdetect.mjpeg import (
    ESP32_BOUNDARY,
    ESP32_STREAM_CONTENT_TYPE,
    MultipartParser,
    esp32_part_pieces,
    http_chunk,
)
from espdetect.server.settings import CameraConfig, ServerSettings, load_settings
from espdetect.server.streaming import MJPEG_BOUNDARY
from tests.cli.serve_process import running

from .conftest import BoxDetector, ServerThread, box_detectors, camera_stats, viewer_total, wait_until

# -- raw-socket viewers ------------------------------------------------------------------------


class Dechunker:
    """Undoes HTTP/1.1 chunked transfer coding, incrementally (uvicorn streams chunked)."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._remaining = 0
        self._crlf = False
        self.finished = False

    def feed(self, data: bytes) -> bytes:
        self._buf += data
        out = bytearray()
        while not self.finished:
            if self._remaining:
                take = min(self._remaining, len(self._buf))
                out += self._buf[:take]
                del self._buf[:take]
                self._remaining -= take
                if self._remaining:
                    break
                self._crlf = True
            if self._crlf:
                if len(self._buf) < 2:
                    break
                del self._buf[:2]
                self._crlf = False
            end = self._buf.find(b"\r\n")
            if end < 0:
                break
            size = int(bytes(self._buf[:end]).split(b";")[0], 16)
            del self._buf[: end + 2]
            if size == 0:
                self.finished = True
            self._remaining = size
        return bytes(out)


def _request(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n".encode()


class RawViewer:
    """A stream viewer on a plain socket, in its own thread, optionally reading at ``rate`` B/s."""

    def __init__(self, port: int, path: str, *, rate: int | None = None, rcvbuf: int | None = None) -> None:
        self.sock = socket.socket()
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.connect(("127.0.0.1", port))
        self.sock.sendall(_request(path))
        self.rate = rate
        self.status: int | None = None
        self.headers = b""
        self.parts = 0
        self.part_times: list[float] = []
        self.largest_part = 0
        self.bytes = 0
        self.ended = False
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"viewer {path}")
        self._thread.start()

    def _run(self) -> None:
        head = b""
        dechunk = Dechunker()
        parser = MultipartParser(MJPEG_BOUNDARY)
        self.sock.settimeout(0.1)
        step = 4096 if self.rate is None else max(1, self.rate // 10)
        try:
            while not self._stop.is_set():
                try:
                    data = self.sock.recv(step)
                except TimeoutError:
                    continue
                except OSError:
                    break
                if not data:
                    break
                self.bytes += len(data)
                if self.status is None:
                    head += data
                    if b"\r\n\r\n" not in head:
                        continue
                    self.headers, _, data = head.partition(b"\r\n\r\n")
                    with self._cond:
                        self.status = int(self.headers.split()[1])
                        self._cond.notify_all()
                for part in parser.feed(dechunk.feed(data)):
                    with self._cond:
                        self.parts += 1
                        self.part_times.append(time.monotonic())
                        self.largest_part = max(self.largest_part, len(part.body))
                        self._cond.notify_all()
                if self.rate is not None:
                    self._stop.wait(len(data) / self.rate)
        finally:
            with self._cond:
                self.ended = True
                self._cond.notify_all()

    def wait(self, predicate: Callable[[RawViewer], bool], timeout: float, what: str) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self), timeout):
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")

    def wait_parts(self, n: int, timeout: float = 20.0) -> None:
        self.wait(lambda v: v.parts >= n, timeout, f"{n} parts (got {self.parts}, ended={self.ended})")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5.0)
        self.sock.close()


@contextlib.contextmanager
def viewers(port: int, paths: list[str], **kwargs: Any) -> Iterator[list[RawViewer]]:
    opened = [RawViewer(port, path, **kwargs) for path in paths]
    try:
        yield opened
    finally:
        for viewer in opened:
            viewer.close()


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def start(detectors: list[BoxDetector]) -> Iterator[Callable[..., ServerThread]]:
    """Start a server on any camera URL; keyword arguments go to ServerSettings."""
    started: list[ServerThread] = []

    def make(url: str, **values: Any) -> ServerThread:
        values.setdefault("grace_period", 0.3)
        values.setdefault("stall_timeout", 1.0)
        values.setdefault("backoff_max", 0.3)
        settings = ServerSettings(cameras=[CameraConfig(id="cam", url=url)], **values)
        server = ServerThread(settings, detector_factory=box_detectors(detectors)).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def http(emulator: EmulatorThread) -> Iterator[Callable[[ServerThread], httpx.Client]]:
    clients: list[httpx.Client] = []

    def make(server: ServerThread) -> httpx.Client:
        client = httpx.Client(base_url=server.url, timeout=10.0)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


_RECONNECT_DELAY = re.compile(r"reconnecting in ([0-9.]+) s")


def _reconnect_delays(caplog: pytest.LogCaptureFixture) -> list[float]:
    return [float(m.group(1)) for r in caplog.records if (m := _RECONNECT_DELAY.search(r.getMessage()))]


# -- hostile cameras --------------------------------------------------------------------------


def test_stalled_camera_is_recycled_and_viewers_resume(
    start: Callable[..., ServerThread],
    http: Callable[[ServerThread], httpx.Client],
    emulator: EmulatorThread,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="espdetect")
    server = start(emulator.stream_url, stall_timeout=0.5)
    client = http(server)
    with viewers(server.port, ["/cameras/cam/stream", "/cameras/cam/detect"]) as (raw, annotated):
        raw.wait_parts(3)
        annotated.wait_parts(3)
        emulator.set_faults([Fault(FaultKind.STALL)])  # every stream stalls until the faults change
        wait_until(lambda: camera_stats(client)["stalls"] >= 1, timeout=20.0, what="stall detected")
        stalled_at = raw.parts, annotated.parts
        emulator.set_faults([])
        raw.wait_parts(stalled_at[0] + 5)
        annotated.wait_parts(stalled_at[1] + 5)
        stats = camera_stats(client)
        assert stats["viewers"] == {"raw": 1, "annotated": 1, "sse": 0}  # nobody was dropped
        assert stats["reconnects"] >= 1
        assert not raw.ended and not annotated.ended
    messages = [r.getMessage() for r in caplog.records]
    assert any("no complete frame for 0.5 s" in m for m in messages), messages


def test_rebooting_camera_is_retried_with_capped_backoff(
    start: Callable[..., ServerThread],
    http: Callable[[ServerThread], httpx.Client],
    emulator: EmulatorThread,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="espdetect.sources.mjpeg_stream")
    server = start(emulator.stream_url, backoff_max=0.2)
    client = http(server)
    with viewers(server.port, ["/cameras/cam/stream"]) as (raw,):
        raw.wait_parts(2)
        emulator.set_faults([Fault(FaultKind.REFUSE, seconds=2.0)])
        wait_until(lambda: camera_stats(client)["connect_failures"] >= 3, timeout=20.0, what="refused")
        emulator.wait_until(lambda s: not s.refusing, timeout=20.0)
        before = raw.parts
        raw.wait_parts(before + 5)
        assert emulator.stats.boots == 2
    delays = _reconnect_delays(caplog)
    assert len(delays) >= 3
    assert max(delays) <= 0.2  # capped: never a long sleep while the camera is back


def test_html_error_page_is_a_failed_connection_then_recovery(
    start: Callable[..., ServerThread], http: Callable[[ServerThread], httpx.Client], emulator: EmulatorThread
) -> None:
    server = start(emulator.stream_url)
    client = http(server)
    with viewers(server.port, ["/cameras/cam/stream"]) as (raw,):
        raw.wait_parts(2)
        # Drop the running stream; every new one gets a 503 error page.
        emulator.set_faults([Fault(FaultKind.HTML_ERROR, status=503), Fault(FaultKind.DROP_AFTER, frames=0)])
        wait_until(lambda: camera_stats(client)["connect_failures"] >= 3, timeout=20.0, what="error pages")
        emulator.set_faults([])
        raw.wait_parts(raw.parts + 5)
        assert camera_stats(client)["viewers"]["raw"] == 1


class ScriptedCamera:
    """A loopback "camera" answering the first ``bad`` connections with ``reply``, then streaming JPEGs."""

    def __init__(self, reply: bytes, bad: int, jpeg: bytes) -> None:
        self.reply = reply
        self.bad = bad
        self.jpeg = jpeg
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accept = threading.Thread(target=self._serve, daemon=True)
        self._accept.start()

    def _serve(self) -> None:
        self.listener.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            bad = self.connections <= self.bad
            thread = threading.Thread(target=self._handle, args=(conn, bad), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _handle(self, conn: socket.socket, bad: bool) -> None:
        with conn:
            conn.settimeout(1.0)
            try:
                conn.recv(65536)
                if bad:
                    conn.sendall(self.reply)
                    return
                head = f"HTTP/1.1 200 OK\r\nContent-Type: {ESP32_STREAM_CONTENT_TYPE}\r\n"
                conn.sendall((head + "Transfer-Encoding: chunked\r\n\r\n").encode())
                n = 0
                while not self._stop.is_set():
                    n += 1
                    conn.sendall(b"".join(http_chunk(p) for p in esp32_part_pieces(self.jpeg, n / 20)))
                    self._stop.wait(0.05)
            except OSError:
                return

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream"

    def close(self) -> None:
        self._stop.set()
        self.listener.close()
        self._accept.join(5.0)
        for thread in self._threads:
            thread.join(5.0)


@pytest.fixture
def camera_jpeg(emulator: EmulatorThread) -> bytes:
    return httpx.get(emulator.capture_url, timeout=10.0).content


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello", id="text-plain"
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: 4\r\n\r\n\xff\xd8\xff\xd9",
            id="single-jpeg",
        ),
        pytest.param(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", id="404"),
        pytest.param(b"garbage, not HTTP at all\r\n\r\n", id="not-http"),
    ],
)
def test_wrong_replies_count_as_failures_until_a_real_stream_comes(
    start: Callable[..., ServerThread],
    http: Callable[[ServerThread], httpx.Client],
    camera_jpeg: bytes,
    reply: bytes,
) -> None:
    camera = ScriptedCamera(reply, bad=3, jpeg=camera_jpeg)
    try:
        server = start(camera.url)
        client = http(server)
        with viewers(server.port, ["/cameras/cam/stream"]) as (raw,):
            raw.wait_parts(3)
            assert camera.connections >= 4
            stats = camera_stats(client)
            assert stats["connect_failures"] + stats["reconnects"] >= 3
            assert stats["viewers"]["raw"] == 1
    finally:
        camera.close()


def test_camera_busy_with_another_client_is_waited_for(
    start: Callable[..., ServerThread], http: Callable[[ServerThread], httpx.Client], emulator: EmulatorThread
) -> None:
    # The emulator serves one stream, like the ESP32: a second client is accepted, never answered.
    with httpx.Client(timeout=10.0) as other, other.stream("GET", emulator.stream_url) as held:
        chunks = held.iter_raw()
        next(chunks)
        server = start(emulator.stream_url, connect_timeout=0.4)
        client = http(server)
        with viewers(server.port, ["/cameras/cam/stream"]) as (raw,):
            wait_until(lambda: camera_stats(client)["connect_failures"] >= 2, timeout=20.0, what="timeouts")
            assert raw.parts == 0
            assert emulator.stats.streams_total == 1
            held.close()  # the other client leaves
            raw.wait_parts(3)
            assert camera_stats(client)["viewers"]["raw"] == 1


def test_damaged_frames_are_skipped_counted_and_bounded(
    start: Callable[..., ServerThread], http: Callable[[ServerThread], httpx.Client], emulator: EmulatorThread
) -> None:
    limit = 64 * 1024
    server = start(emulator.stream_url, max_part_size=limit)
    client = http(server)
    with viewers(server.port, ["/cameras/cam/stream", "/cameras/cam/detect"]) as (raw, annotated):
        raw.wait_parts(2)
        emulator.set_faults(
            [
                Fault(FaultKind.TRUNCATED_JPEG, frames=3),
                Fault(FaultKind.OVERSIZE, frames=4, size=512 * 1024),
                Fault(FaultKind.WRONG_LENGTH, frames=5, delta=-300),
                Fault(FaultKind.CORRUPT_JPEG, frames=7),
            ]
        )
        wait_until(
            lambda: all(camera_stats(client)[k] >= 2 for k in ("corrupt", "oversize", "length_mismatch")),
            timeout=30.0,
            what="every kind of damage counted",
        )
        emulator.set_faults([])
        raw.wait_parts(raw.parts + 3)
        annotated.wait_parts(annotated.parts + 3)
        assert raw.largest_part <= limit  # nothing over the maximum part size got through
        stats = camera_stats(client)
        assert stats["viewers"] == {"raw": 1, "annotated": 1, "sse": 0}
        assert stats["reconnects"] == 0  # damaged frames never cost the connection


_JPEG = bytes.fromhex("ffd8ffe000104a46494600010100000100010000ffdb004300") + bytes(range(64)) + b"\xff\xd9"

_damage = st.sampled_from(["ok", "truncated", "corrupt", "oversize", "short-length", "long-length"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=st.lists(_damage, min_size=1, max_size=12), cuts=st.lists(st.integers(1, 5000), max_size=10))
def test_parser_recovers_every_good_frame_after_damaged_ones(plan: list[str], cuts: list[int]) -> None:
    """The camera's damaged parts never swallow a good part that comes after the next boundary."""
    limit = 2048
    stream = bytearray()
    good: list[bytes] = []
    for i, kind in enumerate(plan):
        jpeg = _JPEG[:-2] + i.to_bytes(2, "big") + b"\xff\xd9"
        body, length = jpeg, len(jpeg)
        if kind == "truncated":
            body = truncate_jpeg(jpeg)
            length = len(body)
        elif kind == "corrupt":
            body = corrupt_jpeg(jpeg)
        elif kind == "oversize":
            body = pad_jpeg(jpeg, limit * 3)
            length = len(body)
        elif kind == "short-length":
            length -= 10
        elif kind == "long-length":
            length += 10
        first, head, _ = esp32_part_pieces(body, float(i))
        head = head.replace(b"Content-Length: %d" % len(body), b"Content-Length: %d" % length)
        stream += first + head + body
        if kind in ("ok", "corrupt"):
            good.append(body)
    stream += b"\r\n--" + ESP32_BOUNDARY.encode() + b"\r\n"  # the next part's boundary
    parser = MultipartParser(ESP32_BOUNDARY, max_part_size=limit)
    got = []
    start = 0
    for cut in [*sorted({c for c in cuts if c < len(stream)}), len(stream)]:
        got += [p.body for p in parser.feed(bytes(stream[start:cut]))]
        start = cut
        assert parser.buffered <= limit + 8 * 1024 + 256
    assert all(len(b) <= limit for b in got)
    complete = [b for b in got if b[:2] == b"\xff\xd8" and b[-2:] == b"\xff\xd9"]
    # Every good part comes out whole (one with a lying length is re-cut at the next boundary).
    assert [b for b in complete if b in good] == good
    assert parser.stats.oversize == plan.count("oversize")


# -- hostile viewers ----------------------------------------------------------------------------


def _server_tasks(client: httpx.Client) -> int:
    tasks: int = client.get("/stats").json()["process"]["tasks"]
    return tasks


def _fds() -> int:
    return psutil.Process().num_fds()


async def _abrupt(port: int, i: int) -> str:
    """One hostile connection; which way it ends depends on ``i``."""
    paths = ["/cameras/cam/stream", "/cameras/cam/detect", "/cameras/cam/detections", "/stream/detect"]
    path = paths[i % len(paths)]
    mode = i % 6
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    outcome = "aborted"
    try:
        if mode == 0:
            writer.write(_request(path)[:17])  # mid request line / headers, then FIN
        elif mode == 1:
            writer.write(_request(path)[:30])
            await writer.drain()
            _reset(writer)
            return outcome
        elif mode in (2, 3, 4):
            writer.write(_request(path))
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20.0)
            outcome = head.split()[1].decode()
            if mode == 3 and outcome == "200" and "detections" not in path:
                await asyncio.wait_for(reader.readuntil(b"\xff\xd8"), 20.0)  # mid-frame
            if mode != 2:
                _reset(writer)
                return outcome
        # mode 5: connect and leave without a word
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return outcome


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    # SO_LINGER 0: the close sends RST, the way a crashed client or a dropped Wi-Fi link ends.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _abrupt_batches(port: int, count: int, batch: int) -> dict[str, int]:
    outcomes: dict[str, int] = {}
    for first in range(0, count, batch):
        done = await asyncio.gather(*(_abrupt(port, i) for i in range(first, min(count, first + batch))))
        for outcome in done:
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return outcomes


def _idle(client: httpx.Client, emulator: EmulatorThread) -> None:
    wait_until(lambda: viewer_total(client) == 0, timeout=30.0, what="no viewers")
    emulator.wait_stream_clients(0, timeout=30.0)
    wait_until(lambda: not camera_stats(client)["upstream_open"], timeout=30.0, what="upstream closed")


def test_a_thousand_abrupt_viewers_leave_nothing_behind(
    start: Callable[..., ServerThread], http: Callable[[ServerThread], httpx.Client], emulator: EmulatorThread
) -> None:
    server = start(emulator.stream_url, grace_period=0.2, max_viewers_per_camera=20, max_viewers_total=20)
    client = http(server)
    asyncio.run(_abrupt_batches(server.port, 120, 40))  # warm-up: pools, caches, lazy imports
    _idle(client, emulator)
    tasks, fds, rss = _server_tasks(client), _fds(), psutil.Process().memory_info().rss

    outcomes = asyncio.run(_abrupt_batches(server.port, 1000, 50))

    _idle(client, emulator)
    assert outcomes.get("200", 0) >= 300 and outcomes.get("503", 0) > 0, outcomes
    assert set(outcomes) <= {"200", "503", "aborted"}, outcomes
    stats = camera_stats(client)
    assert stats["viewers_served"] + stats["viewers_rejected"] >= outcomes["200"] + outcomes.get("503", 0)
    wait_until(lambda: _server_tasks(client) <= tasks, timeout=20.0, what=f"at most {tasks} server tasks")
    wait_until(lambda: _fds() <= fds, timeout=20.0, what=f"at most {fds} open fds")
    growth_mb = (psutil.Process().memory_info().rss - rss) / 2**20
    assert growth_mb <= 20.0, f"RSS grew by {growth_mb:.1f} MB"


async def _open_viewers(port: int, n: int) -> tuple[list[int], list[str], list[asyncio.StreamWriter]]:
    async def one() -> tuple[int, str, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(_request("/cameras/cam/stream"))
        head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30.0)).decode("latin-1")
        retry = re.search(r"(?im)^retry-after: *(\d+)", head)
        return int(head.split()[1]), retry.group(1) if retry else "", writer

    results = await asyncio.gather(*(one() for _ in range(n)))
    return [r[0] for r in results], [r[1] for r in results], [r[2] for r in results]


def test_two_hundred_viewers_against_a_limit_of_five(
    start: Callable[..., ServerThread], http: Callable[[ServerThread], httpx.Client], emulator: EmulatorThread
) -> None:
    server = start(emulator.stream_url, max_viewers_per_camera=5, max_viewers_total=5, retry_after=3)
    client = http(server)

    async def scenario() -> tuple[list[int], list[str], int]:
        statuses, retries, writers = await _open_viewers(server.port, 200)
        # Everyone is still connected: the server must answer health checks meanwhile.
        health = await asyncio.to_thread(client.get, "/health")
        assert health.status_code == 200
        streaming = health.json()["viewers"]
        for writer in writers:
            writer.close()
        return statuses, retries, streaming

    statuses, retries, streaming = asyncio.run(scenario())
    assert statuses.count(200) == 5
    assert statuses.count(503) == 195
    assert {r for s, r in zip(statuses, retries, strict=True) if s == 503} == {"3"}
    assert streaming == 5
    _idle(client, emulator)
    assert camera_stats(client)["viewers_rejected"] == 195


def test_a_viewer_reading_one_kilobyte_per_second_is_dropped_alone(
    start: Callable[..., ServerThread], http: Callable[[ServerThread], httpx.Client], emulator: EmulatorThread
) -> None:
    server = start(emulator.stream_url, viewer_timeout=1.0, send_buffer=32 * 1024)
    client = http(server)
    with viewers(server.port, ["/cameras/cam/stream", "/cameras/cam/detect"]) as fast:
        for viewer in fast:
            viewer.wait_parts(2)
        with viewers(server.port, ["/cameras/cam/stream"], rate=1024, rcvbuf=4096) as (slow,):
            wait_until(
                lambda: camera_stats(client)["viewer_timeouts"] == 1, timeout=60.0, what="slow dropped"
            )
            marks = [v.parts for v in fast]
            for viewer, mark in zip(fast, marks, strict=True):
                viewer.wait_parts(mark + 10)  # the others never stopped
            assert slow.parts < marks[0]
        stats = camera_stats(client)
        assert stats["viewers"] == {"raw": 1, "annotated": 1, "sse": 0}
        assert stats["viewer_timeouts"] == 1


def test_sigterm_with_twenty_viewers_stops_and_closes_the_camera(emulator: EmulatorThread) -> None:
    args = [
        "serve", "--camera", f"cam={emulator.stream_url}", "--port", "0",
        "--max-viewers", "20", "--max-viewers-total", "20", "--grace-period", "30",
    ]  # fmt: skip
    with running(args) as (proc, url):
        port = int(url.rsplit(":", 1)[1])
        paths = ["/cameras/cam/stream", "/cameras/cam/detect"] * 10
        with viewers(port, paths) as watching:
            for viewer in watching:
                viewer.wait_parts(1, timeout=60.0)
            assert emulator.stats.stream_clients == 1
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30.0)
            for viewer in watching:
                viewer.wait(lambda v: v.ended, 10.0, "stream ended")
    assert proc.returncode in (0, -signal.SIGTERM)
    emulator.wait_stream_clients(0, timeout=10.0)


def test_stall_watchdog_default_is_at_most_five_seconds() -> None:
    assert ServerSettings().upstream.stall_timeout <= 5.0


def test_new_settings_reach_the_camera_source() -> None:
    from espdetect.server.app import default_source
    from espdetect.sources.mjpeg_stream import MjpegStreamSource

    settings = load_settings(
        None,
        dict(
            cameras=[CameraConfig(id="cam", url="http://127.0.0.1:9/stream")],
            connect_timeout=0.7,
            backoff_max=0.4,
            max_part_size=100_000,
        ),
    )
    source = default_source(settings, settings.camera_settings()[0])
    assert isinstance(source, MjpegStreamSource)
    assert (source.connect_timeout, source.backoff.maximum, source.max_part_size) == (0.7, 0.4, 100_000)
    assert source.stall_timeout == settings.upstream.stall_timeout


def test_a_full_server_still_answers_everything_but_new_streams(
    start: Callable[..., ServerThread], http: Callable[[ServerThread], httpx.Client], emulator: EmulatorThread
) -> None:
    server = start(emulator.stream_url, max_viewers_per_camera=1, max_viewers_total=1, retry_after=4)
    client = http(server)
    with viewers(server.port, ["/cameras/cam/detect"]) as (watching,):
        watching.wait_parts(1)
        for path in ("/stream", "/stream/detect", "/cameras/cam/stream", "/cameras/cam/detections"):
            refused = client.get(path)
            assert refused.status_code == 503, path
            assert refused.headers["retry-after"] == "4"
            assert (
                refused.json()["detail"]
                == "expected at most 1 viewers on camera 'cam', and all 1 places are taken"
            )
        assert client.get("/cameras/nope/stream").status_code == 404
        assert client.get("/cameras/bad%20id/stream").status_code == 422
        assert client.get("/cameras/cam/snapshot").status_code == 200
        assert client.post("/cameras/cam/stream").status_code == 405
        stats = camera_stats(client)
        assert stats["viewers_rejected"] == 4
        assert stats["viewers"]["annotated"] == 1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_malloc_tuning_is_off_by_default_and_applies_on_glibc() -> None:
    assert ServerSettings().serving.tune_malloc is False
    # In a child process: the tuning is process-wide and must not change this test run.
    code = "import sys; from espdetect.server._malloc import tune_malloc; sys.exit(0 if tune_malloc() else 1)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0
