from __future__ import annotations

from pathlib import Path

import pytest

from ._squares import SquareFactory, write_square_clip


@pytest.fixture(scope="session")
def square_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 frames (2 s at 15 fps) of a white square moving 8 px per frame."""
    return write_square_clip(tmp_path_factory.mktemp("clips") / "squares")


@pytest.fixture
def squares() -> SquareFactory:
    """A `SquareDetector` factory that counts what it built."""
    return SquareFactory()
