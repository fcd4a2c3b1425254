"""``espdetect detect IMAGE...``: run the detector on image files and print what it finds."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

from espdetect.cli._command import Command, ultralytics_logs_to_stderr
from espdetect.detectors.factory import DetectorBackend

if TYPE_CHECKING:
    import numpy as np

__all__ = ["COMMAND", "run"]

#: Exit status when an image cannot be read or written (a model that cannot load exits 2 too).
EXIT_FAILURE = 2


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files (JPEG, PNG...)")
    parser.add_argument(
        "--model",
        default=None,
        help="model (.onnx, OpenVINO folder; .pt or .yaml with espdetect[ultralytics]); "
        "default $ESPDETECT_MODEL, else the bundled COCO model",
    )
    parser.add_argument("--conf", type=float, default=0.25, help="minimum confidence (default 0.25)")
    parser.add_argument("--iou", type=float, default=0.45, help="NMS IoU threshold (default 0.45)")
    parser.add_argument(
        "--imgsz", type=int, default=None, help="inference size (default: the model's own, 640 if dynamic)"
    )
    parser.add_argument(
        "--backend",
        choices=get_args(DetectorBackend),
        default="auto",
        help="runtime: auto (by the model's file type), onnxruntime, openvino or ultralytics",
    )
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: the runtime's CPU)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per image")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR", help="write annotated images here")


def _error(message: str) -> None:
    print(f"espdetect detect: {message}", file=sys.stderr)


def _output_path(out_dir: Path, image: Path, used: set[Path]) -> Path:
    candidate = out_dir / f"{image.stem}.jpg"
    n = 1
    while candidate in used:
        candidate = out_dir / f"{image.stem}_{n}.jpg"
        n += 1
    used.add(candidate)
    return candidate


def _read(path: Path) -> np.ndarray | None:
    """The picture at ``path``, or None after saying on stderr why it cannot be read."""
    from espdetect.images import read_image  # Pillow loads only when the command runs

    if path.is_file():
        try:
            return read_image(path)
        except OSError:
            pass
    reason = "no such file" if not path.exists() else "not a readable image"
    _error(f"expected a readable image file, got {str(path)!r} ({reason})")
    return None


def run(args: argparse.Namespace) -> int:
    """Run ``detect``; returns 0, or 2 when any image could not be read or written.

    Raises:
        ModelLoadError, ConfigurationError: the model cannot load, or a setting is out of range.
    """
    from espdetect.annotate import Annotator
    from espdetect.detectors.factory import choose_backend, open_detector
    from espdetect.detectors.models import resolve_model
    from espdetect.images import write_jpeg

    model = resolve_model(args.model)
    if args.backend == "ultralytics" or (args.backend == "auto" and choose_backend(model) == "ultralytics"):
        # Before loading, so that --json output stays free of Ultralytics' log lines.
        ultralytics_logs_to_stderr()
    detector = open_detector(
        model, backend=args.backend, device=args.device, conf=args.conf, iou=args.iou, imgsz=args.imgsz
    )

    annotator = Annotator() if args.out is not None else None
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
    written: set[Path] = set()
    status = 0
    for path in args.images:
        image = _read(path)
        if image is None:
            status = EXIT_FAILURE
            continue
        detections = detector.detect(image)
        if args.json:
            record: dict[str, Any] = {"image": str(path), "width": image.shape[1], "height": image.shape[0]}
            record.update(detections.to_dict())
            print(json.dumps(record), flush=True)
        else:
            total = f", {detections.timings.total_ms:.1f} ms" if detections.timings else ""
            print(f"{path}: {len(detections)} detections ({image.shape[1]}x{image.shape[0]}{total})")
            for box, conf, label in zip(
                detections.xyxy, detections.confidence, detections.labels, strict=True
            ):
                x1, y1, x2, y2 = (round(float(v)) for v in box)
                print(f"  {label} {float(conf):.2f} {x1} {y1} {x2} {y2}")
        if annotator is not None:
            target = _output_path(args.out, path, written)
            try:
                write_jpeg(target, annotator.annotate(image, detections))
            except OSError as exc:
                _error(f"expected to write {str(target)!r}, but it could not be written ({exc})")
                status = EXIT_FAILURE
    return status


COMMAND = Command(
    name="detect",
    help="detect objects in image files",
    description=(
        "Detect objects in image files and print one line per detection "
        "(label, confidence, x1 y1 x2 y2), or one JSON object per image with --json."
    ),
    add_arguments=_add_arguments,
    run=run,
)
