from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Sequence
from functools import cache

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from espdetect.mjpeg import (
    ESP32_BOUNDARY,
    ESP32_STREAM_CONTENT_TYPE,
    MultipartParser,
    Part,
    boundary_from_content_type,
    esp32_legacy_part,
    esp32_part_pieces,
    format_timestamp,
    http_chunk,
    mjpeg_part,
)

B = ESP32_BOUNDARY
SLACK = 8 * 1024 + 256  # the parser's header-block limit plus a boundary line


def _encode(img: np.ndarray, quality: int = 80, progressive: bool = False) -> bytes:
    params = [cv2.IMWRITE_JPEG_QUALITY, quality]
    if progressive:
        params += [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]
    ok, buf = cv2.imencode(".jpg", img, params)
    assert ok
    return buf.tobytes()


def _with_com(jpeg: bytes, payload: bytes) -> bytes:
    """``jpeg`` with a COM segment right after SOI: a valid JPEG that carries arbitrary bytes."""
    return jpeg[:2] + b"\xff\xfe" + (len(payload) + 2).to_bytes(2, "big") + payload + jpeg[2:]


@cache
def jpegs() -> tuple[bytes, ...]:
    """A few real JPEGs: noise, flat, gradient, and ones carrying boundary-like bytes."""
    rng = np.random.default_rng(1)
    noise = _encode(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8), 60)
    flat = _encode(np.full((16, 16, 3), 200, np.uint8), 90)
    grad = _encode(np.tile(np.arange(0, 256, 8, dtype=np.uint8), (16, 1))[:, :, None].repeat(3, 2), 75)
    dashes = _with_com(flat, b"\r\n--\r\n--12345\r\n\r\n")
    # The whole delimiter, then something shaped like part headers: only Content-Length can tell.
    evil = _with_com(noise, b"\r\n--" + B.encode() + b"\r\nContent-Type: image/jpeg\r\n\r\n")
    return (noise, flat, grad, dashes, evil)


def test_crafted_jpegs_are_valid_and_carry_the_tricky_bytes() -> None:
    for j in jpegs():
        img = cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR)
        assert img is not None
    assert b"\r\n--" in jpegs()[3]
    assert b"\r\n--" + B.encode() + b"\r\n" in jpegs()[4]


def esp32_stream(bodies: Sequence[bytes], t0: float = 12.0) -> bytes:
    return b"".join(b"".join(esp32_part_pieces(j, t0 + i / 30)) for i, j in enumerate(bodies))


def legacy_stream(bodies: Sequence[bytes]) -> bytes:
    return b"".join(b"".join(esp32_legacy_part(j)) for j in bodies)


def feed_pieces(parser: MultipartParser, pieces: Iterable[bytes]) -> list[Part]:
    out: list[Part] = []
    for piece in pieces:
        out += parser.feed(piece)
    return out


