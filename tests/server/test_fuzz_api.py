"""Schemathesis fuzzes every finite operation of the server's OpenAPI schema over a real socket.

Whatever a client sends, inside the schema (positive) or outside it (negative), every answer
must be: no 5xx; a status code the schema documents; a content type and body that match what
it documents; and a refusal (4xx) for data the schema rules out. The schema is the one the
running server serves at ``/openapi.json``, plus `UNDECLARED_RESPONSES`: answers the server
gives on purpose that its routes do not declare yet (each says why).

Two servers are fuzzed: an open one (``camera_control = "on"``, so the control pass-through is
reached) and one with authentication, where every request carries a valid bearer token so the
fuzzer reaches the handlers rather than the 401. Both watch a real emulated camera (firmware
3.x, which accepts every value the control endpoint lets through). Requests go to the real
base URL, so ``Host`` is ``127.0.0.1:PORT``; no header is fuzzed (the schema declares none).

Examples per operation: 100 by default (CI), or ``ESPDETECT_FUZZ_EXAMPLES`` for the issue's
target, "no 5xx and no schema violation in 1,000 examples per operation":

    ESPDETECT_FUZZ_EXAMPLES=1000 python -m pytest tests/server/test_fuzz_api.py

Runs are derandomized (the same examples on every run), so a failure in CI reproduces here;
Schemathesis prints a curl command for it.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, get_type_hints

import httpx
import numpy as np
import pytest
import simplejpeg
from fastapi.routing import APIRoute
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from espdetect.emulator import EmulatorConfig, EmulatorThread
from espdetect.event_store import EventStore
from espdetect.events import Event, EventUpdate
from espdetect.server import auth, control, event_routes, routes
from espdetect.server.app import create_app
from espdetect.server.passwords import hash_token
from espdetect.server.settings import CameraConfig, ServerSettings
from espdetect.server.streaming import ViewerStream

from .conftest import BoxDetector, ServerThread

pytest.importorskip("schemathesis", reason="the API fuzzer needs schemathesis: pip install 'espdetect[test]'")

import requests
import schemathesis
from schemathesis import Case, GenerationMode

EXAMPLES = int(os.environ.get("ESPDETECT_FUZZ_EXAMPLES", "100"))
TOKEN = "fuzz-token"
CAMERA = "cam"

#: Endless responses (MJPEG, server-sent events): a fuzzer would wait for a body that never
#: ends. test_streaming.py and test_security.py cover them.
STREAMING = frozenset(
    {
        ("GET", "/cameras/{camera_id}/stream"),
        ("GET", "/cameras/{camera_id}/detect"),
        ("GET", "/cameras/{camera_id}/detections"),
        ("GET", "/stream"),
        ("GET", "/stream/detect"),
        ("GET", "/events/live"),
    }
)

_CAMERA_OPERATIONS = [
    ("GET", "/cameras/{camera_id}/snapshot"),
    ("GET", "/cameras/{camera_id}/settings"),
    ("PATCH", "/cameras/{camera_id}/settings"),
    ("POST", "/cameras/{camera_id}/control"),
    ("GET", "/cameras/{camera_id}/status"),
]
_BODY_OPERATIONS = [("PATCH", "/cameras/{camera_id}/settings"), ("POST", "/cameras/{camera_id}/control")]

#: Answers the server gives on purpose that the routes do not declare (yet): (status, why,
#: operations). They are added to the served schema where it says nothing about that status,
#: so their bodies are still checked; once a route declares one, the route's declaration is.
UNDECLARED_RESPONSES: list[tuple[str, str, list[tuple[str, str]]]] = [
    # UnknownCamera: an id that matches the pattern but is not configured.
    ("404", "no configured camera has this id", _CAMERA_OPERATIONS),
    # FastAPI's own answer to a body it cannot decode at all (bytes that are not UTF-8 text).
    ("400", "the body is not text", _BODY_OPERATIONS),
]

_ERROR_BODY = {
    "application/json": {
        "schema": {"type": "object", "required": ["detail"], "properties": {"detail": {"type": "string"}}}
    }
}

#: Schemathesis configuration, as a schemathesis.toml would say it. Every built-in check runs
#: but ``positive_data_acceptance`` (whatever the schema allows gets a 2xx): the schema allows
#: more than the server takes, and the server's 422s for it are right. It declares every
#: settings field nullable (only ``classes`` may be null), control values without their
#: variable's range, motion masks of any size and range, and integers as JSON Schema integers,
#: which take 3.0 where the server's strict fields want 3.
CONFIG: dict[str, Any] = {"checks": {"positive_data_acceptance": {"enabled": False}}}


APP = create_app(ServerSettings(cameras=[CameraConfig(id=CAMERA, url="http://127.0.0.1:9/stream")]))
_PATHS: dict[str, dict[str, Any]] = APP.openapi()["paths"]
#: (method, path) of every operation in the schema.
SERVED = [(method.upper(), path) for path, operations in _PATHS.items() for method in operations]
OPERATIONS = [op for op in SERVED if op not in STREAMING]


def _documented(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with `UNDECLARED_RESPONSES` added where it is silent about them (in place)."""
    for status, description, operations in UNDECLARED_RESPONSES:
        for method, path in operations:
            responses = schema["paths"][path][method.lower()]["responses"]
            responses.setdefault(status, {"description": description, "content": _ERROR_BODY})
    return schema


