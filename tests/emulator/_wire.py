"""Raw-socket HTTP helpers for the emulator tests: exact bytes in, parsed pieces out."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field

import cv2
import numpy as np

from espdetect.mjpeg import ESP32_BOUNDARY, MultipartParser, Part

BOUNDARY_CHUNK = f"\r\n--{ESP32_BOUNDARY}\r\n".encode("ascii")
PART_HEAD = re.compile(
    rb"^Content-Type: image/jpeg\r\nContent-Length: (\d+)\r\nX-Timestamp: (\d+)\.(\d{6})\r\n\r\n$"
)
LEGACY_PART_HEAD = re.compile(rb"^Content-Type: image/jpeg\r\nContent-Length: (\d+)\r\n\r\n$")


@dataclass
class Response:
    """A complete Content-Length response: raw head bytes, parsed pieces and body."""

    raw_head: bytes
    status_line: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None


def parse_head(raw: bytes) -> tuple[str, list[tuple[str, str]]]:
    lines = raw.decode("latin-1").split("\r\n")
    headers = []
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(": ")
            headers.append((name, value))
    return lines[0], headers


async def read_response(reader: asyncio.StreamReader) -> Response:
    raw = await reader.readuntil(b"\r\n\r\n")
    status, headers = parse_head(raw)
    length = int(dict(headers)["Content-Length"])
    body = await reader.readexactly(length)
    return Response(raw, status, headers, body)


async def get(port: int, target: str, method: str = "GET") -> Response:
    """One request on a fresh connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"{method} {target} HTTP/1.1\r\nHost: cam\r\n\r\n".encode())
        await writer.drain()
        return await read_response(reader)
    finally:
        writer.close()


@dataclass
class StreamClient:
    """A ``/stream`` client on a raw socket that keeps every byte it reads."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    raw: bytearray = field(default_factory=bytearray)
    parser: MultipartParser = field(default_factory=lambda: MultipartParser(ESP32_BOUNDARY, 64 * 1024 * 1024))

    @classmethod
    async def open(
        cls, port: int, request: bytes = b"GET /stream HTTP/1.1\r\nHost: cam\r\n\r\n"
    ) -> StreamClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        await writer.drain()
        return cls(reader, writer)

    async def head(self) -> bytes:
        raw = await self.reader.readuntil(b"\r\n\r\n")
        self.raw += raw
        return raw

    async def chunk(self) -> tuple[bytes, bytes]:
        """One HTTP chunk: (its size line without CRLF, its data)."""
        line = await self.reader.readuntil(b"\r\n")
        size = int(line[:-2], 16)
        data = await self.reader.readexactly(size)
        tail = await self.reader.readexactly(2)
        assert tail == b"\r\n", f"expected CRLF after chunk data, got {tail!r}"
        self.raw += line + data + tail
        return line[:-2], data

    async def frame_chunks(self) -> tuple[bytes, bytes, bytes]:
        """The three chunk payloads of one frame (not fed to the parser)."""
        pieces = []
        for _ in range(3):
            _, data = await self.chunk()
            pieces.append(data)
        return pieces[0], pieces[1], pieces[2]

    async def parts(self, n: int) -> list[Part]:
        """Read chunks until the multipart parser has produced ``n`` parts."""
        parts: list[Part] = []
        while len(parts) < n:
            _, data = await self.chunk()
            parts.extend(self.parser.feed(data))
        assert len(parts) == n, f"expected {n} parts, got {len(parts)}"
        return parts

    async def read_to_eof(self) -> bytes:
        rest = await self.reader.read()
        self.raw += rest
        return rest

    def close(self) -> None:
        self.writer.close()


def decode(jpeg: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(jpeg, dtype=np.uint8), cv2.IMREAD_COLOR)
    assert img is not None, f"expected a decodable JPEG, got {len(jpeg)} bytes"
    return img
