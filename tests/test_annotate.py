from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from espdetect.annotate import PALETTE, Annotator, class_color
from espdetect.detections import Detections

NAMES = {0: "person", 5: "bus", 27: "tie"}


def make_detections(boxes: list[list[float]], class_ids: list[int], conf: float = 0.9) -> Detections:
    return Detections(
        xyxy=np.array(boxes, np.float32).reshape(-1, 4),
        confidence=np.full(len(boxes), conf, np.float32),
        class_id=np.array(class_ids, np.int64),
        names=NAMES,
    )


def blank(h: int = 240, w: int = 320) -> np.ndarray:
    return np.zeros((h, w, 3), np.uint8)


def changed(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    return np.asarray((before != after).any(axis=2))


def test_class_colours_are_stable_and_distinct() -> None:
    assert class_color(5) == class_color(5) == PALETTE[5]
    assert class_color(5 + len(PALETTE)) == class_color(5)
    assert len({class_color(c) for c in range(len(PALETTE))}) == len(PALETTE)


def test_box_edge_is_drawn_in_the_class_colour() -> None:
    dets = make_detections([[60, 80, 200, 180]], [5])

    first = Annotator(thickness=3).annotate(blank(), dets)
    second = Annotator(thickness=3).annotate(blank(), dets)

    # Middle of the bottom edge: far from the label tag and the anti-aliased corners.
    assert tuple(int(v) for v in first[180, 130]) == class_color(5)
    assert np.array_equal(first, second)


def test_drawing_changes_pixels_only_near_boxes() -> None:
    x1, y1, x2, y2 = 100, 100, 220, 180
    image = blank()
    annotator = Annotator(thickness=2)

    out = annotator.annotate(image, make_detections([[x1, y1, x2, y2]], [0]))

    rows, cols = np.nonzero(changed(image, out))
    assert len(rows) > 0
    margin = annotator.thickness + 2
    tag_height = 30
    assert rows.min() >= y1 - tag_height and rows.max() <= y2 + margin
    assert cols.min() >= x1 - margin and cols.max() <= x2 + margin
    # The box interior below the tag stays untouched.
    assert not changed(image, out)[y1 + 25 : y2 - margin, x1 + margin : x2 - margin].any()


def test_input_is_not_modified_by_default() -> None:
    image = blank()

    out = Annotator().annotate(image, make_detections([[10, 10, 100, 100]], [0]))

    assert not image.any()
    assert out.any()
    assert out is not image


def test_copy_false_draws_in_place() -> None:
    image = blank()

    out = Annotator().annotate(image, make_detections([[10, 10, 100, 100]], [0]), copy=False)

    assert out is image
    assert image.any()


def test_copy_false_refuses_a_read_only_image() -> None:
    image = blank()
    image.flags.writeable = False

    with pytest.raises(ValueError, match="writeable C-contiguous image for copy=False"):
        Annotator().annotate(image, make_detections([[10, 10, 100, 100]], [0]), copy=False)


def test_boxes_are_clipped_to_the_image() -> None:
    image = blank(100, 100)
    dets = make_detections([[-50, -40, 60, 70], [80, 90, 400, 300]], [0, 5])

    out = Annotator().annotate(image, dets)

    assert out.shape == image.shape
    assert tuple(int(v) for v in out[70, 30]) == class_color(0)  # bottom edge of the first box
    assert changed(image, out)[90:, 80:].any()


@pytest.mark.parametrize(
    "box",
    [
        pytest.param([500, 500, 600, 600], id="right-below"),
        pytest.param([-90, -90, -10, -10], id="left-above"),
        pytest.param([float("nan"), 10, 50, 50], id="nan"),
        pytest.param([60, 60, 20, 20], id="inverted"),
    ],
)
def test_boxes_outside_or_invalid_draw_nothing(box: list[float]) -> None:
    image = blank(100, 100)

    out = Annotator().annotate(image, make_detections([box], [0]))

    assert not out.any()


def test_confidence_can_be_left_out_of_the_tag() -> None:
    image = blank()
    dets = make_detections([[20, 100, 300, 200]], [0])

    with_conf = changed(image, Annotator(show_confidence=True).annotate(image, dets))
    without = changed(image, Annotator(show_confidence=False).annotate(image, dets))

    tag_rows = slice(70, 97)  # above the box edge
    assert (
        np.nonzero(with_conf[tag_rows].any(axis=0))[0].max()
        > np.nonzero(without[tag_rows].any(axis=0))[0].max()
    )


def test_overlay_draws_stats_top_left_only_when_enabled() -> None:
    image = blank()
    stats = {"fps": 9.8, "latency ms": 123.4}
    no_dets = Detections.empty(NAMES)

    on = Annotator(overlay=True).annotate(image, no_dets, stats=stats)
    off = Annotator(overlay=False).annotate(image, no_dets, stats=stats)
    without_stats = Annotator(overlay=True).annotate(image, no_dets)

    rows, cols = np.nonzero(changed(image, on))
    assert len(rows) > 0 and rows.max() < 60 and cols.max() < 200
    assert not off.any()
    assert not without_stats.any()


def test_unknown_class_uses_its_id_as_label() -> None:
    dets = Detections(np.array([[10, 40, 90, 90]]), np.array([0.5]), np.array([3]), names={})

    out = Annotator().annotate(blank(), dets)

    assert tuple(int(v) for v in out[90, 50]) == class_color(3)


@pytest.mark.parametrize(
    "image",
    [
        pytest.param(np.zeros((10, 10), np.uint8), id="grey"),
        pytest.param(np.zeros((10, 10, 3), np.float32), id="float"),
        pytest.param(np.zeros((10, 10, 4), np.uint8), id="bgra"),
    ],
)
def test_rejects_non_bgr_images(image: np.ndarray) -> None:
    with pytest.raises(ValueError, match=r"expected a non-empty \(H, W, 3\) uint8 BGR image"):
        Annotator().annotate(image, Detections.empty())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"thickness": 0}, "thickness must be a positive integer, got 0", id="thickness"),
        pytest.param({"font_scale": 0}, "font_scale must be a number in", id="font-scale"),
    ],
)
def test_rejects_bad_settings(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Annotator(**kwargs)  # type: ignore[arg-type]


def grey(h: int = 240, w: int = 320) -> np.ndarray:
    """A canvas in none of a tag's colours (black or white text, class colours): see `_tag_rows`."""
    return np.full((h, w, 3), 100, np.uint8)


def _tag_pixels(image: np.ndarray, color: tuple[int, int, int]) -> np.ndarray:
    """Where ``image`` shows a ``color`` tag: its colour, its text's (black or white) or an
    anti-aliased blend of the two (within a level of rounding)."""
    pixels = image.astype(np.float32)
    background = np.array(color, np.float32)
    found = np.zeros(image.shape[:2], bool)
    for text in (0.0, 255.0):
        towards = np.full(3, text, np.float32) - background
        share = np.clip((pixels - background) @ towards / float(towards @ towards), 0.0, 1.0)
        found |= np.abs(pixels - background - share[..., None] * towards).max(axis=2) <= 1.5
    return found


def _tag_rows(image: np.ndarray, color: tuple[int, int, int], cols: slice) -> np.ndarray:
    """Rows where a ``color`` tag covers most of the columns ``cols`` for 6 rows or more in a row:
    a tag, not a box's edge (a few rows thick). Its text counts as the tag, so however dense the
    font's strokes the tag's rows are all found; draw on `grey` (black would read as text)."""
    filled = np.flatnonzero(_tag_pixels(image[:, cols], color).mean(axis=1) > 0.5)
    runs = np.split(filled, np.flatnonzero(np.diff(filled) != 1) + 1)
    return np.concatenate([run for run in runs if run.size >= 6] or [np.array([], np.int64)])


def _neighbours(top: int, bottom: int) -> Detections:
    """A person (0.9) and a bus (0.8) overlapping side by side, both from ``top`` to ``bottom``."""
    return Detections(
        xyxy=np.array([[40, top, 140, bottom], [60, top, 160, bottom]], np.float32),
        confidence=np.array([0.9, 0.8], np.float32),
        class_id=np.array([0, 5], np.int64),
        names=NAMES,
    )


def test_tags_of_neighbouring_boxes_do_not_cover_each_other() -> None:
    # Two people side by side with the same top edge: both tags want the same place above.
    out = Annotator().annotate(grey(), _neighbours(100, 220))
    first = _tag_rows(out, class_color(0), slice(42, 60))
    second = _tag_rows(out, class_color(5), slice(62, 140))
    # The more confident box keeps its tag above it; the other moves inside its top edge.
    assert first.size > 5 and np.median(first) < 100, first
    assert second.size > 5 and np.median(second) > 100, second
    edge = set(range(98, 103))  # the boxes' top edges, which both tags touch
    assert not (set(first) & set(second)) - edge


def test_a_tag_below_the_top_edge_of_the_frame_goes_inside_or_below_its_box() -> None:
    # No room above (the box starts at the top), and a tag already inside: below the box.
    out = Annotator().annotate(grey(), _neighbours(0, 120))
    assert np.median(_tag_rows(out, class_color(0), slice(42, 60))) < 30
    assert np.median(_tag_rows(out, class_color(5), slice(62, 140))) > 120


def test_auto_font_scale_grows_with_the_frame() -> None:
    small = Annotator().annotate(grey(240, 320), make_detections([[40, 100, 200, 200]], [0]))
    large = Annotator().annotate(grey(1200, 1600), make_detections([[200, 500, 1000, 1000]], [0]))
    fixed = Annotator(font_scale=0.5).annotate(
        grey(1200, 1600), make_detections([[200, 500, 1000, 1000]], [0])
    )
    small_h = _tag_rows(small, class_color(0), slice(42, 60)).size
    large_h = _tag_rows(large, class_color(0), slice(202, 260)).size
    fixed_h = _tag_rows(fixed, class_color(0), slice(202, 260)).size
    # 1200 / 480 x 0.5 = 1.25: the tag is about 2.5 times as tall as at 320x240 or at a fixed 0.5.
    assert small_h == fixed_h
    assert 2.0 * small_h <= large_h <= 3.0 * small_h, (small_h, large_h)


PHOTOS = Path(__file__).resolve().parents[1] / "espdetect" / "emulator" / "photos"


@pytest.mark.model
@pytest.mark.parametrize("photo", ["zidane.jpg", "bus.jpg"])
@pytest.mark.parametrize("size", [(320, 240), (1600, 1200)])
def test_no_two_labels_overlap_on_the_sample_photos(
    photo: str, size: tuple[int, int], model_path: str
) -> None:
    from espdetect.detectors.factory import open_detector

    original = cv2.imread(str(PHOTOS / photo))
    assert original is not None
    image = cv2.resize(original, size, interpolation=cv2.INTER_AREA)
    detections = open_detector(model_path).detect(image)
    tags = Annotator().layout(detections, size)
    assert len(tags) >= 3, detections  # people close together (and a tie, a bus): labels compete
    for i, a in enumerate(tags):
        assert a.label.left >= 0 and a.label.right < size[0] and a.label.top >= 0 and a.label.bottom < size[1]
        for b in tags[i + 1 :]:
            assert a.label.overlap(b.label) == 0, (a, b)
    # Readable at both sizes: the text grows with the frame.
    heights = {t.label.bottom - t.label.top for t in tags}
    assert min(heights) >= (15 if size[1] <= 240 else 30), heights
