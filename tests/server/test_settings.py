from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from espdetect.exceptions import ConfigurationError
from espdetect.pipeline import StaleMode
from espdetect.server.settings import (
    SECTIONS,
    CameraConfig,
    CameraOptions,
    ServerSettings,
    leaf_fields,
    load_settings,
    parse_camera_spec,
)

_TOML = """
[detector]
model = "weights.onnx"

[defaults]
conf = 0.3
quality = 70

[viewers]
max_viewers_total = 20

[[cameras]]
id = "front"
url = "http://192.168.1.50:81/stream"
conf = 0.5
skip = 2
classes = [0]

[[cameras]]
id = "garage"
url = "http://192.168.1.51:81/stream"
stale = "raw"
imgsz = 320
"""


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # The test machine may set ESPDETECT_MODEL; these tests control the environment themselves.
    for name in (
        "ESPDETECT_MODEL",
        "ESPDETECT_CAMERAS",
        "ESPDETECT_CONF",
        "ESPDETECT_PORT",
        "ESPDETECT_SKIP",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    ("spec", "index", "cam_id", "url"),
    [
        pytest.param("front=http://10.0.0.2:81/stream", 0, "front", "http://10.0.0.2:81/stream", id="named"),
        pytest.param("http://10.0.0.2:81/stream", 0, "cam", "http://10.0.0.2:81/stream", id="first"),
        pytest.param("http://10.0.0.3/stream", 2, "cam3", "http://10.0.0.3/stream", id="third"),
        pytest.param("http://h/stream?a=b", 0, "cam", "http://h/stream?a=b", id="query-with-equals"),
    ],
)
def test_camera_specs(spec: str, index: int, cam_id: str, url: str) -> None:
    cam = parse_camera_spec(spec, index)
    assert (cam.id, cam.url) == (cam_id, url)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        pytest.param("bad id=http://h/stream", "expected camera id to be 1-64 letters", id="id"),
        pytest.param(
            "cam=ftp://h/stream",
            "expected camera URL to be an http(s) URL, got 'ftp://h/stream'",
            id="scheme",
        ),
        pytest.param("cam=", "expected camera URL to be an http(s) URL, got ''", id="empty"),
    ],
)
def test_bad_camera_specs(spec: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_camera_spec(spec)


def test_defaults() -> None:
    s = ServerSettings()
    assert (s.host, s.port, s.cameras, s.detector.model, s.defaults.imgsz) == (
        "127.0.0.1",
        8000,
        [],
        None,
        None,
    )
    assert (s.defaults.skip, s.defaults.stale, s.defaults.quality) == ("auto", StaleMode.DRAW_LAST, 80)
    assert (s.viewers.low_quality, s.upstream.grace_period) == (40, 2.0)


def test_option_names_are_unique_across_sections() -> None:
    names = [name for _, name, _ in leaf_fields()]
    assert len(names) == len(set(names))
    assert set(SECTIONS) == {
        "detector",
        "defaults",
        "upstream",
        "viewers",
        "serving",
        "auth",
        "storage",
        "mqtt",
        "webhooks",
    }


def test_every_option_has_a_description() -> None:
    missing = [name for _, name, info in leaf_fields() if not info.description]
    assert missing == []


def test_options_may_be_written_flat_or_in_their_section() -> None:
    flat: dict[str, Any] = {"conf": 0.4, "max_viewers_total": 3, "model": "m.onnx", "stall_timeout": 2.0}
    nested: dict[str, Any] = {
        "defaults": {"conf": 0.4},
        "viewers": {"max_viewers_total": 3},
        "detector": {"model": "m.onnx"},
        "upstream": {"stall_timeout": 2.0},
    }
    assert ServerSettings(**flat) == ServerSettings(**nested) == load_settings(None, flat)
    assert load_settings(None, flat) == load_settings(None, nested)
    loaded = load_settings(None, flat)
    assert (loaded.defaults.conf, loaded.viewers.max_viewers_total, loaded.detector.model) == (
        0.4,
        3,
        "m.onnx",
    )


def test_an_option_given_flat_and_in_its_section_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="expected conf once, got it at the top level") as info:
        load_settings(None, dict(conf=0.4, defaults={"conf": 0.5}))
    assert info.value.field == "conf"


