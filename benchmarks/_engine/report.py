"""engine.md: the targets table, then each section's figures (engine.json has every raw figure)."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks._engine.cameras import ROUND_ORDER
from benchmarks._engine.results import (
    CamerasResult,
    CamerasRound,
    CamWindow,
    FineResult,
    InstallResult,
    Results,
    RssResult,
    TargetRow,
)
from benchmarks._harness.report import markdown_table

__all__ = ["markdown", "targets_table", "write_outputs"]


def targets_table(targets: list[TargetRow]) -> str:
    rows = [[t.number, t.name, t.measured, t.goal, t.verdict, t.note] for t in targets]
    return markdown_table(["target", "what", "measured", "goal", "verdict", "how measured"], rows)


def _rss(res: RssResult) -> str:
    rows = [
        [r.backend, r.cameras, r.repeat, r.startup_s, r.rss_ready_mb, "{} / {} / {}".format(*r.rss_last_mb),
         round(sum(r.detect_fps.values()), 2), round(sum(r.out_fps.values()), 1), r.cpu_pct,
         r.machine_cores_busy, r.torch_mapped]
        for r in res.runs
    ]  # fmt: skip
    runs = markdown_table(
        ["backend", "cameras", "repeat", "start s", "RSS ready MB", "RSS steady min / med / max MB",
         "detections/s", "annotated fps", "server CPU %", "machine cores", "libtorch mapped"],
        rows, align="llrrrrrrrrl",
    )  # fmt: skip
    summary = markdown_table(
        ["backend", "RSS 1 cam", "RSS 2 cams", "RSS 4 cams", "+ per camera (2-1)", "+ per camera ((4-1)/3)"],
        [[s.backend, *(s.rss_mb.get(n) for n in (1, 2, 4)), s.increment_2_mb, s.increment_4_mb]
         for s in res.summary.values()],
        align="lrrrrr",
    )  # fmt: skip
    return (
        f"## rss\n\nMedians over repeats (MB):\n\n{summary}\n\nEvery run, in the order measured:\n\n{runs}\n"
    )


def _window_row(label: str, w: CamWindow) -> list[object]:
    return [
        label, w.round, w.detect_fps_total, w.detector_busy_share, w.detect_ms_mean,
        w.inference_ms_mean, w.prepost_ms_mean, w.rest_ms_mean, w.server_cpu_pct,
        # Roles that did nothing in the window (threads left from earlier windows) are left out.
        ", ".join(f"{k} {v:g}" for k, v in w.server_threads_pct.items() if v >= 0.5),
        w.cameras_cpu_pct, w.machine_cores_busy, w.foreign_cores,
        round(sum(w.viewer_fps) / len(w.viewer_fps), 1) if w.viewer_fps else "",
    ]  # fmt: skip


_WINDOW_HEADER = [
    "window", "round", "detections/s", "detector busy", "detect ms", "inference ms", "pre+post ms",
    "rest ms", "server CPU %", "server threads (% of a core)", "cameras CPU %", "machine cores",
    "foreign cores", "viewer fps",
]  # fmt: skip
_WINDOW_ALIGN = "lrrrrrrrrlrrrr"


def _round_rows(k: int, r: CamerasRound) -> list[list[object]]:
    """One round's windows in the order measured (reversed in odd rounds)."""
    u = r.ultralytics_4
    ultra: list[object] = ["ultralytics-4", u.round, u.rate, "", "", u.inference_ms.p50, "", "", u.cpu_pct]
    ultra += ["(the runner, whole run)", u.cameras_cpu_pct, u.machine_cores_busy, u.foreign_cores, ""]
    windows = {"sse-1": r.sse_1, "sse-4": r.sse_4, "annotated-4": r.annotated_4, "annotated-1": r.annotated_1}
    order = ROUND_ORDER if k % 2 == 0 else ROUND_ORDER[::-1]
    return [ultra if label == "ultralytics-4" else _window_row(label, windows[label]) for label in order]


def _cameras(res: CamerasResult) -> str:
    pairs = markdown_table(
        ["round", "sse-1", "sse-4", "4/1", "annotated-1", "annotated-4", "4/1", "ultralytics-4",
         "sse-4 / ultra", "annotated-4 / ultra"],
        [[k, r.sse_1.detect_fps_total, r.sse_4.detect_fps_total, r.sse_ratio, r.annotated_1.detect_fps_total,
          r.annotated_4.detect_fps_total, r.annotated_ratio, r.ultralytics_4.rate, r.sse_vs_ultralytics,
          r.annotated_vs_ultralytics] for k, r in enumerate(res.rounds)]
        + [["median", "", "", res.sse_ratio, "", "", res.annotated_ratio, "", res.sse_vs_ultralytics,
            res.annotated_vs_ultralytics]],
        align="lrrrrrrrrr",
    )  # fmt: skip
    rows = [row for k, r in enumerate(res.rounds) for row in _round_rows(k, r)]
    windows = markdown_table(_WINDOW_HEADER, rows, align=_WINDOW_ALIGN)
    parts = markdown_table(
        ["viewers", "busy 1 / 4", "busy ratio", "detect ms 1 / 4", "speed ratio", "inference ms 1 / 4",
         "outside inference ms 1 / 4", "model CPU % 1 / 4", "other CPU % 1 / 4", "foreign cores 1 / 4"],
        [[d.kind, f"{d.busy_1} / {d.busy_4}", d.busy_ratio, f"{d.detect_ms_1} / {d.detect_ms_4}",
          d.speed_ratio, f"{d.inference_ms_1} / {d.inference_ms_4}", f"{d.outside_ms_1} / {d.outside_ms_4}",
          f"{d.model_cpu_1} / {d.model_cpu_4}", f"{d.other_cpu_1} / {d.other_cpu_4}",
          f"{d.foreign_cores_1} / {d.foreign_cores_4}"] for d in res.decomposition],
    )  # fmt: skip
    # The class names and model details are in engine.json; the options are what matters here.
    settings = ", ".join(f"{k}={v}" for k, v in res.camera_settings.items() if k not in ("names", "model"))
    text = (
        f"## cameras\n\nServer camera settings (`GET /cameras/c0/settings`): {settings}.\n\n"
        f"Detections per second summed over cameras ({res.fps:g} fps VGA cameras):\n\n"
        f"{pairs}\n\n"
        "Where the 4/1 ratio comes from (medians over rounds): ratio = busy ratio x speed ratio (detect ms = "
        "decode + pre-processing + ONNX Runtime run + post-processing + GIL waits); model CPU = detection "
        "thread + native (ONNX Runtime pool) threads, other = event loop, render, rest; foreign = other "
        "processes on the machine:\n\n"
        f"{parts}\n\n"
        f"Every window, in the order measured:\n\n{windows}\n"
    )
    for fine in res.fine.values():
        text += _fine(fine)
    if res.profile is not None:
        text += _profile(res)
    return text


