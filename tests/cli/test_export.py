"""``espdetect export``: Ultralytics' export behind one command, and a clear line without it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from tests.cli.cli_process import one_error_line, run_espdetect

_HAS_ULTRALYTICS = importlib.util.find_spec("ultralytics") is not None


@pytest.mark.skipif(not _HAS_ULTRALYTICS, reason="needs Ultralytics: pip install 'espdetect[ultralytics]'")
def test_yaml_architecture_exports_to_a_dynamic_onnx_file(tmp_path: Path) -> None:
    import onnxruntime as ort

    out = tmp_path / "models" / "tiny.onnx"

    # In tmp_path: Ultralytics writes a .yaml model's export into the current folder first.
    proc = run_espdetect(
        "export", "yolov8n.yaml", "--format", "onnx", "--imgsz", "320", "--dynamic", "--out", str(out),
        cwd=tmp_path,
    )  # fmt: skip

    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines() == [f"exported onnx model: {out}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models"]
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (model_input,) = session.get_inputs()
    assert [isinstance(dim, int) for dim in model_input.shape] == [False, True, False, False]
    (output, *_) = session.run(None, {model_input.name: np.zeros((1, 3, 256, 192), np.float32)})
    assert output.shape[0] == 1


def test_without_ultralytics_says_how_to_install_it(tmp_path: Path) -> None:
    hidden = tmp_path / "hide"
    hidden.mkdir()
    (hidden / "ultralytics.py").write_text("raise ImportError(\"No module named 'ultralytics'\")\n")

    proc = run_espdetect("export", "yolov8n.yaml", "--format", "onnx", env={"PYTHONPATH": str(hidden)})

    line = one_error_line(proc, "export")
    assert "pip install 'espdetect[ultralytics]'" in line
    assert proc.stdout == ""
