"""`recommend`: the best measured configuration under fps, latency and accuracy constraints.

Among the configurations that reach ``target_fps`` and stay within ``max_latency_ms`` (medians
over repeats), the most accurate wins (``displayed_recall`` by default: what a viewer sees,
stale boxes included), ties going to the fastest. Rows whose accuracy is unknown (untrained
``.yaml`` models) are never recommended over rows with a known accuracy, and never when
``min_recall`` is set. When nothing meets the constraints, the result says which constraint
fails and lists the closest candidates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import pandas as pd

from espdetect.exceptions import EspdetectError
from espdetect.pipeline import PipelineConfig
from espdetect.profiling.config import AXES, ProfileConfig
from espdetect.profiling.results import summarize

__all__ = ["NoConfigurationMeets", "Recommendation", "config_from_row", "recommend"]

_SHOWN = (
    "config_key",
    "fps_output",
    "fps_delivered",
    "camera_bytes_per_frame",
    "fps_vs_baseline",
    "fps_processed",
    "latency_ms_p95",
    "displayed_recall",
    "displayed_iou",
    "recall",
    "model_calls_per_min",
    "cpu_core_hours_per_camera_hour",
)


class NoConfigurationMeets(EspdetectError):
    """No measured configuration meets the constraints; ``reasons`` says which fail and why.

    ``candidates`` holds the closest configurations (smallest total relative shortfall).
    """

    def __init__(self, reasons: Sequence[str], candidates: pd.DataFrame) -> None:
        self.reasons = tuple(reasons)
        self.candidates = candidates
        lines = ["no configuration meets the constraints:", *(f"  - {r}" for r in self.reasons)]
        if not candidates.empty:
            lines.append("closest candidates:")
            lines.extend(f"  {_describe_row(row)}" for _, row in candidates.iterrows())
        super().__init__("\n".join(lines))

    def __repr__(self) -> str:
        return f"NoConfigurationMeets(reasons={self.reasons!r})"


@dataclass(frozen=True)
class Recommendation:
    """What `recommend` found.

    ``ok`` is False when nothing meets the constraints; then ``config`` is None, ``reasons``
    says why and ``candidates`` holds the closest configurations. When ``ok``, ``metrics``
    holds the chosen configuration's medians and ``candidates`` every feasible configuration,
    best first. ``swept_axes`` names the `AXES` that took more than one value in the results
    (a server config states those settings; others keep the server's defaults).
    """

    ok: bool
    config: ProfileConfig | None
    metrics: dict[str, float | str]
    reasons: tuple[str, ...]
    candidates: pd.DataFrame = field(repr=False)
    constraints: dict[str, float | None]
    accuracy_metric: str = "displayed_recall"
    fps_metric: str = "fps_output"
    latency_metric: str = "latency_ms_p95"
    swept_axes: tuple[str, ...] = ()

    def raise_if_unmet(self) -> Recommendation:
        """Return self when ``ok``, else raise `NoConfigurationMeets`."""
        if not self.ok:
            raise NoConfigurationMeets(self.reasons, self.candidates)
        return self

    def summary(self) -> str:
        """A few lines for a terminal or a report."""
        wanted = ", ".join(f"{k} {_fmt(v)}" for k, v in self.constraints.items() if v is not None) or "none"
        if not self.ok or self.config is None:
            lines = [f"No configuration meets the constraints ({wanted}):"]
            lines.extend(f"  - {r}" for r in self.reasons)
            if not self.candidates.empty:
                lines.append("Closest candidates:")
                lines.extend(f"  {_describe_row(row)}" for _, row in self.candidates.iterrows())
            return "\n".join(lines)
        m = self.metrics
        lines = [
            f"Recommended: {self.config.key}  (constraints: {wanted})",
            f"  {self.fps_metric} {_fmt(m.get(self.fps_metric))}, "
            f"{self.latency_metric} {_fmt(m.get(self.latency_metric))} ms, "
            f"{self.accuracy_metric} {_fmt(m.get(self.accuracy_metric))}, "
            f"CPU {_fmt(m.get('cpu_percent'))} %, {_fmt(m.get('bandwidth_kbps'))} kbit/s",
            f"  displayed_iou {_fmt(m.get('displayed_iou'))}, "
            f"{_fmt(m.get('model_calls_per_min'))} model calls/min, "
            f"{_fmt(m.get('cpu_core_hours_per_camera_hour'))} CPU core-hours per camera-hour",
        ]
        lines.extend(f"  note: {r}" for r in self.reasons)
        return "\n".join(lines)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def _describe_row(row: pd.Series) -> str:
    parts = [str(row.get("config_key", "?"))]
    for col in _SHOWN[1:]:
        if col in row.index:
            parts.append(f"{col}={_fmt(row[col])}")
    if "shortfall" in row.index:
        parts.append(f"shortfall={_fmt(row['shortfall'])}")
    return "  ".join(parts)


def config_from_row(row: pd.Series) -> ProfileConfig:
    """The `ProfileConfig` a results row describes.

    Example:
        >>> config_from_row(summarize(results).iloc[0]).key  # doctest: +SKIP
    """
    # Tables from before motion and tracking (schema 1) have neither: both were off.
    keepalive = _number(row.get("keepalive"))
    return ProfileConfig(
        model=str(row["model"]),
        imgsz=int(row["imgsz"]),
        half=bool(row["half"]),
        skip=_int_or_auto(row["skip"]),  # type: ignore[arg-type]
        jpeg_quality=int(row["jpeg_quality"]),
        conf=float(row["conf"]),
        decode_reduce=_int_or_auto(row["decode_reduce"]),  # type: ignore[arg-type]
        motion=_flag(row.get("motion")),
        keepalive=PipelineConfig.keepalive if keepalive is None else keepalive,
        tracking=_flag(row.get("tracking")),
        # Tables from before labels (schema 2 and older) have none.
        label=label if isinstance(label := row.get("label"), str) else "",
        # Tables from before the camera axes (schema 3 and older): the camera unchanged.
        camera_framesize=framesize
        if isinstance(framesize := row.get("camera_framesize"), str) and framesize
        else None,
        camera_quality=int(quality) if (quality := _number(row.get("camera_quality"))) is not None else None,
    )


def _flag(value: object) -> bool:
    """A boolean cell; anything else (a missing column, NaN, NA) is off."""
    return bool(value) if isinstance(value, bool | np.bool_) else False


def _number(value: object) -> float | None:
    """A finite number cell; None when missing."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | float | np.number):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _metrics(row: pd.Series | None) -> dict[str, float | str]:
    if row is None:
        return {}
    return {str(k): v for k, v in row.items() if isinstance(v, float | str)}


def _int_or_auto(value: object) -> int | str:
    text = str(value).strip()
    return "auto" if text == "auto" else int(float(text))


def recommend(
    results: pd.DataFrame,
    *,
    target_fps: float | None = None,
    max_latency_ms: float | None = None,
    min_recall: float | None = None,
    fps_metric: str = "fps_output",
    latency_metric: str = "latency_ms_p95",
    accuracy_metric: str = "displayed_recall",
    strict: bool = False,
    n_candidates: int = 3,
) -> Recommendation:
    """Pick the most accurate configuration meeting the constraints (ties: the fastest).

    Args:
        results: a sweep's results (one row per run; medians over repeats are used) or a summary.
        target_fps: least ``fps_metric`` accepted.
        max_latency_ms: largest ``latency_metric`` accepted.
        min_recall: least ``accuracy_metric`` accepted.
        strict: raise `NoConfigurationMeets` instead of returning a result with ``ok`` False.

    Example:
        >>> rec = recommend(load_results("out/sweep1"), target_fps=10, min_recall=0.8)  # doctest: +SKIP
        >>> rec.ok, rec.config.key
        (True, 'yolov8n_int8.onnx@640-fp32-conf0.25-reduceauto-skip2-q80')
    """
    # Long: the decision reads top to bottom (checks, the pick, or why none qualifies); the
    # parts that compute are helpers (_Checks).
    summary = summarize(results) if "repeat" in results.columns else results.copy()
    constraints = {"target_fps": target_fps, "max_latency_ms": max_latency_ms, "min_recall": min_recall}
    for name in (fps_metric, latency_metric, accuracy_metric):
        if name not in summary.columns:
            raise ValueError(f"expected results with a {name!r} column, got none")
    measured = summary[summary["status"] == "ok"] if "status" in summary.columns else summary
    measured = measured[measured[fps_metric].notna()].copy()
    # keepalive is NaN where motion is off: only values that applied count.
    swept = tuple(a for a in AXES if a in summary.columns and summary[a].dropna().astype(str).nunique() > 1)

    def result(
        ok: bool, row: pd.Series | None, reasons: list[str], candidates: pd.DataFrame
    ) -> Recommendation:
        rec = Recommendation(
            ok=ok,
            config=config_from_row(row) if row is not None else None,
            metrics=_metrics(row),
            reasons=tuple(reasons),
            candidates=candidates.reset_index(drop=True),
            constraints=constraints,
            accuracy_metric=accuracy_metric,
            fps_metric=fps_metric,
            latency_metric=latency_metric,
            swept_axes=swept,
        )
        return rec.raise_if_unmet() if strict else rec

    if measured.empty:
        statuses = sorted(set(summary.get("status", pd.Series(dtype=str)).astype(str)))
        return result(
            False, None, [f"no configuration was measured (statuses: {', '.join(statuses)})"], measured
        )

    checks = _Checks.of(
        measured, (fps_metric, latency_metric, accuracy_metric), target_fps, max_latency_ms, min_recall
    )
    if checks.feasible.any():
        feasible = checks.feasible
        pool = measured[feasible].assign(_acc=checks.accuracy[feasible].round(4).fillna(-1.0))
        pool = pool.sort_values(["_acc", fps_metric], ascending=[False, False]).drop(columns="_acc")
        best = pool.iloc[0]
        reasons = []
        if math.isnan(float(best[accuracy_metric])):
            reasons.append(
                f"no configuration meeting the constraints has a known {accuracy_metric} "
                "(untrained models?); picked the fastest"
            )
        return result(True, best, reasons, pool[[c for c in _SHOWN if c in pool.columns]])
    reasons = checks.why_unmet(measured, (fps_metric, latency_metric, accuracy_metric), constraints)
    closest = measured.assign(shortfall=checks.shortfall(target_fps, max_latency_ms, min_recall)).sort_values(
        ["shortfall", fps_metric], ascending=[True, False]
    )
    columns = [c for c in (*_SHOWN, "shortfall") if c in closest.columns]
    return result(False, None, reasons, closest[columns].head(n_candidates))


class _Checks(NamedTuple):
    """Each measured configuration's metrics and which constraints it meets (one row each)."""

    fps: pd.Series
    latency: pd.Series
    accuracy: pd.Series
    fast_enough: pd.Series
    quick_enough: pd.Series
    accurate_enough: pd.Series
    #: Configurations with a known accuracy (not an untrained model).
    known: pd.Series
    feasible: pd.Series

    @classmethod
    def of(
        cls,
        measured: pd.DataFrame,
        metrics: tuple[str, str, str],
        target_fps: float | None,
        max_latency_ms: float | None,
        min_recall: float | None,
    ) -> _Checks:
        fps, latency, accuracy = (measured[name].astype(float) for name in metrics)
        anything = pd.Series(True, index=measured.index)
        fast_enough = fps >= target_fps if target_fps is not None else anything
        quick_enough = latency <= max_latency_ms if max_latency_ms is not None else anything
        accurate_enough = accuracy >= min_recall if min_recall is not None else anything
        known = accuracy.notna()
        feasible = fast_enough & quick_enough & accurate_enough & (known | (min_recall is None))
        return cls(fps, latency, accuracy, fast_enough, quick_enough, accurate_enough, known, feasible)

    def why_unmet(
        self, measured: pd.DataFrame, metrics: tuple[str, str, str], constraints: dict[str, float | None]
    ) -> list[str]:
        """What stands between the measured configurations and the constraints, in words."""
        fps_metric, latency_metric, accuracy_metric = metrics
        target_fps, max_latency_ms, min_recall = (
            constraints["target_fps"],
            constraints["max_latency_ms"],
            constraints["min_recall"],
        )

        def best_of(values: pd.Series, largest: bool) -> str:
            pos = int(values.to_numpy(float).argmax() if largest else values.to_numpy(float).argmin())
            return f"{_fmt(float(values.iloc[pos]))} ({measured.loc[values.index[pos], 'config_key']})"

        reasons: list[str] = []
        if target_fps is not None and not self.fast_enough.any():
            reasons.append(
                f"no configuration reaches {target_fps:g} {fps_metric}; "
                f"the fastest has {best_of(self.fps, True)}"
            )
        if max_latency_ms is not None and not self.quick_enough.any():
            reasons.append(
                f"no configuration keeps {latency_metric} <= {max_latency_ms:g} ms; "
                f"the lowest is {best_of(self.latency, False)}"
            )
        if min_recall is not None and not (self.accurate_enough & self.known).any():
            among = self.accuracy[self.known]
            top = f"the best is {best_of(among, True)}" if not among.empty else "none has a known accuracy"
            reasons.append(f"no configuration reaches {accuracy_metric} >= {min_recall:g}; {top}")
        speed_ok = self.fast_enough & self.quick_enough
        if not reasons and not speed_ok.any():
            reasons.append(
                f"{int(self.fast_enough.sum())} configurations reach {target_fps:g} {fps_metric} and "
                f"{int(self.quick_enough.sum())} keep {latency_metric} <= {max_latency_ms:g} ms, "
                "but none does both"
            )
        if not reasons and min_recall is not None:
            among = self.accuracy[speed_ok & self.known]
            if among.empty:
                reasons.append(
                    f"the {int(speed_ok.sum())} configurations fast enough have no known {accuracy_metric} "
                    "(untrained models only)"
                )
            else:
                reasons.append(
                    f"the {int(speed_ok.sum())} configurations fast enough reach {accuracy_metric} "
                    f"{best_of(among, True)} at best, below {min_recall:g}"
                )
        return reasons

    def shortfall(
        self, target_fps: float | None, max_latency_ms: float | None, min_recall: float | None
    ) -> pd.Series:
        """How far each configuration is from the constraints (0 where it meets them), summed."""
        total = pd.Series(0.0, index=self.fps.index)
        if target_fps is not None:
            total += ((target_fps - self.fps) / target_fps).clip(lower=0)
        if max_latency_ms is not None:
            total += ((self.latency - max_latency_ms) / max_latency_ms).clip(lower=0)
        if min_recall is not None:
            total += ((min_recall - self.accuracy.fillna(0.0)) / max(min_recall, 1e-9)).clip(lower=0)
        return total
