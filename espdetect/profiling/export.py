"""`export_model`: make ONNX / OpenVINO / TorchScript copies of a model for a format sweep.

Exports go through Ultralytics, which needs an extra package per format (``onnx`` for ONNX,
``openvino`` for OpenVINO). Nothing is installed at run time: a missing package is reported
with what to install, so a sweep can list the formats this machine can run.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from espdetect.detectors import export as detectors_export
from espdetect.detectors.export import ExportFormat
from espdetect.exceptions import ConfigurationError

__all__ = ["REQUIRED_PACKAGES", "ExportFormat", "export_model", "missing_packages"]

logger = logging.getLogger(__name__)

#: Python packages each export format needs besides torch and Ultralytics.
REQUIRED_PACKAGES: dict[str, tuple[str, ...]] = {
    "onnx": ("onnx",),
    "openvino": ("openvino",),
    "torchscript": (),
}


def missing_packages(fmt: ExportFormat) -> list[str]:
    """The packages ``fmt`` needs that are not installed (empty when it can be exported).

    Example:
        >>> missing_packages("torchscript")
        []
    """
    if fmt not in REQUIRED_PACKAGES:
        raise ConfigurationError(f"format must be one of {', '.join(REQUIRED_PACKAGES)}, got {fmt!r}")
    return [p for p in REQUIRED_PACKAGES[fmt] if importlib.util.find_spec(p) is None]


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
        ConfigurationError: the format's packages are missing (the message names them).
        ExportFailed: Ultralytics could not load or export the model.
        MissingDependency: Ultralytics is not installed.

    Example:
        >>> export_model("yolov8n.yaml", "onnx", "models", imgsz=320)  # doctest: +SKIP
        PosixPath('models/yolov8n-untrained-320.onnx')
    """
    missing = missing_packages(fmt)
    if missing:
        raise ConfigurationError(
            f"expected the {', '.join(missing)} package(s) to export {fmt}, got none installed "
            f"(pip install {' '.join(missing)})",
            field="format",
        )
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
