from __future__ import annotations

import re

import pytest

from espdetect.emulator.framesizes import (
    FIRMWARE_GENERATIONS,
    framesize_for,
    framesize_table,
    nearest_framesize,
    size_of_framesize,
)
from espdetect.framesizes import framesize_value, parse_framesize


@pytest.mark.parametrize(
    ("size", "legacy", "v2", "v3"),
    [
        pytest.param((160, 120), 0, 1, 1, id="QQVGA"),
        pytest.param((176, 144), 2, 2, 3, id="QCIF"),
        pytest.param((240, 176), 3, 3, 4, id="HQVGA"),
        pytest.param((320, 240), 4, 5, 6, id="QVGA"),
        pytest.param((400, 296), 5, 6, 8, id="CIF"),
        pytest.param((640, 480), 6, 8, 10, id="VGA"),
        pytest.param((800, 600), 7, 9, 11, id="SVGA"),
        pytest.param((1024, 768), 8, 10, 12, id="XGA"),
        pytest.param((1280, 1024), 9, 12, 14, id="SXGA"),
        pytest.param((1600, 1200), 10, 13, 15, id="UXGA"),
    ],
)
def test_enum_values_per_generation(size: tuple[int, int], legacy: int, v2: int, v3: int) -> None:
    assert framesize_for(size, "legacy") == legacy
    assert framesize_for(size, "2.x") == v2
    assert framesize_for(size, "3.x") == v3
    assert size_of_framesize(legacy, "legacy") == size
    assert size_of_framesize(v2, "2.x") == size
    assert size_of_framesize(v3, "3.x") == size


def test_sizes_only_some_generations_have() -> None:
    assert framesize_for((96, 96), "legacy") is None
    assert size_of_framesize(1, "legacy") == (128, 160)
    assert size_of_framesize(7, "2.x") == (480, 320)
    assert size_of_framesize(11, "2.x") == (1280, 720)
    assert size_of_framesize(2, "3.x") == (128, 128)
    assert size_of_framesize(7, "3.x") == (320, 320)


def test_tables_are_dense_and_numbered_by_key() -> None:
    for firmware in FIRMWARE_GENERATIONS:
        table = framesize_table(firmware)
        assert sorted(table) == list(range(len(table)))
        assert all(entry.value == key for key, entry in table.items())


def test_out_of_range_values_and_unknown_firmware_raise() -> None:
    with pytest.raises(ValueError, match="between 0 and 13, got 14"):
        size_of_framesize(14, "2.x")
    with pytest.raises(ValueError, match="got -1"):
        size_of_framesize(-1, "3.x")
    with pytest.raises(ValueError, match="firmware"):
        framesize_table("9.x")  # type: ignore[arg-type]


def test_nearest_framesize_for_sizes_the_sensor_cannot_make() -> None:
    assert nearest_framesize((320, 240), "2.x") == 5
    assert nearest_framesize((336, 252), "2.x") == 5
    assert nearest_framesize((1920, 1080), "2.x") == 13
    assert nearest_framesize((100, 100), "3.x") == 0


def test_the_emulator_module_is_the_library_table() -> None:
    import espdetect.framesizes as library

    assert framesize_table is library.framesize_table
    assert size_of_framesize is library.size_of_framesize


@pytest.mark.parametrize(
    ("text", "name", "size"),
    [
        pytest.param("QVGA", "QVGA", (320, 240), id="name"),
        pytest.param(" vga ", "VGA", (640, 480), id="lower-case"),
        pytest.param("800x600", "SVGA", (800, 600), id="WxH"),
        pytest.param("1280X720", "HD", (1280, 720), id="WXH"),
        pytest.param("96x96", "96X96", (96, 96), id="square-name"),
    ],
)
def test_frame_sizes_by_name_or_width_and_height(text: str, name: str, size: tuple[int, int]) -> None:
    parsed = parse_framesize(text)
    assert (parsed.name, parsed.size) == (name, size)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("HUGE", "expected a frame size name (96X96, QQVGA, QQVGA2", id="unknown-name"),
        pytest.param("8", "a number means different sizes on different firmware", id="number"),
        pytest.param("333x222", "expected a frame size the OV2640 makes", id="odd-size"),
    ],
)
def test_unknown_frame_sizes_list_the_allowed_ones(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_framesize(text)


def test_a_size_has_a_number_per_generation_or_an_error() -> None:
    assert [framesize_value("VGA", g) for g in FIRMWARE_GENERATIONS] == [6, 8, 10]
    assert framesize_value("320x320", "3.x") == 7
    with pytest.raises(ValueError, match=r"expected a frame size that legacy firmware has .*got HD"):
        framesize_value("HD", "legacy")
    with pytest.raises(ValueError, match=re.escape("2.x firmware has")):
        framesize_value("QQVGA2", "2.x")
