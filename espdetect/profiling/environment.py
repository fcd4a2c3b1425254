"""What a sweep ran on: CPU, cores, library versions, model checksums (the results' JSON sidecar)."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import socket
import sys
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil

__all__ = ["collect_environment", "cpu_model", "cuda_available", "model_sha256"]

_PACKAGES = (
    "torch",
    "ultralytics",
    "onnxruntime",
    "openvino",
    "opencv-python",
    "numpy",
    "pandas",
    "espdetect",
)


def cpu_model() -> str:
    """The CPU's marketing name (from /proc/cpuinfo on Linux), or what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cuda_available() -> bool:
    """Whether torch sees a CUDA GPU (False when torch is missing)."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def model_sha256(model: str) -> str | None:
    """sha256 of a model file, or of an export folder's files in name order; None for a bare name.

    Example:
        >>> model_sha256("no-such-model.pt") is None
        True
    """
    path = Path(model).expanduser()
    digest = hashlib.sha256()
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
    else:
        return None
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode())
        with file.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def collect_environment(models: Iterable[str] = ()) -> dict[str, Any]:
    """A JSON-serialisable description of this machine and the models' checksums.

    Example:
        >>> env = collect_environment()
        >>> env["cores_logical"] >= 1
        True
    """
    import cv2

    versions = {name: _version(name) for name in _PACKAGES}
    versions["opencv"] = cv2.__version__
    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        # What a sweep measured here writes in its rows' node column.
        "hostname": socket.gethostname(),
        "cpu_model": cpu_model(),
        "cores_logical": os.cpu_count() or 1,
        "cores_physical": psutil.cpu_count(logical=False),
        "memory_gb": round(psutil.virtual_memory().total / 1024**3, 1),
        "cuda": cuda_available(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "versions": versions,
        "models": {m: {"sha256": model_sha256(m)} for m in dict.fromkeys(models)},
    }
