"""`report`: one self-contained HTML page (or Markdown + PNGs) describing a sweep.

The report holds the environment, the recommendation, how much the machine's speed drifted
(`drift_summary`), the figures of `espdetect.profiling.plots` (speed against the baseline with
95 % intervals when the sweep paired runs with one), a summary table (medians over repeats,
intervals) and a column glossary.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import pandas as pd
from matplotlib.figure import Figure

from espdetect.profiling import plots
from espdetect.profiling.calibration import drift_summary
from espdetect.profiling.recommend import Recommendation, recommend
from espdetect.profiling.results import COLUMNS, SUMMARY_DOCS, ResultsStore, load_results, summarize
from espdetect.profiling.sweep import HALF_NEEDS_CUDA

__all__ = ["SUMMARY_COLUMNS", "ReportFormat", "report"]

ReportFormat = Literal["html", "markdown"]

# Background CPU (percent of one core) above which the report warns about a run.
_BUSY_NOTE = 50.0

#: Columns of the report's summary table.
SUMMARY_COLUMNS = (
    "config_key",
    "status",
    "n_repeats",
    "fps_output",
    "fps_output_ci_low",
    "fps_output_ci_high",
    "fps_output_spread_pct",
    "fps_output_norm",
    "fps_output_norm_spread_pct",
    "fps_vs_baseline",
    "fps_vs_baseline_ci_low",
    "fps_vs_baseline_ci_high",
    "drifted_runs",
    "fps_processed",
    "inference_ms_p50",
    "latency_ms_p50",
    "latency_ms_p95",
    "model_calls_per_min",
    "gated_fraction",
    "cpu_percent",
    "cpu_core_hours_per_camera_hour",
    "rss_peak_mb",
    "background_cpu_percent",
    "bytes_per_frame",
    "bandwidth_kbps",
    "recall",
    "precision",
    "displayed_recall",
    "displayed_precision",
    "displayed_iou",
    "displayed_false_boxes_per_frame",
    "stale_recall",
)

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
table{border-collapse:collapse;font-size:12px;margin:1em 0}
td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}
td:first-child,th:first-child{text-align:left}
th{background:#f3f3f3}
img{max-width:100%;border:1px solid #eee;margin:0.5em 0}
.ok{color:#1a7f37}.bad{color:#b42318}
pre{background:#f6f8fa;padding:0.8em;overflow-x:auto}
"""


