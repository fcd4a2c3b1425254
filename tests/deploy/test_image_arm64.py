"""The arm64 image (Raspberry Pi 4/5) built here under qemu: ``espdetect detect`` inside it gives the
amd64 image's detections. Slow (a few minutes): runs with ESPDETECT_IMAGE_ARM64=1."""

from __future__ import annotations

import os

import pytest

from tests.deploy.container import build_image, detect_in, engine_or_reason, match_detections

pytestmark = [pytest.mark.image, pytest.mark.slow]


@pytest.mark.skipif(
    os.environ.get("ESPDETECT_IMAGE_ARM64") != "1", reason="set ESPDETECT_IMAGE_ARM64=1 (minutes)"
)
@pytest.mark.timeout(2400)
def test_the_arm64_image_detects_what_the_amd64_image_does() -> None:
    engine, reason = engine_or_reason()
    if engine is None:
        pytest.fail(f"ESPDETECT_IMAGE_ARM64=1 but {reason}")
    amd64, arm64 = build_image("amd64"), build_image("arm64")
    reference, emulated = detect_in(amd64), detect_in(arm64)
    assert (reference.machine, emulated.machine) == ("x86_64", "aarch64")
    assert reference.onnxruntime == emulated.onnxruntime
    # Same classes, box for box.
    assert reference.labels() == emulated.labels()
    matches = match_detections(reference, emulated)
    assert len(matches) >= 6
    assert all(m.iou >= 0.9 and m.confidence_diff <= 0.05 for m in matches), matches
