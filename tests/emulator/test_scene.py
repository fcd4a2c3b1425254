from __future__ import annotations

import itertools
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from espdetect.emulator import Emulator, EmulatorConfig
from espdetect.emulator.cache import FrameCache, encode_frame, jpeg_quality
from espdetect.emulator.scene import (
    PhotoScene,
    Scene,
    SensorEffects,
    StillsScene,
    YardScene,
    load_scene,
)
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
    with pytest.raises(ConfigurationError, match="'photos', 'yard' or a Path"):
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


# -- the yard scene ---------------------------------------------------------------------------------

QVGA = (320, 240)


@pytest.fixture(scope="module")
def yard() -> YardScene:
    return YardScene(fps=15.0, still_seconds=12.0)


def _visible(scene: YardScene, index: int, size: tuple[int, int]) -> bool:
    """Every person in frame ``index`` is whole (not cut by an edge) and no two boxes overlap."""
    full, clipped = scene.boxes(index, size, clip=False), scene.boxes(index, size)
    if not len(full) or not np.array_equal(full, clipped):
        return False
    return all(iou(a, b) == 0 for a, b in itertools.combinations(full, 2))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def test_yard_timeline_starts_with_a_long_still_stretch(yard: YardScene) -> None:
    names = [s.name for s in yard.segments]
    assert names == ["still", "enter", "standing", "leave", "still-2", "crossing", "still-3"]
    assert yard.segments[0].start == 0 and yard.segments[-1].stop == yard.frame_count
    assert all(a.stop == b.start for a, b in itertools.pairwise(yard.segments))
    assert yard.first_frame_with_person == yard.segments[1].start == 12 * 15
    assert yard.segment(yard.first_frame_with_person - 1).name == "still"
    assert yard.segment(yard.frame_count + 3) == yard.segments[0]  # wraps around the loop
    assert yard.segment(np.int64(200)).name == "enter" and np.int64(0) in yard.segments[0]
    longer = YardScene(fps=10.0, still_seconds=20.0)
    assert longer.first_frame_with_person == 200
    # The rest of the timeline is 21.5 s: 25 + 30 + 30 + 40 + 60 + 30 frames at 10 fps.
    assert (longer.frame_count, yard.frame_count) == (200 + 215, 180 + 323)


@pytest.mark.parametrize("size", [QVGA, (64, 48), (1600, 1200)])
def test_yard_boxes_follow_the_timeline(yard: YardScene, size: tuple[int, int]) -> None:
    counts = [len(yard.boxes(i, size)) for i in range(yard.frame_count)]
    for seg in yard.segments:
        in_segment = counts[seg.start : seg.stop]
        assert max(in_segment) == seg.people, seg
        if seg.people:
            assert min(in_segment) >= 1, seg  # someone is in view for the whole segment
    assert counts[yard.first_frame_with_person - 1] == 0 < counts[yard.first_frame_with_person]


@pytest.mark.parametrize("index", [180, 200, 240, 300, 380, 410, 440, 457])
def test_yard_boxes_are_exactly_where_the_people_are(yard: YardScene, index: int) -> None:
    background = yard.render(0, QVGA).astype(int)
    frame = yard.render(index, QVGA).astype(int)
    boxes = yard.boxes(index, QVGA)
    assert len(boxes)
    inside = np.zeros(QVGA[::-1], dtype=bool)
    for x0, y0, x1, y1 in boxes.astype(int):
        assert 0 <= x0 < x1 <= QVGA[0] and 0 <= y0 < y1 <= QVGA[1]
        inside[y0:y1, x0:x1] = True
        # A person, not the yard: most pixels inside the box are changed.
        assert (np.abs(frame[y0:y1, x0:x1] - background[y0:y1, x0:x1]).max(axis=2) > 0).mean() > 0.8
    assert np.array_equal(frame[~inside], background[~inside])  # and nothing changes outside


