"""What the emulated camera sees: a looping sequence of pictures rendered at any size.

* :class:`PhotoScene` (the default) pans and zooms across Ultralytics' sample photos
  ``bus.jpg`` and ``zidane.jpg`` laid side by side, so people and a bus move through the frame
  and stay detectable down to QVGA.
* :class:`StillsScene` loops over pictures taken from a video file, an image folder or one image.

Scenes are read-only once loaded and safe to render from several threads.
"""

from __future__ import annotations

import math
import threading
from abc import ABC, abstractmethod
from importlib import resources
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from espdetect.exceptions import ConfigurationError

__all__ = [
    "IMAGE_SUFFIXES",
    "Image",
    "PhotoScene",
    "Scene",
    "SceneSource",
    "StillsScene",
    "load_scene",
    "sample_photo",
]

#: A BGR picture, height x width x 3, uint8.
Image = np.ndarray
#: ``"photos"`` for the built-in moving scene, or a path to a video file, an image folder or an image.
SceneSource = Literal["photos"] | Path

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})

# Stills are kept as JPEG bytes no larger than this, so a long loop stays small in memory.
_MAX_STILL = (1600, 1200)

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


def load_scene(source: SceneSource, frames: int) -> Scene:
    """Build the scene for ``source``; ``frames`` is the loop length (photos) or the cap (stills).

    Blocking (reads and decodes files): call it through a thread from async code.

    Example:
        >>> load_scene("photos", 30).frame_count
        30
    """
    if isinstance(source, str):
        if source != "photos":
            raise ConfigurationError(f"expected 'photos' or a Path, got the string {source!r}")
        return PhotoScene(frames)
    return StillsScene.from_path(source, frames)
