"""`create_app`: the FastAPI application, and `StreamingServer`: uvicorn that ends streams on shutdown.

The app factory stays small on purpose: it wires the lifespan (which builds the `CameraHub`
and the per-app metrics registry), the routers, the exception handlers that turn domain
errors into HTTP answers, and the middleware: from the outside in, the `HostGuard` (Host must be
an allowed host: DNS rebinding), CORS (``cors_origins``), the `RequestGuard` (body limit,
foreign-origin writes), authentication (`AuthMiddleware`, when a password or token hash is
configured) and the `ViewerGate` (cheap 503s beyond the viewer limits).
"""

from __future__ import annotations

import errno
import json
import logging
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TypedDict

import anyio
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from prometheus_client.registry import CollectorRegistry

import espdetect
from espdetect.detectors.base import Detector
from espdetect.encoders.base import Encoder
from espdetect.exceptions import ConfigurationError
from espdetect.server import control
from espdetect.server._malloc import tune_malloc
from espdetect.server.auth import Authenticator, AuthMiddleware, login_router, session_router
from espdetect.server.camera import EncoderFactory, SourceFactory, camera_params
from espdetect.server.errors import (
    EventNotFound,
    EventsOff,
    NoFrameAvailable,
    SafeJSONResponse,
    UnknownCamera,
    ViewerLimitReached,
    jsonable,
)
from espdetect.server.event_routes import router as event_router
from espdetect.server.event_service import EventService, check_event_labels, describe_sinks
from espdetect.server.gate import ViewerGate
from espdetect.server.guard import RequestGuard
from espdetect.server.hosts import AllowedHosts, HostGuard, local_url
from espdetect.server.hub import CameraHub, DetectorFactory
from espdetect.server.metrics import make_registry
from espdetect.server.notify import EventSink
from espdetect.server.protocol import HeadLimits, limited_protocol
from espdetect.server.routes import router
from espdetect.server.settings import CameraConfig, DetectorSettings, ServerSettings
from espdetect.server.stats import hub_stats
from espdetect.sources.base import FrameSource

__all__ = [
    "AppState",
    "SinkFactory",
    "StreamingServer",
    "check_event_store",
    "create_app",
    "default_detector",
    "default_encoder",
    "default_sinks",
    "default_source",
    "end_streams",
    "load_detector",
]

logger = logging.getLogger(__name__)


class AppState(TypedDict):
    """What the lifespan puts in ``request.state``."""

    hub: CameraHub
    settings: ServerSettings
    registry: CollectorRegistry


def default_detector(settings: DetectorSettings) -> Detector:
    """The model every camera shares, on the configured backend (loads it: blocking).

    With ``backend = "ray"`` the model runs in a Ray Serve deployment (`espdetect.ray`), deployed
    here unless the cluster already runs the application, which this server then shares.
    """
    if settings.backend == "ray":
        from espdetect.ray import RayDetector, RayOptions

        options = RayOptions(
            address=settings.ray_address,
            app=settings.ray_app,
            replicas=settings.ray_replicas,
            max_batch_size=settings.ray_max_batch_size,
            batch_wait=settings.ray_batch_wait,
            cpus_per_replica=settings.ray_cpus_per_replica,
            gpus_per_replica=settings.ray_gpus_per_replica,
            timeout=settings.ray_timeout,
        )
        return RayDetector(
            settings.model,
            options=options,
            device=settings.device,
            threads=settings.threads,
            half=settings.half,
        )
    from espdetect.detectors.factory import open_detector

    return open_detector(
        settings.model,
        backend=settings.backend,
        device=settings.device,
        threads=settings.threads,
        half=settings.half,
    )


