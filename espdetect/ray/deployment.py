"""The Ray Serve deployment that runs espdetect's ordinary detectors for many servers at once.

Each replica loads the model once (`open_detector`, on the runtime its file type needs) and
answers `RemoteRequest`\\ s: a camera's JPEG bytes (a tenth of the decoded image on the wire)
with that camera's own thresholds and classes. ``@serve.batch`` gathers the requests that
arrive together from every camera of every server into one batch; the replica decodes and
detects them one after another (the shared int8 model's batch dimension is fixed, and batched
int8 scores would depend on the other frames, see decisions.md), so what batching saves is
the per-call hand-offs, not model time. The replica's event loop stays free while a batch
runs, so the next batch gathers meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, replace
from typing import Any, Final

import numpy as np
from ray import serve

from espdetect.constraints import Reduce
from espdetect.detections import StageTimings
from espdetect.detectors.base import Detector, DetectParams, ModelInfo
from espdetect.detectors.factory import DetectorBackend, open_detector
from espdetect.exceptions import ConfigurationError, DecodeError

__all__ = ["DetectorReplica", "RemoteAnswer", "RemoteRequest", "ReplicaSpec"]

logger = logging.getLogger(__name__)

#: Batch limits the class is declared with; each deployment sets its own in the constructor.
_DEFAULT_BATCH: Final = 4
_DEFAULT_WAIT_S: Final = 0.005


@dataclass(frozen=True)
class ReplicaSpec:
    """What each replica loads: the same for every server sharing the deployment."""

    #: Model file on the replicas' nodes; None: the COCO model bundled with espdetect there.
    model: str | None
    backend: DetectorBackend = "auto"
    device: str | None = None
    #: Inference threads per replica; None: the replica's CPUs (``ray_cpus_per_replica``).
    threads: int | None = None
    half: bool = False


@dataclass(frozen=True)
class RemoteRequest:
    """One frame to detect: JPEG bytes (the server's case) or, for a plain `detect`, the image."""

    jpeg: bytes | None
    image: np.ndarray | None
    params: DetectParams
    reduce: Reduce = 1


@dataclass(frozen=True)
class RemoteAnswer:
    """The boxes of one request (full-size pixels), or why there are none, and how it went."""

    xyxy: np.ndarray
    confidence: np.ndarray
    class_id: np.ndarray
    timings: StageTimings | None
    #: "decode" (not a JPEG), "config" (params the model refuses) or "detector"; None: answered.
    error_kind: str | None
    error: str | None
    #: Requests in the batch this one ran in.
    batch_size: int
    #: Requests still waiting in the replica when this batch started.
    queued: int
    replica: str
    #: From arrival in the replica to its answer: batch wait, decode and model.
    replica_ms: float


class DetectorReplica:
    """One replica: a loaded detector behind a batching entry point.

    Deployed by `espdetect.ray.detector.RayDetector` when the cluster does not run it yet; not
    instantiated by hand.
    """

    def __init__(self, spec: ReplicaSpec, max_batch_size: int, batch_wait_s: float, cpus: float) -> None:
        threads = spec.threads if spec.threads is not None else max(1, int(cpus))
        self.spec = spec
        self.detector: Detector = open_detector(
            spec.model, backend=spec.backend, device=spec.device, threads=threads, half=spec.half
        )
        batcher: Any = self._batch  # serve.batch's wrapper has setters its type hints do not show
        batcher.set_max_batch_size(max_batch_size)
        batcher.set_batch_wait_timeout_s(batch_wait_s)
        self.name = serve.get_replica_context().replica_id.unique_id
        self.waiting = 0
        logger.info(
            "replica %s: %s on %s, %d threads",
            self.name,
            self.detector.info.model,
            self.detector.info.device,
            threads,
        )

    def describe(self) -> tuple[ModelInfo, ReplicaSpec]:
        """The loaded model and what was asked for, so a joining server can check it is the same."""
        return self.detector.info, self.spec

    async def __call__(self, request: RemoteRequest) -> RemoteAnswer:
        arrived = time.perf_counter()
        self.waiting += 1
        try:
            answer: RemoteAnswer = await self._batch(request)
        finally:
            self.waiting -= 1
        elapsed = (time.perf_counter() - arrived) * 1000.0
        return replace(answer, replica_ms=elapsed)

    @serve.batch(max_batch_size=_DEFAULT_BATCH, batch_wait_timeout_s=_DEFAULT_WAIT_S)
    async def _batch(self, requests: list[RemoteRequest]) -> list[RemoteAnswer]:
        queued = max(0, self.waiting - len(requests))
        # Off the replica's event loop, so requests keep arriving (and the next batch gathers).
        return await asyncio.to_thread(self._run_batch, requests, queued)

    def _run_batch(self, requests: list[RemoteRequest], queued: int) -> list[RemoteAnswer]:
        return [self._run_one(request, len(requests), queued) for request in requests]

    def _run_one(self, request: RemoteRequest, batch_size: int, queued: int) -> RemoteAnswer:
        kind: str | None = None
        error: str | None = None
        try:
            if request.jpeg is not None:
                detections = self.detector.detect_jpeg(request.jpeg, request.params, request.reduce)
            elif request.image is not None:
                detections = self.detector.detect(request.image, request.params)
            else:
                raise ValueError("expected JPEG bytes or an image, got neither")
        except DecodeError as exc:
            kind, error = "decode", str(exc)
        except ConfigurationError as exc:
            kind, error = "config", str(exc)
        except Exception as exc:  # one frame's failure must not fail the others in its batch
            kind, error = "detector", f"{type(exc).__name__}: {exc}"
        if error is not None:
            empty = np.zeros((0, 4), np.float32)
            return RemoteAnswer(
                empty, np.zeros(0, np.float32), np.zeros(0, np.int64), None, kind, error, batch_size, queued,
                self.name, 0.0,
            )  # fmt: skip
        return RemoteAnswer(
            detections.xyxy,
            detections.confidence,
            detections.class_id,
            detections.timings,
            None,
            None,
            batch_size,
            queued,
            self.name,
            0.0,
        )


def deployment_options(replicas: int, cpus: float, gpus: float, max_batch_size: int) -> dict[str, Any]:
    """`serve.deployment` options for the detector pool.

    Health checks every 2 s (Serve's default is 10 s) so that a hung replica is replaced
    within the 10 s a camera may go without detections.
    """
    return {
        "name": "detector",
        "num_replicas": replicas,
        "ray_actor_options": {"num_cpus": cpus, "num_gpus": gpus},
        # Room for a full batch running and the next one gathering.
        "max_ongoing_requests": max(2 * max_batch_size, 4),
        "health_check_period_s": 2.0,
        "health_check_timeout_s": 10.0,
    }
