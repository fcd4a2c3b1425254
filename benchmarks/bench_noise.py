"""Noise-aware profiling (issue 13, part 1): do identical configurations measure as identical?

Two sweeps (`espdetect.profiling.sweep`) on the recorded emulator clip (151 frames, 10 s) with
the real model, each with two *identical* configurations (the second under a label), every run
bracketed by the speed probe and replayed alongside a baseline (the two take turns frame by
frame). ``direct``: the default baseline, the first configuration, so the twin's ratio to the
baseline is the ratio of the two; ``through_baseline``: a third configuration is the baseline
and the twins compare through their ratios to it (`compare_configs`: four replays per repeat
instead of two). This machine's speed drifts (±25 % over minutes, and it switches between two
speeds 1.6x apart every few seconds), so:

* the ratio of the two identical configurations should have a 95 % interval (Student-t on log
  ratios, paired per repeat) that contains 1.0 and is at most ±5 % wide with 3 repeats;
* raw fps across repeats still moves with the machine (its spread is reported), while the
  speed-normalised fps (``fps_output_norm``) of one configuration agrees within 10 % (the
  profiling issue's repeat-agreement line);
* how much the speed probe moved, between runs and within one (`drift_summary`).

The model is ``--model`` / ``$ESPDETECT_MODEL``, else the bundled one. Writes ``results.json``
(every figure), ``summary.md`` (targets with PASS/FAIL) and the two sweeps' ``results.csv``,
``environment.json`` and ``fps_vs_baseline.png`` (the intervals) into ``--out``.

Usage::

    python -m benchmarks.bench_noise --out benchmarks/results/noise     # about 5 minutes on 2 quiet cores
"""

from __future__ import annotations

import argparse
import logging
import math
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks._harness.report import load_average, markdown_table, start_run, write_json

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
CLIP = ROOT / "data" / "clips" / "emulator-qvga"
#: Issue 13's bounds: the identical configurations' interval, and repeats agreeing (normalised).
HALF_WIDTH_TARGET_PCT = 5.0
AGREEMENT_TARGET_PCT = 10.0


def _spread_pct(values: Sequence[float]) -> float:
    clean = sorted(v for v in values if math.isfinite(v))
    if not clean:
        return math.nan
    mid = len(clean) // 2
    median = clean[mid] if len(clean) % 2 else (clean[mid - 1] + clean[mid]) / 2
    return (clean[-1] - clean[0]) / median * 100.0


def _r(value: float, digits: int = 3) -> float | None:
    return round(value, digits) if math.isfinite(value) else None


def _interval(iv: Any) -> dict[str, Any]:
    return {
        "center": _r(iv.center, 4),
        "low": _r(iv.low, 4),
        "high": _r(iv.high, 4),
        "half_width_pct": _r(iv.half_width_pct, 2),
        "contains_1": iv.contains(1.0),
        "n": iv.n,
    }


def _portable(folder: Path, model_dirs: set[str]) -> None:
    """Keep this machine's folders out of the committed files: the clip relative to the
    repository, the model by its file name."""
    for name in ("results.csv", "environment.json"):
        path = folder / name
        if path.is_file():
            text = path.read_text(encoding="utf-8").replace(str(ROOT) + "/", "")
            for model_dir in sorted(model_dirs, key=len, reverse=True):
                if model_dir not in ("", "."):
                    text = text.replace(model_dir + "/", "")
            path.write_text(text, encoding="utf-8")


