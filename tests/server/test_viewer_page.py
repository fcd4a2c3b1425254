"""The viewer page (espdetect/server/static/index.html) in a real headless Chromium."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from .conftest import SHOWS_FRAMES, ServerThread, camera_stats, viewer_total, wait_until

pytestmark = pytest.mark.browser

_SET_VISIBILITY = """(state) => {
    Object.defineProperty(document, 'visibilityState', {value: state, configurable: true});
    document.dispatchEvent(new Event('visibilitychange'));
}"""


def test_page_shows_frames_and_stats_and_releases_the_stream(
    server: ServerThread, client: httpx.Client, page: Any
) -> None:
    page.goto(f"{server.url}/")
    page.wait_for_function(SHOWS_FRAMES, timeout=20_000)
    page.wait_for_function("() => Number(document.getElementById('stats').dataset.updates || 0) >= 1")
    assert "fps in / detect / out" in page.inner_text("#stats")
    # The photo scene moves: the page says the model is running (an idle camera says so instead).
    page.wait_for_function("() => document.getElementById('stats').innerText.includes('detecting')")
    assert "motion / model calls saved" in page.inner_text("#stats")
    assert page.input_value("#camera") == "cam"
    wait_until(lambda: camera_stats(client)["viewers"]["annotated"] == 1, what="the page's viewer")

    # Hidden tab: the stream is released; shown again: it comes back.
    page.evaluate(_SET_VISIBILITY, "hidden")
    wait_until(lambda: viewer_total(client) == 0, what="stream released while hidden")
    page.evaluate(_SET_VISIBILITY, "visible")
    page.wait_for_function(SHOWS_FRAMES, timeout=20_000)
    wait_until(lambda: camera_stats(client)["viewers"]["annotated"] == 1, what="stream back when shown")

    # Raw / annotated toggle switches streams without leaving the old one open.
    page.check("input[name=mode][value=raw]")
    wait_until(
        lambda: camera_stats(client)["viewers"] == {"raw": 1, "annotated": 0, "sse": 0},
        what="raw stream only",
    )
    page.wait_for_function(SHOWS_FRAMES, timeout=20_000)

    # The confidence slider and skip selector PATCH the camera's settings.
    page.eval_on_selector(
        "#conf", "(el) => { el.value = '0.6'; el.dispatchEvent(new Event('change', {bubbles: true})); }"
    )
    wait_until(lambda: client.get("/cameras/cam/settings").json()["conf"] == 0.6, what="conf PATCH")
    page.select_option("#skip", "3")
    wait_until(lambda: client.get("/cameras/cam/settings").json()["skip"] == 3, what="skip PATCH")
    assert page.inner_text("#error") == ""

    # Leaving the page closes its stream.
    page.goto("about:blank")
    wait_until(lambda: viewer_total(client) == 0, what="stream released after leaving")


def test_closing_the_page_releases_the_stream(server: ServerThread, client: httpx.Client, page: Any) -> None:
    page.goto(f"{server.url}/?mode=raw")
    page.wait_for_function(SHOWS_FRAMES, timeout=20_000)
    wait_until(lambda: camera_stats(client)["viewers"]["raw"] == 1, what="the page's raw viewer")
    page.close()
    wait_until(lambda: viewer_total(client) == 0, what="stream released after closing")
