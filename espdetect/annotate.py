"""`Annotator`: draws detection boxes, labels and an optional stats overlay on a BGR image."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Final, Literal, NamedTuple

import cv2
import numpy as np

from espdetect.constraints import check_bgr_image
from espdetect.detections import Detections

__all__ = ["PALETTE", "Annotator", "Rect", "Tag", "class_color"]

#: Box colours (BGR), picked by class id modulo its length so a class keeps its colour
#: across frames, runs and processes.
PALETTE: Final[tuple[tuple[int, int, int], ...]] = (
    (56, 56, 255),
    (151, 157, 255),
    (31, 112, 255),
    (29, 178, 255),
    (49, 210, 207),
    (10, 249, 72),
    (23, 204, 146),
    (134, 219, 61),
    (52, 147, 26),
    (187, 212, 0),
    (168, 153, 44),
    (255, 194, 0),
    (147, 69, 52),
    (255, 115, 100),
    (236, 24, 0),
    (255, 56, 132),
    (133, 0, 82),
    (255, 56, 203),
    (200, 149, 255),
    (199, 55, 255),
)

_FONT: Final = cv2.FONT_HERSHEY_SIMPLEX
#: ``font_scale="auto"``: this scale up to a 480-pixel short side, then in proportion to it (a
#: 1600x1200 frame gets 1.25), so tags read the same share of the picture on any frame size.
_AUTO_FONT_SCALE: Final = 0.5
_AUTO_FONT_SIDE: Final = 480
_AUTO_FONT_MAX: Final = 3.0


class Rect(NamedTuple):
    """A rectangle in pixels, edges included (``right``, ``bottom`` are the last column and row)."""

    left: int
    top: int
    right: int
    bottom: int

    def overlap(self, other: Rect) -> int:
        """Area shared with ``other`` (0 when they only touch)."""
        dx = min(self.right, other.right) - max(self.left, other.left)
        dy = min(self.bottom, other.bottom) - max(self.top, other.top)
        return dx * dy if dx > 0 and dy > 0 else 0


class Tag(NamedTuple):
    """One detection as `Annotator.layout` places it: its box and its label's rectangle."""

    text: str
    box: Rect
    label: Rect
    color: tuple[int, int, int]
    scale: float
    #: Pixels below the text's baseline inside ``label`` (OpenCV's measure).
    baseline: int


_OVERLAY_BG: Final = (32, 32, 32)
_OVERLAY_FG: Final = (255, 255, 255)


def class_color(class_id: int) -> tuple[int, int, int]:
    """The BGR colour of a class id (stable: the same id always gets the same colour).

    Example:
        >>> class_color(0) == class_color(0) != class_color(1)
        True
    """
    return PALETTE[int(class_id) % len(PALETTE)]


def _text_color(background: tuple[int, int, int]) -> tuple[int, int, int]:
    b, g, r = background
    # ITU-R BT.601 luma: dark text on light labels, white text on dark ones.
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 140 else (255, 255, 255)