def _sweep(
    out: Path, name: str, clip: Any, configs: list[Any], repeats: int, probe_calls: int
) -> dict[str, Any]:
    """One sweep (its folder and report under ``out/name``) and the figures of its runs."""
    from espdetect.profiling import drift_summary, log_t_interval, plot_fps_vs_baseline, save_figure, sweep

    folder = out / name
    shutil.rmtree(folder, ignore_errors=True)
    started = time.perf_counter()
    df = sweep(clip, configs, folder, repeats=repeats, reference=None, probe_calls=probe_calls,
               progress=False, resume=False)  # fmt: skip
    sweep_s = time.perf_counter() - started
    # Keep the table, its environment and the figure of the intervals (not every frame's row).
    save_figure(plot_fps_vs_baseline(df), folder / "fps_vs_baseline.png")
    for bulky in ("frames.csv", "results.parquet"):
        (folder / bulky).unlink(missing_ok=True)
    _portable(folder, {str(Path(m).parent) for m in df["model"].dropna().unique()})
    ok = df[df["status"] == "ok"]
    per_config: dict[str, Any] = {}
    for key, rows in ok.groupby("config_key", sort=False):
        rows = rows.sort_values("repeat")
        raw = rows["fps_output"].tolist()
        norm = rows["fps_output_norm"].tolist()
        per_config[str(key)] = {
            "fps_output": [_r(v, 2) for v in raw],
            "fps_output_min": _r(min(raw), 2),
            "fps_output_max": _r(max(raw), 2),
            "fps_output_spread_pct": _r(_spread_pct(raw), 1),
            "fps_output_norm": [_r(v, 2) for v in norm],
            "fps_output_norm_spread_pct": _r(_spread_pct(norm), 1),
            "fps_vs_baseline": [_r(v, 4) for v in rows["fps_vs_baseline"]],
            "fps_vs_baseline_interval": _interval(log_t_interval(rows["fps_vs_baseline"].tolist())),
            "speed_index": [_r(v, 2) for v in rows["speed_index"]],
            "drift_pct": [_r(v * 100, 1) for v in rows["drift"]],
        }
    drift = drift_summary(df)
    measured_s = float(ok["wall_s"].sum())
    return {
        "df": df,
        "baseline": df.attrs["environment"]["sweep"]["baseline"],
        "per_config": per_config,
        "raw_spread_pct_max": _r(max(c["fps_output_spread_pct"] for c in per_config.values()), 1),
        "norm_spread_pct_max": _r(max(c["fps_output_norm_spread_pct"] for c in per_config.values()), 1),
        "drift": {
            "runs": drift.runs,
            "between_pct": _r(drift.between_pct, 1),
            "within_pct": _r(drift.within_pct, 1),
            "flagged": drift.flagged,
            "threshold": drift.threshold,
            "speed_min": _r(drift.speed_min, 2),
            "speed_max": _r(drift.speed_max, 2),
            "sentence": drift.sentence,
        },
        "time": {
            "sweep_s": round(sweep_s, 1),
            "configuration_runs_s": round(measured_s, 1),
            "overhead_factor": round(sweep_s / measured_s, 2) if measured_s > 0 else None,
        },
    }


def run(out: Path, repeats: int, frames: int | None, probe_calls: int) -> dict[str, Any]:
    """Both sweeps and their figures."""
    from espdetect.profiling import ProfileConfig, compare_configs, load_clip, log_t_interval
    from espdetect.profiling.replay import ClipData

    clip = load_clip(CLIP)
    if frames is not None and frames < len(clip):
        clip = ClipData(clip.path, clip.frames[:frames], clip.fingerprint + f":{frames}")
    twin_a = ProfileConfig(skip=1, jpeg_quality=80)
    twin_b = twin_a.replace(label="twin")
    other = ProfileConfig(skip=2, jpeg_quality=50)
    # The default: the first configuration is the baseline, so the twin's runs pair with it.
    direct = _sweep(out, "direct", clip, [twin_a, twin_b], repeats, probe_calls)
    # A third configuration as the baseline: the twins compare through their ratios to it.
    through = _sweep(out, "through_baseline", clip, [other, twin_a, twin_b], repeats, probe_calls)
    sections: dict[str, Any] = {}
    for name, section in (("direct", direct), ("through_baseline", through)):
        df = section.pop("df")
        ok = df[df["status"] == "ok"].set_index(["config_key", "repeat"])["fps_output"]
        unpaired = [ok[(twin_b.key, r)] / ok[(twin_a.key, r)] for r in range(repeats)]
        section["identical_ratio"] = _interval(compare_configs(df, twin_b.key, twin_a.key))
        section["identical_ratio_unpaired"] = _interval(log_t_interval(unpaired))
        sections[name] = section
    return {
        "clip": {"path": str(CLIP.relative_to(ROOT)), "frames": len(clip), "fps": round(clip.fps, 2)},
        "repeats": repeats,
        "probe_calls": probe_calls,
        "configs": {"twin_a": twin_a.key, "twin_b": twin_b.key, "other_baseline": other.key},
        **sections,
    }