def split_at(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    points = sorted({min(max(c, 0), len(data)) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def _parse(data: bytes, pieces: Iterable[bytes] | None = None) -> tuple[list[Part], MultipartParser]:
    p = MultipartParser(B)
    return feed_pieces(p, [data] if pieces is None else pieces), p


# -- writers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        pytest.param(1234.5678901, "1234.567890", id="truncates-to-us"),
        pytest.param(0.000001, "0.000001", id="one-us"),
        pytest.param(0.0, "0.000000", id="zero"),
        pytest.param(5.0, "5.000000", id="whole"),
        pytest.param(59.9999996, "60.000000", id="rounds-up-carry"),
        pytest.param(4294.967295, "4294.967295", id="u32-us"),
        pytest.param(1_700_000_000.25, "1700000000.250000", id="unix"),
    ],
)
def test_format_timestamp(seconds: float, text: str) -> None:
    assert format_timestamp(seconds) == text


def test_http_chunk_framing_is_lowercase_hex() -> None:
    assert http_chunk(b"x" * 0x2B) == b"2b\r\n" + b"x" * 0x2B + b"\r\n"
    assert http_chunk(b"") == b"0\r\n\r\n"
    assert http_chunk(b"x" * 12345).startswith(b"3039\r\n")


def test_esp32_part_pieces_match_the_firmware_bytes() -> None:
    jpeg = b"\xff\xd8" + b"\x00" * 12341 + b"\xff\xd9"
    boundary, head, body = esp32_part_pieces(jpeg, 1234.56789)
    assert boundary == b"\r\n--123456789000000000000987654321\r\n"
    assert len(boundary) == 0x24
    assert http_chunk(boundary).startswith(b"24\r\n")
    assert head == (b"Content-Type: image/jpeg\r\nContent-Length: 12345\r\nX-Timestamp: 1234.567890\r\n\r\n")
    assert http_chunk(head).startswith(b"4d\r\n")
    assert body is jpeg
    assert http_chunk(body).startswith(b"3039\r\n")


def test_esp32_legacy_part_order_and_headers() -> None:
    head, body, boundary = esp32_legacy_part(b"\xff\xd8ab\xff\xd9")
    assert head == b"Content-Type: image/jpeg\r\nContent-Length: 6\r\n\r\n"
    assert body == b"\xff\xd8ab\xff\xd9"
    assert boundary == b"\r\n--" + B.encode() + b"\r\n"


def test_mjpeg_part_layout_and_round_trip() -> None:
    jpeg = jpegs()[1]
    part = mjpeg_part(jpeg, 1_700_000_000.5, "frame")
    assert part.startswith(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n" % len(jpeg))
    assert b"X-Timestamp: 1700000000.500000\r\n\r\n" in part
    assert part.endswith(jpeg + b"\r\n")
    parsed = MultipartParser("frame").feed(part * 3)
    assert [p.body for p in parsed] == [jpeg] * 3
    assert parsed[0].timestamp == pytest.approx(1_700_000_000.5)


def test_stream_content_type_constant() -> None:
    assert ESP32_STREAM_CONTENT_TYPE == "multipart/x-mixed-replace;boundary=" + B
    assert boundary_from_content_type(ESP32_STREAM_CONTENT_TYPE) == B


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        pytest.param("multipart/x-mixed-replace;boundary=abc", "abc", id="esp32-no-space"),
        pytest.param("multipart/x-mixed-replace; boundary=abc", "abc", id="space"),
        pytest.param('multipart/x-mixed-replace; boundary="abc"', "abc", id="quoted"),
        pytest.param("multipart/x-mixed-replace; boundary = abc ", "abc", id="spaces-around-eq"),
        pytest.param("multipart/x-mixed-replace;boundary=--myboundary", "myboundary", id="leading-dashes"),
        pytest.param('multipart/x-mixed-replace; boundary="--frame"', "frame", id="quoted-dashes"),
        pytest.param("Multipart/X-Mixed-Replace; BOUNDARY=Frame", "Frame", id="case-keeps-value"),
        pytest.param("multipart/x-mixed-replace; charset=x; boundary=b2", "b2", id="later-param"),
        pytest.param("multipart/x-mixed-replace", None, id="missing"),
        pytest.param("multipart/x-mixed-replace; boundary=", None, id="empty"),
        pytest.param('multipart/x-mixed-replace; boundary=""', None, id="empty-quoted"),
        pytest.param("image/jpeg; boundary=abc", None, id="not-multipart"),
        pytest.param("", None, id="blank"),
    ],
)
def test_boundary_from_content_type(content_type: str, expected: str | None) -> None:
    assert boundary_from_content_type(content_type) == expected


# -- parser: happy paths ---------------------------------------------------------------------


def test_parser_validates_arguments() -> None:
    with pytest.raises(ValueError, match="boundary"):
        MultipartParser("")
    with pytest.raises(ValueError, match="at least 1024 bytes, got 10"):
        MultipartParser(B, max_part_size=10)


def test_esp32_stream_parts_headers_and_timestamps() -> None:
    bodies = jpegs()
    parts, p = _parse(esp32_stream(bodies, t0=100.0))
    assert [x.body for x in parts] == list(bodies)
    assert all(x.is_complete_jpeg for x in parts)
    assert parts[0].content_type == "image/jpeg"
    assert parts[0].headers["content-length"] == str(len(bodies[0]))
    assert [x.timestamp for x in parts] == pytest.approx([100.0 + i / 30 for i in range(len(bodies))])
    assert p.stats.parts == len(bodies)
    assert (p.stats.garbage_bytes, p.stats.resyncs, p.stats.length_mismatch, p.stats.bad_headers) == (
        0,
        0,
        0,
        0,
    )
    assert p.buffered == 0


def test_legacy_stream_without_leading_boundary_or_timestamp() -> None:
    bodies = jpegs()
    parts, p = _parse(legacy_stream(bodies))
    assert [x.body for x in parts] == list(bodies)
    assert all(x.timestamp is None for x in parts)
    assert p.stats.garbage_bytes == 0
    assert p.stats.length_mismatch == 0