def load_detector(settings: ServerSettings, factory: DetectorFactory = default_detector) -> Detector:
    """The model every camera shares, loaded and checked against each camera's params.

    A command line calls this before starting the server, so a model that cannot load or a size
    it cannot take is one clear error instead of a failed start-up.

    Raises:
        ModelLoadError: the model cannot be loaded.
        ConfigurationError: a camera's settings do not fit the model (``field`` says which), or
            with events on, a label is not one of its classes.
    """
    detector = factory(settings.detector)
    try:
        names = list(detector.info.names.values())
        for camera in settings.camera_settings():
            detector.check(camera_params(camera))
            if settings.events_enabled:
                check_event_labels(camera.id, camera.labels, names)
    except ConfigurationError:
        detector.close()
        raise
    return detector


def check_event_store(settings: ServerSettings) -> None:
    """With events on, open and close the event store once, so that a data directory that cannot
    be written (or holds a newer schema) is one clear error before the server starts.

    Raises:
        ConfigurationError: the data directory cannot be created or written.
        UnsupportedSchema: its database was written by a newer espdetect.
    """
    if settings.events_enabled:
        EventService.open(settings).store.close()


def default_source(server: ServerSettings, camera: CameraConfig) -> FrameSource:
    """An `MjpegStreamSource` on the camera's URL."""
    from espdetect.sources.mjpeg_stream import MjpegStreamSource

    return MjpegStreamSource(
        camera.url,
        source_id=camera.id,
        stall_timeout=server.upstream.stall_timeout,
        connect_timeout=server.upstream.connect_timeout,
        backoff_max=server.upstream.backoff_max,
        max_part_size=server.upstream.max_part_size,
    )


#: The places events go besides the store, built from the settings.
SinkFactory = Callable[[ServerSettings], list[EventSink]]


def default_sinks(settings: ServerSettings) -> list[EventSink]:
    """An `MqttSink` when ``mqtt_url`` is set and a `WebhookSink` when webhook URLs are."""
    sinks: list[EventSink] = []
    if settings.mqtt.mqtt_url is not None:
        from espdetect.server.mqtt import MqttSink

        labels = {cam.id: cam.labels for cam in settings.camera_settings()}
        sinks.append(MqttSink(settings.mqtt, labels=labels))
    if settings.webhooks.webhook_urls:
        from espdetect.server.webhooks import WebhookSink

        sinks.append(WebhookSink(settings.webhooks))
    return sinks


def default_encoder(quality: int) -> Encoder:
    """An `JpegEncoder` at ``quality``."""
    from espdetect.encoders.jpeg import JpegEncoder

    return JpegEncoder(quality)


