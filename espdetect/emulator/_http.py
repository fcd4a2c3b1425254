"""Just enough HTTP/1.1 to behave like esp_http_server, byte for byte where it writes.

Response heads follow ``httpd_txrx.c``: ``HTTP/1.1 <status>``, then ``Content-Type``, then
``Content-Length`` (or ``Transfer-Encoding: chunked``), then the handler's extra headers in the
order it set them, then an empty line. Error pages are ``text/html`` with IDF's fixed messages.
"""

from __future__ import annotations

import asyncio
from collections.abc import Container, Sequence
from dataclasses import dataclass
from http import HTTPStatus

__all__ = [
    "BadRequest",
    "Request",
    "chunked_head",
    "error_response",
    "html_error_page",
    "query_value",
    "read_request",
    "response",
    "route_error",
    "to_int",
]

# esp_http_server's defaults: URI and header limits (CONFIG_HTTPD_MAX_URI_LEN, _MAX_REQ_HDR_LEN).
MAX_URI = 512
MAX_HEAD = 8192

Headers = Sequence[tuple[str, str]]

# httpd_resp_send_err(): status line text and the body it sends for each error code.
_IDF_ERRORS: dict[int, tuple[str, str]] = {
    400: ("400 Bad Request", "Server unable to understand request due to invalid syntax"),
    404: ("404 Not Found", "This URI does not exist"),
    405: ("405 Method Not Allowed", "Request method for this URI is not handled by server"),
    414: ("414 URI Too Long", "URI is too long"),
    431: ("431 Request Header Fields Too Large", "Header fields are too long"),
    500: ("500 Internal Server Error", "Server has encountered an unexpected error"),
    505: ("505 Version Not Supported", "HTTP version not supported by server"),
}


class BadRequest(Exception):
    """The request could not be read; ``status`` is the error code IDF would answer with."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class Request:
    """A parsed request head (names of ``headers`` in lower case)."""

    method: str
    path: str
    #: The raw query string after ``?`` (not URL-decoded, as IDF leaves it), "" when absent.
    query: str
    version: str
    headers: dict[str, str]


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """Read one request head; None when the client closed the connection before sending one.

    Raises:
        BadRequest: the head is malformed or too large.
    """
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial.strip():
            return None
        raise BadRequest(400, "connection closed inside the request head") from None
    except asyncio.LimitOverrunError:
        raise BadRequest(431, "request head too large") from None
    if len(head) > MAX_HEAD:
        raise BadRequest(431, f"request head of {len(head)} bytes")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[1]:
        raise BadRequest(400, f"expected 'METHOD TARGET HTTP/1.x', got {lines[0]!r}")
    method, target, version = parts
    if not version.startswith("HTTP/1."):
        raise BadRequest(505, f"expected HTTP/1.x, got {version!r}")
    if len(target) > MAX_URI:
        raise BadRequest(414, f"URI of {len(target)} bytes")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, colon, value = line.partition(":")
        if not colon:
            raise BadRequest(400, f"expected a header line, got {line!r}")
        headers[name.strip().lower()] = value.strip()
    path, _, query = target.partition("?")
    return Request(method=method, path=path, query=query, version=version, headers=headers)


def route_error(request: Request, paths: Container[str]) -> int | None:
    """The error esp_http_server answers when no GET handler of ``paths`` matches, else None.

    An unknown URI is a 404 whatever the method; a known one asked with another method, a 405.

    Example:
        >>> route_error(Request("POST", "/stream", "", "HTTP/1.1", {}), ("/stream",))
        405
    """
    if request.path not in paths:
        return 404
    if request.method != "GET":
        return 405
    return None


def query_value(query: str, key: str, max_len: int = 32) -> str | None:
    """``httpd_query_key_value``: the raw value of ``key``, None if absent or too long for the buffer.

    The sketch reads values into 32-byte buffers; a longer value is an error there (404).
    """
    for pair in query.split("&"):
        name, eq, value = pair.partition("=")
        if name == key and eq:
            return value if len(value) < max_len else None
    return None


def to_int(text: str) -> int:
    """C ``atoi``: leading whitespace, optional sign, digits; anything else ends it (0 if none)."""
    s = text.lstrip(" \t\n\r\f\v")
    sign = 1
    if s[:1] in ("+", "-"):
        sign = -1 if s[0] == "-" else 1
        s = s[1:]
    digits = ""
    for ch in s:
        if not ch.isdigit() or not ch.isascii():
            break
        digits += ch
    return sign * int(digits) if digits else 0


def response(
    body: bytes, content_type: str = "text/html", headers: Headers = (), status: str = "200 OK"
) -> bytes:
    """A complete ``httpd_resp_send`` reply."""
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers)
    head = f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    return head.encode("latin-1") + body


def chunked_head(content_type: str, headers: Headers = (), status: str = "200 OK") -> bytes:
    """The head ``httpd_resp_send_chunk`` writes before the first chunk."""
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers)
    head = f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n{extra}\r\n"
    return head.encode("latin-1")


def error_response(code: int) -> bytes:
    """``httpd_resp_send_err``: IDF's status text and message for ``code``, as text/html."""
    status, message = _IDF_ERRORS.get(code, _IDF_ERRORS[500])
    return response(message.encode("ascii"), status=status)


def html_error_page(code: int) -> bytes:
    """A full HTML error page with status ``code`` (what a proxy or a crashed sketch might send)."""
    try:
        phrase = HTTPStatus(code).phrase
    except ValueError:
        phrase = "Error"
    body = (
        f"<!DOCTYPE html><html><head><title>{code} {phrase}</title></head>"
        f"<body><h1>{code} {phrase}</h1><p>The camera stream is not available.</p></body></html>"
    ).encode("ascii")
    return response(body, status=f"{code} {phrase}")
