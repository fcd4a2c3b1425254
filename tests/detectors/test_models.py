from __future__ import annotations

from pathlib import Path

import pytest

from espdetect.detectors.models import MODEL_ENV_VAR, bundled_model_path, resolve_model


def test_model_resolution_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MODEL_ENV_VAR, raising=False)
    assert resolve_model(None) == str(bundled_model_path())

    monkeypatch.setenv(MODEL_ENV_VAR, "/models/from_env.onnx")
    assert resolve_model(None) == "/models/from_env.onnx"
    assert resolve_model(Path("explicit.pt")) == "explicit.pt"

    monkeypatch.setenv(MODEL_ENV_VAR, "  ")
    assert resolve_model("") == str(bundled_model_path())


def test_the_bundled_model_is_the_documented_file() -> None:
    import hashlib

    path = bundled_model_path()
    assert path.is_file() and path.name == "yolov8n_int8.onnx"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest == "83de8f0d2cd521e00ae2b138c340a03dece35b060b3898509bdc69afff417312"
    assert "AGPL-3.0" in (path.parent / "README.md").read_text()
