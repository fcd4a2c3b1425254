"""The multipart JPEG wire format, without I/O: an incremental parser and the writers.

The parser accepts the byte stream of an ESP32 ``/stream`` response body (after HTTP
de-chunking) split in any way, down to one byte per ``feed``. It handles:

* the current firmware framing ``\\r\\n--B\\r\\n<headers>\\r\\n\\r\\n<JPEG>`` (leading CRLF);
* the pre-2020 framing ``<headers>\\r\\n\\r\\n<JPEG>\\r\\n--B\\r\\n`` (no leading boundary);
* parts with or without ``Content-Length`` (boundary scanning when absent);
* a ``Content-Length`` that lies (the part is re-cut at the next boundary and counted);
* garbage before or between parts (skipped and counted, parsing resynchronises);
* parts larger than ``max_part_size``: dropped and counted, never buffered beyond the maximum.

Nothing in here raises on malformed input, and the internal buffer never exceeds
``max_part_size`` plus a small constant.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum, auto

__all__ = [
    "ESP32_BOUNDARY",
    "ESP32_STREAM_CONTENT_TYPE",
    "MultipartParser",
    "ParserStats",
    "Part",
    "boundary_from_content_type",
    "esp32_legacy_part",
    "esp32_part_pieces",
    "format_timestamp",
    "http_chunk",
    "is_complete_jpeg",
    "mjpeg_part",
]

ESP32_BOUNDARY = "123456789000000000000987654321"
ESP32_STREAM_CONTENT_TYPE = f"multipart/x-mixed-replace;boundary={ESP32_BOUNDARY}"
DEFAULT_MAX_PART_SIZE = 4 * 1024 * 1024
_MAX_HEADER_BLOCK = 8 * 1024
_HEADER_LINE = re.compile(rb"^[!#$%&'*+.^_`|~0-9A-Za-z-]+[ \t]*:")
_SOI = b"\xff\xd8"
_EOI = b"\xff\xd9"
_PADDING = b"\x00\r\n"


def format_timestamp(seconds: float) -> str:
    """``seconds`` as the firmware writes X-Timestamp: ``%d.%06d`` (seconds, padded microseconds)."""
    total_us = round(seconds * 1_000_000)
    return f"{total_us // 1_000_000}.{total_us % 1_000_000:06d}"


def http_chunk(data: bytes) -> bytes:
    """One HTTP/1.1 chunk as esp_http_server frames it: lower-case hex length, CRLF, data, CRLF."""
    return b"%x\r\n" % len(data) + data + b"\r\n"


def esp32_part_pieces(
    jpeg: bytes, timestamp: float, boundary: str = ESP32_BOUNDARY
) -> tuple[bytes, bytes, bytes]:
    """The three pieces the current firmware sends for one frame, each as one HTTP chunk.

    Example:
        >>> b"".join(http_chunk(p) for p in esp32_part_pieces(b"\\xff\\xd8..\\xff\\xd9", 1.5))[:4]
        b'24\\r\\n'
    """
    head = (
        f"Content-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n"
        f"X-Timestamp: {format_timestamp(timestamp)}\r\n\r\n"
    ).encode("ascii")
    return (f"\r\n--{boundary}\r\n".encode("ascii"), head, jpeg)


def esp32_legacy_part(jpeg: bytes, boundary: str = ESP32_BOUNDARY) -> tuple[bytes, bytes, bytes]:
    """The pre-2020 firmware's pieces for one frame: headers, JPEG, then the boundary."""
    head = f"Content-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode("ascii")
    return (head, jpeg, f"\r\n--{boundary}\r\n".encode("ascii"))


def mjpeg_part(jpeg: bytes, timestamp: float, boundary: str) -> bytes:
    """One part as the espdetect server sends it to viewers (boundary first, Unix X-Timestamp)."""
    return (
        (
            f"--{boundary}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n"
            f"X-Timestamp: {format_timestamp(timestamp)}\r\n\r\n"
        ).encode("ascii")
        + jpeg
        + b"\r\n"
    )


def boundary_from_content_type(content_type: str) -> str | None:
    """The boundary parameter of a ``multipart/*`` Content-Type, or None when it has none.

    Tolerates quotes, spaces and a boundary written with its leading ``--`` (some cameras do).
    """
    main, _, params = content_type.partition(";")
    if not main.strip().lower().startswith("multipart/"):
        return None
    for param in params.split(";"):
        key, _, value = param.strip().partition("=")
        if key.strip().lower() == "boundary":
            value = value.strip().strip('"')
            if value.startswith("--") and len(value) > 2:
                value = value[2:]
            return value or None
    return None


