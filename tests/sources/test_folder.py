from __future__ import annotations

import asyncio
import time
from pathlib import Path

import anyio
import cv2
import numpy as np
import pytest

from espdetect.exceptions import EndOfStream, SourceUnavailable
from espdetect.sources import ImageFolderSource

from ._servers import make_jpeg

pytestmark = pytest.mark.anyio


def folder_of(tmp_path: Path, jpegs: list[bytes]) -> Path:
    # Written out of order: the source must sort by name.
    for i in reversed(range(len(jpegs))):
        (tmp_path / f"img_{i:03d}.jpg").write_bytes(jpegs[i])
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path


async def test_reads_jpeg_bytes_in_name_order(tmp_path: Path, jpegs: list[bytes]) -> None:
    async with ImageFolderSource(folder_of(tmp_path, jpegs[:4])) as src:
        with anyio.fail_after(10):
            frames = [f async for f in src]
    assert [f.jpeg for f in frames] == jpegs[:4]
    assert [f.seq for f in frames] == [0, 1, 2, 3]
    assert frames[0].source_id == tmp_path.name
    assert src.stats.frames == 4
    assert src.stats.bytes == sum(map(len, jpegs[:4]))


async def test_loop_restarts_and_seq_keeps_growing(tmp_path: Path, jpegs: list[bytes]) -> None:
    async with ImageFolderSource(folder_of(tmp_path, jpegs[:2]), loop=True) as src:
        frames = [await src.read() for _ in range(5)]
    assert [f.jpeg for f in frames] == [jpegs[0], jpegs[1]] * 2 + [jpegs[0]]
    assert [f.seq for f in frames] == [0, 1, 2, 3, 4]


async def test_other_formats_are_decoded_and_broken_files_skipped(tmp_path: Path) -> None:
    img = np.full((20, 30, 3), 200, np.uint8)
    assert cv2.imwrite(str(tmp_path / "a.png"), img)
    (tmp_path / "b.png").write_bytes(b"garbage, not a png")
    (tmp_path / "c.png").write_bytes(make_jpeg(1)[:-50])  # a truncated JPEG, whatever the name
    async with ImageFolderSource(tmp_path, pattern="*.png") as src:
        frame = await src.read()
        with pytest.raises(EndOfStream):
            await src.read()
    assert frame.jpeg is None
    assert frame.size == (30, 20)
    assert src.stats.corrupt == 2


async def test_fps_paces_the_files(tmp_path: Path, jpegs: list[bytes]) -> None:
    async with ImageFolderSource(folder_of(tmp_path, jpegs[:3]), fps=40) as src:
        start = time.perf_counter()
        frames = [await src.read() for _ in range(3)]
    assert frames[-1].arrival_mono - start >= 2 * 0.025 * 0.9


async def test_missing_or_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(SourceUnavailable, match="no such folder"):
        ImageFolderSource(tmp_path / "missing")
    async with ImageFolderSource(tmp_path) as src:
        with pytest.raises(SourceUnavailable, match=r"\*\.jpg"):
            await src.read()


async def test_loop_over_only_broken_files_fails_instead_of_spinning(tmp_path: Path) -> None:
    (tmp_path / "x.jpg").write_bytes(b"\xff\xd8 truncated")
    async with ImageFolderSource(tmp_path, loop=True) as src:
        with anyio.fail_after(5), pytest.raises(SourceUnavailable):
            await src.read()


async def test_concurrent_reads_get_consecutive_files(tmp_path: Path, jpegs: list[bytes]) -> None:
    async with ImageFolderSource(folder_of(tmp_path, jpegs[:4])) as src:
        frames = await asyncio.gather(*(src.read() for _ in range(4)))
    assert sorted(f.seq for f in frames) == [0, 1, 2, 3]
    assert sorted(f.jpeg or b"" for f in frames) == sorted(jpegs[:4])
