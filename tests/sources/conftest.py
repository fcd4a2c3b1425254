"""Fixtures for the source tests: JPEG samples and servers running in a thread."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from ._servers import ScriptedServer, ScriptFactory, ThreadedServer, make_jpeg


@pytest.fixture
def jpegs() -> list[bytes]:
    return [make_jpeg(i) for i in range(12)]


@pytest.fixture
def threaded_server() -> Iterator[Callable[[ScriptFactory], ScriptedServer]]:
    started: list[ThreadedServer] = []

    def start(make_scripts: ScriptFactory) -> ScriptedServer:
        ts = ThreadedServer(make_scripts)
        started.append(ts)
        return ts.server

    yield start
    for ts in started:
        ts.close()
