"""`RemoteState`: how a detector whose model runs elsewhere (a Ray Serve deployment) is doing.

A local detector either works or raises. One that sends frames over a network also has a
state between calls: whether the pool answers, how many replicas run, how full their batches
are and what the network adds. The server shows it in ``/stats``, ``/metrics`` and ``/health``.
"""

from __future__ import annotations

from dataclasses import dataclass

from espdetect.stats import Percentiles

__all__ = ["RemoteState"]


@dataclass(frozen=True)
class RemoteState:
    """A snapshot of a remote detector (`espdetect.detectors.base.Detector.remote_state`).

    Example:
        >>> state = detector.remote_state()  # doctest: +SKIP
        >>> state.healthy, state.mean_batch_size  # doctest: +SKIP
        (True, 1.8)
    """

    #: Where the pool is (``ray_address`` as configured) and its application's name.
    address: str
    app: str
    #: False while calls fail or time out; ``reason`` then says why.
    healthy: bool
    reason: str | None
    #: Replicas running, and the deployment's status (HEALTHY, UPDATING, UNHEALTHY), as the pool's
    #: controller last said (None until it answered once).
    replicas_running: int | None
    pool_status: str | None
    #: This process's calls waiting for an answer now.
    in_flight: int
    #: Requests waiting in the answering replica when recent calls arrived there (mean).
    queued: float | None
    #: Frames per model batch in the replicas, over recent calls (mean; > 1 once cameras contend).
    mean_batch_size: float | None
    calls: int
    failures: int
    timeouts: int
    #: Time in the replica per call: its batch wait, decode and model (milliseconds).
    remote_ms: Percentiles
    #: Call to answer as this process sees it; minus ``remote_ms``, what the network and queue add.
    round_trip_ms: Percentiles
    #: Seconds since the last answered call (None: none yet).
    last_answer_age_s: float | None
