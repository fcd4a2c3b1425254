"""One module of constraints: each bound written once, each refusal naming its setting."""

from __future__ import annotations

import numpy as np
import pytest

from espdetect.constraints import (
    IMGSZ,
    JPEG_QUALITY,
    UNIT,
    check_bgr_image,
    check_camera_id,
    check_class_ids,
    check_decode_reduce,
    check_http_url,
    check_skip,
)
from espdetect.exceptions import ConfigurationError


@pytest.mark.parametrize("value", [32, 320, 1280, np.int64(640)])
def test_sizes_in_range(value: object) -> None:
    assert IMGSZ.check("imgsz", value) == int(value)  # type: ignore[call-overload]


@pytest.mark.parametrize("value", [0, 16, 100, 1312, True, 320.0, "320", None])
def test_sizes_out_of_range(value: object) -> None:
    with pytest.raises(
        ConfigurationError, match="expected imgsz to be a multiple of 32 from 32 to 1280"
    ) as info:
        IMGSZ.check("imgsz", value)
    assert info.value.field == "imgsz"


@pytest.mark.parametrize("value", [-0.01, 1.01, float("nan"), float("inf"), True, "0.5", None])
def test_unit_interval_refusals(value: object) -> None:
    with pytest.raises(ConfigurationError, match="expected conf to be a number from 0 to 1"):
        UNIT.check("conf", value)


def test_unit_interval_accepts_ints_and_numpy() -> None:
    assert UNIT.check("conf", 1) == 1.0
    assert UNIT.check("conf", np.float32(0.5)) == 0.5


def test_quality_bounds() -> None:
    assert JPEG_QUALITY.check("quality", 1) == 1 and JPEG_QUALITY.check("quality", 100) == 100
    for bad in (0, 101, 50.0):
        with pytest.raises(ConfigurationError, match="expected quality to be an integer from 1 to 100"):
            JPEG_QUALITY.check("quality", bad)


@pytest.mark.parametrize(("value", "expected"), [("auto", "auto"), (1, 1), (10_000, 10_000)])
def test_skip(value: object, expected: object) -> None:
    assert check_skip(value) == expected


@pytest.mark.parametrize("value", [0, 10_001, "3", True, 2.0, None])
def test_bad_skip(value: object) -> None:
    with pytest.raises(ConfigurationError, match="expected skip to be an integer from 1 to 10000 or 'auto'"):
        check_skip(value)


def test_decode_reduce() -> None:
    assert [check_decode_reduce(v) for v in (1, 2, 4, 8, "auto")] == [1, 2, 4, 8, "auto"]
    for bad in (3, 0, True, "2"):
        with pytest.raises(ConfigurationError, match="expected decode_reduce to be 1, 2, 4, 8 or 'auto'"):
            check_decode_reduce(bad)


def test_class_ids() -> None:
    assert check_class_ids(None) is None
    assert check_class_ids(np.array([3, 1, 3])) == (1, 3)
    for bad in ([], [-1], [True], "0", [0.5], list(range(1001))):
        with pytest.raises(ConfigurationError) as info:
            check_class_ids(bad)
        assert info.value.field == "classes"


@pytest.mark.parametrize("url", ["http://192.168.4.1:81/stream", "https://user:pw@cam.example/stream?x=1"])
def test_http_urls(url: str) -> None:
    assert check_http_url(url) == url


@pytest.mark.parametrize("url", ["ftp://h/s", "http://", "cam.local/stream", "", None, "http://[::1"])
def test_bad_http_urls(url: object) -> None:
    with pytest.raises(ConfigurationError, match="expected url to be an http"):
        check_http_url(url)


def test_camera_ids() -> None:
    assert check_camera_id("front-door_2") == "front-door_2"
    for bad in ("", "a b", "x" * 65, "a/b", None):
        with pytest.raises(ConfigurationError, match="expected camera id to be 1-64 letters"):
            check_camera_id(bad)


def test_bgr_images() -> None:
    image = np.zeros((2, 3, 3), np.uint8)
    assert check_bgr_image(image) is image
    for bad in (
        np.zeros((2, 3), np.uint8),
        np.zeros((2, 3, 4), np.uint8),
        np.zeros((0, 3, 3), np.uint8),
        b"x",
    ):
        with pytest.raises(ValueError, match="expected"):
            check_bgr_image(bad)
