"""Tests of deploy/: the container image, compose file and systemd unit."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "espdetect_image_builder", Path(__file__).resolve().parents[2] / "deploy" / "image.py"
)
assert _spec is not None and _spec.loader is not None
#: deploy/image.py (stdlib only, outside the package), as a module.
image_builder = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(image_builder)
