"""Figures of a sweep: accuracy against speed (Pareto front), stage times, latency, bandwidth.

Figures are built with ``matplotlib.figure.Figure``, never pyplot: no GUI backend is involved
(PNG output goes through Agg), so they work headless and in threads, and pyplot's global state is
left alone. In Jupyter a returned Figure displays inline.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from espdetect.profiling.config import SETTING_COLUMNS
from espdetect.profiling.metrics import STAGES
from espdetect.profiling.results import summarize

__all__ = [
    "config_labels",
    "figure_png",
    "pareto_front",
    "plot_accuracy_vs_fps",
    "plot_bandwidth_vs_quality",
    "plot_fps_vs_baseline",
    "plot_latency",
    "plot_stage_times",
    "save_figure",
]

_LABEL_AXES = SETTING_COLUMNS
_RARE_AXES = ("half", "conf", "decode_reduce")
#: On/off axes, named in labels only where on.
_SWITCH_NAMES = {"motion": "motion", "tracking": "track"}
_STAGE_COLORS = ("#7f7f7f", "#8c564b", "#9467bd", "#d62728", "#ff7f0e", "#bcbd22", "#2ca02c", "#1f77b4")


def _summary(results: pd.DataFrame) -> pd.DataFrame:
    if "repeat" in results.columns:
        return summarize(results)
    return results


def _ok(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["status"] == "ok"] if "status" in df.columns else df


def config_labels(df: pd.DataFrame) -> pd.Series:
    """Short labels naming only the settings that differ between rows (``yolov8n.yaml 320 s2 q50``).

    Motion gating and tracking are named only where they are on (``s2 motion track``; the
    keep-alive as ``ka30`` where it varies), or as ``no motion`` where nothing else would be.

    Example:
        >>> config_labels(summarize(results)).tolist()  # doctest: +SKIP
        ['320 s1', '320 s4', '640 s1']
    """
    # keepalive is NaN without motion: it varies only when motion rows differ in it.
    varying = [
        c
        for c in _LABEL_AXES
        if c in df.columns
        and (df[c].dropna().nunique() if c == "keepalive" else df[c].astype(str).nunique()) > 1
    ]
    if not varying:
        varying = ["imgsz", "skip"] if {"imgsz", "skip"} <= set(df.columns) else []
    # Secondary settings are named only where they differ from the usual value.
    usual = {c: df[c].astype(str).mode().iloc[0] for c in _RARE_AXES if c in varying}

    def label(row: pd.Series) -> str:
        parts = []
        for col in varying:
            value = row[col]
            if col in usual and str(value) == usual[col]:
                continue
            if col == "model_name":
                parts.append(str(value).rsplit(".", 1)[0] + ("" if row.get("trained", True) else "*"))
            elif col == "half":
                parts.append("fp16" if bool(value) else "fp32")
            elif col == "skip":
                parts.append(f"s{value}")
            elif col == "jpeg_quality":
                parts.append(f"q{value}")
            elif col == "conf":
                parts.append(f"c{float(value):g}")
            elif col == "decode_reduce":
                parts.append(f"r{value}")
            elif col == "camera_quality":
                parts.append(f"camq{value:g}" if isinstance(value, int | float) else f"camq{value}")
            elif col in _SWITCH_NAMES:
                if isinstance(value, bool | np.bool_) and value:
                    parts.append(_SWITCH_NAMES[col])
            elif col == "label":
                if value:
                    parts.append(f"[{value}]")
            elif col == "keepalive":
                if isinstance(value, float | np.floating) and not math.isnan(value):
                    parts.append(f"ka{float(value):g}")
            else:
                parts.append(str(value))
        if not parts:
            # Only switches that are off tell this row apart: say so rather than show nothing.
            parts = [f"no {_SWITCH_NAMES[c]}" for c in varying if c in _SWITCH_NAMES]
            if not parts and "label" in varying:
                parts = ["unlabelled"]
        return " ".join(parts) or str(row.get("config_key", ""))

    if df.empty:
        return pd.Series([], dtype=str)
    return df.apply(label, axis=1).astype(str)


def pareto_front(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> np.ndarray:
    """Boolean mask of the points no other point beats on both ``x`` and ``y`` (higher is better).

    Example:
        >>> pareto_front([1, 2, 3], [3, 2, 1]).tolist(), pareto_front([1, 2], [1, 2]).tolist()
        ([True, True, True], [False, True])
    """
    xs = np.asarray(x, dtype=float)
    ys = np.asarray(y, dtype=float)
    mask = np.ones(len(xs), dtype=bool)
    for i in range(len(xs)):
        better_or_equal = (xs >= xs[i]) & (ys >= ys[i])
        strictly = (xs > xs[i]) | (ys > ys[i])
        if np.any(better_or_equal & strictly):
            mask[i] = False
    return mask


def _no_data(fig: Figure, text: str) -> Figure:
    ax = fig.add_subplot()
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True)
    ax.set_axis_off()
    return fig


#: Where a point's label may go, in points from it, in order of preference: right above, right
#: below, left above, left below, then further up and down.
_LABEL_SPOTS: tuple[tuple[float, float, str], ...] = (
    (5, 4, "left"),
    (5, -11, "left"),
    (-5, 4, "right"),
    (-5, -11, "right"),
    (5, 16, "left"),
    (5, -23, "left"),
    (-5, 16, "right"),
    (-5, -23, "right"),
)


def _label_points(fig: Figure, ax: Any, xs: np.ndarray, ys: np.ndarray, texts: Sequence[str]) -> None:
    """Label each point at the first spot of `_LABEL_SPOTS` whose text overlaps no label placed
    before it (nor leaves the axes); where every spot is taken, the least crowded one."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()  # type: ignore[no-untyped-call]
    fig.draw_without_rendering()  # the constrained layout settles the axes before measuring
    frame = ax.get_window_extent(renderer)
    placed: list[Any] = []
    for x, y, text in sorted(zip(xs, ys, texts, strict=True), key=lambda p: (-p[1], p[0])):
        best: tuple[float, Any] | None = None
        for dx, dy, ha in _LABEL_SPOTS:
            note = ax.annotate(text, (x, y), textcoords="offset points", xytext=(dx, dy), ha=ha, fontsize=7)
            box = note.get_window_extent(renderer)
            inside = frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1)
            crowd = sum(_overlap(box, other) for other in placed) + (
                0.0 if inside else box.width * box.height
            )
            if best is None or crowd < best[0]:
                if best is not None:
                    best[1].remove()
                best = (crowd, note)
            else:
                note.remove()
            if crowd == 0:
                break
        assert best is not None
        placed.append(best[1].get_window_extent(renderer))


