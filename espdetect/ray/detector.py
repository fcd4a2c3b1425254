"""`RayDetector`: a `Detector` whose model runs in a Ray Serve deployment shared by many servers.

The server keeps reading cameras, drawing and streaming; only the model calls leave the
process, as each frame's JPEG bytes with that camera's thresholds. Every server pointed at the
same cluster and application name (``ray_app``) shares one pool of replicas, whose batches
gather frames from all of them.

A call that gets no answer within ``timeout`` seconds (a killed replica, a cluster that went
away) raises `DetectorError` like any failed model call: the camera's pipeline keeps
streaming with its last boxes (or raw frames, per ``stale``) and tries again on the next frame,
so detections resume by themselves once Serve has replaced the replica.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

import numpy as np
from ray import serve
from ray.exceptions import RayError
from ray.serve.exceptions import RayServeException
from typing_extensions import Unpack

from espdetect.constraints import Reduce
from espdetect.detections import Detections
from espdetect.detectors.base import DetectKwargs, Detector, DetectParams, ModelInfo
from espdetect.detectors.factory import DetectorBackend
from espdetect.detectors.models import resolve_model
from espdetect.detectors.remote import RemoteState
from espdetect.exceptions import ConfigurationError, DecodeError, DetectorError, ModelLoadError
from espdetect.ray.connection import connect, first_line, release
from espdetect.ray.deployment import (
    DetectorReplica,
    RemoteAnswer,
    RemoteRequest,
    ReplicaSpec,
    deployment_options,
)
from espdetect.stats import SampleWindow

__all__ = ["RayDetector", "RayOptions"]

logger = logging.getLogger(__name__)

#: Seconds a new deployment may take to load its model in every replica.
_DEPLOY_TIMEOUT: Final = 120.0
#: Seconds between questions to the Serve controller about the replicas.
_POLL_EVERY: Final = 2.0
#: Answers the batch and latency statistics are taken over.
_WINDOW: Final = 200


@dataclass(frozen=True)
class RayOptions:
    """Where the detector pool runs and how it is shaped (the ``ray_*`` settings).

    Example:
        >>> RayOptions(address="auto", replicas=2).app
        'espdetect'
    """

    #: "local" (start Ray in this process), "auto" (join the cluster this machine is part of),
    #: "HOST:PORT" (a head node's GCS) or "ray://HOST:PORT" (Ray Client).
    address: str = "local"
    #: The Serve application: servers naming the same one share its replicas.
    app: str = "espdetect"
    replicas: int = 1
    max_batch_size: int = 4
    #: Seconds a replica waits for more requests before running a batch that is not full.
    batch_wait: float = 0.02
    cpus_per_replica: float = 1.0
    gpus_per_replica: float = 0.0
    #: Seconds a model call may take before its frame is let go (the pipeline goes on).
    timeout: float = 2.0


class RayDetector(Detector):
    """A detector that sends each frame to a Ray Serve deployment of ordinary detectors.

    Connecting deploys the pool (``options.replicas`` replicas of ``model`` on ``backend``,
    ``device``) unless the cluster already runs one under ``options.app``, which is then
    shared; its model must be the same. Needs ``pip install espdetect[ray]``.

    Example:
        >>> options = RayOptions(address="auto", replicas=2)
        >>> detector = RayDetector("yolov8n_int8.onnx", options=options)  # doctest: +SKIP
        >>> detector.detect_jpeg(open("bus.jpg", "rb").read()).count_by_label()  # doctest: +SKIP
        {'person': 4, 'bus': 1}
        >>> detector.remote_state().mean_batch_size  # doctest: +SKIP
        1.0
    """

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        options: RayOptions | None = None,
        backend: DetectorBackend = "auto",
        device: str | None = None,
        threads: int | None = None,
        half: bool = False,
        **params: Unpack[DetectKwargs],
    ) -> None:
        self.options = options = options or RayOptions()
        requested = DetectParams(**params)
        self.spec = ReplicaSpec(None if model is None else str(model), backend, device, threads, half)
        self._lock = threading.Lock()
        self._calls = self._failures = self._timeouts = self._in_flight = 0
        self._reason: str | None = None
        self._last_answer: float | None = None
        self._batch_sizes = SampleWindow(_WINDOW)
        self._queued = SampleWindow(_WINDOW)
        self._remote_ms = SampleWindow(_WINDOW)
        self._round_trip_ms = SampleWindow(_WINDOW)
        self._replicas: tuple[int, str] | None = None
        self._stop = threading.Event()
        connect(options.address)
        self._connected = True
        try:
            self._handle = self._deploy_or_join()
            served, served_spec = self._describe()
        except BaseException:
            self._disconnect()
            raise
        # What the replicas loaded, by file name (paths differ between nodes): a replica given no
        # model reads ESPDETECT_MODEL on its own node, which may name another file than ours.
        wanted = Path(resolve_model(self.spec.model)).name
        if Path(served.model).name != wanted or served_spec.backend != self.spec.backend:
            self._disconnect()
            raise ConfigurationError(
                f"expected the Ray application {options.app!r} to run model {wanted!r} on "
                f"{self.spec.backend}, but its replicas run {Path(served.model).name!r} on "
                f"{served_spec.backend}; give this model another ray_app name",
                field="ray_app",
            )
        self._info = replace(served, backend="ray", remote=True)
        self.params = self.check(requested)
        self._poller = threading.Thread(target=self._poll, name="espdetect-ray-status", daemon=True)
        self._poller.start()

    # -- Detector --------------------------------------------------------------------------------

    @property
    def info(self) -> ModelInfo:
        return self._info

    def _detect(self, image: np.ndarray, params: DetectParams) -> Detections:
        return self._call(RemoteRequest(None, image, params), 0)

    def detect_jpeg(self, jpeg: bytes, params: DetectParams | None = None, reduce: Reduce = 1) -> Detections:
        """Send ``jpeg`` to the pool (decoded there at 1/``reduce`` scale); see `Detector.detect_jpeg`."""
        return self._call(RemoteRequest(jpeg, None, self.resolve(params), reduce), len(jpeg))

    def remote_state(self) -> RemoteState:
        with self._lock:
            replicas = self._replicas
            last = self._last_answer
            return RemoteState(
                address=self.options.address,
                app=self.options.app,
                healthy=self._reason is None,
                reason=self._reason,
                replicas_running=None if replicas is None else replicas[0],
                pool_status=None if replicas is None else replicas[1],
                in_flight=self._in_flight,
                queued=self._queued.mean(),
                mean_batch_size=self._batch_sizes.mean(),
                calls=self._calls,
                failures=self._failures,
                timeouts=self._timeouts,
                remote_ms=self._remote_ms.percentiles(),
                round_trip_ms=self._round_trip_ms.percentiles(),
                last_answer_age_s=None if last is None else round(time.monotonic() - last, 3),
            )

    def close(self) -> None:
        """Stop asking about the pool and leave the cluster (the pool stays for other servers;
        with ``address="local"`` the in-process cluster ends with it)."""
        self._stop.set()
        self._disconnect()

    # -- calls -----------------------------------------------------------------------------------

    def _call(self, request: RemoteRequest, nbytes: int) -> Detections:
        with self._lock:
            self._calls += 1
            self._in_flight += 1
        start = time.perf_counter()
        response = None
        try:
            response = self._handle.remote(request)
            answer: RemoteAnswer = response.result(timeout_s=self.options.timeout)
        except TimeoutError:
            if response is not None:
                response.cancel()
            self._failed(f"no answer within {self.options.timeout:g} s", timeout=True)
            raise DetectorError(
                self._info.model, f"the Ray pool gave no answer within {self.options.timeout:g} s"
            ) from None
        except (RayError, RayServeException, RuntimeError, ConnectionError) as exc:
            # A dead replica, one that refuses more work (back-pressure), a cluster that went away.
            self._failed(f"{type(exc).__name__}: {first_line(exc)}", timeout=False)
            raise DetectorError(
                self._info.model, f"the Ray pool failed: {type(exc).__name__}: {first_line(exc)}"
            ) from exc
        finally:
            with self._lock:
                self._in_flight -= 1
        round_trip = (time.perf_counter() - start) * 1000.0
        with self._lock:
            self._reason = None
            self._last_answer = time.monotonic()
            self._batch_sizes.add(answer.batch_size)
            self._queued.add(answer.queued)
            self._remote_ms.add(answer.replica_ms)
            self._round_trip_ms.add(round_trip)
        if answer.error_kind == "decode":
            raise DecodeError(nbytes, answer.error or "corrupt")
        if answer.error_kind == "config":
            raise ConfigurationError(answer.error or "refused by the replica")
        if answer.error_kind is not None:
            raise DetectorError(self._info.model, f"in replica {answer.replica}: {answer.error}")
        return Detections(
            xyxy=answer.xyxy,
            confidence=answer.confidence,
            class_id=answer.class_id,
            names=self._info.names,
            timings=answer.timings,
        )

    def _failed(self, reason: str, *, timeout: bool) -> None:
        with self._lock:
            if self._reason is None:
                logger.warning("Ray pool %s degraded: %s", self.options.app, reason)
            self._reason = reason
            self._failures += 1
            self._timeouts += timeout

    # -- the pool --------------------------------------------------------------------------------

    def _deploy_or_join(self) -> Any:
        options = self.options
        app = serve.status().applications.get(options.app)
        if app is not None and str(app.status) not in ("DEPLOY_FAILED", "DELETING"):
            logger.info("joining the Ray application %s (%s)", options.app, app.status)
            return serve.get_app_handle(options.app)
        logger.info(
            "deploying the Ray application %s: %d replicas of %s",
            options.app,
            options.replicas,
            self.spec.model,
        )
        serve.start(proxy_location="Disabled")
        deployment = serve.deployment(
            **deployment_options(
                options.replicas, options.cpus_per_replica, options.gpus_per_replica, options.max_batch_size
            ),
        )(DetectorReplica)
        bound = deployment.bind(
            self.spec, options.max_batch_size, options.batch_wait, options.cpus_per_replica
        )
        try:
            return serve.run(bound, name=options.app, route_prefix=None)
        except RuntimeError as exc:  # a replica's constructor failed: Serve gave up on the application
            raise ModelLoadError(
                self.spec.model or "bundled", f"the Ray replicas cannot load it: {first_line(exc)}"
            ) from exc

    def _describe(self) -> tuple[ModelInfo, ReplicaSpec]:
        info, spec = self._handle.describe.remote().result(timeout_s=_DEPLOY_TIMEOUT)
        return info, spec

    def _poll(self) -> None:
        while not self._stop.wait(_POLL_EVERY):
            try:
                app = serve.status().applications.get(self.options.app)
            except (RayError, RuntimeError, ConnectionError) as exc:
                logger.debug("Serve status unavailable: %s", exc)
                continue
            deployment = None if app is None else app.deployments.get("detector")
            with self._lock:
                if deployment is None:
                    self._replicas = (0, "MISSING")
                else:
                    running = sum(n for state, n in deployment.replica_states.items() if state == "RUNNING")
                    self._replicas = (running, str(deployment.status))

    def _disconnect(self) -> None:
        if self._connected:
            self._connected = False
            release()
