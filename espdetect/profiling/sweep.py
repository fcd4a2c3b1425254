"""`sweep`: replay one clip through many configurations and tabulate what each costs and loses.

Every configuration sees exactly the same recorded frames (`espdetect.profiling.replay`).
Runs are ordered per repeat in a seeded random order, so slow drift of the machine (heat,
background work) spreads over all configurations instead of favouring the first ones. Warm-up
frames are processed before each run and left out. Loaded detectors are kept for all
configurations sharing model and precision; input size and confidence are passed with each
call (`DetectParams`). Each finished run is appended to ``results.csv`` at once, so an interrupted sweep
resumes where it stopped.
"""

from __future__ import annotations

import gc
import logging
import math
import random
import re
import shutil
from collections import OrderedDict
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, NamedTuple

import pandas as pd

from espdetect.detectors.base import Detector
from espdetect.exceptions import ConfigurationError
from espdetect.pipeline import FrameProcessor
from espdetect.profiling.accuracy import Reference, accuracy_metrics, compute_reference
from espdetect.profiling.config import ProfileConfig, unique
from espdetect.profiling.environment import collect_environment, cuda_available
from espdetect.profiling.metrics import ResourceMonitor, trace_metrics
from espdetect.profiling.replay import ClipData, Mode, RunTrace, load_clip, replay, warm_up
from espdetect.profiling.results import SCHEMA_VERSION, ResultsStore, load_results

__all__ = [
    "HALF_NEEDS_CUDA",
    "DetectorCache",
    "DetectorFactory",
    "ReferenceChoice",
    "RunStatus",
    "choose_reference",
    "default_factory",
    "sweep",
]

logger = logging.getLogger(__name__)

#: Loads the detector a configuration needs (its model and precision; size and confidence go
#: with each call).
DetectorFactory = Callable[[ProfileConfig], Detector]
#: ``"auto"`` (see `choose_reference`), an explicit configuration, or None (no accuracy columns).
ReferenceChoice = ProfileConfig | Literal["auto"] | None


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


def default_factory(device: str | None = "cpu") -> DetectorFactory:
    """A factory of detectors on ``device``, on the runtime each model format needs (`open_detector`).

    Example:
        >>> make = default_factory("cpu")
        >>> det = make(ProfileConfig(model="yolov8n.onnx"))  # doctest: +SKIP
    """

    def make(config: ProfileConfig) -> Detector:
        from espdetect.detectors.factory import open_detector

        detector = open_detector(config.model, device=device, half=config.half)
        detector.warmup(2)
        return detector

    return make


class DetectorCache:
    """Detectors by (model, half), least recently used dropped beyond ``max_size``.

    A model that failed to load keeps failing from the cache instead of loading again.
    """

    def __init__(self, factory: DetectorFactory, max_size: int = 6) -> None:
        if max_size < 1:
            raise ValueError(f"max_size must be >= 1, got {max_size}")
        self.factory = factory
        self.max_size = max_size
        self._items: OrderedDict[tuple[str, bool], Detector | Exception] = OrderedDict()
        self.loads = 0

    def get(self, config: ProfileConfig) -> Detector:
        """The detector for ``config``'s model (its params go with each call).

        Raises:
            Exception: whatever the factory raised for this model (again on every call).
        """
        key = config.model_key
        item = self._items.get(key)
        if item is None:
            self.loads += 1
            try:
                item = self.factory(config)
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:  # remembered and re-raised for every configuration of this model
                item = exc
            self._items[key] = item
            while len(self._items) > self.max_size:
                self._items.popitem(last=False)
        self._items.move_to_end(key)
        if isinstance(item, Exception):
            raise item
        return item