def test_flat_toml_from_before_sections_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "old.toml"
    path.write_text('model = "w.onnx"\nconf = 0.3\nmax_viewers_total = 20\n')
    s = load_settings(path)
    assert (s.detector.model, s.defaults.conf, s.viewers.max_viewers_total) == ("w.onnx", 0.3, 20)


def test_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESPDETECT_CAMERAS", "front=http://10.0.0.2:81/stream,http://10.0.0.3:81/stream")
    monkeypatch.setenv("ESPDETECT_CONF", "0.4")
    monkeypatch.setenv("ESPDETECT_SKIP", "3")
    monkeypatch.setenv("ESPDETECT_MODEL", "/models/m.onnx")
    monkeypatch.setenv("ESPDETECT_MAX_VIEWERS_TOTAL", "7")
    monkeypatch.setenv("ESPDETECT_CLASSES", "0,2")
    s = ServerSettings()
    assert [c.id for c in s.cameras] == ["front", "cam2"]
    assert (s.defaults.conf, s.defaults.skip, s.detector.model) == (0.4, 3, "/models/m.onnx")
    assert (s.viewers.max_viewers_total, s.defaults.classes) == (7, [0, 2])


def test_cameras_as_json_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESPDETECT_CAMERAS", '[{"id": "a", "url": "http://h/stream", "conf": 0.7}]')
    assert ServerSettings().camera_settings()[0].conf == 0.7


def test_toml_file_with_per_camera_overrides(tmp_path: Path) -> None:
    path = tmp_path / "espdetect.toml"
    path.write_text(_TOML)
    s = load_settings(path)
    assert (s.detector.model, s.viewers.max_viewers_total) == ("weights.onnx", 20)
    front, garage = s.camera_settings()
    assert (front.id, front.conf, front.skip, front.classes, front.quality) == ("front", 0.5, 2, [0], 70)
    assert (garage.conf, garage.stale, garage.imgsz, garage.classes) == (0.3, StaleMode.RAW, 320, None)


def test_precedence_is_overrides_then_environment_then_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "espdetect.toml"
    path.write_text(_TOML)
    monkeypatch.setenv("ESPDETECT_CONF", "0.35")
    monkeypatch.setenv("ESPDETECT_PORT", "9001")
    s = load_settings(path, {"port": 9002})
    assert s.defaults.conf == 0.35  # environment beats the file
    assert s.port == 9002  # explicit values beat the environment
    assert s.defaults.quality == 70  # the file beats the defaults
    assert [c.id for c in s.cameras] == ["front", "garage"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param("conf = 2.0\n", "less than or equal to 1", id="range"),
        pytest.param("colour = 'red'\n", "Extra inputs are not permitted", id="unknown-key"),
        pytest.param(
            "imgsz = 100\n", "expected imgsz to be a multiple of 32 from 32 to 1280, got 100", id="imgsz"
        ),
        pytest.param("[viewers]\nconf = 0.3\n", "Extra inputs are not permitted", id="wrong-section"),
        pytest.param(
            "[[cameras]]\nid='a'\nurl='http://h/s'\n[[cameras]]\nid='a'\nurl='http://h/t'\n",
            "expected unique camera ids, got 'a' twice",
            id="duplicate-id",
        ),
        pytest.param(
            "[[cameras]]\nid='a b'\nurl='http://h/s'\n", "String should match pattern", id="camera-id"
        ),
        pytest.param("[[cameras]]\nid='a'\nurl='http://h/s'\nfps=3\n", "Extra inputs", id="camera-key"),
    ],
)
def test_invalid_toml_values(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(content)
    with pytest.raises(ValidationError, match=message):
        load_settings(path)


def test_unreadable_config_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="missing path"):
        load_settings(tmp_path / "nope.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("conf = = 1\n")
    with pytest.raises(ConfigurationError, match="expected valid TOML"):
        load_settings(broken)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("auto", "auto"), (1, 1), ("4", 4), (" 2 ", 2)],
)
def test_skip_values(value: object, expected: object) -> None:
    assert CameraOptions.model_validate({"skip": value}).skip == expected


