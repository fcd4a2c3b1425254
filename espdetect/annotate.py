"""`Annotator`: draws detection boxes, labels and an optional stats overlay on a BGR image.

Drawing uses numpy and Pillow, not OpenCV, so the server runs without OpenCV installed (its wheel
alone is larger than the rest of the container). Boxes and tag backgrounds are numpy slice
assignments; text comes from Pillow, the maintained Python library for fonts and drawing, with
the scalable Aileron font it bundles (`PIL.ImageFont.load_default` with a size, Pillow 10.1+).
Pillow renders a string in about 0.1-0.2 ms, too slow for every tag of every viewer's frame, so
each character is rendered once per font size and strings are put together from those glyphs
(the bundled font has whole-pixel advances and no kerning table: the very pixels of Pillow's
basic layout).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Mapping
from typing import Final, Literal, NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

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

#: Font size in pixels at ``font_scale`` 1.0: tags then come out the size OpenCV's
#: FONT_HERSHEY_SIMPLEX made them at the same scale (VGA, 0.5: "person 0.91" 88x20 either way), so
#: settings keep their meaning.
_PX_PER_SCALE: Final = 32
#: Background pixels around the text inside a tag or an overlay line, on every side.
_PAD: Final = 2
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
    #: Rows from the text's baseline to ``label.bottom``: the baseline is row ``label.bottom - baseline``.
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


@functools.lru_cache(maxsize=64)
def _blend(background: tuple[int, int, int], foreground: tuple[int, int, int]) -> np.ndarray:
    """(256, 3) uint8: the colour of a pixel of text coverage 0..255 (anti-aliased edges) on
    ``background``; taking from it with a text mask paints a whole tag in one step."""
    coverage = np.arange(256, dtype=np.float32)[:, None] / 255.0
    bg, fg = np.asarray(background, np.float32), np.asarray(foreground, np.float32)
    lut = np.rint(bg + (fg - bg) * coverage).astype(np.uint8)
    lut.flags.writeable = False
    return lut


@functools.lru_cache(maxsize=64)
def _color_row(color: tuple[int, int, int], width: int) -> np.ndarray:
    """(1, width, 3) uint8 of ``color``: assigning slices of it is several times faster than
    broadcasting a colour tuple into an edge (the edges of every box of every frame)."""
    row = np.empty((1, width, 3), np.uint8)
    row[:] = color
    row.flags.writeable = False
    return row


class _Glyphs:
    """The bundled font at one pixel size: each character rendered once, strings made from them.

    Every string of a size gets the same rows (capitals, digits and descenders, padded), so tags
    of one size are equally tall and their text sits at the same height.
    """

    def __init__(self, px: int, stroke: int) -> None:
        font = ImageFont.load_default(size=px)
        if not isinstance(font, ImageFont.FreeTypeFont):  # pragma: no cover - wheels have FreeType
            raise RuntimeError("Annotator needs Pillow built with FreeType for its scalable font")
        self._font = font
        self._stroke = stroke
        top = font.getbbox("Hbdfhklt0123456789#", anchor="ls", stroke_width=stroke)[1]
        bottom = font.getbbox("gjpqy", anchor="ls", stroke_width=stroke)[3]
        #: Rows of text above and below the baseline.
        self.ascent, self.descent = int(-top), int(bottom)
        #: Rows of a tag or an overlay line.
        self.height = self.ascent + self.descent + 2 * _PAD
        self._pad_x = _PAD + stroke
        # Ink may start left of the pen (negative bearings) or run past the advance.
        self._margin = px + stroke + 2
        self._glyphs: dict[str, tuple[int, int, np.ndarray | None]] = {}
        # FreeType faces must not render from two threads at once; annotators run in workers.
        self._lock = threading.Lock()
        # Labels repeat from frame to frame (a class, a confidence in hundredths): their painted
        # pixels are kept, so a repeated tag costs one copy. A few MB at most (VGA: ~4 kB a tag).
        self.patch = functools.lru_cache(maxsize=256)(self._patch)

    def width(self, text: str) -> int:
        """Columns of ``text``'s mask: its advance and the padding."""
        return sum(self._glyph(c)[0] for c in text) + 2 * self._pad_x

    def _glyph(self, char: str) -> tuple[int, int, np.ndarray | None]:
        """``char``'s advance, the column its ink starts at from the pen, and its coverage (None: no ink)."""
        glyph = self._glyphs.get(char)
        if glyph is None:
            with self._lock:
                advance = round(self._font.getlength(char))
                tile = Image.new("L", (advance + 2 * self._margin, self.height))
                ImageDraw.Draw(tile).text(
                    (self._margin, _PAD + self.ascent),
                    char,
                    fill=255,
                    font=self._font,
                    anchor="ls",
                    stroke_width=self._stroke,
                    stroke_fill=255,
                )
            coverage = np.asarray(tile)
            ink = np.flatnonzero(coverage.any(axis=0))
            if ink.size:
                alpha: np.ndarray | None = np.ascontiguousarray(coverage[:, ink[0] : ink[-1] + 1])
                glyph = (advance, int(ink[0]) - self._margin, alpha)
            else:
                glyph = (advance, 0, None)
            self._glyphs[char] = glyph
        return glyph

    def _mask(self, text: str) -> np.ndarray:
        """``text``'s coverage, (height, width(text)) uint8, baseline at row ``_PAD + ascent``."""
        glyphs = [self._glyph(c) for c in text]
        width = sum(g[0] for g in glyphs) + 2 * self._pad_x
        mask = np.zeros((self.height, width), np.uint8)
        x = self._pad_x
        inked = 0  # columns before this hold no ink yet
        for advance, offset, alpha in glyphs:
            if alpha is not None:
                left = x + offset
                lo, hi = max(0, left), min(width, left + alpha.shape[1])
                if lo >= inked:  # the usual case: a plain copy
                    mask[:, lo:hi] = alpha[:, lo - left : hi - left]
                elif lo < hi:  # anti-aliased edges of neighbours share a column: keep the darker ink
                    np.maximum(mask[:, lo:hi], alpha[:, lo - left : hi - left], out=mask[:, lo:hi])
                inked = max(inked, hi)
            x += advance
        return mask

    def _patch(
        self, text: str, background: tuple[int, int, int], foreground: tuple[int, int, int]
    ) -> np.ndarray:
        """``text`` painted in ``foreground`` on ``background``: (height, width(text), 3) uint8."""
        # mode="clip" skips take's buffering (indices are uint8: always in range).
        patch = np.take(_blend(background, foreground), self._mask(text), axis=0, mode="clip")
        patch.flags.writeable = False  # shared by every frame drawing this tag
        return patch