def create_app(
    settings: ServerSettings | None = None,
    *,
    detector_factory: DetectorFactory = default_detector,
    source_factory: SourceFactory = default_source,
    encoder_factory: EncoderFactory = default_encoder,
    sink_factory: SinkFactory = default_sinks,
) -> FastAPI:
    """The espdetect server as an ASGI app; resources are created by its lifespan.

    Args:
        settings: server settings; by default read from ``ESPDETECT_*`` variables.
        detector_factory: loads the model every camera shares (called in a worker thread).
        source_factory: opens a camera's source each time a first viewer arrives.
        encoder_factory: builds the annotated stream's JPEG encoder for a quality.
        sink_factory: the places events go besides the store (MQTT, webhooks), when events are on.

    Example:
        >>> app = create_app(ServerSettings(cameras=["cam=http://192.168.4.1:81/stream"]))
        >>> # uvicorn.run(app) - or StreamingServer(app, settings).run() to end streams on Ctrl-C
    """
    # Long: the app is assembled in one place (lifespan, middleware, routes) so its order is visible.
    settings = settings if settings is not None else ServerSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[AppState]:
        events = None
        if settings.events_enabled:
            events = await anyio.to_thread.run_sync(EventService.open, settings, sink_factory(settings))
            logger.info("events on: to %s", describe_sinks(settings))
        hub = await CameraHub.open(settings, detector_factory, source_factory, encoder_factory, events)
        async with hub:
            # Also on app.state: the server's shutdown hook runs outside any request.
            app.state.hub = hub
            try:
                registry = make_registry(lambda: hub_stats(hub, authenticator.stats()))
                yield {"hub": hub, "settings": settings, "registry": registry}
            finally:
                app.state.hub = None
        logger.info("all cameras closed")

    app = FastAPI(
        title="espdetect",
        version=espdetect.__version__,
        description="Real-time object detection on ESP32-CAM video.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.hub = None
    app.include_router(router)
    app.include_router(event_router)
    app.include_router(session_router)
    app.include_router(control.router)
    # Added innermost first: a request meets the host check, CORS, the guard, authentication, then
    # the gate.
    app.add_middleware(ViewerGate, retry_after=settings.viewers.retry_after)
    authenticator = Authenticator(settings.auth)
    app.state.authenticator = authenticator
    if authenticator.enabled:
        app.include_router(login_router)
        app.add_middleware(AuthMiddleware, authenticator=authenticator)
    origins = settings.auth.cors_origins
    hosts = AllowedHosts.for_server(settings.host, settings.auth.allowed_hosts)
    app.add_middleware(
        RequestGuard,
        max_body_size=settings.serving.max_body_size,
        allowed_origins=origins,
        allowed_hosts=hosts,
    )
    if origins:
        explicit = "*" not in origins
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            # Browsers refuse credentials with "*"; an explicit list may send cookies and Basic.
            allow_credentials=explicit,
            allow_methods=["GET", "POST", "PATCH", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "X-Requested-With"],
            expose_headers=["Retry-After", "X-Timestamp", "WWW-Authenticate"],
            max_age=600,
        )
    app.add_middleware(HostGuard, hosts=hosts)
    if hosts.any_host or settings.host in ("0.0.0.0", "::", ""):
        # On every interface the server is reached under names it cannot guess: say which it takes.
        logger.info("answering requests whose Host is %s; add names with allowed_hosts", hosts.describe())
    app.add_exception_handler(UnknownCamera, _not_found)
    app.add_exception_handler(EventsOff, _not_found)
    app.add_exception_handler(EventNotFound, _not_found)
    app.add_exception_handler(ViewerLimitReached, _limit_reached)
    app.add_exception_handler(NoFrameAvailable, _no_frame)
    app.add_exception_handler(ConfigurationError, _setting_rejected)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    return app


def end_streams(app: FastAPI) -> None:
    """End every viewer stream of ``app`` now (the server is stopping)."""
    hub: CameraHub | None = getattr(app.state, "hub", None)
    if hub is not None:
        hub.begin_shutdown()


async def _not_found(request: Request, exc: Exception) -> JSONResponse:
    return SafeJSONResponse({"detail": str(exc)}, status_code=404)


async def _limit_reached(request: Request, exc: Exception) -> JSONResponse:
    settings: ServerSettings = request.app.state.settings
    return SafeJSONResponse(
        {"detail": str(exc)}, status_code=503, headers={"Retry-After": str(settings.viewers.retry_after)}
    )


async def _no_frame(request: Request, exc: Exception) -> JSONResponse:
    return SafeJSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "1"})


async def _setting_rejected(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ConfigurationError)
    # The same shape as FastAPI's own validation errors, so clients handle one format.
    detail = [{"type": "value_error", "loc": ["body", exc.field or "body"], "msg": exc.message}]
    return SafeJSONResponse({"detail": detail}, status_code=422)


_MAX_ECHO = 200


