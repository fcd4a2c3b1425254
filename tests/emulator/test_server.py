from __future__ import annotations

import asyncio
import errno
import gzip
import json
import logging
import socket
from pathlib import Path

import pytest

from espdetect.emulator import Emulator, EmulatorConfig
from espdetect.emulator.framesizes import FirmwareGeneration
from espdetect.mjpeg import ESP32_BOUNDARY

from ._wire import BOUNDARY_CHUNK, PART_HEAD, StreamClient, decode, get, read_response

pytestmark = pytest.mark.anyio

STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: multipart/x-mixed-replace;boundary=123456789000000000000987654321\r\n"
    b"Transfer-Encoding: chunked\r\n"
    b"Access-Control-Allow-Origin: *\r\n"
    b"X-Framerate: 60\r\n"
    b"\r\n"
)


def fast(**kwargs: object) -> EmulatorConfig:
    """A small, quick emulator config for tests."""
    options: dict[str, object] = {"fps": 50.0, "loop_frames": 8}
    options.update(kwargs)
    return EmulatorConfig(**options)  # type: ignore[arg-type]


async def test_stream_bytes_match_the_firmware() -> None:
    async with Emulator(fast(uptime=1000.0)) as emu:
        client = await StreamClient.open(emu.stream_port)
        assert await client.head() == STREAM_HEAD
        stamps = []
        for _ in range(3):
            size_lines = []
            pieces = []
            for _ in range(3):
                size_line, data = await client.chunk()
                size_lines.append(size_line)
                pieces.append(data)
            boundary, head, jpeg = pieces
            assert size_lines[0] == b"24"
            assert boundary == BOUNDARY_CHUNK
            assert size_lines[1] == b"%x" % len(head)
            assert size_lines[2] == b"%x" % len(jpeg)
            assert all(line == line.lower() for line in size_lines)
            match = PART_HEAD.match(head)
            assert match is not None, head
            assert int(match[1]) == len(jpeg)
            assert jpeg[:2] == b"\xff\xd8" and jpeg[-2:] == b"\xff\xd9"
            stamps.append(float(match[2] + b"." + match[3]))
        # Seconds since emulated boot (uptime=1000), not Unix time, and increasing.
        assert 1000 <= stamps[0] < stamps[1] < stamps[2] < 100_000
        client.close()


async def test_stream_parses_into_decodable_frames() -> None:
    async with Emulator(fast(size=(320, 240))) as emu:
        client = await StreamClient.open(emu.stream_port)
        await client.head()
        parts = await client.parts(4)
        client.close()
    assert all(p.is_complete_jpeg for p in parts)
    assert all(p.content_type == "image/jpeg" for p in parts)
    assert all(decode(p.body).shape == (240, 320, 3) for p in parts)
    assert client.parser.stats.garbage_bytes == 0 and client.parser.stats.length_mismatch == 0
    # A moving scene: consecutive frames differ.
    assert len({p.body for p in parts}) == 4


async def test_stream_ends_without_terminator_when_emulator_stops() -> None:
    emu = Emulator(fast())
    await emu.start()
    client = await StreamClient.open(emu.stream_port)
    await client.head()
    await client.parts(2)
    await emu.stop()
    await asyncio.wait_for(client.read_to_eof(), 10)
    raw = bytes(client.raw)
    assert not raw.endswith(b"0\r\n\r\n")
    assert f"--{ESP32_BOUNDARY}--".encode() not in raw
    client.close()


async def test_second_stream_client_waits_unanswered_until_first_leaves() -> None:
    async with Emulator(fast()) as emu:
        first = await StreamClient.open(emu.stream_port)
        await first.head()
        await emu.wait_stream_clients(1)

        second = socket.create_connection(("127.0.0.1", emu.stream_port))
        second.sendall(b"GET /stream HTTP/1.1\r\nHost: cam\r\n\r\n")
        await emu.wait_until(lambda s: s.stream_waiting == 1)
        await first.parts(3)  # the first stream keeps flowing meanwhile
        second.setblocking(False)
        with pytest.raises(BlockingIOError):
            second.recv(1)  # accepted by the kernel, not a byte of answer
        assert emu.stats.stream_clients == 1

        first.close()
        loop = asyncio.get_running_loop()
        head = b""
        while b"\r\n\r\n" not in head:
            head += await asyncio.wait_for(loop.sock_recv(second, 4096), 10)
        assert head.startswith(STREAM_HEAD)
        stats = await emu.wait_stream_clients(1)
        assert stats.streams_total == 2
        second.close()
        await emu.wait_stream_clients(0)


