"""Per-frame ``detect`` time and memory of the native detectors against Ultralytics.

Compares, on the same ``.onnx`` file (``--model``, else ``$ESPDETECT_MODEL``, else the bundled
COCO YOLOv8n int8):

* **OnnxDetector vs UltralyticsDetector**: the same ONNX Runtime session underneath, so the
  difference is pre/post-processing (numpy + OpenCV against torch) and Ultralytics' overhead;
* **OpenVinoDetector vs OnnxDetector** (when ``openvino`` is installed): another runtime on
  the same file, same pre/post-processing.

Timing is **paired and interleaved**: this machine's CPU speed drifts by ±25 % over minutes,
so every round runs each detector once on the same frame, in a shuffled order, and the
comparison is made on those rounds (pairs). Frames are Ultralytics' sample photos (bus.jpg,
zidane.jpg) resized to 640x480, what an ESP32-CAM sends at VGA, alternating. Warm-up rounds are
not timed. The p50 ratio's 95 % confidence interval is a moving-block bootstrap over the pairs
(blocks of ``--block`` consecutive rounds keep the drift's autocorrelation in each resample),
so it is honest at the number of pairs ``n``.

Memory: each detector is loaded in a **fresh subprocess** (so none shares memory with
another); its resident set size (RSS) is read before importing anything heavy, after loading
the model and after the first detection.

Writes ``detectors.json`` (every figure, per-round samples included) and ``detectors.md``
into ``--out``.

Usage::

    python -m benchmarks.bench_detectors --out benchmarks/results/detectors [--pairs 200] [--model M]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from benchmarks._harness.procs import REPO_ROOT, module_argv
from benchmarks._harness.report import load_average, markdown_table, utc_now, write_json
from espdetect.detectors.base import Detector
from espdetect.detectors.models import resolve_model
from espdetect.emulator.scene import sample_photo
from espdetect.exceptions import EspdetectError
from espdetect.stats import Percentiles, percentile

logger = logging.getLogger(__name__)

FRAME_SIZE = (640, 480)
BACKENDS = ("onnxruntime", "openvino", "ultralytics")
#: (measured, reference): the ratio reported is measured / reference.
COMPARISONS = (("onnxruntime", "ultralytics"), ("openvino", "onnxruntime"))


def load_frames() -> list[np.ndarray]:
    """bus.jpg and zidane.jpg resized to VGA, as an ESP32-CAM would send them."""
    frames = []
    for name in ("bus.jpg", "zidane.jpg"):
        image = cv2.imread(str(sample_photo(name)))
        if image is None:
            raise SystemExit(f"cannot read the sample photo {name}")
        frames.append(cv2.resize(image, FRAME_SIZE, interpolation=cv2.INTER_AREA))
    return frames


def open_backend(backend: str, model: str, threads: int | None) -> Detector:
    """The detector of ``backend`` on ``model`` (imports its runtime only now)."""
    if backend == "onnxruntime":
        from espdetect.detectors.onnx import OnnxDetector

        return OnnxDetector(model, threads=threads)
    if backend == "openvino":
        from espdetect.detectors.openvino import OpenVinoDetector

        return OpenVinoDetector(model, threads=threads)
    from espdetect.detectors.ultralytics import UltralyticsDetector

    return UltralyticsDetector(model)


# --- RSS, one subprocess per backend ---


def rss_mb() -> float:
    import psutil

    return round(psutil.Process().memory_info().rss / 2**20, 1)


def rss_child(backend: str, model: str, threads: int | None) -> dict[str, Any]:
    """Runs inside the subprocess: load one detector, report RSS and what it imported."""
    before = rss_mb()
    t0 = time.perf_counter()
    detector = open_backend(backend, model, threads)
    load_s = time.perf_counter() - t0
    after_load = rss_mb()
    frame = load_frames()[0]
    detector.detect(frame)
    after_detect = rss_mb()
    return {
        "backend": backend,
        "rss_before_mb": before,
        "rss_after_load_mb": after_load,
        "rss_after_first_detect_mb": after_detect,
        "import_and_load_s": round(load_s, 2),
        "torch_imported": "torch" in sys.modules,
        "ultralytics_imported": "ultralytics" in sys.modules,
    }


def measure_rss(backends: Sequence[str], model: str, threads: int | None) -> list[dict[str, Any]]:
    results = []
    for backend in backends:
        command = module_argv("benchmarks.bench_detectors", "--rss-child", backend, "--model", model)
        if threads is not None:
            command += ["--threads", str(threads)]
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=600, check=False, cwd=REPO_ROOT
        )
        if done.returncode != 0:
            logger.warning("RSS child %s failed: %s", backend, done.stderr.strip().splitlines()[-1:])
            continue
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        logger.info("RSS %s: %s", backend, results[-1])
    return results


# --- paired, interleaved timing ---


def time_rounds(
    detectors: dict[str, Detector], frames: Sequence[np.ndarray], rounds: int, warmup: int, seed: int
) -> tuple[dict[str, list[float]], dict[str, list[tuple[float, float, float]]]]:
    """``rounds`` timed rounds; each runs every detector once on the same frame, in shuffled order.

    Returns the wall time of each call and the detector's own (pre, inference, post) split.
    """
    rng = random.Random(seed)
    names = list(detectors)
    samples: dict[str, list[float]] = {name: [] for name in names}
    stages: dict[str, list[tuple[float, float, float]]] = {name: [] for name in names}
    clock: Callable[[], float] = time.perf_counter
    for i in range(warmup + rounds):
        frame = frames[i % len(frames)]
        order = names[:]
        rng.shuffle(order)  # no detector always runs first (caches, turbo, thermal state)
        for name in order:
            t0 = clock()
            timings = detectors[name].detect(frame).timings
            elapsed_ms = (clock() - t0) * 1e3
            if i >= warmup:
                samples[name].append(elapsed_ms)
                if timings is not None:
                    stages[name].append((timings.preprocess_ms, timings.inference_ms, timings.postprocess_ms))
        if i == warmup - 1:
            logger.info("warm-up done; timing %d rounds of %s", rounds, names)
    return samples, stages


def block_bootstrap_ratio(
    a: np.ndarray, b: np.ndarray, *, block: int, resamples: int, seed: int
) -> tuple[float, float, float, float]:
    """95 % CIs of p50(a)/p50(b) and of the median per-pair ratio, resampling blocks of pairs."""
    rng = np.random.default_rng(seed)
    n = len(a)
    block = max(1, min(block, n))
    starts_max = n - block + 1
    blocks_needed = -(-n // block)
    p50_ratios = np.empty(resamples)
    pair_ratios = np.empty(resamples)
    per_pair = a / b
    for r in range(resamples):
        starts = rng.integers(0, starts_max, blocks_needed)
        idx = (starts[:, None] + np.arange(block)[None, :]).ravel()[:n]
        p50_ratios[r] = np.median(a[idx]) / np.median(b[idx])
        pair_ratios[r] = np.median(per_pair[idx])
    lo, hi = np.percentile(p50_ratios, [2.5, 97.5])
    plo, phi = np.percentile(pair_ratios, [2.5, 97.5])
    return float(lo), float(hi), float(plo), float(phi)


def _detector_figures(values: list[float], stages: list[tuple[float, float, float]]) -> dict[str, Any]:
    p = Percentiles.of(values)
    return {
        "n": len(values),
        "p50_ms": None if p.p50 is None else round(p.p50, 2),
        "p95_ms": None if p.p95 is None else round(p.p95, 2),
        "mean_ms": round(statistics.fmean(values), 2),
        # The detector's own split: Ultralytics' pre/post run torch, the native ones numpy/OpenCV.
        "stage_p50_ms": {
            stage: percentile([s[k] for s in stages], 50, digits=2)
            for k, stage in enumerate(("preprocess", "inference", "postprocess"))
        }
        if stages
        else None,
    }


def summarise(
    samples: dict[str, list[float]],
    stages: dict[str, list[tuple[float, float, float]]],
    block: int,
    resamples: int,
    seed: int,
) -> dict[str, Any]:
    per_detector = {name: _detector_figures(values, stages.get(name, [])) for name, values in samples.items()}
    comparisons = []
    for measured, reference in COMPARISONS:
        if measured not in samples or reference not in samples:
            continue
        a, b = np.asarray(samples[measured]), np.asarray(samples[reference])
        lo, hi, plo, phi = block_bootstrap_ratio(a, b, block=block, resamples=resamples, seed=seed)
        comparisons.append(
            {
                "measured": measured,
                "reference": reference,
                "n_pairs": len(a),
                "p50_ratio": round(float(np.median(a) / np.median(b)), 3),
                "p50_ratio_ci95": [round(lo, 3), round(hi, 3)],
                "median_pair_ratio": round(float(np.median(a / b)), 3),
                "median_pair_ratio_ci95": [round(plo, 3), round(phi, 3)],
                "measured_faster_in_pairs": round(float(np.mean(a < b)), 3),
            }
        )
    return {"detectors": per_detector, "comparisons": comparisons}


# --- reporting ---


def versions() -> dict[str, str]:
    found = {"python": platform.python_version(), "numpy": np.__version__, "opencv": cv2.__version__}
    for module in ("onnxruntime", "openvino", "ultralytics", "torch"):
        if module in sys.modules:
            found[module] = str(sys.modules[module].__version__)
    return found


def _timing_tables(meta: dict[str, Any], timing: dict[str, Any]) -> list[str]:
    detectors = [
        [name, row["n"], row["p50_ms"], row["p95_ms"], row["mean_ms"],
         " / ".join(str(v) for v in row["stage_p50_ms"].values()) if row["stage_p50_ms"] else "n/a"]
        for name, row in timing["detectors"].items()
    ]  # fmt: skip
    comparisons = [
        [c["measured"], c["reference"], c["n_pairs"], c["p50_ratio"],
         f"{c['p50_ratio_ci95'][0]}–{c['p50_ratio_ci95'][1]}", c["median_pair_ratio"],
         f"{c['median_pair_ratio_ci95'][0]}–{c['median_pair_ratio_ci95'][1]}",
         f"{c['measured_faster_in_pairs']:.0%} of pairs"]
        for c in timing["comparisons"]
    ]  # fmt: skip
    return [
        markdown_table(
            ["detector", "n", "p50 ms", "p95 ms", "mean ms", "p50 pre / inference / post ms (own timings)"],
            detectors,
            align="lrrrrl",
        ),
        "",
        f"Ratios are measured / reference; 95 % CIs from a moving-block bootstrap ({meta['block']}-round "
        f"blocks, {meta['resamples']} resamples) over the n pairs.",
        "",
        markdown_table(
            [
                "measured",
                "reference",
                "n pairs",
                "p50 ratio",
                "95 % CI",
                "median per-pair ratio",
                "95 % CI",
                "measured faster in",
            ],
            comparisons,
            align="llrrlrlr",
        ),
    ]


def render_markdown(report: dict[str, Any]) -> str:
    meta = report["meta"]
    lines = [
        "# Detector benchmark",
        "",
        f"{meta['date']} on {meta['platform']}, {meta['cpu_count']} CPUs; "
        + ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
        + f"; load average {meta['loadavg_start']} at start, {meta['loadavg_end']} at the end.",
        "",
        f"Model `{meta['model']}`; frames: bus.jpg and zidane.jpg resized to "
        f"{FRAME_SIZE[0]}x{FRAME_SIZE[1]}, "
        f"alternating. Each of {meta['rounds']} rounds runs every detector once on the same frame in a "
        f"shuffled order ({meta['warmup']} warm-up rounds not timed); times are the wall time of "
        f"`detect()` in ms. Threads: {meta['threads'] or 'runtime defaults'}.",
        "",
        *_timing_tables(meta, report["timing"]),
    ]
    if report["rss"]:
        rss = [
            [r["backend"], r["rss_before_mb"], r["rss_after_load_mb"], r["rss_after_first_detect_mb"],
             r["import_and_load_s"], r["torch_imported"]]
            for r in report["rss"]
        ]  # fmt: skip
        lines += [
            "",
            "Memory: each detector loaded alone in a fresh process (RSS in MiB).",
            "",
            markdown_table(
                [
                    "detector",
                    "before import",
                    "after load",
                    "after first detect",
                    "import + load s",
                    "torch imported",
                ],
                rss,
                align="lrrrrl",
            ),
        ]
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/detectors"), help="output folder"
    )
    parser.add_argument(
        "--model", default=None, help="an .onnx model (default $ESPDETECT_MODEL or the bundled one)"
    )
    parser.add_argument(
        "--pairs", type=int, default=200, help="timed rounds (pairs per comparison), default 200"
    )
    parser.add_argument("--warmup", type=int, default=10, help="untimed rounds first (default 10)")
    parser.add_argument(
        "--threads", type=int, default=None, help="native detectors' threads (default: runtime's)"
    )
    parser.add_argument("--block", type=int, default=10, help="bootstrap block length in rounds (default 10)")
    parser.add_argument("--resamples", type=int, default=5000, help="bootstrap resamples (default 5000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-rss", action="store_true", help="skip the memory subprocesses")
    parser.add_argument("--rss-child", choices=BACKENDS, help=argparse.SUPPRESS)
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    os.environ.setdefault("YOLO_OFFLINE", "True")
    model = resolve_model(args.model)

    if args.rss_child:
        print(json.dumps(rss_child(args.rss_child, model, args.threads)))
        return 0

    if Path(model).suffix.lower() != ".onnx":
        print(f"bench_detectors: error: expected an .onnx model, got {model!r}", file=sys.stderr)
        return 2
    loadavg_start = load_average()
    rss = [] if args.skip_rss else measure_rss(BACKENDS, model, args.threads)

    frames = load_frames()
    detectors: dict[str, Detector] = {}
    for backend in BACKENDS:
        try:
            detectors[backend] = open_backend(backend, model, args.threads)
        except (ImportError, EspdetectError) as exc:
            logger.warning("skipping %s: %s: %s", backend, type(exc).__name__, exc)
    counts = {name: [len(d.detect(frame)) for frame in frames] for name, d in detectors.items()}
    samples, stages = time_rounds(detectors, frames, args.pairs, args.warmup, args.seed)

    report = {
        "meta": {
            "date": utc_now(),
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "versions": versions(),
            # The file name only: results are committed, the path is this machine's.
            "model": Path(model).name,
            "frame_size": list(FRAME_SIZE),
            "rounds": args.pairs,
            "warmup": args.warmup,
            "threads": args.threads,
            "block": args.block,
            "resamples": args.resamples,
            "loadavg_start": loadavg_start,
            "loadavg_end": load_average(),
            "boxes_per_frame": counts,
        },
        "timing": summarise(samples, stages, args.block, args.resamples, args.seed),
        "rss": rss,
        "samples_ms": {name: [round(v, 3) for v in values] for name, values in samples.items()},
    }
    write_json(args.out / "detectors.json", report)
    table = render_markdown(report)
    (args.out / "detectors.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