#: Finished events stored before the server starts: some for GETs, others for DELETE to remove.
#: An hour old: recent enough for retention to keep them.
_HOUR_AGO = int(time.time()) - 3600
KEPT = [f"{_HOUR_AGO}.{i:06d}-{CAMERA}-kept" for i in range(5)]
DELETABLE = [f"{_HOUR_AGO + 100}.{i:06d}-{CAMERA}-gone" for i in range(200)]


def _stored_events(data_dir: Path) -> Path:
    """``data_dir`` with the `KEPT` and `DELETABLE` events stored, each with a picture."""
    picture = simplejpeg.encode_jpeg(np.full((48, 64, 3), 128, np.uint8), colorspace="BGR")
    with EventStore(data_dir) as store:
        for event_id in KEPT + DELETABLE:
            start = float(event_id.split("-")[0])
            event = Event(
                id=event_id,
                camera=CAMERA,
                label="person",
                score=0.8,
                box=(8.0, 8.0, 40.0, 44.0),
                frame_size=(64, 48),
                start_time=start,
                best_time=start,
                group_id=event_id,
                snapshot=picture,
            )
            store.apply(EventUpdate("start", event))
            store.apply(EventUpdate("end", replace(event, end_time=start + 2.0)))
    return data_dir


@dataclass
class Target:
    """A running server, its schema as Schemathesis loaded it, and what every request carries."""

    server: ServerThread
    schema: schemathesis.BaseSchema
    headers: dict[str, str]


@pytest.fixture(scope="module")
def camera() -> Iterator[EmulatorThread]:
    # 3.x takes every value the server's ControlRequest lets through, so a 502 (the camera
    # refused) would be a finding rather than an answer to expect.
    with EmulatorThread(EmulatorConfig(fps=10.0, size=(320, 240), loop_frames=8, firmware="3.x")) as cam:
        yield cam


@pytest.fixture(scope="module", params=["open", "auth"])
def target(
    request: pytest.FixtureRequest, camera: EmulatorThread, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Target]:
    # Events on (the stand-in detector's person makes some), so their routes answer for real.
    values: dict[str, Any] = {
        "cameras": [{"id": CAMERA, "url": camera.stream_url, "control_url": camera.control_url}],
        "grace_period": 0.3,
        "events": True,
        "min_frames": 1,
        "data_dir": _stored_events(tmp_path_factory.mktemp("data")),
    }
    headers: dict[str, str] = {}
    if request.param == "auth":
        values["auth_token_hash"] = hash_token(TOKEN)
        headers["Authorization"] = f"Bearer {TOKEN}"
    else:
        values["camera_control"] = "on"
    server = ServerThread(ServerSettings(**values), detector_factory=lambda _: BoxDetector()).start()
    try:
        served = httpx.get(f"{server.url}/openapi.json", headers=headers, timeout=10.0)
        served.raise_for_status()
        config = schemathesis.Config.from_dict(CONFIG)
        yield Target(
            server, schemathesis.openapi.from_dict(_documented(served.json()), config=config), headers
        )
    finally:
        server.stop()


def test_every_operation_but_the_streams_is_fuzzed() -> None:
    # A new or renamed stream route must not slip into the fuzzed list (and hang the fuzzer).
    routers = [routes.router, event_routes.router, control.router, auth.session_router, auth.login_router]
    streams = {
        (method, route.path)
        for route in (route for router in routers for route in router.routes)
        if isinstance(route, APIRoute) and get_type_hints(route.endpoint).get("return") is ViewerStream
        for method in route.methods or ()
    }
    assert streams == STREAMING
    assert set(SERVED) >= STREAMING
    assert ("PATCH", "/cameras/{camera_id}/settings") in OPERATIONS
    assert ("POST", "/cameras/{camera_id}/control") in OPERATIONS
    for _, _, operations in UNDECLARED_RESPONSES:
        assert set(operations) <= set(OPERATIONS)


