"""The results of a sweep: documented columns, an append-as-you-go store, loading and summaries.

A sweep folder holds::

    results.csv        one row per configuration and repeat, appended as each run finishes
    results.parquet    the same table, rewritten when the sweep stops (typed columns)
    frames.csv         one row per output frame of every run (latency distributions)
    environment.json   machine, versions, model checksums, clip and sweep settings
    reference/*.json   cached reference boxes (see `espdetect.profiling.accuracy`)

Every row carries the ``schema_version`` of the table it belongs to (`SCHEMA_VERSION`, also in
``environment.json``). A folder holds one version only: results of another version still load
(`load_results`; columns they lack are NaN) but are never appended to, since their rows would
mean something else; resuming such a sweep is refused with what to do instead.

Schema versions:

1. (no ``schema_version`` column) frame skip, input size, precision, confidence, decode scale,
   JPEG quality; displayed accuracy judged on the detections shown.
2. ``motion``, ``keepalive`` and ``tracking`` axes; model calls per minute, CPU per
   camera-hour, motion-gating counts and the ``motion`` stage; ``displayed_iou`` and
   ``displayed_false_boxes_per_frame``; displayed accuracy judged on the boxes drawn (moved
   along their tracks with tracking); frames with nothing to draw pass the camera's JPEG
   through in fast mode too, as the server does.
3. noise-aware measurement (`espdetect.profiling.calibration`): a speed probe before and after
   every run (``probe_before``, ``probe_after``, ``speed_index``, ``drift``, ``drift_flag``),
   a baseline configuration replayed alongside each run (``baseline_key``,
   ``baseline_fps_output``, ``fps_vs_baseline``), ``fps_output_norm`` (fps at the machine's
   typical speed, computed when the table loads) and ``label`` (identical settings
   measured twice); ``attempts`` also counts runs measured again because the machine drifted.
4. the camera's own settings (`espdetect.profiling.live`): ``camera_framesize`` and
   ``camera_quality`` axes (empty: camera unchanged), ``camera_size`` and
   ``camera_bytes_per_frame`` of the clip, ``accuracy_basis`` with the indicative
   ``count_vs_reference``, ``confidence_vs_reference`` and ``class_counts_vs_reference``, and
   ``fps_delivered`` (computed when the table loads). A version-3 folder is upgraded in place
   when resumed (`ResultsStore.check_appendable`): its rows are runs with the camera unchanged,
   which version 4 writes the same way, so nothing of two meanings is mixed.
5. ``node``: where the row was measured (sweeps on a Ray cluster,
   `espdetect.profiling.ray_sweep`): the Ray node's IP address and the first 8 hex digits of
   its node id, ``"10.0.0.5/3f2a9c1d"``, or for a sweep on this machine its hostname. A
   version-3 or 4 folder is upgraded in place when resumed: its rows keep ``node`` empty
   (measured by one machine, the one ``environment.json`` describes); every other column
   means what it meant.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import pandas as pd

from espdetect.exceptions import ConfigurationError
from espdetect.profiling.accuracy import ACCURACY_COLUMNS
from espdetect.profiling.calibration import Interval, log_t_interval
from espdetect.profiling.metrics import STAGES, STAT_NAMES

__all__ = [
    "COLUMNS",
    "FRAME_COLUMNS",
    "SCHEMA_VERSION",
    "SUMMARY_DOCS",
    "ResultsStore",
    "compare_configs",
    "load_results",
    "summarize",
]

logger = logging.getLogger(__name__)

#: Version of the results table (its columns and what they mean); see the module documentation.
SCHEMA_VERSION = 5
#: What each version added, for the message refusing to resume an older sweep.
_SCHEMA_CHANGES = {
    2: "motion, keepalive and tracking axes, model calls per minute, CPU per camera-hour and "
    "displayed IoU; displayed accuracy judged on the boxes drawn",
    3: "a speed probe around every run (speed index, drift flags), a baseline run paired with "
    "every run (fps_vs_baseline) and speed-normalised fps",
    4: "camera_framesize and camera_quality axes (live cameras), camera bytes per frame and "
    "indicative accuracy against the reference",
    5: "the node each row was measured on (sweeps on a Ray cluster)",
}
#: Columns version 4 added; a version-3 table without them resumes (camera unchanged).
ADDED_IN_4 = (
    "camera_framesize",
    "camera_quality",
    "camera_size",
    "camera_bytes_per_frame",
    "accuracy_basis",
    "count_vs_reference",
    "confidence_vs_reference",
    "class_counts_vs_reference",
    "fps_delivered",
)
#: Columns version 5 added; a version-3 or 4 table without them resumes (node left empty).
ADDED_IN_5 = ("node",)

_STAGE_DOC = {
    "motion": "motion test of motion gating (tiny grayscale decode, background difference); "
    "realtime: statistics of the pipeline's most recent 1000 tests, per-frame total from their mean",
    "decode": "JPEG decode for detection (reduced scale when decode_reduce > 1)",
    "preprocess": "detector preprocessing: letterbox, colour conversion, tensor",
    "inference": "the model's forward pass",
    "postprocess": "NMS and box rescaling",
    "render_decode": "full-scale decode for drawing (0 when detection decoded the frame already)",
    "annotate": "drawing boxes and labels",
    "encode": "JPEG encoding of the output frame",
}


def _columns() -> dict[str, str]:
    # Long: one entry per column of the results table, the documentation users read.
    cols: dict[str, str] = {
        "schema_version": "version of the results table this row belongs to (SCHEMA_VERSION)",
        "config_key": "stable id of the configuration (ProfileConfig.key)",
        "repeat": "repeat number, 0-based",
        "run_order": "position of this run in the sweep's (seeded, shuffled) order",
        "mode": "'fast' (every selected frame, as fast as possible) or 'realtime' (camera pace, drops)",
        "model": "model file or name as given",
        "model_name": "model file name",
        "model_format": "pytorch, onnx, openvino, yaml (untrained), ...",
        "trained": "False for a .yaml architecture (random weights: accuracy is n/a)",
        "imgsz": "detector input size, pixels",
        "half": "half-precision inference requested",
        "skip": "detect every Nth frame ('1', '2', ...) or 'auto'",
        "jpeg_quality": "output JPEG quality (1-100)",
        "conf": "detection confidence threshold",
        "decode_reduce": "decode scale divisor for detection ('1', '2', '4', '8' or 'auto')",
        "motion": "motion gating: the model runs only on offered frames where something moves, a "
        "tracked object is still moving or the keep-alive is due",
        "keepalive": "seconds between keep-alive model calls while nothing moves (n/a without motion)",
        "tracking": "boxes move along their tracks on frames without a model call (else they stay put)",
        "label": "name telling otherwise identical configurations apart (ProfileConfig.label; '' for none)",
        "camera_framesize": "the camera's frame size set for this run (a size name; '' = camera unchanged)",
        "camera_quality": "the camera's JPEG quality set for this run (firmware 4..63, lower is "
        "better; empty = camera unchanged); not the output jpeg_quality",
        "status": "'ok', 'n/a: <why>' (not applicable here, not measured) or 'error: <what>'",
        "accuracy_status": "'ok' or 'n/a: <why>' for the accuracy columns",
        "reference_key": "config_key of the reference the accuracy columns compare with",
        "started_at": "UTC time the run started (ISO 8601)",
        "node": "where the run was measured: on a Ray cluster the node's IP address and the first "
        "8 hex digits of its node id ('10.0.0.5/3f2a9c1d', environment.json ray.nodes has the "
        "rest); on this machine its hostname; '' for rows of schema 4 and older",
        "frames_in": "frames in the clip",
        "frames_detected": "frames the detector ran on",
        "frames_out": "output (annotated) frames produced",
        "frames_dropped": "frames never output (realtime mode: the pipeline was busy)",
        "frames_skipped": "output frames without detections of their own (stale or none drawn)",
        "wall_s": "seconds from the first frame in to the last frame out",
        "fps_processed": "frames detected per second",
        "fps_output": "frames output per second (fast mode: capacity, may exceed the camera)",
        "fps_camera": "frame rate of the recorded camera (a live sweep: the rate the camera delivered "
        "at this run's camera settings)",
        "camera_size": "WxH of the clip's frames",
        "camera_bytes_per_frame": "mean JPEG size of the camera's frames in the clip, bytes (what "
        "each frame costs over Wi-Fi)",
        "video_s": "camera time replayed: frames_in / fps_camera, seconds",
        "model_calls_per_min": "model calls (frames_detected) per minute of camera time (video_s)",
        "cpu_core_hours_per_camera_hour": (
            "process CPU seconds (user + system) during the measured replay / video_s: the CPU "
            "cores one live camera keeps busy (fast mode: the work of every frame, without idle time)"
        ),
        "motion_checks": "frames offered to the model that the motion test looked at (0 without motion)",
        "moving_frames": "motion-tested frames where something moved",
        "keepalive_calls": "model calls made only because nothing had moved for keepalive seconds",
        "gated_frames": "motion-tested frames kept from the model",
        "gated_fraction": "gated_frames / motion_checks: share of offered frames kept from the "
        "model (0 without motion)",
    }
    for stage in STAGES:
        for stat in STAT_NAMES:
            cols[f"{stage}_ms_{stat}"] = f"{stage}: {_STAGE_DOC[stage]}; {stat} over calls, ms"
        cols[f"{stage}_ms_per_frame"] = (
            f"{stage}: total time / output frames, ms (what the stacked plot shows)"
        )
    for stat in STAT_NAMES:
        cols[f"detect_ms_{stat}"] = f"whole detection call (decode + detector), {stat}, ms"
    for stat in STAT_NAMES:
        cols[f"latency_ms_{stat}"] = f"frame arrival to output JPEG ready, {stat}, ms"
    cols["latency_ms_max"] = "largest latency, ms"
    cols["bytes_per_frame"] = "mean output JPEG size, bytes"
    cols["bandwidth_kbps"] = (
        "bytes_per_frame x live output fps x 8 / 1000 (fast mode: fps capped at camera fps)"
    )
    cols["cpu_percent"] = "process CPU time / wall time x 100 (200 = two cores busy)"
    cols["rss_peak_mb"] = "peak resident memory of the process during the run, MiB"
    cols["background_cpu_percent"] = "CPU used by other processes during the run (same scale as cpu_percent)"
    cols["attempts"] = (
        "measurements made for this row (runs with background load, and with rerun_drifted runs "
        "during which the machine's speed moved, are measured again; the steadiest is kept)"
    )
    cols["probe_before"] = (
        "speed probe just before the run: calls/s of a fixed workload (one detector on one fixed "
        "frame of the clip, the same all sweep; environment.json sweep.probe), 1 / median call time"
    )
    cols["probe_after"] = "speed probe just after the run (and the baseline replayed alongside it), calls/s"
    cols["speed_index"] = "the machine's speed during the run: geometric mean of probe_before and probe_after"
    cols["drift"] = "probe_after / probe_before - 1: how much the machine's speed moved during the run"
    cols["drift_flag"] = "|drift| above the sweep's drift_threshold: the run's figures are less trustworthy"
    cols["baseline_key"] = "config_key of the baseline run paired with this one ('' without a baseline)"
    cols["baseline_fps_output"] = (
        "fps_output of the baseline configuration over the same stretch of time: fast mode "
        "replays it alongside this run, the two taking turns frame by frame (realtime: right "
        "before or after it)"
    )
    cols["fps_vs_baseline"] = (
        "fps_output / baseline_fps_output: speed relative to the baseline, the machine's "
        "changes of speed cancelled (both saw the same machine)"
    )
    cols["fps_output_norm"] = (
        "fps as if the machine had run at its typical speed: fps_output x median / this run's "
        "baseline_fps_output (the baseline took turns with the run), or x median / speed_index "
        "for runs without a baseline; medians over the sweep's runs (computed when the table loads)"
    )
    docs = {
        "recall": "detected frames: share of reference boxes matched (IoU >= 0.5, same class)",
        "precision": "detected frames: share of the configuration's boxes that match",
        "displayed_recall": (
            "every output frame, boxes as drawn (stale, or moved along tracks) vs that frame's reference"
        ),
        "displayed_precision": "every output frame: share of drawn boxes that match that frame's reference",
        "displayed_iou": (
            "every output frame: each reference box's IoU with its paired drawn box of its class "
            "(one-to-one, highest first; 0 if none), mean over all reference boxes"
        ),
        "displayed_false_boxes_per_frame": (
            "drawn boxes matching no reference box of their frame (IoU >= 0.5, same class), per output frame"
        ),
        "stale_recall": "output frames showing boxes of an earlier detection only: recall of the drawn boxes",
        "stale_precision": "output frames showing boxes of an earlier detection only: precision",
        "stale_frames": "output frames showing boxes detected on an earlier frame",
        "stale_age_ms_mean": "mean age of stale boxes (camera time from their frame to the one shown), ms",
        "blank_frames": "output frames shown before any detection existed",
    }
    for name in ACCURACY_COLUMNS:
        cols[name] = docs[name]
    cols["accuracy_basis"] = (
        "'per frame': the clip's frames correspond one to one with the reference clip's (the same "
        "clip, or an emulator's clips of one scene loop), so recall etc. compare frame by frame; "
        "'indicative': a live camera's clips show different moments, so only the *_vs_reference "
        "columns (counts and confidence) compare, and only roughly"
    )
    cols["count_vs_reference"] = (
        "detections per detected frame / the reference's, averaged over the reference's classes "
        "(indicative: more is not always better, false boxes count too)"
    )
    cols["confidence_vs_reference"] = "mean confidence of the detections / the reference's (indicative)"
    cols["class_counts_vs_reference"] = (
        "per class: detections per detected frame / the reference's, 'person 0.95, bus 1' (indicative)"
    )
    cols["fps_delivered"] = (
        "frames per second a live viewer gets: fps_output capped at fps_camera (computed when the "
        "table loads)"
    )
    return cols


#: Every column of a results table, in order, with its meaning and unit.
COLUMNS: dict[str, str] = _columns()

#: Columns of ``frames.csv``.
FRAME_COLUMNS = (
    "config_key",
    "repeat",
    "mode",
    "seq",
    "detected",
    "stale",
    "latency_ms",
    "render_ms",
    "bytes",
)

_TEXT_COLUMNS = ("config_key", "mode", "model", "model_name", "model_format", "skip", "decode_reduce",
                 "label", "status", "accuracy_status", "reference_key", "started_at",
                 "baseline_key", "camera_framesize", "camera_size", "accuracy_basis",
                 "class_counts_vs_reference", "node")  # fmt: skip
_BOOL_COLUMNS = ("trained", "half", "motion", "tracking", "drift_flag")
#: Columns computed when a table loads (left empty in results.csv).
_DERIVED_COLUMNS = ("fps_output_norm", "fps_delivered")
_INT_COLUMNS = ("schema_version", "repeat", "run_order", "imgsz", "jpeg_quality", "camera_quality")


def _cell(value: object) -> object:
    if isinstance(value, float) and math.isnan(value):
        return ""
    if isinstance(value, float):
        return repr(round(value, 6))
    return value


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    for col in df.columns:
        if col in _TEXT_COLUMNS:
            df[col] = df[col].astype("string").fillna("")
        elif col in _BOOL_COLUMNS:
            df[col] = df[col].map(lambda v: str(v).strip().lower() in ("true", "1")).astype(bool)
        elif col in _INT_COLUMNS:
            df[col] = pd.to_numeric(df[col], errors="coerce").astype("Int64")
        else:
            df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    return df


class ResultsStore:
    """The files of one sweep folder; rows are appended (and flushed) as runs finish.

    Example:
        >>> store = ResultsStore("out/sweep1")  # doctest: +SKIP
        >>> store.done()  # (config_key, repeat, mode) of the runs already recorded
        set()
    """

    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = Path(out_dir)
        self.results_csv = self.out_dir / "results.csv"
        self.results_parquet = self.out_dir / "results.parquet"
        self.frames_csv = self.out_dir / "frames.csv"
        self.environment_json = self.out_dir / "environment.json"
        self.reference_dir = self.out_dir / "reference"

    @staticmethod
    def _header(path: Path) -> list[str] | None:
        if not path.is_file() or path.stat().st_size == 0:
            return None
        with path.open(newline="", encoding="utf-8") as fh:
            return next(csv.reader(fh), [])

    def schema_versions(self) -> set[int]:
        """Schema versions of the rows in ``results.csv`` (1 for rows from before versions)."""
        header = self._header(self.results_csv)
        if header is None:
            return set()
        if "schema_version" not in header:
            return {1}
        with self.results_csv.open(newline="", encoding="utf-8") as fh:
            cells = {(r.get("schema_version") or "").strip() for r in csv.DictReader(fh)}
        return {int(c) for c in cells if c.isdigit()}

    def _refuse_other_schema(self, path: Path) -> NoReturn:
        versions = self.schema_versions()
        newest = max(versions, default=SCHEMA_VERSION)
        found = ", ".join(str(v) for v in sorted(versions))
        if newest < SCHEMA_VERSION:
            added = "; ".join(
                f"version {v} added {text}" for v, text in _SCHEMA_CHANGES.items() if v > newest
            )
            what = f"results of schema version {found} ({added})"
        elif newest > SCHEMA_VERSION:
            what = f"results of schema version {found}, written by a newer espdetect"
        else:
            what = f"{path.name} with columns other than this version's"
        raise ConfigurationError(
            f"expected {self.out_dir} to hold results of schema version {SCHEMA_VERSION}, got {what}; "
            "they cannot be resumed without mixing two meanings: start afresh with resume=False "
            "(espdetect profile --fresh) or use a new output folder (load_results still reads them)",
            field="out_dir",
        )

    def _check_header(self, path: Path, expected: Sequence[str]) -> bool:
        """True when ``path`` exists with the expected header; raises when its header differs."""
        header = self._header(path)
        if header is None:
            return False
        if header != list(expected):
            self._refuse_other_schema(path)
        return True

    def check_appendable(self) -> None:
        """Raise `ConfigurationError` now if new rows could not be appended (another schema).

        A version-3 or 4 table is upgraded to this version first (`upgrade`).
        """
        self.upgrade()
        self._check_header(self.results_csv, list(COLUMNS))
        self._check_header(self.frames_csv, FRAME_COLUMNS)
        if self.schema_versions() - {SCHEMA_VERSION}:
            self._refuse_other_schema(self.results_csv)

    def upgrade(self) -> bool:
        """Rewrite a version-3 or 4 ``results.csv`` as this version; True when it did.

        Version 4 only added the camera axes and columns: a version-3 row is a run with the camera
        unchanged, which is what a version-4 row with those columns empty says. Version 5 only
        added ``node``: older rows keep it empty (measured on the machine of ``environment.json``;
        sweeps of those versions ran on one machine).
        """
        header = self._header(self.results_csv)
        v4 = [c for c in COLUMNS if c not in ADDED_IN_5]
        v3 = [c for c in v4 if c not in ADDED_IN_4]
        versions = self.schema_versions()
        if not ((header == v3 and versions == {3}) or (header == v4 and versions == {4})):
            return False
        with self.results_csv.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        tmp = self.results_csv.with_suffix(".csv.tmp")
        with tmp.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(COLUMNS)
            for row in rows:
                row["schema_version"] = str(SCHEMA_VERSION)
                writer.writerow([row.get(col, "") for col in COLUMNS])
        tmp.replace(self.results_csv)
        environment = self.environment()
        if environment:
            self.write_environment({**environment, "schema_version": SCHEMA_VERSION})
        logger.info(
            "%s: upgraded results of schema version %d to %d (camera unchanged, node unknown)",
            self.out_dir,
            min(versions),
            SCHEMA_VERSION,
        )
        return True

    def done(self) -> set[tuple[str, int, str]]:
        """(config_key, repeat, mode) of every run already in ``results.csv``."""
        if self._header(self.results_csv) is None:
            return set()
        with self.results_csv.open(newline="", encoding="utf-8") as fh:
            return {(r["config_key"], int(r["repeat"]), r["mode"]) for r in csv.DictReader(fh)}

    def append(self, row: Mapping[str, object], frames: Iterable[Sequence[object]] = ()) -> None:
        """Append one run (its frame rows first, so a results row always has its frames)."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        frame_rows = list(frames)
        if frame_rows:
            has_header = self._check_header(self.frames_csv, FRAME_COLUMNS)
            with self.frames_csv.open("a", newline="", encoding="utf-8") as fh:
                writer = csv.writer(fh, lineterminator="\n")
                if not has_header:
                    writer.writerow(FRAME_COLUMNS)
                writer.writerows([_cell(v) for v in r] for r in frame_rows)
        unknown = sorted(set(row) - set(COLUMNS))
        if unknown:
            raise ValueError(f"expected only documented columns, got {', '.join(unknown)}")
        if row.get("schema_version", SCHEMA_VERSION) != SCHEMA_VERSION:
            raise ValueError(
                f"expected a row of schema version {SCHEMA_VERSION}, got {row['schema_version']}"
            )
        row = {**row, "schema_version": SCHEMA_VERSION}
        has_header = self._check_header(self.results_csv, list(COLUMNS))
        with self.results_csv.open("a", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            if not has_header:
                writer.writerow(COLUMNS)
            writer.writerow([_cell(row.get(col, math.nan)) for col in COLUMNS])

    def write_environment(self, environment: Mapping[str, Any]) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.environment_json.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(environment, indent=2, default=str) + "\n", encoding="utf-8")
        tmp.replace(self.environment_json)

    def environment(self) -> dict[str, Any]:
        """The sidecar, or an empty dict when there is none yet."""
        if not self.environment_json.is_file():
            return {}
        data = json.loads(self.environment_json.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}

    def load(self) -> pd.DataFrame:
        """The results table with typed columns (empty, with all columns, when there are none).

        Files written by an older version load too: columns it lacked are NaN, and
        ``schema_version`` is 1 for rows from before versions.
        """
        if self._header(self.results_csv) is None:
            return _typed(pd.DataFrame({c: pd.Series(dtype="object") for c in COLUMNS}))
        df = pd.read_csv(self.results_csv, dtype=str, keep_default_na=False, na_values=[""])
        if "schema_version" not in df.columns:
            df["schema_version"] = "1"
        for col in COLUMNS:
            if col not in df.columns:
                df[col] = ""
        extra = [c for c in df.columns if c not in COLUMNS]
        return _derive(_typed(df[[*COLUMNS, *extra]].replace("", None)))

    def load_frames(self) -> pd.DataFrame:
        """Per-frame rows of the runs present in ``results.csv`` (reruns of a run keep the last)."""
        if self._header(self.frames_csv) is None:
            return pd.DataFrame({c: pd.Series(dtype="object") for c in FRAME_COLUMNS})
        frames = pd.read_csv(self.frames_csv, dtype={"config_key": str, "mode": str})
        frames = frames.drop_duplicates(["config_key", "repeat", "mode", "seq"], keep="last")
        done = self.done()
        ids = zip(frames["config_key"], frames["repeat"], frames["mode"], strict=True)
        keep = [(k, int(r), m) in done for k, r, m in ids]
        return frames[keep].reset_index(drop=True)

    def write_parquet(self) -> Path | None:
        """Rewrite ``results.parquet`` from ``results.csv``; None when there are no rows or no pyarrow.

        Parquet keeps the column types; the CSV holds the same rows, so without pyarrow (an
        optional package: ``pip install pyarrow``) nothing is lost.
        """
        if importlib.util.find_spec("pyarrow") is None:
            logger.info("results.parquet not written: pyarrow is not installed (results.csv has it all)")
            return None
        df = self.load()
        if df.empty:
            return None
        df.to_parquet(self.results_parquet, index=False)
        return self.results_parquet


