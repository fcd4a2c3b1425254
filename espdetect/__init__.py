"""espdetect: real-time object detection on ESP32-CAM video.

The core classes are re-exported here and imported lazily, so ``import espdetect as ed`` is
cheap: a detector's runtime (ONNX Runtime, OpenVINO, or Ultralytics and PyTorch) loads only
when that detector is built.

Example:
    >>> import espdetect as ed
    >>> ed.SyntheticSource(count=1).source_id
    'synthetic'
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from espdetect._lazy import lazy_getattr

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "Annotator": "espdetect.annotate",
    "CameraPipeline": "espdetect.pipeline",
    "CaptureSource": "espdetect.sources",
    "ClipSource": "espdetect.sources",
    "ClipWriter": "espdetect.sources",
    "DetectParams": "espdetect.detectors",
    "DetectionResult": "espdetect.pipeline",
    "Detections": "espdetect.detections",
    "Detector": "espdetect.detectors",
    "Emulator": "espdetect.emulator",
    "EmulatorConfig": "espdetect.emulator",
    "EmulatorThread": "espdetect.emulator",
    "Event": "espdetect.events",
    "EventConfig": "espdetect.events",
    "EventEngine": "espdetect.events",
    "EventStore": "espdetect.event_store",
    "EventUpdate": "espdetect.events",
    "Encoder": "espdetect.encoders",
    "Fault": "espdetect.emulator",
    "FaultKind": "espdetect.emulator",
    "Frame": "espdetect.frame",
    "FrameProcessor": "espdetect.pipeline",
    "FrameSource": "espdetect.sources",
    "ImageFolderSource": "espdetect.sources",
    "MjpegStreamSource": "espdetect.sources",
    "ModelInfo": "espdetect.detectors",
    "MotionConfig": "espdetect.motion",
    "MotionDetector": "espdetect.motion",
    "OnnxDetector": "espdetect.detectors",
    "JpegEncoder": "espdetect.encoders",
    "OpenCVSource": "espdetect.sources",
    "OpenVinoDetector": "espdetect.detectors",
    "PipelineConfig": "espdetect.pipeline",
    "Rendered": "espdetect.pipeline",
    "StaleMode": "espdetect.pipeline",
    "StageTimings": "espdetect.detections",
    "SyntheticSource": "espdetect.sources",
    "Tracker": "espdetect.tracking",
    "TrackerConfig": "espdetect.tracking",
    "UltralyticsDetector": "espdetect.detectors",
    "VideoFileSource": "espdetect.sources",
    "open_detector": "espdetect.detectors",
    "open_source": "espdetect.sources",
}

__all__ = ["__version__", *sorted(_EXPORTS)]

if TYPE_CHECKING:
    from espdetect.annotate import Annotator as Annotator
    from espdetect.detections import Detections as Detections
    from espdetect.detections import StageTimings as StageTimings
    from espdetect.detectors import Detector as Detector
    from espdetect.detectors import DetectParams as DetectParams
    from espdetect.detectors import ModelInfo as ModelInfo
    from espdetect.detectors import OnnxDetector as OnnxDetector
    from espdetect.detectors import OpenVinoDetector as OpenVinoDetector
    from espdetect.detectors import UltralyticsDetector as UltralyticsDetector
    from espdetect.detectors import open_detector as open_detector
    from espdetect.emulator import Emulator as Emulator
    from espdetect.emulator import EmulatorConfig as EmulatorConfig
    from espdetect.emulator import EmulatorThread as EmulatorThread
    from espdetect.emulator import Fault as Fault
    from espdetect.emulator import FaultKind as FaultKind
    from espdetect.encoders import Encoder as Encoder
    from espdetect.encoders import JpegEncoder as JpegEncoder
    from espdetect.event_store import EventStore as EventStore
    from espdetect.events import Event as Event
    from espdetect.events import EventConfig as EventConfig
    from espdetect.events import EventEngine as EventEngine
    from espdetect.events import EventUpdate as EventUpdate
    from espdetect.frame import Frame as Frame
    from espdetect.motion import MotionConfig as MotionConfig
    from espdetect.motion import MotionDetector as MotionDetector
    from espdetect.pipeline import CameraPipeline as CameraPipeline
    from espdetect.pipeline import DetectionResult as DetectionResult
    from espdetect.pipeline import FrameProcessor as FrameProcessor
    from espdetect.pipeline import PipelineConfig as PipelineConfig
    from espdetect.pipeline import Rendered as Rendered
    from espdetect.pipeline import StaleMode as StaleMode
    from espdetect.sources import CaptureSource as CaptureSource
    from espdetect.sources import ClipSource as ClipSource
    from espdetect.sources import ClipWriter as ClipWriter
    from espdetect.sources import FrameSource as FrameSource
    from espdetect.sources import ImageFolderSource as ImageFolderSource
    from espdetect.sources import MjpegStreamSource as MjpegStreamSource
    from espdetect.sources import OpenCVSource as OpenCVSource
    from espdetect.sources import SyntheticSource as SyntheticSource
    from espdetect.sources import VideoFileSource as VideoFileSource
    from espdetect.sources import open_source as open_source
    from espdetect.tracking import Tracker as Tracker
    from espdetect.tracking import TrackerConfig as TrackerConfig


__getattr__ = lazy_getattr(__name__, _EXPORTS, globals())


def __dir__() -> list[str]:
    return sorted(__all__)