def _cell(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def _table_rows(df: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    cols = [c for c in SUMMARY_COLUMNS if c in df.columns]
    return cols, [[_cell(row[c]) for c in cols] for _, row in df.iterrows()]


def _html_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def esc(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| " + " | ".join(esc(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _environment_rows(env: dict[str, Any]) -> list[list[str]]:
    rows: list[list[str]] = []
    for key in ("cpu_model", "cores_logical", "cores_physical", "memory_gb", "cuda", "platform", "python"):
        if key in env:
            rows.append([key, str(env[key])])
    for name, version in (env.get("versions") or {}).items():
        rows.append([f"version: {name}", str(version)])
    for model, info in (env.get("models") or {}).items():
        rows.append([f"model: {model}", f"sha256 {info.get('sha256') or 'n/a (not a file)'}"])
    clip = env.get("clip") or {}
    if clip:
        rows.append(
            [
                "clip",
                f"{clip.get('path')}: {clip.get('frames')} frames, {clip.get('duration_s')} s, "
                f"{clip.get('fps')} fps, {clip.get('size')}",
            ]
        )
    if "schema_version" in env:
        rows.append(["results schema version", str(env["schema_version"])])
    sweep_info = env.get("sweep") or {}
    for key in ("mode", "repeats", "warmup", "seed", "device", "reference", "baseline", "drift_threshold"):
        if key in sweep_info:
            rows.append([f"sweep: {key}", str(sweep_info[key])])
    probe = sweep_info.get("probe")
    if isinstance(probe, dict):
        rows.append(
            [
                "sweep: speed probe",
                f"{probe.get('calls')} calls of {probe.get('model')} at {probe.get('imgsz')} on frame "
                f"{probe.get('frame')} of the clip",
            ]
        )
    return rows


def _noise_notes(summary: pd.DataFrame, runs: pd.DataFrame) -> list[str]:
    """How much the machine drifted, and how to read raw, normalised and relative figures."""
    notes = [drift_summary(runs).sentence]
    if "fps_output_spread_pct" in summary.columns and "fps_output_norm_spread_pct" in summary.columns:
        raw = summary["fps_output_spread_pct"].dropna()
        norm = summary["fps_output_norm_spread_pct"].dropna()
        if not raw.empty and not norm.empty:
            notes.append(
                f"Repeats of one configuration differ in fps by up to {raw.max():.0f} % raw and "
                f"{norm.max():.0f} % normalised to the machine's typical speed (fps_output_norm)."
            )
    if "fps_vs_baseline" in summary.columns and summary["fps_vs_baseline"].notna().any():
        base = next((k for k in summary.get("baseline_key", pd.Series(dtype=str)) if k), "")
        notes.append(
            f"fps_vs_baseline compares each run with the baseline ({base}) replayed alongside it "
            "(taking turns frame by frame, so both saw the same machine); its 95 % interval "
            "(Student-t over repeats, on log ratios) is the figure to trust on a machine whose "
            "speed drifts, whatever the probe says."
        )
    return notes


def _notes(summary: pd.DataFrame, runs: pd.DataFrame) -> list[str]:
    notes: list[str] = _noise_notes(summary, runs)
    if "background_cpu_percent" in runs.columns:
        busy = runs[runs["background_cpu_percent"] > _BUSY_NOTE]
        if not busy.empty:
            worst = busy.sort_values("background_cpu_percent", ascending=False).head(5)
            names = ", ".join(
                f"{r.config_key} #{r.repeat} ({r.background_cpu_percent:.0f} %)" for r in worst.itertuples()
            )
            notes.append(
                f"{len(busy)} of {len(runs)} runs shared the CPU with other processes (more than "
                f"{_BUSY_NOTE:.0f} % of a core): their timings are less trustworthy. Worst: {names}."
            )
    if "trained" in summary.columns and (~summary["trained"].astype(bool)).any():
        notes.append(
            "Rows with a .yaml model (marked * in the figures) run an untrained network of the same "
            "architecture: their speed is real, their accuracy is meaningless and shown as n/a. They "
            "measure input sizes the fixed-size trained model cannot run at."
        )
    if "status" in summary.columns:
        if (summary["status"] == HALF_NEEDS_CUDA).any():
            notes.append("Half-precision rows were not measured: half precision needs a CUDA GPU.")
        other = summary[summary["status"].str.startswith(("n/a", "error"))]
        other = other[other["status"] != HALF_NEEDS_CUDA]
        for _, row in other.iterrows():
            notes.append(f"{row['config_key']}: {row['status']}")
    if "motion" in summary.columns and summary["motion"].astype(bool).any():
        notes.append(
            "Motion gating depends on the scene: a clip where little moves makes few model calls. "
            "model_calls_per_min and cpu_core_hours_per_camera_hour hold for scenes like this clip; "
            "keep-alive calls are timed on the clip's own arrival clock."
        )
    if "mode" in summary.columns and (summary["mode"] == "fast").any():
        notes.append(
            "Fast mode: every selected frame is processed back to back, so fps_output is the capacity "
            "of one worker and may exceed the camera's rate; bandwidth is computed at "
            "min(fps_output, camera fps)."
        )
    return notes


def _figures(results: pd.DataFrame, frames: pd.DataFrame | None) -> list[tuple[str, str, Figure]]:
    paired = "fps_vs_baseline" in results.columns and results["fps_vs_baseline"].notna().any()
    relative = [
        (
            "fps_vs_baseline",
            "Speed against the baseline (95 % intervals)",
            plots.plot_fps_vs_baseline(results),
        )
    ]
    return (relative if paired else []) + [
        (
            "accuracy_vs_fps",
            "Accuracy against speed (Pareto front in red)",
            plots.plot_accuracy_vs_fps(results),
        ),
        ("stage_times", "Time per output frame by stage", plots.plot_stage_times(results)),
        ("latency", "Latency distributions", plots.plot_latency(results, frames)),
        (
            "bandwidth_vs_quality",
            "Output size against JPEG quality",
            plots.plot_bandwidth_vs_quality(results),
        ),
    ]


def report(
    results: pd.DataFrame | str | Path,
    out_dir: str | Path,
    fmt: ReportFormat = "html",
    *,
    recommendation: Recommendation | None = None,
    frames: pd.DataFrame | None = None,
    environment: dict[str, Any] | None = None,
    title: str = "espdetect profiling report",
) -> Path:
    """Write a report of a sweep into ``out_dir`` and return the file's path.

    ``results`` is a sweep's DataFrame (its ``attrs["out_dir"]`` locates per-frame latencies and
    the environment) or a sweep folder. ``fmt="html"`` writes ``report.html`` with the figures
    embedded as base64 PNGs; ``"markdown"`` writes ``report.md`` plus ``figures/*.png``. Without
    a ``recommendation``, the one for keeping up with the camera's frame rate is shown.

    Example:
        >>> report("out/sweep1", "out/sweep1")  # doctest: +SKIP
        PosixPath('out/sweep1/report.html')
    """
    if fmt not in ("html", "markdown"):
        raise ValueError(f"fmt must be 'html' or 'markdown', got {fmt!r}")
    df = load_results(results) if isinstance(results, str | Path) else results
    source = df.attrs.get("out_dir")
    if source:
        store = ResultsStore(source)
        if frames is None:
            frames = store.load_frames()
        if environment is None:
            environment = store.environment()
    env = environment or dict(df.attrs.get("environment") or {})
    summary = summarize(df)
    if recommendation is None and not summary.empty:
        camera_fps = (env.get("clip") or {}).get("fps")
        recommendation = recommend(df, target_fps=float(camera_fps) if camera_fps else None)
    target = Path(out_dir)
    target.mkdir(parents=True, exist_ok=True)
    headers, rows = _table_rows(summary)
    content = _Content(
        title=title,
        recommendation=recommendation.summary() if recommendation is not None else "No results.",
        ok=recommendation is not None and recommendation.ok,
        notes=_notes(summary, df),
        figures=_figures(df, frames),
        headers=headers,
        rows=rows,
        environment=_environment_rows(env),
        glossary=[
            [c, COLUMNS.get(c) or SUMMARY_DOCS[c]] for c in headers if c in COLUMNS or c in SUMMARY_DOCS
        ],
    )
    if fmt == "html":
        path = target / "report.html"
        path.write_text(_html_report(content), encoding="utf-8")
    else:
        path = target / "report.md"
        path.write_text(_markdown_report(content, target / "figures"), encoding="utf-8")
    return path


class _Content(NamedTuple):
    """What a report says, whatever its format."""

    title: str
    recommendation: str
    ok: bool
    notes: list[str]
    figures: list[tuple[str, str, Figure]]
    headers: list[str]
    rows: list[list[str]]
    environment: list[list[str]]
    glossary: list[list[str]]


def _html_report(c: _Content) -> str:
    """One HTML page with the figures embedded as base64 PNGs."""
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(c.title)}</title>",
        f"<style>{_CSS}</style></head><body><h1>{html.escape(c.title)}</h1>",
        "<h2>Recommendation</h2>",
        f"<pre class='{'ok' if c.ok else 'bad'}'>{html.escape(c.recommendation)}</pre>",
    ]
    if c.notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in c.notes) + "</ul>")
    for _, caption, fig in c.figures:
        data = base64.b64encode(plots.figure_png(fig)).decode("ascii")
        parts.append(f"<h2>{html.escape(caption)}</h2><img alt='{html.escape(caption)}' "
                     f"src='data:image/png;base64,{data}'>")  # fmt: skip
    parts.append("<h2>Configurations (medians over repeats)</h2>" + _html_table(c.headers, c.rows))
    parts.append("<h2>Environment</h2>" + _html_table(["item", "value"], c.environment))
    parts.append("<h2>Columns</h2>" + _html_table(["column", "meaning"], c.glossary))
    parts.append("</body></html>")
    return "\n".join(parts)


def _markdown_report(c: _Content, fig_dir: Path) -> str:
    """Markdown text; the figures are written as PNG files into ``fig_dir``."""
    md = [f"# {c.title}", "", "## Recommendation", "", "```", c.recommendation, "```", ""]
    if c.notes:
        md += ["## Notes", "", *(f"- {n}" for n in c.notes), ""]
    for name, caption, fig in c.figures:
        plots.save_figure(fig, fig_dir / f"{name}.png")
        md += [f"## {caption}", "", f"![{caption}](figures/{name}.png)", ""]
    md += ["## Configurations (medians over repeats)", "", _md_table(c.headers, c.rows), ""]
    md += ["## Environment", "", _md_table(["item", "value"], c.environment), ""]
    md += ["## Columns", "", _md_table(["column", "meaning"], c.glossary), ""]
    return "\n".join(md)