def _derive(df: pd.DataFrame) -> pd.DataFrame:
    """Fill the columns computed from the whole table (`_DERIVED_COLUMNS`).

    ``fps_output_norm`` rescales each run to the machine's typical speed. The speed of a run is
    its paired baseline run's fps where there is one (it took turns with the run, so it saw the
    same machine), else the speed probe around it; typical is the median over the sweep's runs
    (with the same baseline: a live sweep pairs each camera setting with the baseline replayed
    on that setting's clip, whose speed belongs to the setting, not to the machine).
    ``fps_delivered`` is ``fps_output`` capped at the camera's frame rate.
    """
    ok = df["status"] == "ok"
    norm = pd.Series(math.nan, index=df.index, dtype="float64")
    paired = ok & df["baseline_fps_output"].gt(0)
    for _, group in df[paired].groupby(df["baseline_key"][paired], sort=False):
        typical = float(group["baseline_fps_output"].median())
        norm[group.index] = group["fps_output"] * typical / group["baseline_fps_output"]
    probed = ok & df["speed_index"].gt(0) & norm.isna()
    if probed.any():
        typical = float(df["speed_index"][probed].median())
        norm[probed] = df["fps_output"][probed] * typical / df["speed_index"][probed]
    df["fps_output_norm"] = norm
    camera = df["fps_camera"].where(df["fps_camera"].gt(0))
    df["fps_delivered"] = df["fps_output"].where(camera.isna() | df["fps_output"].le(camera), camera)
    return df


