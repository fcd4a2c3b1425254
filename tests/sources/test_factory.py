from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from espdetect.exceptions import ConfigurationError, SourceUnavailable
from espdetect.sources import (
    CaptureSource,
    ClipSource,
    ClipWriter,
    FrameSource,
    ImageFolderSource,
    MjpegStreamSource,
    OpenCVSource,
    SyntheticSource,
    VideoFileSource,
    open_source,
)

from ._servers import make_jpeg


@pytest.mark.parametrize(
    ("spec", "kind"),
    [
        pytest.param("http://192.168.4.1/capture", CaptureSource, id="capture"),
        pytest.param("https://cam.local/capture/?flash=0", CaptureSource, id="capture-query"),
        pytest.param("http://192.168.4.1:81/stream", MjpegStreamSource, id="stream"),
        pytest.param("HTTP://cam:81/", MjpegStreamSource, id="stream-root"),
        pytest.param("rtsp://cam:554/live", OpenCVSource, id="rtsp"),
        pytest.param("0", OpenCVSource, id="webcam"),
        pytest.param(" synthetic ", SyntheticSource, id="synthetic"),
    ],
)
def test_urls_and_names(spec: str, kind: type[FrameSource]) -> None:
    assert type(open_source(spec)) is kind


def test_paths(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    (images / "a.jpg").write_bytes(make_jpeg(0))
    assert type(open_source(str(images))) is ImageFolderSource

    with ClipWriter(tmp_path / "clip") as writer:
        writer.write(next(iter(SyntheticSource(count=1).iter_frames())))
    assert type(open_source(str(tmp_path / "clip"))) is ClipSource

    video = tmp_path / "v.avi"
    out = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, (32, 24))
    out.write(np.zeros((24, 32, 3), np.uint8))
    out.release()
    assert type(open_source(str(video))) is VideoFileSource


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param("", id="empty"),
        pytest.param("ftp://cam/stream", id="ftp"),
        pytest.param("-1", id="negative-index"),
    ],
)
def test_unknown_specs(spec: str) -> None:
    with pytest.raises(ConfigurationError, match="expected"):
        open_source(spec)


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(SourceUnavailable, match="no such path"):
        open_source(str(tmp_path / "nowhere"))
