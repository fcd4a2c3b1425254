"""Sweep results a person can read: the swept settings as columns, rounded, in the order of the
recommendation, the recommended row highlighted.

`summarize` keeps every column a sweep measures, at full precision, one row per configuration
in run order, named by a long key (``yolov8n_int8.onnx@640-fp32-conf0.25-reduceauto-skip2-q80``).
`readable_summary` turns that into the table to look at: one column per setting that differs
between configurations, the figures that decide (speed, its interval against the baseline,
accuracy, latency, CPU, bandwidth) rounded to what the machine's noise allows, and the rows
sorted as `recommend` ranks them. `style_summary` highlights the recommended row (a pandas
Styler, for notebooks and HTML).

Example:
    >>> rec = recommend(results, target_fps=10)  # doctest: +SKIP
    >>> style_summary(readable_summary(results, rec))  # doctest: +SKIP
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Final

import pandas as pd

from espdetect.profiling.config import SETTING_COLUMNS
from espdetect.profiling.recommend import Recommendation
from espdetect.profiling.results import compare_configs, summarize

if TYPE_CHECKING:
    from pandas.io.formats.style import Styler

__all__ = [
    "CAMERA_METRICS",
    "INTERVAL_COLUMN",
    "READABLE_METRICS",
    "margin_over_runner_up",
    "readable_summary",
    "style_summary",
]

#: Figures shown, with their decimals: fps to 0.1 (repeats differ by more), ratios and accuracy
#: to 0.01, milliseconds, CPU percent and kbit/s whole. ``fps_vs_baseline`` is followed by its
#: 95 % interval in one column.
READABLE_METRICS: Final[dict[str, int]] = {
    "fps_output": 1,
    "fps_vs_baseline": 2,
    "displayed_recall": 2,
    "recall": 2,
    "latency_ms_p95": 0,
    "cpu_percent": 0,
    "bandwidth_kbps": 0,
}
#: Shown besides when the camera's own settings were swept (`espdetect.profiling.live`).
CAMERA_METRICS: Final[dict[str, int]] = {"camera_bytes_per_frame": 0, "fps_delivered": 1}
INTERVAL_COLUMN: Final = "95 % interval"
_HIGHLIGHT: Final = "background-color: #fff3c4; font-weight: bold"


def _settings(summary: pd.DataFrame) -> list[str]:
    """The setting columns that take more than one value (all of them NaN-free or not)."""
    return [
        c for c in SETTING_COLUMNS if c in summary.columns and summary[c].dropna().astype(str).nunique() > 1
    ] or [c for c in ("imgsz", "skip") if c in summary.columns]


def _ranked(summary: pd.DataFrame, recommendation: Recommendation | None) -> pd.DataFrame:
    """Rows in the recommendation's order (feasible ones best first), then the rest, most
    accurate and then fastest first."""
    accuracy = recommendation.accuracy_metric if recommendation is not None else "displayed_recall"
    fps = recommendation.fps_metric if recommendation is not None else "fps_output"
    order: list[str] = []
    if recommendation is not None and recommendation.ok and "config_key" in recommendation.candidates:
        order = [str(k) for k in recommendation.candidates["config_key"]]
    rank = {key: i for i, key in enumerate(order)}
    keyed = summary.assign(
        _feasible=summary["config_key"].map(lambda k: rank.get(str(k), len(rank))),
        _acc=summary[accuracy].astype(float).round(4).fillna(-1.0) if accuracy in summary else -1.0,
        _fps=summary[fps].astype(float).fillna(-1.0) if fps in summary else -1.0,
    )
    keyed = keyed.sort_values(["_feasible", "_acc", "_fps"], ascending=[True, False, False], kind="stable")
    return keyed.drop(columns=["_feasible", "_acc", "_fps"])


def readable_summary(
    results: pd.DataFrame,
    recommendation: Recommendation | None = None,
    *,
    metrics: dict[str, int] | None = None,
) -> pd.DataFrame:
    """One row per configuration: the settings that differ, the deciding figures rounded, ranked.

    Args:
        results: a sweep's results (one row per run) or its `summarize` table.
        recommendation: `recommend`'s answer; its ranking orders the rows and its pick is marked
            in the ``recommended`` column. Without one, rows go most accurate first.
        metrics: figure -> decimals to show (default `READABLE_METRICS`); missing ones are skipped.

    Example:
        >>> table = readable_summary(results, recommend(results))  # doctest: +SKIP
        >>> list(table.columns)[:4]  # doctest: +SKIP
        ['recommended', 'skip', 'jpeg_quality', 'fps_output']
    """
    summary = summarize(results) if "repeat" in results.columns else results.copy()
    if "status" in summary.columns:
        summary = summary[summary["status"] == "ok"]
    summary = _ranked(summary, recommendation)
    settings = _settings(summary)
    shown = dict(metrics if metrics is not None else READABLE_METRICS)
    if metrics is None and {"camera_framesize", "camera_quality"} & set(settings):
        shown.update(CAMERA_METRICS)
    figures = [m for m in shown if m in summary.columns and summary[m].notna().any()]
    table = summary[[*settings, *figures]].copy()
    for name in figures:
        table[name] = table[name].astype(float).round(shown[name])
        if shown[name] == 0:
            table[name] = table[name].astype("Int64")
    low, high = "fps_vs_baseline_ci_low", "fps_vs_baseline_ci_high"
    if "fps_vs_baseline" in figures and {low, high} <= set(summary.columns):
        interval = [
            f"[{lo:.2f}, {hi:.2f}]" if pd.notna(lo) and pd.notna(hi) else "-"
            for lo, hi in zip(summary[low], summary[high], strict=True)
        ]
        table.insert(list(table.columns).index("fps_vs_baseline") + 1, INTERVAL_COLUMN, interval)
    picked = recommendation.config.key if recommendation is not None and recommendation.config else None
    table.insert(0, "recommended", [key == picked for key in summary["config_key"]])
    table.index = pd.Index(summary["config_key"].astype(str), name="config_key")
    return table


def style_summary(table: pd.DataFrame) -> Styler:
    """``table`` (from `readable_summary`) as a pandas Styler with the recommended row highlighted,
    each column at its rounding and without the long configuration keys, so it fits a notebook
    (needs jinja2, which Jupyter brings).

    Example:
        >>> style_summary(readable_summary(results, rec))  # doctest: +SKIP
    """
    known = {**READABLE_METRICS, **CAMERA_METRICS}
    decimals = {c: known[c] for c in table.columns if c in known}
    styler = table.style.format({c: f"{{:.{d}f}}" for c, d in decimals.items() if d > 0}, na_rep="-")
    highlighted = table["recommended"] if "recommended" in table.columns else pd.Series(False, table.index)
    styler = styler.apply(lambda row: [_HIGHLIGHT if highlighted[row.name] else "" for _ in row], axis=1)
    # The settings columns name each row; the long configuration key stays in the table's index.
    return styler.hide(axis="index").hide(["recommended"], axis="columns")


#: Accuracy differences below this count as equal (the recommendation ranks accuracy to 4 decimals,
#: but a difference this small is a frame or two of a short clip).
_SAME_ACCURACY: Final = 0.005


def margin_over_runner_up(results: pd.DataFrame, recommendation: Recommendation) -> str | None:
    """How far the recommended configuration is ahead of the next one, and whether that is
    more than the machine's noise: its accuracy difference, and the runner-up's speed as a ratio
    of the recommended one's with its 95 % interval over repeats (`compare_configs`, paired per
    repeat). None when there is no runner-up.

    Example:
        >>> print(margin_over_runner_up(results, recommend(results)))  # doctest: +SKIP
        Runner-up: ...-skipauto-q80: displayed_recall 1.00 (same), speed x0.97 [0.91, 1.04] of the
        recommended: a tie inside the noise; more repeats can separate them
    """
    cands = recommendation.candidates
    if not recommendation.ok or "config_key" not in cands or len(cands) < 2:
        return None
    best, second = cands.iloc[0], cands.iloc[1]
    acc = recommendation.accuracy_metric
    a_best, a_second = float(best.get(acc, math.nan)), float(second.get(acc, math.nan))
    gap = a_best - a_second
    same = not math.isfinite(gap) or abs(gap) < _SAME_ACCURACY
    accuracy = (
        f"{acc} {a_second:.2f} ({'same' if same else f'{-gap:+.2f}'})"
        if math.isfinite(a_second)
        else f"no {acc}"
    )
    key_best, key_second = str(best["config_key"]), str(second["config_key"])
    iv = compare_configs(results, key_second, key_best) if "repeat" in results.columns else None
    if iv is None or iv.n < 2 or not math.isfinite(iv.low):
        ratio = float(second[recommendation.fps_metric]) / float(best[recommendation.fps_metric])
        speed = f"speed x{ratio:.2f} of the recommended (one repeat: no interval)"
        verdict = "measure with repeats >= 2 to tell whether the difference is real"
    else:
        speed = f"speed x{iv.center:.2f} [{iv.low:.2f}, {iv.high:.2f}] of the recommended"
        if not same:
            verdict = "the recommended is more accurate"
        elif iv.contains(1.0):
            verdict = "a tie inside the noise; more repeats can separate them"
        else:
            verdict = "the recommended is faster, beyond the noise"
    return f"Runner-up: {key_second}: {accuracy}, {speed}: {verdict}"
