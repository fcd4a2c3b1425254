"""Which model to load: the caller's, ``$ESPDETECT_MODEL``, or the COCO model bundled with espdetect."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Final

__all__ = ["BUNDLED_MODEL", "MODEL_ENV_VAR", "bundled_model_path", "resolve_model"]

#: Environment variable naming the model when the caller passes none.
MODEL_ENV_VAR: Final = "ESPDETECT_MODEL"
#: File name of the model shipped inside the package (see espdetect/models/README.md).
BUNDLED_MODEL: Final = "yolov8n_int8.onnx"


def bundled_model_path() -> Path:
    """Path of the bundled COCO YOLOv8n (int8 ONNX, fixed 640 input, AGPL-3.0)."""
    return Path(str(resources.files("espdetect.models").joinpath(BUNDLED_MODEL)))


def resolve_model(model: str | Path | None) -> str:
    """The model to load: ``model`` if given, else ``$ESPDETECT_MODEL``, else the bundled model.

    The bundled model needs no download and no PyTorch, so a server configured with nothing
    detects offline. ``yolov8n.pt`` and other Ultralytics names are used only when asked for.

    Example:
        >>> resolve_model("weights/best.onnx")
        'weights/best.onnx'
    """
    if model is not None and str(model).strip():
        return str(model).strip()
    env = os.environ.get(MODEL_ENV_VAR, "").strip()
    return env or str(bundled_model_path())
