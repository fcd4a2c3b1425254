"""A person walking in after a long still stretch: how soon the server's detections have them.

The emulated camera shows the yard scene: ``still_seconds`` of empty yard, then a man walks in
from the left edge. Each trial opens the server's detection stream (server-sent events), which
opens the camera stream, and the emulator starts every stream at frame 0 of the scene, so the
server's frame ``seq`` is the scene's frame index.

"The first frame that shows him" is the first frame on which the model itself, run on that very
frame (the camera's JPEG bytes, in this process, with the server's defaults), finds him (IoU >= 0.5
with the scene's exact box): before that only a sliver of him is in view. A trial passes when a
detection event of a frame at most ``MAX_LATE`` frames later has him. Also reported: the first
frame with any of him in view, and the model calls made during the still stretch.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from benchmarks._motion.served import FPS, VGA, served
from espdetect.detections import box_iou
from espdetect.detectors import open_detector
from espdetect.emulator import EmulatorConfig
from espdetect.emulator.cache import jpeg_quality
from espdetect.emulator.scene import YardScene
from espdetect.frame import Frame

__all__ = ["MAX_LATE", "Trial", "appear_trials", "first_detectable_frame"]

logger = logging.getLogger(__name__)

#: The issue's bound: detected on a frame at most this many frames after the first showing him.
MAX_LATE = 2
_MATCH_IOU = 0.5


@dataclass(frozen=True)
class Trial:
    trial: int
    #: First frame with any of him in view (the scene's truth).
    first_in_view: int
    #: First frame on which the model, run on that frame, finds him.
    first_detectable: int
    #: First frame whose detection event (from the server) has him; None if none did in time.
    first_detected: int | None
    #: Model calls (detection events) during the still stretch (frames 0 to ``first_in_view``).
    still_model_calls: int

    @property
    def frames_late(self) -> int | None:
        return None if self.first_detected is None else self.first_detected - self.first_detectable

    @property
    def passed(self) -> bool:
        late = self.frames_late
        return late is not None and late <= MAX_LATE


def _has_person(boxes: np.ndarray, truth: np.ndarray) -> bool:
    return bool(len(boxes) and len(truth) and (box_iou(boxes, truth) >= _MATCH_IOU).any())


def first_detectable_frame(scene: YardScene, quality: int) -> int:
    """The first frame from his entrance on which the model finds him (the camera's bytes)."""
    detector = open_detector()
    try:
        person = [k for k, v in detector.info.names.items() if v == "person"]
        start = scene.first_frame_with_person
        for index in range(start, start + int(5 * scene.fps)):
            ok, buf = cv2.imencode(".jpg", scene.render(index, VGA), [cv2.IMWRITE_JPEG_QUALITY, quality])
            assert ok
            found = detector.detect(Frame(seq=index, source_id="ref", jpeg=buf.tobytes()).image())
            people = found.xyxy[np.isin(found.class_id, person)]
            if _has_person(people, scene.boxes(index, VGA)):
                return index
    finally:
        detector.close()
    raise RuntimeError("the model never found the man walking in: check the model and the scene")


def appear_trials(trials: int, still_seconds: float, logs: Path) -> list[Trial]:
    """``trials`` trials on one server (the camera connection is closed between them)."""
    camera = EmulatorConfig(fps=FPS, size=VGA, scene="yard", still_seconds=still_seconds)
    scene = YardScene(fps=FPS, still_seconds=still_seconds)
    detectable = first_detectable_frame(scene, jpeg_quality(camera.quality))
    logger.info("the man is in view from frame %d, detectable from frame %d",
                scene.first_frame_with_person, detectable)  # fmt: skip
    out = []
    with served(camera, ["--motion", "--tracking"], logs, "appear") as srv:
        for trial in range(trials):
            srv.wait_no_upstream()
            first, still_calls = _one_trial(srv.server.url, scene, detectable)
            out.append(Trial(trial, scene.first_frame_with_person, detectable, first, still_calls))
            logger.info("trial %d: detected on frame %s (%s frames after the first detectable one)",
                        trial, first, out[-1].frames_late)  # fmt: skip
    return out


def _one_trial(url: str, scene: YardScene, detectable: int) -> tuple[int | None, int]:
    import httpx

    entrance = scene.first_frame_with_person
    until = detectable + int(2 * scene.fps)
    still_calls = 0
    deadline = time.monotonic() + (until + 30) / scene.fps
    with httpx.stream("GET", url + "/cameras/cam/detections", timeout=60.0) as response:
        for line in response.iter_lines():
            if time.monotonic() > deadline:
                return None, still_calls
            if not line.startswith("data: "):
                continue
            event = json.loads(line[6:])
            seq = int(event["seq"])
            if seq < entrance:
                still_calls += 1
                continue
            boxes = np.asarray(
                [d["xyxy"] for d in event["detections"] if d["label"] == "person"], np.float32
            ).reshape(-1, 4)
            if _has_person(boxes, scene.boxes(seq, VGA)):
                return seq, still_calls
            if seq > until:
                return None, still_calls
    return None, still_calls
