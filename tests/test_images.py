"""`read_image` and `write_jpeg`: Pillow giving what cv2.imread and cv2.imwrite gave."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from espdetect.images import read_image, write_jpeg


def _opencv(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None
    return np.asarray(image)


@pytest.mark.parametrize("name", ["bus", "zidane"])
def test_jpeg_photos_read_as_opencv_reads_them(sample_images: dict[str, Path], name: str) -> None:
    image = read_image(sample_images[name])

    assert image.flags.c_contiguous
    np.testing.assert_array_equal(image, _opencv(sample_images[name]))


def _rgba(path: Path, rgb: np.ndarray) -> None:
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)])).save(path)


def _palette(path: Path, rgb: np.ndarray) -> None:
    Image.fromarray(rgb).convert("P").save(path)


def _grey(path: Path, rgb: np.ndarray) -> None:
    Image.fromarray(rgb[:, :, 0]).save(path)


def _grey16(path: Path, rgb: np.ndarray) -> None:
    assert cv2.imwrite(str(path), rgb[:, :, 0].astype(np.uint16) * 257 + 3)


@pytest.mark.parametrize(
    "write", [_rgba, _palette, _grey, _grey16], ids=["rgba", "palette", "grey", "grey16"]
)
def test_png_modes_read_as_opencv_reads_them(
    tmp_path: Path, write: Callable[[Path, np.ndarray], None]
) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    path = tmp_path / "picture.png"
    write(path, rgb)

    np.testing.assert_array_equal(read_image(path), _opencv(path))


def test_exif_orientation_is_applied_as_opencv_does(tmp_path: Path) -> None:
    rgb = np.zeros((20, 40, 3), np.uint8)
    rgb[:, :10] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    Image.fromarray(rgb).save(path, exif=exif, quality=95)

    image = read_image(path)

    assert image.shape == (40, 20, 3)
    np.testing.assert_array_equal(image, _opencv(path))


@pytest.mark.parametrize(
    "content",
    [pytest.param(b"\xff\xd8 definitely not a jpeg", id="garbage"), pytest.param(b"", id="empty")],
)
def test_what_is_not_a_picture_raises_oserror(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)

    with pytest.raises(OSError):
        read_image(path)


def test_a_truncated_jpeg_raises_oserror(tmp_path: Path, sample_images: dict[str, Path]) -> None:
    path = tmp_path / "cut.jpg"
    path.write_bytes(sample_images["bus"].read_bytes()[:5000])

    with pytest.raises(OSError):
        read_image(path)


def test_a_missing_file_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        read_image(tmp_path / "missing.jpg")


def test_write_jpeg_writes_what_opencv_imwrite_writes(tmp_path: Path, sample_images: dict[str, Path]) -> None:
    image = _opencv(sample_images["zidane"])

    write_jpeg(tmp_path / "ours.jpg", image)
    assert cv2.imwrite(str(tmp_path / "opencv.jpg"), image)

    assert (tmp_path / "ours.jpg").read_bytes() == (tmp_path / "opencv.jpg").read_bytes()


def test_write_jpeg_refuses_non_bgr_images(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="expected a"):
        write_jpeg(tmp_path / "x.jpg", np.zeros((4, 4), np.uint8))
