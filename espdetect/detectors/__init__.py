"""Detectors: `Detector` (the interface) and `UltralyticsDetector` (YOLO through Ultralytics).

Importing this package is cheap: Ultralytics and torch load only when a detector is built.
"""

from __future__ import annotations

from espdetect.detectors.base import Detector as Detector
from espdetect.detectors.ultralytics import UltralyticsDetector as UltralyticsDetector
from espdetect.detectors.ultralytics import resolve_model as resolve_model

__all__ = ["Detector", "UltralyticsDetector", "resolve_model"]
