"""`CameraControl`: an async client of the CameraWebServer firmware's control server.

The firmware serves ``/status`` (the sensor's settings as one JSON object) and
``/control?var=NAME&val=N`` on port 80, next to the stream on port 81
(docs/esp32-camera-protocol.md §2); `control_url_for` finds the one from the other. Failures
are typed, because callers treat them differently:

* `ControlUnreachable`: refused, reset or timed out. A rebooting camera does this for a few
  seconds; try again later.
* `NotFirmwareError`: something answered ``/status`` that is not the firmware's JSON (ESPHome,
  mjpg-streamer, a web server): there is no control server to talk to; do not retry.
* `ControlRefused`: the firmware answered ``/control`` with an error (500: an unknown variable
  or a value its sensor driver rejects).

Example:
    >>> async def brighter(stream_url: str) -> int:  # doctest: +SKIP
    ...     async with CameraControl(control_url_for(stream_url)) as camera:
    ...         await camera.set("brightness", 1)
    ...         return int((await camera.status())["brightness"])
"""

from __future__ import annotations

from types import TracebackType
from urllib.parse import urlsplit

import httpx

from espdetect.exceptions import EspdetectError
from espdetect.firmware import check_control_value

__all__ = [
    "CameraControl",
    "CameraControlError",
    "ControlRefused",
    "ControlTimeout",
    "ControlUnreachable",
    "NotFirmwareError",
    "StatusValue",
    "control_url_for",
    "split_credentials",
]

#: One value of the firmware's ``/status`` object.
StatusValue = int | float | str | bool


