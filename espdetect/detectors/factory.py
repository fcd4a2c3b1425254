"""`open_detector`: the right backend for a model file, so callers need not know which runs it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Final, Literal, get_args

from typing_extensions import Unpack

from espdetect.detectors.base import DetectKwargs, Detector
from espdetect.detectors.models import resolve_model
from espdetect.exceptions import ConfigurationError

__all__ = ["DetectorBackend", "choose_backend", "open_detector"]

logger = logging.getLogger(__name__)

#: Which runtime runs a model; "auto" picks one from the model's file type (see `choose_backend`).
DetectorBackend = Literal["auto", "onnxruntime", "openvino", "ultralytics"]
_BACKENDS: Final[tuple[str, ...]] = get_args(DetectorBackend)


def choose_backend(model: str | Path) -> Literal["onnxruntime", "openvino", "ultralytics"]:
    """The backend "auto" uses for ``model``: ONNX Runtime for ``.onnx``, OpenVINO for ``.xml``
    or a folder holding one, Ultralytics for everything else (``.pt``, ``.yaml``, ``yolov8n.pt``).

    Example:
        >>> choose_backend("weights/best.onnx"), choose_backend("yolov8n.pt")
        ('onnxruntime', 'ultralytics')
    """
    path = Path(model).expanduser()
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return "onnxruntime"
    if suffix == ".xml" or (path.is_dir() and any(path.glob("*.xml"))):
        return "openvino"
    return "ultralytics"


def open_detector(
    model: str | Path | None = None,
    *,
    backend: DetectorBackend = "auto",
    device: str | None = None,
    threads: int | None = None,
    half: bool = False,
    **params: Unpack[DetectKwargs],
) -> Detector:
    """Load ``model`` (else ``$ESPDETECT_MODEL``, else the bundled COCO model) on a backend.

    ``backend="auto"`` runs ``.onnx`` files on ONNX Runtime and OpenVINO IR (``.xml``, or an
    ``*_openvino_model/`` folder) on OpenVINO, neither of which imports torch; anything else
    (``.pt``, ``.yaml``, Ultralytics model names) goes to Ultralytics, which needs
    ``espdetect[ultralytics]``.

    Args:
        model: The model file, folder or Ultralytics name.
        backend: Which runtime runs it.
        device: Where it runs, in the backend's terms ("cpu", "cuda:0", "tensorrt" for ONNX
            Runtime; "CPU", "GPU", "AUTO" for OpenVINO; "cpu", "cuda:N" for Ultralytics).
            None: the CPU for ONNX Runtime and OpenVINO; for Ultralytics the first CUDA GPU when
            torch sees one, else the CPU (Ultralytics' own choice).
        threads: Inference threads for ONNX Runtime and OpenVINO on the CPU (None: the
            runtime's default). Ultralytics has no such setting and ignores it with a warning.
        half: fp16 inference. It only takes effect for Ultralytics on a CUDA device, and for
            OpenVINO, where it lets the device use its low precision (bf16/fp16). For an
            ``.onnx`` model on ONNX Runtime precision comes from the file (export an fp16
            model to run fp16), so ``half`` is ignored there.
        params: The detector's default thresholds, classes and input size (`DetectParams`).

    Raises:
        ConfigurationError: an unknown backend, or a device/input size the backend refuses.
        ModelLoadError: the model cannot be loaded by that backend.

    Example:
        >>> detector = open_detector("yolov8n_int8.onnx", threads=2)  # doctest: +SKIP
        >>> detector.info.backend  # doctest: +SKIP
        'onnxruntime'
    """
    # Long: mostly the docstring; the code is one branch per backend.
    if backend not in _BACKENDS:
        raise ConfigurationError(
            f"expected backend to be one of {list(_BACKENDS)}, got {backend!r}", field="backend"
        )
    name = resolve_model(model)
    chosen = choose_backend(name) if backend == "auto" else backend
    logger.debug("opening %r on %s", name, chosen)
    if chosen == "onnxruntime":
        from espdetect.detectors.onnx import OnnxDetector

        if half:
            logger.info(
                "half=True is ignored for ONNX Runtime: %r runs in the precision it was exported in", name
            )
        return OnnxDetector(name, device=device or "cpu", threads=threads, **params)
    if chosen == "openvino":
        from espdetect.detectors.openvino import OpenVinoDetector

        return OpenVinoDetector(name, device=device or "CPU", threads=threads, half=half, **params)
    from espdetect.detectors.ultralytics import UltralyticsDetector

    if threads is not None:
        logger.warning("threads=%d is ignored by the Ultralytics backend", threads)
    return UltralyticsDetector(name, device=device, half=half, **params)
