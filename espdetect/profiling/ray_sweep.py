"""Sweeps on a Ray cluster: every node measures trials, one at a time, on all of its CPUs.

``sweep(..., executor="ray")`` (and ``espdetect profile --ray-address``) hands its (configuration
x repeat) trials to `RayNodes`, which starts one worker (a Ray actor) per node of the cluster:

- **Placement.** Each worker asks for *all* of its node's CPUs (and GPUs, for a device other
  than the CPU) and is pinned to that node (``NodeAffinitySchedulingStrategy``, not soft). An
  actor runs one call at a time, so a node measures one trial at a time, and Ray schedules
  nothing else on the CPUs the worker holds, so no two trials (and no other Ray work) share a
  node's CPUs. An actor rather than a task per trial, because what a trial needs stays loaded
  between trials: the node's detectors (loaded once per model, as the local sweep does) and its
  speed probe (each node has its own speed; a probe measured elsewhere would say nothing about
  it). A placement group per node would reserve the same CPUs with more machinery and still
  need one actor in it. Processes outside Ray still can disturb a run; the busy check
  (``busy_threshold``) sees them, on the node, as it does locally.
- **What travels.** The clips (`ClipData`, the JPEG bytes in memory) go through Ray's object
  store, put once and fetched once per node with the rest of what a worker needs (the
  runner's settings and detector factory), so the nodes need no shared filesystem: only the
  model files, at the same paths, and espdetect installed. A recorded clip is small for the
  object store (the emulator's 151 QVGA frames: 1.4 MB). The reference detections are computed
  once, on the first node's worker, saved by the driver into ``reference/`` (as the local
  sweep does) and put into the object store once; every trial gets that one object, fetched
  once per node.
- **What comes back.** Each trial returns its results row (with ``node``: the node's IP address
  and the first 8 hex digits of its node id) and its frames; the driver appends them to the
  sweep folder as they arrive, so an interrupted sweep resumes as the local one does. Records
  the workers log under ``espdetect`` (a run measured again, a baseline that failed) are
  logged again on the driver, naming the node.
- **Connecting.** ``ray_address``: ``"local"`` starts a new Ray inside this process (all of this
  machine's CPUs: one node), ``"auto"`` joins the cluster running on this machine (``ray
  start``), ``"host:port"`` or ``"ray://host:port"`` a cluster elsewhere; None uses this
  process's Ray connection when there is one, else Ray's own default (``RAY_ADDRESS``, else a
  cluster started on this machine, else a new local one). A connection made here is closed when
  the sweep ends; one that existed (``ray.init`` with a ``runtime_env``, say) is left open.

Ray is imported only when a sweep runs on it: without ``pip install 'espdetect[ray]'``,
``import espdetect.profiling`` works as before and ``executor="ray"`` raises
`ConfigurationError` saying what to install.

Example:
    >>> from espdetect.profiling import grid, sweep
    >>> df = sweep("clips/desk", grid(skip=[1, 2]), "out/desk", executor="ray",  # doctest: +SKIP
    ...            ray_address="auto")
    >>> df.groupby("node")["fps_vs_baseline"].median()  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import pickle
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, Protocol, TypeVar, cast

from espdetect.exceptions import ConfigurationError, EspdetectError

if TYPE_CHECKING:
    from ray import ObjectRef

__all__ = ["START_TIMEOUT_S", "NodeFailure", "NodeRunner", "RayNodes", "RunnerSpec", "import_ray"]

logger = logging.getLogger(__name__)

#: Seconds a node's worker may wait for all of the node's CPUs to be free (other Ray work
#: holding some of them) before the sweep goes on without that node.
START_TIMEOUT_S = 60.0

_T = TypeVar("_T")
_S = TypeVar("_S")
_R = TypeVar("_R")
_X = TypeVar("_X")
_T_contra = TypeVar("_T_contra", contravariant=True)
_S_contra = TypeVar("_S_contra", contravariant=True)
_R_co = TypeVar("_R_co", covariant=True)


class NodeFailure(EspdetectError):
    """A Ray node failed a sweep: its worker died, or a call on it raised an error that cannot
    travel back as itself (``kind`` names that error's type; ``node`` the node)."""

    def __init__(self, kind: str, message: str, node: str) -> None:
        super().__init__(f"{message} (on Ray node {node})")
        self.kind = kind
        self.message = message
        self.node = node

    def __reduce__(self) -> tuple[type[NodeFailure], tuple[str, str, str]]:
        return (NodeFailure, (self.kind, self.message, self.node))

    def __repr__(self) -> str:
        return f"NodeFailure(kind={self.kind!r}, message={self.message!r}, node={self.node!r})"


class NodeRunner(Protocol[_T_contra, _S_contra, _R_co]):
    """What measures trials on one node (built there by `RunnerSpec.start`)."""

    @property
    def info(self) -> Mapping[str, object]:
        """A JSON-serialisable description of the runner (what it chose, what it did)."""
        ...

    def trial(self, trial: _T_contra, shared: _S_contra) -> _R_co:
        """Measure one trial; ``shared`` is the object every trial of the run gets."""
        ...


class RunnerSpec(Protocol[_T_contra, _S_contra, _R_co]):
    """What every node needs to build its runner: pickled once, fetched once per node."""

    def start(self, node: str) -> NodeRunner[_T_contra, _S_contra, _R_co]:
        """The runner of node ``node`` (its label, as the results' ``node`` column holds it)."""
        ...


def import_ray() -> ModuleType:
    """The ``ray`` module, or `ConfigurationError` saying what to install.

    Example:
        >>> ray = import_ray()  # doctest: +SKIP
    """
    try:
        import ray
    except ModuleNotFoundError as exc:
        if exc.name is not None and exc.name != "ray" and not exc.name.startswith("ray."):
            raise
        raise ConfigurationError(
            "expected Ray for executor='ray' (sweeps on a Ray cluster), got no ray module: "
            "pip install 'espdetect[ray]'",
            field="executor",
        ) from exc
    return ray


@dataclass(frozen=True)
class _Node:
    """A node of the cluster that can take a worker."""

    node_id: str
    ip: str
    hostname: str
    cpus: float
    gpus: float

    @property
    def label(self) -> str:
        return f"{self.ip}/{self.node_id[:8]}"


class _Reply(NamedTuple):
    """What a worker's call gives back: its value, the records it logged, or what it raised."""

    value: object
    records: list[tuple[int, str, str]]
    error: Exception | None


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[tuple[int, str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        self.records.append((record.levelno, record.name, text))


@contextmanager
def _captured() -> Iterator[list[tuple[int, str, str]]]:
    """The records logged under ``espdetect`` meanwhile (in a worker: to log on the driver)."""
    handler = _Records()
    package = logging.getLogger("espdetect")
    package.addHandler(handler)
    try:
        yield handler.records
    finally:
        package.removeHandler(handler)


def _travelling(exc: Exception, node: str) -> Exception:
    """``exc`` when it survives pickling (Ray sends it back as itself), else a `NodeFailure`."""
    try:
        copy = pickle.loads(pickle.dumps(exc))
    except Exception:  # an error class whose __init__ does not take its own args back
        copy = None
    if isinstance(copy, Exception):
        return exc
    first = (str(exc).strip().splitlines() or [""])[0]
    return NodeFailure(type(exc).__name__, first, node)


class _NodeWorker:
    """The Ray actor on one node: holds all of its CPUs, runs one call at a time."""

    def __init__(self, node: str, log_level: int) -> None:
        # The driver's level, so the records worth sending back are made at all.
        logging.getLogger("espdetect").setLevel(log_level)
        self._node = node
        self._runner: NodeRunner[Any, Any, Any] | None = None
        self._shared: dict[str, object] = {}
        #: Object ids fetched from the object store (each once on this node).
        self._received: list[str] = []
        self._trials = 0

    def ready(self) -> str:
        return self._node

    def _get(self, ref: ObjectRef[Any]) -> object:
        import ray

        key = ref.hex()
        if key not in self._shared:
            self._shared[key] = ray.get(ref)
            self._received.append(key)
        return self._shared[key]

    def _reply(self, call: Callable[[], object]) -> _Reply:
        with _captured() as records:
            try:
                value = call()
            except Exception as exc:  # sent back to the driver, which raises it there
                logger.debug("call on %s failed", self._node, exc_info=True)
                return _Reply(None, records, _travelling(exc, self._node))
        return _Reply(value, records, None)

    def start(self, spec_box: list[ObjectRef[Any]]) -> _Reply:
        def start() -> object:
            spec = cast("RunnerSpec[Any, Any, Any]", self._get(spec_box[0]))
            self._runner = spec.start(self._node)
            return None

        return self._reply(start)

    def call(self, fn: Callable[[NodeRunner[Any, Any, Any]], object]) -> _Reply:
        assert self._runner is not None
        runner = self._runner
        return self._reply(lambda: fn(runner))

    def trial(self, trial: object, shared_box: list[ObjectRef[Any]]) -> _Reply:
        assert self._runner is not None
        runner = self._runner
        self._trials += 1
        return self._reply(lambda: runner.trial(trial, self._get(shared_box[0])))

    def stats(self) -> dict[str, object]:
        return {
            "node": self._node,
            "trials": self._trials,
            "received": list(self._received),
            "info": dict(self._runner.info) if self._runner is not None else {},
        }


@dataclass
class _Worker:
    node: _Node
    handle: Any


class RayNodes(Generic[_T, _S, _R]):
    """One worker per Ray node, each holding all of its node's CPUs; trials spread over them.

    Use it as a context manager: entering connects (see the module documentation for
    ``address``) and finds the nodes; `start` puts the runner's spec into the object store and
    starts a worker on every node; `run` hands out trials as workers become free. Leaving
    stops the workers and closes a connection made here.

    Example:
        >>> with RayNodes("auto") as nodes:  # doctest: +SKIP
        ...     nodes.start(spec)
        ...     for trial, result in nodes.run(trials, shared=reference):
        ...         print(trial, result)
    """

    def __init__(
        self, address: str | None, *, gpus: bool = False, start_timeout_s: float = START_TIMEOUT_S
    ) -> None:
        self.address = address
        self.gpus = gpus
        self.start_timeout_s = start_timeout_s
        self._ray: ModuleType | None = None
        self._connected_here = False
        self._nodes: list[_Node] = []
        self._workers: list[_Worker] = []
        self._stats: list[dict[str, object]] = []

    def __enter__(self) -> RayNodes[_T, _S, _R]:
        self._ray = import_ray()
        from espdetect.ray.connection import connect

        connect(self.address)
        self._connected_here = True
        try:
            self._nodes = _usable_nodes(self._ray, self.gpus)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def ray(self) -> ModuleType:
        if self._ray is None:
            raise RuntimeError("RayNodes is used inside 'with RayNodes(...) as nodes:' only")
        return self._ray

    @property
    def all_have_gpus(self) -> bool:
        """Whether every node has a GPU (what half precision needs)."""
        return bool(self._nodes) and all(n.gpus > 0 for n in self._nodes)

    def start(self, spec: RunnerSpec[_T, _S, _R]) -> None:
        """Start a worker on every node, which builds its runner from ``spec``.

        Nodes whose CPUs stay taken for ``start_timeout_s`` are left out (with a warning).

        Raises:
            ConfigurationError: ``spec`` cannot be pickled, or no node could start a worker.
            Exception: what building a runner raised on a node (`NodeFailure` when it cannot travel).
        """
        ray = self.ray
        spec_ref = _put(ray, spec, "the sweep's settings, clips and detector factory")
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        level = logging.getLogger("espdetect").getEffectiveLevel()
        actor = ray.remote(_NodeWorker)
        pending = {}
        for node in self._nodes:
            handle = actor.options(
                num_cpus=node.cpus,
                num_gpus=node.gpus,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node.node_id, soft=False),
                max_restarts=0,
            ).remote(node.label, level)
            pending[handle.ready.remote()] = _Worker(node, handle)
        ready, late = ray.wait(list(pending), num_returns=len(pending), timeout=self.start_timeout_s)
        for ref in late:
            worker = pending[ref]
            logger.warning(
                "Ray node %s: its %g CPUs were not free within %.0f s (other Ray work holds them); "
                "the sweep goes on without it",
                worker.node.label,
                worker.node.cpus,
                self.start_timeout_s,
            )
            ray.kill(worker.handle, no_restart=True)
        self._workers = [pending[ref] for ref in ready]
        for ref in ready:
            self._check_started(ref, pending[ref])
        if not self._workers:
            raise ConfigurationError(
                f"expected a Ray node whose CPUs are free for the sweep's trials, got none within "
                f"{self.start_timeout_s:.0f} s (see `ray status`)",
                field="ray_address",
            )
        self._get([w.handle.start.remote([spec_ref]) for w in self._workers], self._workers)
        logger.info(
            "sweep workers on %d Ray node(s): %s",
            len(self._workers),
            ", ".join(w.node.label for w in self._workers),
        )

    def _check_started(self, ref: ObjectRef[Any], worker: _Worker) -> None:
        try:
            self.ray.get(ref)
        except self.ray.exceptions.RayError as exc:
            raise ConfigurationError(
                f"expected a sweep worker to start on Ray node {worker.node.label}, got "
                f"{type(exc).__name__}: {_first_line(exc)} (is espdetect installed there?)",
                field="ray_address",
            ) from exc

    def _get(self, refs: list[ObjectRef[Any]], workers: list[_Worker]) -> list[object]:
        """The values of replies, their records logged here; raises what a call raised."""
        replies = self.ray.get(refs)
        return [self._value(reply, worker) for reply, worker in zip(replies, workers, strict=True)]

    def _value(self, reply: object, worker: _Worker) -> object:
        assert isinstance(reply, _Reply)
        for level, name, text in reply.records:
            logging.getLogger(name).log(level, "%s [Ray node %s]", text, worker.node.label)
        if reply.error is not None:
            raise reply.error
        return reply.value

    def on_first(self, call: Callable[[NodeRunner[_T, _S, _R]], _X]) -> _X:
        """``call(runner)`` on the first node's worker (pickled there); its value.

        Raises:
            Exception: what ``call`` raised there (`NodeFailure` when it cannot travel).
        """
        worker = self._workers[0]
        value = self._value(self.ray.get(worker.handle.call.remote(call)), worker)
        return value  # type: ignore[return-value]

    def on_each(self, call: Callable[[NodeRunner[_T, _S, _R]], _X]) -> list[_X]:
        """``call(runner)`` on every node's worker at once; their values, in the nodes' order.

        Raises:
            Exception: what ``call`` raised on a node (`NodeFailure` when it cannot travel).
        """
        values = self._get([w.handle.call.remote(call) for w in self._workers], self._workers)
        return values  # type: ignore[return-value]

    def run(self, trials: Iterable[_T], shared: _S) -> Iterator[tuple[_T, _R]]:
        """Measure ``trials`` on the nodes, one at a time per node; yield each as it finishes.

        ``shared`` goes into the object store once; every trial gets it (fetched once per node).
        Trials of a node whose worker dies go to the other nodes.

        Raises:
            NodeFailure: every node's worker died.
            Exception: what a trial raised on its node (runners turn failed runs into rows).
        """
        ray = self.ray
        shared_ref = _put(ray, shared, "the object shared by every trial")
        queue = deque(trials)
        idle = list(self._workers)
        running: dict[Any, tuple[_Worker, _T]] = {}
        while queue or running:
            while queue and idle:
                worker, trial = idle.pop(0), queue.popleft()
                running[worker.handle.trial.remote(trial, [shared_ref])] = (worker, trial)
            done, _ = ray.wait(list(running), num_returns=1)
            worker, trial = running.pop(done[0])
            try:
                reply = ray.get(done[0])
            except ray.exceptions.RayActorError as exc:
                self._lose(worker, exc)
                queue.appendleft(trial)
                continue
            idle.append(worker)
            yield trial, self._value(reply, worker)  # type: ignore[misc]

    def _lose(self, worker: _Worker, exc: Exception) -> None:
        self._workers.remove(worker)
        logger.warning("Ray node %s left the sweep: %s", worker.node.label, _first_line(exc))
        if not self._workers:
            raise NodeFailure(type(exc).__name__, "every Ray node of the sweep was lost", worker.node.label)

    def describe(self) -> dict[str, object]:
        """What environment.json records: the address and every node with a worker."""
        return {
            "address": self.address,
            "nodes": [
                {
                    "node": w.node.label,
                    "node_id": w.node.node_id,
                    "ip": w.node.ip,
                    "hostname": w.node.hostname,
                    "cpus": w.node.cpus,
                    "gpus": w.node.gpus,
                }
                for w in self._workers
            ],
        }

    def stats(self) -> list[dict[str, object]]:
        """Each worker's node, trials measured, objects fetched and runner info (kept after `close`)."""
        if self._workers and self._ray is not None:
            try:
                self._stats = [
                    s
                    for s in self.ray.get([w.handle.stats.remote() for w in self._workers])
                    if isinstance(s, dict)
                ]
            except self.ray.exceptions.RayError as exc:
                logger.warning("no statistics from the sweep's Ray workers: %s", _first_line(exc))
        return list(self._stats)

    def close(self) -> None:
        """Stop the workers; close the connection if it was made here."""
        if self._ray is None:
            return
        ray, self._ray = self._ray, None
        for worker in self._workers:
            try:
                ray.kill(worker.handle, no_restart=True)
            except Exception as exc:  # a worker already gone; the others are still stopped
                logger.debug("stopping the worker on %s: %s", worker.node.label, exc)
        self._workers = []
        if self._connected_here:
            from espdetect.ray.connection import release

            self._connected_here = False
            release()


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _usable_nodes(ray: ModuleType, gpus: bool) -> list[_Node]:
    """The cluster's live nodes with CPUs (a head node started with ``--num-cpus=0`` has none)."""
    nodes = []
    for entry in ray.nodes():
        resources = entry.get("Resources") or {}
        cpus = float(resources.get("CPU", 0.0))
        if not entry.get("Alive") or cpus < 1:
            continue
        nodes.append(
            _Node(
                node_id=str(entry["NodeID"]),
                ip=str(entry.get("NodeManagerAddress", "")),
                hostname=str(entry.get("NodeManagerHostname", "")),
                cpus=cpus,
                gpus=float(resources.get("GPU", 0.0)) if gpus else 0.0,
            )
        )
    if not nodes:
        raise ConfigurationError(
            "expected a Ray cluster with a live node that has CPUs, got none (see `ray status`)",
            field="ray_address",
        )
    return nodes


def _put(ray: ModuleType, value: object, what: str) -> ObjectRef[Any]:
    try:
        return ray.put(value)  # type: ignore[no-any-return]
    except (TypeError, AttributeError, pickle.PicklingError) as exc:
        raise ConfigurationError(
            f"expected {what} to be picklable for the Ray nodes (a module-level detector_factory, "
            f"or the default one), got {_first_line(exc)}",
            field="detector_factory",
        ) from exc