def load_results(out_dir: str | Path) -> pd.DataFrame:
    """A sweep folder's results; ``df.attrs`` holds ``environment`` and ``out_dir``.

    Example:
        >>> df = load_results("out/sweep1")  # doctest: +SKIP
        >>> df.groupby("config_key")["fps_output"].median()  # doctest: +SKIP
    """
    store = ResultsStore(out_dir)
    if not store.results_csv.is_file():
        raise FileNotFoundError(f"expected a sweep folder with results.csv, got none in {store.out_dir}")
    df = store.load()
    df.attrs["environment"] = store.environment()
    df.attrs["out_dir"] = str(store.out_dir)
    return df


#: Columns `summarize` adds to the per-run columns, with their meaning.
SUMMARY_DOCS: dict[str, str] = {
    "n_repeats": "measured repeats of the configuration",
    "fps_processed_spread_pct": "(max - min) / median fps_processed over repeats, percent",
    "fps_output_spread_pct": "(max - min) / median fps_output over repeats, percent: moves with the machine",
    "fps_output_ci_low": "95 % confidence interval of fps_output (geometric mean over repeats; "
    "Student-t on logs): lower end",
    "fps_output_ci_high": "95 % confidence interval of fps_output: upper end",
    "fps_output_norm_spread_pct": "(max - min) / median fps_output_norm over repeats, percent",
    "fps_vs_baseline": "geometric mean over repeats of fps_vs_baseline (each run against the "
    "baseline replayed alongside it)",
    "fps_vs_baseline_ci_low": "95 % confidence interval of fps_vs_baseline (Student-t on log "
    "ratios, paired per repeat): lower end",
    "fps_vs_baseline_ci_high": "95 % confidence interval of fps_vs_baseline: upper end",
    "drifted_runs": "repeats flagged because the machine's speed moved during them (drift_flag)",
}


