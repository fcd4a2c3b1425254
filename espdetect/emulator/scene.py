"""What the emulated camera sees: a looping sequence of pictures rendered at any size.

* :class:`PhotoScene` (the default) pans and zooms across Ultralytics' sample photos
  ``bus.jpg`` and ``zidane.jpg`` laid side by side, so people and a bus move through the frame
  and stay detectable down to QVGA.
* :class:`YardScene` is a still yard (a façade and paving from ``bus.jpg``) that people cut from
  ``bus.jpg`` walk across on a fixed timeline: a long empty stretch, one person who enters, stops
  and leaves, a quiet gap, two people crossing. It knows where each person is (:meth:`YardScene.boxes`),
  so motion gating, tracking and displayed boxes can be checked against exact ground truth.
* :class:`StillsScene` loops over pictures taken from a video file, an image folder or one image.
* :class:`SensorEffects` adds sensor noise and a slow brightness drift to any of them.

Scenes are read-only once loaded and safe to render from several threads.
"""

from __future__ import annotations

import math
import numbers
import operator
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Final, Literal, SupportsIndex

import cv2
import numpy as np

from espdetect.constraints import FloatRange, IntRange
from espdetect.exceptions import ConfigurationError

__all__ = [
    "BRIGHTNESS_RAMP",
    "IMAGE_SUFFIXES",
    "NOISE",
    "SCENES",
    "STAND_SECONDS",
    "STILL_SECONDS",
    "YARD_FPS",
    "Image",
    "PhotoScene",
    "Scene",
    "SceneSource",
    "Segment",
    "SensorEffects",
    "StillsScene",
    "YardScene",
    "check_sensor_effects",
    "load_scene",
    "sample_photo",
]

#: A BGR picture, height x width x 3, uint8.
Image = np.ndarray
#: ``"photos"`` or ``"yard"`` for a built-in scene, or a path to a video file, an image folder or an image.
SceneSource = Literal["photos", "yard"] | Path
#: The names of the built-in scenes.
SCENES: tuple[Literal["photos", "yard"], ...] = ("photos", "yard")

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})

# Stills are kept as JPEG bytes no larger than this, so a long loop stays small in memory.
_MAX_STILL = (1600, 1200)

#: Sensor noise: the most a pixel channel moves, in grey levels (0: off).
NOISE: Final = IntRange(0, 127)
#: Brightness drift at mid-loop, in grey levels (negative: darker; 0: off).
BRIGHTNESS_RAMP: Final = FloatRange(-255.0, 255.0)
#: Seconds of empty yard before the first person walks in.
STILL_SECONDS: Final = FloatRange(0.0, 3600.0)
#: Seconds the first person of the yard scene stands still.
STAND_SECONDS: Final = FloatRange(0.1, 3600.0)
#: Frame rates the yard's timeline (laid out in seconds) can be rendered at.
YARD_FPS: Final = FloatRange(1.0, 1000.0)

# The noise generator's seed (with the frame index), fixed so that every run renders the same
# noisy frames.
_NOISE_SEED = 0x35D

# Colour bars the OV2640 shows with colorbar=1: white, yellow, cyan, green, magenta, red, blue, black.
_BARS_BGR = (
    (255, 255, 255),
    (0, 255, 255),
    (255, 255, 0),
    (0, 255, 0),
    (255, 0, 255),
    (0, 0, 255),
    (255, 0, 0),
    (0, 0, 0),
)


class Scene(ABC):
    """A loop of ``frame_count`` pictures, each rendered on demand at the requested size."""

    @property
    @abstractmethod
    def frame_count(self) -> int:
        """How many distinct frames make up one loop."""

    @abstractmethod
    def render(self, index: int, size: tuple[int, int]) -> Image:
        """Frame ``index`` (0 <= index < frame_count) as a BGR image of exactly ``size`` (w, h)."""