def test_yard_frames_repeat_only_where_nothing_moves(yard: YardScene) -> None:
    size = (160, 120)
    frames = [yard.render(i, size) for i in range(yard.frame_count)]
    empty = frames[0].tobytes()
    for seg in yard.segments:
        shots = [f.tobytes() for f in frames[seg.start : seg.stop]]
        if not seg.moving:
            assert len(set(shots)) == 1, seg  # a still stretch is byte-identical
            assert (shots[0] == empty) == (seg.people == 0), seg
        else:
            assert all(a != b for a, b in itertools.pairwise(shots)), seg
    # The loop ends and starts empty, and wraps.
    assert frames[-1].tobytes() == empty
    assert np.array_equal(yard.render(yard.frame_count + 200, size), frames[200])


@pytest.mark.parametrize("size", [QVGA, (96, 96), (1600, 1200)])
def test_yard_renders_the_same_in_every_instance(size: tuple[int, int]) -> None:
    a, b = YardScene(), YardScene()
    for index in (0, 230, 400):
        img = a.render(index, size)
        assert img.shape == (size[1], size[0], 3) and img.dtype == np.uint8
        assert np.array_equal(img, b.render(index, size))


def test_yard_scene_rejects_bad_settings() -> None:
    with pytest.raises(ConfigurationError) as info:
        YardScene(fps=0.5)
    assert info.value.field == "fps"
    with pytest.raises(ConfigurationError) as info:
        YardScene(still_seconds=-1.0)
    assert info.value.field == "still_seconds"


def test_load_scene_builds_the_yard_with_sensor_effects() -> None:
    scene = load_scene("yard", 5, fps=10.0, still_seconds=3.0, noise=2, brightness_ramp=10.0)
    assert isinstance(scene, SensorEffects) and isinstance(scene.scene, YardScene)
    assert scene.scene.first_frame_with_person == 30 and scene.frame_count == scene.scene.frame_count
    assert isinstance(load_scene("yard", 5), YardScene)  # no effects: nothing wrapped around it


# -- sensor effects ---------------------------------------------------------------------------------


def test_noise_is_bounded_deterministic_and_fresh_each_frame(yard: YardScene) -> None:
    noisy = SensorEffects(yard, noise=5)
    clean = yard.render(10, QVGA).astype(int)
    first = noisy.render(10, QVGA)
    change = first.astype(int) - clean
    assert np.abs(change).max() == 5  # reaches the amplitude, never more
    assert np.abs(change).mean() > 1.0
    assert np.array_equal(first, SensorEffects(YardScene(), noise=5).render(10, QVGA))  # same per index
    # Frames 10 and 11 show the same still yard, but the noise differs.
    assert not np.array_equal(first, noisy.render(11, QVGA))
    assert np.array_equal(SensorEffects(yard).render(10, QVGA), clean)  # 0: off


