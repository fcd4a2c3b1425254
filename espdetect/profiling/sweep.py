"""`sweep`: replay one clip through many configurations and tabulate what each costs and loses.

Every configuration sees exactly the same recorded frames (`espdetect.profiling.replay`).
Runs are ordered per repeat in a seeded random order, so slow drift of the machine (heat,
background work) spreads over all configurations instead of favouring the first ones. Warm-up
frames are processed before each run and left out. Loaded detectors are kept for all
configurations sharing model and precision; input size and confidence are passed with each
call (`DetectParams`). Each finished run is appended to ``results.csv`` at once, so an interrupted sweep
resumes where it stopped.

The machine's speed drifts (this one by ±25 % over minutes, and it switches between two speeds
1.6x apart every few seconds), so every run is bracketed by a speed probe
(`espdetect.profiling.calibration.SpeedProbe`: one detector on the clip's first frame) and, in
fast mode, replayed alongside a baseline configuration: the two take turns frame by frame
(`replay_alongside`), so they see the same machine, and ``fps_vs_baseline`` is their ratio
(realtime runs, paced by the camera, run one after the other, alternating which goes first).
``fps_output_norm`` rescales fps to the machine's typical speed, and runs during which the probe
moved more than ``drift_threshold`` are flagged (and measured again with ``rerun_drifted``).

A live camera's sweep (`espdetect.profiling.live`) records one clip per camera setting and
replays each configuration on the clip of its own setting (`sweep_clips`); its baseline is
replayed on the same clip, so ``fps_vs_baseline`` compares configurations within one camera
setting. Accuracy is measured against the reference configuration on the reference setting's
clip: frame by frame where the clips' frames correspond (``aligned``: an emulator's clips all
start at frame 0 of its scene loop), else only by detection counts and confidence
(``accuracy_basis`` "indicative").

With ``executor="ray"`` the runs are measured on the nodes of a Ray cluster instead, each node
one run at a time on all of its CPUs (`espdetect.profiling.ray_sweep`); every run is the same
trial as here (its probes, baseline, busy and drift measurements happen on its node), and the
rows come back into the same table, whose ``node`` column says where each was measured.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import math
import random
import re
import shutil
import socket
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, NamedTuple, Protocol

import numpy as np
import pandas as pd

from espdetect.detectors.base import Detector
from espdetect.exceptions import ConfigurationError
from espdetect.pipeline import FrameProcessor
from espdetect.profiling.accuracy import BoxSet, Reference, accuracy_metrics, compute_reference
from espdetect.profiling.calibration import (
    DEFAULT_DRIFT_THRESHOLD,
    Alongside,
    Replay,
    RunCost,
    SpeedProbe,
    drift,
    replay_alongside,
    speed_index,
)
from espdetect.profiling.config import CameraSetting, ProfileConfig, unique
from espdetect.profiling.detectors import DetectorCache, DetectorFactory, default_factory
from espdetect.profiling.environment import collect_environment, cpu_model, cuda_available
from espdetect.profiling.metrics import ResourceMonitor, trace_metrics
from espdetect.profiling.ray_sweep import NodeFailure, NodeRunner, RayNodes, import_ray
from espdetect.profiling.replay import ClipData, Mode, RunTrace, load_clip, replay, warm_up
from espdetect.profiling.results import SCHEMA_VERSION, ResultsStore, load_results

__all__ = [
    "DRIFT_RETRIES",
    "HALF_NEEDS_CUDA",
    "TURN_S",
    "BaselineChoice",
    "DetectorCache",
    "DetectorFactory",
    "Executor",
    "ReferenceChoice",
    "RunStatus",
    "choose_baseline",
    "choose_reference",
    "default_factory",
    "sweep",
    "sweep_clips",
]

logger = logging.getLogger(__name__)

#: ``"auto"`` (see `choose_reference`), an explicit configuration, or None (no accuracy columns).
ReferenceChoice = ProfileConfig | Literal["auto"] | None
#: ``"auto"`` (see `choose_baseline`), an explicit configuration, or None (no paired baseline runs).
BaselineChoice = ProfileConfig | Literal["auto"] | None
#: Where the runs are measured: here, one after the other, or on the nodes of a Ray cluster
#: (`espdetect.profiling.ray_sweep`).
Executor = Literal["local", "ray"]
#: Extra measurements of a run whose speed probe drifted, with ``rerun_drifted``.
DRIFT_RETRIES = 2
#: Seconds a configuration and its baseline each hold the machine before handing it over
#: (0: after every frame; a handover costs about 0.1 ms, a model call 10-100 ms).
TURN_S = 0.0


class RunStatus(NamedTuple):
    """How a run ended: measured, not applicable here (a reason, not a failure), or failed.

    Its text (``str(status)``) is what the results table's ``status`` column holds.

    Example:
        >>> str(RunStatus("n/a", "half needs CUDA"))
        'n/a: half needs CUDA'
    """

    kind: Literal["ok", "n/a", "error"]
    detail: str = ""

    def __str__(self) -> str:
        return self.kind if self.kind == "ok" else f"{self.kind}: {self.detail}"


#: Status of half-precision rows on machines without CUDA.
HALF_NEEDS_CUDA = str(RunStatus("n/a", "half needs CUDA"))
_UNTRAINED = str(RunStatus("n/a", "untrained model (.yaml), speed only"))


def choose_reference(configs: Iterable[ProfileConfig]) -> ProfileConfig | None:
    """The automatic reference: the first trained model, its largest size, every frame, full decode.

    Confidence is the default 0.25 and precision full, with neither motion gating nor tracking
    (the model sees every frame); None when no model in the sweep is trained. With camera axes,
    the camera setting is the sweep's largest frame size at its best (lowest) quality number.
    Pass an explicit reference to `sweep` to compare against something else (a better model).

    Example:
        >>> ref = choose_reference(grid(model="m.onnx", imgsz=[320, 640], skip=[2, 4]))  # doctest: +SKIP
        >>> ref.imgsz, ref.skip, ref.decode_reduce
        (640, 1, 1)
    """
    configs = list(configs)
    trained = [c for c in configs if c.trained]
    if not trained:
        return None
    model = trained[0].model
    imgsz = max(c.imgsz for c in trained if c.model == model)
    return ProfileConfig(
        model=model,
        imgsz=imgsz,
        half=False,
        skip=1,
        jpeg_quality=80,
        decode_reduce=1,
        motion=False,
        tracking=False,
    ).with_camera(best_camera(c.camera for c in configs))


def best_camera(cameras: Iterable[CameraSetting]) -> CameraSetting:
    """The largest frame size at the lowest quality number among ``cameras`` (unchanged: none set).

    Example:
        >>> best_camera([CameraSetting("QVGA", 10), CameraSetting("SVGA", 30), CameraSetting("SVGA", 10)])
        CameraSetting(framesize='SVGA', quality=10)
    """

    def rank(camera: CameraSetting) -> tuple[int, int]:
        size = camera.size
        return (size[0] * size[1] if size else 0, -(camera.quality if camera.quality is not None else 64))

    return max(cameras, key=rank, default=CameraSetting())


def choose_baseline(
    configs: Iterable[ProfileConfig], mode: Mode = "fast", half_ok: bool = False
) -> ProfileConfig | None:
    """The automatic baseline: the sweep's first configuration that can run here.

    None in realtime mode, where runs are paced by the camera and their fps say little about
    speed (pass a configuration to pair them anyway). Half-precision configurations are passed
    over unless ``half_ok`` (CUDA).

    Example:
        >>> choose_baseline(grid(model="m.onnx", skip=[4, 1])).skip  # doctest: +SKIP
        4
    """
    if mode == "realtime":
        return None
    return next((c for c in configs if half_ok or not c.half), None)


def _safe_name(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9._@-]+", "_", key)


def _status_of_error(exc: Exception) -> RunStatus:
    first = (str(exc).strip().splitlines() or [""])[0]
    if isinstance(exc, ConfigurationError):
        return RunStatus("n/a", first)
    kind = exc.kind if isinstance(exc, NodeFailure) else type(exc).__name__
    return RunStatus("error", f"{kind}: {first}")


def _load_reference(
    clip: ClipData, config: ProfileConfig, compute: Callable[[ProfileConfig], Reference], store: ResultsStore
) -> Reference:
    """The reference boxes of ``config`` on ``clip``: from the sweep folder's cache, else computed."""
    path = store.reference_dir / f"{_safe_name(config.key)}.json"
    if path.is_file():
        try:
            ref = Reference.load(path)
            if ref.key == config.key and ref.clip_fingerprint == clip.fingerprint:
                logger.info("reference %s loaded from %s", config.key, path)
                return ref
        except (OSError, ValueError, KeyError) as exc:
            logger.warning("ignoring unreadable reference %s: %s", path, exc)
    ref = compute(config)
    ref.save(path)
    return ref


