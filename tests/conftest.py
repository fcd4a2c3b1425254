from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests._ray import RayCluster

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


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[RayCluster]:
    """One local Ray head with 2 CPUs for every test that needs Ray (about 10 s to start)."""
    pytest.importorskip("ray", reason="needs espdetect[ray]")
    from tests._ray import RayCluster

    with RayCluster(cpus=2) as cluster:
        yield cluster