def test_brightness_ramp_is_slow_and_wraps_without_a_jump(yard: YardScene) -> None:
    ramp = SensorEffects(yard, brightness_ramp=40.0)
    n = ramp.frame_count
    offsets = [ramp.brightness_offset(i) for i in range(n + 1)]
    assert offsets[0] == offsets[n] == 0 and max(offsets) == pytest.approx(40.0, abs=0.01)
    steps = [abs(b - a) for a, b in itertools.pairwise(offsets)]
    assert max(steps) <= math.pi * 40.0 / n < 0.3  # levels per frame, the wrap n-1 -> 0 included
    # In the still stretch the picture only brightens, and by at most one level per frame.
    size = (160, 120)
    still = [ramp.render(i, size).astype(int) for i in range(0, yard.first_frame_with_person)]
    for a, b in itertools.pairwise(still):
        assert (b - a).min() >= 0 and (b - a).max() <= 1
    assert np.abs(ramp.render(n - 1, size).astype(int) - ramp.render(0, size)).max() <= 1
    mid = ramp.render(n // 2, size).astype(int) - yard.render(n // 2, size)
    unclipped = yard.render(n // 2, size) < 215
    assert np.all(mid[unclipped] == 40)


def test_brightness_saturates_like_a_sensor(yard: YardScene) -> None:
    n = yard.frame_count
    assert np.all(SensorEffects(yard, brightness_ramp=255.0).render(n // 2, QVGA) == 255)
    assert np.all(SensorEffects(yard, noise=9, brightness_ramp=-255.0).render(n // 2, QVGA) <= 9)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"noise": -1}, "noise"),
        ({"noise": 128}, "noise"),
        ({"noise": 2.5}, "noise"),
        ({"brightness_ramp": 256.0}, "brightness_ramp"),
        ({"brightness_ramp": math.nan}, "brightness_ramp"),
    ],
)
def test_bad_sensor_effects_name_the_field(yard: YardScene, kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        SensorEffects(yard, **kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


def test_bundled_model_finds_the_people_where_the_truth_says(yard: YardScene) -> None:
    from espdetect.detectors.models import bundled_model_path
    from espdetect.detectors.onnx import OnnxDetector

    detector = OnnxDetector(bundled_model_path(), threads=1)
    # What a camera would send: noise, then the sensor's JPEG at quality 12.
    scene = SensorEffects(yard, noise=3, brightness_ramp=-20.0)
    frames = [i for i in range(yard.first_frame_with_person, yard.frame_count, 9) if _visible(yard, i, QVGA)]
    assert len(frames) >= 15
    assert {yard.segment(i).name for i in frames} == {"enter", "standing", "leave", "crossing"}
    for index in frames:
        found = detector.detect(decode(encode_frame(scene, index, view())))
        people = found.xyxy[[found.names[int(c)] == "person" for c in found.class_id]]
        for truth in yard.boxes(index, QVGA):
            best = max((iou(truth, box) for box in people), default=0.0)
            assert best >= 0.5, (index, truth, people)
    # And nobody where the yard is empty.
    for index in (0, yard.segments[4].start + 5):
        found = detector.detect(decode(encode_frame(scene, index, view())))
        assert "person" not in found.labels, index


@pytest.mark.anyio
async def test_emulator_streams_the_yard_with_its_sensor_effects() -> None:
    cfg = EmulatorConfig(fps=30.0, size=QVGA, scene="yard", still_seconds=0.0, noise=3, brightness_ramp=9.0)
    async with Emulator(cfg) as emu:
        client = await StreamClient.open(emu.stream_port)
        await client.head()
        parts = await client.parts(3)
        client.close()
    # The timeline runs at the stream's 30 fps, and the frames are those of the scene, noise and all.
    scene = load_scene("yard", 1, fps=30.0, still_seconds=0.0, noise=3, brightness_ramp=9.0)
    assert scene.frame_count == round(21.5 * 30)
    for index, part in enumerate(parts):
        assert part.body == encode_frame(scene, index, view())


class CountingScene(Scene):
    """Another scene, counting the frames rendered."""

    def __init__(self, scene: Scene) -> None:
        self.scene = scene
        self.renders = 0

    @property
    def frame_count(self) -> int:
        return self.scene.frame_count

    def render(self, index: int, size: tuple[int, int]) -> np.ndarray:
        self.renders += 1
        return self.scene.render(index, size)


@pytest.mark.anyio
async def test_cache_keeps_to_its_byte_budget(photos: PhotoScene) -> None:
    small = view((160, 120))
    sizes = [len(encode_frame(photos, i, small)) for i in range(12)]
    counting = CountingScene(photos)
    cache = FrameCache(counting, max_bytes=sum(sizes[:5]))
    await cache.prerender(small)
    assert [cache.cached(i, small) is not None for i in range(12)] == [True] * 5 + [False] * 7
    assert counting.renders == 6  # it stopped encoding at the frame that did not fit
    assert cache.nbytes == sum(sizes[:5])
    # Past the budget a frame is still served, just not kept.
    assert await cache.get(7, small) == encode_frame(photos, 7, small)
    assert cache.cached(7, small) is None and cache.nbytes <= sum(sizes[:5])
    # A newer setting takes the room of the older one.
    await cache.get(0, view((160, 120), quality=30))
    assert cache.cached(0, view((160, 120), quality=30)) is not None
    assert cache.cached(0, small) is None and cache.nbytes <= sum(sizes[:5])
