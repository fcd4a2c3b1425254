"""`ImageFolderSource`: frames from the image files in a folder, in name order."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import cv2
import numpy as np

from espdetect.exceptions import EndOfStream, SourceUnavailable
from espdetect.frame import Frame
from espdetect.sources._blocking import BlockingCall, Pacer, ThreadedSource

__all__ = ["ImageFolderSource"]

logger = logging.getLogger(__name__)

_Loaded = tuple[Path, bytes | None, np.ndarray | None]


class ImageFolderSource(ThreadedSource[_Loaded]):
    """Frames from the files matching ``pattern`` in a folder, sorted by name.

    JPEG files are passed on as their original bytes (no decode, no re-encode). Other image
    formats that OpenCV reads (when ``pattern`` selects them) are decoded into frames without
    JPEG bytes. Unreadable files and truncated JPEGs are skipped and counted in ``stats.corrupt``.
    ``read()`` raises `EndOfStream` past the last file (without ``loop``) or once closed, and
    `SourceUnavailable` when no file matches the pattern.

    Args:
        path: the folder.
        pattern: glob pattern of the files to use.
        loop: start again from the first file after the last.
        fps: pace the frames at this rate; None delivers them as fast as they are read.
        source_id: name used in frames; defaults to the folder name.

    Example:
        >>> async def first(folder: str) -> Frame:  # doctest: +SKIP
        ...     async with ImageFolderSource(folder, pattern="*.jpg") as src:
        ...         return await src.read()
    """

    def __init__(
        self,
        path: str | Path,
        *,
        pattern: str = "*.jpg",
        loop: bool = False,
        fps: float | None = None,
        source_id: str | None = None,
    ) -> None:
        folder = Path(path)
        if not folder.is_dir():
            raise SourceUnavailable(str(folder), "expected a folder of images, got no such folder")
        if fps is not None and not fps > 0:
            raise ValueError(f"fps must be > 0 or None, got {fps!r}")
        super().__init__(source_id or folder.name or str(folder))
        self.path = folder
        self.pattern = pattern
        self.loop = loop
        self.fps = fps
        self._pacer = Pacer(1.0 / fps) if fps else None
        self._files: list[Path] | None = None
        self._index = 0
        self._list_call: BlockingCall[list[Path]] = BlockingCall()

    async def _read(self) -> Frame:
        while True:
            self._check_open()
            files = await self._file_list()
            if self._index >= len(files):
                if not self.loop:
                    raise EndOfStream(f"{self.source_id}: all {len(files)} files read")
                if self.stats.frames == 0:
                    # Every file was unreadable: looping would spin forever.
                    raise SourceUnavailable(str(self.path), f"expected readable images, none of {len(files)}")
                self._index = 0
            if self._pacer is not None:
                await self._pacer.wait()
            path = files[self._index]
            path, jpeg, image = await self._call.run(functools.partial(_load, path))
            self._index += 1
            if jpeg is None and image is None:
                self.stats.corrupt += 1
                logger.warning("%s: skipped %s: not a readable image", self.source_id, path.name)
                continue
            if jpeg is not None:
                return Frame(seq=self._count_frame(len(jpeg)), source_id=self.source_id, jpeg=jpeg)
            assert image is not None
            return Frame.from_image(image, seq=self._count_frame(), source_id=self.source_id)

    def _list_files(self) -> list[Path]:
        return sorted(p for p in self.path.glob(self.pattern) if p.is_file())

    async def _file_list(self) -> list[Path]:
        if self._files is None:
            files = await self._list_call.run(self._list_files)
            if not files:
                raise SourceUnavailable(
                    str(self.path), f"expected files matching {self.pattern!r}, found none"
                )
            self._files = files
        return self._files


def _load(path: Path) -> _Loaded:
    try:
        data = path.read_bytes()
    except OSError as exc:
        logger.debug("cannot read %s: %s", path, exc)
        return (path, None, None)
    if data[:2] == b"\xff\xd8":
        # A JPEG without its end marker is truncated: libjpeg would pad it with grey.
        complete = data.rstrip(b"\x00\r\n")[-2:] == b"\xff\xd9"
        return (path, data if complete else None, None)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    return (path, None, image)
