from __future__ import annotations

import json

import pytest

from espdetect.emulator.sensor import CONTROL_VARIABLES_BY_FIRMWARE as CONTROL_VARIABLES
from espdetect.emulator.sensor import Sensor


def test_status_json_is_one_line_without_spaces() -> None:
    sensor = Sensor("2.x", (320, 240), 10)
    text = sensor.status_json()
    assert text.startswith('{"0xd3":') and text.endswith("}")
    assert " " not in text
    assert json.loads(text) == sensor.status()


def test_legacy_status_has_vflip_and_no_pixformat() -> None:
    status = Sensor("legacy", (320, 240), 10).status()
    assert "vflip" in status and "pixformat" not in status and "xclk" not in status
    assert list(status)[:2] == ["framesize", "quality"]
    assert "vflip" not in Sensor("3.x", (320, 240), 10).status()


@pytest.mark.parametrize(
    ("variable", "value", "accepted"),
    [
        pytest.param("quality", 63, True, id="quality-max"),
        pytest.param("quality", 64, False, id="quality-over"),
        pytest.param("brightness", -2, True, id="brightness-min"),
        pytest.param("brightness", 3, False, id="brightness-over"),
        pytest.param("special_effect", 6, True, id="effect"),
        pytest.param("wb_mode", 5, False, id="wb-mode-over"),
        pytest.param("awb", 0, True, id="awb"),
        pytest.param("vflip", 1, True, id="vflip"),
        pytest.param("sharpness", 1, False, id="sharpness-not-a-control"),
        pytest.param("framesize", 13, True, id="uxga"),
        pytest.param("framesize", 14, False, id="beyond-uxga"),
    ],
)
def test_control_ranges(variable: str, value: int, accepted: bool) -> None:
    sensor = Sensor("2.x", (320, 240), 12)
    assert sensor.set(variable, value) is accepted
    if accepted and variable != "framesize":
        assert sensor.values[variable] == value


def test_framesize_changes_size_and_view() -> None:
    sensor = Sensor("3.x", (320, 240), 12)
    assert sensor.framesize == 6
    assert sensor.set("framesize", 10)
    assert sensor.size == (640, 480) and sensor.view.size == (640, 480)
    assert sensor.status()["framesize"] == 10


def test_odd_size_reports_nearest_framesize() -> None:
    sensor = Sensor("2.x", (330, 250), 12)
    assert sensor.size == (330, 250) and sensor.status()["framesize"] == 5


def test_generation_specific_variables() -> None:
    assert "face_enroll" in CONTROL_VARIABLES["legacy"] and "led_intensity" not in CONTROL_VARIABLES["legacy"]
    assert "face_detect" in CONTROL_VARIABLES["2.x"] and "led_intensity" in CONTROL_VARIABLES["2.x"]
    assert "face_detect" not in CONTROL_VARIABLES["3.x"]
    assert not Sensor("3.x", (320, 240), 12).set("face_detect", 1)
