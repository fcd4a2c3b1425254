from __future__ import annotations

import math

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


def test_motion_tracking_and_keepalive_parse_with_their_aliases() -> None:
    assert parse_grid("motion=off,on tracker=yes keepalive=5,30.5") == {
        "motion": [False, True],
        "tracking": [True],
        "keepalive": [5.0, 30.5],
    }
    assert parse_grid("track=0 keep_alive=10") == {"tracking": [False], "keepalive": [10.0]}


@pytest.mark.parametrize(
    ("text", "field"),
    [
        pytest.param("motion=sometimes", "motion", id="motion-word"),
        pytest.param("tracking=2", "tracking", id="tracking-number"),
        pytest.param("keepalive=soon", "keepalive", id="keepalive-word"),
        pytest.param("keepalive=nan", "keepalive", id="keepalive-nan"),
    ],
)
def test_bad_gating_values_are_refused_when_parsed(text: str, field: str) -> None:
    with pytest.raises(ConfigurationError, match=f"valid {field} value"):
        parse_grid(text)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        pytest.param({"motion": "yes"}, "motion", id="motion-not-bool"),
        pytest.param({"tracking": 1}, "tracking", id="tracking-not-bool"),
        pytest.param({"keepalive": 0.1}, "keepalive", id="keepalive-too-short"),
        pytest.param({"keepalive": math.inf}, "keepalive", id="keepalive-infinite"),
    ],
)
def test_bad_gating_settings_are_refused_by_the_pipelines_own_checks(
    kwargs: dict[str, object], field: str
) -> None:
    with pytest.raises(ConfigurationError, match="got") as info:
        ProfileConfig(model="m.onnx", **kwargs)  # type: ignore[arg-type]
    assert info.value.field == field
    # The same values fail the same way from a grid string: one check for both.
    if field == "keepalive":
        with pytest.raises(ConfigurationError):
            grid_from_text(f"keepalive={kwargs['keepalive']} motion=on", models=["m.onnx"])


def test_keys_name_motion_and_tracking_only_when_on() -> None:
    base = ProfileConfig(model="m.onnx", skip=2)
    # Keys of sweeps from before these settings existed still name the same configuration.
    assert base.key == "m.onnx@640-fp32-conf0.25-reduceauto-skip2-q80"
    assert base.replace(keepalive=10).key == base.key
    assert base.replace(tracking=True).key == base.key + "-tracking"
    assert base.replace(motion=True).key == base.key + "-motion-keepalive30"
    assert base.replace(motion=True, keepalive=7.5, tracking=True).key == (
        base.key + "-motion-keepalive7.5-tracking"
    )


def test_grid_sweeps_motion_and_tracking_and_drops_keepalives_without_motion() -> None:
    configs = grid_from_text("motion=off,on keepalive=10,30 tracking=off,on", models=["m.onnx"])
    assert len(configs) == 6
    assert len({c.key for c in configs}) == 6
    without = [c for c in configs if not c.motion]
    assert [c.tracking for c in without] == [False, True]
    assert sorted((c.keepalive, c.tracking) for c in configs if c.motion) == [
        (10.0, False),
        (10.0, True),
        (30.0, False),
        (30.0, True),
    ]


def test_pipeline_config_carries_motion_keepalive_and_tracking() -> None:
    pc = ProfileConfig(model="m.onnx", motion=True, keepalive=12, tracking=True).pipeline_config()
    assert (pc.motion, pc.keepalive, pc.tracking) == (True, 12.0, True)
    off = ProfileConfig(model="m.onnx").pipeline_config()
    assert (off.motion, off.tracking) == (False, False)


def test_a_label_tells_identical_settings_apart_and_nothing_else() -> None:
    cfg = ProfileConfig(model="m.onnx", skip=2)
    twin = cfg.replace(label="b")
    assert twin.key == cfg.key + "-label_b" and twin.replace(label="").key == cfg.key
    assert twin.pipeline_config() == cfg.pipeline_config() and twin.detect_params() == cfg.detect_params()
    assert twin.model_key == cfg.model_key  # one detector serves both
    with pytest.raises(ConfigurationError, match="label"):
        ProfileConfig(model="m.onnx", label="a b")