def choose_reference(configs: Iterable[ProfileConfig]) -> ProfileConfig | None:
    """The automatic reference: the first trained model, its largest size, every frame, full decode.

    Confidence is the default 0.25 and precision full, with neither motion gating nor tracking
    (the model sees every frame); None when no model in the sweep is trained.
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
    )


def _safe_name(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9._@-]+", "_", key)


def _status_of_error(exc: Exception) -> RunStatus:
    first = (str(exc).strip().splitlines() or [""])[0]
    if isinstance(exc, ConfigurationError):
        return RunStatus("n/a", first)
    return RunStatus("error", f"{type(exc).__name__}: {first}")


def _load_reference(
    clip: ClipData, config: ProfileConfig, cache: DetectorCache, store: ResultsStore, progress: bool
) -> Reference:
    path = store.reference_dir / f"{_safe_name(config.key)}.json"
    if path.is_file():
        try:
            ref = Reference.load(path)
            if ref.key == config.key and ref.clip_fingerprint == clip.fingerprint:
                logger.info("reference %s loaded from %s", config.key, path)
                return ref
        except (OSError, ValueError, KeyError) as exc:
            logger.warning("ignoring unreadable reference %s: %s", path, exc)
    detector = cache.get(config)
    ref = compute_reference(clip, detector, key=config.key, params=config.detect_params(), progress=progress)
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

    Returns:
        One row per configuration and repeat, with the documented `COLUMNS`; ``attrs`` holds
        ``environment`` and ``out_dir``.

    Raises:
        ConfigurationError: no configurations, bad arguments, or ``out_dir`` holds another clip's sweep.

    Example:
        >>> df = sweep("data/clips/emulator-qvga", grid(skip=[1, 4], jpeg_quality=[50, 80]),  # doctest: +SKIP
        ...            "out/sweep1", repeats=2)
        >>> summarize(df)[["config_key", "fps_output", "displayed_recall"]]
    """
    # Long: the sweep's outline, one step per line; every step is a helper of its own.
    from tqdm.auto import tqdm

    _check_arguments(mode, repeats, warmup, busy_retries)
    config_list = unique(configs)
    if not config_list:
        raise ConfigurationError("expected at least one configuration, got none", field="configs")
    data = clip if isinstance(clip, ClipData) else load_clip(clip)
    store = _open_store(out_dir, data, resume)
    ref_config = choose_reference(config_list) if reference == "auto" else reference
    store.write_environment(
        _environment(
            data,
            config_list,
            ref_config,
            mode=mode,
            repeats=repeats,
            warmup=warmup,
            seed=seed,
            device=device,
            busy_threshold=busy_threshold,
            busy_retries=busy_retries,
        )
    )
    cache = DetectorCache(detector_factory or default_factory(device))
    half_ok = cuda_available() and device != "cpu"
    ref, ref_status = _reference(data, ref_config, reference is None, cache, store, progress)
    bar = tqdm(
        _pending_runs(config_list, repeats, seed, store, mode), desc="sweep", unit="run", disable=not progress
    )
    try:
        for position, repeat, cfg in bar:
            bar.set_postfix_str(cfg.key, refresh=False)
            row = _identity(cfg, repeat, position, mode)
            trace: RunTrace | None = None
            if cfg.half and not half_ok:
                row["status"] = HALF_NEEDS_CUDA
            else:
                trace = _run(row, data, cache, cfg, mode, warmup, busy_threshold, busy_retries)
            _add_accuracy(row, cfg, trace, ref, ref_config, ref_status, data)
            store.append(row, _frame_rows(cfg, repeat, mode, trace) if trace is not None else ())
            if on_result is not None:
                on_result(row)
    finally:
        gc.unfreeze()
        bar.close()
        store.write_parquet()
    return load_results(store.out_dir)


def _check_arguments(mode: str, repeats: int, warmup: int, busy_retries: int) -> None:
    if mode not in ("fast", "realtime"):
        raise ConfigurationError(f"expected mode 'fast' or 'realtime', got {mode!r}", field="mode")
    for name, value, low in (
        ("repeats", repeats, 1),
        ("warmup", warmup, 0),
        ("busy_retries", busy_retries, 0),
    ):
        if value < low:
            raise ConfigurationError(f"expected {name} >= {low}, got {value}", field=name)


def _open_store(out_dir: str | Path, data: ClipData, resume: bool) -> ResultsStore:
    """The sweep folder, emptied unless resuming; refused when it holds another clip's runs."""
    store = ResultsStore(out_dir)
    if not resume and store.out_dir.exists():
        for path in (store.results_csv, store.results_parquet, store.frames_csv, store.environment_json):
            path.unlink(missing_ok=True)
        shutil.rmtree(store.reference_dir, ignore_errors=True)
    store.check_appendable()
    previous = store.environment().get("clip", {}).get("fingerprint")
    if previous is not None and previous != data.fingerprint and store.done():
        raise ConfigurationError(
            f"expected {store.out_dir} to hold a sweep of clip {data.path}, got results of another clip "
            f"(fingerprint {previous[:12]}); use another output folder or resume=False",
            field="out_dir",
        )
    return store


def _environment(
    data: ClipData,
    configs: list[ProfileConfig],
    ref_config: ProfileConfig | None,
    **sweep_settings: object,
) -> dict[str, Any]:
    """What environment.json records: the machine, the clip and how the sweep was run."""
    environment = collect_environment([c.model for c in configs] + ([ref_config.model] if ref_config else []))
    environment["clip"] = {
        "path": str(data.path),
        "fingerprint": data.fingerprint,
        "frames": len(data),
        "duration_s": round(data.duration_s, 3),
        "fps": round(data.fps, 3),
        "size": list(data.size),
    }
    environment["schema_version"] = SCHEMA_VERSION
    environment["sweep"] = {
        **sweep_settings,
        "reference": ref_config.key if ref_config else None,
        "configs": [c.key for c in configs],
    }
    return environment