def _overlap(a: Any, b: Any) -> float:
    dx = min(a.x1, b.x1) - max(a.x0, b.x0)
    dy = min(a.y1, b.y1) - max(a.y0, b.y0)
    return dx * dy if dx > 0 and dy > 0 else 0.0


def plot_accuracy_vs_fps(
    results: pd.DataFrame,
    *,
    accuracy: str = "displayed_recall",
    fps: str = "fps_output",
) -> Figure:
    """Accuracy against frame rate, one point per configuration, the Pareto front joined and
    labelled (labels placed so they do not cover each other; the dominated points are in the table).

    Configurations without accuracy (untrained models) are left out and counted in the title.

    Example:
        >>> fig = plot_accuracy_vs_fps(results)  # doctest: +SKIP
        >>> save_figure(fig, "accuracy_vs_fps.png")  # doctest: +SKIP
    """
    fig = Figure(figsize=(8, 5.5), layout="constrained")
    df = _ok(_summary(results))
    if accuracy not in df.columns or fps not in df.columns:
        return _no_data(fig, f"no {accuracy} / {fps} columns")
    labels = config_labels(df)
    have = df[accuracy].notna() & df[fps].notna()
    missing = int((~have).sum())
    df, labels = df[have], labels[have]
    if df.empty:
        return _no_data(fig, f"no configuration has {accuracy} (untrained models only?)")
    ax = fig.add_subplot()
    xs, ys = df[fps].to_numpy(float), df[accuracy].to_numpy(float)
    front = pareto_front(xs, ys)
    low, high = f"{fps}_ci_low", f"{fps}_ci_high"
    if {low, high} <= set(df.columns) and df[low].notna().any():
        # The 95 % interval of the speed over repeats (none for a single repeat).
        xerr = np.vstack([xs - df[low].to_numpy(float), df[high].to_numpy(float) - xs])
        ax.errorbar(xs, ys, xerr=np.clip(np.nan_to_num(xerr), 0, None), fmt="none", ecolor="#bbbbbb",
                    elinewidth=1, capsize=2, zorder=1, label="95 % interval")  # fmt: skip
    ax.scatter(xs[~front], ys[~front], color="#999999", label="dominated", zorder=2)
    ax.scatter(xs[front], ys[front], color="#d62728", label="Pareto front", zorder=3)
    order = np.argsort(xs[front])
    ax.step(xs[front][order], ys[front][order], where="post", color="#d62728", alpha=0.6, zorder=1)
    _label_points(fig, ax, xs[front], ys[front], list(labels.to_numpy()[front]))
    ax.set_xlabel(f"{fps} (frames/s)")
    ax.set_ylabel(accuracy)
    ax.set_ylim(min(0.0, float(np.nanmin(ys))) - 0.02, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    note = f" ({missing} without accuracy not shown)" if missing else ""
    unlabelled = int((~front).sum())
    note += f"; {unlabelled} dominated, unlabelled (see the table)" if unlabelled else ""
    ax.set_title(f"Accuracy against speed, the Pareto front labelled{note}", fontsize=10)
    return fig


def plot_stage_times(results: pd.DataFrame) -> Figure:
    """Stacked time per output frame by stage (decode ... encode), one bar per configuration.

    Example:
        >>> plot_stage_times(results)  # doctest: +SKIP
    """
    df = _ok(_summary(results))
    cols = [f"{s}_ms_per_frame" for s in STAGES]
    fig = Figure(figsize=(9, max(3.0, 0.32 * len(df) + 1.5)), layout="constrained")
    if df.empty or not set(cols) <= set(df.columns):
        return _no_data(fig, "no measured configuration")
    values = df[cols].fillna(0.0).to_numpy(float)
    order = np.argsort(values.sum(axis=1))
    labels = config_labels(df).to_numpy()[order]
    values = values[order]
    ax = fig.add_subplot()
    left = np.zeros(len(df))
    for i, stage in enumerate(STAGES):
        ax.barh(labels, values[:, i], left=left, label=stage, color=_STAGE_COLORS[i % len(_STAGE_COLORS)])
        left += values[:, i]
    ax.set_xlabel("ms per output frame (stage total / output frames)")
    ax.tick_params(axis="y", labelsize=7)
    ax.legend(fontsize=7, ncols=4, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title("Where the time goes", fontsize=10)
    return fig


def plot_latency(results: pd.DataFrame, frames: pd.DataFrame | None = None) -> Figure:
    """Latency distribution per configuration: box plots of every output frame when ``frames``
    (``frames.csv`` rows) is given, else the p50 / p95 / p99 of each configuration.

    Example:
        >>> plot_latency(results, frames=ResultsStore("out/sweep1").load_frames())  # doctest: +SKIP
    """
    df = _ok(_summary(results))
    fig = Figure(figsize=(9, max(3.0, 0.32 * len(df) + 1.5)), layout="constrained")
    if df.empty:
        return _no_data(fig, "no measured configuration")
    df = df.sort_values("latency_ms_p50")
    labels = config_labels(df).tolist()
    ax = fig.add_subplot()
    if frames is not None and not frames.empty:
        grouped = {k: g["latency_ms"].dropna().to_numpy(float) for k, g in frames.groupby("config_key")}
        data = [grouped.get(k, np.array([math.nan])) for k in df["config_key"]]
        ax.boxplot(data, orientation="horizontal", tick_labels=labels, showfliers=False, whis=(1, 99))
        ax.set_title("Latency per output frame (box: quartiles, whiskers: p1-p99)", fontsize=10)
    else:
        y = np.arange(len(df))
        for col, marker in (("latency_ms_p50", "o"), ("latency_ms_p95", "s"), ("latency_ms_p99", "^")):
            ax.scatter(df[col].to_numpy(float), y, marker=marker, label=col.rsplit("_", 1)[1])
        ax.set_yticks(y, labels)
        ax.legend(fontsize=8)
        ax.set_title("Latency percentiles", fontsize=10)
    ax.set_xlabel("frame arrival to output JPEG ready (ms)")
    ax.tick_params(axis="y", labelsize=7)
    ax.grid(axis="x", alpha=0.3)
    return fig


def plot_fps_vs_baseline(results: pd.DataFrame) -> Figure:
    """Each configuration's speed relative to the baseline, with its 95 % interval, one row each.

    The ratio comes from runs replayed alongside the baseline (``fps_vs_baseline``), so the
    machine's changes of speed cancel; the bars are Student-t intervals over repeats (none with a
    single repeat). A dashed line marks 1.0 (as fast as the
    baseline).

    Example:
        >>> plot_fps_vs_baseline(results)  # doctest: +SKIP
    """
    df = _ok(_summary(results))
    fig = Figure(figsize=(9, max(3.0, 0.32 * len(df) + 1.5)), layout="constrained")
    if df.empty or "fps_vs_baseline" not in df.columns or df["fps_vs_baseline"].isna().all():
        return _no_data(fig, "no baseline runs in these results (baseline=None, or realtime mode)")
    df = df[df["fps_vs_baseline"].notna()].sort_values("fps_vs_baseline")
    labels = config_labels(df).tolist()
    y = np.arange(len(df))
    center = df["fps_vs_baseline"].to_numpy(float)
    low = df["fps_vs_baseline_ci_low"].to_numpy(float)
    high = df["fps_vs_baseline_ci_high"].to_numpy(float)
    xerr = np.clip(np.nan_to_num(np.vstack([center - low, high - center])), 0, None)
    ax = fig.add_subplot()
    ax.errorbar(center, y, xerr=xerr, fmt="o", color="#1f77b4", ecolor="#1f77b4", capsize=3)
    ax.axvline(1.0, color="#666666", linestyle="--", linewidth=1)
    ax.set_yticks(y, labels)
    ax.tick_params(axis="y", labelsize=7)
    ax.set_xlabel("fps_output relative to the baseline replayed alongside (1.0 = as fast)")
    ax.grid(axis="x", alpha=0.3)
    base = str(df["baseline_key"].iloc[0]) if "baseline_key" in df.columns else ""
    ax.set_title(f"Speed against the baseline, 95 % intervals over repeats\n{base}", fontsize=9)
    return fig


def plot_bandwidth_vs_quality(results: pd.DataFrame) -> Figure:
    """Output bytes per frame and stream bandwidth against JPEG quality.

    Example:
        >>> plot_bandwidth_vs_quality(results)  # doctest: +SKIP
    """
    df = _ok(_summary(results))
    fig = Figure(figsize=(9, 4), layout="constrained")
    if df.empty:
        return _no_data(fig, "no measured configuration")
    by_q = df.groupby("jpeg_quality")[["bytes_per_frame", "bandwidth_kbps"]].median().sort_index()
    left, right = fig.subplots(1, 2)
    for ax, col, scale, unit in (
        (left, "bytes_per_frame", 1 / 1000, "kB per output frame"),
        (right, "bandwidth_kbps", 1.0, "kbit/s to one viewer"),
    ):
        ax.scatter(df["jpeg_quality"].to_numpy(float), df[col].to_numpy(float) * scale, color="#999999", s=12)
        ax.plot(by_q.index.to_numpy(float), by_q[col].to_numpy(float) * scale, marker="o", color="#1f77b4")
        ax.set_xlabel("JPEG quality")
        ax.set_ylabel(unit)
        ax.grid(alpha=0.3)
    fig.suptitle("Output size against JPEG quality (line: median per quality)", fontsize=10)
    return fig


def figure_png(fig: Figure, dpi: int = 110) -> bytes:
    """The figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def save_figure(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    """Write the figure as a PNG file and return its path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(figure_png(fig, dpi))
    return target
