from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from espdetect.exceptions import DecodeError
from espdetect.frame import Frame, Reduce, bgr_to_gray, decode_gray, decode_jpeg, jpeg_size, shrink


def _jpeg(width: int, height: int, *, progressive: bool = False, quality: int = 85) -> bytes:
    yy, xx = np.mgrid[0:height, 0:width]
    img = np.stack([xx % 256, yy % 256, (xx + yy) % 256], axis=2).astype(np.uint8)
    params = [cv2.IMWRITE_JPEG_QUALITY, quality]
    if progressive:
        params += [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]
    ok, buf = cv2.imencode(".jpg", img, params)
    assert ok
    return buf.tobytes()


@pytest.mark.parametrize("progressive", [False, True], ids=["baseline", "progressive"])
@pytest.mark.parametrize("size", [(320, 240), (161, 97), (16, 16), (1600, 1200)])
def test_jpeg_size_reads_the_sof_marker(size: tuple[int, int], progressive: bool) -> None:
    data = _jpeg(*size, progressive=progressive)
    marker = b"\xff\xc2" if progressive else b"\xff\xc0"
    assert marker in data
    assert jpeg_size(data) == size


def test_jpeg_size_of_a_real_photo(sample_images: dict[str, Path]) -> None:
    data = sample_images["bus"].read_bytes()
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None
    assert jpeg_size(data) == (img.shape[1], img.shape[0])


def test_jpeg_size_skips_app_and_comment_segments() -> None:
    data = _jpeg(40, 30)
    payload = b"\xff\xc0 not a SOF inside a comment"
    with_com = data[:2] + b"\xff\xfe" + (len(payload) + 2).to_bytes(2, "big") + payload + data[2:]
    assert jpeg_size(with_com) == (40, 30)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\xff\xd8", id="soi-only"),
        pytest.param(b"GIF89a......", id="not-jpeg"),
        pytest.param(b"\xff\xd8\xff\xda\x00\x08" + bytes(20), id="sos-before-sof"),
        pytest.param(b"\xff\xd8\xff\xe0\xff\xff" + bytes(8), id="segment-runs-off-the-end"),
    ],
)
def test_jpeg_size_returns_none_without_a_frame_header(data: bytes) -> None:
    assert jpeg_size(data) is None


def test_jpeg_size_of_truncated_header_is_none() -> None:
    data = _jpeg(64, 48)
    sof = data.index(b"\xff\xc0")
    assert jpeg_size(data[: sof + 6]) is None


@pytest.mark.parametrize(
    ("reduce", "shape"),
    [(1, (120, 200, 3)), (2, (60, 100, 3)), (4, (30, 50, 3)), (8, (15, 25, 3))],
)
def test_reduced_decode_shapes(reduce: Reduce, shape: tuple[int, int, int]) -> None:
    data = _jpeg(200, 120)
    assert decode_jpeg(data, reduce).shape == shape
    frame = Frame(seq=0, source_id="t", jpeg=data)
    assert frame.image(reduce).shape == shape


def test_reduced_decode_rounds_up_odd_sizes() -> None:
    # libjpeg's scaled IDCT yields ceil(size / reduce).
    assert decode_jpeg(_jpeg(161, 97), 8).shape == (13, 21, 3)


def test_decode_rejects_unknown_reduce() -> None:
    with pytest.raises(ValueError, match="reduce must be one of 1, 2, 4, 8, got 3"):
        decode_jpeg(_jpeg(16, 16), 3)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\xff\xd8\xff\xd9", id="soi-eoi"),
        pytest.param(b"not a jpeg at all", id="text"),
        pytest.param(_jpeg(32, 32)[:40], id="truncated-header"),
    ],
)
def test_decode_error_on_corrupt_bytes(data: bytes) -> None:
    with pytest.raises(DecodeError, match=f"expected a JPEG image, got {len(data)} bytes") as info:
        decode_jpeg(data)
    assert info.value.size == len(data)
    frame = Frame(seq=1, source_id="t", jpeg=data)
    with pytest.raises(DecodeError):
        frame.image()
    assert not frame.decoded


def test_frame_decodes_lazily_and_once_per_scale() -> None:
    data = _jpeg(64, 48)
    frame = Frame(seq=3, source_id="cam", jpeg=data, camera_timestamp=12.5)
    assert not frame.decoded
    assert frame.size == (64, 48)  # from the header, not by decoding
    assert not frame.decoded
    assert frame.nbytes == len(data)
    img = frame.image()
    assert frame.decoded
    assert img.shape == (48, 64, 3) and img.dtype == np.uint8
    assert frame.image() is img
    half = frame.image(2)
    assert half.shape == (24, 32, 3)
    assert frame.image(2) is half
    assert frame.image() is img


def test_concurrent_image_calls_decode_once() -> None:
    frame = Frame(seq=0, source_id="t", jpeg=_jpeg(640, 480))
    start = threading.Barrier(16)

    def grab(_: int) -> np.ndarray:
        start.wait()
        return frame.image()

    with ThreadPoolExecutor(16) as pool:
        images = list(pool.map(grab, range(16)))
    assert all(img is images[0] for img in images)


