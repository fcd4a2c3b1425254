"""Strict request bodies, and error answers that are valid JSON whatever a client sent."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from espdetect.constraints import SKIP
from espdetect.emulator import EmulatorThread
from espdetect.server.settings import ServerSettings

from .conftest import ServerThread

SETTINGS = "/cameras/cam/settings"
CONTROL = "/cameras/cam/control"
JSON = {"Content-Type": "application/json"}


def _valid_json(response: httpx.Response) -> Any:
    """The body, checked to be UTF-8 JSON without lone surrogates (strict parsers refuse them)."""
    text = response.content.decode("utf-8")  # raises on anything that is not UTF-8
    body = json.loads(text)
    json.dumps(body, ensure_ascii=False).encode("utf-8")  # raises on a lone surrogate
    return body


@pytest.fixture
def controlled(make_server: Callable[..., ServerThread], emulator: EmulatorThread) -> ServerThread:
    cameras = [{"id": "cam", "url": emulator.stream_url, "control_url": emulator.control_url}]
    return make_server(cameras=cameras, camera_control="on")


# Raw bytes: "\ud800" is a JSON escape of a lone UTF-16 surrogate (valid JSON, no valid text).
SURROGATE_BODIES = [
    pytest.param(SETTINGS, rb'{"stale": "\ud800"}', id="settings-value"),
    pytest.param(SETTINGS, rb'{"\ud800": 1}', id="settings-key"),
    pytest.param(SETTINGS, rb'{"\udfff\ud800x": "\ud800"}', id="settings-key-and-value"),
    pytest.param(SETTINGS, rb'{"skip": "\ud800"}', id="settings-message"),
    pytest.param(SETTINGS, rb'{"classes": ["\ud800"]}', id="settings-nested"),
    pytest.param(SETTINGS, rb'{"motion_masks": [[["\ud800", 0]]]}', id="settings-masks"),
    pytest.param(SETTINGS, rb'{"conf": {"\ud800": "\udc00"}}', id="settings-object"),
    pytest.param(SETTINGS, rb'["\ud800"]', id="settings-list"),
    pytest.param(SETTINGS, rb'"\ud800"', id="settings-string"),
    pytest.param(CONTROL, rb'{"var": "\ud800", "val": 1}', id="control-variable"),
    pytest.param(CONTROL, rb'{"\ud800": 1, "var": "framesize", "val": 8}', id="control-key"),
    pytest.param(CONTROL, rb'{"var": "framesize", "val": "\ud800"}', id="control-value"),
]


@pytest.mark.parametrize(("path", "body"), SURROGATE_BODIES)
def test_lone_surrogates_get_a_valid_json_error(controlled: ServerThread, path: str, body: bytes) -> None:
    with httpx.Client(base_url=controlled.url, timeout=10.0) as client:
        before = client.get(SETTINGS).json()
        method = "PATCH" if path == SETTINGS else "POST"
        response = client.request(method, path, content=body, headers=JSON)
        assert response.status_code == 422, (response.status_code, response.text)
        detail = _valid_json(response)["detail"]
        assert isinstance(detail, list) and detail
        for error in detail:
            assert isinstance(error["msg"], str) and error["msg"]
            assert error["loc"][0] == "body", error
        assert client.get(SETTINGS).json() == before


def test_a_surrogate_comes_back_as_its_escape(server: ServerThread, client: httpx.Client) -> None:
    response = client.patch(SETTINGS, content=rb'{"\ud800": 1}', headers=JSON)
    (error,) = _valid_json(response)["detail"]
    assert "\\ud800" in json.dumps(error, ensure_ascii=False)


@pytest.mark.parametrize(
    "body",
    [
        b'{"conf": NaN}',
        b'{"conf": Infinity, "iou": -Infinity}',
        b'{"skip": ' + b"9" * 5000 + b"}",  # past Python's digit limit for int <-> str
        b'{"skip": ' + str(2**300).encode() + b"}",
        b'{"classes": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        b'{"motion_masks": ' + b"[" * 100 + b"]" * 100 + b"}",
        b'{"conf": "' + b"x" * 10_000 + b'"}',
        b"\xff\xfe{}",
        b'{"conf": 0.3',
    ],
    ids=["nan", "infinity", "digits", "huge-int", "deep", "nested", "long", "not-utf8", "truncated"],
)
def test_hostile_bodies_never_get_a_server_error(
    server: ServerThread, client: httpx.Client, body: bytes
) -> None:
    before = client.get(SETTINGS).json()
    response = client.patch(SETTINGS, content=body, headers=JSON)
    assert response.status_code in (400, 422), (response.status_code, response.text[:300])
    assert "detail" in _valid_json(response)
    assert len(response.content) < 4096  # inputs are echoed only when short
    assert client.get(SETTINGS).json() == before


# -- strict types -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"conf": True}, "conf"),
        ({"iou": "0.5"}, "iou"),
        ({"skip": "3"}, "skip"),
        ({"skip": 3.0}, "skip"),
        ({"skip": True}, "skip"),
        ({"skip": 2**63}, "skip"),
        ({"skip": SKIP.high + 1}, "skip"),
        ({"classes": [True]}, "classes"),
        ({"classes": ["0"]}, "classes"),
        ({"classes": "0,2"}, "classes"),
        ({"quality": "80"}, "quality"),
        ({"quality": 80.0}, "quality"),
        ({"imgsz": 320.0}, "imgsz"),
        ({"imgsz": False}, "imgsz"),
        ({"stale": 1}, "stale"),
        ({"stale": True}, "stale"),
        ({"motion": 1}, "motion"),
        ({"tracking": "true"}, "tracking"),
        ({"motion_threshold": "25"}, "motion_threshold"),
        ({"motion_min_area": False}, "motion_min_area"),
        ({"motion_masks": "[[[0, 0], [1, 0], [1, 1]]]"}, "motion_masks"),
        ({"motion_masks": [[[0, 0], [1, 0], [1, True]]]}, "motion_masks"),
        ({"keepalive": "30"}, "keepalive"),
    ],
)
def test_lax_types_are_refused_naming_the_field(
    server: ServerThread, client: httpx.Client, patch: dict[str, Any], field: str
) -> None:
    before = client.get(SETTINGS).json()
    response = client.patch(SETTINGS, json=patch)
    assert response.status_code == 422, (patch, response.text)
    (error,) = _valid_json(response)["detail"]
    assert error["loc"][:2] == ["body", field], error
    assert client.get(SETTINGS).json() == before


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        ({"conf": 1}, {"conf": 1.0}),  # an integer is a number
        ({"conf": 0.35, "iou": 0}, {"conf": 0.35, "iou": 0.0}),
        ({"skip": 3}, {"skip": 3}),
        ({"skip": SKIP.high}, {"skip": SKIP.high}),
        ({"skip": "auto"}, {"skip": "auto"}),
        ({"classes": [2, 0]}, {"classes": [2, 0]}),
        ({"classes": None}, {"classes": None}),
        ({"stale": "raw"}, {"stale": "raw"}),
        ({"quality": 55, "imgsz": 320}, {"quality": 55, "imgsz": 320}),
        ({"motion": False, "tracking": False}, {"motion": False, "tracking": False}),
        (
            {"motion_masks": [[[0, 0], [1, 0], [0.5, 1]]]},
            {"motion_masks": [[[0.0, 0.0], [1.0, 0.0], [0.5, 1.0]]]},
        ),
        ({"keepalive": 5, "motion_min_area": 0}, {"keepalive": 5.0, "motion_min_area": 0.0}),
    ],
)
def test_valid_patches_are_applied(
    server: ServerThread, client: httpx.Client, patch: dict[str, Any], expected: dict[str, Any]
) -> None:
    response = client.patch(SETTINGS, json=patch)
    assert response.status_code == 200, response.text
    body = response.json()
    assert {key: body[key] for key in expected} == expected


@pytest.mark.parametrize(
    "body",
    [
        {"var": "framesize", "val": "8"},
        {"var": "framesize", "val": True},
        {"var": "framesize", "val": 8.0},
        {"var": "framesize", "val": 2**63},
        {"var": 8, "val": 8},
    ],
)
def test_control_values_are_strict(controlled: ServerThread, body: dict[str, Any]) -> None:
    with httpx.Client(base_url=controlled.url, timeout=10.0) as client:
        response = client.post(CONTROL, json=body)
        assert response.status_code == 422, response.text
        assert _valid_json(response)["detail"]
        assert client.post(CONTROL, json={"var": "framesize", "val": 8}).status_code == 200


def test_the_schema_states_the_bounds(server: ServerThread, client: httpx.Client) -> None:
    schema = client.get("/openapi.json").json()["components"]["schemas"]["SettingsPatch"]["properties"]
    choices = json.dumps(schema["skip"])
    assert f'"maximum": {SKIP.high}' in choices and f'"minimum": {SKIP.low}' in choices


def test_settings_from_text_stay_lax(monkeypatch: pytest.MonkeyPatch) -> None:
    # Environment variables (and flags) are text; only the API is strict.
    for name, value in {
        "SKIP": "3",
        "CONF": "0.4",
        "CLASSES": "0,2",
        "QUALITY": "70",
        "MOTION": "false",
        "MOTION_MASKS": "[[[0, 0], [1, 0], [1, 1]]]",
        "STALE": "raw",
    }.items():
        monkeypatch.setenv(f"ESPDETECT_{name}", value)
    defaults = ServerSettings().defaults
    assert (defaults.skip, defaults.conf, defaults.classes, defaults.quality) == (3, 0.4, [0, 2], 70)
    assert defaults.motion is False and defaults.motion_masks == [[[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]]]
    assert defaults.stale.value == "raw"