#: Bodies the server takes, for the operations whose schema is much looser than the server:
#: drawn from the schema alone, nearly every control value is out of its variable's range and
#: nearly every settings patch has a null in it, so the handler would hardly ever run.
ACCEPTED_BODIES: dict[tuple[str, str], st.SearchStrategy[dict[str, Any]]] = {
    ("POST", "/cameras/{camera_id}/control"): st.sampled_from(sorted(control.CONTROL_RANGES)).flatmap(
        lambda var: st.fixed_dictionaries(
            {"var": st.just(var), "val": st.integers(*control.CONTROL_RANGES[var])}
        )
    ),
    ("PATCH", "/cameras/{camera_id}/settings"): st.fixed_dictionaries(
        {},
        optional={
            "conf": st.floats(0.0, 1.0),
            "iou": st.floats(0.0, 1.0),
            "classes": st.none() | st.lists(st.integers(0, 2), min_size=1, max_size=3),
            "skip": st.integers(1, 10) | st.just("auto"),
            "quality": st.integers(1, 100),
            "imgsz": st.integers(1, 20).map(lambda n: n * 32),
            "stale": st.sampled_from(["draw_last", "raw"]),
            "motion": st.booleans(),
            "motion_threshold": st.integers(1, 255),
            "motion_min_area": st.floats(0.0, 1.0),
            "keepalive": st.floats(0.5, 60.0),
            "tracking": st.booleans(),
        },
    ),
}


# Schemathesis never generates lone UTF-16 surrogates (UTF-8 cannot encode them), but JSON's
# "\ud800" escape carries one to the server all the same, into keys and values alike.
_SURROGATES = st.text(st.characters(categories=["Cs"]), min_size=1, max_size=2)
_FIELD_NAMES = st.sampled_from(["conf", "skip", "classes", "stale", "motion_masks", "var", "val"])
SURROGATE_BODIES = st.dictionaries(
    _FIELD_NAMES | _SURROGATES,
    _SURROGATES | st.lists(_SURROGATES, max_size=2) | st.integers(0, 5),
    min_size=1,
    max_size=3,
)


def _cases(target: Target, method: str, path: str) -> st.SearchStrategy[Case[Any]]:
    operation = target.schema[path][method]
    modes = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
    strategies = [operation.as_strategy(mode) for mode in modes]
    if "{event_id}" in path:
        # Likewise for events: half of the examples name stored ones (deleting a kept one is left
        # to DELETE's own pool, so that GETs still find theirs).
        pool = DELETABLE if method == "DELETE" else KEPT
        for mode in modes:

            def naming(event_id: str, mode: GenerationMode = mode) -> st.SearchStrategy[Case[Any]]:
                return operation.as_strategy(mode, path_parameters={"event_id": event_id})

            strategies.append(st.sampled_from(pool).flatmap(naming))
    if "{camera_id}" in path:
        # A generated id is almost never the configured one, and an unknown id is answered
        # before any handler runs: half of the examples name the real camera.
        fixed = {"camera_id": CAMERA}
        strategies += [operation.as_strategy(mode, path_parameters=fixed) for mode in modes]
        bodies = (
            [ACCEPTED_BODIES[(method, path)], SURROGATE_BODIES] if (method, path) in ACCEPTED_BODIES else []
        )
        strategies += [
            drawn.flatmap(lambda body: operation.as_strategy(path_parameters=fixed, body=body))
            for drawn in bodies
        ]
    return st.one_of(strategies)


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_no_server_error_and_no_schema_violation(target: Target, method: str, path: str) -> None:
    statuses: Counter[int] = Counter()
    session = requests.Session()
    session.headers.update(target.headers)

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        # Each example is a real request (slow by Hypothesis' measure), and operations without
        # parameters have a single possible example.
        suppress_health_check=list(HealthCheck),
    )
    @given(case=_cases(target, method, path))
    def fuzz(case: Case[Any]) -> None:
        response = case.call(base_url=target.server.url, session=session, timeout=30)
        statuses[response.status_code] += 1
        case.validate_response(response, headers=target.headers)

    with session:
        fuzz()
    # Not only refusals: the fuzzer got through to the handler.
    assert any(200 <= status < 300 for status in statuses), statuses