def test_dechunked_http_stream_round_trip() -> None:
    """What the firmware writes, chunk framing removed the way an HTTP client would."""
    bodies = jpegs()[:2]
    wire = b"".join(http_chunk(piece) for j in bodies for piece in esp32_part_pieces(j, 3.0))
    body = bytearray()
    rest = wire
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        n = int(size_line, 16)
        body += rest[:n]
        assert rest[n : n + 2] == b"\r\n"
        rest = rest[n + 2 :]
    assert [x.body for x in _parse(bytes(body))[0]] == list(bodies)


@pytest.mark.parametrize("layout", ["esp32", "legacy"])
def test_every_two_piece_split(layout: str) -> None:
    bodies = [jpegs()[1], jpegs()[3]]
    data = esp32_stream(bodies) if layout == "esp32" else legacy_stream(bodies)
    for cut in range(len(data) + 1):
        parts, p = _parse(data, [data[:cut], data[cut:]])
        assert [x.body for x in parts] == bodies, f"split at {cut}"
        assert p.stats.length_mismatch == 0, f"split at {cut}"


@pytest.mark.parametrize("layout", ["esp32", "legacy"])
def test_one_byte_at_a_time(layout: str) -> None:
    bodies = list(jpegs())
    data = esp32_stream(bodies) if layout == "esp32" else legacy_stream(bodies)
    parts, p = _parse(data, (data[i : i + 1] for i in range(len(data))))
    assert [x.body for x in parts] == bodies
    assert p.stats.length_mismatch == 0
    assert p.stats.garbage_bytes == 0


@pytest.mark.parametrize("layout", ["esp32", "legacy"])
def test_random_splits(layout: str) -> None:
    bodies = list(jpegs()) * 2
    data = esp32_stream(bodies) if layout == "esp32" else legacy_stream(bodies)
    rng = random.Random(7)
    for _ in range(40):
        cuts = [rng.randrange(len(data)) for _ in range(rng.randrange(1, 60))]
        assert [x.body for x in _parse(data, split_at(data, cuts))[0]] == bodies


def test_embedded_delimiter_in_jpeg_does_not_cut_a_part_with_content_length() -> None:
    """Content-Length is authoritative: a JPEG carrying the delimiter must survive any split."""
    evil = jpegs()[4]
    data = esp32_stream([evil, jpegs()[1]])
    start = data.index(evil)
    for cut in range(start, start + len(evil) + 1, 7):
        parts, p = _parse(data, [data[:cut], data[cut:]])
        assert [x.body for x in parts] == [evil, jpegs()[1]], f"split at {cut}"
        assert p.stats.length_mismatch == 0


@pytest.mark.parametrize("layout", ["esp32", "legacy"])
def test_part_with_content_length_is_emitted_on_its_last_byte(layout: str) -> None:
    """Latency: no waiting for the next boundary once Content-Length bytes are in."""
    jpeg = jpegs()[0]
    if layout == "esp32":
        boundary, head, _ = esp32_part_pieces(jpeg, 1.0)
        prefix = boundary + head
    else:
        prefix = esp32_legacy_part(jpeg)[0]
    p = MultipartParser(B)
    assert p.feed(prefix + jpeg[:-1]) == []
    parts = p.feed(jpeg[-1:])
    assert [x.body for x in parts] == [jpeg]
    # Byte at a time as well: nothing early, the part exactly on the last byte.
    p = MultipartParser(B)
    data = prefix + jpeg
    for i in range(len(data) - 1):
        assert p.feed(data[i : i + 1]) == []
    assert [x.body for x in p.feed(data[-1:])] == [jpeg]


# -- parser: broken input ---------------------------------------------------------------------


def test_part_without_content_length_is_cut_at_the_boundary() -> None:
    a, b = jpegs()[0], jpegs()[3]  # b carries "\r\n--" that is not the delimiter
    head = b"Content-Type: image/jpeg\r\n\r\n"
    data = b"".join(b"\r\n--" + B.encode() + b"\r\n" + head + j for j in (a, b)) + b"\r\n--" + B.encode()
    for pieces in ([data], [data[i : i + 1] for i in range(len(data))]):
        p = MultipartParser(B)
        parts = feed_pieces(p, pieces)
        assert [x.body for x in parts] == [a, b]
        assert "content-length" not in parts[0].headers


