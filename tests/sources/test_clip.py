from __future__ import annotations

import json
import time
from pathlib import Path

import anyio
import numpy as np
import pytest

from espdetect.exceptions import EndOfStream, SourceUnavailable
from espdetect.frame import Frame
from espdetect.sources import ClipSource, ClipWriter, SyntheticSource, clip_info, is_clip, load_clip_index

pytestmark = pytest.mark.anyio


def recorded_frames(jpegs: list[bytes], gap: float = 0.04) -> list[Frame]:
    t0 = 1000.0
    return [
        Frame(
            seq=100 + i,
            source_id="cam",
            jpeg=j,
            arrival=1.7e9 + i * gap,
            arrival_mono=t0 + i * gap,
            camera_timestamp=None if i == 1 else 5.25 + i * gap,
        )
        for i, j in enumerate(jpegs)
    ]


def write_clip(path: Path, frames: list[Frame], source: str = "http://cam:81/stream") -> None:
    with ClipWriter(path, source=source) as writer:
        for frame in frames:
            writer.write(frame)


async def test_roundtrip_is_byte_identical(tmp_path: Path, jpegs: list[bytes]) -> None:
    clip = tmp_path / "clip"
    write_clip(clip, recorded_frames(jpegs[:5]))
    assert is_clip(clip)
    assert sorted(p.name for p in (clip / "frames").iterdir()) == [f"{i:06d}.jpg" for i in range(5)]
    header = (clip / "index.csv").read_text().splitlines()[0]
    assert header == "seq,arrival_s,camera_timestamp,bytes"

    rows = load_clip_index(clip)
    assert [r.seq for r in rows] == [0, 1, 2, 3, 4]
    assert [r.arrival_s for r in rows] == pytest.approx([0.0, 0.04, 0.08, 0.12, 0.16])
    assert rows[1].camera_timestamp is None
    assert rows[2].camera_timestamp == pytest.approx(5.33)
    assert [r.bytes for r in rows] == [len(j) for j in jpegs[:5]]

    info = clip_info(clip)
    assert (info.frames, info.source, info.bytes) == (5, "http://cam:81/stream", sum(map(len, jpegs[:5])))
    assert info.duration_s == pytest.approx(0.16)
    assert info.fps == pytest.approx(25.0)
    assert info.created is not None
    meta = json.loads((clip / "clip.json").read_text())
    assert meta["frames"] == 5

    async with ClipSource(clip) as src:
        assert src.load_index() == rows
        with anyio.fail_after(10):
            replayed = [f async for f in src]
    assert [f.jpeg for f in replayed] == jpegs[:5]
    assert [f.seq for f in replayed] == [0, 1, 2, 3, 4]
    assert [f.camera_timestamp for f in replayed] == [r.camera_timestamp for r in rows]
    assert replayed[0].source_id == "clip"
    assert src.stats.frames == 5 and src.stats.length_mismatch == 0


async def test_realtime_reproduces_the_spacing(tmp_path: Path, jpegs: list[bytes]) -> None:
    write_clip(tmp_path, recorded_frames(jpegs[:4], gap=0.05))
    async with ClipSource(tmp_path, pace="realtime") as src:
        start = time.perf_counter()
        frames = [await src.read() for _ in range(4)]
    assert [f.jpeg for f in frames] == jpegs[:4]
    stamps = [f.arrival_mono for f in frames]
    assert stamps == sorted(stamps)
    # Lower bound only: 0.15 s of recorded spacing must have been waited out.
    assert stamps[-1] - start >= 0.15 * 0.9


async def test_loop_replays_with_growing_seq(tmp_path: Path, jpegs: list[bytes]) -> None:
    write_clip(tmp_path, recorded_frames(jpegs[:3], gap=0.01))
    async with ClipSource(tmp_path, loop=True, pace="realtime") as src:
        with anyio.fail_after(10):
            frames = [await src.read() for _ in range(7)]
    assert [f.jpeg for f in frames] == (jpegs[:3] * 3)[:7]
    assert [f.seq for f in frames] == list(range(7))


async def test_frames_without_jpeg_bytes_are_encoded(tmp_path: Path) -> None:
    image = np.full((24, 32, 3), 90, np.uint8)
    with ClipWriter(tmp_path) as writer:
        writer.write(Frame.from_image(image, seq=0, source_id="video"))
    async with ClipSource(tmp_path) as src:
        frame = await src.read()
    assert frame.jpeg is not None and frame.jpeg[:2] == b"\xff\xd8"
    assert float(frame.image().mean()) == pytest.approx(90, abs=3)


async def test_records_a_live_source(tmp_path: Path) -> None:
    async with SyntheticSource(count=3) as live:
        originals = [f async for f in live]
    with ClipWriter(tmp_path / "rec", source="synthetic") as writer:
        for frame in originals:
            writer.write(frame)
    async with ClipSource(tmp_path / "rec") as src:
        assert [f.jpeg async for f in src] == [f.jpeg for f in originals]


def test_refuses_to_overwrite_unless_asked(tmp_path: Path, jpegs: list[bytes]) -> None:
    write_clip(tmp_path, recorded_frames(jpegs[:3]))
    with pytest.raises(FileExistsError):
        ClipWriter(tmp_path)
    write_clip_over = ClipWriter(tmp_path, overwrite=True)
    write_clip_over.write(recorded_frames(jpegs[5:6])[0])
    info = write_clip_over.close()
    assert info.frames == 1
    assert len(list((tmp_path / "frames").iterdir())) == 1
    with pytest.raises(ValueError, match="closed"):
        write_clip_over.write(recorded_frames(jpegs[:1])[0])


def test_an_unfinished_recording_is_still_readable(tmp_path: Path, jpegs: list[bytes]) -> None:
    writer = ClipWriter(tmp_path)
    for frame in recorded_frames(jpegs[:2]):
        writer.write(frame)
    # No close(): as after a crash, there is no clip.json, but the index is complete.
    info = clip_info(tmp_path)
    assert (info.frames, info.source) == (2, None)
    assert [f.jpeg for f in ClipSource(tmp_path).iter_frames()] == jpegs[:2]
    writer.close()


async def test_damaged_clips(tmp_path: Path, jpegs: list[bytes]) -> None:
    with pytest.raises(SourceUnavailable, match=r"index\.csv"):
        ClipSource(tmp_path)

    (tmp_path / "index.csv").write_text("frame,time\n0,0.0\n")
    with pytest.raises(SourceUnavailable, match="header"):
        load_clip_index(tmp_path)

    (tmp_path / "index.csv").write_text("seq,arrival_s,camera_timestamp,bytes\n0,soon,,10\n")
    with pytest.raises(SourceUnavailable, match="line 2"):
        load_clip_index(tmp_path)

    write_clip(tmp_path / "c", recorded_frames(jpegs[:3]))
    (tmp_path / "c" / "frames" / "000001.jpg").write_bytes(b"\xff\xd8 cut short")
    (tmp_path / "c" / "frames" / "000002.jpg").unlink()
    async with ClipSource(tmp_path / "c") as src:
        assert (await src.read()).jpeg == jpegs[0]
        with pytest.raises(SourceUnavailable, match="000002"):
            await src.read()
    assert src.stats.corrupt == 1


async def test_read_after_close(tmp_path: Path, jpegs: list[bytes]) -> None:
    write_clip(tmp_path, recorded_frames(jpegs[:1]))
    src = ClipSource(tmp_path)
    await src.aclose()
    with pytest.raises(EndOfStream):
        await src.read()