class Annotator:
    """Draws boxes with ``label confidence`` tags, one colour per class, and optional stats text.

    Settings go to the constructor, per-frame data to `annotate`. Boxes are clipped to the
    image; boxes entirely outside it are skipped. The input image is left untouched unless
    ``copy=False`` is passed to `annotate`.

    Tags never cover each other while there is room: each goes above its box, else inside its
    top edge, below it, or inside its bottom edge, the first of these that overlaps no tag
    already placed (the most confident boxes are placed first); when every place is taken, the
    one overlapping least. ``font_scale="auto"`` (the default) grows the text with the frame.

    Example:
        >>> ann = Annotator(overlay=True)
        >>> img = np.zeros((240, 320, 3), np.uint8)
        >>> dets = Detections(np.array([[10, 20, 100, 200]]), np.array([0.9]), np.array([0]), {0: "person"})
        >>> out = ann.annotate(img, dets, stats={"fps": 12.5, "latency ms": 80.0})
        >>> bool(out.any()), bool(img.any())
        (True, False)
    """

    def __init__(
        self,
        *,
        thickness: int = 2,
        font_scale: float | Literal["auto"] = "auto",
        show_confidence: bool = True,
        overlay: bool = False,
    ) -> None:
        if isinstance(thickness, bool) or not isinstance(thickness, int) or thickness < 1:
            raise ValueError(f"thickness must be a positive integer, got {thickness!r}")
        if font_scale != "auto" and (
            isinstance(font_scale, bool)
            or not isinstance(font_scale, int | float)
            or not 0 < font_scale <= 10
        ):
            raise ValueError(f"font_scale must be a number in (0, 10] or 'auto', got {font_scale!r}")
        self.thickness = thickness
        self.font_scale: float | Literal["auto"] = font_scale if font_scale == "auto" else float(font_scale)
        self.show_confidence = show_confidence
        self.overlay = overlay
        self._font_thickness = max(1, thickness // 2)

    def annotate(
        self,
        image: np.ndarray,
        detections: Detections,
        *,
        stats: Mapping[str, float] | None = None,
        copy: bool = True,
    ) -> np.ndarray:
        """Draw ``detections`` (and ``stats`` when the overlay is on) on ``image``.

        Args:
            image: (H, W, 3) uint8 BGR image.
            detections: boxes in ``image``'s pixel coordinates.
            stats: name -> value lines for the overlay, e.g. ``{"fps": 9.8, "latency ms": 120}``;
                drawn top-left only when the annotator was built with ``overlay=True``.
            copy: draw on a copy (default); ``False`` draws into ``image`` itself, which must
                then be writeable and C-contiguous.

        Returns:
            The annotated image (``image`` itself when ``copy=False``).

        Raises:
            ValueError: ``image`` is not an (H, W, 3) uint8 array, or cannot be drawn on in place.
        """
        check_bgr_image(image)
        if copy:
            canvas = np.array(image, copy=True, order="C")
        else:
            if not image.flags.c_contiguous or not image.flags.writeable:
                raise ValueError(
                    "expected a writeable C-contiguous image for copy=False, got "
                    f"c_contiguous={image.flags.c_contiguous}, writeable={image.flags.writeable}"
                )
            canvas = image
        tags = self.layout(detections, (canvas.shape[1], canvas.shape[0]))
        for tag in tags:
            cv2.rectangle(canvas, tag.box[:2], tag.box[2:], tag.color, self.thickness, cv2.LINE_AA)
        for tag in tags:  # over every box
            self._draw_tag(canvas, tag)
        if self.overlay and stats:
            self._draw_overlay(canvas, stats, self._scale(*canvas.shape[:2]))
        return canvas

    def layout(self, detections: Detections, size: tuple[int, int]) -> list[Tag]:
        """Where `annotate` draws each box and its tag on a ``size`` (width, height) image.

        Boxes are clipped to the image, those outside it or not finite left out; tags are
        placed most confident first, each at the first free spot (see the class docstring).

        Example:
            >>> dets = Detections(np.array([[10, 40, 100, 200]]), np.array([0.9]), np.array([0]), {0: "pe"})
            >>> tag = Annotator(font_scale=0.5).layout(dets, (320, 240))[0]
            >>> tag.text, tag.box, tag.label.bottom
            ('pe 0.90', Rect(left=10, top=40, right=100, bottom=200), 40)
        """
        w, h = size
        scale = self._scale(h, w)
        labels = detections.labels
        if detections.tracker_id is not None:
            labels = [
                f"{label} #{int(track)}" for label, track in zip(labels, detections.tracker_id, strict=True)
            ]
        boxes: list[tuple[float, str, Rect, int]] = []
        for box, conf, cid, label in zip(
            detections.xyxy, detections.confidence, detections.class_id, labels, strict=True
        ):
            if not all(math.isfinite(float(v)) for v in box):
                continue
            x1, y1, x2, y2 = (round(float(v)) for v in box)
            if x2 < 0 or y2 < 0 or x1 >= w or y1 >= h:
                continue
            x1, x2 = max(0, min(x1, w - 1)), max(0, min(x2, w - 1))
            y1, y2 = max(0, min(y1, h - 1)), max(0, min(y2, h - 1))
            if x2 < x1 or y2 < y1:
                continue
            text = f"{label} {float(conf):.2f}" if self.show_confidence else label
            boxes.append((float(conf), text, Rect(x1, y1, x2, y2), int(cid)))
        tags: list[Tag] = []
        for _, text, box, cid in sorted(boxes, key=lambda b: -b[0]):
            spot, baseline = self._place(text, box, [t.label for t in tags], (w, h), scale)
            tags.append(Tag(text, box, spot, class_color(cid), scale, baseline))
        return tags

    def _scale(self, h: int, w: int) -> float:
        if self.font_scale != "auto":
            return self.font_scale
        return min(_AUTO_FONT_MAX, _AUTO_FONT_SCALE * max(1.0, min(h, w) / _AUTO_FONT_SIDE))

    def _place(
        self, text: str, box: Rect, taken: list[Rect], size: tuple[int, int], scale: float
    ) -> tuple[Rect, int]:
        """The tag's rectangle for ``text`` on ``box``, avoiding ``taken``; and the text's baseline."""
        w, h = size
        (tw, th), baseline = cv2.getTextSize(text, _FONT, scale, self._font_thickness)
        tag_w, tag_h = tw + 2, th + baseline + 2
        left = max(0, min(box.left, w - 1 - tag_w))
        tops = (box.top - tag_h, box.top, box.bottom + 1, box.bottom - tag_h)  # above, inside, below, inside
        spots = [
            Rect(left, top, min(w - 1, left + tag_w), top + tag_h)
            for top in tops
            if top >= 0 and top + tag_h < h
        ] or [Rect(left, max(0, box.top), min(w - 1, left + tag_w), min(h - 1, max(0, box.top) + tag_h))]
        # min() keeps the first of equals: the first free spot in order of preference, else the
        # least covered one.
        return min(spots, key=lambda r: sum(r.overlap(t) for t in taken)), baseline

    def _draw_tag(self, canvas: np.ndarray, tag: Tag) -> None:
        spot = tag.label
        cv2.rectangle(canvas, (spot.left, spot.top), (spot.right, spot.bottom), tag.color, cv2.FILLED)
        cv2.putText(
            canvas,
            tag.text,
            (spot.left + 1, spot.bottom - tag.baseline - 1),
            _FONT,
            tag.scale,
            _text_color(tag.color),
            self._font_thickness,
            cv2.LINE_AA,
        )

    def _draw_overlay(self, canvas: np.ndarray, stats: Mapping[str, float], scale: float) -> None:
        lines = [f"{name}: {value:.1f}" for name, value in stats.items()]
        sizes = [cv2.getTextSize(line, _FONT, scale, self._font_thickness) for line in lines]
        line_h = max(th + baseline for (_, th), baseline in sizes) + 4
        width = max(tw for (tw, _), _ in sizes) + 8
        cv2.rectangle(canvas, (0, 0), (width, line_h * len(lines) + 4), _OVERLAY_BG, cv2.FILLED)
        for i, line in enumerate(lines):
            cv2.putText(
                canvas,
                line,
                (4, (i + 1) * line_h - 2),
                _FONT,
                scale,
                _OVERLAY_FG,
                self._font_thickness,
                cv2.LINE_AA,
            )
