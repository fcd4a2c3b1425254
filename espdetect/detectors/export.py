"""`export_model`: turn Ultralytics weights into a file espdetect's own runtimes load.

Needs ``pip install 'espdetect[ultralytics]'`` (and ``openvino`` for OpenVINO); the exported
ONNX file or OpenVINO folder then runs without either (``espdetect serve --model best.onnx``).
Ultralytics never installs anything at run time here: a missing package is an error that
names what to install.
"""

from __future__ import annotations

import importlib
import shutil
from pathlib import Path
from typing import Any, Final, Literal

from espdetect.constraints import IMGSZ
from espdetect.exceptions import ConfigurationError, ExportFailed, MissingDependency, ModelLoadError

__all__ = ["ExportFormat", "export_model"]

#: What a model can be exported to.
ExportFormat = Literal["onnx", "openvino", "torchscript"]
_FORMATS: Final = ("onnx", "openvino", "torchscript")
#: The package each format needs besides Ultralytics, and the extra that brings it.
_NEEDS: Final[dict[str, tuple[str, str]]] = {
    "onnx": ("onnx", "ultralytics"),
    "openvino": ("openvino", "openvino"),
}
_YAML_SUFFIXES: Final = (".yaml", ".yml")
#: What Ultralytics raises for a model or options it cannot export; its own argument checks are
#: ``assert`` statements, hence AssertionError.
_EXPORT_ERRORS: Final = (AssertionError, ValueError, KeyError, RuntimeError, OSError, ImportError, TypeError)


def _options(fmt: ExportFormat, imgsz: int | None, dynamic: bool, int8: bool, half: bool) -> dict[str, Any]:
    options: dict[str, Any] = {"format": fmt, "dynamic": dynamic, "verbose": False}
    if imgsz is not None:
        options["imgsz"] = IMGSZ.check("imgsz", imgsz)
    default_cfg: dict[str, Any] = importlib.import_module("ultralytics.cfg").DEFAULT_CFG_DICT
    # Newer Ultralytics replaced the int8/half switches by `quantize`; pass what this version knows.
    if "quantize" in default_cfg:
        options["quantize"] = 8 if int8 else 16 if half else None
    else:
        options.update(int8=int8, half=half)
    return options


def _move(exported: Path, out: Path) -> Path:
    """Put ``exported`` (a file or folder) at ``out``, or into ``out`` when it is a folder."""
    target = out / exported.name if out.is_dir() else out
    if target.resolve() == exported.resolve():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_dir():
        # Exporting again replaces the earlier export, as Ultralytics does in its own place.
        shutil.rmtree(target)
    shutil.move(str(exported), str(target))
    return target


def export_model(
    model: str | Path,
    fmt: ExportFormat,
    out: str | Path | None = None,
    *,
    imgsz: int | None = None,
    dynamic: bool = False,
    int8: bool = False,
    half: bool = False,
) -> Path:
    """Export ``model`` (``.pt`` weights, or a ``.yaml`` architecture: untrained) to ``fmt``.

    ``out`` is a file or folder to put the result at, or an existing folder to put it into
    (None: where Ultralytics writes it, next to the model). ``dynamic`` lets the input size be
    chosen at run time; ``int8`` (OpenVINO) and ``half`` set the precision.

    Raises:
        ConfigurationError: an unknown format, ``int8`` with a format other than openvino, a bad size.
        MissingDependency: Ultralytics or the format's package is not installed.
        ExportFailed: Ultralytics could not load or export the model.

    Example:
        >>> export_model("yolov8n.pt", "onnx", "models/", dynamic=True)  # doctest: +SKIP
        PosixPath('models/yolov8n.onnx')
    """
    if fmt not in _FORMATS:
        raise ConfigurationError(
            f"expected format to be one of {', '.join(_FORMATS)}, got {fmt!r}", field="format"
        )
    if int8 and fmt != "openvino":
        raise ConfigurationError(f"expected int8 with format openvino, got format {fmt}", field="int8")
    name = str(model)
    path = Path(name).expanduser()
    # A bare name (yolov8n.pt, yolov8n.yaml) is Ultralytics' to find or download; a path must exist.
    if not path.exists() and path.name != name and path.suffix.lower() not in _YAML_SUFFIXES:
        raise ExportFailed(name, fmt, f"expected an existing file, got no such path {str(path)!r}")
    package, extra = _NEEDS.get(fmt, ("", ""))
    if package and importlib.util.find_spec(package) is None:
        raise MissingDependency(package, extra, f"exporting to {fmt}")
    from espdetect.detectors.ultralytics import import_ultralytics

    try:
        ultralytics = import_ultralytics(name)
    except ModelLoadError:
        raise MissingDependency("ultralytics", "ultralytics", "exporting a model") from None
    try:
        exported = Path(
            str(ultralytics.YOLO(name, task="detect").export(**_options(fmt, imgsz, dynamic, int8, half)))
        )
    except _EXPORT_ERRORS as exc:
        # Ultralytics appends multi-line advice; its first line states the problem.
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ExportFailed(name, fmt, first_line) from exc
    return _move(exported, Path(out)) if out is not None else exported