def _identity(config: ProfileConfig, repeat: int, order: int, mode: Mode) -> dict[str, object]:
    return {
        "schema_version": SCHEMA_VERSION,
        "config_key": config.key,
        "repeat": repeat,
        "run_order": order,
        "mode": mode,
        "model": config.model,
        "model_name": config.model_name,
        "model_format": config.model_format,
        "trained": config.trained,
        "imgsz": config.imgsz,
        "half": config.half,
        "skip": str(config.skip),
        "jpeg_quality": config.jpeg_quality,
        "conf": config.conf,
        "decode_reduce": str(config.decode_reduce),
        "motion": config.motion,
        # Without motion no keep-alive is ever due: the value would claim a setting that did nothing.
        "keepalive": config.keepalive if config.motion else math.nan,
        "tracking": config.tracking,
        "label": config.label,
        "camera_framesize": config.camera_framesize or "",
        "camera_quality": config.camera_quality if config.camera_quality is not None else math.nan,
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _frame_rows(config: ProfileConfig, repeat: int, mode: Mode, trace: RunTrace) -> list[tuple[object, ...]]:
    return [
        (
            config.key,
            repeat,
            mode,
            r.seq,
            r.shown_seq == r.seq,
            r.shown_seq is not None and r.shown_seq != r.seq,
            round(r.latency_ms, 3),
            round(r.decode_ms + r.annotate_ms + r.encode_ms, 3),
            r.nbytes,
        )
        for r in trace.renders
    ]


def sweep(
    clip: str | Path | ClipData,
    configs: Iterable[ProfileConfig],
    out_dir: str | Path,
    *,
    mode: Mode = "fast",
    repeats: int = 3,
    warmup: int = 2,
    seed: int = 0,
    reference: ReferenceChoice = "auto",
    detector_factory: DetectorFactory | None = None,
    device: str | None = "cpu",
    progress: bool = True,
    resume: bool = True,
    on_result: Callable[[dict[str, object]], None] | None = None,
    busy_threshold: float | None = 50.0,
    busy_retries: int = 1,
    baseline: BaselineChoice = "auto",
    drift_threshold: float | None = DEFAULT_DRIFT_THRESHOLD,
    rerun_drifted: bool = False,
    probe_calls: int = 5,
    executor: Executor = "local",
    ray_address: str | None = None,
) -> pd.DataFrame:
    """Measure every configuration ``repeats`` times on ``clip``; return the results table.

    Args:
        clip: a clip folder recorded with `record` (or a loaded `ClipData`).
        configs: the configurations (`grid`, a list of `ProfileConfig`, or both concatenated).
        out_dir: the sweep folder (see `espdetect.profiling.results`).
        mode: ``"fast"`` or ``"realtime"`` (see `espdetect.profiling.replay`).
        repeats: measured runs per configuration.
        warmup: frames processed and discarded before each run.
        seed: seeds the run order.
        reference: what accuracy is measured against.
        detector_factory: loads detectors; defaults to `default_factory` (``device``).
        device: the device of the default factory.
        progress: show tqdm progress bars (the notebook flavour inside Jupyter).
        resume: keep runs already in ``out_dir`` and measure only the rest; False starts afresh.
        on_result: called with each new row after it is saved (raise to stop the sweep).
        busy_threshold: a run during which other processes used more CPU than this (percent of
            one core) is measured again, up to ``busy_retries`` times; the quietest run is kept.
            None never measures again.
        busy_retries: the most extra measurements per row.
        baseline: the configuration replayed alongside every run (taking turns frame by frame)
            so each row has ``fps_vs_baseline``; ``"auto"`` is `choose_baseline` (the first
            configuration; none in realtime mode), None pairs nothing (about half the time).
        drift_threshold: a run during which the speed probe moved by more than this fraction
            gets ``drift_flag``; None flags nothing.
        rerun_drifted: measure flagged runs again, up to `DRIFT_RETRIES` times; the steadiest is kept.
        probe_calls: detector calls per speed probe (on the clip's first frame, with the
            baseline's model and input size, else the first configuration's); 0: no probe.
        executor: ``"local"`` measures the runs here, one after the other; ``"ray"`` on the
            nodes of a Ray cluster, each node one run at a time on all of its CPUs
            (`espdetect.profiling.ray_sweep`; ``pip install 'espdetect[ray]'``). The clip goes
            to the nodes through Ray's object store (they need the model files at the same
            paths, not the clip folder); the reference is computed once, on one node, and
            shared with every run; each node has its own speed probe; ``detector_factory``
            must be picklable (module-level). The rows are the same, with ``node`` saying
            where each was measured (here: this machine's hostname).
        ray_address: with ``executor="ray"``: ``"local"`` (a new Ray inside this process),
            ``"auto"`` (the cluster running on this machine), ``"host:port"`` or
            ``"ray://host:port"``; None: this process's Ray connection, else Ray's default.

    Returns:
        One row per configuration and repeat, with the documented `COLUMNS`; ``attrs`` holds
        ``environment`` and ``out_dir`` (and on Ray ``ray``: the address, the nodes and what
        each node's worker measured and fetched).

    Raises:
        ConfigurationError: no configurations, bad arguments, ``out_dir`` holds another clip's
            sweep, or ``executor="ray"`` without Ray installed or reachable.

    Example:
        >>> df = sweep("data/clips/emulator-qvga", grid(skip=[1, 4], jpeg_quality=[50, 80]),  # doctest: +SKIP
        ...            "out/sweep1", repeats=2)
        >>> summarize(df)[["config_key", "fps_output", "displayed_recall"]]
        >>> on_cluster = sweep("data/clips/emulator-qvga", grid(skip=[1, 4]), "out/sweep2",  # doctest: +SKIP
        ...                    executor="ray", ray_address="auto")
    """
    config_list = unique(configs)
    camera = sorted({c.camera.label for c in config_list if not c.camera.unchanged})
    if camera:
        raise ConfigurationError(
            f"expected no camera axes for a recorded clip, got camera settings {', '.join(camera)}: they "
            "need a live camera (espdetect.profiling.sweep_live, espdetect profile --live URL)",
            field="configs",
        )
    data = clip if isinstance(clip, ClipData) else load_clip(clip)
    return sweep_clips(
        {CameraSetting(): data},
        config_list,
        out_dir,
        mode=mode,
        repeats=repeats,
        warmup=warmup,
        seed=seed,
        reference=reference,
        detector_factory=detector_factory,
        device=device,
        progress=progress,
        resume=resume,
        on_result=on_result,
        busy_threshold=busy_threshold,
        busy_retries=busy_retries,
        baseline=baseline,
        drift_threshold=drift_threshold,
        rerun_drifted=rerun_drifted,
        probe_calls=probe_calls,
        executor=executor,
        ray_address=ray_address,
    )


def sweep_clips(
    clips: Mapping[CameraSetting, ClipData],
    configs: Iterable[ProfileConfig],
    out_dir: str | Path,
    *,
    aligned: bool = True,
    lost: Mapping[CameraSetting, str] | None = None,
    mode: Mode = "fast",
    repeats: int = 3,
    warmup: int = 2,
    seed: int = 0,
    reference: ReferenceChoice = "auto",
    detector_factory: DetectorFactory | None = None,
    device: str | None = "cpu",
    progress: bool = True,
    resume: bool = True,
    on_result: Callable[[dict[str, object]], None] | None = None,
    busy_threshold: float | None = 50.0,
    busy_retries: int = 1,
    baseline: BaselineChoice = "auto",
    drift_threshold: float | None = DEFAULT_DRIFT_THRESHOLD,
    rerun_drifted: bool = False,
    probe_calls: int = 5,
    executor: Executor = "local",
    ray_address: str | None = None,
) -> pd.DataFrame:
    """`sweep` over one clip per camera setting: each configuration replays its setting's clip.

    ``aligned``: frame i of every clip shows the same moment (an emulator's clips, all starting
    at frame 0 of its scene loop), so accuracy against the reference setting's clip is measured
    frame by frame (over the frames both clips have, boxes scaled to the clip's size; clips of
    another aspect ratio fall back to indicative figures). Configurations whose setting is in
    ``lost`` (setting -> why) are left out of the table and listed in ``environment.json`` and
    ``df.attrs["lost"]``, so a resumed sweep measures them. Other arguments as in `sweep`.

    Raises:
        ConfigurationError: no configurations, a setting without a clip, bad arguments, or
            ``out_dir`` holds a sweep of other clips.

    Example:
        >>> clips = {CameraSetting("QVGA", 10): load_clip("c/qvga"),  # doctest: +SKIP
        ...          CameraSetting("VGA", 10): load_clip("c/vga")}
        >>> configs = grid(camera_framesize=["QVGA", "VGA"], camera_quality=10)
        >>> df = sweep_clips(clips, configs, "out/cam")  # doctest: +SKIP
    """
    # Long: the sweep's outline, one step per line; every step is a helper of its own.
    from tqdm.auto import tqdm

    _check_arguments(mode, repeats, warmup, busy_retries, drift_threshold, probe_calls)
    _check_executor(executor, ray_address)
    config_list = unique(configs)
    if not config_list:
        raise ConfigurationError("expected at least one configuration, got none", field="configs")
    lost = dict(lost or {})
    _check_clips(clips, config_list, lost)
    ref_config = choose_reference(config_list) if reference == "auto" else reference
    ray_info: dict[str, object] | None = None
    with _machines(executor, ray_address, device) as machines:
        # Once connected: a cluster that cannot be reached leaves the folder as it was.
        store = _open_store(out_dir, clips, resume)
        half_ok = machines.half_ok
        base_config = _baseline(config_list, baseline, mode, half_ok)
        main_camera = _main_camera(clips, ref_config)
        main = clips[main_camera]
        bench = _Bench(
            clips=dict(clips),
            factory=detector_factory or default_factory(device),
            main=main_camera,
            probe_candidates=(base_config, choose_baseline(config_list, "fast", half_ok)),
            probe_calls=probe_calls,
            mode=mode,
            warmup=warmup,
            busy=_Busy(busy_threshold, busy_retries),
            baseline=base_config,
            drift_threshold=drift_threshold,
            rerun_drifted=rerun_drifted,
            half_ok=half_ok,
            ref_config=ref_config,
            progress=progress and executor == "local",
        )
        machines.start(bench)
        # The reference first, then the speed probes: the order of the model calls before.
        refs = _references(clips, ref_config, reference is None, machines.reference, store, aligned, lost)
        probe_settings = machines.prepare().get("probe")
        store.write_environment(
            _environment(
                main,
                clips,
                lost,
                config_list,
                ref_config,
                machines.describe(),
                mode=mode,
                repeats=repeats,
                warmup=warmup,
                seed=seed,
                device=device,
                busy_threshold=busy_threshold,
                busy_retries=busy_retries,
                baseline=base_config.key if base_config else None,
                drift_threshold=drift_threshold,
                rerun_drifted=rerun_drifted,
                probe=probe_settings,
                executor=executor,
            )
        )
        measurable = [c for c in config_list if c.camera in clips]
        pending = _pending_runs(measurable, repeats, seed, store, mode)
        bar = tqdm(total=len(pending), desc="sweep", unit="run", disable=not progress)
        try:
            for trial, measured in machines.run(pending, refs):
                bar.set_postfix_str(trial.config.key, refresh=False)
                bar.update()
                store.append(measured.row, measured.frames)
                if on_result is not None:
                    on_result(measured.row)
            ray_info = machines.stats()
        finally:
            bar.close()
            store.write_parquet()
    df = load_results(store.out_dir)
    df.attrs["lost"] = {camera.label: why for camera, why in lost.items()}
    if ray_info is not None:
        df.attrs["ray"] = ray_info
    return df


def _check_executor(executor: str, ray_address: str | None) -> None:
    if executor not in ("local", "ray"):
        raise ConfigurationError(f"expected executor 'local' or 'ray', got {executor!r}", field="executor")
    if executor == "local" and ray_address is not None:
        raise ConfigurationError(
            f"expected executor='ray' with ray_address={ray_address!r}, got executor='local'",
            field="ray_address",
        )
    if executor == "ray":
        import_ray()  # now, before anything is written: says what to install


class _Trial(NamedTuple):
    """One row to measure: a configuration's repeat, at its position in the sweep's order."""

    position: int
    repeat: int
    config: ProfileConfig


class _Measured(NamedTuple):
    """A measured trial: its results row and its frames' rows."""

    row: dict[str, object]
    frames: list[tuple[object, ...]]


@dataclass(frozen=True)
class _Bench:
    """What a machine needs to measure the sweep's trials.

    Built on the driver; on Ray it is put into the object store once and every node builds its
    `_Trials` from it (the clips travel inside it).
    """

    clips: dict[CameraSetting, ClipData]
    factory: DetectorFactory
    #: The camera setting of the clip the speed probe runs on (the reference's).
    main: CameraSetting
    probe_candidates: tuple[ProfileConfig | None, ...]
    probe_calls: int
    mode: Mode
    warmup: int
    busy: _Busy
    baseline: ProfileConfig | None
    drift_threshold: float | None
    rerun_drifted: bool
    half_ok: bool
    ref_config: ProfileConfig | None
    progress: bool

    def start(self, node: str) -> _Trials:
        """This machine's runner, with an empty detector cache."""
        return _Trials(self, node, DetectorCache(self.factory))


class _Trials:
    """Measures trials on one machine: its detectors, loaded once, and its speed probe."""

    def __init__(self, bench: _Bench, node: str, cache: DetectorCache) -> None:
        self.bench = bench
        self.node = node
        self.cache = cache
        self.probe: SpeedProbe | None = None
        self.probe_settings: dict[str, object] | None = None
        self.references = 0

    def prepare(self) -> Mapping[str, object]:
        """Set up the speed probe (measured once, untimed); `info`."""
        bench = self.bench
        clip = bench.clips[bench.main]
        self.probe, config = _speed_probe(clip, self.cache, bench.probe_candidates, bench.probe_calls)
        self.probe_settings = _probe_settings(config, bench.probe_calls)
        return self.info

    @property
    def info(self) -> Mapping[str, object]:
        """The node, the probe's settings, the machine's CPU and the references computed here."""
        return {
            "node": self.node,
            "probe": self.probe_settings,
            "cpu_model": cpu_model(),
            "references": self.references,
        }

    def reference(self, config: ProfileConfig) -> Reference:
        """Compute ``config``'s reference boxes on its camera setting's clip."""
        self.references += 1
        clip = self.bench.clips[config.camera]
        detector = self.cache.get(config)
        return compute_reference(
            clip, detector, key=config.key, params=config.detect_params(), progress=self.bench.progress
        )

    def names(self) -> Mapping[int, str]:
        """Class names of the reference's model, loaded when first needed (ids do without)."""
        if self.bench.ref_config is None:
            return {}
        try:
            return self.cache.get(self.bench.ref_config).info.names
        except Exception:  # names only label the indicative column; ids do as well
            return {}

    def trial(self, trial: _Trial, shared: _References) -> _Measured:
        """Measure one row: the run with its probes and baseline, then its accuracy against ``shared``."""
        bench, cfg = self.bench, trial.config
        data = bench.clips[cfg.camera]
        row = _identity(cfg, trial.repeat, trial.position, bench.mode)
        row["node"] = self.node
        row.update(_camera_columns(data))
        trace: RunTrace | None = None
        if cfg.half and not bench.half_ok:
            row["status"] = HALF_NEEDS_CUDA
        else:
            baseline = _with_camera(bench.baseline, cfg.camera)
            noise = _Noise(self.probe, baseline, bench.drift_threshold, bench.rerun_drifted)
            trace = _run(row, data, self.cache, cfg, bench.mode, bench.warmup, bench.busy, noise)
        ref = shared.get(cfg.camera)
        _add_accuracy(row, cfg, trace, ref, bench.ref_config, shared.status, data, self.names)
        frames = _frame_rows(cfg, trial.repeat, bench.mode, trace) if trace is not None else []
        return _Measured(row, frames)


class _Machines(Protocol):
    """Where the trials run: `_Here`, or `_OnRay` (a worker per node of a Ray cluster)."""

    #: Whether half precision runs (CUDA, and a device other than the CPU).
    half_ok: bool

    def start(self, bench: _Bench) -> None:
        """Build the runners from ``bench``."""
        ...

    def reference(self, config: ProfileConfig) -> Reference:
        """``config``'s reference boxes, computed by one runner."""
        ...

    def prepare(self) -> Mapping[str, object]:
        """Set up every runner's speed probe; the (first) runner's `_Trials.info`."""
        ...

    def run(self, trials: list[_Trial], refs: _References) -> Iterator[tuple[_Trial, _Measured]]:
        """Measure ``trials``, yielding each as it finishes (in order here)."""
        ...

    def describe(self) -> dict[str, object] | None:
        """What environment.json records about the machines besides this one (None: none)."""
        ...

    def stats(self) -> dict[str, object] | None:
        """What the machines did (``df.attrs["ray"]``), or None here."""
        ...

    def __enter__(self) -> _Machines: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


def _machines(executor: Executor, ray_address: str | None, device: str | None) -> _Machines:
    if executor == "ray":
        return _OnRay(ray_address, device)
    return _Here(device)


class _Here:
    """Trials on this machine, one after the other; ``node`` is its hostname."""

    def __init__(self, device: str | None) -> None:
        self.half_ok = cuda_available() and device != "cpu"
        self.node = socket.gethostname()
        self._trials: _Trials | None = None

    def __enter__(self) -> _Here:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        gc.unfreeze()

    def start(self, bench: _Bench) -> None:
        self._trials = bench.start(self.node)

    def reference(self, config: ProfileConfig) -> Reference:
        assert self._trials is not None
        return self._trials.reference(config)

    def prepare(self) -> Mapping[str, object]:
        assert self._trials is not None
        return self._trials.prepare()

    def run(self, trials: list[_Trial], refs: _References) -> Iterator[tuple[_Trial, _Measured]]:
        assert self._trials is not None
        for trial in trials:
            yield trial, self._trials.trial(trial, refs)

    def describe(self) -> dict[str, object] | None:
        return None

    def stats(self) -> dict[str, object] | None:
        return None


def _reference_on(runner: NodeRunner[_Trial, _References, _Measured], config: ProfileConfig) -> Reference:
    """``config``'s reference, computed by a node's runner (sent there pickled)."""
    assert isinstance(runner, _Trials)
    return runner.reference(config)


def _prepare_on(runner: NodeRunner[_Trial, _References, _Measured]) -> Mapping[str, object]:
    """A node's runner sets up its speed probe (sent there pickled)."""
    assert isinstance(runner, _Trials)
    return runner.prepare()


class _OnRay:
    """Trials on a Ray cluster: a worker per node, holding all its CPUs (`RayNodes`)."""

    def __init__(self, address: str | None, device: str | None) -> None:
        self._nodes = RayNodes[_Trial, _References, _Measured](address, gpus=device != "cpu")
        self._device = device
        self._prepared: dict[object, Mapping[str, object]] = {}
        self.half_ok = False

    def __enter__(self) -> _OnRay:
        self._nodes.__enter__()
        self.half_ok = self._device != "cpu" and self._nodes.all_have_gpus
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._nodes.__exit__(exc_type, exc, tb)

    def start(self, bench: _Bench) -> None:
        self._nodes.start(bench)

    def prepare(self) -> Mapping[str, object]:
        infos = self._nodes.on_each(_prepare_on)
        self._prepared = {info.get("node"): info for info in infos}
        return infos[0]

    def reference(self, config: ProfileConfig) -> Reference:
        # Computed once, on the first node (its worker keeps the model for its trials).
        return self._nodes.on_first(partial(_reference_on, config=config))

    def run(self, trials: list[_Trial], refs: _References) -> Iterator[tuple[_Trial, _Measured]]:
        return self._nodes.run(trials, refs)

    def describe(self) -> dict[str, object]:
        described = self._nodes.describe()
        nodes = described.get("nodes")
        if isinstance(nodes, list):
            # Each node's probe and CPU; what it did (references computed) is in the statistics.
            described["nodes"] = [
                {**n, **{k: v for k, v in self._prepared.get(n.get("node"), {}).items() if k != "references"}}
                for n in nodes
            ]
        return described

    def stats(self) -> dict[str, object] | None:
        return {**self.describe(), "workers": self._nodes.stats()}


def _with_camera(config: ProfileConfig | None, camera: CameraSetting) -> ProfileConfig | None:
    return config.with_camera(camera) if config is not None else None


def _check_clips(
    clips: Mapping[CameraSetting, ClipData], configs: list[ProfileConfig], lost: Mapping[CameraSetting, str]
) -> None:
    missing = sorted({c.camera.label for c in configs if c.camera not in clips and c.camera not in lost})
    if missing:
        raise ConfigurationError(
            f"expected a clip for every camera setting of the grid, got none for {', '.join(missing)}",
            field="clips",
        )
    empty = sorted(camera.label for camera, clip in clips.items() if not len(clip))
    if empty:
        raise ConfigurationError(f"expected clips with frames, got empty ones for {', '.join(empty)}")


def _main_camera(clips: Mapping[CameraSetting, ClipData], ref_config: ProfileConfig | None) -> CameraSetting:
    """The setting whose clip the speed probe runs on and environment.json describes first: the
    reference's."""
    if ref_config is not None and ref_config.camera in clips:
        return ref_config.camera
    return next(iter(clips))


def _camera_columns(data: ClipData) -> dict[str, object]:
    w, h = data.size
    return {
        "camera_size": f"{w}x{h}",
        "camera_bytes_per_frame": float(np.mean([len(f.jpeg) for f in data.frames])),
    }


def _check_arguments(
    mode: str, repeats: int, warmup: int, busy_retries: int, drift_threshold: float | None, probe_calls: int
) -> None:
    if mode not in ("fast", "realtime"):
        raise ConfigurationError(f"expected mode 'fast' or 'realtime', got {mode!r}", field="mode")
    for name, value, low in (
        ("repeats", repeats, 1),
        ("warmup", warmup, 0),
        ("busy_retries", busy_retries, 0),
        ("probe_calls", probe_calls, 0),
    ):
        if value < low:
            raise ConfigurationError(f"expected {name} >= {low}, got {value}", field=name)
    if drift_threshold is not None and not (math.isfinite(drift_threshold) and drift_threshold >= 0):
        raise ConfigurationError(
            f"expected drift_threshold >= 0 (a fraction) or None, got {drift_threshold!r}",
            field="drift_threshold",
        )


def _baseline(
    configs: list[ProfileConfig], baseline: BaselineChoice, mode: Mode, half_ok: bool
) -> ProfileConfig | None:
    if baseline == "auto":
        return choose_baseline(configs, mode, half_ok)
    if baseline is not None and baseline.half and not half_ok:
        raise ConfigurationError(
            f"expected a baseline that runs on this machine, got {baseline.key} (half needs CUDA)",
            field="baseline",
        )
    return baseline


def _probe_settings(config: ProfileConfig | None, calls: int) -> dict[str, object] | None:
    """What environment.json records about the speed probe (None: no probe)."""
    if config is None or calls == 0:
        return None
    return {"model": config.model, "imgsz": config.imgsz, "conf": config.conf, "frame": 0, "calls": calls}


def _speed_probe(
    data: ClipData, cache: DetectorCache, candidates: Iterable[ProfileConfig | None], calls: int
) -> tuple[SpeedProbe | None, ProfileConfig | None]:
    """The sweep's speed probe: the first candidate's detector that runs on the clip's first frame."""
    if calls == 0:
        return None, None
    for config in dict.fromkeys(c for c in candidates if c is not None):
        try:
            probe = SpeedProbe(cache.get(config), data.frame(0).image(), config.detect_params(), calls=calls)
            probe.measure()  # untimed: the first calls of a fresh detector are slower
        except Exception as exc:  # the next candidate, or the sweep goes on without speed figures
            logger.warning("speed probe: %s failed on the clip's first frame: %s", config.key, exc)
            continue
        return probe, config
    return None, None


def _open_store(out_dir: str | Path, clips: Mapping[CameraSetting, ClipData], resume: bool) -> ResultsStore:
    """The sweep folder, emptied unless resuming; refused when it holds runs of other clips."""
    store = ResultsStore(out_dir)
    if not resume and store.out_dir.exists():
        for path in (store.results_csv, store.results_parquet, store.frames_csv, store.environment_json):
            path.unlink(missing_ok=True)
        shutil.rmtree(store.reference_dir, ignore_errors=True)
    store.check_appendable()
    if not store.done():
        return store
    environment = store.environment()
    previous: dict[str, Any] = environment.get("clips") or {
        CameraSetting().label: environment.get("clip") or {}
    }
    for camera, data in clips.items():
        fingerprint = (previous.get(camera.label) or {}).get("fingerprint")
        if fingerprint is not None and fingerprint != data.fingerprint:
            raise ConfigurationError(
                f"expected {store.out_dir} to hold a sweep of clip {data.path}, got results of another "
                f"clip (fingerprint {fingerprint[:12]}); use another output folder or resume=False",
                field="out_dir",
            )
    return store


def _clip_info(data: ClipData) -> dict[str, Any]:
    return {
        "path": str(data.path),
        "fingerprint": data.fingerprint,
        "frames": len(data),
        "duration_s": round(data.duration_s, 3),
        "fps": round(data.fps, 3),
        "size": list(data.size),
    }


def _environment(
    main: ClipData,
    clips: Mapping[CameraSetting, ClipData],
    lost: Mapping[CameraSetting, str],
    configs: list[ProfileConfig],
    ref_config: ProfileConfig | None,
    machines: dict[str, object] | None,
    **sweep_settings: object,
) -> dict[str, Any]:
    """What environment.json records: the machine, the clip(s) and how the sweep was run.

    On Ray (``machines``), ``ray`` holds the address and every node the runs were measured on;
    the machine described at the top level is the driver's.
    """
    environment = collect_environment([c.model for c in configs] + ([ref_config.model] if ref_config else []))
    environment["clip"] = _clip_info(main)
    if any(not camera.unchanged for camera in (*clips, *lost)):
        environment["clips"] = {
            camera.label: {**_clip_info(data), "framesize": camera.framesize, "quality": camera.quality}
            for camera, data in clips.items()
        }
        environment["lost"] = {camera.label: why for camera, why in lost.items()}
    if machines is not None:
        environment["ray"] = machines
    environment["schema_version"] = SCHEMA_VERSION
    environment["sweep"] = {
        **sweep_settings,
        "reference": ref_config.key if ref_config else None,
        "configs": [c.key for c in configs],
    }
    return environment


class _CameraReference(NamedTuple):
    """What one camera setting's runs are compared with."""

    #: Reference boxes of this clip's frames (None: its frames do not correspond: indicative only).
    reference: Reference | None
    #: The reference boxes on the reference clip (for the indicative counts and confidence).
    source: Reference
    basis: Literal["per frame", "indicative"]


@dataclass
class _References:
    """The reference of each camera setting, and the accuracy status of rows without one."""

    status: str
    by_camera: dict[CameraSetting, _CameraReference]

    def get(self, camera: CameraSetting) -> _CameraReference | None:
        return self.by_camera.get(camera)


def _references(
    clips: Mapping[CameraSetting, ClipData],
    ref_config: ProfileConfig | None,
    none_requested: bool,
    compute: Callable[[ProfileConfig], Reference],
    store: ResultsStore,
    aligned: bool,
    lost: Mapping[CameraSetting, str],
) -> _References:
    """The reference boxes per camera setting (none when there are none) and the status that follows.

    ``compute`` computes the reference's boxes when the sweep folder has none cached (on this
    machine, or on one node of a Ray cluster): once per sweep.
    """
    if ref_config is None:
        why = "no reference requested" if none_requested else "no trained model in the sweep"
        return _References(str(RunStatus("n/a", why)), {})
    main = clips.get(ref_config.camera)
    if main is None:
        why = lost.get(ref_config.camera, "not recorded")
        status = RunStatus(
            "n/a", f"the reference's camera setting {ref_config.camera.label} was lost ({why})"
        )
        return _References(str(status), {})
    try:
        ref = _load_reference(main, ref_config, compute, store)
    except Exception as exc:  # the sweep goes on without accuracy columns, saying why
        logger.warning("no accuracy columns: reference %s failed: %s", ref_config.key, exc)
        return _References(str(RunStatus("n/a", f"reference failed ({_status_of_error(exc)})")), {})
    by_camera: dict[CameraSetting, _CameraReference] = {}
    for camera, data in clips.items():
        if data is main:
            by_camera[camera] = _CameraReference(ref, ref, "per frame")
        elif aligned and _same_aspect(main.size, data.size):
            by_camera[camera] = _CameraReference(_transfer(ref, main, data), ref, "per frame")
        else:
            by_camera[camera] = _CameraReference(None, ref, "indicative")
    return _References("ok", by_camera)


def _same_aspect(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return abs(a[0] / a[1] - b[0] / b[1]) <= 0.01 * a[0] / a[1]


def _transfer(ref: Reference, source: ClipData, target: ClipData) -> Reference:
    """``ref`` (boxes of ``source``'s frames) as boxes of ``target``'s frames: frame i to frame i,
    scaled to ``target``'s size, over the frames both clips have."""
    (sw, sh), (tw, th) = source.size, target.size
    scale = np.array([tw / sw, th / sh, tw / sw, th / sh], np.float32)
    boxes: dict[int, BoxSet] = {}
    for s_frame, t_frame in zip(source.frames, target.frames, strict=False):
        b = ref.boxes.get(s_frame.seq, BoxSet.empty())
        boxes[t_frame.seq] = BoxSet(np.asarray(b.xyxy, np.float32) * scale, b.class_id, b.confidence)
    return Reference(ref.key, target.fingerprint, boxes)


def _pending_runs(
    configs: list[ProfileConfig], repeats: int, seed: int, store: ResultsStore, mode: Mode
) -> list[_Trial]:
    """Every run not yet in ``store``, in the sweep's order: each repeat shuffled."""
    runs: list[_Trial] = []
    rng = random.Random(seed)
    for repeat in range(repeats):
        order = list(configs)
        rng.shuffle(order)
        base = len(runs)
        runs.extend(_Trial(base + i, repeat, cfg) for i, cfg in enumerate(order))
    done = store.done()
    pending = [t for t in runs if (t.config.key, t.repeat, mode) not in done]
    if len(pending) < len(runs):
        logger.info("resuming: %d of %d runs already done", len(runs) - len(pending), len(runs))
    return pending


class _Busy(NamedTuple):
    """When a run shared the CPU with other work and is measured again."""

    threshold: float | None
    retries: int


@dataclass
class _Noise:
    """How runs are bracketed: the speed probe, the paired baseline and the drift rule."""

    probe: SpeedProbe | None
    baseline: ProfileConfig | None
    drift_threshold: float | None
    rerun_drifted: bool


class _Pair(NamedTuple):
    """One measurement of a row: the configuration's run, its baseline run and the probes around."""

    trace: RunTrace
    cost: RunCost
    probe_before: float
    probe_after: float
    baseline_fps: float
    flagged: bool

    @property
    def drift(self) -> float:
        return drift(self.probe_before, self.probe_after)

    def steadier_than(self, other: _Pair) -> bool:
        mine, theirs = abs(self.drift), abs(other.drift)
        return math.isfinite(mine) and not (theirs <= mine)


def _run(
    row: dict[str, object],
    data: ClipData,
    cache: DetectorCache,
    cfg: ProfileConfig,
    mode: Mode,
    warmup: int,
    busy: _Busy,
    noise: _Noise,
) -> RunTrace | None:
    """Measure one run into ``row``; its trace, or None when it could not run (``row`` says why)."""
    try:
        detector = cache.get(cfg)
        if cfg.half and not detector.info.half:
            # The backend ran it in full precision (an .onnx file keeps its own): not an fp16 run.
            raise ConfigurationError(
                f"half precision is not applied by {detector.info.backend} on {detector.info.device}",
                field="half",
            )
        baseline_first = int(str(row["run_order"])) % 2 == 0
        run = _Replayer(data, mode, warmup, busy)
        pair, attempts = _measure_pair(run, cache, detector, cfg, noise, baseline_first)
    except Exception as exc:  # a failed run is a row of the table, not the end of the sweep
        status = _status_of_error(exc)
        row["status"] = str(status)
        if status.kind == "error":
            logger.exception("run %s (repeat %s) failed", cfg.key, row["repeat"])
        return None
    row["status"] = "ok"
    metrics = trace_metrics(pair.trace, data.fps)
    row.update(metrics)
    cost = pair.cost
    row["cpu_percent"] = cost.cpu_percent
    video_s = metrics["video_s"]
    row["cpu_core_hours_per_camera_hour"] = cost.cpu_s / video_s if video_s > 0 else math.nan
    row["rss_peak_mb"] = cost.rss_peak_mb
    row["background_cpu_percent"] = cost.background_cpu_percent
    row["attempts"] = attempts
    row["probe_before"] = pair.probe_before
    row["probe_after"] = pair.probe_after
    row["speed_index"] = speed_index(pair.probe_before, pair.probe_after)
    row["drift"] = pair.drift
    row["drift_flag"] = pair.flagged
    if noise.baseline is not None and pair.baseline_fps > 0:
        row["baseline_key"] = noise.baseline.key
        row["baseline_fps_output"] = pair.baseline_fps
        row["fps_vs_baseline"] = metrics["fps_output"] / pair.baseline_fps
    return pair.trace


def _measure_pair(
    run: _Replayer,
    cache: DetectorCache,
    detector: Detector,
    cfg: ProfileConfig,
    noise: _Noise,
    baseline_first: bool,
) -> tuple[_Pair, int]:
    """Probe, the configuration with its baseline, probe; again while the probe drifted (if asked).

    Returns the steadiest measurement and how many times the configuration was measured.
    """
    best: _Pair | None = None
    attempts = 0
    for _ in range(1 + (DRIFT_RETRIES if noise.rerun_drifted else 0)):
        before = noise.probe.measure().speed if noise.probe is not None else math.nan
        base_detector = _baseline_detector(cache, noise)
        if noise.baseline is not None and base_detector is not None:
            trace, cost, base_fps, runs = run.pair(detector, cfg, base_detector, noise, baseline_first)
        else:
            trace, cost, runs = run.alone(detector, cfg)
            base_fps = math.nan
        attempts += runs
        after = noise.probe.measure().speed if noise.probe is not None else math.nan
        moved = drift(before, after)
        flagged = noise.drift_threshold is not None and abs(moved) > noise.drift_threshold
        pair = _Pair(trace, cost, before, after, base_fps, flagged)
        if best is None or pair.steadier_than(best):
            best = pair
        if not flagged:
            break
        if noise.rerun_drifted:
            logger.info("%s: the machine's speed moved %+.0f %% during the run", cfg.key, moved * 100)
    assert best is not None
    return best, attempts


def _baseline_detector(cache: DetectorCache, noise: _Noise) -> Detector | None:
    """The baseline's detector; None (and no baseline from now on) when it cannot load."""
    if noise.baseline is None:
        return None
    try:
        return cache.get(noise.baseline)
    except Exception as exc:  # the sweep goes on without baseline ratios, saying why
        logger.warning("no baseline runs: %s failed: %s", noise.baseline.key, exc)
        noise.baseline = None
        return None


def _cost(monitor: ResourceMonitor) -> RunCost:
    return RunCost(monitor.wall_s, monitor.cpu_s, monitor.background_cpu_percent, monitor.rss_peak_mb)


class _Replayer:
    """Measured replays of one clip: alone, or a configuration paired with the baseline.

    Both measure again (keeping the quietest) while other processes used more CPU than the
    busy threshold.
    """

    def __init__(self, data: ClipData, mode: Mode, warmup: int, busy: _Busy) -> None:
        self.data = data
        self.mode = mode
        self.warmup = warmup
        self.busy = busy

    def _prepare(self, detector: Detector, cfg: ProfileConfig) -> Replay:
        """Warm up (outside any measurement) and return the measured replay of ``cfg``."""
        from espdetect.encoders.jpeg import JpegEncoder

        encoder = JpegEncoder(quality=cfg.jpeg_quality)
        params = cfg.detect_params()
        processor = FrameProcessor(detector, None, encoder, params=params, decode_reduce=cfg.decode_reduce)
        warm_up(self.data, processor, self.warmup)

        def measured(clip: ClipData) -> RunTrace:
            return replay(
                clip,
                detector,
                encoder,
                mode=self.mode,
                skip=cfg.skip,
                decode_reduce=cfg.decode_reduce,
                params=params,
                warmup=0,
                motion=cfg.motion,
                keepalive=cfg.keepalive,
                tracking=cfg.tracking,
            )

        return measured

    def _again(self, cfg: ProfileConfig, background: float, attempts: int) -> bool:
        if (
            self.busy.threshold is None
            or not background > self.busy.threshold
            or attempts > self.busy.retries
        ):
            return False
        logger.info(
            "%s: other processes used %.0f %% CPU during the run; measuring again", cfg.key, background
        )
        return True

    def alone(self, detector: Detector, cfg: ProfileConfig) -> tuple[RunTrace, RunCost, int]:
        """One measured replay of ``cfg``, its cost and how many were made."""
        best: tuple[RunTrace, RunCost] | None = None
        attempts = 0
        while True:
            attempts += 1
            measured = self._prepare(detector, cfg)
            _quiet_gc()
            with ResourceMonitor() as monitor:
                trace = measured(self.data)
            cost = _cost(monitor)
            if best is None or cost.background_cpu_percent < best[1].background_cpu_percent:
                best = (trace, cost)
            if not self._again(cfg, cost.background_cpu_percent, attempts):
                return best[0], best[1], attempts

    def pair(
        self,
        detector: Detector,
        cfg: ProfileConfig,
        base_detector: Detector,
        noise: _Noise,
        baseline_first: bool,
    ) -> tuple[RunTrace, RunCost, float, int]:
        """``cfg`` and the baseline, taking turns (fast mode) or one after the other (realtime).

        Returns the configuration's trace and cost, the baseline's fps_output (NaN when it
        failed: no baseline from then on) and how many measurements were made.
        """
        assert noise.baseline is not None
        baseline = noise.baseline
        best: tuple[RunTrace, RunCost, float] | None = None
        attempts = 0
        while True:
            attempts += 1
            own, base = self._prepare(detector, cfg), self._prepare(base_detector, baseline)
            _quiet_gc()
            with ResourceMonitor() as monitor:
                if self.mode == "fast":
                    both = replay_alongside(
                        self.data, own, base, turn_s=TURN_S, companion_first=baseline_first
                    )
                else:
                    both = _one_after_the_other(self.data, own, base, baseline_first)
            base_fps = both.companion_fps
            if isinstance(base_fps, Exception):
                logger.warning("no baseline runs: %s failed: %s", baseline.key, base_fps)
                noise.baseline = None
                base_fps = math.nan
            cost = both.cost._replace(rss_peak_mb=monitor.rss_peak_mb)
            if best is None or cost.background_cpu_percent < best[1].background_cpu_percent:
                best = (both.trace, cost, base_fps)
            if not self._again(cfg, cost.background_cpu_percent, attempts):
                return best[0], best[1], best[2], attempts


def _one_after_the_other(data: ClipData, own: Replay, base: Replay, baseline_first: bool) -> Alongside:
    """Realtime replays are paced by the camera and cannot take turns: one runs after the other."""
    base_fps: float | Exception = math.nan
    if baseline_first:
        base_fps = _fps_of(data, base)
    with ResourceMonitor() as monitor:
        trace = own(data)
    if not baseline_first:
        base_fps = _fps_of(data, base)
    return Alongside(trace, _cost(monitor), base_fps)


def _fps_of(data: ClipData, run: Replay) -> float | Exception:
    try:
        return trace_metrics(run(data), data.fps)["fps_output"]
    except Exception as exc:  # reported to the caller, as replay_alongside does
        return exc


def _quiet_gc() -> None:
    """Collect garbage now, then freeze what survives, so no long collection lands inside a run.

    With torch loaded a full collection takes ~0.2 s; frozen objects are not scanned again.
    """
    gc.collect()
    gc.freeze()


def _add_accuracy(
    row: dict[str, Any],
    cfg: ProfileConfig,
    trace: RunTrace | None,
    ref: _CameraReference | None,
    ref_config: ProfileConfig | None,
    ref_status: str,
    clip: ClipData,
    names: Callable[[], Mapping[int, str]],
) -> None:
    """The accuracy columns of ``row``; ``names``: the reference model's class names (looked up
    when first needed: loading a detector for them earlier would change which detectors load)."""
    if trace is None:
        row["accuracy_status"] = "n/a: not measured"
    elif not cfg.trained:
        row["accuracy_status"] = _UNTRAINED
    elif ref is None or ref_config is None:
        row["accuracy_status"] = ref_status
    else:
        row.update(_indicative(trace, ref, names))
        row["accuracy_basis"] = ref.basis
        row["reference_key"] = ref_config.key
        if ref.reference is not None:
            row.update(accuracy_metrics(_on_reference_frames(trace, ref.reference), ref.reference, clip))
            row["accuracy_status"] = "ok"
        else:
            row["accuracy_status"] = str(
                RunStatus("n/a", "the clip's frames are not the reference clip's (indicative figures only)")
            )
    row.setdefault("reference_key", "")


def _on_reference_frames(trace: RunTrace, ref: Reference) -> RunTrace:
    """``trace`` without the frames ``ref`` has no boxes for (a longer clip than the reference's)."""
    if all(r.seq in ref.boxes for r in trace.renders) and all(d.seq in ref.boxes for d in trace.detections):
        return trace
    return dataclasses.replace(
        trace,
        detections=[d for d in trace.detections if d.seq in ref.boxes],
        renders=[r for r in trace.renders if r.seq in ref.boxes],
    )


def _class_rates(sets: Iterable[tuple[np.ndarray, np.ndarray]]) -> tuple[dict[int, float], float]:
    """Detections per frame of each class and the mean confidence, over (class ids, confidences) per frame."""
    frames = 0
    counts: Counter[int] = Counter()
    confidences: list[float] = []
    for class_id, confidence in sets:
        frames += 1
        counts.update(int(c) for c in np.asarray(class_id).tolist())
        confidences.extend(float(c) for c in np.asarray(confidence).tolist())
    rates = {c: n / frames for c, n in counts.items()} if frames else {}
    return rates, float(np.mean(confidences)) if confidences else math.nan


def _indicative(
    trace: RunTrace, ref: _CameraReference, names: Callable[[], Mapping[int, str]]
) -> dict[str, object]:
    """Detections per detected frame and mean confidence, per class, relative to the reference clip's.

    Needs no frame correspondence, so it also compares clips of a real camera (taken at different
    moments), roughly: a count ratio above 1 may be false boxes as well as objects found.
    """
    ref_rates, ref_conf = _class_rates((b.class_id, b.confidence) for b in ref.source.boxes.values())
    rates, conf = _class_rates((d.class_id, d.confidence) for d in trace.detections)
    ratios = {c: rates.get(c, 0.0) / r for c, r in sorted(ref_rates.items(), key=lambda kv: -kv[1]) if r > 0}
    labels = names() if ratios else {}
    text = ", ".join(f"{labels.get(c, str(c))} {v:.2f}" for c, v in ratios.items())
    return {
        "count_vs_reference": float(np.mean(list(ratios.values()))) if ratios else math.nan,
        "confidence_vs_reference": conf / ref_conf if ref_conf > 0 else math.nan,
        "class_counts_vs_reference": text,
    }
