"""Per-frame cost of each pipeline stage on emulator-like frames.

Measures, on Ultralytics' sample pictures (bus.jpg, zidane.jpg) resized to 640x480 and
320x240 and JPEG-encoded at quality 80 as an ESP32-CAM would send them:

* **decode**: full-size JPEG decode against libjpeg's reduced-scale decode (1/2, 1/4);
* **encode**: each JPEG encoder backend at a few qualities, plus ``cv2.imencode`` as a reference
  (the encoder before the server dropped OpenCV);
* **annotate**: drawing the detections (and the stats overlay);
* **motion**: `MotionDetector.detect` (reduced grayscale decode, blur, background difference,
  boxes) at its decode scales, on frames with sensor noise and a moving figure, so every call
  does the whole test (issue 10's target: at most 1 ms per VGA frame);
* **inference**: ``Detector.detect`` of the detector `open_detector` builds, as the server does:
  at imgsz 320/480/640 with ``yolov8n.yaml`` (an *untrained* YOLOv8n on Ultralytics: same network
  and cost, meaningless boxes, dynamic input size) and with the real model (``--model`` /
  ``$ESPDETECT_MODEL``; an ``.onnx`` file runs on ONNX Runtime) at its own size; the shared ONNX
  file is fixed at 640, which is why the sweep uses the untrained network.

Writes the figures as JSON to ``--out`` and the same as a Markdown table next to it (``.md``).

Usage::

    python -m benchmarks.bench_stages --out benchmarks/results/stages.json [--model M] [--frames N]
    python -m benchmarks.bench_stages --only motion --out benchmarks/results/motion/stage.json
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from benchmarks._harness.report import load_average, markdown_table, utc_now, versions, write_json
from espdetect.annotate import Annotator
from espdetect.detections import Detections, StageTimings
from espdetect.detectors.base import Detector
from espdetect.emulator.cache import jpeg_quality
from espdetect.emulator.scene import sample_photo
from espdetect.encoders.jpeg import JpegEncoder
from espdetect.frame import Frame, Reduce, decode_jpeg
from espdetect.motion import MotionConfig, MotionDetector
from espdetect.stats import Percentiles, percentile

logger = logging.getLogger(__name__)

FRAME_SIZES: tuple[tuple[int, int], ...] = ((640, 480), (320, 240))
QUALITIES: tuple[int, ...] = (40, 60, 80)
SWEEP_IMGSZ: tuple[int, ...] = (320, 480, 640)
UNTRAINED = "yolov8n.yaml"
STAGES = ("decode", "encode", "motion", "annotate", "inference")


@dataclass
class Row:
    """One measured variant of one stage."""

    stage: str
    variant: str
    frame: str
    n: int
    mean_ms: float
    p50_ms: float
    p95_ms: float
    extra: dict[str, Any] = field(default_factory=dict)


def summarise(stage: str, variant: str, frame: str, samples_ms: Sequence[float], **extra: Any) -> Row:
    p = Percentiles.of(samples_ms)
    assert p.p50 is not None and p.p95 is not None, "expected at least one sample"
    return Row(
        stage=stage,
        variant=variant,
        frame=frame,
        n=len(samples_ms),
        mean_ms=round(statistics.fmean(samples_ms), 3),
        p50_ms=p.p50,
        p95_ms=p.p95,
        extra=extra,
    )


def time_calls(fn: Callable[[int], object], n: int, warmup: int) -> list[float]:
    """Milliseconds of ``fn(i)`` for i in range(n), after ``warmup`` untimed calls."""
    for i in range(warmup):
        fn(i)
    samples: list[float] = []
    for i in range(n):
        start = time.perf_counter()
        fn(i)
        samples.append((time.perf_counter() - start) * 1000.0)
    return samples


def load_frames() -> dict[str, list[np.ndarray]]:
    originals = []
    for name in ("bus.jpg", "zidane.jpg"):
        image = cv2.imread(str(sample_photo(name)))
        if image is None:
            raise SystemExit(f"expected the sample photo {name} to be readable, got nothing")
        originals.append(image)
    return {
        f"{w}x{h}": [cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA) for img in originals]
        for w, h in FRAME_SIZES
    }


def bench_decode(frames: dict[str, list[np.ndarray]], n: int) -> list[Row]:
    camera = JpegEncoder(80)
    rows = []
    for label, images in frames.items():
        jpegs = [camera.encode(img) for img in images]
        reductions: tuple[Reduce, ...] = (1, 2, 4)
        for reduce in reductions:

            def decode(i: int, r: Reduce = reduce, data: list[bytes] = jpegs) -> np.ndarray:
                return decode_jpeg(data[i % len(data)], r)

            samples = time_calls(decode, n, 10)
            out = decode_jpeg(jpegs[0], reduce)
            rows.append(
                summarise(
                    "decode",
                    "full" if reduce == 1 else f"reduced 1/{reduce}",
                    label,
                    samples,
                    output=f"{out.shape[1]}x{out.shape[0]}",
                    jpeg_bytes=round(statistics.mean(len(j) for j in jpegs)),
                )
            )
    return rows


def bench_motion(frames: dict[str, list[np.ndarray]], n: int) -> list[Row]:
    """The motion test per frame: a still picture with sensor noise and a dark figure walking
    across it, so the background difference always has something to find and box.

    Frames are encoded as an ESP32-CAM at its default quality 12 sends them (the emulator's
    mapping) and, heavier, at libjpeg quality 80: the reduced decode's cost follows the bytes.
    """
    rng = np.random.default_rng(0)
    rows = []
    for label, images in frames.items():
        base = images[0].astype(np.int16)
        h, w = base.shape[:2]
        pictures = []
        for i in range(60):
            noisy = np.clip(base + rng.integers(-3, 4, base.shape), 0, 255).astype(np.uint8)
            x = (i * w) // 60
            cv2.rectangle(noisy, (x, h // 4), (x + w // 10, h // 4 + h // 3), (20, 20, 20), -1)
            pictures.append(noisy)
        for quality_label, quality in (("esp32 quality 12", jpeg_quality(12)), ("libjpeg q80", 80)):
            encoder = JpegEncoder(quality)
            jpegs = [encoder.encode(p) for p in pictures]
            reductions: tuple[Reduce, ...] = (8, 4)
            for reduce in reductions:
                motion = MotionDetector(MotionConfig(reduce=reduce))
                moving: list[bool] = []

                def test(
                    i: int, m: MotionDetector = motion, data: list[bytes] = jpegs, out: list[bool] = moving
                ) -> None:
                    out.append(m.detect(Frame(seq=i, source_id="bench", jpeg=data[i % len(data)])).moving)

                samples = time_calls(test, n, 10)
                rows.append(
                    summarise(
                        "motion",
                        f"reduce 1/{reduce}, {quality_label}",
                        label,
                        samples,
                        moving_share=round(statistics.mean(moving[10:]), 3),
                        jpeg_bytes=round(statistics.mean(len(j) for j in jpegs)),
                    )
                )
    return rows


def _encoders() -> dict[str, Callable[[int], Callable[[np.ndarray], bytes]]]:
    """The shipped encoder (libjpeg-turbo through simplejpeg, so that the server runs without
    OpenCV) and, as the reference, ``cv2.imencode``, which it replaced."""

    def imencode(q: int) -> Callable[[np.ndarray], bytes]:
        params = [cv2.IMWRITE_JPEG_QUALITY, q]

        def encode(img: np.ndarray) -> bytes:
            ok, buf = cv2.imencode(".jpg", img, params)
            assert ok
            return bytes(buf.tobytes())

        return encode

    return {
        "simplejpeg": lambda q: JpegEncoder(q).encode,
        "cv2.imencode (reference, not shipped)": imencode,
    }


def bench_encode(frames: dict[str, list[np.ndarray]], n: int) -> list[Row]:
    rows = []
    backends = _encoders()
    for label, images in frames.items():
        for quality in QUALITIES:
            # Interleave the backends so drift in machine load hits them equally.
            samples: dict[str, list[float]] = {name: [] for name in backends}
            encoders = {name: make(quality) for name, make in backends.items()}
            sizes: dict[str, list[int]] = {name: [] for name in backends}
            for i in range(n + 10):
                img = images[i % len(images)]
                for name, encode in encoders.items():
                    start = time.perf_counter()
                    data = encode(img)
                    elapsed = (time.perf_counter() - start) * 1000.0
                    if i >= 10:
                        samples[name].append(elapsed)
                        sizes[name].append(len(data))
            for name in backends:
                rows.append(
                    summarise(
                        "encode",
                        f"{name} q{quality}",
                        label,
                        samples[name],
                        jpeg_bytes=round(statistics.mean(sizes[name])),
                    )
                )
    return rows


def _synthetic_detections(w: int, h: int) -> Detections:
    boxes = np.array(
        [
            [0.06, 0.37, 0.30, 0.84],
            [0.27, 0.38, 0.42, 0.79],
            [0.83, 0.34, 1.0, 0.81],
            [0.04, 0.21, 0.99, 0.71],
        ]
    ) * np.array([w, h, w, h])
    return Detections(
        boxes, np.array([0.9, 0.9, 0.89, 0.82]), np.array([0, 0, 0, 5]), {0: "person", 5: "bus"}
    )


def bench_annotate(
    frames: dict[str, list[np.ndarray]], detections: dict[str, list[Detections]] | None, n: int
) -> list[Row]:
    rows = []
    for overlay in (False, True):
        annotator = Annotator(overlay=overlay)
        stats = {"fps": 9.8, "latency ms": 123.4} if overlay else None
        for label, images in frames.items():
            h, w = images[0].shape[:2]
            dets = (
                detections[label] if detections is not None else [_synthetic_detections(w, h) for _ in images]
            )

            def draw(
                i: int,
                a: Annotator = annotator,
                s: dict[str, float] | None = stats,
                im: list[np.ndarray] = images,
                d: list[Detections] = dets,
            ) -> np.ndarray:
                return a.annotate(im[i % len(im)], d[i % len(d)], stats=s)

            samples = time_calls(draw, n, 10)
            rows.append(
                summarise(
                    "annotate",
                    "boxes + overlay" if overlay else "boxes",
                    label,
                    samples,
                    boxes=round(statistics.mean(len(d) for d in dets), 1),
                    source="model" if detections is not None else "synthetic",
                )
            )
    return rows


def _time_detector(
    detector: Detector, variant: str, label: str, images: list[np.ndarray], n: int, warmup: int
) -> Row:
    timings: list[StageTimings | None] = []

    def run(i: int) -> None:
        timings.append(detector.detect(images[i % len(images)]).timings)

    samples = time_calls(run, n, warmup)
    stages = [t for t in timings[warmup:] if t is not None]
    info = detector.info
    return summarise(
        "inference",
        variant,
        label,
        samples,
        preprocess_ms=round(statistics.mean(t.preprocess_ms for t in stages), 3),
        inference_ms=round(statistics.mean(t.inference_ms for t in stages), 3),
        postprocess_ms=round(statistics.mean(t.postprocess_ms for t in stages), 3),
        inference_p95_ms=percentile([t.inference_ms for t in stages], 95),
        backend=info.backend,
        device=info.device,
        trained=info.trained,
    )


def bench_inference(
    frames: dict[str, list[np.ndarray]], model: str | None, n: int, warmup: int
) -> tuple[list[Row], dict[str, list[Detections]] | None]:
    """The untrained sweep, then the real model; also the real model's detections (for `bench_annotate`)."""
    from espdetect.detectors import open_detector
    from espdetect.exceptions import EspdetectError

    configs: list[tuple[str, str, int | None]] = [
        (UNTRAINED, "yolov8n.yaml (untrained)", s) for s in SWEEP_IMGSZ
    ]
    if model is not None:
        configs.append((model, Path(model).name, None))
    rows = []
    real_detections: dict[str, list[Detections]] | None = None
    for source, name, imgsz in configs:
        try:
            detector = open_detector(source, imgsz=imgsz)
        except (EspdetectError, ImportError) as exc:
            logger.warning("skipping %s at imgsz %s: %s", name, imgsz, exc)
            continue
        variant = f"{name} imgsz {detector.params.imgsz}"
        if source != UNTRAINED:
            real_detections = {
                label: [detector.detect(img) for img in imgs] for label, imgs in frames.items()
            }
        for label, images in frames.items():
            rows.append(_time_detector(detector, variant, label, images, n, warmup))
            logger.info("%s on %s: %.1f ms mean", variant, label, rows[-1].mean_ms)
        detector.close()
    return rows, real_detections


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "date": utc_now(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        # Other work on the machine inflates the means; p50 is the more robust figure then.
        "loadavg_1m": load_average(),
        "python": platform.python_version(),
        "opencv": cv2.__version__,
        "numpy": np.__version__,
        **versions("ultralytics", "torch", "onnxruntime", "simplejpeg"),
    }
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        pass
    return info


