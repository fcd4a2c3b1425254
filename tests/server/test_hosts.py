"""Host validation (DNS rebinding), and the origin check that follows the allowed hosts."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from espdetect.server.app import create_app
from espdetect.server.guard import same_origin
from espdetect.server.hosts import AllowedHosts, check_host_pattern, machine_names, parse_host
from espdetect.server.settings import ServerSettings, load_settings

from .conftest import ServerThread

CAMERAS = ["cam=http://127.0.0.1:9/stream"]


def _host(server: ServerThread, name: str) -> dict[str, str]:
    return {"Host": f"{name}:{server.port}"}


def _refused_for_host(response: httpx.Response) -> None:
    assert response.status_code == 400, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/json"
    assert "expected a Host this server answers to" in response.json()["detail"]


# -- parsing and matching --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:8000", ("127.0.0.1", 8000)),
        ("LOCALHOST", ("localhost", None)),
        ("localhost.:80", ("localhost", 80)),
        ("[::1]:8000", ("[::1]", 8000)),
        ("[0:0::1]", ("[::1]", None)),
        ("cam.example:8443", ("cam.example", 8443)),
        ("", None),
        ("::1", None),  # an IPv6 address needs its brackets
        ("[cam.example]", None),
        ("[1.2.3.4]", None),
        ("a b", None),
        ("evil.example:99999", None),
        ("user@evil.example", None),
        ("evil.example/path", None),
        ("evil.example:80:80", None),
    ],
)
def test_host_headers_are_parsed(value: str, expected: tuple[str, int | None] | None) -> None:
    assert parse_host(value) == expected


def test_the_default_hosts_are_addresses_localhost_and_this_machine() -> None:
    hosts = AllowedHosts.for_server("127.0.0.1")
    for host in ("127.0.0.1", "127.3.4.5", "[::1]", "192.168.1.20", "10.0.0.2", "localhost", "app.localhost"):
        assert hosts.allows(host), host
    for name in machine_names():
        assert hosts.allows(name), name
    hostname = socket.gethostname().lower()
    assert hosts.allows(hostname)
    for host in ("evil.example", "localhost.evil.example", "127.0.0.1.nip.io", "example"):
        assert not hosts.allows(host), host
    assert AllowedHosts.for_server("cam-server.lan").allows("cam-server.lan")


def test_configured_hosts_add_names_wildcards_and_any() -> None:
    hosts = AllowedHosts.for_server("0.0.0.0", ["Cam.Example", "*.home.arpa"])
    assert hosts.allows("cam.example") and hosts.allows("printer.home.arpa")
    assert hosts.allows("a.b.home.arpa")
    assert not hosts.allows("home.arpa")  # list the domain itself too to allow it
    assert not hosts.allows("evilhome.arpa") and not hosts.allows("evil.example")
    assert hosts.vouched("cam.example") and not hosts.vouched("localhost")
    anything = AllowedHosts.for_server("127.0.0.1", ["*"])
    assert anything.any_host and anything.allows("evil.example")
    assert not anything.vouched("evil.example")  # "*" vouches for no page


@pytest.mark.parametrize(
    ("entry", "expected"),
    [("*", "*"), ("*.Example.com.", "*.example.com"), ("::1", "[::1]"), ("[::1]", "[::1]"), ("cam", "cam")],
)
def test_host_patterns_are_normalised(entry: str, expected: str) -> None:
    assert check_host_pattern(entry) == expected


@pytest.mark.parametrize(
    "entry", ["http://cam.example", "cam.example:8000", "cam.example/", "a.*.example", "*example", "", "a b"]
)
def test_bad_host_patterns_are_refused(entry: str) -> None:
    with pytest.raises(ValueError, match=r"expected host names like cam\.example"):
        check_host_pattern(entry)
    with pytest.raises(ValidationError, match=r"expected host names like cam\.example"):
        load_settings(None, {"allowed_hosts": [entry]})


def test_allowed_hosts_from_the_environment_and_toml(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert ServerSettings().auth.allowed_hosts == []
    monkeypatch.setenv("ESPDETECT_ALLOWED_HOSTS", "cam.example, *.home.arpa")
    assert ServerSettings().auth.allowed_hosts == ["cam.example", "*.home.arpa"]
    monkeypatch.setenv("ESPDETECT_ALLOWED_HOSTS", '["espdetect", "*"]')
    assert ServerSettings().auth.allowed_hosts == ["espdetect", "*"]
    monkeypatch.delenv("ESPDETECT_ALLOWED_HOSTS")
    config = tmp_path / "server.toml"
    config.write_text('[auth]\nallowed_hosts = ["cam.example", "*.lan"]\n', encoding="utf-8")
    assert load_settings(config).auth.allowed_hosts == ["cam.example", "*.lan"]


def test_the_origin_check_follows_the_allowed_hosts() -> None:
    hosts = AllowedHosts.for_server("127.0.0.1", ["cam.example"])
    assert same_origin("http://127.0.0.1:8000", "http", "127.0.0.1:8000", hosts)
    assert same_origin("http://localhost:8000", "http", "localhost:8000", hosts)
    # A rebinding page: its Origin and Host agree, but the host is not this server's.
    assert not same_origin("http://evil.example:8000", "http", "evil.example:8000", hosts)
    # Another site on this machine (another port) is another origin.
    assert not same_origin("http://localhost:3000", "http", "localhost:8000", hosts)
    # A reverse proxy's public name, named in allowed_hosts: its pages, whatever Host it forwards.
    assert same_origin("https://cam.example", "http", "127.0.0.1:8000", hosts)
    assert not same_origin("https://cam.example.evil.example", "http", "127.0.0.1:8000", hosts)
    assert not same_origin("null", "http", "127.0.0.1:8000", hosts)
    assert same_origin("http://[::1]:8000", "http", "[::1]:8000", hosts)
    assert not same_origin("http://[::1]:8001", "http", "[::1]:8000", hosts)
    assert same_origin("http://[::1]:8001", "http", "[::1]:8000", AllowedHosts.for_server("::1", ["::1"]))


def test_listening_on_every_interface_logs_the_allowed_hosts(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="espdetect.server.app")
    create_app(load_settings(None, {"host": "0.0.0.0", "cameras": CAMERAS, "allowed_hosts": ["cam.example"]}))
    logged = [r.getMessage() for r in caplog.records if "answering requests whose Host is" in r.getMessage()]
    assert len(logged) == 1
    assert "any IP address" in logged[0] and "localhost" in logged[0] and "cam.example" in logged[0]
    caplog.clear()
    create_app(load_settings(None, {"host": "127.0.0.1", "cameras": CAMERAS}))
    assert not [r for r in caplog.records if "answering requests whose Host is" in r.getMessage()]


# -- the real server -------------------------------------------------------------------------------


def test_a_dns_rebinding_page_is_refused(server: ServerThread, client: httpx.Client) -> None:
    before = client.get("/cameras/cam/settings").json()
    evil = f"evil.example:{server.port}"
    rebinding = {"Host": evil, "Origin": f"http://{evil}"}
    changed = client.patch("/cameras/cam/settings", json={"conf": 0.26}, headers=rebinding)
    _refused_for_host(changed)
    # What this server answers to stays out of the answer: the page that asked could read it.
    assert changed.json()["detail"] == (
        "expected a Host this server answers to (an IP address, localhost, this machine's name or a name "
        f"in the allowed_hosts setting), got {evil!r}"
    )
    for path in ("/stats", "/cameras/cam/snapshot", "/cameras/cam/settings", "/health", "/metrics", "/"):
        _refused_for_host(client.get(path, headers={"Host": evil}))
    assert client.get("/cameras/cam/settings").json() == before


def test_requests_for_this_servers_own_hosts_are_answered(server: ServerThread, client: httpx.Client) -> None:
    names = ["127.0.0.1", "localhost", "[::1]", "LocalHost.", socket.gethostname(), *machine_names()]
    for name in names:
        headers = _host(server, name)
        assert client.get("/health", headers=headers).status_code == 200, name
        # The page's own origin may change settings.
        own = {**headers, "Origin": f"http://{headers['Host']}"}
        assert client.patch("/cameras/cam/settings", json={"conf": 0.3}, headers=own).status_code == 200, name
    assert client.get("/health", headers={"Host": "127.0.0.1"}).status_code == 200  # no port


def test_a_host_refused_before_authentication(make_server: Callable[..., ServerThread]) -> None:
    server = make_server(auth_token_hash="0" * 64)
    with httpx.Client(base_url=server.url, timeout=10.0) as client:
        assert client.get("/stats").status_code == 401
        response = client.get("/stats", headers=_host(server, "evil.example"))
        _refused_for_host(response)
        assert "www-authenticate" not in response.headers


def test_missing_or_repeated_host_headers_are_refused(server: ServerThread) -> None:
    for head in (
        "GET /health HTTP/1.0\r\n\r\n",
        f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nHost: evil.example\r\n"
        "Connection: close\r\n\r\n",
    ):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10.0) as sock:
            sock.sendall(head.encode())
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
        status = reply.split(b"\r\n", 1)[0]
        assert b" 400 " in status, reply[:300]
        body = json.loads(reply.split(b"\r\n\r\n", 1)[1])
        assert "expected a Host this server answers to" in body["detail"]


def test_configured_hosts_are_answered(make_server: Callable[..., ServerThread]) -> None:
    server = make_server(allowed_hosts=["cam.example", "*.home.arpa"])
    with httpx.Client(base_url=server.url, timeout=10.0) as client:
        for name in ("cam.example", "CAM.EXAMPLE", "printer.home.arpa", "127.0.0.1"):
            assert client.get("/health", headers=_host(server, name)).status_code == 200, name
        for name in ("home.arpa", "evil.example", "cam.example.evil.example"):
            _refused_for_host(client.get("/health", headers=_host(server, name)))


def test_any_host_when_configured(make_server: Callable[..., ServerThread]) -> None:
    server = make_server(allowed_hosts="*")
    with httpx.Client(base_url=server.url, timeout=10.0) as client:
        assert client.get("/health", headers=_host(server, "anything.example")).status_code == 200


def test_state_changes_need_an_origin_of_an_allowed_host(make_server: Callable[..., ServerThread]) -> None:
    server = make_server(allowed_hosts=["cam.example"])
    own = f"127.0.0.1:{server.port}"
    with httpx.Client(base_url=server.url, timeout=10.0) as client:
        before = client.get("/cameras/cam/settings").json()
        for origin in (
            f"http://evil.example:{server.port}",  # a name this server does not answer to
            f"http://localhost:{server.port + 1}",  # another site on this machine
            f"https://{own}",  # another scheme
            "null",
        ):
            refused = client.patch(
                "/cameras/cam/settings", json={"conf": 0.9}, headers={"Host": own, "Origin": origin}
            )
            assert refused.status_code == 403, origin
            assert (
                "expected a state-changing request from this server's own pages" in refused.json()["detail"]
            )
        referer = {"Host": own, "Referer": f"http://evil.example:{server.port}/"}
        assert client.patch("/cameras/cam/settings", json={"conf": 0.9}, headers=referer).status_code == 403
        assert client.get("/cameras/cam/settings").json() == before
        # The page's own origin, and any page of a host allowed_hosts names (a reverse proxy that
        # forwards its own Host, or one that does not).
        for host, origin in (
            (own, f"http://{own}"),
            (f"localhost:{server.port}", f"http://localhost:{server.port}"),
            (own, "https://cam.example"),
            ("cam.example", "https://cam.example"),
        ):
            accepted = client.patch(
                "/cameras/cam/settings", json={"conf": 0.4}, headers={"Host": host, "Origin": origin}
            )
            assert accepted.status_code == 200, (host, origin, accepted.text)
        assert client.patch("/cameras/cam/settings", json={"conf": 0.5}).status_code == 200  # not a browser
