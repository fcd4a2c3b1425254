"""The viewer page (espdetect/server/static/index.html) in a real headless Chromium."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from .conftest import SHOWS_FRAMES, ServerThread, camera_stats, viewer_total, wait_until

pytestmark = pytest.mark.browser

_SET_VISIBILITY = """(state) => {
    Object.defineProperty(document, 'visibilityState', {value: state, configurable: true});
    document.dispatchEvent(new Event('visibilitychange'));
}"""

MakeServer = Callable[..., ServerThread]
#: Quick events: the stand-in detector sees its "person" (score 0.9) in every frame.
QUICK: dict[str, Any] = {"events": True, "min_frames": 2, "end_timeout": 0.5}
#: One zone: the lower half of the frame.
LOWER_HALF = [[[0.0, 0.5], [1.0, 0.5], [1.0, 1.0], [0.0, 1.0]]]

#: True once the event's thumbnail shows a decoded picture.
_THUMB_LOADED = """(id) => {
    const img = document.querySelector(`#events li[data-id="${CSS.escape(id)}"] .thumb img`);
    return !!img && img.complete && img.naturalWidth > 0;
}"""

#: The zone polygons' and the image's on-screen rectangles ([left, top, right, bottom]).
_ZONE_RECTS = """() => {
    const rect = (el) => { const r = el.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
    return {
        image: rect(document.getElementById('stream')),
        zones: [...document.querySelectorAll('#zones polygon')].map(rect),
        points: [...document.querySelectorAll('#zones polygon')].map((p) => p.points.numberOfItems),
    };
}"""

#: True when the one zone covers the lower half of the picture, the picture being the image
#: element's box or, when letterboxed, ``[dx, dy, width, height]`` of it (pixels).
_ZONE_ON_LOWER_HALF = """(content) => {
    const polygons = document.querySelectorAll('#zones polygon');
    const img = document.getElementById('stream');
    if (polygons.length !== 1 || !img) return false;
    const i = img.getBoundingClientRect();
    const [dx, dy, w, h] = content || [0, 0, i.width, i.height];
    const want = [i.left + dx, i.top + dy + h / 2, i.left + dx + w, i.top + dy + h];
    const p = polygons[0].getBoundingClientRect();
    return [p.left, p.top, p.right, p.bottom].every((v, k) => Math.abs(v - want[k]) <= 2);
}"""


def _set_conf(page: Any, value: str) -> None:
    """Move the confidence slider: the page PATCHes its settings and reloads them."""
    page.eval_on_selector(
        "#conf",
        "(el, v) => { el.value = v; el.dispatchEvent(new Event('change', {bubbles: true})); }",
        value,
    )


def _console_errors(page: Any) -> list[str]:
    """A list that collects the page's console errors and uncaught exceptions from now on."""
    errors: list[str] = []
    page.on(
        "console",
        lambda msg: errors.append(f"{msg.text} ({msg.location['url']})") if msg.type == "error" else None,
    )
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return errors


def _event_requests(page: Any) -> list[str]:
    """A list that collects the URLs of the page's requests to /events from now on."""
    urls: list[str] = []
    page.on("request", lambda req: urls.append(req.url) if "/events" in req.url else None)
    return urls


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


def test_events_panel_shows_a_live_event_with_its_picture_and_its_end(
    make_server: MakeServer, page: Any
) -> None:
    # Above the person's 0.9 nothing counts: the page opens on an empty list.
    server = make_server(**QUICK, min_score=0.95)
    errors = _console_errors(page)
    page.goto(f"{server.url}/")
    page.wait_for_selector("#events-panel[data-state=live]")
    assert page.is_visible("#events-empty") and page.locator("#events li").count() == 0
    assert "all cameras" in page.inner_text("#events-panel h2")
    page.evaluate("() => { window.sameDocument = true; }")

    with httpx.Client(base_url=server.url, timeout=10.0) as client:
        assert client.patch("/cameras/cam/settings", json={"min_score": 0.5}).status_code == 200
        page.wait_for_selector("#events li", timeout=15_000)
        event = client.get("/events").json()["events"][0]
        page.wait_for_function(_THUMB_LOADED, arg=event["id"], timeout=15_000)
        entry = page.locator(f'#events li[data-id="{event["id"]}"]')
        assert entry.get_attribute("data-state") == "active"
        assert entry.locator(".label").inner_text() == "person"
        assert entry.locator(".score").inner_text() == "90 %"
        assert entry.locator(".camera").inner_text() == "cam"
        assert entry.locator(".duration").inner_text() == "now"
        assert entry.locator(".start").inner_text() != ""
        assert "crop=true" in (entry.locator(".thumb img").get_attribute("src") or "")
        assert page.evaluate("() => window.sameDocument === true"), "the page reloaded"

        # The person stops counting: the event ends and its entry says how long it lasted.
        assert client.patch("/cameras/cam/settings", json={"min_score": 0.95}).status_code == 200
        page.wait_for_selector(f'#events li[data-id="{event["id"]}"][data-state=ended]', timeout=15_000)
        assert re.fullmatch(r"\d+(\.\d)? s", entry.locator(".duration").inner_text())
        assert client.get(f"/events/{event['id']}").json()["end_time"] is not None

    # A click on the thumbnail shows the whole snapshot.
    entry.locator(".thumb").click()
    page.wait_for_function(
        "() => { const img = document.getElementById('snapshot-full');"
        " return document.getElementById('snapshot-dialog').open && img.naturalWidth === 320; }"
    )
    assert page.evaluate("() => window.sameDocument === true"), "the page reloaded"
    assert page.locator("#events li").count() <= 20
    assert errors == []


def test_zone_overlay_covers_its_part_of_the_image_as_it_is_resized(
    make_server: MakeServer, page: Any
) -> None:
    server = make_server(zones=LOWER_HALF)
    page.goto(f"{server.url}/")
    page.wait_for_function(SHOWS_FRAMES, timeout=20_000)
    page.wait_for_function(_ZONE_ON_LOWER_HALF, arg=None)
    rects = page.evaluate(_ZONE_RECTS)
    assert rects["points"] == [4]
    left, top, right, bottom = rects["image"]
    assert rects["zones"][0] == pytest.approx([left, (top + bottom) / 2, right, bottom], abs=2)

    # A narrower window shrinks the image: the overlay follows.
    page.set_viewport_size({"width": 280, "height": 900})
    page.wait_for_function(_ZONE_ON_LOWER_HALF, arg=None)
    narrow = page.evaluate(_ZONE_RECTS)["image"]
    assert narrow[2] - narrow[0] < right - left

    # Letterboxed: 320x240 in a 300x400 box is 300x225, 87.5 px down.
    page.set_viewport_size({"width": 1280, "height": 720})
    page.eval_on_selector(
        "#stream",
        "(img) => Object.assign(img.style, {width: '300px', height: '400px', objectFit: 'contain'})",
    )
    page.wait_for_function(_ZONE_ON_LOWER_HALF, arg=[0, 87.5, 300, 225])

    # Settings changed elsewhere are drawn once the page PATCHes and reloads them.
    with httpx.Client(base_url=server.url, timeout=10.0) as client:
        triangles = [[[0, 0], [0.5, 0], [0, 0.5]], [[1, 1], [0.5, 1], [1, 0.5]]]
        assert client.patch("/cameras/cam/settings", json={"zones": triangles}).status_code == 200
        _set_conf(page, "0.4")
        page.wait_for_function("() => document.querySelectorAll('#zones polygon').length === 2")
        assert page.evaluate(_ZONE_RECTS)["points"] == [3, 3]
        # No zones: the whole frame counts and nothing is drawn.
        assert client.patch("/cameras/cam/settings", json={"zones": []}).status_code == 200
        _set_conf(page, "0.5")
        page.wait_for_function("() => document.querySelectorAll('#zones polygon').length === 0")
    assert page.is_hidden("#zones")
    assert page.inner_text("#error") == ""


def test_with_events_off_the_events_panel_is_hidden_and_nothing_fails(
    server: ServerThread, page: Any
) -> None:
    errors = _console_errors(page)
    asked = _event_requests(page)
    page.goto(f"{server.url}/")
    page.wait_for_function(SHOWS_FRAMES, timeout=20_000)
    page.wait_for_selector("#events-panel[data-state=off]", state="attached")
    # Two more seconds of stats polling: the page does not come back to /events.
    page.wait_for_function("() => Number(document.getElementById('stats').dataset.updates || 0) >= 3")
    assert page.is_hidden("#events-panel")
    assert asked == []
    assert errors == []
    assert page.inner_text("#error") == ""
    assert page.is_hidden("#zones")  # no zones configured


def test_events_panel_gives_up_after_a_404(server: ServerThread, page: Any) -> None:
    # /stats claims events are on; the server, off, answers /events with 404 once and for all.
    def claim_events(route: Any) -> None:
        response = route.fetch()
        route.fulfill(response=response, json={**response.json(), "events": {}})

    page.route("**/stats", claim_events)
    asked = _event_requests(page)
    page.goto(f"{server.url}/")
    page.wait_for_selector("#events-panel[data-state=off]", state="attached")
    page.wait_for_function("() => Number(document.getElementById('stats').dataset.updates || 0) >= 3")
    assert page.is_hidden("#events-panel")
    assert [url.removeprefix(server.url) for url in asked] == ["/events?limit=20"]
    assert page.inner_text("#error") == ""
