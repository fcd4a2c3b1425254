"""`Emulator`: an ESP32-CAM running the CameraWebServer sketch, served on local TCP ports.

Two raw asyncio servers stand in for the sketch's two esp_http_server instances: the control
server (``/``, ``/status``, ``/control``, ``/capture``) and the stream server (``/stream``), and
write the bytes the firmware writes (docs/esp32-camera-protocol.md). Like the device, the
stream server serves one stream at a time: a second ``/stream`` connection is accepted but
left unanswered until the first ends. Faults (:mod:`espdetect.emulator.faults`) can be set at
start and changed while streams run.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import gzip
import logging
import socket
import struct
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar

from espdetect.emulator._http import (
    MAX_HEAD,
    BadRequest,
    Request,
    chunked_head,
    error_response,
    html_error_page,
    query_value,
    read_request,
    response,
    route_error,
    to_int,
)
from espdetect.emulator.cache import FrameCache
from espdetect.emulator.config import EmulatorConfig
from espdetect.emulator.faults import (
    DEFAULT_OVERSIZE_BYTES,
    PER_FRAME_KINDS,
    Fault,
    FaultKind,
    corrupt_jpeg,
    pad_jpeg,
    truncate_jpeg,
)
from espdetect.emulator.scene import load_scene
from espdetect.emulator.sensor import Sensor
from espdetect.mjpeg import (
    ESP32_STREAM_CONTENT_TYPE,
    esp32_legacy_part,
    esp32_part_pieces,
    format_timestamp,
    http_chunk,
)

__all__ = ["CameraEndpoints", "Emulator", "EmulatorStats"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_DEFAULT_REFUSE_SECONDS = 5.0
_DEFAULT_SLOW_RATE = 20_000
_DEFAULT_WRONG_LENGTH_DELTA = 1000
_ACAO = ("Access-Control-Allow-Origin", "*")
# The 2.x/3.x stream handler sets these after the content type; the 2019 sketch set neither.
_STREAM_HEADERS = (_ACAO, ("X-Framerate", "60"))
_CAPTURE_DISPOSITION = ("Content-Disposition", "inline; filename=capture.jpg")


@dataclass
class EmulatorStats:
    """Counters of an :class:`Emulator`; ``Emulator.stats`` returns a snapshot copy."""

    #: Stream frames written (all streams).
    frames_sent: int = 0
    #: Stream bytes written, HTTP chunk framing included.
    bytes_sent: int = 0
    #: Streams being served right now.
    stream_clients: int = 0
    #: ``/stream`` requests accepted but left unanswered because all stream slots are taken.
    stream_waiting: int = 0
    #: Streams started (responses begun) since the emulator started.
    streams_total: int = 0
    #: TCP connections accepted on either port.
    connections_total: int = 0
    #: Requests answered on the control port.
    control_requests: int = 0
    #: Streams currently held in a STALL.
    stalled_streams: int = 0
    #: Times a fault changed what was sent (per altered frame, stall, drop, error page or reboot).
    faults_injected: int = 0
    #: 1 + the number of completed reboots (REFUSE faults).
    boots: int = 1
    #: True while the emulated camera is rebooting and both ports refuse connections.
    refusing: bool = False
    #: Frames served stale or garbled after a change of size (``sensor_model="ov2640"``).
    bad_frames: int = 0


@dataclass
class _StreamState:
    """Per-stream bookkeeping of fault progress and throttling."""

    version: int
    #: Frames sent since the stream started or the fault set last changed.
    frames: int = 0
    #: Indexes (in the current fault tuple) of one-shot faults this stream already went through.
    fired: set[int] = field(default_factory=set)
    rate: int = 0
    rate_start: float = 0.0
    rate_sent: int = 0

    def restart(self, version: int) -> None:
        self.version = version
        self.frames = 0
        self.fired.clear()


class _SendTimeout(Exception):
    """The client stopped reading for longer than ``send_timeout``."""


class CameraEndpoints(ABC):
    """The URLs of an emulated camera, from its ``host`` and its two ports.

    `Emulator` and `~espdetect.emulator.thread.EmulatorThread` both inherit them, so the
    thread reports exactly the URLs of the emulator it runs.
    """

    host: str

    @property
    @abstractmethod
    def control_port(self) -> int:
        """Port of the control server (``/``, ``/status``, ``/control``, ``/capture``)."""

    @property
    @abstractmethod
    def stream_port(self) -> int:
        """Port of the stream server (``/stream``)."""

    def _address(self, port: int) -> str:
        """``HOST:PORT`` as a URL writes it (an IPv6 host in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{port}"

    def _url(self, port: int, path: str = "") -> str:
        return f"http://{self._address(port)}{path}"

    @property
    def control_url(self) -> str:
        """``http://HOST:PORT`` of the control server."""
        return self._url(self.control_port)

    @property
    def stream_url(self) -> str:
        """``http://HOST:PORT2/stream``."""
        return self._url(self.stream_port, "/stream")

    @property
    def capture_url(self) -> str:
        """``http://HOST:PORT/capture``."""
        return f"{self.control_url}/capture"

    @property
    def status_url(self) -> str:
        """``http://HOST:PORT/status``."""
        return f"{self.control_url}/status"


class Emulator(CameraEndpoints):
    """An emulated ESP32-CAM (CameraWebServer sketch) on two local TCP ports.

    With ``port=0`` both ports are ephemeral; with ``port=P`` the control server listens on P
    and the stream server on P+1 (the device uses 80 and 81). The emulator must be used from
    one event loop; :class:`~espdetect.emulator.thread.EmulatorThread` runs one in the background
    for synchronous code. Every stream starts at frame 0 of the scene loop and counts frames
    sent, not time (frame k of any stream is scene frame k), so what a test sees first is
    deterministic and clips recorded on fresh connections correspond frame by frame;
    X-Timestamp is the time since the emulated boot.

    Example:
        >>> async def main() -> None:
        ...     cfg = EmulatorConfig(fps=15.0, faults=(Fault(FaultKind.DROP_AFTER, frames=10),))
        ...     async with Emulator(cfg) as emu:
        ...         print(emu.stream_url)       # http://127.0.0.1:PORT/stream
        ...         emu.set_faults([Fault(FaultKind.STALL, seconds=3.0)])
        ...         await emu.wait_stream_clients(1)
    """

    def __init__(self, config: EmulatorConfig | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        if not 0 <= port <= 65534:
            raise ValueError(f"expected port 0 (ephemeral) or 1..65534 (stream on port+1), got {port!r}")
        self.config = config if config is not None else EmulatorConfig()
        self.host = host
        self._port = port
        self._control_port = 0
        self._stream_port = 0
        self._stats = EmulatorStats()
        self._faults: tuple[Fault, ...] = self.config.faults
        self._fault_version = 0
        self._faults_changed = asyncio.Event()
        self._refuses_fired: set[tuple[int, int]] = set()
        self._cache: FrameCache | None = None
        self._sensor = _sensor_of(self.config)
        self._servers: list[asyncio.Server] = []
        self._serving_since_boot = False
        self._connections: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}
        self._slots = asyncio.Semaphore(self.config.max_stream_clients)
        self._waiters: list[tuple[Callable[[EmulatorStats], bool], asyncio.Future[EmulatorStats]]] = []
        self._reboot_task: asyncio.Task[None] | None = None
        self._boot = time.monotonic()
        self._index_page = b""
        self._running = False

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the scene and start listening on both ports.

        Raises:
            ConfigurationError: the scene source cannot be read.
            OSError: a port cannot be bound.
        """
        if self._running:
            raise RuntimeError("expected a stopped emulator, got one already running")
        cfg = self.config
        scene = await asyncio.to_thread(
            load_scene,
            cfg.scene,
            cfg.loop_frames,
            fps=cfg.timeline_fps,
            still_seconds=cfg.still_seconds,
            stand_seconds=cfg.stand_seconds,
            noise=cfg.noise,
            brightness_ramp=cfg.brightness_ramp,
        )
        self._cache = FrameCache(scene)
        self._sensor = _sensor_of(cfg)
        if cfg.prerender:
            await self._cache.prerender(self._sensor.view)
        self._boot = time.monotonic() - cfg.uptime
        await self._listen()
        self._running = True
        logger.info("ESP32-CAM emulator on %s (stream %s)", self.control_url, self.stream_url)
        self._fire_immediate_faults()

    async def stop(self) -> None:
        """Stop listening and close every client connection at once."""
        if not self._running:
            return
        self._running = False
        if self._reboot_task is not None:
            self._reboot_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reboot_task
            self._reboot_task = None
        servers, self._servers = self._servers, []
        for server in servers:
            server.close()
        tasks = self._abort_connections(reset=False)
        await asyncio.gather(*tasks, return_exceptions=True)
        for server in servers:
            await server.wait_closed()
        # A closed transport lets go of its socket in a callback of the next loop iteration; the
        # loop may end right after stop() (EmulatorThread), leaving it "unclosed" at exit.
        await asyncio.sleep(0)
        for _, future in self._waiters:
            future.cancel()
        self._waiters.clear()

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def _listen(self) -> None:
        control = await self._start_server("control", self._on_control, self._control_port or self._port)
        try:
            self._control_port = control.sockets[0].getsockname()[1]
            stream_port = self._stream_port or (self._port + 1 if self._port else 0)
            stream = await self._start_server("stream", self._on_stream, stream_port)
        except BaseException:
            control.close()
            raise
        self._stream_port = stream.sockets[0].getsockname()[1]
        self._servers = [control, stream]
        # Until the loop runs once more, nothing can have been accepted (see _fire_refuse).
        self._serving_since_boot = False
        asyncio.get_running_loop().call_soon(self._mark_serving, self._servers)
        self._index_page = _index_page(self._stream_port)

    async def _start_server(
        self,
        role: str,
        handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Coroutine[Any, Any, None]],
        port: int,
    ) -> asyncio.Server:
        try:
            return await asyncio.start_server(handler, self.host, port, limit=MAX_HEAD)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            # asyncio's message shows a socket address tuple; name the server too, the stream's port
            # being one that the user did not type.
            raise OSError(
                exc.errno, f"address {self._address(port)} ({role} server) is already in use"
            ) from exc

    def _mark_serving(self, servers: list[asyncio.Server]) -> None:
        if self._servers is servers:
            self._serving_since_boot = True

    def _abort_connections(self, reset: bool) -> list[asyncio.Task[Any]]:
        tasks = list(self._connections)
        for task, writer in list(self._connections.items()):
            if reset:
                sock = writer.get_extra_info("socket")
                if sock is not None:
                    # Linger 0 makes close() send RST, as a board losing power mid-stream looks to peers.
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            task.cancel()
        return tasks

    # -- public state -------------------------------------------------------------------------

    @property
    def control_port(self) -> int:
        return self._control_port

    @property
    def stream_port(self) -> int:
        return self._stream_port

    @property
    def stats(self) -> EmulatorStats:
        """A snapshot of the counters."""
        return dataclasses.replace(self._stats)

    @property
    def faults(self) -> tuple[Fault, ...]:
        """The active faults."""
        return self._faults

    @property
    def frame_size(self) -> tuple[int, int]:
        """The current (width, height) of streamed frames; ``/control`` framesize changes it."""
        return self._sensor.size

    @property
    def sensor_status(self) -> dict[str, int]:
        """The fields ``/status`` reports right now."""
        return self._sensor.status()

    @property
    def uptime(self) -> float:
        """Seconds since the emulated boot: the clock X-Timestamp reports."""
        return time.monotonic() - self._boot

    def set_faults(self, faults: tuple[Fault, ...] | list[Fault]) -> None:
        """Replace the active faults; running streams see the change before their next frame.

        Frame counts of "after N frames" faults restart from the change. A stream inside a
        STALL resumes when the fault set changes. A REFUSE without ``frames`` reboots at once.
        Call from the emulator's event loop (from other threads use ``EmulatorThread.set_faults``).
        """
        new = tuple(faults)
        if not all(isinstance(f, Fault) for f in new):
            raise TypeError(f"expected Fault values, got {faults!r}")
        self._faults = new
        self._fault_version += 1
        self._faults_changed.set()
        self._faults_changed = asyncio.Event()
        logger.info("faults set: %s", ", ".join(map(str, new)) or "none")
        if self._running:
            self._fire_immediate_faults()

    async def wait_until(
        self, predicate: Callable[[EmulatorStats], bool], timeout: float | None = None
    ) -> EmulatorStats:
        """Wait (without polling) until ``predicate(stats)`` holds; returns that snapshot.

        Raises:
            TimeoutError: ``timeout`` seconds passed first.
        """
        snapshot = self.stats
        if predicate(snapshot):
            return snapshot
        future: asyncio.Future[EmulatorStats] = asyncio.get_running_loop().create_future()
        entry = (predicate, future)
        self._waiters.append(entry)
        try:
            return await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(
                f"expected the emulator state to match within {timeout} s, got {self.stats}"
            ) from None
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(entry)

    async def wait_stream_clients(self, n: int, timeout: float | None = None) -> EmulatorStats:
        """Wait until exactly ``n`` streams are being served."""
        return await self.wait_until(lambda s: s.stream_clients == n, timeout)

    async def wait_frames(self, n: int, timeout: float | None = None) -> EmulatorStats:
        """Wait until at least ``n`` stream frames have been sent in total."""
        return await self.wait_until(lambda s: s.frames_sent >= n, timeout)

    def _notify(self) -> None:
        if not self._waiters:
            return
        snapshot = self.stats
        for predicate, future in list(self._waiters):
            if not future.done() and predicate(snapshot):
                future.set_result(snapshot)

    # -- connections ----------------------------------------------------------------------------

    async def _on_control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._tracked(writer, self._serve_control(reader, writer))

    async def _on_stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._tracked(writer, self._serve_stream_port(reader, writer))

    async def _tracked(self, writer: asyncio.StreamWriter, handler: Coroutine[Any, Any, None]) -> None:
        task = asyncio.current_task()
        assert task is not None
        if self._stats.refusing:  # accepted in the instant the camera went down
            writer.transport.abort()
            writer.close()
            handler.close()
            return
        self._connections[task] = writer
        self._stats.connections_total += 1
        self._notify()
        try:
            await handler
        except asyncio.CancelledError:
            pass  # stop() or a reboot closed this connection
        except (OSError, _SendTimeout) as exc:
            logger.debug("client connection ended: %r", exc)
        except Exception:
            logger.exception("emulator connection handler failed")
        finally:
            self._connections.pop(task, None)
            writer.close()

    async def _serve_control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # esp_http_server keeps connections open between requests unless a handler fails.
        while True:
            request = await _next_request(reader, writer)
            if request is None:
                return
            await _discard_body(reader, request)
            reply, keep_open = await self._control_reply(request)
            self._stats.control_requests += 1
            await _send_reply(writer, reply)
            self._notify()
            if not keep_open:
                return

    async def _control_reply(self, request: Request) -> tuple[bytes, bool]:
        routes = {
            "/": self._index,
            "/status": self._status,
            "/control": self._control,
            "/capture": self._capture,
        }
        status = route_error(request, routes)
        if status is not None:
            return error_response(status), False
        return await routes[request.path](request)

    async def _index(self, request: Request) -> tuple[bytes, bool]:
        return response(self._index_page, "text/html", [("Content-Encoding", "gzip")]), True

    async def _status(self, request: Request) -> tuple[bytes, bool]:
        body = self._sensor.status_json().encode("ascii")
        return response(body, "application/json", [_ACAO]), True

    async def _control(self, request: Request) -> tuple[bytes, bool]:
        variable = query_value(request.query, "var")
        value = query_value(request.query, "val")
        if not request.query or variable is None or value is None:
            return error_response(404), False
        if not self._sensor.set(variable, to_int(value)):
            logger.info("control %s=%s rejected", variable, value)
            return error_response(500), True
        logger.info("control %s=%s", variable, value)
        return response(b"", headers=[_ACAO]), True

    async def _capture(self, request: Request) -> tuple[bytes, bool]:
        assert self._cache is not None
        fps = self.config.fps or 30.0
        index = int(self.uptime * fps) % self._cache.frame_count
        try:
            jpeg = await self._cache.get(index, self._sensor.view)
        except Exception:
            logger.exception("capture failed")
            return error_response(500), True
        headers = [_CAPTURE_DISPOSITION]
        if self.config.firmware != "legacy":
            headers += [_ACAO, ("X-Timestamp", format_timestamp(self.uptime))]
        return response(jpeg, "image/jpeg", headers), True

    async def _serve_stream_port(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await _next_request(reader, writer)
        if request is None:
            return
        status = route_error(request, ("/stream",))
        if status is not None:
            await _send_reply(writer, error_response(status))
            return
        gone = asyncio.ensure_future(_peer_closed(reader))
        try:
            if not await self._take_slot(gone):
                return
            try:
                self._stats.stream_clients += 1
                self._stats.streams_total += 1
                self._notify()
                await _until(self._stream(writer), gone)
            finally:
                self._stats.stream_clients -= 1
                self._slots.release()
                self._notify()
        finally:
            gone.cancel()

    async def _take_slot(self, gone: asyncio.Future[None]) -> bool:
        """Wait for a free stream slot; False if the client left first."""
        self._stats.stream_waiting += 1
        self._notify()
        acquire = asyncio.ensure_future(self._slots.acquire())
        acquired = False
        racing: set[asyncio.Future[Any]] = {acquire, gone}
        try:
            await asyncio.wait(racing, return_when=asyncio.FIRST_COMPLETED)
            acquired = acquire.done() and not acquire.cancelled()
        finally:
            self._stats.stream_waiting -= 1
            self._notify()
            if not acquire.done():
                acquire.cancel()
            elif not acquired and not acquire.cancelled():
                self._slots.release()
        if acquired and gone.done():
            self._slots.release()
            return False
        return acquired

    # -- the stream -----------------------------------------------------------------------------

    def _find(self, kind: FaultKind) -> Fault | None:
        return next((f for f in self._faults if f.kind is kind), None)

    async def _stream(self, writer: asyncio.StreamWriter) -> None:
        # Long: one frame's life (faults, pacing, the sensor, the send) reads best as one loop.
        html = self._find(FaultKind.HTML_ERROR)
        if html is not None:
            self._stats.faults_injected += 1
            writer.write(html_error_page(html.status or 503))
            await self._drain(writer)
            return
        legacy = self.config.firmware == "legacy" or self._find(FaultKind.LEGACY_FRAMING) is not None
        if legacy:
            head = chunked_head(ESP32_STREAM_CONTENT_TYPE)
        else:
            head = chunked_head(ESP32_STREAM_CONTENT_TYPE, _STREAM_HEADERS)
        state = _StreamState(version=self._fault_version)
        await self._send(writer, [head], state)

        assert self._cache is not None
        loop = asyncio.get_running_loop()
        period = self.config.period
        # Seconds the previous frame took (the sensor model's, when longer than fps allows).
        gap = period
        due = loop.time()
        index = 0
        while True:
            if state.version != self._fault_version:
                state.restart(self._fault_version)
            stall: tuple[int, Fault] | None = None
            for i, fault in enumerate(self._faults):
                reached = state.frames >= (fault.frames or 0)
                if fault.kind is FaultKind.DROP_AFTER and reached:
                    logger.info("fault: dropping stream after %d frames", state.frames)
                    self._stats.faults_injected += 1
                    return
                if fault.kind is FaultKind.REFUSE and fault.frames is not None and reached:
                    if self._fire_refuse(i, fault):
                        return
                elif fault.kind is FaultKind.STALL and reached and stall is None and i not in state.fired:
                    stall = (i, fault)
            if stall is not None:
                state.fired.add(stall[0])
                await self._stall(stall[1])
                due = loop.time()
                continue

            if gap:
                now = loop.time()
                if due > now:
                    await asyncio.sleep(due - now)
                elif now - due > gap:
                    due = now  # fell behind (slow client): skip frames rather than burst

            jpeg = await self._sensor_frame(index)
            index += 1
            gap = max(period, self._sensor.frame_interval(len(jpeg)))
            due += gap
            pieces = self._frame_pieces(jpeg, state.frames + 1, legacy)
            await self._send(writer, [http_chunk(p) for p in pieces], state)
            state.frames += 1
            self._stats.frames_sent += 1
            self._notify()
            if not gap:
                await asyncio.sleep(0)  # unpaced: let other connections run between frames

    async def _sensor_frame(self, index: int) -> bytes:
        """Frame ``index`` of the scene as the sensor delivers it now (a bad one after a size change)."""
        assert self._cache is not None
        bad = self._sensor.next_bad_frame()
        if bad is None:
            return await self._cache.get(index, self._sensor.view)
        self._stats.bad_frames += 1
        jpeg = await self._cache.get(index, bad.view)
        return corrupt_jpeg(jpeg) if bad.kind == "garbled" else jpeg

    def _frame_pieces(self, jpeg: bytes, number: int, legacy: bool) -> tuple[bytes, bytes, bytes]:
        """The three chunk payloads of frame ``number`` (1-based), with per-frame faults applied."""
        body = jpeg
        delta = 0
        for fault in self._faults:
            if fault.kind not in PER_FRAME_KINDS or number % fault.every:
                continue
            self._stats.faults_injected += 1
            if fault.kind is FaultKind.OVERSIZE:
                body = pad_jpeg(body, fault.size or DEFAULT_OVERSIZE_BYTES)
            elif fault.kind is FaultKind.CORRUPT_JPEG:
                body = corrupt_jpeg(body)
            elif fault.kind is FaultKind.TRUNCATED_JPEG:
                body = truncate_jpeg(body, fault.size)
            elif fault.kind is FaultKind.WRONG_LENGTH:
                delta += _DEFAULT_WRONG_LENGTH_DELTA if fault.delta is None else fault.delta
        if legacy:
            head, first, last = esp32_legacy_part(body)
            pieces = (_relength(head, len(body), delta), first, last)
        else:
            first, head, last = esp32_part_pieces(body, self.uptime)
            pieces = (first, _relength(head, len(body), delta), last)
        return pieces

    async def _stall(self, fault: Fault) -> None:
        logger.info("fault: stalling stream for %s s", fault.seconds if fault.seconds is not None else "ever")
        self._stats.stalled_streams += 1
        self._stats.faults_injected += 1
        self._notify()
        try:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._faults_changed.wait(), fault.seconds)
        finally:
            self._stats.stalled_streams -= 1
            self._notify()

    async def _send(self, writer: asyncio.StreamWriter, data: list[bytes], state: _StreamState) -> None:
        slow = self._find(FaultKind.SLOW)
        if slow is None:
            for piece in data:
                writer.write(piece)
            await self._drain(writer)
        else:
            await self._send_throttled(writer, b"".join(data), slow.rate or _DEFAULT_SLOW_RATE, state)
        self._stats.bytes_sent += sum(map(len, data))

    async def _send_throttled(
        self, writer: asyncio.StreamWriter, data: bytes, rate: int, state: _StreamState
    ) -> None:
        loop = asyncio.get_running_loop()
        step = max(1, rate // 20)
        view = memoryview(data)
        for offset in range(0, len(data), step):
            now = loop.time()
            # A new rate, or idle time since the last write, restarts the budget (no catch-up burst).
            if state.rate != rate or state.rate_start + state.rate_sent / rate < now - 0.05:
                state.rate, state.rate_start, state.rate_sent = rate, now, 0
            due = state.rate_start + state.rate_sent / rate
            if due > now:
                await asyncio.sleep(due - now)
            piece = bytes(view[offset : offset + step])
            writer.write(piece)
            state.rate_sent += len(piece)
            await self._drain(writer)

    async def _drain(self, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.wait_for(writer.drain(), self.config.send_timeout)
        except asyncio.TimeoutError:
            raise _SendTimeout(f"client read nothing for {self.config.send_timeout} s") from None

    # -- reboots ----------------------------------------------------------------------------------

    def _fire_immediate_faults(self) -> None:
        for i, fault in enumerate(self._faults):
            if fault.kind is FaultKind.REFUSE and fault.frames is None:
                self._fire_refuse(i, fault)

    def _fire_refuse(self, index: int, fault: Fault) -> bool:
        """Reboot for ``fault`` unless it already fired under this fault set; True if it fired now."""
        key = (self._fault_version, index)
        if key in self._refuses_fired or self._stats.refusing:
            return False
        self._refuses_fired.add(key)
        seconds = _DEFAULT_REFUSE_SECONDS if fault.seconds is None else fault.seconds
        logger.info("fault: rebooting, refusing connections for %s s", seconds)
        self._stats.refusing = True
        self._stats.faults_injected += 1
        servers, self._servers = self._servers, []
        loop = asyncio.get_running_loop()
        if self._serving_since_boot:
            # Stop accepting first: a connection the loop has accepted but not yet wrapped in a
            # transport when its server closes is left half-built (asyncio leaks it as an
            # "unclosed transport"); the reboot task closes the servers once those are done.
            for server in servers:
                for sock in server.sockets:
                    loop.remove_reader(sock.fileno())
        else:  # nothing was accepted yet (a REFUSE from the start): refuse at once
            for server in servers:
                server.close()
            servers = []
        self._abort_connections(reset=True)
        self._reboot_task = loop.create_task(self._finish_reboot(seconds, servers))
        self._notify()
        return True

    async def _finish_reboot(self, seconds: float, servers: list[asyncio.Server]) -> None:
        try:
            for _ in range(2):  # connections accepted just before: their transports, then handlers
                await asyncio.sleep(0)
        finally:  # stop() may cancel this task: the servers close all the same
            for server in servers:
                server.close()
            self._abort_connections(reset=True)
        await asyncio.sleep(seconds)
        cfg = self.config
        self._sensor = _sensor_of(cfg)
        self._boot = time.monotonic()
        try:
            await self._listen()
        except OSError:
            logger.exception("emulator could not listen again after the reboot; it stays down")
            return
        self._stats.boots += 1
        self._stats.refusing = False
        self._reboot_task = None
        self._notify()


def _sensor_of(config: EmulatorConfig) -> Sensor:
    """The sensor as the camera boots (at power-on and after every reboot)."""
    return Sensor(config.firmware, config.frame_size, config.quality, config.sensor_model)


def _relength(head: bytes, length: int, delta: int) -> bytes:
    if not delta:
        return head
    wrong = max(0, length + delta)
    return head.replace(b"Content-Length: %d\r\n" % length, b"Content-Length: %d\r\n" % wrong, 1)


async def _peer_closed(reader: asyncio.StreamReader) -> None:
    """Return once the client has closed its side (or reset the connection)."""
    with contextlib.suppress(OSError):
        while await reader.read(65536):
            pass


async def _until(work: Coroutine[Any, Any, T], gone: asyncio.Future[None]) -> T | None:
    """Run ``work`` until it ends or ``gone`` completes (then ``work`` is cancelled, giving None)."""
    task = asyncio.ensure_future(work)
    racing: set[asyncio.Future[Any]] = {task, gone}
    try:
        await asyncio.wait(racing, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():
            task.cancel()
            await asyncio.wait({task})
        if not task.cancelled():
            task.exception()  # retrieved here too when we leave by cancellation: no "never retrieved"
    if task.cancelled():
        return None
    return task.result()


async def _next_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Request | None:
    """The next request; None when the client closed the connection or sent one that cannot be read.

    An unreadable request is answered with the error IDF sends for it before None is returned.
    """
    try:
        return await read_request(reader)
    except BadRequest as exc:
        await _send_reply(writer, error_response(exc.status))
        return None


async def _send_reply(writer: asyncio.StreamWriter, reply: bytes) -> None:
    writer.write(reply)
    await writer.drain()


async def _discard_body(reader: asyncio.StreamReader, request: Request) -> None:
    length = to_int(request.headers.get("content-length", "0"))
    if 0 < length <= 1 << 20:
        with contextlib.suppress(asyncio.IncompleteReadError):
            await reader.readexactly(length)


def _index_page(stream_port: int) -> bytes:
    html = (
        '<!DOCTYPE html><html><head><meta charset="utf-8"><title>ESP32-CAM</title></head>'
        '<body><h1>ESP32-CAM (espdetect emulator)</h1><img id="stream" alt="stream">'
        '<p><a href="/capture">capture</a> | <a href="/status">status</a></p>'
        "<script>document.getElementById('stream').src="
        f"location.protocol+'//'+location.hostname+':{stream_port}/stream';</script>"
        "</body></html>"
    )
    # The sketch ships its page gzipped and says so; mtime=0 keeps the bytes reproducible.
    return gzip.compress(html.encode("ascii"), mtime=0)
