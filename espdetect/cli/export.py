"""``espdetect export MODEL --format onnx|openvino``: a model for espdetect's runtimes, by Ultralytics.

Needs ``pip install 'espdetect[ultralytics]'``; the exported ONNX file or OpenVINO folder then
runs without it (``espdetect serve --model yolov8n.onnx``). The work is
`espdetect.detectors.export.export_model`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from espdetect.cli._command import Command, ultralytics_logs_to_stderr

__all__ = ["COMMAND", "run"]


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number of pixels, got {text!r}")
    return int(text)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="weights (.pt), or a .yaml architecture (untrained)")
    parser.add_argument("--format", required=True, choices=("onnx", "openvino"), help="what to export to")
    parser.add_argument(
        "--imgsz",
        type=_positive,
        default=None,
        help="input size, a multiple of 32 (default: the model's, 640)",
    )
    parser.add_argument(
        "--dynamic", action="store_true", help="accept any input size (batch, height, width) at run time"
    )
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument(
        "--int8", action="store_true", help="INT8 quantization (OpenVINO; calibrates on Ultralytics' data)"
    )
    precision.add_argument("--half", action="store_true", help="FP16 weights")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="PATH",
        help="where to put the export: a file (onnx) or folder (openvino), or into an existing folder "
        "(default: where Ultralytics writes it, next to MODEL or, for a .yaml, in the current folder)",
    )


def run(args: argparse.Namespace) -> int:
    """Export the model and print where the result is.

    Raises:
        MissingDependency: Ultralytics (or the format's package) is not installed.
        ExportFailed: Ultralytics could not load or export the model.
        ConfigurationError: ``--int8`` with a format other than openvino.
    """
    from espdetect.detectors.export import export_model

    ultralytics_logs_to_stderr()  # its log lines go to stderr: stdout is the path printed below
    target = export_model(
        args.model,
        args.format,
        args.out,
        imgsz=args.imgsz,
        dynamic=args.dynamic,
        int8=args.int8,
        half=args.half,
    )
    print(f"exported {args.format} model: {target.resolve()}")
    return 0


COMMAND = Command(
    name="export",
    help="export a YOLO model to ONNX or OpenVINO (needs espdetect[ultralytics])",
    description=(
        "Export MODEL (Ultralytics .pt weights, or a .yaml architecture) to an ONNX file or an "
        "OpenVINO folder with Ultralytics, and print where it is. Needs "
        "pip install 'espdetect[ultralytics]'."
    ),
    add_arguments=_add_arguments,
    run=run,
)
