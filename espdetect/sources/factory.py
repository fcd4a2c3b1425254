"""`open_source`: one string (URL, path, camera index, ``synthetic``) to the right `FrameSource`."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from espdetect.exceptions import ConfigurationError, SourceUnavailable
from espdetect.sources.base import FrameSource
from espdetect.sources.capture import CaptureSource
from espdetect.sources.mjpeg_stream import MjpegStreamSource

# The other sources import OpenCV, which a server image leaves out: each branch below imports
# its source when a spec asks for it, so ESP32 URLs open without OpenCV installed.

__all__ = ["open_source"]

_OPENCV_SCHEMES = ("rtsp", "rtsps", "rtmp")


def open_source(spec: str) -> FrameSource:
    """The source a spec names.

    ======================================  ========================
    spec                                    source
    ======================================  ========================
    ``http(s)://host/capture``              `CaptureSource`
    any other ``http(s)://`` URL            `MjpegStreamSource`
    ``rtsp://``, ``rtsps://``, ``rtmp://``  `OpenCVSource`
    an integer (``0``)                      `OpenCVSource` (webcam)
    a folder with ``index.csv``             `ClipSource`
    any other folder                        `ImageFolderSource`
    a file                                  `VideoFileSource`
    ``synthetic``                           `SyntheticSource`
    ======================================  ========================

    Raises:
        ConfigurationError: the spec matches none of these.
        SourceUnavailable: the spec looks like a path, but nothing is there.

    Example:
        >>> type(open_source("http://192.168.4.1:81/stream")).__name__
        'MjpegStreamSource'
        >>> type(open_source("synthetic")).__name__
        'SyntheticSource'
    """
    text = spec.strip()
    if not text:
        raise ConfigurationError(
            "expected a source (URL, path, camera index or 'synthetic'), got an empty string"
        )
    if text.lower() == "synthetic":
        from espdetect.sources.synthetic import SyntheticSource

        return SyntheticSource()
    if text.lstrip("-").isdigit():
        index = int(text)
        if index < 0:
            raise ConfigurationError(f"expected a camera index >= 0, got {index}")
        from espdetect.sources.opencv import OpenCVSource

        return OpenCVSource(index)
    scheme = urlsplit(text).scheme.lower()
    if scheme in ("http", "https"):
        if urlsplit(text).path.rstrip("/").endswith("/capture"):
            return CaptureSource(text)
        return MjpegStreamSource(text)
    if scheme in _OPENCV_SCHEMES:
        from espdetect.sources.opencv import OpenCVSource

        return OpenCVSource(text)
    # One-letter schemes are Windows drive letters ("C:\\clips"), not URLs.
    if len(scheme) > 1:
        raise ConfigurationError(
            f"expected an http(s), rtsp(s) or rtmp URL, a path, a camera index or 'synthetic', got {spec!r}"
        )
    return _open_path(text)


def _open_path(text: str) -> FrameSource:
    """The source for a path: a clip or image folder, or a video file."""
    path = Path(text).expanduser()
    if path.is_dir():
        from espdetect.sources.clip import ClipSource, is_clip

        if is_clip(path):
            return ClipSource(path)
        from espdetect.sources.folder import ImageFolderSource

        return ImageFolderSource(path)
    if path.is_file():
        from espdetect.sources.video import VideoFileSource

        return VideoFileSource(path)
    raise SourceUnavailable(
        text, "expected a URL, camera index, 'synthetic', or an existing file or folder, got no such path"
    )
