"""`open_source`: one string (URL, path, camera index, ``synthetic``) to the right `FrameSource`."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from espdetect.exceptions import ConfigurationError, SourceUnavailable
from espdetect.sources.base import FrameSource
from espdetect.sources.capture import CaptureSource
from espdetect.sources.clip import ClipSource, is_clip
from espdetect.sources.folder import ImageFolderSource
from espdetect.sources.mjpeg_stream import MjpegStreamSource
from espdetect.sources.opencv import OpenCVSource
from espdetect.sources.synthetic import SyntheticSource
from espdetect.sources.video import VideoFileSource

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
        return SyntheticSource()
    if text.lstrip("-").isdigit():
        index = int(text)
        if index < 0:
            raise ConfigurationError(f"expected a camera index >= 0, got {index}")
        return OpenCVSource(index)
    scheme = urlsplit(text).scheme.lower()
    if scheme in ("http", "https"):
        if urlsplit(text).path.rstrip("/").endswith("/capture"):
            return CaptureSource(text)
        return MjpegStreamSource(text)
    if scheme in _OPENCV_SCHEMES:
        return OpenCVSource(text)
    # One-letter schemes are Windows drive letters ("C:\\clips"), not URLs.
    if len(scheme) > 1:
        raise ConfigurationError(
            f"expected an http(s), rtsp(s) or rtmp URL, a path, a camera index or 'synthetic', got {spec!r}"
        )
    path = Path(text).expanduser()
    if path.is_dir():
        if is_clip(path):
            return ClipSource(path)
        return ImageFolderSource(path)
    if path.is_file():
        return VideoFileSource(path)
    raise SourceUnavailable(
        text, "expected a URL, camera index, 'synthetic', or an existing file or folder, got no such path"
    )