def _section_markdown(title: str, figures: dict[str, Any], repeats: int) -> list[str]:
    ratio = figures["identical_ratio"]
    unpaired = figures["identical_ratio_unpaired"]
    half = ratio["half_width_pct"]
    targets = [
        [
            "identical configurations: 95 % interval of their fps ratio contains 1.0",
            "contains 1.0",
            f"{ratio['center']} [{ratio['low']}, {ratio['high']}]",
            "PASS" if ratio["contains_1"] else "FAIL",
        ],
        [
            f"... and is at most ±{HALF_WIDTH_TARGET_PCT:g} % wide with {repeats} repeats",
            f"<= ±{HALF_WIDTH_TARGET_PCT:g} %",
            f"±{half} %",
            "PASS" if half is not None and half <= HALF_WIDTH_TARGET_PCT else "FAIL",
        ],
        [
            "raw fps across repeats still moves with the machine (largest spread of a configuration)",
            "reported",
            f"{figures['raw_spread_pct_max']} %",
            "-",
        ],
        [
            "repeats of one configuration agree (normalised fps, largest spread)",
            f"<= {AGREEMENT_TARGET_PCT:g} %",
            f"{figures['norm_spread_pct_max']} %",
            "PASS" if (figures["norm_spread_pct_max"] or math.inf) <= AGREEMENT_TARGET_PCT else "FAIL",
        ],
    ]
    rows = [
        [
            key,
            c["fps_output_min"],
            c["fps_output_max"],
            c["fps_output_spread_pct"],
            c["fps_output_norm_spread_pct"],
            ", ".join(str(v) for v in c["fps_vs_baseline"]),
            ", ".join(str(v) for v in c["drift_pct"]),
        ]
        for key, c in figures["per_config"].items()
    ]
    header = [
        "configuration",
        "raw fps min",
        "raw fps max",
        "raw spread %",
        "normalised spread %",
        "fps_vs_baseline per repeat",
        "probe drift % per run",
    ]
    timing = figures["time"]
    return [
        f"## {title}",
        "",
        f"Baseline: {figures['baseline']}.",
        "",
        markdown_table(["target", "bound", "measured", "result"], targets),
        "",
        f"Unpaired (raw fps of the two in the same repeat): {unpaired['center']} "
        f"[{unpaired['low']}, {unpaired['high']}], ±{unpaired['half_width_pct']} %.",
        "",
        figures["drift"]["sentence"],
        "",
        markdown_table(header, rows, "lrrrrll"),
        "",
        f"Sweep time {timing['sweep_s']} s for {timing['configuration_runs_s']} s of configuration runs "
        f"({timing['overhead_factor']}x: the baseline runs alongside, the probes, warm-up and bookkeeping).",
        "",
    ]


def summary_markdown(meta: dict[str, Any], figures: dict[str, Any]) -> str:
    lines = [
        "# Noise-aware profiling (bench_noise)",
        "",
        f"{meta['date']}, {meta['machine']}, model {meta['model']}, load average {meta['loadavg_start']:.2f} "
        f"at the start and {meta['loadavg_end']:.2f} at the end. Clip {figures['clip']['path']} "
        f"({figures['clip']['frames']} frames), {figures['repeats']} repeats, probe "
        f"{figures['probe_calls']} calls. Two identical configurations (`{figures['configs']['twin_a']}` "
        "and the same under the label `twin`) in one sweep.",
        "",
        *_section_markdown(
            "Direct: the first configuration is the baseline (the default), the twin runs alongside it",
            figures["direct"],
            figures["repeats"],
        ),
        *_section_markdown(
            "Through a third baseline: each twin against its own baseline runs, compared per repeat",
            figures["through_baseline"],
            figures["repeats"],
        ),
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/noise"))
    parser.add_argument("--model", default=None, help="model file (default $ESPDETECT_MODEL, else bundled)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frames", type=int, default=None, help="replay only the clip's first N frames")
    parser.add_argument("--probe-calls", type=int, default=5)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    meta = start_run(args.out, args.model, args.verbose, "onnxruntime", "numpy")
    figures = run(args.out, args.repeats, args.frames, args.probe_calls)
    meta["loadavg_end"] = load_average()
    write_json(args.out / "results.json", {"meta": meta, **figures})
    text = summary_markdown(meta, figures)
    (args.out / "summary.md").write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
