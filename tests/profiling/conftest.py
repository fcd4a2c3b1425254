from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from espdetect.profiling.replay import load_clip
from espdetect.sources.clip import ClipWriter

from ._squares import SquareFactory, write_square_clip


@pytest.fixture(scope="session")
def square_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 frames (2 s at 15 fps) of a white square moving 8 px per frame."""
    return write_square_clip(tmp_path_factory.mktemp("clips") / "squares")


@pytest.fixture
def squares() -> SquareFactory:
    """A `SquareDetector` factory that counts what it built."""
    return SquareFactory()


@pytest.fixture
def emulator_clip_head(tmp_path: Path) -> Callable[[int], Path]:
    """Writes the first ``n`` frames of the recorded emulator clip (data/) as a clip of their own."""
    data = Path(__file__).resolve().parents[2] / "data" / "clips" / "emulator-qvga"
    if not data.is_dir():
        pytest.skip("the emulator clip is not in data/")

    def head(n: int) -> Path:
        clip = load_clip(data)
        short = tmp_path / "short"
        with ClipWriter(short, source="first frames of emulator-qvga") as writer:
            for i in range(n):
                writer.write(clip.frame(i))
        return short

    return head
