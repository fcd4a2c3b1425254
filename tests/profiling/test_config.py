from __future__ import annotations

import pytest

from espdetect.exceptions import ConfigurationError
from espdetect.profiling.config import ProfileConfig, grid, grid_from_text, model_format, parse_grid


def test_grid_is_the_cartesian_product_without_duplicates() -> None:
    configs = grid(model="m.onnx", skip=[1, 2, 4, "auto"], imgsz=[320, 640], jpeg_quality=[50, 80, 80])
    assert len(configs) == 16
    assert len({c.key for c in configs}) == 16
    assert {c.skip for c in configs} == {1, 2, 4, "auto"}
    assert all(c.model == "m.onnx" for c in configs)


def test_grids_concatenate_and_keys_are_stable() -> None:
    a = grid(model="m.onnx", skip=[1, 2]) + grid(model="yolov8n.yaml", imgsz=[320, 640])
    assert [c.key for c in a] == [
        "m.onnx@640-fp32-conf0.25-reduceauto-skip1-q80",
        "m.onnx@640-fp32-conf0.25-reduceauto-skip2-q80",
        "yolov8n.yaml@320-fp32-conf0.25-reduceauto-skip1-q80",
        "yolov8n.yaml@640-fp32-conf0.25-reduceauto-skip1-q80",
    ]
    assert ProfileConfig(model="m.onnx", skip=2) == a[1]
    assert hash(ProfileConfig(model="m.onnx", skip=2)) == hash(a[1])


def test_config_knows_format_and_training() -> None:
    assert ProfileConfig(model="x/yolov8n.yaml").trained is False
    assert ProfileConfig(model="x/best.pt").trained is True
    assert model_format("w/yolov8n_openvino_model/") == "openvino"
    assert model_format("w/model.onnx") == "onnx"
    assert ProfileConfig(model="a/b/best.onnx").model_name == "best.onnx"


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"skip": 0}, id="skip-zero"),
        pytest.param({"skip": "sometimes"}, id="skip-word"),
        pytest.param({"imgsz": 16}, id="imgsz-small"),
        pytest.param({"jpeg_quality": 101}, id="quality"),
        pytest.param({"conf": 1.5}, id="conf"),
        pytest.param({"decode_reduce": 3}, id="reduce"),
        pytest.param({"half": "yes"}, id="half"),
        pytest.param({"model": ""}, id="model"),
    ],
)
def test_bad_values_are_refused_with_what_was_expected(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError, match="got"):
        ProfileConfig(**kwargs)  # type: ignore[arg-type]


def test_parse_grid_accepts_aliases_and_auto() -> None:
    assert parse_grid(
        "skip=1,2,4,auto imgsz=320,640 quality=50,80 reduce=2,auto half=false,true conf=0.4"
    ) == {
        "skip": [1, 2, 4, "auto"],
        "imgsz": [320, 640],
        "jpeg_quality": [50, 80],
        "decode_reduce": [2, "auto"],
        "half": [False, True],
        "conf": [0.4],
    }


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("speed=1,2", id="unknown-axis"),
        pytest.param("skip", id="no-equals"),
        pytest.param("imgsz=big", id="bad-int"),
        pytest.param("skip=", id="no-values"),
        pytest.param("half=maybe", id="bad-bool"),
    ],
)
def test_parse_grid_refuses_malformed_text(text: str) -> None:
    with pytest.raises(ConfigurationError, match="expected"):
        parse_grid(text)


def test_grid_from_text_uses_the_given_models_when_the_text_names_none() -> None:
    configs = grid_from_text("skip=1,4 quality=50", models=["a.onnx", "b.yaml"])
    assert [(c.model, c.skip) for c in configs] == [
        ("a.onnx", 1),
        ("a.onnx", 4),
        ("b.yaml", 1),
        ("b.yaml", 4),
    ]
    assert grid_from_text("model=c.pt")[0].model == "c.pt"


def test_two_models_with_one_file_name_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="distinct file names"):
        grid(model=["a/best.pt", "b/best.pt"])


def test_pipeline_config_carries_skip_and_reduce() -> None:
    pc = ProfileConfig(model="m.onnx", skip="auto", decode_reduce=2).pipeline_config()
    assert (pc.skip, pc.decode_reduce) == ("auto", 2)