def is_complete_jpeg(data: bytes | bytearray, end: int | None = None, *, padded: bool = False) -> bool:
    """Whether ``data[:end]`` starts with SOI and ends with EOI; ``padded`` allows NUL, CR and LF after it.

    The ESP32 driver guarantees both for good frames; a cut or corrupt transfer breaks one. The
    parser decides where a body ends, so it asks for the exact end; a received part may carry
    padding after its EOI.

    Example:
        >>> is_complete_jpeg(b"\\xff\\xd8 ... \\xff\\xd9\\r\\n", padded=True)
        True
        >>> is_complete_jpeg(b"\\xff\\xd8 ...")
        False
    """
    stop = len(data) if end is None else end
    while padded and stop > 0 and data[stop - 1] in _PADDING:
        stop -= 1
    return stop >= 4 and data[:2] == _SOI and data[stop - 2 : stop] == _EOI


@dataclass(frozen=True)
class Part:
    """One multipart part: its headers (lower-case names) and its body."""

    headers: dict[str, str]
    body: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")

    @property
    def timestamp(self) -> float | None:
        """X-Timestamp as a float, when present and well-formed."""
        raw = self.headers.get("x-timestamp")
        if raw is None:
            return None
        try:
            return float(raw)
        except ValueError:
            return None

    @property
    def is_complete_jpeg(self) -> bool:
        """Starts with SOI and ends with EOI, as the ESP32 driver guarantees for good frames."""
        return is_complete_jpeg(self.body, padded=True)


@dataclass
class ParserStats:
    """Counters of what the parser has seen."""

    bytes_in: int = 0
    parts: int = 0
    #: Bytes skipped because they did not belong to any part (garbage, broken headers).
    garbage_bytes: int = 0
    #: Times the parser had to search for the next boundary after unexpected bytes.
    resyncs: int = 0
    #: Parts dropped because they exceeded ``max_part_size``.
    oversize: int = 0
    #: Parts whose Content-Length disagreed with where the part really ended.
    length_mismatch: int = 0
    #: Header blocks that could not be parsed.
    bad_headers: int = 0


class _State(Enum):
    SEEK = auto()
    HEADERS = auto()
    BODY_LENGTH = auto()
    BODY_SCAN = auto()
    DISCARD = auto()


