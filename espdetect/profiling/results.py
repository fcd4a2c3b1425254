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
from espdetect.profiling.metrics import STAGES, STAT_NAMES

__all__ = [
    "COLUMNS",
    "FRAME_COLUMNS",
    "SCHEMA_VERSION",
    "ResultsStore",
    "load_results",
    "summarize",
]

logger = logging.getLogger(__name__)

#: Version of the results table (its columns and what they mean); see the module documentation.
SCHEMA_VERSION = 2
#: What each version added, for the message refusing to resume an older sweep.
_SCHEMA_CHANGES = {
    2: "motion, keepalive and tracking axes, model calls per minute, CPU per camera-hour and "
    "displayed IoU; displayed accuracy judged on the boxes drawn",
}

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
        "status": "'ok', 'n/a: <why>' (not applicable here, not measured) or 'error: <what>'",
        "accuracy_status": "'ok' or 'n/a: <why>' for the accuracy columns",
        "reference_key": "config_key of the reference the accuracy columns compare with",
        "started_at": "UTC time the run started (ISO 8601)",
        "frames_in": "frames in the clip",
        "frames_detected": "frames the detector ran on",
        "frames_out": "output (annotated) frames produced",
        "frames_dropped": "frames never output (realtime mode: the pipeline was busy)",
        "frames_skipped": "output frames without detections of their own (stale or none drawn)",
        "wall_s": "seconds from the first frame in to the last frame out",
        "fps_processed": "frames detected per second",
        "fps_output": "frames output per second (fast mode: capacity, may exceed the camera)",
        "fps_camera": "frame rate of the recorded camera",
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
    cols["attempts"] = "measurements made for this row (runs with background load are measured again)"
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
                 "status", "accuracy_status", "reference_key", "started_at")  # fmt: skip
_BOOL_COLUMNS = ("trained", "half", "motion", "tracking")
_INT_COLUMNS = ("schema_version", "repeat", "run_order", "imgsz", "jpeg_quality")


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
        """Raise `ConfigurationError` now if new rows could not be appended (another schema)."""
        self._check_header(self.results_csv, list(COLUMNS))
        self._check_header(self.frames_csv, FRAME_COLUMNS)
        if self.schema_versions() - {SCHEMA_VERSION}:
            self._refuse_other_schema(self.results_csv)

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
        return _typed(df[[*COLUMNS, *extra]].replace("", None))

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


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration (and mode): medians over repeats, plus how much repeats disagree.

    ``n_repeats`` counts measured repeats; ``fps_processed_spread_pct`` and
    ``fps_output_spread_pct`` are (max - min) / median x 100 over them.

    Example:
        >>> summarize(load_results("out/sweep1"))[["config_key", "fps_output"]]  # doctest: +SKIP
    """
    if results.empty:
        return results.copy()
    keys = ["config_key", "mode"]
    numeric = [c for c in results.columns if c not in keys and pd.api.types.is_float_dtype(results[c])]
    skipped = {*keys, *numeric, "repeat", "run_order"}
    first = [c for c in results.columns if c not in skipped]
    ok = results["status"] == "ok"
    # Measured repeats when a configuration has any, else its (unmeasured) rows for the status.
    has_ok = ok.groupby([results[k] for k in keys]).transform("any")
    source = results[ok | ~has_ok]
    grouped = source.groupby(keys, sort=False)
    out = grouped[first].first().join(grouped[numeric].median())
    measured = results[ok].groupby(keys, sort=False)
    out["n_repeats"] = measured.size().reindex(out.index, fill_value=0)
    for col in ("fps_processed", "fps_output"):
        if col not in results.columns:
            continue
        stats = measured[col].agg(["min", "max", "median"]).reindex(out.index)
        out[f"{col}_spread_pct"] = (stats["max"] - stats["min"]) / stats["median"] * 100.0
    return out.reset_index()[
        [*keys, *first, *numeric, "n_repeats", *[c for c in out.columns if c.endswith("_spread_pct")]]
    ]
