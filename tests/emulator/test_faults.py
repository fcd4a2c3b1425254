from __future__ import annotations

import cv2
import numpy as np
import pytest

from espdetect.emulator.faults import (
    Fault,
    FaultKind,
    corrupt_jpeg,
    pad_jpeg,
    parse_fault,
    truncate_jpeg,
)


@pytest.fixture(scope="module")
def jpeg() -> bytes:
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8), (5, 5), 0)
    ok, buf = cv2.imencode(".jpg", img)
    assert ok
    return buf.tobytes()


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param("stall:seconds=3", Fault(FaultKind.STALL, seconds=3.0), id="stall"),
        pytest.param("drop_after:frames=50", Fault(FaultKind.DROP_AFTER, frames=50), id="drop"),
        pytest.param(
            "refuse:seconds=5,frames=10", Fault(FaultKind.REFUSE, frames=10, seconds=5.0), id="refuse"
        ),
        pytest.param("CORRUPT_JPEG", Fault(FaultKind.CORRUPT_JPEG), id="case-insensitive"),
        pytest.param("wrong_length:delta=-100", Fault(FaultKind.WRONG_LENGTH, delta=-100), id="negative"),
        pytest.param("html_error:status=500", Fault(FaultKind.HTML_ERROR, status=500), id="html"),
        pytest.param("slow:rate=20000", Fault(FaultKind.SLOW, rate=20000), id="slow"),
        pytest.param("legacy_framing", Fault(FaultKind.LEGACY_FRAMING), id="legacy"),
        pytest.param(" oversize : size=100 ", Fault(FaultKind.OVERSIZE, size=100), id="spaces"),
    ],
)
def test_parse_fault(spec: str, expected: Fault) -> None:
    assert parse_fault(spec) == expected
    assert parse_fault(str(expected)) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        pytest.param("explode", "expected a fault kind", id="kind"),
        pytest.param("stall:rate=3", "expected key=value with a key among frames, seconds", id="field"),
        pytest.param("stall:seconds", "expected key=value", id="no-value"),
        pytest.param("drop_after:frames=x", "expected an integer for drop_after frames, got 'x'", id="int"),
        pytest.param("drop_after", "expected frames", id="missing-frames"),
        pytest.param("stall:seconds=-1", "expected seconds >= 0", id="negative-seconds"),
        pytest.param("corrupt_jpeg:frames=0", "expected frames >= 1", id="every-zero"),
        pytest.param("html_error:status=200", "expected an HTTP error status", id="status"),
        pytest.param("slow:rate=0", "expected rate >= 1", id="rate"),
    ],
)
def test_bad_fault_specs_say_what_was_expected(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_fault(spec)


def test_fault_rejects_fields_its_kind_ignores() -> None:
    with pytest.raises(ValueError, match=r"expected only rate for SLOW, got seconds=1\.0"):
        Fault(FaultKind.SLOW, seconds=1.0)
    with pytest.raises(TypeError):
        Fault("stall")  # type: ignore[arg-type]


def test_fault_is_frozen_and_hashable() -> None:
    fault = Fault(FaultKind.STALL, seconds=1.0)
    with pytest.raises(AttributeError):
        fault.seconds = 2.0  # type: ignore[misc]
    assert len({fault, Fault(FaultKind.STALL, seconds=1.0)}) == 1
    assert Fault(FaultKind.CORRUPT_JPEG).every == 1
    assert Fault(FaultKind.CORRUPT_JPEG, frames=5).every == 5


def test_corrupt_keeps_markers_and_length(jpeg: bytes) -> None:
    bad = corrupt_jpeg(jpeg)
    assert len(bad) == len(jpeg) and bad != jpeg
    assert bad[:2] == b"\xff\xd8" and bad[-2:] == b"\xff\xd9"
    first_change = next(i for i, (a, b) in enumerate(zip(jpeg, bad, strict=True)) if a != b)
    assert first_change > jpeg.find(b"\xff\xda")


def test_truncate_never_keeps_eoi(jpeg: bytes) -> None:
    assert truncate_jpeg(jpeg) == jpeg[: len(jpeg) // 2]
    assert truncate_jpeg(jpeg, 100) == jpeg[:100]
    assert truncate_jpeg(jpeg, 10**9) == jpeg[:-2]


def test_pad_makes_a_large_jpeg_that_still_decodes(jpeg: bytes) -> None:
    big = pad_jpeg(jpeg, 1_000_000)
    assert len(big) >= 1_000_000
    assert big[:2] == b"\xff\xd8" and big.endswith(jpeg[2:])
    img = cv2.imdecode(np.frombuffer(big, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None and img.shape == (120, 160, 3)
    assert pad_jpeg(jpeg, 10) == jpeg