def test_part_without_content_length_waits_for_the_boundary() -> None:
    jpeg = jpegs()[1]
    p = MultipartParser(B)
    assert p.feed(b"\r\n--" + B.encode() + b"\r\nContent-Type: image/jpeg\r\n\r\n" + jpeg) == []
    assert p.feed(b"\r\n--" + B.encode()[:5]) == []
    assert [x.body for x in p.feed(B.encode()[5:] + b"\r\n")] == [jpeg]


def test_boundary_without_preceding_crlf_is_accepted_when_scanning() -> None:
    jpeg = jpegs()[1]
    head = b"--" + B.encode() + b"\r\nContent-Type: image/jpeg\r\n\r\n"
    parts = MultipartParser(B).feed(head + jpeg + b"\n" + head + jpeg + b"\n--" + B.encode())
    assert [x.body for x in parts] == [jpeg, jpeg]


@pytest.mark.parametrize("layout", ["esp32", "legacy"])
@pytest.mark.parametrize("delta", [-7, -1, 1, 9, 5000])
def test_lying_content_length_is_recut_at_the_boundary(layout: str, delta: int) -> None:
    a, b, c = jpegs()[0], jpegs()[1], jpegs()[2]
    if layout == "esp32":
        lied = b"".join(esp32_part_pieces(a, 1.0)).replace(
            b"Content-Length: %d" % len(a), b"Content-Length: %d" % (len(a) + delta)
        )
        data = lied + esp32_stream([b, c])
    else:
        lied = b"".join(esp32_legacy_part(a)).replace(
            b"Content-Length: %d" % len(a), b"Content-Length: %d" % (len(a) + delta)
        )
        data = lied + legacy_stream([b, c])
    for pieces in ([data], [data[i : i + 1] for i in range(len(data))], split_at(data, range(0, 9999, 97))):
        p = MultipartParser(B)
        parts = feed_pieces(p, pieces)
        assert [x.body for x in parts] == [a, b, c]
        assert p.stats.length_mismatch == 1


@pytest.mark.parametrize("with_length", [True, False], ids=["content-length", "no-length"])
def test_oversize_part_is_dropped_counted_and_never_buffered(with_length: bool) -> None:
    limit = 2048
    big = b"\xff\xd8" + bytes(range(256)) * 40 + b"\xff\xd9"  # 10 KiB
    small = jpegs()[1]
    assert len(small) < limit
    head = b"Content-Type: image/jpeg\r\n" + (b"Content-Length: %d\r\n" % len(big) if with_length else b"")
    delim = b"\r\n--" + B.encode() + b"\r\n"
    data = delim + head + b"\r\n" + big + esp32_stream([small, small])
    p = MultipartParser(B, max_part_size=limit)
    parts: list[Part] = []
    peak = 0
    oversize_end = data.index(big) + len(big)
    fed = 0
    for piece in split_at(data, range(0, len(data), 100)):
        parts += p.feed(piece)
        fed += len(piece)
        if fed <= oversize_end:
            peak = max(peak, p.buffered)
    assert [x.body for x in parts] == [small, small]
    assert p.stats.oversize == 1
    assert peak <= (len(delim) + 100 if with_length else limit + 100)


def test_oversize_part_fed_at_once_leaves_a_small_buffer() -> None:
    big = b"\xff\xd8" + bytes(50_000) + b"\xff\xd9"
    p = MultipartParser(B, max_part_size=4096)
    assert p.feed(b"\r\n--" + B.encode() + b"\r\nContent-Type: image/jpeg\r\n\r\n" + big) == []
    assert p.stats.oversize == 1
    assert p.buffered < 64


def test_garbage_before_first_part_is_skipped_and_counted() -> None:
    garbage = b"\x00\x01junk\xff\xd8 not a part\r\n"
    parts, p = _parse(garbage + esp32_stream([jpegs()[0]]))
    assert [x.body for x in parts] == [jpegs()[0]]
    assert p.stats.garbage_bytes > 0
    assert p.stats.resyncs >= 1


def test_broken_header_block_resynchronises() -> None:
    bad = b"\r\n--" + B.encode() + b"\r\nthis is not a header\r\n\r\n" + jpegs()[0]
    parts, p = _parse(bad + esp32_stream([jpegs()[1]]))
    assert [x.body for x in parts] == [jpegs()[1]]
    assert p.stats.bad_headers == 1


