"""Errors raised by espdetect, each named after the condition that causes it.

Every error is an `EspdetectError`, so ``except EspdetectError`` catches what espdetect itself
reports and lets bugs (``TypeError``, ``AttributeError``...) through.
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "DecodeError",
    "DetectorError",
    "EndOfStream",
    "EspdetectError",
    "ExportFailed",
    "InvalidEventId",
    "MissingDependency",
    "ModelLoadError",
    "SlotClosed",
    "SourceUnavailable",
    "UnsupportedSchema",
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
            "Pass a local model with --model PATH (or model=PATH), or set ESPDETECT_MODEL=PATH "
            "(.onnx, an OpenVINO folder, or with espdetect[ultralytics] also .pt and .yaml); "
            "without one espdetect uses the COCO model bundled with it."
        )
        self.model = model
        self.reason = reason

    def __repr__(self) -> str:
        return f"ModelLoadError(model={self.model!r}, reason={self.reason!r})"


class DetectorError(EspdetectError):
    """A loaded model failed on one image (the runtime raised); the next image may succeed."""

    def __init__(self, model: str, reason: str) -> None:
        super().__init__(f"model {model!r} failed: {reason}")
        self.model = model
        self.reason = reason


class ConfigurationError(EspdetectError, ValueError):
    """A setting has a value outside what is accepted; the message says what was expected.

    ``field`` names the setting (``"conf"``, ``"classes"``...) when one setting is at fault,
    so a server can point at it without parsing the message.

    Example:
        >>> err = ConfigurationError("expected conf between 0 and 1, got 2", field="conf")
        >>> err.field
        'conf'
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def __repr__(self) -> str:
        return f"ConfigurationError({self.message!r}, field={self.field!r})"


class MissingDependency(EspdetectError, ImportError):
    """An optional package is not installed; the message names the extra that brings it.

    Example:
        >>> str(MissingDependency("pandas", "profile", "a profiling sweep"))
        "a profiling sweep needs pandas: pip install 'espdetect[profile]'"
    """

    def __init__(self, package: str, extra: str, feature: str) -> None:
        super().__init__(f"{feature} needs {package}: pip install 'espdetect[{extra}]'")
        self.package = package
        self.extra = extra
        self.feature = feature


class ExportFailed(EspdetectError):
    """A model could not be exported; ``reason`` says why (the first line of Ultralytics' error).

    Example:
        >>> str(ExportFailed("best.pt", "onnx", "no such file"))
        "cannot export 'best.pt' to onnx: no such file"
    """

    def __init__(self, model: str, fmt: str, reason: str) -> None:
        super().__init__(f"cannot export {model!r} to {fmt}: {reason}")
        self.model = model
        self.format = fmt
        self.reason = reason


class SlotClosed(EspdetectError):
    """A `espdetect.latest.Latest` slot was closed while a consumer waited on it."""


class InvalidEventId(EspdetectError, ValueError):
    """An event id that cannot name a stored event (it could reach outside the snapshot folder).

    Example:
        >>> InvalidEventId("../x").value
        '../x'
    """

    def __init__(self, value: object) -> None:
        super().__init__(
            f"expected an event id of 1-128 letters, digits, '.', '_' or '-' that starts and ends "
            f"with no '.', got {value!r}"
        )
        self.value = value


class UnsupportedSchema(EspdetectError):
    """A database was written by a newer espdetect, whose layout this one cannot read or change."""

    def __init__(self, path: str, found: int, supported: int) -> None:
        super().__init__(
            f"{path} has schema version {found}, this espdetect reads up to {supported}: "
            "upgrade espdetect or choose another data directory"
        )
        self.path = path
        self.found = found
        self.supported = supported
