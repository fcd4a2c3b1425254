"""Errors raised by espdetect, each named after the condition that causes it."""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "DecodeError",
    "EndOfStream",
    "EspdetectError",
    "ModelLoadError",
    "ProtocolError",
    "SourceUnavailable",
]


class EspdetectError(Exception):
    """Base class of every error raised by espdetect."""


class EndOfStream(EspdetectError):
    """A finite source (file, folder, clip) has no more frames, or the source was closed."""


class SourceUnavailable(EspdetectError):
    """A source cannot deliver frames: the camera refuses, answers with an error, or the file is missing.

    ``url`` names the source and ``reason`` says what came instead of frames.
    """

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason

    def __repr__(self) -> str:
        return f"SourceUnavailable(url={self.url!r}, reason={self.reason!r})"


class ProtocolError(EspdetectError):
    """The peer spoke something other than the expected HTTP / multipart JPEG stream."""


class DecodeError(EspdetectError):
    """Bytes that should be a JPEG image could not be decoded."""

    def __init__(self, size: int, detail: str = "not a decodable JPEG") -> None:
        super().__init__(f"expected a JPEG image, got {size} bytes that are {detail}")
        self.size = size
        self.detail = detail


class ModelLoadError(EspdetectError):
    """The detection model could not be loaded; the message says how to pass a local file."""

    def __init__(self, model: str, reason: str) -> None:
        super().__init__(
            f"could not load model {model!r}: {reason}. "
            "Pass a local weights file with --model PATH (or model=PATH), or set ESPDETECT_MODEL=PATH "
            "(.pt, .onnx, an OpenVINO folder or a .yaml). The default 'yolov8n.pt' is downloaded by "
            "Ultralytics on first use, which needs internet access."
        )
        self.model = model
        self.reason = reason


class ConfigurationError(EspdetectError, ValueError):
    """A setting has a value outside what is accepted; the message says what was expected."""