async def test_waiting_client_that_leaves_never_gets_a_slot() -> None:
    async with Emulator(fast()) as emu:
        first = await StreamClient.open(emu.stream_port)
        await first.head()
        second = await StreamClient.open(emu.stream_port)
        await emu.wait_until(lambda s: s.stream_waiting == 1)
        second.close()
        await emu.wait_until(lambda s: s.stream_waiting == 0)
        first.close()
        stats = await emu.wait_stream_clients(0)
        assert stats.streams_total == 1


async def test_max_stream_clients_serves_several_at_once() -> None:
    async with Emulator(fast(max_stream_clients=2)) as emu:
        clients = [await StreamClient.open(emu.stream_port) for _ in range(2)]
        for client in clients:
            assert await client.head() == STREAM_HEAD
            await client.parts(2)
        assert emu.stats.stream_clients == 2
        for client in clients:
            client.close()
        await emu.wait_stream_clients(0)


STATUS_KEYS: dict[str, list[str]] = {
    "legacy": [
        "framesize",
        "quality",
        "brightness",
        "contrast",
        "saturation",
        "sharpness",
        "special_effect",
        "wb_mode",
        "awb",
        "awb_gain",
        "aec",
        "aec2",
        "ae_level",
        "aec_value",
        "agc",
        "agc_gain",
        "gainceiling",
        "bpc",
        "wpc",
        "raw_gma",
        "lenc",
        "vflip",
        "hmirror",
        "dcw",
        "colorbar",
        "face_detect",
        "face_enroll",
        "face_recognize",
    ],
    "2.x": [
        "0xd3",
        "0x111",
        "0x132",
        "xclk",
        "pixformat",
        "framesize",
        "quality",
        "brightness",
        "contrast",
        "saturation",
        "sharpness",
        "special_effect",
        "wb_mode",
        "awb",
        "awb_gain",
        "aec",
        "aec2",
        "ae_level",
        "aec_value",
        "agc",
        "agc_gain",
        "gainceiling",
        "bpc",
        "wpc",
        "raw_gma",
        "lenc",
        "hmirror",
        "dcw",
        "colorbar",
        "led_intensity",
        "face_detect",
    ],
    "3.x": [
        "0xd3",
        "0x111",
        "0x132",
        "xclk",
        "pixformat",
        "framesize",
        "quality",
        "brightness",
        "contrast",
        "saturation",
        "sharpness",
        "special_effect",
        "wb_mode",
        "awb",
        "awb_gain",
        "aec",
        "aec2",
        "ae_level",
        "aec_value",
        "agc",
        "agc_gain",
        "gainceiling",
        "bpc",
        "wpc",
        "raw_gma",
        "lenc",
        "hmirror",
        "dcw",
        "colorbar",
        "led_intensity",
    ],
}


@pytest.mark.parametrize(
    ("firmware", "qvga"),
    [
        pytest.param("legacy", 4, id="legacy"),
        pytest.param("2.x", 5, id="2.x"),
        pytest.param("3.x", 6, id="3.x"),
    ],
)
async def test_status_is_one_line_of_firmware_keys(firmware: FirmwareGeneration, qvga: int) -> None:
    async with Emulator(fast(firmware=firmware, size=(320, 240), quality=10)) as emu:
        reply = await get(emu.control_port, "/status")
    assert reply.raw_head == (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nAccess-Control-Allow-Origin: *\r\n\r\n" % len(reply.body)
    )
    text = reply.body.decode()
    assert " " not in text and "\n" not in text
    status = json.loads(text)
    assert list(status) == STATUS_KEYS[firmware]
    assert status["framesize"] == qvga
    assert status["quality"] == 10
    if firmware != "legacy":
        assert status["pixformat"] == 4