class CameraControlError(EspdetectError):
    """The camera's control server could not do what was asked; ``url`` is its base URL
    (without credentials) and ``reason`` says what happened."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={self.url!r}, reason={self.reason!r})"


class ControlUnreachable(CameraControlError):
    """The control server refused the connection, reset it or did not answer in time (a
    rebooting or offline camera): worth another try later."""


class ControlTimeout(ControlUnreachable):
    """The control server accepted the connection but did not answer within the timeout."""


class NotFirmwareError(CameraControlError):
    """The control port answered ``/status`` with something that is not the firmware's JSON:
    the camera has no CameraWebServer control server (ESPHome, mjpg-streamer, a plain server)."""


class ControlRefused(CameraControlError):
    """The firmware answered ``/control?var=..&val=..`` with an error status (500: an unknown
    variable, or a value the sensor driver rejects)."""

    def __init__(self, url: str, variable: str, value: int, status_code: int) -> None:
        super().__init__(url, f"expected the camera to accept {variable}={value}, got HTTP {status_code}")
        self.variable = variable
        self.value = value
        self.status_code = status_code


def split_credentials(url: str) -> tuple[str, httpx.BasicAuth | None]:
    """``url`` without its ``user:password@`` part, and that part as httpx Basic auth.

    Example:
        >>> split_credentials("http://u:p@cam:8080")[0]
        'http://cam:8080'
    """
    parsed = httpx.URL(url)
    if not parsed.username and not parsed.password:
        return url, None
    return str(parsed.copy_with(username=None, password=None)), httpx.BasicAuth(
        parsed.username, parsed.password
    )


def control_url_for(stream_url: str) -> str:
    """The base URL of a camera's control server (``/control``, ``/status``) from its stream URL.

    The firmware serves the stream on port 81 and everything else on port 80; the emulator
    (``Emulator(port=P)``) uses P and P+1 the same way. So an explicit stream port N maps to
    N-1, and a URL without a port keeps the scheme's default port. Credentials are kept.

    Example:
        >>> control_url_for("http://192.168.4.1:81/stream")
        'http://192.168.4.1:80'
        >>> control_url_for("https://cam.example/stream")
        'https://cam.example'
    """
    parts = urlsplit(stream_url)
    host = parts.netloc
    if parts.port is not None:
        host = host[: host.rfind(":")] + f":{max(1, parts.port - 1)}"
    return f"{parts.scheme}://{host}"


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class CameraControl:
    """Reads and changes one camera's sensor settings through its control server.

    Credentials in ``control_url`` (``http://user:pw@cam``) are sent as Basic auth and never
    appear in errors or logs. Each request opens its own connection and closes it: the
    firmware's HTTP server has 7 sockets and does not purge idle ones, so a kept-alive socket
    would take one from the camera for as long as it stays open.

    Args:
        control_url: the control server's base URL, e.g. ``http://192.168.4.1`` (see
            `control_url_for`).
        timeout: seconds one request may take (connect and answer).

    Example:
        >>> async def quality(url: str) -> int:  # doctest: +SKIP
        ...     async with CameraControl(url, timeout=2.0) as camera:
        ...         await camera.set("quality", 10)
        ...         return int((await camera.status())["quality"])
    """

    def __init__(self, control_url: str, *, timeout: float = 5.0) -> None:
        if not timeout > 0:
            raise ValueError(f"expected timeout > 0 seconds, got {timeout!r}")
        parts = urlsplit(control_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"expected an http(s) control URL, got {control_url!r}")
        base, self._auth = split_credentials(control_url.rstrip("/"))
        #: The base URL without credentials (safe to log).
        self.url = base
        self.timeout = timeout
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            # Plain http needs no CA bundle (loading it blocks the event loop for ~40 ms).
            self._client = httpx.AsyncClient(
                timeout=self.timeout,
                follow_redirects=False,
                verify=self.url.startswith("https://"),
                limits=httpx.Limits(max_keepalive_connections=0),
            )
        return self._client

    async def _get(self, path: str, params: dict[str, str | int] | None = None) -> httpx.Response:
        try:
            if self._auth is None:
                return await self._http().get(self.url + path, params=params)
            return await self._http().get(self.url + path, params=params, auth=self._auth)
        except httpx.TimeoutException:
            raise ControlTimeout(self.url, f"no answer to {path} within {self.timeout:g} s") from None
        except (httpx.TransportError, OSError) as exc:
            raise ControlUnreachable(self.url, f"cannot reach {path}: {_describe(exc)}") from None

    async def status(self) -> dict[str, StatusValue]:
        """The firmware's ``/status``: its sensor settings (``framesize``, ``quality``, ...).

        Raises:
            ControlUnreachable: no connection or no answer in time.
            NotFirmwareError: the answer is not a JSON object with a numeric ``framesize``.
        """
        reply = await self._get("/status")
        if reply.status_code != 200:
            raise NotFirmwareError(self.url, f"expected the firmware's /status, got HTTP {reply.status_code}")
        try:
            body = reply.json()
        except ValueError:
            body = None
        framesize = body.get("framesize") if isinstance(body, dict) else None
        if not isinstance(body, dict) or not isinstance(framesize, int) or isinstance(framesize, bool):
            kind = reply.headers.get("content-type", "no content type")
            raise NotFirmwareError(
                self.url, f"expected the firmware's /status JSON with a framesize, got {kind} that is not"
            )
        return {str(k): v for k, v in body.items() if isinstance(v, int | float | str | bool)}

    async def set(self, var: str, val: int) -> None:
        """``/control?var=var&val=val``: change one sensor setting.

        Raises:
            ValueError: ``var`` is not a firmware variable or ``val`` is outside
                `espdetect.firmware.CONTROL_RANGES` (nothing is sent).
            ControlUnreachable: no connection or no answer in time.
            ControlRefused: the camera answered with an error (500: it rejects the value).
        """
        value = check_control_value(var, val)
        reply = await self._get("/control", {"var": var, "val": value})
        if reply.status_code != 200:
            raise ControlRefused(self.url, var, value, reply.status_code)

    async def aclose(self) -> None:
        """Close the HTTP client (safe to call more than once)."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def __aenter__(self) -> CameraControl:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
