from __future__ import annotations

import itertools
from pathlib import Path

import cv2
import numpy as np
import pytest

from espdetect.emulator import Emulator, EmulatorConfig
from espdetect.emulator.cache import FrameCache, encode_frame, jpeg_quality
from espdetect.emulator.scene import PhotoScene, StillsScene, load_scene
from espdetect.emulator.sensor import SensorView
from espdetect.exceptions import ConfigurationError

from ._wire import StreamClient, decode


def view(size: tuple[int, int] = (320, 240), quality: int = 12, **flags: bool) -> SensorView:
    return SensorView(
        size, quality, flags.get("hmirror", False), flags.get("vflip", False), flags.get("colorbar", False)
    )


@pytest.fixture(scope="module")
def photos() -> PhotoScene:
    return PhotoScene(frames=12)


@pytest.mark.parametrize("size", [(320, 240), (96, 96), (1280, 720), (128, 160), (1600, 1200)])
def test_photo_scene_renders_any_size(photos: PhotoScene, size: tuple[int, int]) -> None:
    img = photos.render(3, size)
    assert img.shape == (size[1], size[0], 3) and img.dtype == np.uint8


def test_photo_scene_moves_and_loops(photos: PhotoScene) -> None:
    frames = [photos.render(i, (160, 120)) for i in range(12)]
    assert all(not np.array_equal(a, b) for a, b in itertools.pairwise(frames))
    assert np.array_equal(photos.render(12, (160, 120)), frames[0])
    # The pan sweeps across the whole canvas: from the bus photo to the football one and back.
    xs = [photos.view(i, (320, 240))[0] for i in range(12)]
    assert xs[0] == 0 and max(xs) > 800 and xs[1] < xs[3] and xs[-1] < xs[-3]


def test_stills_from_folder_image_and_video(tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        img = np.full((90, 120, 3), 60 * i, dtype=np.uint8)
        assert cv2.imwrite(str(folder / f"{i:02d}.png"), img)
    (folder / "notes.txt").write_text("not an image")
    scene = load_scene(folder, frames=10)
    assert scene.frame_count == 3
    out = scene.render(1, (320, 240))
    assert out.shape == (240, 320, 3) and abs(int(out.mean()) - 60) <= 2

    single = load_scene(folder / "02.png", frames=10)
    assert single.frame_count == 1

    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, (160, 120))
    assert writer.isOpened()
    for i in range(8):
        writer.write(np.full((120, 160, 3), 30 * i, dtype=np.uint8))
    writer.release()
    clip = load_scene(video, frames=5)
    assert clip.frame_count == 5
    assert clip.render(4, (64, 48)).shape == (48, 64, 3)


def test_bad_sources_raise_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="got nothing"):
        load_scene(tmp_path / "missing.mp4", 10)
    with pytest.raises(ConfigurationError, match="image files"):
        load_scene(tmp_path, 10)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all")
    with pytest.raises(ConfigurationError, match="video"):
        load_scene(junk, 10)
    with pytest.raises(ConfigurationError, match="'photos' or a Path"):
        load_scene("pictures", 10)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        StillsScene([])


def test_jpeg_quality_mapping_is_monotonic() -> None:
    values = [jpeg_quality(q) for q in range(64)]
    assert values[0] == 100 and values[-1] >= 1
    assert all(a >= b for a, b in itertools.pairwise(values))
    with pytest.raises(ValueError, match=r"0\.\.63"):
        jpeg_quality(64)


def test_encode_applies_mirror_flip_and_colorbar(photos: PhotoScene) -> None:
    plain = decode(encode_frame(photos, 2, view(quality=0))).astype(int)
    mirrored = decode(encode_frame(photos, 2, view(quality=0, hmirror=True))).astype(int)
    flipped = decode(encode_frame(photos, 2, view(quality=0, vflip=True))).astype(int)
    assert np.abs(mirrored[:, ::-1] - plain).mean() < 3 < np.abs(mirrored - plain).mean()
    assert np.abs(flipped[::-1] - plain).mean() < 3 < np.abs(flipped - plain).mean()
    bars = decode(encode_frame(photos, 2, view(colorbar=True)))
    assert bars[120, 5].tolist() == pytest.approx([255, 255, 255], abs=12)
    assert bars[120, 315].tolist() == pytest.approx([0, 0, 0], abs=12)


@pytest.mark.anyio
async def test_cache_reuses_encoded_frames_and_bounds_variants(photos: PhotoScene) -> None:
    cache = FrameCache(photos, max_variants=2)
    first = await cache.get(1, view())
    assert await cache.get(13, view()) is first  # index wraps around the loop
    await cache.prerender(view(quality=30))
    assert all(cache.cached(i, view(quality=30)) is not None for i in range(12))
    await cache.get(0, view(quality=40))  # a third setting evicts the least recently used
    assert cache.cached(1, view()) is None
    assert cache.cached(0, view(quality=30)) is not None


@pytest.mark.anyio
@pytest.mark.model
async def test_emulated_frames_are_detectable_at_qvga(model_path: str) -> None:
    from espdetect.detectors.factory import open_detector

    async with Emulator(EmulatorConfig(fps=30.0, size=(320, 240))) as emu:
        client = await StreamClient.open(emu.stream_port)
        await client.head()
        (part,) = await client.parts(1)  # frame 0 of the loop: the bus photo with its passengers
        client.close()
    img = decode(part.body)
    assert img.shape == (240, 320, 3)
    names = open_detector(model_path).detect(img).labels
    assert names.count("person") >= 1
    assert "bus" in names
