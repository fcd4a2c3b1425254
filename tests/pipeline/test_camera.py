"""CameraPipeline: demand-driven source, latest-frame detection, rendering, errors (the
stand-ins are in conftest.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import cv2
import numpy as np
import pytest

from espdetect.exceptions import ConfigurationError, DetectorError, EspdetectError, SourceUnavailable
from espdetect.frame import Frame
from espdetect.pipeline import (
    CameraPipeline,
    FrameProcessor,
    PipelineConfig,
    StaleMode,
    choose_reduce,
)
from espdetect.sources.base import FrameSource
from espdetect.workers import Workers

from .conftest import (
    CORRUPT,
    StandInDetector,
    Upstream,
    Viewer,
    detections_until_seq,
    make_frame,
    pipeline,
    raw_until_seq,
    sample_jpeg,
    settle,
    start_viewers,
    within,
)

pytestmark = pytest.mark.anyio


# -- config and helpers -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param(
            {"skip": 0}, "expected skip to be an integer from 1 to 10000 or 'auto', got 0", id="skip-0"
        ),
        pytest.param(
            {"skip": True},
            "expected skip to be an integer from 1 to 10000 or 'auto', got True",
            id="skip-bool",
        ),
        pytest.param(
            {"skip": "2"}, "expected skip to be an integer from 1 to 10000 or 'auto', got '2'", id="skip-str"
        ),
        pytest.param(
            {"decode_reduce": 3}, "expected decode_reduce to be 1, 2, 4, 8 or 'auto', got 3", id="reduce"
        ),
        pytest.param(
            {"grace_period": -1}, "expected grace_period to be a number from 0 to 3600, got -1", id="grace"
        ),
        pytest.param(
            {"stale": "sometimes"},
            "expected stale to be one of 'draw_last', 'raw', got 'sometimes'",
            id="stale",
        ),
    ],
)
def test_config_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as info:
        PipelineConfig(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == next(iter(kwargs))


def test_config_accepts_stale_mode_by_value() -> None:
    assert PipelineConfig(stale="raw").stale is StaleMode.RAW  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("size", "imgsz", "reduce"),
    [
        ((1600, 1200), 640, 2),
        ((320, 240), 640, 1),
        ((1280, 720), 320, 4),
        ((5120, 3840), 640, 8),
        ((1600, 1200), None, 1),
        ((1279, 720), 640, 1),
    ],
)
def test_choose_reduce(size: tuple[int, int], imgsz: int | None, reduce: int) -> None:
    assert choose_reduce(size, imgsz) == reduce


async def test_processor_maps_reduced_boxes_to_full_scale(detector: StandInDetector) -> None:
    from espdetect.annotate import Annotator
    from espdetect.encoders.jpeg import JpegEncoder

    proc = FrameProcessor(detector, Annotator(), JpegEncoder(quality=70), decode_reduce=4)
    frame = make_frame(0, sample_jpeg(320, 240))
    result = proc.detect(frame)
    assert detector.shapes == [(60, 80, 3)]
    assert result.reduce == 4
    np.testing.assert_allclose(result.detections.xyxy, [[80, 60, 240, 180]])
    rendered = proc.render(frame, result, fresh=True)
    assert rendered.quality == 70
    assert rendered.detection is result
    assert rendered.image is not None and rendered.image.shape == (240, 320, 3)
    # Other qualities are encoded once each, whoever asks.
    low = rendered.encoded(30)
    assert rendered.encoded(30) is low
    assert len(low) < len(rendered.jpeg)
    assert rendered.encoded(70) is rendered.jpeg
    passed = proc.render(frame, None, fresh=False, passthrough=True)
    assert passed.jpeg is frame.jpeg and passed.detection is None and passed.drawn is None
    # Nothing drawn, but the frame still shows (the absence of) these detections.
    kept = proc.render(frame, result, fresh=True, passthrough=True)
    assert kept.jpeg is frame.jpeg and kept.detection is result and kept.drawn is None


# -- demand-driven source ---------------------------------------------------------------------


async def test_no_subscriber_opens_no_source(upstream: Upstream, detector: StandInDetector) -> None:
    async with pipeline(upstream, detector) as pipe:
        await settle()
        assert upstream.sources == []
        assert not pipe.upstream_open
        assert pipe.stats.upstream_opens == 0
    assert upstream.sources == []


async def test_raw_annotated_and_detections_share_one_source(
    upstream: Upstream, detector: StandInDetector
) -> None:
    async with (
        pipeline(upstream, detector) as pipe,
        pipe.subscribe("raw"),
        pipe.subscribe("detections"),
        pipe.subscribe("annotated"),
    ):
        assert pipe.demand == {"raw": 1, "annotated": 1, "detections": 1}
        await settle()
        assert len(upstream.sources) == 1
        assert pipe.upstream_open
        out_version = pipe.output.version
        await upstream.push(make_frame(0))
        _, raw = await within(pipe.raw.next_after(0))
        _, result = await within(pipe.detections.next_after(0))
        _, rendered = await within(pipe.output.next_after(out_version))
        assert raw.seq == result.frame.seq == rendered.frame.seq == 0
        assert result.frame is raw
        async with pipe.subscribe("raw"):
            await settle()
        assert len(upstream.sources) == 1
        assert pipe.stats.upstream_opens == 1


async def test_last_unsubscribe_closes_the_source_after_the_grace_period(
    upstream: Upstream, detector: StandInDetector
) -> None:
    async with pipeline(upstream, detector, grace_period=0.01) as pipe:
        async with pipe.subscribe("raw"):
            src = await upstream.source()
            await settle()
            assert pipe.source is src
        assert not src.closed.is_set()  # the grace period has not run yet
        await within(src.closed.wait())
        await settle()
        assert not pipe.upstream_open
        assert pipe.source is None
        assert pipe.demand == {"raw": 0, "annotated": 0, "detections": 0}
        # Demand again: a new connection.
        async with pipe.subscribe("annotated"):
            await upstream.source(1)
            assert pipe.stats.upstream_opens == 2


async def test_resubscribe_within_the_grace_period_reuses_the_source(
    upstream: Upstream, detector: StandInDetector
) -> None:
    async with pipeline(upstream, detector, grace_period=60.0) as pipe:
        async with pipe.subscribe("raw"):
            src = await upstream.source()
            await settle()
        await settle()
        async with pipe.subscribe("raw"):
            await settle()
            assert upstream.sources == [src]
            assert not src.closed.is_set()
            await upstream.push(make_frame(5))
            _, frame = await within(pipe.raw.next_after(0))
            assert frame.seq == 5
    assert src.closed.is_set()


async def test_resubscribe_while_the_old_source_is_closing_keeps_the_new_source(
    upstream: Upstream, detector: StandInDetector
) -> None:
    async with pipeline(upstream, detector, grace_period=0.0) as pipe:
        async with pipe.subscribe("raw"):
            first = await upstream.source()
            first.close_gate = asyncio.Event()
            await settle()
        await within(first.close_started.wait())  # the old connection is being torn down...
        async with pipe.subscribe("raw"):
            second = await upstream.source(1)  # ...when a viewer comes back
            await settle()
            first.close_gate.set()
            await within(first.closed.wait())
            await settle()
            assert not second.closed.is_set()
            assert pipe.source is second
            await upstream.push(make_frame(1), index=1)
            _, frame = await within(pipe.raw.next_after(0))
            assert frame.seq == 1
            assert not pipe.ended


# -- latest-frame semantics -------------------------------------------------------------------


async def test_slow_detector_never_works_through_a_backlog(
    upstream: Upstream, slow_detector: StandInDetector
) -> None:
    async with pipeline(upstream, slow_detector) as pipe, pipe.subscribe("detections"):
        await upstream.push(make_frame(0))
        assert await slow_detector.started() == 1
        await upstream.push(*(make_frame(i) for i in range(1, 6)))
        await raw_until_seq(pipe, 5)
        slow_detector.release()
        version, first = await detections_until_seq(pipe, 0)
        assert first.frame.seq == 0
        assert await slow_detector.started() == 2  # on the newest frame, not frame 1
        await upstream.push(*(make_frame(i) for i in range(6, 10)))
        await raw_until_seq(pipe, 9)
        slow_detector.release()
        version, second = await detections_until_seq(pipe, 1, version)
        assert second.frame.seq == 5
        assert await slow_detector.started() == 3
        slow_detector.release()
        _, third = await detections_until_seq(pipe, 6, version)
        assert third.frame.seq == 9
        assert pipe.stats.frames_in == 10
        assert pipe.stats.frames_detected == 3
        assert slow_detector.calls == 3


async def test_one_detection_per_frame_whatever_the_number_of_viewers(
    upstream: Upstream, detector: StandInDetector
) -> None:
    async with pipeline(upstream, detector) as pipe:
        viewers = await start_viewers(pipe, 10)
        assert len(upstream.sources) == 1
        for seq in range(6):
            await upstream.push(make_frame(seq))
            for v in viewers:
                await v.until_seq(seq)
        assert detector.calls == 6
        assert pipe.stats.frames_detected == 6
        for v in viewers:
            assert v.seqs == list(range(6))
        # Encoded once: every viewer holds the very same output objects.
        for i in range(6):
            assert len({id(v.got[i]) for v in viewers}) == 1
    for v in viewers:
        await within(v.task)


async def test_detector_faster_than_camera_draws_each_frame_with_its_own_boxes(
    upstream: Upstream, detector: StandInDetector
) -> None:
    async with pipeline(upstream, detector) as pipe:
        (viewer,) = await start_viewers(pipe)
        frames = [make_frame(seq) for seq in range(5)]
        for frame in frames:
            await upstream.push(frame)
            rendered = await viewer.until_seq(frame.seq)
            assert rendered.fresh
            assert rendered.detection is not None
            assert rendered.detection.frame is rendered.frame
            assert rendered.frame.jpeg is frame.jpeg
            assert rendered.jpeg != frame.jpeg  # re-encoded with boxes
            assert len(rendered.detection.detections) == 1
        assert pipe.stats.frames_out == 5
        assert pipe.stats.dropped == 0
        assert len(pipe.stats.latency_ms) == 5
        assert pipe.stats.latency_ms.percentiles().p50 is not None


async def test_fixed_skip_detects_every_nth_frame(upstream: Upstream, detector: StandInDetector) -> None:
    async with pipeline(upstream, detector, skip=3) as pipe:
        (viewer,) = await start_viewers(pipe)
        for seq in range(10):
            await upstream.push(make_frame(seq))
            await viewer.until_seq(seq)
        detected = {r.detection.frame.seq for r in viewer.got if r.detection is not None}
        assert detected == {0, 3, 6, 9}
        assert detector.calls == 4
        for r in viewer.got:
            assert r.detection is not None
            assert r.detection.frame.seq == r.frame.seq - r.frame.seq % 3
            assert r.fresh == (r.frame.seq % 3 == 0)


async def test_draw_last_renders_every_frame_with_the_last_boxes(
    upstream: Upstream, detector: StandInDetector
) -> None:
    async with pipeline(upstream, detector, skip=1000, stale=StaleMode.DRAW_LAST) as pipe:
        (viewer,) = await start_viewers(pipe)
        frames = [make_frame(seq) for seq in range(5)]
        for frame in frames:
            await upstream.push(frame)
            await viewer.until_seq(frame.seq)
        assert viewer.seqs == [0, 1, 2, 3, 4]
        first = viewer.got[0].detection
        assert first is not None and first.frame is viewer.got[0].frame
        assert [r.fresh for r in viewer.got] == [True, False, False, False, False]
        for r, frame in zip(viewer.got, frames, strict=True):
            assert r.detection is first
            assert r.jpeg != frame.jpeg
            assert r.image is not None
            assert not np.array_equal(r.image, frame.image())  # boxes were drawn
        assert detector.calls == 1


async def test_raw_stale_mode_passes_camera_bytes_through(
    upstream: Upstream, detector: StandInDetector
) -> None:
    async with pipeline(upstream, detector, skip=1000, stale=StaleMode.RAW) as pipe:
        (viewer,) = await start_viewers(pipe)
        frames = [make_frame(seq) for seq in range(4)]
        for frame in frames:
            await upstream.push(frame)
            await viewer.until_seq(frame.seq)
        head, *rest = viewer.got
        assert head.fresh and head.detection is not None and head.jpeg != frames[0].jpeg
        for r, frame in zip(rest, frames[1:], strict=True):
            assert r.jpeg is frame.jpeg  # untouched camera bytes, no re-encode
            assert r.detection is None
            assert not r.fresh
            assert r.timings.encode_ms == 0.0


async def test_raw_stale_mode_with_a_slow_detector(
    upstream: Upstream, slow_detector: StandInDetector
) -> None:
    async with pipeline(upstream, slow_detector, stale=StaleMode.RAW) as pipe:
        (viewer,) = await start_viewers(pipe)
        await upstream.push(make_frame(0))
        assert await slow_detector.started() == 1
        # Frame 0 waits for its boxes until frame 1 comes; then nothing waits for the busy model.
        for seq in range(1, 4):
            await upstream.push(make_frame(seq))
            await viewer.until_seq(seq)
        assert viewer.seqs == [0, 1, 2, 3]
        for r in viewer.got:
            assert r.jpeg is r.frame.jpeg
            assert r.detection is None and not r.fresh
        slow_detector.release()
        assert await slow_detector.started() == 2  # straight to the newest frame, 3
        slow_detector.release()
        _, result = await detections_until_seq(pipe, 3)
        assert result.frame.seq == 3
        await upstream.push(make_frame(4))
        assert await slow_detector.started() == 3
        slow_detector.release()
        own = await viewer.until_seq(4)
        assert own.fresh and own.detection is not None and own.detection.frame is own.frame
        assert own.jpeg is not own.frame.jpeg
        assert slow_detector.calls == 3


# -- errors -----------------------------------------------------------------------------------


async def test_corrupt_jpeg_is_counted_once_and_the_pipeline_goes_on(
    upstream: Upstream, detector: StandInDetector
) -> None:
    async with pipeline(upstream, detector) as pipe:
        (viewer,) = await start_viewers(pipe)
        await upstream.push(make_frame(0))
        await viewer.until_seq(0)
        await upstream.push(make_frame(1, CORRUPT))
        await raw_until_seq(pipe, 1)
        await upstream.push(make_frame(2))
        # Whether frame 2 is drawn with its own boxes depends on the detector having finished
        # with frame 1 first (the renderer does not wait for a busy detector): not asserted.
        _, result = await detections_until_seq(pipe, 2)
        assert result.frame.seq == 2
        await viewer.until_seq(2)
        assert 1 not in viewer.seqs
        assert pipe.stats.decode_errors == 1
        assert pipe.stats.detector_errors == 0
        assert pipe.stats.frames_in == 3
        assert pipe.upstream_open


async def test_detector_exception_is_counted_and_the_frame_still_rendered(upstream: Upstream) -> None:
    det = StandInDetector(fail_calls=frozenset({2}))
    async with pipeline(upstream, det) as pipe:
        (viewer,) = await start_viewers(pipe)
        await upstream.push(make_frame(0))
        await viewer.until_seq(0)
        await upstream.push(make_frame(1))
        # Rendered with the previous boxes as soon as detection failed, not when frame 2 comes.
        failed = await viewer.until_seq(1)
        assert failed.detection is not None and failed.detection.frame.seq == 0
        assert not failed.fresh
        assert pipe.stats.detector_errors == 1
        assert isinstance(pipe.last_error, DetectorError) and "call 2" in str(pipe.last_error)
        await upstream.push(make_frame(2))
        ok = await viewer.until_seq(2)
        assert ok.fresh and ok.detection is not None and ok.detection.frame is ok.frame
        assert pipe.stats.frames_detected == 2


async def test_an_unexpected_error_stops_the_stages_and_the_next_subscriber_restarts_them(
    upstream: Upstream, detector: StandInDetector, caplog: pytest.LogCaptureFixture
) -> None:
    async with pipeline(upstream, detector) as pipe:
        (viewer,) = await start_viewers(pipe)
        await upstream.push(make_frame(0))
        await viewer.until_seq(0)
        await upstream.push(ValueError("a third-party source's own error"))
        await within(viewer.task)  # the consumers end instead of waiting forever
        assert pipe.stats.stage_errors == 1
        assert isinstance(pipe.last_error, ValueError)  # what a user interface shows
        assert "pipeline stages stopped by an unexpected error" in caplog.text
        (again,) = await start_viewers(pipe)
        await upstream.push(make_frame(1), index=1)
        await again.until_seq(1)
        assert pipe.stats.upstream_opens == 2


async def test_source_error_ends_the_streams_and_a_new_subscriber_reconnects(
    upstream: Upstream, detector: StandInDetector
) -> None:
    async with pipeline(upstream, detector) as pipe:
        (viewer,) = await start_viewers(pipe)
        await upstream.push(make_frame(0))
        await viewer.until_seq(0)
        await upstream.push(SourceUnavailable("test://cam", "camera rebooted"))
        await within(viewer.task)  # ends instead of waiting forever
        assert not pipe.ended
        assert pipe.stats.source_errors == 1
        assert isinstance(pipe.last_error, SourceUnavailable) and "camera rebooted" in str(pipe.last_error)
        (again,) = await start_viewers(pipe)
        await upstream.push(make_frame(1), index=1)
        assert (await again.until_seq(1)).fresh
        assert pipe.stats.upstream_opens == 2
        assert upstream.sources[0].closed.is_set()


async def test_source_factory_error_ends_the_streams(detector: StandInDetector) -> None:
    def broken() -> FrameSource:
        raise SourceUnavailable("test://cam", "refused")

    async with CameraPipeline(broken, detector, config=PipelineConfig(grace_period=0.0)) as pipe:
        viewer = Viewer(pipe)
        await within(viewer.task)
        assert viewer.got == []


# -- shutdown and end of stream ---------------------------------------------------------------


async def test_aclose_stops_everything_and_closes_the_source(
    upstream: Upstream, detector: StandInDetector
) -> None:
    pipe = pipeline(upstream, detector, grace_period=60.0)
    viewers = await start_viewers(pipe, 3)
    async with pipe.subscribe("raw"), pipe.subscribe("detections"):
        await upstream.push(make_frame(0))
        for v in viewers:
            await v.until_seq(0)
        await pipe.aclose()
        for v in viewers:
            await within(v.task)
        src = upstream.sources[0]
        assert src.closed.is_set()
        assert not pipe.upstream_open
        assert pipe.source is None
    await settle()
    pending = [t for t in asyncio.all_tasks() if t.get_name().startswith("test-")]
    assert pending == []
    with pytest.raises(EspdetectError, match="closed"):
        async with pipe.subscribe("raw"):
            pass
    await pipe.aclose()  # twice is fine


async def test_finite_source_end_delivers_the_last_frame_and_ends_outputs(
    upstream: Upstream, detector: StandInDetector
) -> None:
    async with pipeline(upstream, detector) as pipe:
        (viewer,) = await start_viewers(pipe)
        await upstream.push(make_frame(0), make_frame(1), make_frame(2), None)
        await within(viewer.task)
        assert pipe.ended
        assert viewer.seqs[-1] == 2
        assert viewer.got[-1].detection is not None
        assert viewer.got[-1].detection.frame is viewer.got[-1].frame  # its own boxes, too
        # A later viewer finds the stream over; nothing is reopened.
        late = Viewer(pipe)
        await within(late.task)
        assert len(upstream.sources) == 1


async def test_frames_without_jpeg_bytes_are_encoded_once_for_raw_viewers(
    upstream: Upstream, detector: StandInDetector
) -> None:
    async with pipeline(upstream, detector) as pipe, pipe.subscribe("raw"):
        img = np.full((24, 32, 3), 200, np.uint8)
        await upstream.push(Frame.from_image(img, seq=0, source_id="folder"))
        _, frame = await within(pipe.raw.next_after(0))
        assert frame.jpeg is not None
        decoded = cv2.imdecode(np.frombuffer(frame.jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert decoded is not None
        assert decoded.shape == (24, 32, 3)
        assert frame.image() is img


async def test_subscribe_rejects_unknown_kinds(upstream: Upstream, detector: StandInDetector) -> None:
    async with pipeline(upstream, detector) as pipe:
        with pytest.raises(ValueError, match=r"expected kind to be one of .*, got 'video'"):
            async with pipe.subscribe("video"):  # type: ignore[arg-type]
                pass
        assert upstream.sources == []


async def test_update_validates_and_applies(upstream: Upstream, detector: StandInDetector) -> None:
    async with pipeline(upstream, detector) as pipe:
        pipe.update(skip=2, decode_reduce=2, conf=0.6, classes=[1], quality=55)
        assert (pipe.config.skip, pipe.processor.decode_reduce) == (2, 2)
        assert (pipe.params.conf, pipe.params.classes, pipe.encoder.quality) == (0.6, (1,), 55)
        assert detector.params.conf == 0.25  # the model's own defaults are not this camera's
        with pytest.raises(ConfigurationError, match="expected skip to be") as bad_skip:
            pipe.update(skip=0, conf=0.9)
        assert bad_skip.value.field == "skip"
        with pytest.raises(ConfigurationError, match="expected settings among") as unknown:
            pipe.update(colour="red", conf=0.9)  # type: ignore[call-arg]
        assert unknown.value.field == "colour"
        with pytest.raises(
            ConfigurationError, match=r"between 0 and 1 for this model, got \[2\]"
        ) as bad_class:
            pipe.update(classes=[2], skip=3)
        assert bad_class.value.field == "classes"
        with pytest.raises(ConfigurationError, match="expected quality to be an integer from 1 to 100"):
            pipe.update(quality=0, skip=3)
        # Nothing was applied from a refused update.
        assert (pipe.config.skip, pipe.params.conf, pipe.params.classes, pipe.encoder.quality) == (
            2,
            0.6,
            (1,),
            55,
        )


# -- with the real model ----------------------------------------------------------------------


@pytest.mark.model
async def test_real_model_finds_people_on_bus_frames(
    upstream: Upstream, model_path: str, sample_images: dict[str, Path]
) -> None:
    from espdetect.detectors.factory import open_detector

    det = await asyncio.to_thread(open_detector, model_path)
    bus = sample_images["bus"].read_bytes()
    async with pipeline(upstream, det) as pipe:
        (viewer,) = await start_viewers(pipe)
        for seq in range(2):
            await upstream.push(make_frame(seq, bus))
            await viewer.until_seq(seq)
        for r in viewer.got:
            assert r.detection is not None
            counts = r.detection.detections.count_by_label()
            assert counts.get("person", 0) >= 3
            assert counts.get("bus", 0) >= 1
            d = r.detection.to_dict()
            assert d["width"] == 810 and d["height"] == 1080
            xyxy = r.detection.detections.xyxy
            assert xyxy[:, 2].max() <= 810 + 1 and xyxy[:, 3].max() <= 1080 + 1


async def test_cameras_sharing_workers_take_turns_and_keep_rendering() -> None:
    # Eight cameras with one model call each at a time on two cores once starved rendering
    # (about 1 frame/s each): shared Workers run one model call at a time, and drawing goes on.
    workers = Workers(detect_slots=1, render_threads=2)
    up_a, up_b = Upstream(), Upstream()
    det_a, det_b = StandInDetector(gated=True), StandInDetector(gated=True)
    cfg = PipelineConfig(grace_period=0.01)
    pipe_a = CameraPipeline(up_a, det_a, config=cfg, name="a", workers=workers)
    pipe_b = CameraPipeline(up_b, det_b, config=cfg, name="b", workers=workers)
    try:
        async with pipe_a, pipe_b:
            (viewer_b,) = await start_viewers(pipe_b)
            async with pipe_a.subscribe("detections"):
                await up_a.push(make_frame(0))
                assert await det_a.started() == 1  # camera a holds the only model slot
                await up_b.push(*(make_frame(i) for i in range(4)))
                await viewer_b.until_seq(3)  # b's frames are drawn while a's model call runs
                await settle()
                assert det_b.calls == 0
                det_a.release()
                _, result_a = await detections_until_seq(pipe_a, 0)
                assert result_a.frame.seq == 0
                assert await det_b.started() == 1
                det_b.release()
                _, result = await detections_until_seq(pipe_b, 0)
                assert result.frame.seq == 3  # the newest frame once b's turn came, not frame 0
    finally:
        det_a.release(1000)
        det_b.release(1000)
        workers.close()
