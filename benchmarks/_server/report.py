"""Output of the server benchmark: results.json, the CSV files, summary.md, the plots, the printed table."""

from __future__ import annotations

import itertools
import json
import statistics
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks._harness.report import markdown_table, pyplot, write_csv
from benchmarks._server.results import (
    BaselineResult,
    LatencyFrame,
    LatencyResult,
    Results,
    ScalingRow,
    ServerWindow,
    TargetRow,
    TimelinePoint,
)
from espdetect.stats import percentile


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 3) if present else None


def inference_cost(results: Results) -> float | None:
    """CPU per inference of the model-only loop (target 4), in % of a core x seconds."""
    pairs = results.model_rate.pairs if results.model_rate is not None else []
    costs = [p.model_only.cpu_pct / p.model_only.rate for p in pairs if p.model_only.rate]
    return statistics.median(costs) if costs else None


def _outside_model(group: list[ServerWindow], cost: float | None) -> float | None:
    if cost is None or not group:
        return None
    values = [w.cpu_pct - cost * sum(c.detect_fps for c in w.cameras.values()) for w in group]
    return round(statistics.median(values), 2)


def _espdetect_row(axis: str, n: int, group: list[ServerWindow], cost: float | None) -> ScalingRow:
    worked = [w for w in group if w.cameras]
    detect = [statistics.fmean(c.detect_fps for c in w.cameras.values()) for w in worked]
    calls = [max(c.model_calls_per_frame or 0.0 for c in w.cameras.values()) for w in worked]
    return ScalingRow(
        server="espdetect",
        axis=axis,
        n=n,
        windows=len(group),
        cpu_pct=_median([w.cpu_pct for w in group]),
        cpu_pct_outside_model_est=_outside_model(group, cost),
        viewer_fps_mean=_median([w.viewer_fps_mean for w in group]),
        viewer_fps_min=_median([w.viewer_fps_min for w in group]),
        detect_fps_per_camera=round(statistics.median(detect), 3) if detect else None,
        model_calls_per_camera_frame=round(max(calls), 4) if calls else None,
        machine_cores_busy=_median([w.machine_cores_busy for w in group]),
        viewer_errors=sum(w.viewer_errors for w in group),
    )


def _baseline_rows(base: BaselineResult | None) -> list[ScalingRow]:
    windows = base.windows if base is not None else {}
    return [
        ScalingRow(
            server="baseline",
            axis="viewers",
            n=n,
            windows=1,
            cpu_pct=w.cpu_pct,
            # Not estimated: inferences there overlap the loop's stalls, so the split means nothing.
            cpu_pct_outside_model_est=None,
            viewer_fps_mean=w.viewer_fps_mean,
            viewer_fps_min=w.viewer_fps_min,
            detect_fps_per_camera=w.model_calls_per_s,
            model_calls_per_camera_frame=w.model_calls_per_camera_frame,
            machine_cores_busy=w.machine_cores_busy,
            viewer_errors=w.viewer_errors,
        )
        for n, w in sorted(windows.items())
    ]


def scaling_rows(results: Results) -> list[ScalingRow]:
    """The scaling table: espdetect by viewers and by cameras, then the baseline by viewers."""
    cost = inference_cost(results)
    rows = [
        _espdetect_row(axis, n, group, cost)
        for axis, section in (("viewers", results.scaling_viewers), ("cameras", results.scaling_cameras))
        for n, group in sorted((section or {}).items())
        if group
    ]
    return rows + _baseline_rows(results.baseline)