def color_bars(size: tuple[int, int]) -> Image:
    """The sensor's colour-bar test pattern at ``size``."""
    w, h = size
    img: Image = np.empty((h, w, 3), dtype=np.uint8)
    for i, bgr in enumerate(_BARS_BGR):
        img[:, i * w // len(_BARS_BGR) : (i + 1) * w // len(_BARS_BGR)] = bgr
    return img


def sample_photo(name: str) -> Path:
    """Path of one of the sample photos shipped with espdetect (``bus.jpg``, ``zidane.jpg``;
    Ultralytics' samples, AGPL-3.0: see espdetect/emulator/photos/README.md)."""
    path = Path(str(resources.files("espdetect.emulator.photos").joinpath(name)))
    if not path.is_file():
        raise ConfigurationError(
            f"expected a sample photo named bus.jpg or zidane.jpg, got {name!r}", field="photo"
        )
    return path


def _read_image(path: Path) -> Image:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise ConfigurationError(f"expected a readable image at {path}, got a file OpenCV cannot decode")
    return img


def cover_resize(img: Image, size: tuple[int, int]) -> Image:
    """Scale ``img`` to fill ``size`` and crop the overflow centrally, keeping the aspect ratio."""
    w, h = size
    ih, iw = img.shape[:2]
    scale = max(w / iw, h / ih)
    sw, sh = max(w, round(iw * scale)), max(h, round(ih * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    scaled = cv2.resize(img, (sw, sh), interpolation=interp)
    x0, y0 = (sw - w) // 2, (sh - h) // 2
    return np.ascontiguousarray(scaled[y0 : y0 + h, x0 : x0 + w])


class PhotoScene(Scene):
    """A camera panning across ``bus.jpg`` and ``zidane.jpg`` side by side, gently zooming.

    The view moves from the bus photo to the football photo and back once per loop (cosine
    easing, so the loop has no jump) and zooms in by up to 20 % twice per loop. Every frame
    shows at least one whole person; the bus is in view during the first and last quarter.

    Example:
        >>> scene = PhotoScene(frames=90)
        >>> scene.render(0, (320, 240)).shape
        (240, 320, 3)
    """

    _CANVAS_HEIGHT = 720
    _MAX_ZOOM = 1.2

    def __init__(self, frames: int = 90) -> None:
        if frames < 1:
            raise ValueError(f"expected frames >= 1, got {frames}")
        self._frames = frames
        ch = self._CANVAS_HEIGHT
        parts = []
        for name in ("bus.jpg", "zidane.jpg"):
            img = _read_image(sample_photo(name))
            ih, iw = img.shape[:2]
            parts.append(cv2.resize(img, (round(iw * ch / ih), ch), interpolation=cv2.INTER_AREA))
        self._canvas: Image = np.ascontiguousarray(np.hstack(parts))
        self._scaled: dict[int, tuple[float, Image]] = {}
        self._lock = threading.Lock()

    @property
    def frame_count(self) -> int:
        return self._frames

    def _canvas_for(self, height: int) -> tuple[float, Image]:
        # Downscale the canvas once per output height so each frame only needs a near-1:1 warp
        # (a direct large downscale with warpAffine would alias badly).
        with self._lock:
            cached = self._scaled.get(height)
            if cached is None:
                scale = min(1.0, height * self._MAX_ZOOM / self._CANVAS_HEIGHT)
                ch, cw = self._canvas.shape[:2]
                img = self._canvas
                if scale < 1.0:
                    img = cv2.resize(
                        img, (round(cw * scale), round(ch * scale)), interpolation=cv2.INTER_AREA
                    )
                cached = (scale, np.ascontiguousarray(img))
                self._scaled[height] = cached
            return cached

    def view(self, index: int, size: tuple[int, int]) -> tuple[float, float, float, float]:
        """The visible rectangle ``(x, y, width, height)`` of frame ``index``, in 720-px canvas pixels."""
        w, h = size
        ch, cw = self._canvas.shape[:2]
        phase = 2 * math.pi * (index % self._frames) / self._frames
        zoom = 1 + (self._MAX_ZOOM - 1) * (1 - math.cos(2 * phase)) / 2
        vh = ch / zoom
        vw = vh * w / h
        if vw > cw:
            vw = float(cw)
            vh = vw * h / w
        pan = (1 - math.cos(phase)) / 2
        x0 = pan * (cw - vw)
        y0 = (ch - vh) * (1 - math.cos(2 * phase)) / 4
        return (x0, y0, vw, vh)

    def render(self, index: int, size: tuple[int, int]) -> Image:
        w, h = size
        scale, canvas = self._canvas_for(h)
        x0, y0, vw, vh = self.view(index, size)
        sx, sy = w / (vw * scale), h / (vh * scale)
        matrix = np.array([[sx, 0.0, -x0 * scale * sx], [0.0, sy, -y0 * scale * sy]], dtype=np.float64)
        out = cv2.warpAffine(canvas, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return np.ascontiguousarray(out)


@dataclass(frozen=True)
class Segment:
    """One stretch of a :class:`YardScene` timeline: frames ``start`` to ``stop - 1``.

    Example:
        >>> seg = Segment("still", 0, 180, people=0, moving=False)
        >>> 179 in seg, 180 in seg, len(seg)
        (True, False, 180)
    """

    #: "still", "enter", "standing", "leave", "still-2", "crossing" or "still-3".
    name: str
    #: First frame of the segment.
    start: int
    #: One past its last frame.
    stop: int
    #: The most people in view at once during the segment.
    people: int
    #: Whether anything moves: False for the empty stretches and while the person stands still.
    moving: bool

    def __contains__(self, index: object) -> bool:
        # Integral, not int: frame numbers often come out of numpy arrays.
        return isinstance(index, numbers.Integral) and self.start <= int(index) < self.stop

    def __len__(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class _Sprite:
    """A rectangle of a sample photo tightly around one person: the sprite is the person's box."""

    photo: str
    #: (x0, y0, x1, y1) in the photo's pixels.
    rect: tuple[int, int, int, int]


# The person boxes that the bundled yolov8n_int8.onnx finds in bus.jpg (810x1080), conf 0.90:
# (50.5, 397.8, 243.5, 903.4) the man in the beige coat, walking, and (221.4, 407.7, 342.8, 856.2)
# the man in the black jacket; rounded outwards. Cropping exactly at the box makes the pasted
# rectangle itself the ground truth (a few pixels of a stranger's hand and of the other man's shoe
# come along at the edges).
_COAT = _Sprite("bus.jpg", (50, 397, 244, 904))
_JACKET = _Sprite("bus.jpg", (221, 407, 343, 857))

# The yard: the façade above the bus and the paving below everyone's feet, both from x 135..675 of
# bus.jpg (no people in either), stacked into a 540x405 (4:3) picture.
_FACADE = (135, 0, 675, 230)
_PAVING = (135, 905, 675, 1080)


@dataclass(frozen=True)
class _Walk:
    """One person's path: ``keys`` are (frame, u) points, linearly interpolated.

    ``u`` runs from 0 (the box just left of the frame) to 1 (just right of it); outside
    ``0 < u < 1`` or the keys' frames the person is not drawn.
    """

    sprite: _Sprite
    mirror: bool
    #: Box height as a fraction of the frame height (nearer people are taller).
    height: float
    #: Where the feet (box bottom) are, as a fraction of the frame height.
    feet: float
    keys: tuple[tuple[int, float], ...]

    def size_in(self, size: tuple[int, int]) -> tuple[int, int]:
        """The sprite's (width, height) in a frame of ``size``."""
        x0, y0, x1, y1 = self.sprite.rect
        sh = max(1, round(size[1] * self.height))
        return max(1, round(sh * (x1 - x0) / (y1 - y0))), sh

    def u(self, index: int) -> float | None:
        frames = [k for k, _ in self.keys]
        if index < frames[0] or index > frames[-1]:
            return None
        for (k0, u0), (k1, u1) in zip(self.keys, self.keys[1:], strict=False):
            if k0 <= index <= k1:
                return u0 if k1 == k0 else u0 + (u1 - u0) * (index - k0) / (k1 - k0)
        return None  # unreachable: index lies between the first and last key


# Segment lengths in seconds after the first still stretch; the person walks about a fifth of the
# frame width per second, a stroll.
_ENTER_S = 2.5
_STAND_S = 3.0
_LEAVE_S = 3.0
_GAP_S = 4.0
_CROSS_S = 6.0
_TAIL_S = 3.0
# Where the first person stops (u), and how much later the far person of the crossing enters.
_STAND_U = 0.45
_FAR_DELAY_S = 1.0
_NEAR_CROSS_S = 5.0


class YardScene(Scene):
    """A fixed camera on a still yard; people walk in, stop, walk on and leave, on a timeline.

    The timeline (``fps`` frames per second, ``S`` = ``still_seconds``): ``S`` s of empty yard;
    a man in a beige coat enters from the left (2.5 s), stands (``stand_seconds``, 3 s by
    default: a long stand shows whether a person standing still stays one event) and leaves to the right
    (3 s); 4 s empty; a man in a black jacket walks left to right near the camera while the man
    in the coat, farther away, walks right to left, so they cross (6 s); 3 s empty. Each part is
    a :class:`Segment` in :attr:`segments`. Frames of an empty stretch, and of the standing
    person, are identical; the loop begins and ends empty, so it wraps without a jump. Frame
    ``i`` always renders the same picture.

    :meth:`boxes` gives the exact box of every person in view: the people are pasted as
    rectangles cut tightly around them, so the pasted rectangle is the box.

    Example:
        >>> scene = YardScene(fps=15.0, still_seconds=12.0)
        >>> scene.first_frame_with_person, scene.frame_count
        (180, 503)
        >>> scene.boxes(180, (320, 240)).tolist()  # the man entering, clipped at the left edge
        [[0.0, 79.0, 4.0, 228.0]]
    """

    def __init__(
        self, fps: float = 15.0, still_seconds: float = 12.0, stand_seconds: float = _STAND_S
    ) -> None:
        self.fps = YARD_FPS.check("fps", fps)
        self.still_seconds = STILL_SECONDS.check("still_seconds", still_seconds)
        self.stand_seconds = STAND_SECONDS.check("stand_seconds", stand_seconds)
        names = (
            ("still", still_seconds, 0, False),
            ("enter", _ENTER_S, 1, True),
            ("standing", self.stand_seconds, 1, False),
            ("leave", _LEAVE_S, 1, True),
            ("still-2", _GAP_S, 0, False),
            ("crossing", _CROSS_S, 2, True),
            ("still-3", _TAIL_S, 0, False),
        )
        segments: list[Segment] = []
        start = 0
        for name, seconds, people, moving in names:
            stop = start + max(1, round(seconds * self.fps)) if seconds else start
            segments.append(Segment(name, start, stop, people, moving))
            start = stop
        #: The timeline, in order; see the class docstring.
        self.segments: tuple[Segment, ...] = tuple(segments)
        _, enter, standing, leave, _, crossing, _ = self.segments
        near_out = crossing.start + round(_NEAR_CROSS_S * self.fps)
        far_in = crossing.start + round(_FAR_DELAY_S * self.fps) - 1
        #: People in drawing order (far before near), each with its path.
        self._walks = (
            _Walk(
                _COAT,
                False,
                0.62,
                0.95,
                (
                    (enter.start - 1, 0.0),
                    (standing.start, _STAND_U),
                    (leave.start - 1, _STAND_U),
                    (leave.stop, 1.0),
                ),
            ),
            _Walk(_COAT, True, 0.42, 0.80, ((far_in, 1.0), (crossing.stop, 0.0))),
            _Walk(_JACKET, False, 0.64, 0.97, ((crossing.start - 1, 0.0), (near_out, 1.0))),
        )
        self._frames = self.segments[-1].stop
        self._canvas = _yard_canvas()
        self._photos: dict[str, Image] = {}
        self._sized: dict[tuple[object, ...], Image] = {}
        self._lock = threading.Lock()

    @property
    def frame_count(self) -> int:
        return self._frames

    @property
    def first_frame_with_person(self) -> int:
        """The first frame with a person in view: the end of the first still stretch.

        At any frame size at least 64 pixels wide, ``boxes`` is empty before it and not at it.
        """
        return self.segments[1].start

    def segment(self, index: SupportsIndex) -> Segment:
        """The segment that frame ``index`` (taken modulo the loop) belongs to."""
        frame = operator.index(index) % self._frames
        return next(s for s in self.segments if frame in s)

    def _sprite(self, walk: _Walk, size: tuple[int, int]) -> Image:
        w, h = size
        key = (walk.sprite, walk.mirror, walk.height, w, h)
        with self._lock:
            img = self._sized.get(key)
            if img is None:
                photo = self._photos.get(walk.sprite.photo)
                if photo is None:
                    photo = _read_image(sample_photo(walk.sprite.photo))
                    self._photos[walk.sprite.photo] = photo
                x0, y0, x1, y1 = walk.sprite.rect
                sw, sh = walk.size_in(size)
                interp = cv2.INTER_AREA if sh < y1 - y0 else cv2.INTER_LINEAR
                img = cv2.resize(photo[y0:y1, x0:x1], (sw, sh), interpolation=interp)
                if walk.mirror:
                    img = img[:, ::-1]
                img = np.ascontiguousarray(img)
                self._sized[key] = img
            return img

    def _background(self, size: tuple[int, int]) -> Image:
        with self._lock:
            img = self._sized.get(size)
            if img is None:
                img = cover_resize(self._canvas, size)
                self._sized[size] = img
            return img

    def _placed(self, index: int, size: tuple[int, int]) -> list[tuple[_Walk, int, int]]:
        """(walk, x, y) of the top-left corner of each person drawn in frame ``index``."""
        w, h = size
        index %= self._frames
        placed = []
        for walk in self._walks:
            u = walk.u(index)
            if u is None:
                continue
            sw, sh = walk.size_in(size)
            x = round(-sw + u * (w + sw))
            if x <= -sw or x >= w:
                continue  # entirely outside the frame
            placed.append((walk, x, round(h * walk.feet) - sh))
        return placed

    def boxes(self, index: int, size: tuple[int, int], clip: bool = True) -> np.ndarray:
        """The box of each person in frame ``index`` as ``(N, 4)`` float32 ``xyxy`` output pixels.

        People are in drawing order, far before near; a person hidden behind a nearer one keeps
        a box. With ``clip`` (the default) boxes are cut at the frame's edges; without it they
        extend past them (so ``clipped area / full area`` is the visible share of the person).

        Example:
            >>> YardScene().boxes(0, (320, 240)).shape   # the yard is empty at first
            (0, 4)
        """
        w, h = size
        rows = []
        for walk, x, y in self._placed(index, size):
            sw, sh = walk.size_in(size)
            rows.append((x, y, x + sw, y + sh))
        out = np.array(rows, dtype=np.float32).reshape(-1, 4)
        if clip:
            out[:, 0::2] = out[:, 0::2].clip(0, w)
            out[:, 1::2] = out[:, 1::2].clip(0, h)
        return out

    def render(self, index: int, size: tuple[int, int]) -> Image:
        w, h = size
        out = self._background(size).copy()
        for walk, x, y in self._placed(index, size):
            sprite = self._sprite(walk, size)
            sh, sw = sprite.shape[:2]
            x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + sw, w), min(y + sh, h)
            out[y0:y1, x0:x1] = sprite[y0 - y : y1 - y, x0 - x : x1 - x]
        return out


def _yard_canvas() -> Image:
    bus = _read_image(sample_photo("bus.jpg"))
    parts = [bus[y0:y1, x0:x1] for x0, y0, x1, y1 in (_FACADE, _PAVING)]
    return np.ascontiguousarray(np.vstack(parts))


def check_sensor_effects(noise: int, brightness_ramp: float) -> None:
    """Raise `ConfigurationError` (naming the field) unless both are valid for `SensorEffects`.

    Example:
        >>> check_sensor_effects(noise=300, brightness_ramp=0.0)
        Traceback (most recent call last):
        ...
        espdetect.exceptions.ConfigurationError: expected noise to be an integer from 0 to 127, got 300
    """
    NOISE.check("noise", noise)
    BRIGHTNESS_RAMP.check("brightness_ramp", brightness_ramp)


class SensorEffects(Scene):
    """Another scene as a cheap sensor sees it: with noise, and a brightness that drifts slowly.

    ``noise`` is the most a pixel channel moves, in grey levels: Gaussian noise of standard
    deviation ``noise / 2``, cut at ``±noise``, drawn afresh for every frame but the same each
    time frame ``i`` renders. ``brightness_ramp`` adds a drift that rises from 0 at frame 0 to
    ``brightness_ramp`` grey levels mid-loop and back (half a cosine wave each way, so the loop
    has no jump and a frame differs from the last by at most ``pi * |ramp| / frame_count``
    levels); negative values darken. Values are clipped to 0..255 like the sensor's.

    Example:
        >>> noisy = SensorEffects(YardScene(), noise=4, brightness_ramp=-30.0)
        >>> round(noisy.brightness_offset(noisy.frame_count // 2))
        -30
    """

    def __init__(self, scene: Scene, noise: int = 0, brightness_ramp: float = 0.0) -> None:
        check_sensor_effects(noise, brightness_ramp)
        #: The scene underneath (a :class:`YardScene` keeps its :meth:`~YardScene.boxes` there).
        self.scene = scene
        self.noise = noise
        self.brightness_ramp = float(brightness_ramp)

    @property
    def frame_count(self) -> int:
        return self.scene.frame_count

    def brightness_offset(self, index: int) -> float:
        """Grey levels the ramp adds to every pixel of frame ``index``."""
        phase = 2 * math.pi * (index % self.frame_count) / self.frame_count
        return self.brightness_ramp * (1 - math.cos(phase)) / 2

    def render(self, index: int, size: tuple[int, int]) -> Image:
        index %= self.frame_count
        img = self.scene.render(index, size)
        offset = self.brightness_offset(index)
        if not self.noise and not offset:
            return img
        out = img.astype(np.float32)
        out += np.float32(offset)
        if self.noise:
            # Seeded by the frame index: a frame renders the same whenever it is asked for, so a
            # cached encode and a fresh one agree, and runs and recorded clips can be compared.
            rng = np.random.default_rng((_NOISE_SEED, index))
            noise = rng.standard_normal(img.shape, dtype=np.float32)
            noise *= self.noise / 2
            np.clip(noise, -self.noise, self.noise, out=noise)
            out += noise
        np.rint(out, out=out)
        np.clip(out, 0, 255, out=out)
        return out.astype(np.uint8)


class StillsScene(Scene):
    """A loop over pictures held as JPEG bytes, each scaled to fill the output and centre-cropped.

    Example:
        >>> scene = StillsScene.from_path(Path("clip.mp4"), max_frames=90)  # doctest: +SKIP
    """

    def __init__(self, jpegs: list[bytes]) -> None:
        if not jpegs:
            raise ConfigurationError("expected at least one picture for the scene, got none")
        self._jpegs = list(jpegs)

    @property
    def frame_count(self) -> int:
        return len(self._jpegs)

    def render(self, index: int, size: tuple[int, int]) -> Image:
        data = self._jpegs[index % len(self._jpegs)]
        img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
        if img is None:  # only stored after a successful decode, so this means memory corruption
            raise RuntimeError(f"stored scene frame {index} no longer decodes")
        return cover_resize(img, size)

    @classmethod
    def from_path(cls, path: Path, max_frames: int) -> StillsScene:
        """Load a video file (its first ``max_frames`` frames), an image folder or a single image."""
        if max_frames < 1:
            raise ValueError(f"expected max_frames >= 1, got {max_frames}")
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not files:
                suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
                raise ConfigurationError(f"expected image files ({suffixes}) in folder {path}, got none")
            return cls([_still_jpeg(_read_image(p)) for p in files[:max_frames]])
        if not path.is_file():
            raise ConfigurationError(
                f"expected a video file, image folder or image at {path}, got nothing there"
            )
        if path.suffix.lower() in IMAGE_SUFFIXES:
            return cls([_still_jpeg(_read_image(path))])
        return cls(_video_jpegs(path, max_frames))


def _still_jpeg(img: Image) -> bytes:
    h, w = img.shape[:2]
    scale = min(1.0, _MAX_STILL[0] / w, _MAX_STILL[1] / h)
    if scale < 1.0:
        img = cv2.resize(img, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 92])
    if not ok:
        raise ConfigurationError(f"expected an encodable picture, got one of shape {img.shape}")
    return buf.tobytes()


def _video_jpegs(path: Path, max_frames: int) -> list[bytes]:
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise ConfigurationError(f"expected a video file OpenCV can open at {path}, got one it cannot")
        jpegs: list[bytes] = []
        while len(jpegs) < max_frames:
            ok, frame = cap.read()
            if not ok or frame is None:
                break
            jpegs.append(_still_jpeg(frame))
    finally:
        cap.release()
    if not jpegs:
        raise ConfigurationError(f"expected at least one decodable frame in video {path}, got none")
    return jpegs


def load_scene(
    source: SceneSource,
    frames: int,
    *,
    fps: float = 15.0,
    still_seconds: float = 12.0,
    stand_seconds: float = 3.0,
    noise: int = 0,
    brightness_ramp: float = 0.0,
) -> Scene:
    """Build the scene for ``source``, as the sensor sees it (``noise``, ``brightness_ramp``).

    ``frames`` is the loop length of the photos scene and the most frames taken from a video
    or folder; the yard scene's length follows from its timeline instead, which runs at ``fps``
    with ``still_seconds`` of empty yard first (see :class:`YardScene`). ``noise`` and
    ``brightness_ramp`` are those of :class:`SensorEffects` (0: off).

    Blocking (reads and decodes files): call it through a thread from async code.

    Example:
        >>> load_scene("photos", 30).frame_count
        30
        >>> load_scene("yard", 0, fps=10.0, still_seconds=10.0, noise=3).frame_count
        315
    """
    scene: Scene
    if isinstance(source, str):
        if source == "photos":
            scene = PhotoScene(frames)
        elif source == "yard":
            scene = YardScene(fps, still_seconds, stand_seconds)
        else:
            raise ConfigurationError(f"expected 'photos', 'yard' or a Path, got the string {source!r}")
    else:
        scene = StillsScene.from_path(source, frames)
    if noise or brightness_ramp:
        scene = SensorEffects(scene, noise, brightness_ramp)
    return scene