@pytest.mark.parametrize(
    ("firmware", "vga"),
    [
        pytest.param("legacy", 6, id="legacy"),
        pytest.param("2.x", 8, id="2.x"),
        pytest.param("3.x", 10, id="3.x"),
    ],
)
async def test_control_framesize_changes_the_streamed_resolution(
    firmware: FirmwareGeneration, vga: int
) -> None:
    async with Emulator(fast(firmware=firmware, size=(320, 240))) as emu:
        client = await StreamClient.open(emu.stream_port)
        await client.head()
        (before,) = await client.parts(1)
        assert decode(before.body).shape == (240, 320, 3)

        reply = await get(emu.control_port, f"/control?var=framesize&val={vga}")
        assert reply.raw_head == (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 0\r\n"
            b"Access-Control-Allow-Origin: *\r\n\r\n"
        )
        assert reply.body == b""
        # A frame already on its way may still be the old size; the one after is the new one.
        parts = await client.parts(2)
        assert decode(parts[-1].body).shape == (480, 640, 3)
        status = json.loads((await get(emu.control_port, "/status")).body)
        assert status["framesize"] == vga
        assert emu.frame_size == (640, 480)
        client.close()


async def test_control_quality_changes_jpeg_size() -> None:
    async with Emulator(fast(loop_frames=1, quality=4)) as emu:
        fine = await get(emu.control_port, "/capture")
        assert (await get(emu.control_port, "/control?var=quality&val=63")).status_line == "HTTP/1.1 200 OK"
        coarse = await get(emu.control_port, "/capture")
        assert json.loads((await get(emu.control_port, "/status")).body)["quality"] == 63
    assert len(coarse.body) < len(fine.body) / 2
    assert decode(coarse.body).shape == decode(fine.body).shape


async def test_control_other_variables_are_stored_and_reported() -> None:
    async with Emulator(fast()) as emu:
        for var, val in (("brightness", 2), ("hmirror", 1), ("led_intensity", 200), ("ae_level", -2)):
            reply = await get(emu.control_port, f"/control?var={var}&val={val}")
            assert reply.status_line == "HTTP/1.1 200 OK", var
        status = json.loads((await get(emu.control_port, "/status")).body)
    assert (status["brightness"], status["hmirror"], status["led_intensity"], status["ae_level"]) == (
        2,
        1,
        200,
        -2,
    )


@pytest.mark.parametrize(
    ("target", "status", "closes"),
    [
        pytest.param("/control", "404 Not Found", True, id="no-query"),
        pytest.param("/control?var=quality", "404 Not Found", True, id="no-val"),
        pytest.param("/control?val=3", "404 Not Found", True, id="no-var"),
        pytest.param("/control?var=quality&val=" + "1" * 40, "404 Not Found", True, id="val-too-long"),
        pytest.param("/control?var=bogus&val=1", "500 Internal Server Error", False, id="unknown-var"),
        pytest.param("/control?var=framesize&val=99", "500 Internal Server Error", False, id="bad-framesize"),
        pytest.param("/control?var=quality&val=64", "500 Internal Server Error", False, id="bad-quality"),
        pytest.param("/nope", "404 Not Found", True, id="unknown-path"),
        pytest.param("/stream", "404 Not Found", True, id="stream-on-control-port"),
    ],
)
async def test_control_port_errors(target: str, status: str, closes: bool) -> None:
    async with Emulator(fast()) as emu:
        reader, writer = await asyncio.open_connection("127.0.0.1", emu.control_port)
        writer.write(f"GET {target} HTTP/1.1\r\nHost: cam\r\n\r\n".encode())
        reply = await read_response(reader)
        assert reply.status_line == f"HTTP/1.1 {status}"
        assert reply.header("Content-Type") == "text/html"
        assert [name for name, _ in reply.headers] == ["Content-Type", "Content-Length"]
        if closes:
            assert await reader.read() == b""
        else:
            # esp_http_server keeps the connection for the next request.
            writer.write(b"GET /status HTTP/1.1\r\nHost: cam\r\n\r\n")
            assert (await read_response(reader)).status_line == "HTTP/1.1 200 OK"
        writer.close()


