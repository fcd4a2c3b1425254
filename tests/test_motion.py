"""MotionDetector: motion reported for what moves, not for noise, compression or light changes."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from espdetect.exceptions import ConfigurationError, DecodeError
from espdetect.frame import Frame
from espdetect.motion import MotionConfig, MotionDetector

SIZE = (640, 480)
_seq = itertools.count()


def scene() -> np.ndarray:
    """A still, textured VGA scene (gradients and shapes, like a driveway)."""
    yy, xx = np.mgrid[0 : SIZE[1], 0 : SIZE[0]]
    img = np.stack([xx * 255 // SIZE[0], yy * 255 // SIZE[1], (xx + yy) % 200], axis=2).astype(np.uint8)
    cv2.rectangle(img, (50, 300), (250, 470), (90, 90, 90), -1)
    cv2.circle(img, (500, 120), 60, (200, 220, 240), -1)
    return img


def as_frame(
    img: np.ndarray, quality: int = 60, noise: int = 0, rng: np.random.Generator | None = None
) -> Frame:
    if noise:
        assert rng is not None
        img = np.clip(img.astype(np.int16) + rng.integers(-noise, noise + 1, img.shape), 0, 255).astype(
            np.uint8
        )
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return Frame(seq=next(_seq), source_id="test", jpeg=buf.tobytes())


def test_the_first_frame_becomes_the_background() -> None:
    result = MotionDetector().detect(as_frame(scene()))
    assert not result.moving and result.fraction == 0.0


def test_sensor_noise_and_low_jpeg_quality_are_not_motion() -> None:
    motion = MotionDetector()
    rng = np.random.default_rng(1)
    base = scene()
    results = [motion.detect(as_frame(base, quality=q, noise=8, rng=rng)) for q in (10, 30, 60, 90) * 10]
    assert not any(r.moving for r in results)


def test_a_slow_brightness_ramp_is_not_motion() -> None:
    motion = MotionDetector()
    base = scene().astype(np.int16)
    # Two levels a frame: an auto-exposure ramp at dusk, 100 levels over 50 frames.
    results = [motion.detect(as_frame(np.clip(base + 2 * i, 0, 255).astype(np.uint8))) for i in range(50)]
    assert not any(r.moving for r in results)


def test_a_sudden_global_change_resets_instead_of_reporting_motion() -> None:
    motion = MotionDetector()
    motion.detect(as_frame(scene()))
    inverted = 255 - scene()
    result = motion.detect(as_frame(inverted))
    assert result.lighting and not result.moving
    assert not motion.detect(as_frame(inverted)).moving  # the new picture is the background now


def test_an_object_entering_is_motion_with_a_box_around_it() -> None:
    motion = MotionDetector()
    base = scene()
    for _ in range(5):
        motion.detect(as_frame(base))
    person = base.copy()
    # Dark clothes: grey-level motion needs the object to differ from what it covers.
    cv2.rectangle(person, (300, 150), (360, 330), (25, 30, 35), -1)
    result = motion.detect(as_frame(person))
    assert result.moving
    (box,) = result.boxes
    x1, y1, x2, y2 = box
    # At 1/8 scale the box is coarse: within a few reduced pixels (8 full pixels each) of the object.
    assert x1 <= 300 <= x2 and x1 <= 360 <= x2 and y1 <= 150 <= y2 and y1 <= 330 <= y2
    assert (x2 - x1) * (y2 - y1) < 3 * 60 * 180


def test_a_stopped_object_fades_into_the_background() -> None:
    motion = MotionDetector(MotionConfig(adapt=0.2))
    base = scene()
    motion.detect(as_frame(base))
    parked = base.copy()
    cv2.rectangle(parked, (300, 150), (420, 250), (10, 10, 200), -1)
    results = [motion.detect(as_frame(parked)) for _ in range(40)]
    assert results[0].moving and not results[-1].moving


def test_masked_regions_never_move() -> None:
    overlay = [[(0.0, 0.0), (0.5, 0.0), (0.5, 0.1), (0.0, 0.1)]]  # a timestamp along the top
    motion = MotionDetector(MotionConfig(masks=overlay))
    base = scene()
    motion.detect(as_frame(base))
    ticking = base.copy()
    cv2.putText(ticking, "2026-12-03 06:15:52", (10, 35), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (255, 255, 255), 3)
    assert not motion.detect(as_frame(ticking)).moving
    assert MotionDetector().detect(as_frame(base)).fraction == 0.0  # sanity: another detector
    unmasked = MotionDetector()
    unmasked.detect(as_frame(base))
    assert unmasked.detect(as_frame(ticking)).moving


def test_frames_without_jpeg_bytes_work_too() -> None:
    motion = MotionDetector()
    motion.detect(Frame.from_image(scene(), seq=0, source_id="t"))
    moved = scene()
    cv2.circle(moved, (320, 240), 50, (0, 0, 0), -1)
    assert motion.detect(Frame.from_image(moved, seq=1, source_id="t")).moving


def test_a_corrupt_frame_is_a_decode_error() -> None:
    motion = MotionDetector()
    data = bytearray(as_frame(scene()).jpeg or b"")
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
    with pytest.raises(DecodeError):
        motion.detect(Frame(seq=0, source_id="t", jpeg=bytes(data[: len(data) // 3])))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        pytest.param({"threshold": 0}, "motion_threshold", id="threshold"),
        pytest.param({"min_area": 1.5}, "motion_min_area", id="area"),
        pytest.param({"reduce": 3}, "motion_reduce", id="reduce"),
        pytest.param({"masks": [[(0, 0), (1, 1)]]}, "motion_masks", id="mask-points"),
        pytest.param({"masks": [[(0, 0), (2, 0), (0, 1)]]}, "motion_masks", id="mask-range"),
    ],
)
def test_bad_settings_name_their_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        MotionConfig(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


def test_new_masks_reset_the_background() -> None:
    motion = MotionDetector()
    motion.detect(as_frame(scene()))
    motion.update(MotionConfig(masks=[[(0, 0), (0.1, 0), (0.1, 0.1)]]))
    moved = scene()
    cv2.circle(moved, (320, 240), 80, (0, 0, 0), -1)
    assert not motion.detect(as_frame(moved)).moving  # the first frame after the reset is the background


def _flood_fill_boxes(mask: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Bounding boxes (ends exclusive) of the 8-connected regions, the slow obvious way."""
    h, w = mask.shape
    seen = np.zeros_like(mask)
    boxes = []
    for y0, x0 in zip(*np.nonzero(mask), strict=True):
        if seen[y0, x0]:
            continue
        seen[y0, x0] = True
        todo, box = [(int(y0), int(x0))], [int(x0), int(y0), int(x0) + 1, int(y0) + 1]
        while todo:
            y, x = todo.pop()
            box = [min(box[0], x), min(box[1], y), max(box[2], x + 1), max(box[3], y + 1)]
            for ny in range(max(0, y - 1), min(h, y + 2)):
                for nx in range(max(0, x - 1), min(w, x + 2)):
                    if mask[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        todo.append((ny, nx))
        boxes.append((box[0], box[1], box[2], box[3]))
    return sorted(boxes)


def test_moving_regions_are_the_masks_connected_regions() -> None:
    from espdetect.motion import _regions

    rng = np.random.default_rng(7)
    comb = np.zeros((30, 40), bool)
    comb[:, ::2] = True
    comb[-1] = True  # one region joined at the bottom: every run but the first merges late
    ring = np.zeros((20, 20), bool)
    ring[2:18, 2:18] = True
    ring[4:16, 4:16] = False
    ring[9:11, 9:11] = True  # a region inside another's hole keeps its own box
    shapes = [comb, ~comb, comb.T.copy(), ring, np.eye(25, 30, dtype=bool), np.eye(25, 30, dtype=bool)[::-1]]
    shapes += [
        rng.random((rng.integers(1, 30), rng.integers(1, 40))) < rng.uniform(0.05, 0.8) for _ in range(150)
    ]
    for mask in shapes:
        assert sorted(map(tuple, _regions(np.ascontiguousarray(mask)).tolist())) == _flood_fill_boxes(mask)