@pytest.mark.parametrize("value", [0, -1, True, 1.5, "x", None, 10_001])
def test_bad_skip_values(value: object) -> None:
    with pytest.raises(ValidationError, match="expected skip to be an integer from 1 to 10000 or 'auto'"):
        CameraOptions.model_validate({"skip": value})


def test_cameras_take_what_they_do_not_set_from_the_defaults() -> None:
    s = load_settings(
        None,
        dict(
            conf=0.3, quality=70, cameras=[CameraConfig(id="a", url="http://h/s", conf=0.5), "b=http://h/t"]
        ),
    )
    a, b = s.camera_settings()
    assert (a.conf, a.quality, b.conf, b.quality) == (0.5, 70, 0.3, 70)
    assert a.options == CameraOptions(conf=0.5, quality=70)


def test_camera_config_rejects_out_of_range_overrides() -> None:
    with pytest.raises(ValidationError, match="less than or equal to 100"):
        CameraConfig(id="a", url="http://h/stream", quality=101)


def test_motion_settings_from_toml_and_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    toml = tmp_path / "espdetect.toml"
    toml.write_text(
        """
[defaults]
motion_threshold = 30
keepalive = 60

[[cameras]]
id = "door"
url = "http://192.168.1.50:81/stream"
motion_masks = [[[0, 0], [0.4, 0], [0.4, 0.08], [0, 0.08]]]
tracking = false
"""
    )
    # Masks as JSON text, as a container's environment gives them.
    monkeypatch.setenv("ESPDETECT_MOTION_MASKS", "[[[0.9, 0.9], [1, 0.9], [1, 1]]]")
    monkeypatch.setenv("ESPDETECT_MOTION", "false")
    s = load_settings(toml)
    (door,) = s.camera_settings()
    assert (door.motion, door.motion_threshold, door.keepalive, door.tracking) == (False, 30, 60.0, False)
    assert door.motion_masks == [[[0.0, 0.0], [0.4, 0.0], [0.4, 0.08], [0.0, 0.08]]]
    assert s.defaults.motion_masks == [[[0.9, 0.9], [1.0, 0.9], [1.0, 1.0]]]


def test_motion_and_tracking_are_on_by_default_in_the_server() -> None:
    options = CameraOptions()
    assert (options.motion, options.tracking, options.keepalive, options.motion_masks) == (
        True,
        True,
        30.0,
        [],
    )


@pytest.mark.parametrize(
    ("values", "message"),
    [
        pytest.param({"motion_threshold": 0}, "greater than or equal to 1", id="threshold"),
        pytest.param({"motion_min_area": 1.5}, "less than or equal to 1", id="area"),
        pytest.param({"keepalive": 0.1}, "greater than or equal to 0.5", id="keepalive"),
        pytest.param(
            {"motion_masks": [[[0, 0], [1, 1]]]}, r"three or more \[x, y\] points", id="mask-two-points"
        ),
        pytest.param({"motion_masks": [[[0, 0], [2, 0], [0, 1]]]}, "from 0 to 1, got 2", id="mask-range"),
        pytest.param({"motion_masks": "[[["}, "expected motion_masks as JSON polygons", id="mask-json"),
    ],
)
def test_bad_motion_settings_are_refused(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        CameraOptions.model_validate(values)


def test_an_empty_variable_is_an_unset_one(monkeypatch: pytest.MonkeyPatch) -> None:
    # Compose files pass optional secrets as ``${HASH:-}``: empty must not be a bad hash.
    monkeypatch.setenv("ESPDETECT_AUTH_PASSWORD_HASH", "")
    monkeypatch.setenv("ESPDETECT_CONF", "  ")
    settings = load_settings(None, {"cameras": ["http://192.168.4.1:81/stream"]})
    assert settings.auth.auth_password_hash is None and settings.defaults.conf == 0.25
