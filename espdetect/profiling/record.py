"""`record`: save a few seconds of a camera (or any source) as a clip for repeatable profiling.

The clip keeps each frame's original JPEG bytes and its arrival time (`ClipWriter`), so every
configuration of a sweep later sees exactly the same frames at the same pace.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TypedDict

from typing_extensions import Unpack

from espdetect.exceptions import EndOfStream, SourceUnavailable
from espdetect.frame import Frame
from espdetect.sources.base import FrameSource
from espdetect.sources.clip import ClipWriter
from espdetect.sources.factory import open_source

__all__ = ["RecordOptions", "arecord", "record"]

logger = logging.getLogger(__name__)


def _describe(source: str | FrameSource) -> str:
    return source if isinstance(source, str) else source.describe()


class RecordOptions(TypedDict, total=False):
    """The keyword arguments of `arecord` that `record` passes on."""

    progress: bool
    overwrite: bool
    first_frame_timeout: float
    stall_timeout: float
    check: Callable[[Frame], None] | None


async def arecord(
    source: str | FrameSource,
    seconds: float,
    out_dir: str | Path,
    *,
    progress: bool = True,
    overwrite: bool = False,
    first_frame_timeout: float = 15.0,
    stall_timeout: float = 10.0,
    check: Callable[[Frame], None] | None = None,
) -> Path:
    """Async `record` (for code already running an event loop).

    ``check`` sees every frame before it is written; what it raises ends the recording and
    propagates (the live profiler refuses frames of another size than it set).

    Example:
        >>> await arecord("http://192.168.4.1:81/stream", 10, "clips/desk")  # doctest: +SKIP
        PosixPath('clips/desk')
    """
    # Long: the recording loop and its two ways to stop (end of stream, stall) read best together.
    from tqdm.auto import tqdm

    if not seconds > 0:
        raise ValueError(f"seconds must be > 0, got {seconds!r}")
    name = _describe(source)
    writer = ClipWriter(out_dir, source=name, overwrite=overwrite)
    src = open_source(source) if isinstance(source, str) else source
    bar = tqdm(
        total=round(float(seconds), 1),
        desc=f"recording {Path(out_dir).name}",
        unit="s",
        disable=not progress,
        bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} s [{elapsed}{postfix}]",
    )
    first: float | None = None
    timeout = first_frame_timeout
    try:
        async with src:
            while True:
                try:
                    frame = await asyncio.wait_for(src.read(), timeout)
                except EndOfStream:
                    logger.info("%s: source ended after %d frames", name, writer.frames)
                    break
                except asyncio.TimeoutError:
                    logger.warning("%s: no frame for %.1f s, stopping the recording", name, timeout)
                    break
                if first is None:
                    first = frame.arrival_mono
                    timeout = stall_timeout
                elapsed = frame.arrival_mono - first
                if elapsed >= seconds:
                    break
                if check is not None:
                    check(frame)
                await asyncio.to_thread(writer.write, frame)
                bar.set_postfix_str(f"{writer.frames} frames", refresh=False)
                bar.update(round(elapsed, 1) - bar.n)
    finally:
        info = writer.close()
        bar.close()
    if info.frames == 0:
        raise SourceUnavailable(name, f"expected frames to record, got none within {first_frame_timeout:g} s")
    logger.info(
        "recorded %d frames (%.1f s, %d bytes) into %s", info.frames, info.duration_s, info.bytes, info.path
    )
    return writer.path


def record(
    source: str | FrameSource, seconds: float, out_dir: str | Path, **options: Unpack[RecordOptions]
) -> Path:
    """Record ``seconds`` of ``source`` (a URL/path for `open_source`, or a `FrameSource`) into ``out_dir``.

    The recording stops after ``seconds`` of camera time from the first frame, when a finite
    source ends, or when no frame comes for ``stall_timeout`` seconds (``first_frame_timeout``
    for the first). A source object passed in is closed at the end. Works in scripts and inside
    Jupyter (the source runs on a private event loop in a worker thread).

    Raises:
        SourceUnavailable: the source delivered no frame.
        FileExistsError: ``out_dir`` already holds a clip and ``overwrite`` is False.

    Example:
        >>> record("http://192.168.4.1:81/stream", 10, "clips/desk")  # doctest: +SKIP
        PosixPath('clips/desk')
    """
    coro = arecord(source, seconds, out_dir, **options)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="espdetect-record") as pool:
        return pool.submit(asyncio.run, coro).result()
