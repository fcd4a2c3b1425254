"""Does running several cameras' frames as one batch pay on this machine? (Cross-camera batching.)

One YOLOv8n network (the untrained ``yolov8n.yaml``: the same layers and cost as the trained
model, exported by Ultralytics with a dynamic batch axis) is run by ONNX Runtime on N frames, as
one batch of N and as N single-frame calls, alternating the two in every pair so the machine's
drifting speed hits both alike. Reported: each way's time per frame, the paired ratio (batched /
single, below 1 means batching wins) with a bootstrap interval over the pairs, and how far the
batched outputs differ from the single-frame ones (0 for fp32 convolutions, which treat every
image on its own; an int8 model quantized at run time takes one scale over the whole batch, so
there one camera's frame changes another's scores).

    python -m benchmarks.bench_batching --out benchmarks/results/batching [--pairs 40] [--sizes 2,4]

Needs ``espdetect[ultralytics]`` for the export.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks._harness.report import load_average, machine, markdown_table, utc_now, versions, write_json

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchResult:
    """N frames as one batch against N single-frame calls, over paired runs."""

    #: "fp32", or "int8": the same network dynamically quantized by ONNX Runtime, as the bundled model.
    precision: str
    batch: int
    pairs: int
    single_ms_per_frame_p50: float
    batched_ms_per_frame_p50: float
    #: Median of the per-pair ratios batched / single (below 1: batching wins).
    ratio_p50: float
    ratio_ci95: tuple[float, float]
    #: Largest absolute difference between a frame's batched and single-frame outputs.
    max_output_diff: float


def _bootstrap_median_ci(
    ratios: np.ndarray, rng: np.random.Generator, rounds: int = 2000
) -> tuple[float, float]:
    """A percentile bootstrap of the median; honest here because n (the pairs) is in the tens."""
    medians = np.median(rng.choice(ratios, size=(rounds, len(ratios)), replace=True), axis=1)
    low, high = np.percentile(medians, (2.5, 97.5))
    return round(float(low), 3), round(float(high), 3)


def measure(
    session: object, input_name: str, precision: str, batch: int, pairs: int, imgsz: int
) -> BatchResult:
    """Time ``batch`` frames as one call and as single calls, alternating, ``pairs`` times."""
    import onnxruntime as ort

    assert isinstance(session, ort.InferenceSession)
    rng = np.random.default_rng(batch)
    frames = rng.random((batch, 3, imgsz, imgsz), dtype=np.float32)
    single_out = np.concatenate([session.run(None, {input_name: frames[i : i + 1]})[0] for i in range(batch)])
    batched_out = session.run(None, {input_name: frames})[0]
    single_ms: list[float] = []
    batched_ms: list[float] = []
    for pair in range(pairs):
        for batched in (pair % 2 == 0, pair % 2 == 1):  # alternate which runs first
            start = time.perf_counter()
            if batched:
                session.run(None, {input_name: frames})
            else:
                for i in range(batch):
                    session.run(None, {input_name: frames[i : i + 1]})
            elapsed = (time.perf_counter() - start) * 1000.0 / batch
            (batched_ms if batched else single_ms).append(elapsed)
    ratios = np.asarray(batched_ms) / np.asarray(single_ms)
    return BatchResult(
        precision=precision,
        batch=batch,
        pairs=pairs,
        single_ms_per_frame_p50=round(float(np.median(single_ms)), 2),
        batched_ms_per_frame_p50=round(float(np.median(batched_ms)), 2),
        ratio_p50=round(float(np.median(ratios)), 3),
        ratio_ci95=_bootstrap_median_ci(ratios, rng),
        max_output_diff=float(np.abs(batched_out - single_out).max()),
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for batching.json and batching.md")
    parser.add_argument("--pairs", type=int, default=40, help="paired runs per batch size (default 40)")
    parser.add_argument("--sizes", default="2,4", help="batch sizes, comma separated (default 2,4)")
    parser.add_argument("--imgsz", type=int, default=640, help="input size (default 640, as served)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    import onnxruntime as ort

    from espdetect.detectors.export import export_model

    load_before = load_average()
    from onnxruntime.quantization import quantize_dynamic

    results: list[BatchResult] = []
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_model("yolov8n.yaml", "onnx", Path(tmp) / "yolov8n-dynamic.onnx", dynamic=True)
        int8 = Path(tmp) / "yolov8n-dynamic-int8.onnx"
        quantize_dynamic(str(fp32), str(int8))
        for precision, model in (("fp32", fp32), ("int8", int8)):
            session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
            input_name = session.get_inputs()[0].name
            for _ in range(3):  # warm-up: allocations, kernel selection
                session.run(None, {input_name: np.zeros((1, 3, args.imgsz, args.imgsz), np.float32)})
            for size in args.sizes.split(","):
                results.append(measure(session, input_name, precision, int(size), args.pairs, args.imgsz))
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(
        args.out / "batching.json",
        {
            "when": utc_now(),
            "machine": machine(),
            "versions": versions("onnxruntime", "ultralytics"),
            "load_average": {"before": load_before, "after": load_average()},
            "model": "yolov8n.yaml (untrained, dynamic batch), fp32 and int8 (quantize_dynamic), CPU",
            "results": results,
        },
    )
    rows = [
        [r.precision, r.batch, r.pairs, r.single_ms_per_frame_p50, r.batched_ms_per_frame_p50, r.ratio_p50,
         f"{r.ratio_ci95[0]}-{r.ratio_ci95[1]}", f"{r.max_output_diff:.2e}"]
        for r in results
    ]  # fmt: skip
    header = [
        "precision",
        "batch",
        "pairs",
        "single ms/frame p50",
        "batched ms/frame p50",
        "ratio p50",
        "95% CI",
        "max diff",
    ]
    text = markdown_table(header, rows)
    (args.out / "batching.md").write_text(
        f"# Cross-camera batching on this machine\n\n{__doc__.split(chr(10) + chr(10))[1]}\n\n{text}\n",
        encoding="utf-8",
    )
    print(text)


if __name__ == "__main__":
    main()