@dataclass
class MultipartParser:
    """Incremental multipart parser. Feed bytes, get complete parts.

    Example:
        >>> p = MultipartParser("B")
        >>> head = b"\\r\\n--B\\r\\nContent-Type: image/jpeg\\r\\nContent-Length: 4\\r\\n\\r\\n"
        >>> [part.body for part in p.feed(head + b"\\xff\\xd8\\xff\\xd9")]
        [b'\\xff\\xd8\\xff\\xd9']
    """

    boundary: str
    max_part_size: int = DEFAULT_MAX_PART_SIZE
    stats: ParserStats = field(default_factory=ParserStats)

    def __post_init__(self) -> None:
        if not self.boundary:
            raise ValueError("boundary must be a non-empty string")
        if self.max_part_size < 1024:
            raise ValueError(f"max_part_size must be at least 1024 bytes, got {self.max_part_size}")
        self._delim = b"--" + self.boundary.encode("latin-1")
        self._scan_delim = b"\r\n" + self._delim
        self._buf = bytearray()
        self._state = _State.SEEK
        self._headers: dict[str, str] = {}
        self._length = 0
        # Where the search for an early boundary resumes inside a length-delimited body.
        self._scan_pos = 0

    @property
    def buffered(self) -> int:
        """Bytes currently held (bounded by ``max_part_size`` plus a small constant)."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Part]:
        """Add bytes; return the parts they complete (possibly none)."""
        self.stats.bytes_in += len(data)
        self._buf += data
        parts: list[Part] = []
        while True:
            before = (self._state, len(self._buf))
            part = self._step()
            if part is not None:
                parts.append(part)
            elif (self._state, len(self._buf)) == before:
                return parts

    # -- states ---------------------------------------------------------------------------

    def _step(self) -> Part | None:
        if self._state is _State.SEEK:
            self._seek()
        elif self._state is _State.HEADERS:
            self._read_headers()
        elif self._state is _State.BODY_LENGTH:
            return self._read_length_body()
        elif self._state is _State.BODY_SCAN:
            return self._read_scan_body()
        else:
            self._discard()
        return None

    def _skip_garbage(self, n: int) -> None:
        if n > 0:
            del self._buf[:n]
            self.stats.garbage_bytes += n

    def _seek(self) -> None:
        buf = self._buf
        # Line breaks between parts are framing, not garbage.
        i = 0
        while i < len(buf) and buf[i] in b"\r\n \t":
            i += 1
        if i:
            del buf[:i]
        if not buf:
            return
        d = self._delim
        if buf.startswith(d):
            eol = buf.find(b"\n", len(d))
            if eol < 0:
                if len(buf) > len(d) + 128:  # a boundary line never runs this long
                    self._resync(1)
                return
            del buf[: eol + 1]
            self._state = _State.HEADERS
            return
        if len(buf) < len(d) and d.startswith(bytes(buf)):
            return  # maybe the start of a boundary: wait for more
        if _HEADER_LINE.match(bytes(buf[:64])):
            # Pre-2020 firmware: the first part comes without a boundary before it.
            self._state = _State.HEADERS
            return
        if len(buf) < 64 and b":" not in buf and b"\n" not in buf and bytes(buf[:1]).isalpha():
            return  # could still become a header line
        self._resync(0)

    def _resync(self, start: int) -> None:
        """Skip to the next boundary, keeping a tail that might be the start of one."""
        self.stats.resyncs += 1
        idx = self._buf.find(self._delim, start)
        if idx < 0:
            keep = len(self._delim) - 1
            self._skip_garbage(max(0, len(self._buf) - keep))
            self._state = _State.DISCARD
        else:
            self._skip_garbage(idx)
            self._state = _State.SEEK

    def _discard(self) -> None:
        idx = self._buf.find(self._delim)
        if idx < 0:
            keep = len(self._delim) - 1
            self._skip_garbage(max(0, len(self._buf) - keep))
            return
        self._skip_garbage(idx)
        self._state = _State.SEEK

    def _read_headers(self) -> None:
        buf = self._buf
        end = buf.find(b"\r\n\r\n")
        sep = 4
        alt = buf.find(b"\n\n")
        if alt >= 0 and (end < 0 or alt < end):
            end, sep = alt, 2
        if end < 0:
            if len(buf) > _MAX_HEADER_BLOCK:
                self.stats.bad_headers += 1
                self._resync(1)
            return
        block = bytes(buf[:end])
        headers: dict[str, str] = {}
        ok = True
        for line in block.split(b"\n"):
            line = line.strip(b"\r")
            if not line:
                continue
            name, colon, value = line.partition(b":")
            if not colon or not _HEADER_LINE.match(line):
                ok = False
                break
            headers[name.decode("latin-1").strip().lower()] = value.decode("latin-1").strip()
        if not ok or not headers:
            self.stats.bad_headers += 1
            # From 0: the block may itself start with a delimiter (an empty part, or a stray one).
            self._resync(0)
            return
        del buf[: end + sep]
        self._headers = headers
        length = _parse_length(headers.get("content-length"))
        if length is None:
            self._state = _State.BODY_SCAN
        elif length > self.max_part_size:
            self.stats.oversize += 1
            self._state = _State.DISCARD
        else:
            self._length = length
            self._scan_pos = 0
            self._state = _State.BODY_LENGTH

    def _read_length_body(self) -> Part | None:
        n = self._length
        buf = self._buf
        if len(buf) < n:
            # A lying Content-Length (too long) can swallow the next boundary: re-cut there.
            cut = self._early_end()
            if cut >= 0:
                self.stats.length_mismatch += 1
                body = bytes(buf[:cut])
                del buf[:cut]
                return self._emit(body)
            return None
        body = bytes(buf[:n])
        if self._looks_complete(body):
            del buf[:n]
            return self._emit(body)
        # The body does not end where a JPEG ends: the length lied. Re-cut at the next boundary.
        self.stats.length_mismatch += 1
        self._state = _State.BODY_SCAN
        return None

    def _early_end(self) -> int:
        """Offset of a delimiter before ``Content-Length`` bytes where a complete body ends, or -1.

        A delimiter only counts where the bytes before it end like a complete JPEG: the
        delimiter bytes can occur inside a JPEG (in a comment segment, say), and there the
        Content-Length is right and must win. The search resumes where it stopped, so feeding
        a body in small pieces stays linear.
        """
        buf = self._buf
        delim = self._scan_delim
        while True:
            idx = buf.find(delim, self._scan_pos)
            if idx < 0:
                self._scan_pos = max(self._scan_pos, len(buf) - len(delim) + 1)
                return -1
            self._scan_pos = idx + 1
            if "jpeg" not in self._headers.get("content-type", "image/jpeg").lower():
                return idx
            if is_complete_jpeg(buf, idx):
                return idx

    def _looks_complete(self, body: bytes) -> bool:
        return "jpeg" not in self._headers.get("content-type", "image/jpeg").lower() or is_complete_jpeg(body)

    def _read_scan_body(self) -> Part | None:
        buf = self._buf
        idx = buf.find(self._scan_delim)
        # Also accept a boundary without the CRLF before it (sloppy servers), or right at the
        # start: an empty body whose header block's blank line doubles as the CRLF.
        bare = buf.find(self._delim)
        if bare == 0:
            idx = 0
        elif bare > 0 and buf[bare - 1 : bare] == b"\n" and (idx < 0 or bare - 1 < idx):
            idx = bare - 1
        if idx < 0:
            if len(buf) > self.max_part_size:
                self.stats.oversize += 1
                keep = len(self._scan_delim) - 1
                self._skip_garbage(len(buf) - keep)
                self._state = _State.DISCARD
            return None
        body = bytes(buf[:idx])
        del buf[:idx]
        return self._emit(body)

    def _emit(self, body: bytes) -> Part:
        self.stats.parts += 1
        part = Part(self._headers, body)
        self._headers = {}
        self._state = _State.SEEK
        return part


def _parse_length(raw: str | None) -> int | None:
    if raw is None:
        return None
    raw = raw.strip()
    if not raw.isdigit() or len(raw) > 12:
        return None
    return int(raw)