def plot_scaling(path: Path, rows: list[ScalingRow]) -> bool:
    if not rows:
        return False
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, axis in zip(axes, ("viewers", "cameras"), strict=True):
        twin = ax.twinx()
        for server, style in (("espdetect", "o-"), ("baseline", "s--")):
            sel = [r for r in rows if r.axis == axis and r.server == server]
            if not sel:
                continue
            xs = [r.n for r in sel]
            ax.plot(xs, [r.cpu_pct for r in sel], style, color="tab:red", label=f"{server} CPU %")
            twin.plot(
                xs, [r.viewer_fps_mean for r in sel], style, color="tab:blue", label=f"{server} fps/viewer"
            )
        ax.set_xscale("log", base=2 if axis == "cameras" else 10)
        ax.set_xlabel(f"annotated {axis}" if axis == "viewers" else "cameras (1 annotated viewer each)")
        ax.set_ylabel("server CPU, % of one core", color="tab:red")
        twin.set_ylabel("frames per s each viewer received", color="tab:blue")
        ax.set_ylim(bottom=0)
        twin.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        lines = ax.get_legend_handles_labels()
        more = twin.get_legend_handles_labels()
        ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=8, loc="upper left")
        ax.set_title(f"cost against the number of {axis}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_latency(path: Path, frames: list[LatencyFrame], timeline: list[TimelinePoint]) -> bool:
    # One plot, drawn in one place: splitting it would only scatter the axes' settings.
    if not frames:
        return False
    plt = pyplot()
    t = np.array([f.t for f in frames])
    added = np.array([f.added_ms for f in frames])
    excl = np.array([f.added_excl_hold_ms for f in frames])
    fig, ax = plt.subplots(figsize=(11, 4.2))
    ax.scatter(
        t, added, s=3, alpha=0.35, color="tab:gray", label="added latency per frame (target's definition)"
    )
    span = max(1.0, float(t.max()))
    bucket = 10.0 if span >= 60 else max(2.0, span / 10)
    edges = np.arange(0, span + bucket, bucket)
    mids, p50, p99, x99 = [], [], [], []
    for lo, hi in itertools.pairwise(edges):
        sel = (t >= lo) & (t < hi)
        if sel.sum() >= 5:
            mids.append((lo + hi) / 2)
            p50.append(percentile(added[sel], 50))
            p99.append(percentile(added[sel], 99))
            x99.append(percentile(excl[sel], 99))
    ax.plot(mids, p50, "-", color="tab:green", label=f"p50 per {bucket:g} s")
    ax.plot(mids, p99, "-", color="tab:red", label=f"p99 per {bucket:g} s")
    ax.plot(mids, x99, ":", color="tab:purple", label="p99 without holds for own detection")
    ax.axhline(10, color="tab:green", lw=0.8, ls="--")
    ax.axhline(30, color="tab:red", lw=0.8, ls="--")
    ax.set_xlabel("seconds into the run")
    ax.set_ylabel("ms")
    ax.set_ylim(0, max(60.0, (percentile(added, 99.5) or 0.0) * 1.1))
    if timeline:
        twin = ax.twinx()
        twin.plot(
            [p.t for p in timeline],
            [p.rss_mb for p in timeline],
            color="tab:blue",
            lw=1,
            label="server RSS MB",
        )
        twin.set_ylabel("server RSS, MB", color="tab:blue")
        twin.set_ylim(bottom=0)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title("frame arrival at the server -> last byte at the viewer, minus inference when fresh")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def table(targets: list[TargetRow]) -> str:
    """The targets table (summary.md's, and the one printed at the end)."""
    header = ["#", "target", "measured", "goal", "verdict", "how / notes"]
    return markdown_table(
        header, [[t.number, t.name, t.measured, t.goal, f"**{t.verdict}**", t.note] for t in targets]
    )


def _head(results: Results) -> list[str]:
    meta = results.meta
    load_end = meta.load_average_end[0] if meta.load_average_end else float("nan")
    return [
        "# Server benchmark",
        "",
        f"{meta.started} to {meta.finished or '?'} ({meta.elapsed_s or '?'} s) "
        f"on {meta.platform}, {meta.cpus} CPUs shared with other work "
        f"(load average {meta.load_average_start[0]:.2f} at start, {load_end:.2f} at the end); "
        f"model `{Path(meta.model).name}` "
        f"(ONNX Runtime {meta.onnxruntime}, Ultralytics {meta.ultralytics}); "
        f"{'quick' if meta.quick else 'full'} run of targets {', '.join(map(str, meta.only))}.",
        "",
        f"Command: `{meta.command}`",
        "",
        "Every figure below was measured in this run. CPU is the server process's user + system time "
        "(all threads) in % of one core; `machine` is what all processes on the machine used, in cores.",
        "",
        "## Targets",
        "",
        table(results.targets),
        "",
    ]


def _scaling_section(scaling: list[ScalingRow]) -> list[str]:
    if not scaling:
        return []
    header = [
        "server", "axis", "n", "windows", "CPU %", "CPU outside the model (est.)",
        "fps per viewer (mean / min)", "detections/s per camera", "model calls per camera frame",
        "machine cores busy", "viewer errors",
    ]  # fmt: skip
    rows = [
        [
            r.server,
            r.axis,
            r.n,
            r.windows,
            r.cpu_pct,
            r.cpu_pct_outside_model_est,
            f"{r.viewer_fps_mean} / {r.viewer_fps_min}",
            r.detect_fps_per_camera,
            r.model_calls_per_camera_frame,
            r.machine_cores_busy,
            r.viewer_errors,
        ]
        for r in scaling
    ]
    return [
        "## Cost against viewers and cameras",
        "",
        "`CPU outside the model (est.)` subtracts detections/s x the CPU one inference took in the "
        "model-only loop of target 4 (median over its windows): a rough split, since an inference "
        "costs more or less CPU depending on what else runs.",
        "",
        markdown_table(header, rows, align="llrrrrlrrrr"),
        "",
    ]


def _latency_section(lat: LatencyResult | None) -> list[str]:
    if lat is None:
        return []
    measures = (
        ("arrival -> last byte received, all frames", lat.latency_ms),
        ("same, frames the detector did not take", lat.latency_not_own_ms),
        ("added latency (minus inference when the boxes are the frame's own)", lat.added_ms),
        ("added latency minus any hold for the frame's own detection", lat.added_excl_hold_ms),
        ("detect time of frames with own detection", lat.detect_ms),
    )
    return [
        "## Latency (target 5)",
        "",
        f"Camera at {lat.camera_fps:g} fps (3x the server's detection rate probed just before, "
        f"{lat.model_rate:.2f}/s; {lat.detect_fps_during_run.median:.2f}/s median during the run), "
        f"{lat.duration_s:g} s, {lat.frames} frames received by one annotated viewer.",
        "",
        markdown_table(
            ["measure", "n", "p50", "p95", "p99", "max"],
            [[label, p.n, p.p50, p.p95, p.p99, p.max] for label, p in measures],
            align="lrrrrr",
        ),
        "",
        f"{lat.own_frames} frames were taken by the detector: {lat.fresh_frames} left after "
        f"their own detection ended (drawn with their own boxes), {lat.held_frames} were held until "
        "the next camera frame arrived and then drawn with the previous boxes, the rest were rendered "
        f"at once with the previous boxes. Flatness: {lat.flat.summary}.",
        "",
    ]


def _baseline_section(base: BaselineResult | None) -> list[str]:
    if base is None:
        return []
    out = ["## Baseline (per-viewer design)", "", f"Generator: `{base.generator}`.", ""]
    for n, w in sorted(base.windows.items()):
        out.append(
            f"- {n} viewers: CPU {w.cpu_pct} %, fps per viewer mean {w.viewer_fps_mean} "
            f"(min {w.viewer_fps_min}, max {w.viewer_fps_max}), "
            f"{w.viewers_without_frames} viewers without a frame in the window, "
            f"{w.viewer_errors} viewer errors, {w.model_calls_per_s} model calls/s "
            f"({w.model_calls_per_camera_frame} per camera frame), "
            f"{w.model_calls_per_delivered_frame} model calls per frame a viewer received, "
            f"camera connections {w.camera_connections_start} -> {w.camera_connections_end} "
            f"(at most {w.camera_connections_max}, {w.camera_connections_opened} opened during the "
            f"window), inference p50 {w.inference_ms.p50} ms."
        )
    disc = base.disconnect
    if disc is not None:
        out.append(
            f"- disconnects: the generator's finally ran after p50 {disc.viewer_gone_ms.p50} ms "
            f"(max {disc.viewer_gone_ms.max} ms, n={disc.viewer_gone_ms.n}); the camera "
            f"connection closed after p50 {disc.closed_ms.p50} ms / max {disc.closed_ms.max} ms in "
            f"{disc.closed_ms.n} trials, {disc.not_closed} of {len(disc.trials)} not closed "
            f"within {disc.not_closed_within_s:g} s ({disc.camera_connections_left} left open)."
        )
    bare = base.bare_generator
    if bare is not None and bare.model_calls_per_s_with_nobody_watching is not None:
        out.append(
            "- `async-bare` flavour (no `sleep(0)`), 1 s after the last of 3 viewers (one at a time) "
            f"left, over {bare.seconds} s: {bare.model_calls_per_s_with_nobody_watching} model calls/s, "
            f"{bare.cpu_pct_with_nobody_watching} % CPU, {bare.camera_connections} camera connections, "
            f"{bare.viewers_counted} generators still running."
        )
    return [*out, ""]


def markdown(results: Results, scaling: list[ScalingRow], plots: list[str]) -> str:
    out = _head(results) + _scaling_section(scaling)
    out += _latency_section(results.latency) + _baseline_section(results.baseline)
    if plots:
        out += ["## Plots", "", *(f"![{p}]({p})" for p in plots), ""]
    out += [
        "Raw figures: `results.json`; per-frame latency: `latency.csv`; scaling table: `scaling.csv`; "
        "targets: `targets.csv`; child process logs: `logs/`.",
        "",
    ]
    return "\n".join(out)


def write_outputs(out: Path, results: Results, frames: list[LatencyFrame]) -> None:
    """Every output file into ``out``, then the targets table on stdout."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results.to_json(), indent=1, default=str), encoding="utf-8")
    write_csv(out / "targets.csv", [t.to_json() for t in results.targets])
    scaling = scaling_rows(results)
    write_csv(out / "scaling.csv", scaling)
    write_csv(out / "latency.csv", frames)
    plots = []
    if plot_scaling(out / "scaling.png", scaling):
        plots.append("scaling.png")
    if plot_latency(out / "latency.png", frames, results.latency.timeline if results.latency else []):
        plots.append("latency.png")
    (out / "summary.md").write_text(markdown(results, scaling, plots), encoding="utf-8")
    print()
    print(table(results.targets))
    print(f"\nwritten to {out}/ (summary.md, results.json, *.csv, *.png)")
