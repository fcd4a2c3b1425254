from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from espdetect.exceptions import MissingDependency
from espdetect.profiling.export import export_model


def test_a_format_without_its_package_is_refused_with_what_to_install(tmp_path: Path) -> None:
    if importlib.util.find_spec("openvino") is not None:
        pytest.skip("openvino is installed here")
    with pytest.raises(MissingDependency, match=r"needs openvino: pip install 'espdetect\[openvino\]'"):
        export_model("yolov8n.yaml", "openvino", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_dynamic_onnx_export_of_an_untrained_network_runs_at_any_size(tmp_path: Path) -> None:
    pytest.importorskip("ultralytics", reason="exports need pip install 'espdetect[ultralytics]'")
    from espdetect.detectors.ultralytics import UltralyticsDetector

    path = export_model("yolov8n.yaml", "onnx", tmp_path, dynamic=True)
    assert path.name == "yolov8n-untrained-dynamic.onnx" and path.is_file()
    assert export_model("yolov8n.yaml", "onnx", tmp_path, dynamic=True) == path
    detector = UltralyticsDetector(str(path), imgsz=160)
    assert detector.params.imgsz == 160 and detector.info.fixed_imgsz is None
