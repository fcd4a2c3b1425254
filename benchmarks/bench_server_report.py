"""Output of the server benchmarks: JSON, CSV, Markdown summary, plots, and the printed table."""

from __future__ import annotations

import csv
import itertools
import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["TargetRow", "write_outputs"]


@dataclass
class TargetRow:
    """One target: what was measured against what was asked, and the verdict (None: no goal)."""

    number: str
    name: str
    measured: str
    goal: str
    passed: bool | None
    note: str

    @property
    def verdict(self) -> str:
        return "-" if self.passed is None else ("PASS" if self.passed else "FAIL")


def _median(group: list[dict[str, Any]], key: str) -> float | None:
    values = [w[key] for w in group if w.get(key) is not None]
    return round(statistics.median(values), 3) if values else None


def inference_cost(results: dict[str, Any]) -> float | None:
    """CPU per inference of the model-only loop (target 4), in % of a core x seconds."""
    pairs = results.get("model_rate", {}).get("pairs", [])
    costs = [p["model_only"]["cpu_pct"] / p["model_only"]["rate"] for p in pairs if p["model_only"]["rate"]]
    return statistics.median(costs) if costs else None


def _outside_model(group: list[dict[str, Any]], cost: float | None) -> float | None:
    if cost is None:
        return None
    values = [w["cpu_pct"] - cost * sum(c["detect_fps"] for c in w["cameras"].values()) for w in group]
    return round(statistics.median(values), 2) if values else None


