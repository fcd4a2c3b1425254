"""Which ``Host`` headers the server answers: its defence against DNS rebinding.

A web page on ``evil.example`` can make its own name resolve to this server's address (DNS
rebinding). The browser then counts the server as part of the page's origin: the page may read
its answers and send it same-origin writes. Its requests still say ``Host: evil.example``, so the
server answers only requests naming a host it knows as its own (`AllowedHosts`):

* an IP address (``127.0.0.1``, ``[::1]``, a LAN address): a rebinding page has a name, never an
  address, and a server in a container cannot know every address it is reached at (a published
  port, a NAT);
* ``localhost`` and ``*.localhost`` (browsers resolve these to loopback themselves);
* the name the server is bound to, and the machine's names (``socket.gethostname()``, that name
  with ``.local`` for mDNS, ``socket.getfqdn()``);
* the ``allowed_hosts`` setting: names (``cam.example``), ``*.example`` for every subdomain of
  ``example``, or ``*`` for any host (no protection; for a proxy that checks hosts itself).

Other requests get 400 from `HostGuard` before anything else sees them.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import logging
import re
import socket
from collections.abc import Iterable, Sequence
from typing import Final

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from espdetect.server.errors import SafeJSONResponse

__all__ = [
    "ANY_HOST",
    "AllowedHosts",
    "HostGuard",
    "check_host_pattern",
    "local_url",
    "machine_names",
    "parse_host",
]

logger = logging.getLogger(__name__)

#: The ``allowed_hosts`` entry that allows any host.
ANY_HOST: Final = "*"
#: Names every server answers to, whatever its configuration.
LOCAL_NAMES: Final = ("localhost", "*.localhost")

_NAME: Final = re.compile(r"^[a-z0-9_](?:[a-z0-9_.-]{0,251}[a-z0-9_])?$")
_HOST_HEADER: Final = re.compile(
    r"^(?:\[(?P<ipv6>[0-9a-fA-F:.]+)\]|(?P<name>[^\[\]:/@\s]+))(?::(?P<port>\d{1,5}))?$"
)
# Distinct refused hosts logged (after that, refusals are silent: a scanner must not fill the log).
_MAX_LOGGED: Final = 64


def _ip(text: str) -> str | None:
    """``text`` as a normalised IP literal (IPv6 in brackets), or None if it is a name."""
    try:
        address = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None
    return f"[{address.compressed}]" if address.version == 6 else address.compressed


def parse_host(value: str) -> tuple[str, int | None] | None:
    """The host (lower case, IPv6 in brackets, no trailing dot) and port of a ``Host`` header.

    None when ``value`` is not a host with an optional port.

    Example:
        >>> parse_host("LocalHost.:8000"), parse_host("[::1]:8000"), parse_host("a b")
        (('localhost', 8000), ('[::1]', 8000), None)
    """
    match = _HOST_HEADER.fullmatch(value.strip())
    if match is None:
        return None
    port = int(match["port"]) if match["port"] is not None else None
    if port is not None and port > 65535:
        return None
    if match["ipv6"] is not None:
        host = _ip(match["ipv6"])
        return None if host is None or not host.startswith("[") else (host, port)
    name = match["name"].lower().rstrip(".")
    address = _ip(name)
    if address is not None:
        return address, port
    return (name, port) if _NAME.match(name) else None


def local_url(host: str, port: int) -> str:
    """``http://host:port`` of a server listening on ``host``, as this machine reaches it
    (127.0.0.1 when it listens on every interface).

    Example:
        >>> local_url("0.0.0.0", 8000), local_url("::1", 80), local_url("192.168.1.5", 80)
        ('http://127.0.0.1:8000', 'http://[::1]:80', 'http://192.168.1.5:80')
    """
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def check_host_pattern(value: str) -> str:
    """An ``allowed_hosts`` entry, normalised: ``*``, a name, ``*.`` and a name, or an IP address.

    Raises:
        ValueError: anything else (a port, a scheme, a path, a wildcard elsewhere).

    Example:
        >>> check_host_pattern("*.Example.COM."), check_host_pattern("::1")
        ('*.example.com', '[::1]')
    """
    text = value.strip().lower().rstrip(".")
    if text == ANY_HOST:
        return text
    address = _ip(text)
    if address is not None:
        return address
    name = text[2:] if text.startswith("*.") else text
    if not _NAME.match(name):
        raise ValueError(
            f"expected host names like cam.example, *.example (any subdomain), an IP address or '*' "
            f"(no scheme, port or path), got {value!r}"
        )
    return text


def _matches(host: str, patterns: Iterable[str]) -> bool:
    for pattern in patterns:
        if host == pattern or (pattern.startswith("*.") and host.endswith(pattern[1:])):
            return True
    return False


@functools.cache
def machine_names() -> tuple[str, ...]:
    """This machine's own names: its host name, that name in ``.local`` (mDNS) and its FQDN.

    Looked up once per process (``getfqdn`` may ask DNS).
    """
    names: list[str] = []
    try:
        hostname = socket.gethostname()
        candidates = [hostname, socket.getfqdn()]
    except OSError:
        return ()
    if hostname and "." not in hostname:
        candidates.append(f"{hostname}.local")
    for candidate in candidates:
        try:
            name = check_host_pattern(candidate)
        except ValueError:
            continue  # a host name no Host header could carry
        if name not in names and name != ANY_HOST and _ip(name) is None:
            names.append(name)
    return tuple(names)


class AllowedHosts:
    """The hosts a request may name in ``Host`` (see the module documentation).

    Example:
        >>> hosts = AllowedHosts.for_server("127.0.0.1", ["cam.example", "*.lan"])
        >>> hosts.allows("cam.example"), hosts.allows("printer.lan"), hosts.allows("evil.example")
        (True, True, False)
        >>> hosts.allows("192.168.1.20"), hosts.allows("localhost")
        (True, True)
    """

    def __init__(self, defaults: Iterable[str], configured: Iterable[str] = ()) -> None:
        configured = [check_host_pattern(entry) for entry in configured]
        #: Whether any host is allowed (``*`` configured).
        self.any_host = ANY_HOST in configured
        #: The ``allowed_hosts`` entries other than ``*``: names the operator vouched for.
        self.configured: tuple[str, ...] = tuple(dict.fromkeys(p for p in configured if p != ANY_HOST))
        self.defaults: tuple[str, ...] = tuple(dict.fromkeys(check_host_pattern(p) for p in defaults))

    @classmethod
    def for_server(cls, bind_host: str, configured: Sequence[str] = ()) -> AllowedHosts:
        """The hosts a server bound to ``bind_host`` answers by default, plus ``configured``."""
        defaults = [*LOCAL_NAMES, *machine_names()]
        with contextlib.suppress(ValueError):  # "" (every interface): no name to add
            defaults.append(check_host_pattern(bind_host))
        # Addresses are allowed anyway (`allows`); the bind address matters when it is a name.
        return cls([d for d in defaults if d != ANY_HOST and _ip(d) is None], configured)

    def allows(self, host: str) -> bool:
        """Whether requests may name ``host`` (without a port, as `parse_host` gives it)."""
        if self.any_host or _ip(host) is not None:
            return True
        return _matches(host, self.defaults) or _matches(host, self.configured)

    def vouched(self, host: str) -> bool:
        """Whether ``allowed_hosts`` names ``host`` itself (not only through ``*``): pages from such a
        host (a reverse proxy's public name) may change settings whatever their port.

        ``host`` may also be written as a URL's host name gives it (``::1``, ``cam.example.``).
        """
        return _matches(_ip(host) or host.lower().rstrip("."), self.configured)

    def describe(self) -> str:
        """The allowed hosts in words, for the log."""
        if self.any_host:
            return "any host (allowed_hosts = *: no DNS rebinding protection)"
        return "any IP address, " + ", ".join((*self.defaults, *self.configured))


class HostGuard:
    """ASGI middleware answering 400 to requests whose ``Host`` is not an `AllowedHosts` host.

    Starlette's ``TrustedHostMiddleware`` is not used: it answers in plain text, not JSON, and
    older Starlette releases that this package still allows cut ``[::1]:8000`` at the first colon.

    Example:
        >>> app.add_middleware(HostGuard, hosts=AllowedHosts.for_server("0.0.0.0"))  # doctest: +SKIP
    """

    def __init__(self, app: ASGIApp, hosts: AllowedHosts) -> None:
        self.app = app
        self.hosts = hosts
        self._logged: set[str] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self.hosts.any_host:
            await self.app(scope, receive, send)
            return
        values = Headers(scope=scope).getlist("host")
        parsed = parse_host(values[0]) if len(values) == 1 else None
        if parsed is not None and self.hosts.allows(parsed[0]):
            await self.app(scope, receive, send)
            return
        shown = repr(values[0][:100]) if len(values) == 1 else f"{len(values)} Host headers"
        if len(self._logged) < _MAX_LOGGED and shown not in self._logged:
            self._logged.add(shown)
            logger.warning(
                "refused a request for Host %s: add the name to allowed_hosts if the server is reached "
                "under it (allowed: %s)",
                shown,
                self.hosts.describe(),
            )
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        # The allowed names stay out of the answer: a rebinding page could read them.
        detail = (
            f"expected a Host this server answers to (an IP address, localhost, this machine's name or "
            f"a name in the allowed_hosts setting), got {shown}"
        )
        await SafeJSONResponse({"detail": detail}, status_code=400)(scope, receive, send)