@pytest.mark.parametrize(
    "junk",
    [
        pytest.param(b"--" + B.encode(), id="stray-delimiter"),
        pytest.param(b"*:\r\n", id="header-like-line"),
        pytest.param(b"X-Junk: 1\r\n\r\n", id="header-block"),
        pytest.param(b"\r\n--" + B.encode() + b"\r\n\r\n", id="empty-part"),
    ],
)
def test_boundary_like_junk_does_not_swallow_the_next_part(junk: bytes) -> None:
    bodies = [jpegs()[0], jpegs()[1], jpegs()[2]]
    data = esp32_stream(bodies[:1]) + junk + esp32_stream(bodies[1:])
    for pieces in ([data], [data[i : i + 1] for i in range(len(data))]):
        got = [x.body for x in feed_pieces(MultipartParser(B), pieces)]
        assert [g for g in got if g] == bodies


def test_endless_header_block_is_bounded() -> None:
    p = MultipartParser(B)
    p.feed(b"\r\n--" + B.encode() + b"\r\n")
    for _ in range(100):
        p.feed(b"X-Long: " + b"a" * 1000 + b"\r\n")
        assert p.buffered <= SLACK
    assert p.stats.bad_headers >= 1
    assert [x.body for x in p.feed(esp32_stream([jpegs()[1]]))] == [jpegs()[1]]


def test_part_properties() -> None:
    good = Part({"content-type": "image/jpeg", "x-timestamp": "12.5"}, b"\xff\xd8abc\xff\xd9\r\n")
    assert good.is_complete_jpeg
    assert good.timestamp == 12.5
    assert not Part({}, b"\xff\xd8abc").is_complete_jpeg
    assert not Part({}, b"\xff\xd9").is_complete_jpeg
    assert Part({"x-timestamp": "soon"}, b"").timestamp is None
    assert Part({}, b"").timestamp is None
    assert Part({}, b"").content_type == ""


# -- properties -------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=6000), cuts=st.lists(st.integers(0, 6000), max_size=30))
def test_random_bytes_never_raise_and_stay_bounded(data: bytes, cuts: list[int]) -> None:
    p = MultipartParser(B, max_part_size=1024)
    for piece in split_at(data, cuts):
        for part in p.feed(piece):
            assert len(part.body) <= 1024
        assert p.buffered <= 1024 + SLACK


_delim_ish = st.sampled_from(
    [b"\r\n", b"--", b"\r\n--", b"--" + B.encode(), b"\r\n--" + B.encode()[:10], b":", b"\r\n\r\n", b"A"]
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    chunks=st.lists(st.one_of(st.binary(max_size=300), _delim_ish), max_size=40),
    cuts=st.lists(st.integers(0, 20000), max_size=20),
)
def test_boundary_flavoured_noise_never_raises_and_stays_bounded(
    chunks: list[bytes], cuts: list[int]
) -> None:
    data = b"".join(chunks)
    p = MultipartParser(B, max_part_size=1024)
    for piece in split_at(data, cuts):
        p.feed(piece)
        assert p.buffered <= 1024 + SLACK


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    garbage=st.lists(
        st.one_of(st.binary(min_size=1, max_size=200), _delim_ish),
        min_size=1,
        max_size=5,
    ),
    legacy=st.booleans(),
    cuts=st.lists(st.integers(0, 30000), max_size=25),
)
def test_garbage_between_parts_resynchronises(garbage: list[bytes], legacy: bool, cuts: list[int]) -> None:
    """Garbage right before a delimiter: every valid part after it still comes out, in order."""
    bodies = [jpegs()[i % 4] for i in range(6)]
    junk = b"".join(garbage)
    if legacy:
        pieces = [esp32_legacy_part(j) for j in bodies]
        # legacy: head, JPEG, delimiter; junk goes between a JPEG and the delimiter after it
        data = pieces[0][0] + pieces[0][1] + junk + b"".join(pieces[0][2:])
        data += b"".join(b"".join(pc) for pc in pieces[1:])
    else:
        data = esp32_stream(bodies[:1]) + junk + esp32_stream(bodies[1:])
    p = MultipartParser(B)
    parts = feed_pieces(p, split_at(data, cuts))
    got = [x.body for x in parts]
    # The part before the garbage is complete (its Content-Length matched) and so are all after it.
    assert got[0] == bodies[0]
    tail = [g for g in got[1:] if g in bodies]
    assert tail == bodies[1:]
    assert p.buffered < 64
