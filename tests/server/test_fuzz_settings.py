"""Property-based tests of the settings API (and the other request bodies) against the real app.

Whatever a client sends, the answer is 200 or a 4xx with a clear message, never a 500, and a
refused change leaves the settings exactly as they were.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from espdetect.exceptions import ConfigurationError
from espdetect.server.settings import CameraConfig, ServerSettings, load_settings

from .conftest import BoxDetector, ServerThread

FIELDS = ["conf", "iou", "classes", "skip", "quality", "imgsz", "stale"]

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["auto", "raw", "draw_last", "3", " 2 ", "0.5", "1e3", "", "null"]),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
# Values near the edges of every field's range, so accepted patches are drawn often too.
plausible = st.one_of(
    st.floats(min_value=-0.5, max_value=1.5),
    st.integers(min_value=-5, max_value=1400),
    st.sampled_from([0, 1, 32, 320, 640, 1280, 1312, 100, 101, "auto", "raw", "draw_last"]),
    st.lists(st.integers(min_value=-2, max_value=5), max_size=6),
)
# Per field: mostly valid values, some just outside the range.
FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "conf": st.floats(min_value=-0.01, max_value=1.01),
    "iou": st.floats(min_value=0.0, max_value=1.0) | st.integers(0, 1),
    "classes": st.none() | st.lists(st.integers(-1, 3), max_size=4),
    "skip": st.integers(0, 12) | st.sampled_from(["auto", "2", " 5 "]),
    "quality": st.integers(0, 101),
    "imgsz": st.integers(1, 40).map(lambda n: n * 32) | st.integers(0, 1400),
    "stale": st.sampled_from(["draw_last", "raw", "RAW", "stale"]),
}
field_patches = st.lists(st.sampled_from(FIELDS), unique=True, max_size=4).flatmap(
    lambda keys: st.fixed_dictionaries({k: FIELD_VALUES[k] for k in keys})
)
patches = field_patches | st.dictionaries(
    st.one_of(st.sampled_from(FIELDS), st.sampled_from(["url", "colour", "id", ""]), st.text(max_size=10)),
    st.one_of(plausible, json_values),
    max_size=4,
)


def _no_camera(server: ServerSettings, camera: CameraConfig) -> Any:
    raise AssertionError("no test here opens a camera")


@pytest.fixture(scope="module")
def api() -> Iterator[httpx.Client]:
    """One real server for the whole module (hypothesis runs hundreds of requests against it)."""
    app_settings = load_settings(
        None,
        dict(
            cameras=[CameraConfig(id="cam", url="http://127.0.0.1:9/stream")],
            camera_control="on",
            max_body_size=64 * 1024,
        ),
    )
    server = ServerThread(app_settings, detector_factory=lambda s: BoxDetector(), source_factory=_no_camera)
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=10.0) as client:
            yield client
    finally:
        server.stop()


def _expected(key: str, value: Any) -> Any:
    # The API is strict: JSON's own types only ("2" is not 2, true is not 1; an integer is a number).
    assert not isinstance(value, bool), (key, value)
    if key in ("conf", "iou"):
        return float(value)
    return value


def _check_error(response: Any) -> None:
    detail = response.json()["detail"]
    assert isinstance(detail, list) and detail, detail
    for error in detail:
        assert isinstance(error["msg"], str) and error["msg"].strip(), error
        assert isinstance(error["loc"], list), error


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(patch=patches)
def test_any_settings_patch_is_applied_or_refused_cleanly(api: httpx.Client, patch: dict[str, Any]) -> None:
    before = api.get("/cameras/cam/settings").json()
    response = api.patch(
        "/cameras/cam/settings",
        content=json.dumps(patch, allow_nan=True),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code in (200, 422), (patch, response.status_code, response.text)
    event(f"HTTP {response.status_code}")
    after = api.get("/cameras/cam/settings").json()
    if response.status_code == 422:
        _check_error(response)
        assert after == before
        return
    assert response.json() == after
    assert set(patch) <= set(FIELDS)
    for key, value in patch.items():
        assert after[key] == _expected(key, value), (key, value, after[key])
    assert 0.0 <= after["conf"] <= 1.0 and math.isfinite(after["conf"])
    assert after["imgsz"] % 32 == 0


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.one_of(st.binary(max_size=200), json_values.map(lambda v: json.dumps(v).encode())))
def test_any_body_bytes_are_refused_without_a_crash(api: httpx.Client, body: bytes) -> None:
    before = api.get("/cameras/cam/settings").json()
    response = api.patch("/cameras/cam/settings", content=body, headers={"Content-Type": "application/json"})
    # 400: bytes that are not text at all (FastAPI: "There was an error parsing the body").
    assert response.status_code in (200, 400, 422), (body, response.status_code)
    if response.status_code == 422:
        _check_error(response)
    if response.status_code != 200:
        assert api.get("/cameras/cam/settings").json() == before


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(camera_id=st.text(min_size=1, max_size=80), tail=st.sampled_from(["settings", "snapshot", "control"]))
def test_any_camera_id_is_refused_cleanly(api: httpx.Client, camera_id: str, tail: str) -> None:
    path = f"/cameras/{quote(camera_id, safe='')}/{tail}"
    if tail == "control":
        response = api.post(path, json={"var": "framesize", "val": 8})
    elif tail == "settings":
        response = api.patch(path, json={"conf": 0.5})
    else:
        response = api.get(path)
    if camera_id == "cam":
        return
    assert response.status_code in (404, 405, 422), (camera_id, response.status_code)
    if response.status_code == 404 and "detail" in response.json() and "configured" in str(response.json()):
        assert "expected one of the configured cameras ['cam']" in response.json()["detail"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.dictionaries(
        st.sampled_from(["var", "val", "url", "host"]),
        st.one_of(
            st.sampled_from(["framesize", "quality", "xclk", "reg", "led_intensity"]), plausible, json_values
        ),
        max_size=3,
    )
)
def test_any_control_body_is_validated_before_the_camera_is_asked(
    api: httpx.Client, body: dict[str, Any]
) -> None:
    # Raw JSON text: NaN/Infinity must reach the server (httpx's json= would refuse to encode them).
    response = api.post(
        "/cameras/cam/control",
        content=json.dumps(body, allow_nan=True),
        headers={"Content-Type": "application/json"},
    )
    # 502: valid, forwarded to the configured (here absent) camera; never anything else.
    assert response.status_code in (422, 502), (body, response.status_code, response.text)
    if response.status_code == 422:
        _check_error(response)
    else:
        assert set(body) == {"var", "val"} and isinstance(body["val"], int)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=st.dictionaries(st.sampled_from(sorted(ServerSettings.model_fields)), json_values, max_size=4))
def test_any_server_configuration_is_accepted_or_explained(values: dict[str, Any]) -> None:
    try:
        ServerSettings(**values)
    except (ValidationError, ConfigurationError) as exc:
        assert str(exc).strip()