def _fine(fine: FineResult) -> str:
    rows = [
        [k, p.first, p.sse_1, p.sse_4, p.ratio, p.inference_ms_1, p.inference_ms_4, p.event_loop_pct_1,
         p.event_loop_pct_4, p.foreign_cores]
        for k, p in enumerate(fine.pairs)
    ]  # fmt: skip
    table = markdown_table(
        ["pair", "first", "sse-1 /s", "sse-4 /s", "4/1", "inference ms 1", "inference ms 4", "event loop % 1",
         "event loop % 4", "foreign cores"],
        rows, align="lrrrrrrrrr",
    )  # fmt: skip
    return (
        f"\n### Short pairs, server {fine.server}: {len(fine.pairs)} pairs of {fine.window:g}-s SSE "
        "windows\n\n"
        f"4/1 median {fine.ratio_median} (quartiles {fine.ratio_q1}-{fine.ratio_q3}), {fine.below_0_9} pairs "
        f"below 0.9; median inference-time ratio 4/1: {fine.inference_ratio_median}; {fine.quiet_pairs} "
        f"quiet pairs (foreign < 0.1 core): median {fine.quiet_ratio_median}.\n\n{table}\n"
    )


def _profile(res: CamerasResult) -> str:
    assert res.profile is not None
    prof = res.profile
    windows = markdown_table(
        _WINDOW_HEADER, [_window_row(k, w) for k, w in prof.windows.items()], align=_WINDOW_ALIGN
    )
    parts = [f"\n### Profile (py-spy, diagnostic windows)\n\n{windows}\n"]
    for label, threads in prof.threads.items():
        rows = [
            [t.group, t.active_share, "; ".join(f"{f} {s:.0%}" for f, s in t.top_functions[:5]),
             "; ".join(f"{f} {s:.0%}" for f, s in t.top_espdetect[:5])]
            for t in threads
        ]  # fmt: skip
        table = markdown_table(
            ["thread role", "active share", "top leaf functions", "innermost espdetect"], rows
        )
        parts.append(f"{label}:\n\n{table}\n")
    return "\n".join(parts)


def _install(res: InstallResult) -> str:
    top = markdown_table(["distribution", "MB"], [[n, mb] for n, mb in res.top_packages], align="lr")
    return (
        f"## install\n\nFresh venv (python {res.python}), `pip install .` of the working tree: "
        f"{res.site_packages_mb:g} MB site-packages, {res.distributions} distributions, {res.install_s:g} s. "
        f"`import torch` fails: {res.torch_import_fails} ({res.torch_import_error}); "
        f"`import espdetect.server.app, espdetect.detectors.onnx` works: {res.espdetect_imports} "
        f"{res.espdetect_import_error}; bundled model smoke test: {res.smoke}.\n\n"
        f"Largest installed:\n\n{top}\n"
    )


def markdown(results: Results) -> str:
    m = results.meta
    loads = "; ".join(f"{moment} {la[0]:.2f}/{la[1]:.2f}/{la[2]:.2f}" for moment, la in m.load_averages)
    versions = ", ".join(f"{k} {v}" for k, v in m.versions.items())
    parts = [
        "# Engine benchmark\n",
        f"{m.started} to {m.finished} ({m.elapsed_s:g} s) on {m.platform}, {m.cpus} CPUs; python {m.python}, "
        f"{versions}. Model `{m.model}`. Command: `{m.command}`. Working tree: commit {m.git_commit} with "
        f"{m.git_changed_files} changed or untracked files.\n",
        f"Load averages (1/5/15 min): {loads}.\n",
        targets_table(results.targets) + "\n",
    ]
    if results.errors:
        parts.append("Errors:\n\n" + "\n".join(f"* {e}" for e in results.errors) + "\n")
    if results.rss is not None:
        parts.append(_rss(results.rss))
    if results.cameras is not None:
        parts.append(_cameras(results.cameras))
    if results.install is not None:
        parts.append(_install(results.install))
    return "\n".join(parts)


def write_outputs(out: Path, results: Results) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "engine.json").write_text(
        json.dumps(results.to_json(), indent=1, default=str) + "\n", encoding="utf-8"
    )
    (out / "engine.md").write_text(markdown(results), encoding="utf-8")
    print()
    print(targets_table(results.targets))
    print(f"\nwritten to {out}/ (engine.md, engine.json, logs/)")
