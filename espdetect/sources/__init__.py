"""Frame sources: ESP32 streams and stills, OpenCV captures, files, folders, recorded clips, synthetic.

Every source implements `FrameSource` (``await source.read()``, async iteration,
``iter_frames()`` for blocking code); `open_source` picks one from a string.

The ESP32 sources (`MjpegStreamSource`, `CaptureSource`) need no OpenCV, which a server image
leaves out; the others (clips, folders, video files, RTSP and webcams, synthetic) import it, so
they load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from espdetect._lazy import lazy_getattr
from espdetect.sources.base import FrameSource as FrameSource
from espdetect.sources.base import SourceStats as SourceStats
from espdetect.sources.capture import CaptureSource as CaptureSource
from espdetect.sources.factory import open_source as open_source
from espdetect.sources.mjpeg_stream import MjpegStreamSource as MjpegStreamSource

if TYPE_CHECKING:
    from espdetect.sources.clip import ClipIndexRow as ClipIndexRow
    from espdetect.sources.clip import ClipInfo as ClipInfo
    from espdetect.sources.clip import ClipPace as ClipPace
    from espdetect.sources.clip import ClipSource as ClipSource
    from espdetect.sources.clip import ClipWriter as ClipWriter
    from espdetect.sources.clip import clip_info as clip_info
    from espdetect.sources.clip import is_clip as is_clip
    from espdetect.sources.clip import load_clip_index as load_clip_index
    from espdetect.sources.folder import ImageFolderSource as ImageFolderSource
    from espdetect.sources.opencv import OpenCVSource as OpenCVSource
    from espdetect.sources.synthetic import SyntheticSource as SyntheticSource
    from espdetect.sources.video import VideoFileSource as VideoFileSource

__all__ = [
    "CaptureSource",
    "ClipIndexRow",
    "ClipInfo",
    "ClipPace",
    "ClipSource",
    "ClipWriter",
    "FrameSource",
    "ImageFolderSource",
    "MjpegStreamSource",
    "OpenCVSource",
    "SourceStats",
    "SyntheticSource",
    "VideoFileSource",
    "clip_info",
    "is_clip",
    "load_clip_index",
    "open_source",
]

# Loaded on first use: these modules import OpenCV at module level.
_LAZY: dict[str, str] = {
    "ClipIndexRow": "espdetect.sources.clip",
    "ClipInfo": "espdetect.sources.clip",
    "ClipPace": "espdetect.sources.clip",
    "ClipSource": "espdetect.sources.clip",
    "ClipWriter": "espdetect.sources.clip",
    "clip_info": "espdetect.sources.clip",
    "is_clip": "espdetect.sources.clip",
    "load_clip_index": "espdetect.sources.clip",
    "ImageFolderSource": "espdetect.sources.folder",
    "OpenCVSource": "espdetect.sources.opencv",
    "SyntheticSource": "espdetect.sources.synthetic",
    "VideoFileSource": "espdetect.sources.video",
}

__getattr__ = lazy_getattr(__name__, _LAZY, globals())
