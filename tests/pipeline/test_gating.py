"""CameraPipeline with motion gating and tracking: the model runs when something moves.

Frames carry their own arrival times (the camera's clock), so keep-alive intervals of many
seconds pass in a few milliseconds of test time; everything else waits on events, as in
test_camera.py, whose stand-ins (conftest.py) these tests share.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from espdetect.detections import Detections, box_iou
from espdetect.detectors.base import Detector
from espdetect.exceptions import ConfigurationError
from espdetect.frame import Frame
from espdetect.pipeline import CameraPipeline, PipelineConfig

from .conftest import (
    CORRUPT,
    StandInDetector,
    Upstream,
    Viewer,
    pipeline,
    settle,
    start_viewers,
    within,
)

pytestmark = pytest.mark.anyio

SIZE = (640, 480)
FPS = 15.0
T0 = 1000.0  # arrival clock of the first frame (any value: only differences matter)


def yard() -> np.ndarray:
    """A still, textured VGA scene, nothing in it darker than 60."""
    yy, xx = np.mgrid[0 : SIZE[1], 0 : SIZE[0]]
    img = np.stack([60 + xx * 195 // SIZE[0], 60 + yy * 195 // SIZE[1], 60 + (xx + yy) % 150], axis=2)
    img = img.astype(np.uint8)
    cv2.rectangle(img, (50, 300), (250, 470), (90, 90, 90), -1)
    return img


def with_walker(x: int) -> np.ndarray:
    """The yard with a dark 60x160 figure whose left edge is at ``x``."""
    img = yard()
    cv2.rectangle(img, (x, 150), (x + 60, 310), (10, 10, 10), -1)
    return img


def walker_box(x: int) -> np.ndarray:
    return np.array([[x, 150, x + 61, 311]], np.float32)


def jpeg_of(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 80])
    assert ok
    return buf.tobytes()


def at(seq: int, jpeg: bytes) -> Frame:
    """Frame ``seq`` of a 15 fps camera (fresh bytes, so pass-through is checked by identity)."""
    return Frame(seq=seq, source_id="cam", jpeg=bytes(bytearray(jpeg)), arrival_mono=T0 + seq / FPS)


class DarkBlobDetector(StandInDetector):
    """Finds the dark figure: one 'person' box around pixels darker than 40, none without."""

    def find(self, image: np.ndarray) -> Detections:
        ys, xs = np.nonzero(image.max(axis=2) < 40)
        if not len(xs):
            return Detections.empty(self.info.names)
        return Detections(
            xyxy=np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float32),
            confidence=np.array([0.9], np.float32),
            class_id=np.array([0]),
            names=self.info.names,
        )


async def step(upstream: Upstream, viewer: Viewer, frame: Frame) -> None:
    """Send one frame and wait until the viewer has it (one frame at a time, like a camera)."""
    await upstream.push(frame)
    await viewer.until_seq(frame.seq)


def gated(upstream: Upstream, det: Detector, **config: object) -> CameraPipeline:
    return pipeline(upstream, det, **{"motion": True, **config})


async def test_a_still_scene_calls_the_model_only_for_the_keepalive(
    upstream: Upstream, detector: StandInDetector
) -> None:
    still = jpeg_of(yard())
    async with gated(upstream, detector, keepalive=10.0) as pipe:
        (viewer,) = await start_viewers(pipe)
        for seq in range(200):  # 13.3 s of camera time
            await step(upstream, viewer, at(seq, still))
        # The first frame (nothing known yet) and the keep-alive at 10 s.
        assert detector.calls == 2
        stats = pipe.stats
        assert (stats.keepalive_calls, stats.gated_frames, stats.moving_frames) == (2, 198, 0)
        assert stats.motion_checks == 200 and len(stats.motion_ms) > 0
        # The annotated stream still flows at the camera's rate, with the last boxes drawn.
        assert viewer.seqs == list(range(200))
        assert [g.frame.seq for g in viewer.got if g.fresh] == [0, 150]
        assert all(r.detection is not None for r in viewer.got)
        assert pipe.last_model_call == pytest.approx(T0 + 150 / FPS)


async def test_a_still_scene_with_nothing_found_forwards_the_camera_jpeg(upstream: Upstream) -> None:
    det = DarkBlobDetector()
    still = jpeg_of(yard())
    async with gated(upstream, det) as pipe:
        (viewer,) = await start_viewers(pipe)
        frames = [at(seq, still) for seq in range(20)]
        for frame in frames:
            await step(upstream, viewer, frame)
        assert det.calls == 1
        # Nothing to draw: no decode, no encode, the camera's own bytes go out.
        assert all(r.jpeg is f.jpeg for r, f in zip(viewer.got, frames, strict=True))


async def test_an_object_appearing_is_detected_on_its_first_frame(upstream: Upstream) -> None:
    det = DarkBlobDetector()
    still, walker = jpeg_of(yard()), jpeg_of(with_walker(300))
    async with gated(upstream, det, keepalive=3600.0) as pipe:
        (viewer,) = await start_viewers(pipe)
        for seq in range(160):  # more than 10 s of still scene
            await step(upstream, viewer, at(seq, still))
        assert det.calls == 1
        await step(upstream, viewer, at(160, walker))
        shown = viewer.got[-1]
        assert shown.fresh and shown.detection is not None and shown.detection.frame.seq == 160
        assert shown.detection.detections.labels == ["person"]
        assert box_iou(shown.detection.detections.xyxy, walker_box(300))[0, 0] > 0.9
        assert pipe.stats.moving_frames == 1 and det.calls == 2


async def test_brightness_changes_and_noise_call_no_model(upstream: Upstream) -> None:
    det = DarkBlobDetector()
    base = yard().astype(np.int16)
    rng = np.random.default_rng(7)
    async with gated(upstream, det, keepalive=3600.0) as pipe:
        (viewer,) = await start_viewers(pipe)
        for seq in range(120):
            # A dusk ramp of one grey level a frame, sensor noise, JPEG quality wandering.
            noisy = base - seq + rng.integers(-6, 7, base.shape)
            img = np.clip(noisy, 0, 255).astype(np.uint8)
            ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 30 + seq % 50])
            assert ok
            await step(upstream, viewer, at(seq, buf.tobytes()))
        assert det.calls == 1
        assert pipe.stats.moving_frames == 0 and pipe.stats.gated_frames == 119


async def test_tracking_moves_boxes_between_model_calls(upstream: Upstream) -> None:
    det = DarkBlobDetector()
    # A figure walking 6 px a frame (90 px/s); the model runs on every 4th frame only.
    async with pipeline(upstream, det, skip=4, tracking=True) as pipe:
        (viewer,) = await start_viewers(pipe)
        for seq in range(24):
            await step(upstream, viewer, at(seq, jpeg_of(with_walker(100 + 6 * seq))))
        assert det.calls == 6
        tracked_iou, last_iou = [], []
        for r in viewer.got[8:]:  # two model calls in: the track has a velocity
            truth = walker_box(100 + 6 * r.frame.seq)
            assert r.drawn is not None and r.detection is not None
            assert r.drawn.tracker_id is not None and r.drawn.tracker_id.tolist() == [1]
            tracked_iou.append(box_iou(r.drawn.xyxy, truth)[0, 0])
            last_iou.append(box_iou(r.detection.detections.xyxy, truth)[0, 0])
        # The boxes follow the figure; the last model call's boxes lag behind it.
        assert min(tracked_iou) > 0.9
        assert np.mean(tracked_iou) > np.mean(last_iou) + 0.1
        fresh = [r for r in viewer.got if r.fresh]
        assert all(r.detection is not None and r.detection.detections.tracker_id is not None for r in fresh)


async def test_without_tracking_the_last_boxes_stay_put(upstream: Upstream) -> None:
    det = DarkBlobDetector()
    async with pipeline(upstream, det, skip=4) as pipe:
        (viewer,) = await start_viewers(pipe)
        for seq in range(8):
            await step(upstream, viewer, at(seq, jpeg_of(with_walker(100 + 6 * seq))))
        for r in viewer.got:
            assert r.detection is not None and r.drawn is not None
            np.testing.assert_array_equal(r.drawn.xyxy, r.detection.detections.xyxy)
            assert r.drawn.tracker_id is None


async def test_a_moving_track_keeps_the_model_running_while_motion_is_masked(upstream: Upstream) -> None:
    det = DarkBlobDetector()
    # Everything but the walker's start is masked: after it leaves the unmasked strip, only
    # the track says it is still moving.
    strip = [[(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)]]
    async with gated(upstream, det, tracking=True, keepalive=3600.0) as pipe:
        (viewer,) = await start_viewers(pipe)
        await step(upstream, viewer, at(0, jpeg_of(yard())))
        for seq in range(1, 4):
            await step(upstream, viewer, at(seq, jpeg_of(with_walker(100 + 20 * seq))))
        calls = det.calls
        pipe.update(motion_masks=strip)  # motion can no longer be seen anywhere
        for seq in range(4, 8):
            await step(upstream, viewer, at(seq, jpeg_of(with_walker(100 + 20 * seq))))
        # The first frame after new masks only sets the background; the track carries the rest.
        assert det.calls >= calls + 3
        assert pipe.stats.moving_frames == 3


async def test_gating_can_be_switched_live(upstream: Upstream, detector: StandInDetector) -> None:
    still = jpeg_of(yard())
    async with gated(upstream, detector, keepalive=3600.0) as pipe:
        (viewer,) = await start_viewers(pipe)
        for seq in range(5):
            await step(upstream, viewer, at(seq, still))
        assert detector.calls == 1
        pipe.update(motion=False)
        for seq in range(5, 10):
            await step(upstream, viewer, at(seq, still))
        assert detector.calls == 6
        pipe.update(motion=True, keepalive=60.0, motion_threshold=40, motion_min_area=0.01)
        assert pipe.config.motion_config.threshold == 40 and pipe.config.keepalive == 60.0
        for seq in range(10, 15):
            await step(upstream, viewer, at(seq, still))
        assert detector.calls == 6


async def test_bad_motion_settings_are_refused_and_nothing_changes(
    upstream: Upstream, detector: StandInDetector
) -> None:
    async with gated(upstream, detector) as pipe:
        with pytest.raises(ConfigurationError) as info:
            pipe.update(motion_threshold=0, skip=3)
        assert info.value.field == "motion_threshold"
        with pytest.raises(ConfigurationError) as masks:
            pipe.update(motion_masks=[[(0.0, 0.0), (1.0, 1.0)]])
        assert masks.value.field == "motion_masks"
        with pytest.raises(ConfigurationError) as keepalive:
            pipe.update(keepalive=0.1)
        assert keepalive.value.field == "keepalive"
        assert pipe.config.skip == "auto" and pipe.config.motion_config.threshold == 25


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        pytest.param({"motion": "yes"}, "motion", id="motion"),
        pytest.param({"tracking": 1}, "tracking", id="tracking"),
        pytest.param({"keepalive": 0}, "keepalive", id="keepalive"),
    ],
)
def test_config_validation(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        PipelineConfig(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


async def test_an_undecodable_frame_is_counted_once_with_gating_on(
    upstream: Upstream, detector: StandInDetector
) -> None:
    still = jpeg_of(yard())
    async with gated(upstream, detector) as pipe:
        (viewer,) = await start_viewers(pipe)
        await step(upstream, viewer, at(0, still))
        await upstream.push(at(1, CORRUPT))
        while pipe.stats.motion_checks < 1 or pipe.stats.decode_errors < 1:
            await settle()
        await step(upstream, viewer, at(2, still))
        assert pipe.stats.decode_errors == 1
        assert 1 not in viewer.seqs and pipe.stats.motion_checks == 2


@pytest.mark.parametrize(("refresh", "drawn"), [(1.0, [0, 15, 30]), (0.0, list(range(45)))])
async def test_a_still_scene_repeats_its_annotated_picture(
    upstream: Upstream, detector: StandInDetector, refresh: float, drawn: list[int]
) -> None:
    still = jpeg_of(yard())
    async with gated(upstream, detector, keepalive=3600.0, still_refresh=refresh) as pipe:
        (viewer,) = await start_viewers(pipe)
        for seq in range(45):  # three seconds
            await step(upstream, viewer, at(seq, still))
        assert detector.calls == 1
        # A picture is drawn for the model call and then once a refresh interval; the frames in
        # between repeat it (the same bytes), each still sent as its own frame.
        new = [
            r.frame.seq
            for r, before in zip(viewer.got, [None, *viewer.got[:-1]], strict=True)
            if before is None or r.jpeg is not before.jpeg
        ]
        assert new == drawn
        assert viewer.seqs == list(range(45)) and all(r.drawn is not None for r in viewer.got)
        assert pipe.stats.frames_out == 45


async def test_a_new_connection_starts_from_its_own_frames(
    upstream: Upstream, detector: StandInDetector
) -> None:
    still, walker = jpeg_of(yard()), jpeg_of(with_walker(300))
    async with gated(upstream, detector, keepalive=3600.0) as pipe:
        (viewer,) = await start_viewers(pipe)
        for seq in range(3):
            await step(upstream, viewer, at(seq, still))
        await step(upstream, viewer, at(3, walker))
        calls = detector.calls
        viewer.task.cancel()
        await within(upstream.sources[0].closed.wait())
        # Later, a new connection: the walker has gone. His frame, the last of the old
        # connection, is neither drawn again nor taken as the new connection's scene.
        (again,) = await start_viewers(pipe)
        await upstream.source(1)
        for seq in range(5):
            await step(upstream, again, at(seq, still))
        assert again.seqs == [0, 1, 2, 3, 4]
        assert all(r.frame.jpeg != walker for r in again.got)
        # One call looks at what the new connection shows (its first frame); nothing moved after.
        assert detector.calls == calls + 1 and pipe.stats.moving_frames == 1