async def test_not_found_reply_is_idf_text() -> None:
    async with Emulator(fast()) as emu:
        reply = await get(emu.control_port, "/favicon.ico")
        stream_port_reply = await get(emu.stream_port, "/capture")
        wrong_method = await get(emu.control_port, "/status", method="POST")
    expected = b"HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\nContent-Length: 23\r\n\r\n"
    assert reply.raw_head == expected and reply.body == b"This URI does not exist"
    assert stream_port_reply.raw_head == expected
    assert wrong_method.status_line == "HTTP/1.1 405 Method Not Allowed"


async def test_capture_headers_and_image() -> None:
    async with Emulator(fast(size=(320, 240), uptime=50.0)) as emu:
        reply = await get(emu.control_port, "/capture")
    assert reply.status_line == "HTTP/1.1 200 OK"
    names = [name for name, _ in reply.headers]
    assert names == [
        "Content-Type",
        "Content-Length",
        "Content-Disposition",
        "Access-Control-Allow-Origin",
        "X-Timestamp",
    ]
    assert reply.header("Content-Type") == "image/jpeg"
    assert reply.header("Content-Disposition") == "inline; filename=capture.jpg"
    assert reply.header("Access-Control-Allow-Origin") == "*"
    stamp = reply.header("X-Timestamp")
    assert stamp is not None
    seconds, _, micros = stamp.partition(".")
    assert len(micros) == 6 and micros.isdigit() and 50 <= int(seconds) < 1000
    assert decode(reply.body).shape == (240, 320, 3)


async def test_legacy_capture_has_no_timestamp() -> None:
    async with Emulator(fast(firmware="legacy")) as emu:
        reply = await get(emu.control_port, "/capture")
    assert [name for name, _ in reply.headers] == ["Content-Type", "Content-Length", "Content-Disposition"]
    assert reply.body[:2] == b"\xff\xd8"


async def test_oversized_request_head_gets_431_and_close() -> None:
    async with Emulator(fast()) as emu:
        reader, writer = await asyncio.open_connection("127.0.0.1", emu.control_port)
        writer.write(b"GET /status HTTP/1.1\r\nX-Junk: " + b"a" * 10_000 + b"\r\n\r\n")
        reply = await read_response(reader)
        assert reply.status_line == "HTTP/1.1 431 Request Header Fields Too Large"
        assert await reader.read() == b""
        writer.close()


async def test_index_page_is_gzipped_html_pointing_at_the_stream() -> None:
    async with Emulator(fast()) as emu:
        reply = await get(emu.control_port, "/")
        port = emu.stream_port
    assert [name for name, _ in reply.headers] == ["Content-Type", "Content-Length", "Content-Encoding"]
    assert reply.header("Content-Type") == "text/html"
    assert reply.header("Content-Encoding") == "gzip"
    html = gzip.decompress(reply.body).decode()
    assert html.startswith("<!DOCTYPE html>") and f":{port}/stream" in html


async def test_fixed_port_puts_stream_on_next_port() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    if port >= 65534:
        pytest.skip("ephemeral port at the top of the range")
    try:
        emu = Emulator(fast(), port=port)
        await emu.start()
    except OSError:
        pytest.skip(f"port {port} or {port + 1} is taken")
    try:
        assert emu.control_url == f"http://127.0.0.1:{port}"
        assert emu.stream_url == f"http://127.0.0.1:{port + 1}/stream"
        assert emu.capture_url == f"http://127.0.0.1:{port}/capture"
        client = await StreamClient.open(port + 1)
        assert await client.head() == STREAM_HEAD
        client.close()
    finally:
        await emu.stop()


