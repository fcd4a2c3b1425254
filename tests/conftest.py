from __future__ import annotations

import os
from pathlib import Path

import pytest

# Ultralytics must never pip-install anything at test time.
os.environ.setdefault("YOLO_AUTOINSTALL", "False")
os.environ.setdefault("YOLO_OFFLINE", "True")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def sample_images() -> dict[str, Path]:
    from espdetect.emulator.scene import sample_photo

    return {name: sample_photo(f"{name}.jpg") for name in ("bus", "zidane")}


def _real_model() -> str | None:
    env = os.environ.get("ESPDETECT_MODEL")
    if env and Path(env).exists():
        return env
    return None


@pytest.fixture(scope="session")
def model_path() -> str:
    path = _real_model()
    if path is None:
        pytest.skip("needs real weights: set ESPDETECT_MODEL to a .pt/.onnx file")
    return path
