from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from espdetect.encoders.base import Encoder
from espdetect.encoders.jpeg import JpegEncoder, make_encoder
from espdetect.exceptions import ConfigurationError


@pytest.fixture(scope="module", params=[(320, 240), (640, 480)], ids=["320x240", "640x480"])
def frame(request: pytest.FixtureRequest, sample_images: dict[str, Path]) -> np.ndarray:
    image = cv2.imread(str(sample_images["bus"]))
    assert image is not None
    return np.asarray(cv2.resize(image, request.param, interpolation=cv2.INTER_AREA))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def decode(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return np.asarray(image)


@pytest.mark.parametrize(("quality", "min_psnr"), [(90, 32.0), (80, 30.0), (40, 26.0)])
def test_roundtrip_keeps_shape_and_quality(frame: np.ndarray, quality: int, min_psnr: float) -> None:
    data = JpegEncoder(quality).encode(frame)

    assert data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9"
    back = decode(data)
    assert back.shape == frame.shape
    assert psnr(frame, back) >= min_psnr


def test_lower_quality_gives_fewer_bytes(frame: np.ndarray) -> None:
    sizes = [len(JpegEncoder(q).encode(frame)) for q in (95, 80, 60, 40, 10)]

    assert sizes == sorted(sizes, reverse=True)
    assert len(set(sizes)) == len(sizes)


def test_non_contiguous_views_encode(frame: np.ndarray) -> None:
    view = frame[::2, ::2]

    back = decode(JpegEncoder().encode(view))

    assert back.shape == view.shape


def test_with_quality_returns_an_encoder_at_that_quality() -> None:
    enc = JpegEncoder(80)

    other = enc.with_quality(40)

    assert isinstance(other, Encoder)
    assert (enc.quality, other.quality) == (80, 40)
    assert enc.media_type == other.media_type == "image/jpeg"


@pytest.mark.parametrize("quality", [1, 100, np.int64(50)])
def test_quality_bounds_are_inclusive(quality: int) -> None:
    assert JpegEncoder(quality).quality == int(quality)


@pytest.mark.parametrize(
    "quality",
    [
        pytest.param(0, id="zero"),
        pytest.param(101, id="above-100"),
        pytest.param(80.0, id="float"),
        pytest.param(True, id="bool"),
        pytest.param("80", id="str"),
    ],
)
def test_quality_outside_1_to_100_is_refused(quality: object) -> None:
    with pytest.raises(ConfigurationError, match="expected quality to be an integer from 1 to 100"):
        JpegEncoder(quality)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "image",
    [
        pytest.param(np.zeros((10, 10), np.uint8), id="grey"),
        pytest.param(np.zeros((10, 10, 3), np.float32), id="float"),
        pytest.param(np.zeros((0, 10, 3), np.uint8), id="empty"),
    ],
)
def test_rejects_non_bgr_images(image: np.ndarray) -> None:
    with pytest.raises(ValueError, match="expected a"):
        JpegEncoder().encode(image)


def test_with_quality_keeps_the_encoder_when_nothing_changes() -> None:
    enc = JpegEncoder(70)
    assert enc.with_quality(70) is enc


@pytest.mark.parametrize("backend", ["simplejpeg", "auto"])
def test_make_encoder_builds_the_backend_at_the_quality(backend: str) -> None:
    enc = make_encoder(backend, 55)  # type: ignore[arg-type]

    assert isinstance(enc, JpegEncoder)
    assert enc.quality == 55


@pytest.mark.parametrize(
    ("backend", "quality", "message"),
    [
        pytest.param("turbo", 80, "expected encoder backend to be one of simplejpeg, auto", id="backend"),
        pytest.param("simplejpeg", 0, "expected quality to be", id="quality"),
    ],
)
def test_make_encoder_refuses_bad_arguments(backend: str, quality: int, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        make_encoder(backend, quality)  # type: ignore[arg-type]


def _segments(data: bytes) -> dict[int, list[bytes]]:
    """Marker -> payloads of a JPEG's header segments, up to the start of scan."""
    out: dict[int, list[bytes]] = {}
    i = 2
    while i + 4 <= len(data) and data[i] == 0xFF:
        marker, length = data[i + 1], int.from_bytes(data[i + 2 : i + 4], "big")
        out.setdefault(marker, []).append(data[i + 4 : i + 2 + length])
        if marker == 0xDA:
            break
        i += 2 + length
    return out


@pytest.mark.parametrize("quality", [10, 40, 80, 95])
def test_baseline_420_with_the_quantisation_opencv_uses_at_that_quality(
    frame: np.ndarray, quality: int
) -> None:
    ours = _segments(JpegEncoder(quality).encode(frame))
    ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    opencv = _segments(buf.tobytes())

    assert 0xC0 in ours and not {0xC1, 0xC2, 0xC3} & set(ours)  # baseline, not progressive
    sof = ours[0xC0][0]
    assert (int.from_bytes(sof[1:3], "big"), int.from_bytes(sof[3:5], "big")) == frame.shape[:2]
    assert [sof[6 + 3 * c + 1] for c in range(sof[5])] == [0x22, 0x11, 0x11]  # 4:2:0
    assert ours[0xDB] == opencv[0xDB]  # quality means what it meant with cv2.imencode