def _reference(
    data: ClipData,
    ref_config: ProfileConfig | None,
    none_requested: bool,
    cache: DetectorCache,
    store: ResultsStore,
    progress: bool,
) -> tuple[Reference | None, str]:
    """The reference boxes (None when there are none) and the accuracy status that follows."""
    if ref_config is None:
        why = "no reference requested" if none_requested else "no trained model in the sweep"
        return None, str(RunStatus("n/a", why))
    try:
        return _load_reference(data, ref_config, cache, store, progress), "ok"
    except Exception as exc:  # the sweep goes on without accuracy columns, saying why
        logger.warning("no accuracy columns: reference %s failed: %s", ref_config.key, exc)
        return None, str(RunStatus("n/a", f"reference failed ({_status_of_error(exc)})"))


def _pending_runs(
    configs: list[ProfileConfig], repeats: int, seed: int, store: ResultsStore, mode: Mode
) -> list[tuple[int, int, ProfileConfig]]:
    """(run order, repeat, configuration) of every run not yet in ``store``: each repeat shuffled."""
    runs: list[tuple[int, int, ProfileConfig]] = []
    rng = random.Random(seed)
    for repeat in range(repeats):
        order = list(configs)
        rng.shuffle(order)
        base = len(runs)
        runs.extend((base + i, repeat, cfg) for i, cfg in enumerate(order))
    done = store.done()
    pending = [(o, r, c) for o, r, c in runs if (c.key, r, mode) not in done]
    if len(pending) < len(runs):
        logger.info("resuming: %d of %d runs already done", len(runs) - len(pending), len(runs))
    return pending


def _run(
    row: dict[str, object],
    data: ClipData,
    cache: DetectorCache,
    cfg: ProfileConfig,
    mode: Mode,
    warmup: int,
    busy_threshold: float | None,
    busy_retries: int,
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
        trace, monitor, attempts = _measure(data, detector, cfg, mode, warmup, busy_threshold, busy_retries)
    except Exception as exc:  # a failed run is a row of the table, not the end of the sweep
        status = _status_of_error(exc)
        row["status"] = str(status)
        if status.kind == "error":
            logger.exception("run %s (repeat %s) failed", cfg.key, row["repeat"])
        return None
    row["status"] = "ok"
    metrics = trace_metrics(trace, data.fps)
    row.update(metrics)
    row["cpu_percent"] = monitor.cpu_percent
    video_s = metrics["video_s"]
    row["cpu_core_hours_per_camera_hour"] = monitor.cpu_s / video_s if video_s > 0 else math.nan
    row["rss_peak_mb"] = monitor.rss_peak_mb
    row["background_cpu_percent"] = monitor.background_cpu_percent
    row["attempts"] = attempts
    return trace


def _measure(
    data: ClipData,
    detector: Detector,
    cfg: ProfileConfig,
    mode: Mode,
    warmup: int,
    busy_threshold: float | None,
    busy_retries: int,
) -> tuple[RunTrace, ResourceMonitor, int]:
    """One measured replay; measured again (keeping the quietest) while other work shared the CPU."""
    from espdetect.encoders.jpeg import OpenCVJpegEncoder

    best: tuple[RunTrace, ResourceMonitor] | None = None
    attempts = 0
    while True:
        attempts += 1
        encoder = OpenCVJpegEncoder(quality=cfg.jpeg_quality)
        # Warm up outside the monitor so CPU % covers only the measured replay.
        params = cfg.detect_params()
        warm_up(
            data,
            FrameProcessor(detector, None, encoder, params=params, decode_reduce=cfg.decode_reduce),
            warmup,
        )
        _quiet_gc()
        with ResourceMonitor() as monitor:
            trace = replay(
                data,
                detector,
                encoder,
                mode=mode,
                skip=cfg.skip,
                decode_reduce=cfg.decode_reduce,
                params=params,
                warmup=0,
                motion=cfg.motion,
                keepalive=cfg.keepalive,
                tracking=cfg.tracking,
            )
        if best is None or monitor.background_cpu_percent < best[1].background_cpu_percent:
            best = (trace, monitor)
        busy = busy_threshold is not None and monitor.background_cpu_percent > busy_threshold
        if not busy or attempts > busy_retries:
            break
        logger.info(
            "%s: other processes used %.0f %% CPU during the run; measuring again",
            cfg.key,
            monitor.background_cpu_percent,
        )
    return best[0], best[1], attempts


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
    ref: Reference | None,
    ref_config: ProfileConfig | None,
    ref_status: str,
    clip: ClipData,
) -> None:
    if trace is None:
        row["accuracy_status"] = "n/a: not measured"
    elif not cfg.trained:
        row["accuracy_status"] = _UNTRAINED
    elif ref is None or ref_config is None:
        row["accuracy_status"] = ref_status
    else:
        row.update(accuracy_metrics(trace, ref, clip))
        row["accuracy_status"] = "ok"
        row["reference_key"] = ref_config.key
    if row.get("accuracy_status") != "ok":
        row.setdefault("reference_key", "")