def _echo(value: object) -> object:
    """``value`` fit for a JSON error (`jsonable`) if it stays small there, else None."""
    # Shallow: deeper input is never short enough to echo, and nothing deep is walked.
    echoed = jsonable(value, depth=4)
    text = json.dumps(echoed, ensure_ascii=False)
    return echoed if echoed is not None and len(text) <= _MAX_ECHO else None


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    # FastAPI's own handler echoes every input as it came, and a hostile client's non-finite number
    # (JSON has no Infinity, but Python's parser takes it), huge integer or lone UTF-16 surrogate
    # ("\ud800" is valid JSON, not encodable as UTF-8) would turn the 422 into a 500. Every part
    # of the answer goes through `jsonable`, and `SafeJSONResponse` renders it again the same way.
    assert isinstance(exc, RequestValidationError)
    detail = []
    for error in exc.errors():
        item: dict[str, object] = {
            "type": str(error.get("type", "value_error")),
            "loc": [part if isinstance(part, int) else str(part) for part in error.get("loc", ())],
            "msg": str(error.get("msg", "invalid value")),
        }
        echoed = _echo(error.get("input"))
        if echoed is not None:
            item["input"] = echoed
        detail.append(jsonable(item))
    return SafeJSONResponse({"detail": detail}, status_code=422)


class StreamingServer(uvicorn.Server):
    """uvicorn's server, ending viewer streams the moment shutdown begins.

    uvicorn's graceful shutdown waits for open responses, and MJPEG streams never finish on
    their own; ending them first lets Ctrl-C / SIGTERM stop the process within a second.
    Request heads are bounded in size, header count, time and pending connections
    (`espdetect.server.protocol`, from the ``[serving]`` settings).

    Example:
        >>> settings = ServerSettings(cameras=["http://192.168.4.1:81/stream"])  # doctest: +SKIP
        >>> StreamingServer(create_app(settings), settings).run()
    """

    def __init__(
        self,
        app: FastAPI,
        settings: ServerSettings,
        *,
        host: str | None = None,
        port: int | None = None,
        on_started: Callable[[StreamingServer], None] | None = None,
    ) -> None:
        serving = settings.serving
        config = uvicorn.Config(
            app,
            host=settings.host if host is None else host,
            port=settings.port if port is None else port,
            log_config=None,
            access_log=settings.serving.access_log,
            timeout_graceful_shutdown=max(1, round(settings.serving.shutdown_timeout)),
            lifespan="on",
            http=limited_protocol(
                HeadLimits(
                    max_size=serving.max_header_size,
                    max_headers=serving.max_headers,
                    timeout=serving.header_timeout,
                    max_pending=serving.max_pending_connections,
                )
            ),
        )
        super().__init__(config)
        if settings.serving.tune_malloc:
            tune_malloc()
        self.app = app
        self.on_started = on_started
        self.send_buffer = settings.viewers.send_buffer

    @property
    def bound_port(self) -> int:
        """The port listened on (useful with port 0); 0 before startup."""
        for server in self.servers:
            for sock in server.sockets:
                port: int = sock.getsockname()[1]
                return port
        return 0

    @property
    def url(self) -> str:
        """``http://host:port`` of the running server (127.0.0.1 when listening on every interface)."""
        return local_url(self.config.host, self.bound_port)

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        # Bound here, before the lifespan loads the model: a port in use fails at once, as an
        # OSError the command line reports in one line (uvicorn would log it and exit).
        if sockets is not None:
            await super().serve(sockets)
            return
        with self.bind() as sock:  # closed also when startup fails (a model that cannot load)
            await super().serve([sock])

    def bind(self) -> socket.socket:
        """The listening socket on the configured host and port, with the viewers' send buffer.

        Raises:
            OSError: the address is in use (errno EADDRINUSE, saying which) or cannot be bound.
        """
        host, port = self.config.host, self.config.port
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if self.send_buffer:
                # Linux gives accepted connections the listening socket's buffer size. A small
                # send buffer keeps a slow viewer from queueing seconds of stale frames in the
                # kernel, and makes its blocked sends visible to the quality adaptation sooner.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.send_buffer)
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                raise OSError(errno.EADDRINUSE, f"address {host}:{port} is already in use") from None
            raise
        sock.set_inheritable(True)
        return sock

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self.on_started is not None:
            self.on_started(self)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        end_streams(self.app)
        await super().shutdown(sockets)