def test_concurrent_calls_at_mixed_scales_each_decode_once() -> None:
    frame = Frame(seq=0, source_id="t", jpeg=_jpeg(320, 240))
    start = threading.Barrier(16)
    scales: list[Reduce] = [1, 2, 4, 8]

    def grab(i: int) -> tuple[int, np.ndarray]:
        start.wait()
        r = scales[i % 4]
        return r, frame.image(r)

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(grab, range(16)))
    for r in scales:
        same = [img for rr, img in results if rr == r]
        assert all(img is same[0] for img in same)
        assert same[0].shape == (240 // r, 320 // r, 3)


def test_from_image_holds_the_image_and_resizes_for_reduce() -> None:
    img = np.full((48, 64, 3), 77, np.uint8)
    frame = Frame.from_image(img, seq=9, source_id="folder", arrival=100.0, arrival_mono=5.0)
    assert frame.jpeg is None
    assert frame.nbytes == 0
    assert frame.decoded
    assert frame.image() is img
    assert frame.size == (64, 48)
    assert (frame.seq, frame.source_id, frame.arrival, frame.arrival_mono) == (9, "folder", 100.0, 5.0)
    quarter = frame.image(4)
    assert quarter.shape == (12, 16, 3)
    assert int(quarter[0, 0, 0]) == 77
    assert frame.image(4) is quarter
    tiny = Frame.from_image(np.zeros((3, 5, 3), np.uint8), seq=0, source_id="t").image(8)
    assert tiny.shape == (1, 1, 3)


def test_from_image_fills_arrival_times() -> None:
    frame = Frame.from_image(np.zeros((4, 4, 3), np.uint8), seq=0, source_id="t")
    assert frame.arrival > 1e9
    assert frame.arrival_mono > 0


@pytest.mark.parametrize(
    ("image", "message"),
    [
        pytest.param(np.zeros((4, 4), np.uint8), r"got uint8 of shape \(4, 4\)", id="gray"),
        pytest.param(np.zeros((4, 4, 4), np.uint8), r"got uint8 of shape \(4, 4, 4\)", id="bgra"),
        pytest.param(np.zeros((4,), np.uint8), r"got uint8 of shape \(4,\)", id="1d"),
        pytest.param(np.zeros((4, 4, 3), np.float32), r"got float32 of shape \(4, 4, 3\)", id="float"),
        pytest.param(np.zeros((0, 4, 3), np.uint8), r"got uint8 of shape \(0, 4, 3\)", id="empty"),
    ],
)
def test_from_image_validates(image: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=r"expected a non-empty \(H, W, 3\) uint8 BGR image, " + message):
        Frame.from_image(image, seq=0, source_id="t")


def test_frame_needs_bytes_or_image() -> None:
    with pytest.raises(ValueError, match="needs JPEG bytes or a decoded image, got neither"):
        Frame(seq=0, source_id="t")


def test_frames_compare_by_identity() -> None:
    data = _jpeg(16, 16)
    a = Frame(seq=0, source_id="t", jpeg=data, arrival=1.0, arrival_mono=1.0)
    b = Frame(seq=0, source_id="t", jpeg=data, arrival=1.0, arrival_mono=1.0)
    assert a != b
    assert a == a


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=400))
def test_jpeg_size_never_raises_on_random_bytes(data: bytes) -> None:
    for candidate in (data, b"\xff\xd8" + data):
        wh = jpeg_size(candidate)
        assert wh is None or (len(wh) == 2 and all(0 <= v < 65536 for v in wh))


def test_jpeg_size_of_every_truncation_is_right_or_none() -> None:
    data = _jpeg(48, 32)
    for n in range(0, 700):
        assert jpeg_size(data[:n]) in (None, (48, 32))
    assert jpeg_size(data[:700]) == (48, 32)


# --- OpenCV's grey conversion and area shrink, without OpenCV ---


def test_bgr_to_gray_is_opencvs_on_every_colour() -> None:
    levels = np.arange(256, dtype=np.uint8)
    every = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), axis=-1).reshape(4096, 4096, 3)

    np.testing.assert_array_equal(bgr_to_gray(every), cv2.cvtColor(every, cv2.COLOR_BGR2GRAY))


def test_decode_gray_of_a_frame_without_bytes_converts_its_image() -> None:
    image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    frame = Frame.from_image(image, seq=0, source_id="t")

    gray = decode_gray(frame, 2)

    np.testing.assert_array_equal(gray, cv2.cvtColor(frame.image(2), cv2.COLOR_BGR2GRAY))


@pytest.mark.parametrize(
    ("hw", "reduce"),
    [
        *[(hw, r) for hw in [(480, 640), (720, 1280), (1080, 1920), (48, 64), (16, 24)] for r in (2, 4, 8)],
        ((3, 5), 4),  # one pixel from a 3 x 5 block
        ((15, 9), 8),
        ((7, 1280), 4),  # 7 x 4 blocks: a float32 1 / 28 rounds sums near a half as OpenCV does
        ((13, 640), 8),
    ],
)
def test_shrink_of_whole_blocks_is_opencvs_inter_area(hw: tuple[int, int], reduce: Reduce) -> None:
    image = np.random.default_rng(1).integers(0, 256, (*hw, 3), dtype=np.uint8)
    size = (max(1, hw[1] // reduce), max(1, hw[0] // reduce))

    np.testing.assert_array_equal(
        shrink(image, reduce), cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    )


@pytest.mark.parametrize("reduce", [2, 4, 8])
@pytest.mark.parametrize("hw", [(481, 641), (121, 161), (7, 9), (483, 1920), (1080, 161)])
def test_shrink_of_other_sizes_is_within_one_level_of_opencvs(hw: tuple[int, int], reduce: Reduce) -> None:
    image = np.random.default_rng(2).integers(0, 256, (*hw, 3), dtype=np.uint8)
    size = (max(1, hw[1] // reduce), max(1, hw[0] // reduce))

    ours = shrink(image, reduce)
    theirs = cv2.resize(image, size, interpolation=cv2.INTER_AREA)

    assert ours.shape == theirs.shape
    differ = np.abs(ours.astype(np.int16) - theirs)
    assert differ.max() <= 1
    assert np.count_nonzero(differ) <= 0.02 * differ.size  # float sums in another order: rare ties