def markdown(rows: Sequence[Row], meta: dict[str, Any]) -> str:
    lines = [
        "# Stage benchmark",
        "",
        f"{meta['date']} on {meta['platform']}, {meta['cpu_count']} CPUs, "
        f"OpenCV {meta['opencv']}, Ultralytics {meta['ultralytics']}, torch {meta['torch']} "
        f"({meta.get('torch_threads')} threads), ONNX Runtime {meta['onnxruntime']}; "
        f"load average {meta['loadavg_start']} at start, {meta['loadavg_1m']} at the end.",
        "",
        "Times in ms per frame. Inference rows: wall time of `Detector.detect` (the detector "
        "`open_detector` builds, as the server does: `backend` in the notes), with the mean of the "
        "detector's own pre/inference/post split; `yolov8n.yaml` rows are an untrained network of the "
        "same cost (speed only).",
        "",
    ]
    table = [
        [r.stage, r.variant, r.frame, r.n, f"{r.mean_ms:.2f}", f"{r.p50_ms:.2f}", f"{r.p95_ms:.2f}",
         ", ".join(f"{k}={v}" for k, v in r.extra.items())]
        for r in rows
    ]  # fmt: skip
    header = ["stage", "variant", "frame", "n", "mean", "p50", "p95", "notes"]
    lines.append(markdown_table(header, table, align="lllrrrrl"))
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/stages.json"), help="JSON output"
    )
    parser.add_argument(
        "--model", default=None, help="real model (default $ESPDETECT_MODEL; none: untrained sweep only)"
    )
    parser.add_argument("--frames", type=int, default=50, help="timed frames per variant (default 50)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed detections per model (default 3)")
    parser.add_argument(
        "--only",
        type=lambda text: [part.strip() for part in text.split(",") if part.strip()],
        default=list(STAGES),
        help=f"comma-separated stages to measure (default all: {','.join(STAGES)})",
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.only) - set(STAGES))
    if unknown or not args.only:
        parser.error(f"--only takes stages among {', '.join(STAGES)}, got {args.only}")
    if args.frames < 1:
        parser.error(f"--frames must be at least 1, got {args.frames}")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    model = args.model or os.environ.get("ESPDETECT_MODEL") or None

    loadavg_start = load_average()
    frames = load_frames()
    only = set(args.only)
    rows: list[Row] = []
    many = max(args.frames, 200)
    if "decode" in only:
        rows += bench_decode(frames, many)
    if "encode" in only:
        rows += bench_encode(frames, many)
    if "motion" in only:
        rows += bench_motion(frames, many)
    inference_rows: list[Row] = []
    real_detections = None
    if "inference" in only or "annotate" in only:
        inference_rows, real_detections = bench_inference(frames, model, args.frames, args.warmup)
    if "annotate" in only:
        rows += bench_annotate(frames, real_detections, many)
    if "inference" in only:
        rows += inference_rows

    meta = machine_info()
    meta.update({"model": model and Path(model).name, "frames": args.frames, "loadavg_start": loadavg_start})
    write_json(args.out, {"meta": meta, "results": rows})
    table = markdown(rows, meta)
    args.out.with_suffix(".md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
