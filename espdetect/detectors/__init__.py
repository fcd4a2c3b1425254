"""Detectors: `Detector` (the interface), its `DetectParams` and `ModelInfo`, and the backends.

Importing this package is cheap: a backend's runtime loads only when a detector is built.
`OnnxDetector` (ONNX Runtime) and `OpenVinoDetector` (``pip install espdetect[openvino]``)
never import torch; `UltralyticsDetector` needs ``pip install espdetect[ultralytics]``.
`open_detector` picks the backend from the model's file type.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from espdetect._lazy import lazy_getattr
from espdetect.detectors.base import Detector as Detector
from espdetect.detectors.base import DetectParams as DetectParams
from espdetect.detectors.base import ModelInfo as ModelInfo
from espdetect.detectors.factory import DetectorBackend as DetectorBackend
from espdetect.detectors.factory import open_detector as open_detector
from espdetect.detectors.models import bundled_model_path as bundled_model_path
from espdetect.detectors.models import resolve_model as resolve_model
from espdetect.detectors.ultralytics import UltralyticsDetector as UltralyticsDetector

if TYPE_CHECKING:
    from espdetect.detectors.onnx import OnnxDetector as OnnxDetector
    from espdetect.detectors.openvino import OpenVinoDetector as OpenVinoDetector

__all__ = [
    "DetectParams",
    "Detector",
    "DetectorBackend",
    "ModelInfo",
    "OnnxDetector",
    "OpenVinoDetector",
    "UltralyticsDetector",
    "bundled_model_path",
    "open_detector",
    "resolve_model",
]

# Loaded on first use: onnx.py imports onnxruntime at module level.
_LAZY: dict[str, str] = {
    "OnnxDetector": "espdetect.detectors.onnx",
    "OpenVinoDetector": "espdetect.detectors.openvino",
}


__getattr__ = lazy_getattr(__name__, _LAZY, globals())
