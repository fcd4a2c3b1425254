"""The server path runs without OpenCV: the container image installs the core less OpenCV (173 MB).

OpenCV stays a core dependency for the emulator and the video-file, V4L2 and RTSP sources; what
`espdetect serve` and `espdetect detect` run must not import it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from espdetect.emulator import EmulatorConfig, EmulatorThread
from tests.server.conftest import PartReader, labels_until

ROOT = Path(__file__).resolve().parents[2]
BLOCKED = [sys.executable, "-m", "tests.cli.without_opencv"]


def test_the_blocker_blocks() -> None:
    # Without this the tests below could pass with OpenCV imported after all.
    code = "import tests.cli.without_opencv as w, sys; sys.meta_path.insert(0, w._NoOpenCV()); import cv2"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "blocked: the image has no OpenCV" in done.stderr


@pytest.mark.model
def test_detect_without_opencv(sample_images: dict[str, Path], tmp_path: Path) -> None:
    done = subprocess.run(
        [*BLOCKED, "detect", "--json", "--out", str(tmp_path), str(sample_images["bus"])],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    labels = [d["label"] for d in json.loads(done.stdout.splitlines()[0])["detections"]]
    assert labels.count("person") >= 3 and "bus" in labels
    assert (tmp_path / "bus.jpg").read_bytes()[:2] == b"\xff\xd8"


def test_serve_without_opencv_streams_annotated_video_detections_and_motion(tmp_path: Path) -> None:
    # The bundled model (ESPDETECT_MODEL unset), as in the image; motion gating and tracking on.
    env = {k: v for k, v in os.environ.items() if k != "ESPDETECT_MODEL"}
    env.update(ESPDETECT_DATA_DIR=str(tmp_path), ESPDETECT_EVENTS="true")
    with EmulatorThread(EmulatorConfig(fps=10.0, size=(640, 480), loop_frames=12)) as cam:
        args = [*BLOCKED, "serve", "--camera", f"cam={cam.stream_url}", "--port", "0"]
        with subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        ) as proc:
            try:
                assert proc.stdout is not None
                url = next(
                    line.split()[2].rstrip("/")
                    for line in proc.stdout
                    if line.startswith("espdetect server:")
                )
                with httpx.Client(base_url=url, timeout=60.0) as client:
                    labels = labels_until(client, "cam")
                    with client.stream("GET", "/cameras/cam/detect") as annotated:
                        assert PartReader(annotated).read(2)[-1].is_complete_jpeg
                    stats = client.get("/stats").json()["cameras"]["cam"]
            finally:
                proc.terminate()
                _, err = proc.communicate(timeout=30)
    assert "person" in labels, err[-3000:]
    assert stats["frames_detected"] > 0 and "cv2" not in err


def test_a_command_that_needs_opencv_says_so_in_one_line(tmp_path: Path) -> None:
    # Recording a clip writes JPEGs through OpenCV: in the image that is a user error, not a crash.
    done = subprocess.run(
        [*BLOCKED, "record", "synthetic", "--seconds", "1", "--out", str(tmp_path / "clip")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "pip install opencv-python-headless" in done.stderr