@functools.lru_cache(maxsize=32)
def _glyphs(px: int, stroke: int) -> _Glyphs:
    return _Glyphs(px, stroke)


def _draw_box(canvas: np.ndarray, box: Rect, color: tuple[int, int, int], thickness: int) -> None:
    """``box``'s outline, ``thickness`` pixels wide and centred on its edges, clipped to ``canvas``."""
    h, w = canvas.shape[:2]
    before = thickness // 2  # rows or columns outside the edge; the rest are on it and inside
    after = thickness - before
    top, bottom = max(0, box.top - before), min(h, box.bottom + after)
    left, right = max(0, box.left - before), min(w, box.right + after)
    row = _color_row(color, w)
    canvas[top : box.top + after, left:right] = row[:, : right - left]
    canvas[max(0, box.bottom - before) : bottom, left:right] = row[:, : right - left]
    inner = min(box.left + after, right) - left  # columns of the left edge
    canvas[top:bottom, left : left + inner] = row[:, :inner]
    start = max(0, box.right - before)
    canvas[top:bottom, start:right] = row[:, : right - start]


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
        # Bolder text for thicker lines: Pillow's stroke widens each glyph by a pixel a side.
        self._stroke = self._font_thickness - 1

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
            _draw_box(canvas, tag.box, tag.color, self.thickness)
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
        # Checked and rounded in numpy, then walked as Python numbers (numpy scalars are slow one
        # at a time); np.round rounds halves to even as round() does.
        xyxy = np.asarray(detections.xyxy, np.float64).reshape(-1, 4)
        finite = np.all(np.isfinite(xyxy), axis=1)
        # A pixel beyond each side decides as well as any larger number, and fits an int64.
        limits = np.array([w, h, w, h], np.float64)
        corners = (
            np.round(np.clip(np.where(finite[:, None], xyxy, 0.0), -1.0, limits)).astype(np.int64).tolist()
        )
        boxes: list[tuple[float, str, Rect, int]] = []
        for (x1, y1, x2, y2), ok, conf, cid, label in zip(
            corners,
            finite.tolist(),
            np.asarray(detections.confidence, np.float64).tolist(),
            np.asarray(detections.class_id).tolist(),
            labels,
            strict=True,
        ):
            if not ok:
                continue
            if x2 < 0 or y2 < 0 or x1 >= w or y1 >= h:
                continue
            x1, x2 = max(0, min(x1, w - 1)), max(0, min(x2, w - 1))
            y1, y2 = max(0, min(y1, h - 1)), max(0, min(y2, h - 1))
            if x2 < x1 or y2 < y1:
                continue
            text = f"{label} {conf:.2f}" if self.show_confidence else label
            boxes.append((conf, text, Rect(x1, y1, x2, y2), int(cid)))
        tags: list[Tag] = []
        for _, text, box, cid in sorted(boxes, key=lambda b: -b[0]):
            spot, baseline = self._place(text, box, [t.label for t in tags], (w, h), scale)
            tags.append(Tag(text, box, spot, class_color(cid), scale, baseline))
        return tags

    def _scale(self, h: int, w: int) -> float:
        if self.font_scale != "auto":
            return self.font_scale
        return min(_AUTO_FONT_MAX, _AUTO_FONT_SCALE * max(1.0, min(h, w) / _AUTO_FONT_SIDE))

    def _font(self, scale: float) -> _Glyphs:
        return _glyphs(max(1, round(scale * _PX_PER_SCALE)), self._stroke)

    def _place(
        self, text: str, box: Rect, taken: list[Rect], size: tuple[int, int], scale: float
    ) -> tuple[Rect, int]:
        """The tag's rectangle for ``text`` on ``box``, avoiding ``taken``; and the text's baseline."""
        w, h = size
        font = self._font(scale)
        tag_w, tag_h = font.width(text) - 1, font.height - 1  # right - left, bottom - top
        baseline = _PAD + font.descent - 1
        left = max(0, min(box.left, w - 1 - tag_w))
        tops = (box.top - tag_h, box.top, box.bottom + 1, box.bottom - tag_h)  # above, inside, below, inside
        spots = [
            Rect(left, top, min(w - 1, left + tag_w), top + tag_h)
            for top in tops
            if top >= 0 and top + tag_h < h
        ] or [Rect(left, max(0, box.top), min(w - 1, left + tag_w), min(h - 1, max(0, box.top) + tag_h))]
        # The first free spot in order of preference, else the least covered one (the first of
        # equals). Stopping at a free one saves measuring the others against every tag placed.
        best, least = spots[0], -1
        for spot in spots:
            covered = sum(spot.overlap(t) for t in taken)
            if covered == 0:
                return spot, baseline
            if least < 0 or covered < least:
                best, least = spot, covered
        return best, baseline

    def _draw_tag(self, canvas: np.ndarray, tag: Tag) -> None:
        spot = tag.label
        # The patch is the whole tag, background and text (cut where the frame cuts the tag).
        patch = self._font(tag.scale).patch(tag.text, tag.color, _text_color(tag.color))
        rows, cols = spot.bottom - spot.top + 1, spot.right - spot.left + 1
        canvas[spot.top : spot.bottom + 1, spot.left : spot.right + 1] = patch[:rows, :cols]

    def _draw_overlay(self, canvas: np.ndarray, stats: Mapping[str, float], scale: float) -> None:
        font = self._font(scale)
        patches = [
            font.patch(f"{name}: {value:.1f}", _OVERLAY_BG, _OVERLAY_FG) for name, value in stats.items()
        ]
        h, w = canvas.shape[:2]
        margin = 2  # around the lines, on top of each line's own padding
        canvas[: font.height * len(patches) + 2 * margin, : max(p.shape[1] for p in patches) + 2 * margin] = (
            _OVERLAY_BG
        )
        for i, patch in enumerate(patches):
            top = margin + i * font.height
            part = patch[: max(0, h - top), : max(0, w - margin)]  # clipped to small frames
            canvas[top : top + part.shape[0], margin : margin + part.shape[1]] = part
