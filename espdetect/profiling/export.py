"""`export_model`: ONNX / OpenVINO / TorchScript copies of a model for a format sweep, named by
their size and kept, so a sweep run again reuses them.

The export itself is `espdetect.detectors.export.export_model` (Ultralytics; a missing package
is reported with what to install, nothing is installed at run time).
"""

from __future__ import annotations

import logging
from pathlib import Path

from espdetect.detectors import export as detectors_export
from espdetect.detectors.export import ExportFormat

__all__ = ["ExportFormat", "export_model"]

logger = logging.getLogger(__name__)


def export_model(
    model: str | Path,
    fmt: ExportFormat,
    out_dir: str | Path,
    *,
    imgsz: int = 640,
    dynamic: bool = False,
    name: str | None = None,
) -> Path:
    """Export ``model`` (.pt, or .yaml for an untrained network) to ``fmt`` inside ``out_dir``.

    ``dynamic=True`` (ONNX, OpenVINO) gives an input size chosen at run time, so one file
    serves an imgsz sweep. The result is named ``name`` (default: the model's stem plus the
    size, e.g. ``yolov8n-640.onnx``, ``yolov8n-untrained-dynamic.onnx`` from a .yaml). An existing
    file of that name is returned as is.

    Raises:
        MissingDependency: Ultralytics or the format's package is not installed.
        ExportFailed: Ultralytics could not load or export the model.

    Example:
        >>> export_model("yolov8n.yaml", "onnx", "models", imgsz=320)  # doctest: +SKIP
        PosixPath('models/yolov8n-untrained-320.onnx')
    """
    stem = Path(str(model)).stem
    if Path(str(model)).suffix.lower() in (".yaml", ".yml"):
        stem += "-untrained"  # random weights: the name must not pass for a real model
    label = "dynamic" if dynamic else str(imgsz)
    suffix = {"onnx": ".onnx", "openvino": "_openvino_model", "torchscript": ".torchscript"}[fmt]
    target = Path(out_dir) / (name or f"{stem}-{label}{suffix}")
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    exported = detectors_export.export_model(model, fmt, target, imgsz=imgsz, dynamic=dynamic)
    logger.info("exported %s to %s", model, exported)
    return exported