def scaling_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    cost = inference_cost(results)
    rows: list[dict[str, Any]] = []
    for axis, key in (("viewers", "scaling_viewers"), ("cameras", "scaling_cameras")):
        for n, group in sorted(results.get(key, {}).items(), key=lambda kv: int(kv[0])):
            if not group:
                continue
            detect = [
                statistics.fmean(c["detect_fps"] for c in w["cameras"].values())
                for w in group
                if w["cameras"]
            ]
            calls = [
                max(c["model_calls_per_frame"] or 0.0 for c in w["cameras"].values())
                for w in group
                if w["cameras"]
            ]
            rows.append(
                {
                    "server": "espdetect",
                    "axis": axis,
                    "n": int(n),
                    "windows": len(group),
                    "cpu_pct": _median(group, "cpu_pct"),
                    "cpu_pct_outside_model_est": _outside_model(group, cost),
                    "viewer_fps_mean": _median(group, "viewer_fps_mean"),
                    "viewer_fps_min": _median(group, "viewer_fps_min"),
                    "detect_fps_per_camera": round(statistics.median(detect), 3) if detect else None,
                    "model_calls_per_camera_frame": round(max(calls), 4) if calls else None,
                    "machine_cores_busy": _median(group, "machine_cores_busy"),
                    "viewer_errors": sum(w["viewer_errors"] for w in group),
                }
            )
    for n, w in sorted(results.get("baseline", {}).get("windows", {}).items(), key=lambda kv: int(kv[0])):
        rows.append(
            {
                "server": "baseline",
                "axis": "viewers",
                "n": int(n),
                "windows": 1,
                "cpu_pct": w["cpu_pct"],
                # Not estimated: inferences there overlap the loop's stalls, so the split means nothing.
                "cpu_pct_outside_model_est": None,
                "viewer_fps_mean": w["viewer_fps_mean"],
                "viewer_fps_min": w["viewer_fps_min"],
                "detect_fps_per_camera": w["model_calls_per_s"],
                "model_calls_per_camera_frame": w["model_calls_per_camera_frame"],
                "machine_cores_busy": w["machine_cores_busy"],
                "viewer_errors": w["viewer_errors"],
            }
        )
    return rows


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def plot_scaling(path: Path, rows: list[dict[str, Any]]) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rows:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, axis in zip(axes, ("viewers", "cameras"), strict=True):
        twin = ax.twinx()
        for server, style in (("espdetect", "o-"), ("baseline", "s--")):
            sel = [r for r in rows if r["axis"] == axis and r["server"] == server]
            if not sel:
                continue
            xs = [r["n"] for r in sel]
            ax.plot(xs, [r["cpu_pct"] for r in sel], style, color="tab:red", label=f"{server} CPU %")
            twin.plot(
                xs, [r["viewer_fps_mean"] for r in sel], style, color="tab:blue", label=f"{server} fps/viewer"
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


def plot_latency(path: Path, frames: list[dict[str, Any]], timeline: list[dict[str, Any]]) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    if not frames:
        return False
    t = np.array([f["t"] for f in frames])
    added = np.array([f["added_ms"] for f in frames])
    excl = np.array([f["added_excl_hold_ms"] for f in frames])
    fig, ax = plt.subplots(figsize=(11, 4.2))
    ax.scatter(
        t, added, s=3, alpha=0.35, color="tab:gray", label="added latency per frame (target's definition)"
    )
    span = max(1.0, float(t.max()))
    bucket = 10.0 if span >= 60 else max(2.0, span / 10)
    edges = np.arange(0, span + bucket, bucket)
    mids, p50, p99, x50 = [], [], [], []
    for lo, hi in itertools.pairwise(edges):
        sel = (t >= lo) & (t < hi)
        if sel.sum() >= 5:
            mids.append((lo + hi) / 2)
            p50.append(np.percentile(added[sel], 50))
            p99.append(np.percentile(added[sel], 99))
            x50.append(np.percentile(excl[sel], 99))
    ax.plot(mids, p50, "-", color="tab:green", label=f"p50 per {bucket:g} s")
    ax.plot(mids, p99, "-", color="tab:red", label=f"p99 per {bucket:g} s")
    ax.plot(mids, x50, ":", color="tab:purple", label="p99 without holds for own detection")
    ax.axhline(10, color="tab:green", lw=0.8, ls="--")
    ax.axhline(30, color="tab:red", lw=0.8, ls="--")
    ax.set_xlabel("seconds into the run")
    ax.set_ylabel("ms")
    ax.set_ylim(0, max(60.0, float(np.percentile(added, 99.5)) * 1.1))
    if timeline:
        twin = ax.twinx()
        twin.plot(
            [p["t"] for p in timeline],
            [p["rss_mb"] for p in timeline],
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
    lines = [
        "| # | target | measured | goal | verdict | how / notes |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for t in targets:
        lines.append(f"| {t.number} | {t.name} | {t.measured} | {t.goal} | **{t.verdict}** | {t.note} |")
    return "\n".join(lines)


def markdown(
    results: dict[str, Any], targets: list[TargetRow], scaling: list[dict[str, Any]], plots: list[str]
) -> str:
    meta = results["meta"]
    out = [
        "# Server benchmark",
        "",
        f"{meta['started']} to {meta.get('finished', '?')} ({meta.get('elapsed_s', '?')} s) "
        f"on {meta['platform']}, {meta['cpus']} CPUs shared with other work "
        f"(load average {meta['load_average_start'][0]:.2f} at start, "
        f"{meta.get('load_average_end', [float('nan')])[0]:.2f} at the end); "
        f"model `{Path(meta['model']).name}` "
        f"(ONNX Runtime {meta['onnxruntime']}, Ultralytics {meta['ultralytics']}); "
        f"{'quick' if meta['quick'] else 'full'} run of targets {', '.join(map(str, meta['only']))}.",
        "",
        f"Command: `{meta['command']}`",
        "",
        "Every figure below was measured in this run. CPU is the server process's user + system time "
        "(all threads) in % of one core; `machine` is what all processes on the machine used, in cores.",
        "",
        "## Targets",
        "",
        table(targets),
        "",
    ]
    if scaling:
        out += [
            "## Cost against viewers and cameras",
            "",
            "`CPU outside the model (est.)` subtracts detections/s x the CPU one inference took in the "
            "model-only loop of target 4 (median over its windows): a rough split, since an inference "
            "costs more or less CPU depending on what else runs.",
            "",
            "| server | axis | n | windows | CPU % | CPU outside the model (est.) "
            "| fps per viewer (mean / min) | detections/s per camera | model calls per camera frame "
            "| machine cores busy | viewer errors |",
            "| --- | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |",
        ]
        for r in scaling:
            out.append(
                f"| {r['server']} | {r['axis']} | {r['n']} | {r['windows']} | {r['cpu_pct']} | "
                f"{r['cpu_pct_outside_model_est']} | "
                f"{r['viewer_fps_mean']} / {r['viewer_fps_min']} | {r['detect_fps_per_camera']} | "
                f"{r['model_calls_per_camera_frame']} | {r['machine_cores_busy']} | {r['viewer_errors']} |"
            )
        out.append("")
    lat = results.get("latency")
    if lat:
        out += [
            "## Latency (target 5)",
            "",
            f"Camera at {lat['camera_fps']:g} fps (3x the server's detection rate probed just before, "
            f"{lat['model_rate']:.2f}/s; {lat['detect_fps_during_run']['median']:.2f}/s median during the "
            "run), "
            f"{lat['duration_s']:g} s, {lat['frames']} frames received by one annotated viewer.",
            "",
            "| measure | n | p50 | p95 | p99 | max |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for label, key in (
            ("arrival -> last byte received, all frames", "latency_ms"),
            ("same, frames the detector did not take", "latency_not_own_ms"),
            ("added latency (minus inference when the boxes are the frame's own)", "added_ms"),
            ("added latency minus any hold for the frame's own detection", "added_excl_hold_ms"),
            ("detect time of frames with own detection", "detect_ms"),
        ):
            p = lat[key]
            out.append(f"| {label} | {p['n']} | {p['p50']} | {p['p95']} | {p['p99']} | {p['max']} |")
        out += [
            "",
            f"{lat['own_frames']} frames were taken by the detector: {lat['fresh_frames']} left after "
            f"their own detection ended (drawn with their own boxes), {lat['held_frames']} were held until "
            "the next camera frame arrived and then drawn with the previous boxes, the rest were rendered "
            "at once with the previous boxes. Flatness: " + lat["flat"]["summary"] + ".",
            "",
        ]
    base = results.get("baseline")
    if base:
        out += ["## Baseline (per-viewer design)", "", f"Generator: `{base['generator']}`.", ""]
        for n, w in sorted(base.get("windows", {}).items(), key=lambda kv: int(kv[0])):
            out.append(
                f"- {n} viewers: CPU {w['cpu_pct']} %, fps per viewer mean {w['viewer_fps_mean']} "
                f"(min {w['viewer_fps_min']}, max {w['viewer_fps_max']}), "
                f"{w['viewers_without_frames']} viewers without a frame in the window, "
                f"{w['viewer_errors']} viewer errors, {w['model_calls_per_s']} model calls/s "
                f"({w['model_calls_per_camera_frame']} per camera frame), "
                f"{w['model_calls_per_delivered_frame']} model calls per frame a viewer received, "
                f"camera connections {w['camera_connections_start']} -> {w['camera_connections_end']} "
                f"(at most {w['camera_connections_max']}, {w['camera_connections_opened']} opened during the "
                f"window), inference p50 {w['inference_ms']['p50']} ms."
            )
        disc = base.get("disconnect")
        if disc:
            out.append(
                f"- disconnects: the generator's finally ran after p50 {disc['viewer_gone_ms']['p50']} ms "
                f"(max {disc['viewer_gone_ms']['max']} ms, n={disc['viewer_gone_ms']['n']}); the camera "
                f"connection closed after p50 {disc['closed_ms']['p50']} ms / max "
                f"{disc['closed_ms']['max']} ms in {disc['closed_ms']['n']} trials, "
                f"{disc['not_closed']} of {len(disc['trials'])} not closed "
                f"within {disc['not_closed_within_s']:g} s ({disc['camera_connections_left']} left open)."
            )
        bare = base.get("bare_generator")
        if bare and "model_calls_per_s_with_nobody_watching" in bare:
            out.append(
                "- `async-bare` flavour (no `sleep(0)`), 1 s after the last of 3 viewers (one at a time) "
                "left, over "
                f"{bare['seconds']} s: {bare['model_calls_per_s_with_nobody_watching']} model calls/s, "
                f"{bare['cpu_pct_with_nobody_watching']} % CPU, "
                f"{bare['camera_connections']} camera connections, "
                f"{bare['viewers_counted']} generators still running."
            )
        out.append("")
    if plots:
        out += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    out += [
        "Raw figures: `results.json`; per-frame latency: `latency.csv`; scaling table: `scaling.csv`; "
        "targets: `targets.csv`; child process logs: `logs/`.",
        "",
    ]
    return "\n".join(out)


def write_outputs(out: Path, results: dict[str, Any], targets: list[TargetRow]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    frames = results.pop("latency_frames", [])
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
    _write_csv(out / "targets.csv", [t.__dict__ | {"verdict": t.verdict} for t in targets])
    scaling = scaling_rows(results)
    _write_csv(out / "scaling.csv", scaling)
    _write_csv(out / "latency.csv", frames)
    plots = []
    if plot_scaling(out / "scaling.png", scaling):
        plots.append("scaling.png")
    if plot_latency(out / "latency.png", frames, results.get("latency", {}).get("timeline", [])):
        plots.append("latency.png")
    (out / "summary.md").write_text(markdown(results, targets, scaling, plots), encoding="utf-8")
    print()
    print(table(targets))
    print(f"\nwritten to {out}/ (summary.md, results.json, *.csv, *.png)")
