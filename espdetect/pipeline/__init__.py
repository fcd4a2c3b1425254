"""The per-camera pipeline: `CameraPipeline` (async stages), `FrameProcessor` (blocking per-frame
work), `PipelineConfig` (its settings) and `PipelineStats` (what it counted)."""

from __future__ import annotations

from espdetect.pipeline.camera import CameraPipeline as CameraPipeline
from espdetect.pipeline.camera import SubscriptionKind as SubscriptionKind
from espdetect.pipeline.config import PipelineConfig as PipelineConfig
from espdetect.pipeline.config import StaleMode as StaleMode
from espdetect.pipeline.processor import DetectionResult as DetectionResult
from espdetect.pipeline.processor import FrameProcessor as FrameProcessor
from espdetect.pipeline.processor import Rendered as Rendered
from espdetect.pipeline.processor import RenderTimings as RenderTimings
from espdetect.pipeline.processor import choose_reduce as choose_reduce
from espdetect.pipeline.stats import PipelineStats as PipelineStats

__all__ = [
    "CameraPipeline",
    "DetectionResult",
    "FrameProcessor",
    "PipelineConfig",
    "PipelineStats",
    "RenderTimings",
    "Rendered",
    "StaleMode",
    "SubscriptionKind",
    "choose_reduce",
]