async def test_busy_port_names_the_server_that_cannot_listen() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        if port > 65534:
            pytest.skip("ephemeral port at the top of the range")
        with pytest.raises(OSError) as caught:
            await Emulator(fast(), port=port).start()
    assert caught.value.errno == errno.EADDRINUSE
    assert caught.value.strerror == f"address 127.0.0.1:{port} (control server) is already in use"


async def test_stats_count_connections_and_requests() -> None:
    async with Emulator(fast()) as emu:
        await get(emu.control_port, "/status")
        await get(emu.control_port, "/status")
        client = await StreamClient.open(emu.stream_port)
        await client.head()
        await client.parts(3)
        stats = await emu.wait_frames(3)
        client.close()
        stats = await emu.wait_stream_clients(0)
    assert stats.connections_total == 3
    assert stats.control_requests == 2
    assert stats.streams_total == 1
    assert stats.frames_sent >= 3
    assert stats.bytes_sent >= len(client.raw)


async def test_bad_config_is_rejected() -> None:
    from espdetect.exceptions import ConfigurationError

    with pytest.raises(ConfigurationError, match="framesize"):
        EmulatorConfig(framesize=14, firmware="2.x")
    with pytest.raises(ConfigurationError, match="quality"):
        EmulatorConfig(quality=64)
    with pytest.raises(ConfigurationError, match="fps"):
        EmulatorConfig(fps=0)
    with pytest.raises(ConfigurationError, match="firmware"):
        EmulatorConfig(firmware="4.x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="port"):
        Emulator(port=65535)
    assert EmulatorConfig(framesize=15, firmware="3.x").frame_size == (1600, 1200)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        pytest.param({"noise": -1}, "noise", id="noise-negative"),
        pytest.param({"noise": 128}, "noise", id="noise-too-big"),
        pytest.param({"noise": 1.5}, "noise", id="noise-not-int"),
        pytest.param({"noise": True}, "noise", id="noise-bool"),
        pytest.param({"brightness_ramp": -300.0}, "brightness_ramp", id="ramp-too-dark"),
        pytest.param({"brightness_ramp": float("inf")}, "brightness_ramp", id="ramp-inf"),
        pytest.param({"still_seconds": -0.5}, "still_seconds", id="still-negative"),
        pytest.param({"still_seconds": float("nan")}, "still_seconds", id="still-nan"),
        pytest.param({"scene": "yard", "fps": 0.5}, "fps", id="yard-fps"),
    ],
)
async def test_bad_scene_settings_name_the_field(kwargs: dict[str, object], field: str) -> None:
    from espdetect.exceptions import ConfigurationError

    with pytest.raises(ConfigurationError, match=field) as info:
        EmulatorConfig(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


async def test_scene_settings_are_kept() -> None:
    cfg = EmulatorConfig(scene="yard", fps=None, noise=4, brightness_ramp=-30.0, still_seconds=0.0)
    assert (cfg.scene, cfg.noise, cfg.brightness_ramp, cfg.still_seconds) == ("yard", 4, -30.0, 0.0)
    assert cfg.timeline_fps == 15.0 and EmulatorConfig(fps=25.0).timeline_fps == 25.0
    assert EmulatorConfig(scene="photos", fps=0.5).scene == "photos"  # only the yard needs fps >= 1
    garden = EmulatorConfig(scene="garden")  # type: ignore[arg-type]  # other strings are taken as paths
    assert garden.scene == Path("garden")


async def test_client_that_stops_reading_is_dropped_after_send_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="espdetect.emulator.server")
    cfg = fast(fps=None, size=(1600, 1200), loop_frames=2, send_timeout=0.3)
    async with Emulator(cfg) as emu:
        sock = socket.create_connection(("127.0.0.1", emu.stream_port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET /stream HTTP/1.1\r\nHost: cam\r\n\r\n")
        await emu.wait_stream_clients(1)
        # Never read: socket buffers fill up, the emulator's write waits, then gives up.
        stats = await emu.wait_stream_clients(0, timeout=60)
        assert stats.streams_total == 1
        sock.close()
    assert "client read nothing for 0.3 s" in caplog.text