def _spread_pct(values: pd.Series) -> float:
    values = values.dropna()
    if values.empty:
        return math.nan
    return float((values.max() - values.min()) / values.median() * 100.0)


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration (and mode): medians over repeats, plus how much repeats disagree.

    ``n_repeats`` counts measured repeats; ``*_spread_pct`` are (max - min) / median x 100 over
    them, raw (``fps_output``, moving with the machine) and speed-normalised
    (``fps_output_norm``). ``fps_vs_baseline`` is the geometric mean of each run's ratio to the
    baseline replayed alongside it, with a 95 % interval (``_ci_low``, ``_ci_high``, Student-t on log
    ratios: honest at 3 repeats); ``fps_output_ci_*`` is the raw fps's interval. ``node`` names
    every node the repeats ran on (comma-separated). See `SUMMARY_DOCS`.

    Example:
        >>> summarize(load_results("out/sweep1"))[["config_key", "fps_output"]]  # doctest: +SKIP
    """
    if results.empty:
        return results.copy()
    keys = ["config_key", "mode"]
    numeric = [c for c in results.columns if c not in keys and pd.api.types.is_float_dtype(results[c])]
    skipped = {*keys, *numeric, "repeat", "run_order", "drift_flag"}
    first = [c for c in results.columns if c not in skipped]
    ok = results["status"] == "ok"
    # Measured repeats when a configuration has any, else its (unmeasured) rows for the status.
    has_ok = ok.groupby([results[k] for k in keys]).transform("any")
    source = results[ok | ~has_ok]
    grouped = source.groupby(keys, sort=False)
    # One copy defragments the joined table before columns are replaced in it.
    out = grouped[first].first().join(grouped[numeric].median()).copy()
    if "node" in out.columns:
        # Repeats on a Ray cluster run on several nodes: name them all, not the first.
        out["node"] = grouped["node"].agg(lambda s: ", ".join(sorted({str(v) for v in s} - {""})))
    measured = results[ok].groupby(keys, sort=False)
    added: dict[str, object] = {"n_repeats": measured.size().reindex(out.index, fill_value=0)}
    for col in ("fps_processed", "fps_output", "fps_output_norm"):
        if col in results.columns:
            added[f"{col}_spread_pct"] = measured[col].agg(_spread_pct).reindex(out.index)
    for col in ("fps_output", "fps_vs_baseline"):
        if col not in results.columns:
            continue
        values = measured[col].agg(list).reindex(out.index)
        intervals = [log_t_interval(v if isinstance(v, list) else []) for v in values]
        if col == "fps_vs_baseline":
            out[col] = [iv.center for iv in intervals]
        added[f"{col}_ci_low"] = [iv.low for iv in intervals]
        added[f"{col}_ci_high"] = [iv.high for iv in intervals]
    if "drift_flag" in results.columns:
        added["drifted_runs"] = measured["drift_flag"].sum().reindex(out.index, fill_value=0).astype(int)
    out = pd.concat([out, pd.DataFrame(added, index=out.index)], axis=1)
    return out.reset_index()[[*keys, *first, *numeric, *added]]


def compare_configs(results: pd.DataFrame, key_a: str, key_b: str, confidence: float = 0.95) -> Interval:
    """How much faster ``key_a`` runs than ``key_b`` (fps_output ratio), with its confidence interval.

    Paired per repeat: with a baseline, each repeat's ratio is ``a / b`` of their ratios to the
    baseline runs next to them (``fps_vs_baseline``; ``a``'s own ratio when ``b`` is the baseline),
    so the machine's drift between repeats cancels; without one, the raw fps of the two
    configurations in the same repeat. The interval is Student-t on the log ratios
    (`log_t_interval`).

    Raises:
        ValueError: a key without measured runs.

    Example:
        >>> iv = compare_configs(df, "m.onnx@640-...-q80", "m.onnx@640-...-q80-label_b")  # doctest: +SKIP
        >>> iv.contains(1.0), iv.half_width_pct  # doctest: +SKIP
        (True, 2.1)
    """
    ok = results[results["status"] == "ok"]
    a = ok[ok["config_key"] == key_a].set_index("repeat")
    b = ok[ok["config_key"] == key_b].set_index("repeat")
    to_a, to_b = a["fps_vs_baseline"], b["fps_vs_baseline"]
    if not a.empty and (a["baseline_key"] == key_b).all() and to_a.notna().all():
        # b is the baseline (measured next to every run of a, whether or not it has rows of its own).
        return log_t_interval(to_a.tolist(), confidence)
    if not b.empty and (b["baseline_key"] == key_a).all() and to_b.notna().all():
        return log_t_interval((1.0 / to_b).tolist(), confidence)
    for key, rows in ((key_a, a), (key_b, b)):
        if rows.empty:
            raise ValueError(f"expected measured runs of {key!r}, got none")
    paired = to_a.notna().all() and to_b.notna().all()
    # Aligned on the repeat; without baseline runs, the raw fps of the same repeat.
    ratios = to_a / to_b if paired else a["fps_output"] / b["fps_output"]
    return log_t_interval(ratios.dropna().tolist(), confidence)
