"""``espdetect export MODEL --format onnx|openvino``: a model for espdetect's runtimes, by Ultralytics.

Needs ``pip install 'espdetect[ultralytics]'``; the exported ONNX file or OpenVINO folder then
runs without it (``espdetect serve --model yolov8n.onnx``).
"""

from __future__ import annotations

import argparse
import importlib
import shutil
from pathlib import Path
from typing import Any

from espdetect.cli._command import Command, import_ultralytics
from espdetect.exceptions import ConfigurationError, EspdetectError

__all__ = ["COMMAND", "ExportFailed", "run"]

_YAML_SUFFIXES = (".yaml", ".yml")

#: What Ultralytics raises for a model or options it cannot export; its own argument checks are
#: ``assert`` statements, hence AssertionError.
_EXPORT_ERRORS = (AssertionError, ValueError, KeyError, RuntimeError, OSError, ImportError)


class ExportFailed(EspdetectError):
    """A model could not be exported; ``reason`` says why (the first line of Ultralytics' error).

    Example:
        >>> str(ExportFailed("best.pt", "onnx", "no such file"))
        "cannot export 'best.pt' to onnx: no such file"
    """

    def __init__(self, model: str, fmt: str, reason: str) -> None:
        super().__init__(f"cannot export {model!r} to {fmt}: {reason}")
        self.model = model
        self.format = fmt
        self.reason = reason


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


def _export_options(args: argparse.Namespace, default_cfg: dict[str, Any]) -> dict[str, Any]:
    options: dict[str, Any] = {"format": args.format, "dynamic": args.dynamic}
    if args.imgsz is not None:
        options["imgsz"] = args.imgsz
    # Newer Ultralytics replaced the int8/half switches by `quantize`; pass what this version knows.
    if "quantize" in default_cfg:
        options["quantize"] = 8 if args.int8 else 16 if args.half else None
    else:
        options.update(int8=args.int8, half=args.half)
    return options


def _move(exported: Path, out: Path) -> Path:
    """Put ``exported`` (a file or folder) at ``out``, or into ``out`` when it is a folder."""
    target = out / exported.name if out.is_dir() else out
    if target.resolve() == exported.resolve():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_dir():
        # Exporting again replaces the earlier export, as Ultralytics does in its own place.
        shutil.rmtree(target)
    shutil.move(str(exported), str(target))
    return target


def run(args: argparse.Namespace) -> int:
    """Export the model and print where the result is.

    Raises:
        ExportFailed: Ultralytics is not installed, or it could not load or export the model.
        ConfigurationError: ``--int8`` with a format other than openvino.
    """
    if args.int8 and args.format != "openvino":
        raise ConfigurationError(
            f"expected --int8 with --format openvino, got --format {args.format}", field="int8"
        )
    path = Path(args.model).expanduser()
    # A bare name (yolov8n.pt, yolov8n.yaml) is Ultralytics' to find or download; a path must exist.
    if not path.exists() and path.name != args.model and path.suffix.lower() not in _YAML_SUFFIXES:
        raise ExportFailed(
            args.model, args.format, f"expected an existing file, got no such path {str(path)!r}"
        )
    ultralytics = import_ultralytics()
    if ultralytics is None:
        raise ExportFailed(
            args.model, args.format, "Ultralytics is not installed; pip install 'espdetect[ultralytics]'"
        )
    default_cfg: dict[str, Any] = importlib.import_module("ultralytics.cfg").DEFAULT_CFG_DICT
    try:
        exported = Path(str(ultralytics.YOLO(args.model).export(**_export_options(args, default_cfg))))
    except _EXPORT_ERRORS as exc:
        # Ultralytics appends multi-line advice; its first line states the problem.
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ExportFailed(args.model, args.format, first_line) from exc
    target = _move(exported, args.out) if args.out is not None else exported
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
